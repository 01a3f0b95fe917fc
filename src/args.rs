//! The command line: parsed by clap (which rejects conflicting flags and values out of range),
//! then validated and turned into what the core needs in one place, [`Args::resolve`].

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use probectl_core::output::Format;
use probectl_core::session::process::{find_executable, resolve_pid, PidTarget, ProcessError};
use probectl_core::session::replay::ReplayOptions;
use probectl_core::session::{RunOptions, Target, MAX_CAPTURE_LIMIT};
use probectl_core::symbols::placement::PlacementMode;

use crate::exit;
use crate::size;

const RUN_EXAMPLES: &str = "\
Examples:
  probectl run openssl --pid 1234                 trace one running process (and its children)
  probectl run openssl                            every process on the host that maps libssl
  probectl run openssl -o tls.txt -- curl https://127.0.0.1:8443/
                                                  start curl traced; events to tls.txt (mode 0600)
  probectl run all --format json -- python3 app.py
                                                  every group of probes.toml, JSON lines
  probectl run gnutls --hex --pid 1234            hexdump of the data

With -- CMD, probectl exits with CMD's status (128+N if signal N ended it; 126: not executable;
127: not found); SIGINT/SIGTERM to probectl are passed on to CMD. probectl's own errors exit 1.";

const REPLAY_EXAMPLES: &str = "\
Examples:
  probectl run openssl --record run.rec -- curl https://127.0.0.1:8443/
                                                  trace, and keep the raw records
  probectl replay run.rec                         what the run printed, again
  probectl replay run.rec --decode http --format json
                                                  the same records, decoded as HTTP";

const LIST_EXAMPLES: &str = "\
Examples:
  probectl list                                   the built-in probes.toml
  probectl list --probes my-probes.toml           your own specs
  probectl list --format json                     the same as one JSON object";

const CHECK_EXAMPLES: &str = "\
Examples:
  probectl check --pid 1234                       why (or why not) process 1234 can be traced
  probectl check --pid $(pgrep -n nginx)          the newest nginx process
  probectl check --pid 1234 --all                 also the files that no group matches
  probectl check --pid 1234 --format json         the same as one JSON object";

#[derive(Parser)]
#[command(
    name = "probectl",
    version,
    about = "Shows the plaintext of TLS traffic of running programs (eBPF uprobes; no keys, restarts or recompiles)",
    after_help = "Examples:\n  probectl run openssl --pid 1234\n  probectl run openssl -- curl https://127.0.0.1:8443/\n  probectl list\n  probectl check --pid 1234\n\nExit status: 0, or the command's with -- CMD; 1 on any error of probectl's own.",
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every subcommand.
#[derive(ClapArgs, Clone, Copy)]
pub struct GlobalArgs {
    /// Say nothing on stderr but errors and warnings (no attach report, no summary).
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Colour on stderr and in `check`: auto (on a terminal, unless NO_COLOR is set), always,
    /// never.
    #[arg(
        long,
        value_enum,
        value_name = "WHEN",
        default_value = "auto",
        global = true
    )]
    pub color: ColorArg,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorArg {
    Auto,
    Always,
    Never,
}

/// The format of `list` and `check`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// For people.
    Text,
    /// One JSON object (fields: see docs/usage.md).
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// Header line, then the data with non-printable bytes escaped.
    Text,
    /// Header line, then a hexdump (the same as --hex).
    Hex,
    /// One JSON object per line.
    Json,
    /// TCP conversations for Wireshark/tshark (to a file, or to a pipe: `| tshark -i -`).
    Pcapng,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DecodeArg {
    /// HTTP/1.x, HTTP/2 (HPACK), gRPC and WebSocket, live: each head when it is complete, each
    /// body piece (SSE event) as it arrives, then the exchange's record with its timing.
    Http,
    /// The same, with one record per exchange, written when it is over.
    #[value(name = "http=exchange")]
    HttpExchange,
}

/// Where the uprobes go (see docs/how-it-works.md, "Probe placement").
#[derive(Clone, Copy, ValueEnum)]
pub enum PlacementArg {
    /// Entry uprobe at each function's start plus a uretprobe.
    Classic,
    /// Probes on instructions the kernel emulates where disassembly proves them; classic
    /// elsewhere.
    Auto,
}

