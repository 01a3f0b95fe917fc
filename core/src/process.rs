//! Processes probectl starts or watches: a command held between fork and exec until the probes
//! are attached, pidfds that tell when a traced process exits, PATH lookup.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot run {command}: {message}")]
    Spawn { command: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Finds `program` the way a shell would (a name without '/' is looked up in PATH).
pub fn find_executable(program: &OsString) -> Option<PathBuf> {
    let path = Path::new(program);
    if path.components().count() > 1 {
        return path.is_file().then(|| path.to_path_buf());
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&search)
        .map(|directory| directory.join(path))
        .find(|candidate| candidate.is_file())
}

/// A child started by probectl, held before `exec` until the probes are in place, so that it
/// is traced from its first TLS byte.
/// Dropped without `release`, it kills the child: a command must not run untraced because
/// probectl failed to attach.
pub struct HeldChild {
    pub pid: u32,
    /// Writing a byte lets the child exec.
    release: std::fs::File,
    status: Option<ChildStatus>,
}

/// Resolves with the exit status of a started command.
pub type ChildStatus = tokio::sync::oneshot::Receiver<std::io::Result<ExitStatus>>;

impl HeldChild {
    /// Lets the child exec; returns what resolves with its exit status.
    pub fn release(mut self) -> Option<ChildStatus> {
        let _ = self.release.write_all(&[1]);
        self.status.take()
    }
}

impl Drop for HeldChild {
    fn drop(&mut self) {
        if self.status.is_some() {
            // SAFETY: kill(2) with our own child's pid; the child is not reaped before the
            // waiting thread sees it exit, so the pid cannot have been reused.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
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

/// Starts `argv` held between fork and exec (see [`HeldChild`]).
pub fn spawn_held(argv: &[OsString]) -> Result<HeldChild, ProcessError> {
    let io = |context| move |source| ProcessError::Io { context, source };
    let (mut pid_read, pid_write) = pipe().map_err(io("creating a pipe"))?;
    let (release_read, release) = pipe().map_err(io("creating a pipe"))?;
    let mut command = std::process::Command::new(&argv[0]);
    command.args(&argv[1..]);
    let (pid_fd, release_fd) = (pid_write.as_raw_fd(), release_read.as_raw_fd());
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // calls (getpid, write, read) on fds that stay open in the child until exec (CLOEXEC).
    unsafe {
        command.pre_exec(move || {
            let pid = libc::getpid().to_ne_bytes();
            libc::write(pid_fd, pid.as_ptr().cast(), pid.len());
            let mut byte = 0u8;
            // Wait for the parent to attach the probes (or to die: EOF also releases us).
            libc::read(release_fd, (&raw mut byte).cast(), 1);
            Ok(())
        });
    }
    let (status_tx, status) = tokio::sync::oneshot::channel();
    let (spawned_tx, spawned) = std::sync::mpsc::channel();
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
                let _ = spawned_tx.send(Err(error));
                return;
            }
        };
        let _ = status_tx.send(waited);
    });
    let mut pid_bytes = [0u8; 4];
    let command_name = argv[0].to_string_lossy().into_owned();
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
    Ok(HeldChild {
        pid: u32::from_ne_bytes(pid_bytes),
        release,
        status: Some(status),
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
