//! Processes probectl starts or watches: a command held between fork and exec until the probes
//! are attached and ended with probectl (never left behind), pidfds that tell when a traced
//! process exits, PATH lookup as a shell does it, thread ids mapped to their process.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::notice::{self, Topic};
use crate::targets::FileId;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot run {command}: {message}")]
    Spawn { command: String, message: String },
    /// A shell says "command not found" and exits 127.
    #[error("cannot run {command}: not found (no such file, or not in PATH)")]
    NotFound { command: String },
    /// A shell says "Permission denied" (or "Is a directory") and exits 126.
    #[error("cannot run {command}: {path} {reason}")]
    NotExecutable {
        command: String,
        path: PathBuf,
        reason: &'static str,
    },
    #[error("pid {pid} ({comm}) is a kernel thread: it runs no user-space code to trace; give the pid of a user-space process")]
    KernelThread { pid: u32, comm: String },
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl ProcessError {
    /// The exit status a shell gives for a command that could not be started this way
    /// (126: found but not executable, 127: not found), if it is such an error.
    pub fn shell_status(&self) -> Option<u8> {
        match self {
            ProcessError::NotFound { .. } => Some(127),
            ProcessError::NotExecutable { .. } => Some(126),
            _ => None,
        }
    }
}

/// Whether the file at `path` may be executed by us (access(2) with X_OK).
fn executable_by_us(path: &Path) -> bool {
    let Ok(name) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access(2) with a valid NUL-terminated path; it only reads the string.
    unsafe { libc::access(name.as_ptr(), libc::X_OK) == 0 }
}

/// Why the file at `path` cannot be executed, if it cannot (what execve would say).
fn not_executable_reason(path: &Path) -> Option<&'static str> {
    let metadata = std::fs::metadata(path).ok()?;
    if metadata.is_dir() {
        return Some("is a directory");
    }
    if !metadata.is_file() {
        return Some("is not a regular file");
    }
    // Root may execute any file with at least one execute bit; access(2) knows the rules.
    if metadata.permissions().mode() & 0o111 == 0 || !executable_by_us(path) {
        return Some("is not executable (Permission denied)");
    }
    None
}

/// Finds `program` the way a shell does: a name with a '/' is used as it is, any other name is
/// looked up in PATH, where files that are not executable are passed over (as execvp does).
/// Not found is [`ProcessError::NotFound`] (exit 127 in a shell), found but not executable is
/// [`ProcessError::NotExecutable`] (126).
pub fn find_executable(program: &OsString) -> Result<PathBuf, ProcessError> {
    let command = program.to_string_lossy().into_owned();
    let path = Path::new(program);
    if program.is_empty() {
        return Err(ProcessError::NotFound { command });
    }
    if path.components().count() > 1 || program.as_encoded_bytes().contains(&b'/') {
        if !path.exists() {
            return Err(ProcessError::NotFound { command });
        }
        return match not_executable_reason(path) {
            Some(reason) => Err(ProcessError::NotExecutable {
                command,
                path: path.to_path_buf(),
                reason,
            }),
            None => Ok(path.to_path_buf()),
        };
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut first_unusable = None;
    for candidate in std::env::split_paths(&search).map(|directory| directory.join(path)) {
        if !candidate.exists() {
            continue;
        }
        match not_executable_reason(&candidate) {
            None => return Ok(candidate),
            Some(reason) => {
                first_unusable.get_or_insert((candidate, reason));
            }
        }
    }
    Err(match first_unusable {
        Some((path, reason)) => ProcessError::NotExecutable {
            command,
            path,
            reason,
        },
        None => ProcessError::NotFound { command },
    })
}

/// The process a `--pid` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidTarget {
    /// `pid` is a process (a thread group leader), or not there at all (the caller says so).
    Process(u32),
    /// `tid` is a thread of process `tgid`.
    ThreadOf { tid: u32, tgid: u32 },
}

impl PidTarget {
    pub fn pid(self) -> u32 {
        match self {
            PidTarget::Process(pid) => pid,
            PidTarget::ThreadOf { tgid, .. } => tgid,
        }
    }
}

/// `PF_KTHREAD` in the flags of /proc/<pid>/stat (include/linux/sched.h).
const PF_KTHREAD: u64 = 0x0020_0000;