impl From<PlacementArg> for PlacementMode {
    fn from(arg: PlacementArg) -> PlacementMode {
        match arg {
            PlacementArg::Classic => PlacementMode::Classic,
            PlacementArg::Auto => PlacementMode::Auto,
        }
    }
}

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("output_or_keylog").args(["output", "keylog", "packets"]).multiple(true))]
pub struct RunArgs {
    /// The group of probes.toml to trace (openssl, boringssl, gnutls, nss, go, ...), or "all".
    #[arg(value_name = "GROUP")]
    group: String,
    /// Trace this running process (a thread id stands for its process), and its children.
    #[arg(long, short, value_name = "PID", conflicts_with = "command", value_parser = clap::value_parser!(u32).range(1..))]
    pid: Option<u32>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: FormatArg,
    /// Show data as a hexdump (the same as --format hex).
    #[arg(long, conflicts_with = "format")]
    hex: bool,
    /// Write events to this file instead of stdout: a new file, created with mode 0600, opened
    /// and checked before tracing starts. An existing file is refused (see --force); a
    /// symbolic link is never followed.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// With -o, --keylog or --packets: overwrite an existing regular file (it keeps its mode; a
    /// read-only file is still refused, and a symbolic link is never followed).
    #[arg(long, requires = "output_or_keylog")]
    force: bool,
    /// Write the session secrets of every traced handshake to this file, as NSS key-log lines
    /// (what SSLKEYLOGFILE holds; Wireshark decrypts with it), one line as each secret is
    /// seen. Created with mode 0600 like -o (see --force).
    #[arg(long, value_name = "FILE")]
    keylog: Option<PathBuf>,
    /// Write the real packets of the traced TLS connections to this pcapng file (mode 0600,
    /// like -o), each connection's session secrets in a Decryption Secrets Block before its
    /// first packet: Wireshark and tshark decrypt it with no key log of their own.
    #[arg(long, value_name = "FILE")]
    packets: Option<PathBuf>,
    /// When the run ends, write its summary as JSON to this file (created with mode 0600 when
    /// the run starts): totals, every loss by cause, connections, probes.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Probe specs to use instead of the built-in probes.toml.
    #[arg(long, value_name = "FILE")]
    probes: Option<PathBuf>,
    /// Bytes captured per call at most (1 to 64M); the rest is counted as truncated. Sizes
    /// take K, M, G suffixes (powers of 1024; KB, MB, GB: of 1000).
    #[arg(long, value_name = "BYTES", default_value = "1M",
          value_parser = |text: &str| size::capture_limit(text, MAX_CAPTURE_LIMIT))]
    max_bytes: u64,
    /// Size of the kernel ring buffer (a power of two, at least 4K).
    #[arg(long, value_name = "BYTES", default_value = "32M", value_parser = size::ring_bytes)]
    ring_bytes: u32,
    /// Decode a protocol: one record per exchange instead of one per call (connections that
    /// are not HTTP stay raw). Not with --format pcapng.
    #[arg(long, value_enum)]
    decode: Option<DecodeArg>,
    /// With --decode: bytes kept per body at most; the rest is counted.
    #[arg(long, value_name = "BYTES", default_value = "1M", value_parser = size::body_limit,
          requires = "decode")]
    max_body: u64,
    /// Bytes that --decode http and --format pcapng may hold for all connections together
    /// (bodies in flight, decoders' buffers, conversations); past it, body bytes are counted
    /// and not kept, and the oldest pcapng conversations are ended (counted).
    #[arg(long, value_name = "BYTES", default_value = "128M", value_parser = size::body_limit)]
    memory_budget: u64,
    /// Probe placement: classic (entry uprobe + uretprobe) or auto (emulated where proven).
    #[arg(long, value_enum, value_name = "WHERE", default_value = "auto")]
    placement: PlacementArg,
    /// With --pid: a process that maps no matching library yet is traced anyway, and its
    /// library is attached as soon as it loads one (dlopen), instead of an error.
    #[arg(long, requires = "pid")]
    wait: bool,
    /// Also keep the run's raw records in this file (created with mode 0600; an existing
    /// file is refused), for `probectl replay FILE`: a recording sent with a bug report
    /// replays anywhere.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// With --record: the most bytes the recording's input takes; past it the
    /// run goes on unrecorded (a warning, and the replay says so).
    #[arg(long, value_name = "BYTES", default_value = "1G", value_parser = size::body_limit,
          requires = "record")]
    record_limit: u64,
    /// Trace only the processes of this container (its id, a prefix of at least 4 digits, or
    /// its name), selected in the kernel. Repeatable.
    #[arg(long, value_name = "ID|NAME", conflicts_with = "command")]
    container: Vec<String>,
    /// Trace only the processes of this cgroup v2 (and those below it), selected in the
    /// kernel. Repeatable.
    #[arg(long, value_name = "PATH", conflicts_with = "command")]
    cgroup: Vec<PathBuf>,
    /// Trace only the processes with this command name (as /proc/PID/comm shows it),
    /// selected in the kernel when they start a program.
    #[arg(long, value_name = "NAME", conflicts_with = "command")]
    comm: Option<String>,
    /// Write only the events of connections with this port at either end. Repeatable.
    #[arg(long, value_name = "N")]
    port: Vec<u16>,
    /// Write only the events of connections with this address (or a name's addresses) at
    /// either end. Repeatable.
    #[arg(long, value_name = "ADDR|NAME")]
    host: Vec<String>,
    /// Send a span per decoded HTTP exchange to an OpenTelemetry receiver: otlp=URL (OTLP
    /// over HTTP/protobuf, e.g. otlp=http://127.0.0.1:4318) or otlp-grpc=URL (OTLP over gRPC).
    /// Needs --decode http.
    #[arg(long, value_name = "KIND=URL", value_parser = |text: &str| probectl_export::ExportOptions::parse(text).map_err(|e| e.to_string()))]
    export: Option<probectl_export::ExportOptions>,
    /// With --export: also send each request's and response's headers and body (what
    /// --decode http kept of it) as an OpenTelemetry log record tied to the exchange's span.
    /// Payloads are sensitive: they leave the host only when asked for.
    #[arg(long, requires = "export")]
    export_payloads: bool,
    /// With --export https://...: also trust the certificates of this PEM file (a private
    /// Collector's CA), besides the system's roots.
    #[arg(long, value_name = "FILE", requires = "export")]
    export_ca: Option<PathBuf>,
    /// Name pods (name, namespace, container) with this container runtime's CRI socket.
    /// Without it, the default sockets of containerd, CRI-O, k3s and cri-dockerd are tried
    /// where they exist.
    #[arg(long, value_name = "PATH")]
    cri_socket: Option<PathBuf>,
    /// Start this command and trace it (and only it) from its first TLS byte.
    #[arg(last = true)]
    command: Vec<OsString>,
}

