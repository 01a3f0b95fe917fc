//! What the core has to say while it works (what it attached, what it skipped and why, a
//! command's signals, warnings), as typed notices. The core never prints: it hands every notice
//! to the sink the program installed once ([`set_sink`]); the command line's `exit` module
//! decides what is written, where, with which label and colour, and what `-q` leaves out.
//! Errors are not notices: they are returned.
//!
//! Without a sink (tests, examples) notices go to stderr as the command line writes them.

use std::fmt;
use std::sync::OnceLock;

/// How much a notice matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// What probectl did or noticed; `-q` leaves it out.
    Info,
    /// Something the user must know: said also with `-q`.
    Warning,
    /// Something failed, and the run goes on to tell its end (a command that could not be
    /// executed once started).
    Error,
}

/// What a notice is about, for a sink that treats some apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// A file's probes attached, skipped, or failed.
    Attach,
    /// Tracing started; a traced process exited.
    Tracing,
    /// The command probectl started: signals passed on, its end.
    Command,
    /// A traced program whose TLS cannot be captured.
    Coverage,
    /// Fds and addresses of connections, where they degrade.
    Attribution,
    /// The HTTP decoder's totals.
    Decode,
    /// An output format's own remarks (pcapng).
    Output,
    /// The recording of the run (`--record`).
    Recording,
}

/// One notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub level: Level,
    pub topic: Topic,
    /// The message, without "probectl:" or a label: the sink adds those.
    pub text: String,
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.level {
            Level::Info => write!(f, "probectl: {}", self.text),
            Level::Warning => write!(f, "probectl: warning: {}", self.text),
            Level::Error => write!(f, "probectl: error: {}", self.text),
        }
    }
}

type Sink = Box<dyn Fn(&Notice) + Send + Sync>;

static SINK: OnceLock<Sink> = OnceLock::new();

/// Installs the sink of every notice of the process; false if one was installed already.
pub fn set_sink(sink: impl Fn(&Notice) + Send + Sync + 'static) -> bool {
    SINK.set(Box::new(sink)).is_ok()
}

/// Hands a notice to the sink.
pub fn emit(level: Level, topic: Topic, text: impl Into<String>) {
    let notice = Notice {
        level,
        topic,
        text: text.into(),
    };
    match SINK.get() {
        Some(sink) => sink(&notice),
        None => eprintln!("{notice}"),
    }
}

pub fn info(topic: Topic, text: impl Into<String>) {
    emit(Level::Info, topic, text);
}

pub fn warning(topic: Topic, text: impl Into<String>) {
    emit(Level::Warning, topic, text);
}

pub fn error(topic: Topic, text: impl Into<String>) {
    emit(Level::Error, topic, text);
}