/// Maps a pid given on the command line to the process to trace: a thread id to its process
/// (its Tgid), a kernel thread to an error. A pid that does not exist is returned as it is.
pub fn resolve_pid(pid: u32) -> Result<PidTarget, ProcessError> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Ok(PidTarget::Process(pid));
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
    };
    // The flags are the 9th field of /proc/<pid>/stat, counted after the ")" that ends comm.
    let flags = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after_comm = stat.rsplit_once(')')?.1;
            after_comm.split_whitespace().nth(6)?.parse::<u64>().ok()
        })
        .unwrap_or(0);
    if flags & PF_KTHREAD != 0 || field("Kthread:") == Some("1") {
        return Err(ProcessError::KernelThread {
            pid,
            comm: field("Name:").unwrap_or("?").to_string(),
        });
    }
    match field("Tgid:").and_then(|tgid| tgid.parse::<u32>().ok()) {
        Some(tgid) if tgid != pid => Ok(PidTarget::ThreadOf { tid: pid, tgid }),
        _ => Ok(PidTarget::Process(pid)),
    }
}

/// Whether the executable at `path` is a Go program (its own TLS, crypto/tls, is not a library
/// a group of probes.toml can name): it has a `.go.buildinfo` section or defines `runtime.main`.
pub fn is_go_program(path: &Path) -> bool {
    let Ok(file) = crate::symbols::ElfFile::open(path) else {
        return false;
    };
    let Ok(elf) = goblin::elf::Elf::parse(file.bytes()) else {
        return false;
    };
    let has_section = elf
        .section_headers
        .iter()
        .any(|header| elf.shdr_strtab.get_at(header.sh_name) == Some(".go.buildinfo"));
    has_section
        || elf
            .syms
            .iter()
            .any(|sym| elf.strtab.get_at(sym.st_name) == Some("runtime.main"))
}

/// A child started by probectl, held before `exec` until the probes are in place, so that it
/// is traced from its first TLS byte.
/// Dropped without `release`, it kills the child: a command must not run untraced because
/// probectl failed to attach.
pub struct HeldChild {
    pub pid: u32,
    /// argv[0], for messages.
    name: String,
    /// Writing a byte lets the child exec.
    release: std::fs::File,
    status: Option<ChildStatus>,
    /// The child's pidfd: signals reach this child, never a process that reused its pid.
    /// (Taken, with `status`, by `release`.)
    pidfd: Option<OwnedFd>,
    /// Why exec failed, if it did (after the release: the file changed, a bad interpreter).
    exec_error: Arc<Mutex<Option<std::io::Error>>>,
}

/// Resolves with the exit status of a started command.
pub type ChildStatus = tokio::sync::oneshot::Receiver<std::io::Result<ExitStatus>>;

impl HeldChild {
    /// Lets the child exec. From here on, SIGINT and SIGTERM to probectl are passed on to it
    /// (see [`RunningCommand::end`]).
    pub fn release(mut self) -> Result<RunningCommand, ProcessError> {
        let signal_error = |source| ProcessError::Io {
            context: "installing signal handlers",
            source,
        };
        // Before the release: a signal that arrives from now on is seen by `end`.
        let interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;
        let terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
        let (Some(status), Some(pidfd)) = (self.status.take(), self.pidfd.take()) else {
            return Err(ProcessError::Io {
                context: "releasing the command",
                source: std::io::Error::other("released twice"),
            });
        };
        // Nothing can fail from here on: the command runs, and the RunningCommand owns it.
        let _ = self.release.write_all(&[1]);
        Ok(RunningCommand {
            pid: self.pid,
            name: std::mem::take(&mut self.name),
            status,
            pidfd,
            exec_error: self.exec_error.clone(),
            interrupt,
            terminate,
            ended: false,
            libraries: None,
        })
    }
}

impl Drop for HeldChild {
    fn drop(&mut self) {
        if let (Some(_), Some(pidfd)) = (&self.status, &self.pidfd) {
            let _ = send_signal(pidfd, libc::SIGKILL);
        }
    }
}

/// Sends `signal` to the process of `pidfd` (pidfd_send_signal(2)).
fn send_signal(pidfd: &OwnedFd, signal: i32) -> std::io::Result<()> {
    // SAFETY: plain syscall on a pidfd we own, with no siginfo (NULL) and no flags.
    let result = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// How long probectl waits, when it stops, for the command to exit by itself before passing
/// the signal on to it.
pub const COMMAND_SETTLE: Duration = Duration::from_millis(100);

/// How long a command has to exit after probectl passed a signal on to it, before it is killed.
pub const COMMAND_GRACE: Duration = Duration::from_secs(2);

/// The command probectl started, after its release. Ended with probectl: [`RunningCommand::end`]
/// passes probectl's SIGINT/SIGTERM on to it; dropped while the command runs (probectl failed
/// mid-run), it kills it.
pub struct RunningCommand {
    pub pid: u32,
    name: String,
    status: ChildStatus,
    pidfd: OwnedFd,
    exec_error: Arc<Mutex<Option<std::io::Error>>>,
    interrupt: Signal,
    terminate: Signal,
    /// The command has exited and was reaped.
    ended: bool,
    libraries: Option<LibraryWatch>,
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGKILL => "SIGKILL",
        _ => "a signal",
    }
}

