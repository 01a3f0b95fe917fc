//! Everything probectl says on stderr, and its exit status. One place decides both: the core
//! says nothing itself, it returns errors and summaries and hands its notices to the sink
//! installed here (`probectl_core::notice`).
//!
//! | status | when |
//! | --- | --- |
//! | 0 | a `--pid` or system-wide run ended (Ctrl-C, SIGTERM, the process exited), `list`, `check` |
//! | the command's | `-- CMD`: its exit code; 128+N when signal N ended it (SIGTERM: 143), as a shell says |
//! | 126 | `-- CMD` was found but cannot be executed (a shell's "Permission denied") |
//! | 127 | `-- CMD` was not found (a shell's "command not found") |
//! | 1 | any error of probectl's own: a usage error, a bad option, a startup or runtime error |

use std::fmt::Display;
use std::io::IsTerminal;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitCode, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};

use probectl_core::notice::{Level, Notice};
use probectl_core::session::process::ProcessError;
use probectl_core::session::{RunError, Summary};

use crate::args::ColorArg;

/// The status of every error of probectl's own (usage errors included, as strace does).
pub const ERROR: u8 = 1;

/// Colour on stderr (decided once, by [`configure`]).
static STDERR_COLOR: AtomicBool = AtomicBool::new(false);
/// Colour on stdout (`check`'s verdict).
static STDOUT_COLOR: AtomicBool = AtomicBool::new(false);

/// Applies `--quiet` and `--color`: `auto` colours a stream that is a terminal, unless the
/// NO_COLOR environment variable is set to anything but the empty string (no-color.org).
pub fn configure(quiet: bool, color: ColorArg) {
    QUIET.store(quiet, Ordering::Relaxed);
    // The core's notices come here: said as notes, warnings or errors.
    probectl_core::notice::set_sink(|notice: &Notice| {
        if JSON_LOGS.load(Ordering::Relaxed) {
            let level = match notice.level {
                Level::Info => "info",
                Level::Warning => "warning",
                Level::Error => "error",
            };
            let topic = format!("{:?}", notice.topic).to_lowercase();
            log_json(level, Some(&topic), &notice.text, None);
            return;
        }
        match notice.level {
            Level::Info => note(&notice.text),
            Level::Warning => warning(&notice.text),
            Level::Error => {
                let label = paint("error:", Style::Error, STDERR_COLOR.load(Ordering::Relaxed));
                eprintln!("probectl: {label} {}", notice.text);
            }
        }
    });
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    let decide = |is_terminal: bool| match color {
        ColorArg::Always => true,
        ColorArg::Never => false,
        ColorArg::Auto => is_terminal && !no_color,
    };
    STDERR_COLOR.store(decide(std::io::stderr().is_terminal()), Ordering::Relaxed);
    STDOUT_COLOR.store(decide(std::io::stdout().is_terminal()), Ordering::Relaxed);
}

/// `--color` as clap takes it, read before clap parses (so that its own errors and help are
/// coloured the same way).
pub fn clap_color(args: &[std::ffi::OsString]) -> clap::ColorChoice {
    let mut choice = "auto".to_string();
    let mut words = args.iter().skip(1).map(|arg| arg.to_string_lossy());
    while let Some(word) = words.next() {
        if word == "--" {
            break;
        }
        if let Some(value) = word.strip_prefix("--color=") {
            choice = value.to_string();
        } else if word == "--color" {
            choice = words
                .next()
                .map(|value| value.to_string())
                .unwrap_or_default();
        }
    }
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    match choice.as_str() {
        "always" => clap::ColorChoice::Always,
        "never" => clap::ColorChoice::Never,
        _ if no_color => clap::ColorChoice::Never,
        _ => clap::ColorChoice::Auto,
    }
}

/// `-q`: informational messages (attach reports, the summary) are not written; warnings,
/// errors and losses still are.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Whether `-q` was given.
pub fn is_quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// A run's summary on stderr; with `-q`, only its losses, when there were any: nothing is
/// lost silently.
pub fn summary(summary: &Summary) {
    if !is_quiet() {
        eprintln!("{summary}");
    } else if !summary.losses().is_empty() {
        eprintln!("probectl: losses: {}", summary.losses().join("; "));
    }
}

/// SGR codes of the few styles probectl uses.
#[derive(Clone, Copy)]
pub enum Style {
    Error,
    Good,
    Bad,
}

impl Style {
    fn code(self) -> &'static str {
        match self {
            Style::Error => "1;31",
            Style::Good => "1;32",
            Style::Bad => "1;31",
        }
    }
}

fn paint(text: &str, style: Style, on: bool) -> String {
    if on {
        format!("\x1b[{}m{text}\x1b[0m", style.code())
    } else {
        text.to_string()
    }
}

/// `text` in `style` when stdout is coloured.
pub fn stdout_style(text: &str, style: Style) -> String {
    paint(text, style, STDOUT_COLOR.load(Ordering::Relaxed))
}

/// Every message on stderr as one JSON object per line (`probectl agent`).
static JSON_LOGS: AtomicBool = AtomicBool::new(false);

/// Says everything on stderr as JSON lines from now on.
pub fn json_logs() {
    JSON_LOGS.store(true, Ordering::Relaxed);
}

/// One structured log line: `{"ts": RFC 3339 UTC, "level", "topic", "msg", ...fields}`.
pub fn log_json(
    level: &str,
    topic: Option<&str>,
    message: &str,
    fields: Option<serde_json::Value>,
) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut line = serde_json::json!({
        "ts_ns": now.as_nanos() as u64,
        "level": level,
        "msg": message,
    });
    if let Some(topic) = topic {
        line["topic"] = topic.into();
    }
    if let (Some(serde_json::Value::Object(fields)), Some(object)) = (fields, line.as_object_mut())
    {
        object.extend(fields);
    }
    eprintln!("{line}");
}

/// A message on stderr: what probectl decided or noticed (not with `-q`).
pub fn note(message: impl Display) {
    if JSON_LOGS.load(Ordering::Relaxed) {
        log_json("info", None, &message.to_string(), None);
        return;
    }
    if !is_quiet() {
        eprintln!("probectl: {message}");
    }
}

/// A warning on stderr (also with `-q`): something the user must know about the output.
pub fn warning(message: impl Display) {
    if JSON_LOGS.load(Ordering::Relaxed) {
        log_json("warning", None, &message.to_string(), None);
        return;
    }
    let label = paint(
        "warning:",
        Style::Error,
        STDERR_COLOR.load(Ordering::Relaxed),
    );
    eprintln!("probectl: {label} {message}");
}

/// An error on stderr; the status to exit with.
pub fn error(message: impl Display, status: u8) -> ExitCode {
    if JSON_LOGS.load(Ordering::Relaxed) {
        log_json("error", None, &message.to_string(), None);
        return ExitCode::from(status);
    }
    let label = paint("error:", Style::Error, STDERR_COLOR.load(Ordering::Relaxed));
    eprintln!("probectl: {label} {message}");
    ExitCode::from(status)
}

/// The status of a command that could not be started (126/127), else [`ERROR`].
pub fn process_error(error: &ProcessError) -> ExitCode {
    self::error(error, error.shell_status().unwrap_or(ERROR))
}

/// A failed run: 126/127 when the command could not be started, else [`ERROR`]. A run that
/// stopped on its output's error tells its summary first.
pub fn run_error(error: &RunError) -> ExitCode {
    match error {
        RunError::Process(process) => process_error(process),
        RunError::WriteFailed { summary, .. } => {
            self::summary(summary);
            self::error(error, ERROR)
        }
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
