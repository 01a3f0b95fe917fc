//! Detaching when probectl exits: a child process holds the BPF links and closes them after
//! probectl is gone, so that exiting does not wait for the kernel's teardown.

/// Lets a child process hold every descriptor of this one (the BPF links among them) and
/// close them after we exit. Detaching takes the kernel about 100 ms per probe here (each
/// perf event teardown waits for an RCU grace period under the kernel's perf event lock), so
/// closing them ourselves would keep probectl alive for a second after its work is done. Our
/// own closes then only drop references; the child waits for our exit (the end of a pipe
/// only we hold), then drops the last ones, and the probes go a moment after we exit (their
/// programs meanwhile find no reader and change nothing). Best effort: if the pipe or the fork
/// fails, we detach ourselves. Process-scoped probes leave tracefs events behind their
/// descriptors: the child removes them once it has closed those.
pub fn detach_in_background() {
    if detach_child_started() {
        return;
    }
    // Made before the fork: the child of a multithreaded process must not allocate.
    let removal = crate::kernel::scoped::group_removal_command().into_bytes();
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints for pipe(2) to fill.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return;
    }
    let (wait_end, our_end) = (fds[0], fds[1]);
    // SAFETY: fork in a multithreaded process. The child makes only async-signal-safe
    // syscalls (close, read, close_range, _exit) before it exits; the parent goes on
    // unchanged.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: raw syscalls on descriptors of this (forked) process. Standard input and
        // output go at once, so that a pipe reader sees its end when we exit; the read
        // returns when the parent's end of the pipe closes, at its exit.
        unsafe {
            libc::close(0);
            libc::close(1);
            libc::close(2);
            libc::close(our_end);
            let mut byte = 0u8;
            libc::read(wait_end, (&raw mut byte).cast(), 1);
            libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
            remove_tracefs_events(&removal);
            libc::_exit(0);
        }
    }
    // SAFETY: our copy of the child's end; ours stays open until we exit.
    unsafe { libc::close(wait_end) };
    if child > 0 {
        DETACH_CHILD.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Set once a detach child holds our descriptors.
static DETACH_CHILD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether a child started by `detach_in_background` will detach (and remove the tracefs
/// events) after we exit: then we must not wait for the kernel ourselves.
pub fn detach_child_started() -> bool {
    DETACH_CHILD.load(std::sync::atomic::Ordering::SeqCst)
}

/// Writes `removal` to tracefs's `uprobe_events`: in the detach child, after its descriptors
/// are closed. The kernel refuses (EBUSY) while it still tears the events down: a few tries.
/// Makes only async-signal-safe syscalls.
fn remove_tracefs_events(removal: &[u8]) {
    // One command per line, each written on its own (see scoped::removal_command_of).
    for line in removal.split_inclusive(|&byte| byte == b'\n') {
        remove_tracefs_event(line);
    }
}

fn remove_tracefs_event(removal: &[u8]) {
    const TRIES: usize = 40;
    for _ in 0..TRIES {
        // SAFETY: a valid NUL-terminated path; the descriptor is closed below.
        let fd = unsafe {
            libc::open(
                crate::kernel::scoped::UPROBE_EVENTS_C.as_ptr(),
                libc::O_WRONLY | libc::O_APPEND | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return;
        }
        // SAFETY: removal is a valid buffer of its length; fd is ours.
        let written = unsafe { libc::write(fd, removal.as_ptr().cast(), removal.len()) };
        let busy =
            written < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBUSY);
        // SAFETY: fd is ours, closed once.
        unsafe { libc::close(fd) };
        if !busy {
            return;
        }
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 50_000_000,
        };
        // SAFETY: a valid timespec; no remainder is wanted.
        unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
    }
}