impl RunningCommand {
    /// What resolves with the command's exit status (for the event loop).
    pub fn status(&mut self) -> &mut ChildStatus {
        &mut self.status
    }

    /// The signal probectl received since the release (SIGINT or SIGTERM), if any.
    fn received_signal(&mut self) -> Option<i32> {
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        if self.interrupt.poll_recv(&mut context).is_ready() {
            return Some(libc::SIGINT);
        }
        if self.terminate.poll_recv(&mut context).is_ready() {
            return Some(libc::SIGTERM);
        }
        None
    }

    /// Ends the command with probectl and returns its exit status. `exited` is the status the
    /// event loop saw, if the command ended first. Otherwise probectl is stopping (a signal,
    /// or an output error): the signal probectl received (SIGTERM if none) is passed on to
    /// the command, which gets [`COMMAND_GRACE`] to exit before it is killed (at once on a
    /// second signal). Its status is what a shell would report for it.
    pub async fn end(&mut self, exited: Option<ExitStatus>) -> Option<ExitStatus> {
        let status = match exited {
            Some(status) => Some(status),
            None => match self.status.try_recv() {
                Ok(waited) => waited.ok(),
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => None,
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => self.stop().await,
            },
        };
        self.ended = true;
        if let Some(error) = self.exec_error.lock().ok().and_then(|mut slot| slot.take()) {
            notice::error(Topic::Command, format!("cannot run {}: {error}", self.name));
        }
        status
    }

    async fn stop(&mut self) -> Option<ExitStatus> {
        let received = self.received_signal();
        let signal = received.unwrap_or(libc::SIGTERM);
        // Ctrl-C on a terminal reaches the whole foreground process group, the command too:
        // give it a moment to exit by itself before it gets the signal a second time (which
        // many programs take as "quit now").
        if let Ok(waited) = tokio::time::timeout(COMMAND_SETTLE, &mut self.status).await {
            return waited.ok().and_then(Result::ok);
        }
        let doing = match received {
            Some(_) => "passing",
            None => "stopping: sending",
        };
        let on_to = if received.is_some() { "on to" } else { "to" };
        notice::info(
            Topic::Command,
            format!(
                "{doing} {} {on_to} {} (pid {})",
                signal_name(signal),
                self.name,
                self.pid
            ),
        );
        if send_signal(&self.pidfd, signal).is_ok() {
            tokio::select! {
                waited = &mut self.status => return waited.ok().and_then(Result::ok),
                _ = tokio::time::sleep(COMMAND_GRACE) => notice::info(
                    Topic::Command,
                    format!(
                        "{} (pid {}) did not exit within {} s: killing it",
                        self.name,
                        self.pid,
                        COMMAND_GRACE.as_secs()
                    ),
                ),
                _ = self.interrupt.recv() => {}
                _ = self.terminate.recv() => {}
            }
        }
        let _ = send_signal(&self.pidfd, libc::SIGKILL);
        // SIGKILL cannot be caught: the waiting thread reaps the command at once (unless it
        // is stuck in the kernel; then it is left to init after a while).
        match tokio::time::timeout(Duration::from_secs(5), &mut self.status).await {
            Ok(waited) => waited.ok().and_then(Result::ok),
            Err(_) => None,
        }
    }