/// `probectl replay FILE`: what the run printed, again, from its recording.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// A recording made by `probectl run --record FILE`.
    #[arg(value_name = "FILE")]
    recording: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: FormatArg,
    /// Show data as a hexdump (the same as --format hex).
    #[arg(long, conflicts_with = "format")]
    hex: bool,
    /// Write events to this file instead of stdout, as `run -o` does: a new file, created with
    /// mode 0600 (see --force); a symbolic link is never followed.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// With -o: overwrite an existing regular file (it keeps its mode).
    #[arg(long, requires = "output")]
    force: bool,
    /// Write the summary as JSON to this file (mode 0600), as `run --report` does.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Decode a protocol, as `run --decode` does.
    #[arg(long, value_enum)]
    decode: Option<DecodeArg>,
    /// With --decode: bytes kept per body at most; the rest is counted.
    #[arg(long, value_name = "BYTES", default_value = "1M", value_parser = size::body_limit,
          requires = "decode")]
    max_body: u64,
    /// Bytes that --decode http and --format pcapng may hold, as in `run`, for all connections together
    /// (bodies in flight, decoders' buffers, conversations); past it, body bytes are counted
    /// and not kept, and the oldest pcapng conversations are ended (counted).
    #[arg(long, value_name = "BYTES", default_value = "128M", value_parser = size::body_limit)]
    memory_budget: u64,
}

impl ReplayArgs {
    pub fn resolve(self) -> ReplayOptions {
        ReplayOptions {
            recording: self.recording,
            format: format_of(self.format, self.hex),
            output: self.output,
            force: self.force,
            decode: decode_of(self.decode, self.max_body),
            memory_budget: self.memory_budget,
        }
    }
}

/// `--decode` (with `--max-body`): live HTTP, or one record per exchange.
fn decode_of(
    decode: Option<DecodeArg>,
    max_body: u64,
) -> Option<(probectl_core::decode::http::Decode, u64)> {
    use probectl_core::decode::http::live::Mode;
    decode.map(|decode| {
        let mode = match decode {
            DecodeArg::Http => Mode::Live,
            DecodeArg::HttpExchange => Mode::Exchange,
        };
        (probectl_core::decode::http::Decode::Http(mode), max_body)
    })
}

