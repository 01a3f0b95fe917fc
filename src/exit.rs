//! Everything probectl says on stderr from the command line, and its exit status. One place
//! decides both:
//!
//! | status | when |
//! | --- | --- |
//! | 0 | a `--pid` or system-wide run ended (Ctrl-C, SIGTERM, the process exited), `list`, `check` |
//! | the command's | `-- CMD`: its exit code; 128+N when signal N ended it (SIGTERM: 143), as a shell says |
//! | 126 | `-- CMD` was found but cannot be executed (a shell's "Permission denied") |
//! | 127 | `-- CMD` was not found (a shell's "command not found") |
//! | 1 | any error of probectl's own: a usage error, a bad option, a startup or runtime error |

use std::fmt::Display;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitCode, ExitStatus};

use probectl_core::process::ProcessError;
use probectl_core::session::RunError;

/// The status of every error of probectl's own (usage errors included, as strace does).
pub const ERROR: u8 = 1;

/// A message on stderr: what probectl decided or noticed.
pub fn note(message: impl Display) {
    eprintln!("probectl: {message}");
}

/// An error on stderr; the status to exit with.
pub fn error(message: impl Display, status: u8) -> ExitCode {
    eprintln!("probectl: error: {message}");
    ExitCode::from(status)
}

/// The status of a command that could not be started (126/127), else [`ERROR`].
pub fn process_error(error: &ProcessError) -> ExitCode {
    self::error(error, error.shell_status().unwrap_or(ERROR))
}

/// A failed run: 126/127 when the command could not be started, else [`ERROR`].
pub fn run_error(error: &RunError) -> ExitCode {
    match error {
        RunError::Process(process) => process_error(process),
        other => self::error(other, ERROR),
    }
}

/// A command line clap refused (exit [`ERROR`]), or `--help`/`--version` (exit 0).
pub fn usage(error: clap::Error) -> ExitCode {
    let _ = error.print();
    if error.use_stderr() {
        ExitCode::from(ERROR)
    } else {
        ExitCode::SUCCESS
    }
}

/// The exit status a shell gives for a command that ended with `status`.
pub fn shell_status(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code.clamp(0, 255) as u8,
        (None, Some(signal)) => (128 + signal).clamp(0, 255) as u8,
        (None, None) => ERROR,
    }
}

/// The usual name of a signal that ends commands.
fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}

/// How a successful run ends: with the command's status in `-- CMD` mode (said on stderr when
/// a signal ended the command, as a shell says "Terminated"), else 0.
pub fn finished(command_status: Option<ExitStatus>) -> ExitCode {
    let Some(status) = command_status else {
        return ExitCode::SUCCESS;
    };
    let code = shell_status(status);
    if let Some(signal) = status.signal() {
        note(format_args!(
            "the command was ended by {}: exit status {code}",
            signal_name(signal)
        ));
    }
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_status_is_what_a_shell_gives() {
        assert_eq!(shell_status(ExitStatus::from_raw(0)), 0);
        assert_eq!(shell_status(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(shell_status(ExitStatus::from_raw(libc::SIGTERM)), 143);
        assert_eq!(shell_status(ExitStatus::from_raw(libc::SIGKILL)), 137);
        assert_eq!(shell_status(ExitStatus::from_raw(libc::SIGINT)), 130);
    }
}