    /// Watches, from the release on, whether the command maps any of `files` (what the plan
    /// attached for `groups`, found by looking for `looked_for`), so that a command that maps
    /// none gets a warning at the end ([`RunningCommand::warn_if_untraceable`]). A Go program
    /// that no group attached (no `go` group in the run) is told at once: Go's crypto/tls is in
    /// the executable, not in a library.
    pub fn watch_libraries(
        &mut self,
        executable: &Path,
        files: BTreeSet<FileId>,
        groups: String,
        looked_for: String,
    ) {
        if is_go_program(executable) {
            // Traced when a group with `abi = "go"` attached the executable itself.
            if FileId::of(executable).is_ok_and(|id| files.contains(&id)) {
                return;
            }
            notice::warning(
                Topic::Coverage,
                format!(
                    "{} is a Go program: Go does its TLS in its own crypto/tls, not in a \
                     library of {groups}: its traffic will not be captured (the go group \
                     traces it: `probectl run go` or `run all`)",
                    executable.display()
                ),
            );
            return;
        }
        let state = Arc::new(Mutex::new(LibraryState::default()));
        let task = tokio::spawn(sample_mapped_files(self.pid, files, state.clone()));
        self.libraries = Some(LibraryWatch {
            state,
            task,
            groups,
            looked_for,
        });
    }

    /// At the end of a run that captured no event: warns if the command was seen after its
    /// exec and never mapped a file of the groups (once; nothing is said when it ran too
    /// briefly to be looked at).
    pub fn warn_if_untraceable(&mut self, events: u64) {
        let Some(watch) = self.libraries.take() else {
            return;
        };
        watch.task.abort();
        let Ok(state) = watch.state.lock() else {
            return;
        };
        if events == 0 && state.seen_after_exec && !state.mapped {
            // What it carries instead, when probectl knows it.
            let carries = crate::symbols::ElfFile::open(std::path::Path::new(&self.name))
                .ok()
                .and_then(|elf| crate::symbols::locate::rust_tls(elf.bytes()))
                .map(|tls| tls.to_string())
                .map(|tls| {
                    format!("; it carries {tls}, which probectl does not trace yet (see docs/stripped.md)")
                })
                .unwrap_or_default();
            notice::warning(
                Topic::Coverage,
                format!(
                    "{} (pid {}) mapped no library of {} while it ran (looked for {}): nothing \
                     of its TLS could be captured{carries}",
                    self.name, self.pid, watch.groups, watch.looked_for
                ),
            );
        }
    }
}

impl Drop for RunningCommand {
    fn drop(&mut self) {
        if let Some(watch) = &self.libraries {
            watch.task.abort();
        }
        if !self.ended {
            let _ = send_signal(&self.pidfd, libc::SIGKILL);
        }
    }
}

/// What the library watch found out about a command.
#[derive(Debug, Default)]
struct LibraryState {
    /// The command was looked at after its exec.
    seen_after_exec: bool,
    /// It mapped a file of the groups.
    mapped: bool,
}

struct LibraryWatch {
    state: Arc<Mutex<LibraryState>>,
    task: tokio::task::JoinHandle<()>,
    groups: String,
    looked_for: String,
}

/// Looks at the command's mappings often at first (the dynamic loader runs within
/// milliseconds of exec; short commands end soon), then every half second, until it maps one
/// of `files` or is gone.
async fn sample_mapped_files(pid: u32, files: BTreeSet<FileId>, state: Arc<Mutex<LibraryState>>) {
    let ours = FileId::of(Path::new("/proc/self/exe")).ok();
    let mut delay = Duration::from_millis(2);
    loop {
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
        let exe = Path::new("/proc").join(pid.to_string()).join("exe");
        let Ok(current) = FileId::of(&exe) else {
            return; // gone
        };
        if Some(current) == ours {
            continue; // not exec'd yet
        }
        let Ok(mapped) = crate::targets::mapped_files(pid) else {
            return;
        };
        let found = mapped.iter().any(|file| files.contains(&file.id));
        let Ok(mut state) = state.lock() else {
            return;
        };
        state.seen_after_exec = true;
        if found {
            state.mapped = true;
            return;
        }
    }
}

fn pipe() -> std::io::Result<(std::fs::File, std::fs::File)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both fds are open and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((read.into(), write.into()))
}

/// The status a shell gives when exec fails: 127 for a file that is not there, 126 otherwise.
fn exec_failure_status(error: &std::io::Error) -> ExitStatus {
    let code = if error.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    ExitStatus::from_raw(code << 8)
}