/// The event format of `--format` and `--hex`.
fn format_of(format: FormatArg, hex: bool) -> Format {
    match (format, hex) {
        (_, true) | (FormatArg::Hex, _) => Format::Hex,
        (FormatArg::Json, false) => Format::Json,
        (FormatArg::Pcapng, false) => Format::Pcapng,
        (FormatArg::Text, false) => Format::Text,
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Trace a group's plaintext: in one process (--pid), in a command it starts (-- CMD), or
    /// in every process on the host.
    #[command(after_help = RUN_EXAMPLES)]
    Run(Box<RunArgs>),
    /// Run as a long-lived system-wide agent configured by a TOML file (group, selection,
    /// output, exporter); SIGHUP reloads it; logs are JSON lines on stderr.
    Agent {
        /// The configuration file (docs/agent.md).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Show every group of the probe specs, its probes, and where on this host it would attach
    /// (library files found, each symbol's offset or why it is missing).
    #[command(after_help = LIST_EXAMPLES)]
    List {
        /// Probe specs to use instead of the built-in probes.toml.
        #[arg(long, value_name = "FILE")]
        probes: Option<PathBuf>,
        /// Probe placement: classic (entry uprobe + uretprobe) or auto (emulated where proven).
        #[arg(long, value_enum, value_name = "WHERE", default_value = "auto")]
        placement: PlacementArg,
        /// Output format.
        #[arg(long, value_enum, value_name = "FORMAT", default_value = "text")]
        format: ReportFormat,
    },
    /// Say whether one process can be traced, and how: which group matches which of its files,
    /// and each symbol's offset or why it is missing.
    #[command(after_help = CHECK_EXAMPLES)]
    Check {
        /// The process to look at (a thread id stands for its process).
        #[arg(long, short, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
        pid: u32,
        /// Probe specs to use instead of the built-in probes.toml.
        #[arg(long, value_name = "FILE")]
        probes: Option<PathBuf>,
        /// Probe placement: classic (entry uprobe + uretprobe) or auto (emulated where proven).
        #[arg(long, value_enum, value_name = "WHERE", default_value = "auto")]
        placement: PlacementArg,
        /// Also show the mapped files that no group matches.
        #[arg(long)]
        all: bool,
        /// Output format.
        #[arg(long, value_enum, value_name = "FORMAT", default_value = "text")]
        format: ReportFormat,
    },
    /// Print again what a run printed, from its recording (`run --record FILE`), in any
    /// format or decoded; needs no privileges.
    #[command(after_help = REPLAY_EXAMPLES)]
    Replay(ReplayArgs),
    /// Print the man page or shell completions (for packaging; scripts/install uses it).
    #[command(hide = true, subcommand)]
    Generate(Generate),
}

#[derive(Subcommand)]
pub enum Generate {
    /// Write the man pages (probectl.1, probectl-run.1, ...) into a directory.
    Man {
        /// The directory (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the completion script for a shell.
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

/// The process `--pid` names: a thread id becomes its process (said on stderr, with `doing`:
/// "tracing" or "checking"), a kernel thread is an error.
pub fn process_of(pid: u32, doing: &str) -> Result<u32, ProcessError> {
    let target = resolve_pid(pid)?;
    if let PidTarget::ThreadOf { tid, tgid } = target {
        exit::note(format_args!(
            "{tid} is a thread of process {tgid} ({}): {doing} process {tgid}",
            probectl_core::targets::comm(tgid)
        ));
    }
    Ok(target.pid())
}

impl RunArgs {
    /// `--wait` needs `--pid` (clap's `requires` does not see it beside `-- CMD`).
    /// `--report FILE`.
    pub fn report_path(&self) -> Option<PathBuf> {
        self.report.clone()
    }

    pub fn wait_without_pid(&self) -> bool {
        self.wait && self.pid.is_none()
    }

    /// Checks what clap cannot and derives the run's options.
    pub fn resolve(self) -> Result<RunOptions, ProcessError> {
        let format = format_of(self.format, self.hex);
        let target = match (self.pid, self.command.first()) {
            (Some(pid), _) => Target::Pid(process_of(pid, "tracing")?),
            (None, Some(program)) => {
                // Not found (127) or not executable (126) is said before anything is attached.
                find_executable(program)?;
                if self.output.is_none()
                    && probectl_core::output::terminal::stdout_is_terminal()
                    && !exit::is_quiet()
                {
                    exit::note(
                        "the command's output and the events share this terminal (events are \
                         written in whole lines); use -o FILE to keep them apart",
                    );
                }
                Target::Command(self.command)
            }
            (None, None) => Target::AllProcesses,
        };
        Ok(RunOptions {
            plugin: self.group,
            target,
            specs: self.probes,
            format,
            output: self.output,
            force: self.force,
            max_capture_bytes: self.max_bytes,
            ring_bytes: self.ring_bytes,
            wait_for_library: self.wait,
            decode: decode_of(self.decode, self.max_body),
            memory_budget: self.memory_budget,
            placement: self.placement.into(),
            record: self.record,
            record_limit: self.record_limit,
            keylog: self.keylog,
            packets: self.packets,
            selection: probectl_core::selection::Selection {
                containers: self.container,
                cgroups: self.cgroup,
                comm: self.comm,
                ports: self.port,
                hosts: self.host,
            },
            export: self.export.map(|export| probectl_export::ExportOptions {
                payloads: self.export_payloads,
                ca_file: self.export_ca,
                ..export
            }),
            cri_socket: self.cri_socket,
            append: false,
            stop: None,
        })
    }
}
