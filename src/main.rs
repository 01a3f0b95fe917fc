//! The `probectl` command line.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use probectl_core::inspect;
use probectl_core::output::Format;
use probectl_core::placement::PlacementMode;
use probectl_core::session::{run, RunOptions, Target};

#[derive(Parser)]
#[command(
    name = "probectl",
    version,
    about = "Shows the plaintext of TLS traffic of running programs (eBPF uprobes; no keys, restarts or recompiles)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the uprobes go (see README, "Probe placement").
#[derive(Clone, Copy, ValueEnum)]
enum PlacementArg {
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

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Trace a library's plaintext: in one process (--pid), in a command it starts (-- CMD), or
    /// in every process on the host.
    Run {
        /// The probes.toml group to trace (e.g. openssl), or "all".
        plugin: String,
        /// Trace this running process only.
        #[arg(long, short, conflicts_with = "command")]
        pid: Option<u32>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: FormatArg,
        /// With text output: show data as a hexdump.
        #[arg(long)]
        hex: bool,
        /// Write events to this file (created with mode 0600) instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Probe specs to use instead of the built-in probes.toml.
        #[arg(long)]
        probes: Option<PathBuf>,
        /// Bytes captured per call at most; the rest is counted as truncated.
        #[arg(long, default_value_t = 1024 * 1024)]
        max_bytes: u64,
        /// Size of the kernel ring buffer (a power of two).
        #[arg(long, default_value_t = 16 * 1024 * 1024)]
        ring_bytes: u32,
        /// Probe placement: classic (entry uprobe + uretprobe) or auto (emulated where proven).
        #[arg(long, value_enum, default_value = "auto")]
        placement: PlacementArg,
        /// Start this command and trace it (and only it) from its first TLS byte.
        #[arg(last = true)]
        command: Vec<OsString>,
    },
    /// Show every group of the probe specs, its probes, and where on this host it would attach
    /// (library files found, each symbol's offset or why it is missing).
    List {
        /// Probe specs to use instead of the built-in probes.toml.
        #[arg(long)]
        probes: Option<PathBuf>,
        /// Probe placement: classic (entry uprobe + uretprobe) or auto (emulated where proven).
        #[arg(long, value_enum, default_value = "auto")]
        placement: PlacementArg,
    },
    /// Show, for one process, every file it maps, which group matches it, and each symbol's
    /// offset or why it is missing.
    Check {
        /// The process to look at.
        #[arg(long, short)]
        pid: u32,
        /// Probe specs to use instead of the built-in probes.toml.
        #[arg(long)]
        probes: Option<PathBuf>,
        /// Probe placement: classic (entry uprobe + uretprobe) or auto (emulated where proven).
        #[arg(long, value_enum, default_value = "auto")]
        placement: PlacementArg,
    },
}

fn main() -> ExitCode {
    probectl_openssl::register();
    probectl_boringssl::register();
    probectl_gnutls::register();
    let cli = Cli::parse();
    let report = match cli.command {
        Command::List { probes, placement } => {
            inspect::list(probes.as_deref(), placement.into()).map(|r| r.to_string())
        }
        Command::Check {
            pid,
            probes,
            placement,
        } => inspect::check(pid, probes.as_deref(), placement.into()).map(|r| r.to_string()),
        run @ Command::Run { .. } => return run_command(run),
    };
    match report {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("probectl: error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run_command(command: Command) -> ExitCode {
    let Command::Run {
        plugin,
        pid,
        format,
        hex,
        output,
        probes,
        max_bytes,
        ring_bytes,
        placement,
        command,
    } = command
    else {
        return ExitCode::FAILURE;
    };
    let target = match (pid, command.is_empty()) {
        (Some(pid), _) => Target::Pid(pid),
        (None, false) => Target::Command(command),
        (None, true) => Target::AllProcesses,
    };
    let format = match (format, hex) {
        (FormatArg::Json, _) => Format::Json,
        (FormatArg::Text, true) => Format::Hex,
        (FormatArg::Text, false) => Format::Text,
    };
    let options = RunOptions {
        plugin,
        target,
        specs: probes,
        format,
        output,
        max_capture_bytes: max_bytes,
        ring_bytes,
        placement: placement.into(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("probectl: error: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(summary) => match summary.command_status.and_then(|status| status.code()) {
            Some(code) => ExitCode::from(code.clamp(0, 255) as u8),
            None => ExitCode::SUCCESS,
        },
        Err(error) => {
            eprintln!("probectl: error: {error}");
            ExitCode::FAILURE
        }
    }
}