/// Starts `argv` held between fork and exec (see [`HeldChild`]). The program is looked up as
/// a shell does ([`find_executable`]) and runs with `argv[0]` as given.
pub fn spawn_held(argv: &[OsString]) -> Result<HeldChild, ProcessError> {
    let io = |context| move |source| ProcessError::Io { context, source };
    let program = argv.first().ok_or_else(|| ProcessError::NotFound {
        command: String::new(),
    })?;
    let executable = find_executable(program)?;
    let (mut pid_read, pid_write) = pipe().map_err(io("creating a pipe"))?;
    let (release_read, release) = pipe().map_err(io("creating a pipe"))?;
    let mut command = std::process::Command::new(&executable);
    command.arg0(program).args(&argv[1..]);
    let (pid_fd, release_fd) = (pid_write.as_raw_fd(), release_read.as_raw_fd());
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // calls (getpid, write, read) on fds that stay open in the child until exec (CLOEXEC).
    unsafe {
        command.pre_exec(move || {
            let pid = libc::getpid().to_ne_bytes();
            libc::write(pid_fd, pid.as_ptr().cast(), pid.len());
            let mut byte = 0u8;
            // Wait for the parent to attach the probes. EOF instead of the byte: probectl
            // died before releasing us (killed while attaching): never run untraced.
            if libc::read(release_fd, (&raw mut byte).cast(), 1) != 1 {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let (status_tx, status) = tokio::sync::oneshot::channel();
    let (spawned_tx, spawned) = std::sync::mpsc::channel();
    let exec_error = Arc::new(Mutex::new(None));
    let exec_error_slot = exec_error.clone();
    // spawn() returns only after exec, which waits for our release: run it on its own thread.
    // The child's ends stay open here until spawn() is done: the pre_exec closure uses them by
    // number in the forked child.
    std::thread::spawn(move || {
        let child = command.spawn();
        drop((pid_write, release_read));
        let waited = match child {
            Ok(mut child) => {
                let _ = spawned_tx.send(Ok(()));
                child.wait()
            }
            Err(error) => {
                // Forked, held, released, and then exec failed (spawn reaped the child):
                // the command ends with the status a shell would give.
                let status = exec_failure_status(&error);
                if let Ok(mut slot) = exec_error_slot.lock() {
                    *slot = Some(std::io::Error::new(error.kind(), error.to_string()));
                }
                let _ = spawned_tx.send(Err(error));
                Ok(status)
            }
        };
        let _ = status_tx.send(waited);
    });
    let mut pid_bytes = [0u8; 4];
    let command_name = program.to_string_lossy().into_owned();
    if pid_read.read_exact(&mut pid_bytes).is_err() {
        // The child never reached pre_exec: spawn failed before fork or in it.
        let message = match spawned.recv() {
            Ok(Err(error)) => error.to_string(),
            _ => "the child did not start".to_string(),
        };
        return Err(ProcessError::Spawn {
            command: command_name,
            message,
        });
    }
    let pid = u32::from_ne_bytes(pid_bytes);
    // The child is held (not reaped) until we release it: its pid is still its own.
    let pidfd = match pidfd_open(pid) {
        Ok(pidfd) => pidfd,
        Err(source) => {
            // SAFETY: kill(2) on our own held child, not reaped yet: its pid is still its own.
            // Without this, closing the release pipe would let it run untraced.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            return Err(ProcessError::Io {
                context: "opening the command's pidfd",
                source,
            });
        }
    };
    Ok(HeldChild {
        pid,
        name: command_name,
        release,
        status: Some(status),
        pidfd: Some(pidfd),
        exec_error,
    })
}

/// A pidfd: becomes readable when the process exits.
pub fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; a non-negative result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly opened descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_found_as_a_shell_finds_them() {
        assert!(find_executable(&"sh".into()).is_ok());
        let status = |program: &str| {
            find_executable(&program.into())
                .err()
                .and_then(|error| error.shell_status())
        };
        assert_eq!(status("/etc/passwd"), Some(126));
        assert_eq!(status("/usr"), Some(126));
        assert_eq!(status("/nonexistent/program"), Some(127));
        assert_eq!(status("probectl-no-such-command"), Some(127));
        assert_eq!(status(""), Some(127));
    }

    #[test]
    fn a_thread_id_stands_for_its_process_and_kernel_threads_are_refused() {
        let own = std::process::id();
        assert_eq!(resolve_pid(own).expect("own pid"), PidTarget::Process(own));
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: gettid(2) has no arguments and cannot fail.
            let tid = unsafe { libc::gettid() } as u32;
            tid_tx.send(tid).expect("send tid");
            let _ = done_rx.recv();
        });
        let tid = tid_rx.recv().expect("tid");
        assert_eq!(
            resolve_pid(tid).expect("thread"),
            PidTarget::ThreadOf { tid, tgid: own }
        );
        drop(done_tx);
        thread.join().expect("join");
        // pid 2 is kthreadd.
        assert!(matches!(
            resolve_pid(2),
            Err(ProcessError::KernelThread { pid: 2, .. })
        ));
    }
}
