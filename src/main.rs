//! The `probectl` command line: [`args`] parses and validates it, [`exit`] owns what is said on
//! stderr and the exit status, [`privileges`] checks the capabilities a run needs first.

mod agent;
mod args;
mod exit;
mod generate;
mod privileges;
mod report;
mod size;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use probectl_core::plan::inspect::{self, CheckReport, Verdict};
use probectl_core::session::{run, Target};

use args::{Cli, Command, ReplayArgs, ReportFormat, RunArgs};

fn main() -> ExitCode {
    probectl_openssl::register();
    probectl_boringssl::register();
    probectl_gnutls::register();
    probectl_go::register();
    probectl_rustls::register();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let matches = Cli::command()
        .color(exit::clap_color(&argv))
        .try_get_matches_from(&argv);
    let cli = match matches.and_then(|matches| Cli::from_arg_matches(&matches)) {
        Ok(cli) => cli,
        Err(error) => return exit::usage(error),
    };
    exit::configure(cli.global.quiet, cli.global.color);
    match cli.command {
        Command::List {
            probes,
            placement,
            format,
        } => match inspect::list(probes.as_deref(), placement.into()) {
            Ok(report) => print_report(format, report.to_string(), || report.to_json()),
            Err(error) => exit::error(error, exit::ERROR),
        },
        Command::Check {
            pid,
            probes,
            placement,
            all,
            format,
        } => {
            let pid = match args::process_of(pid, "checking") {
                Ok(pid) => pid,
                Err(error) => return exit::process_error(&error),
            };
            if let Err(message) =
                privileges::check_readable(pid, &privileges::Credentials::current())
            {
                return exit::error(message, exit::ERROR);
            }
            // What a run on this kernel would do without a feature (or why it would refuse).
            for line in probectl_core::kernel::features::check_notices() {
                probectl_core::notice::warning(probectl_core::notice::Topic::Tracing, line);
            }
            match inspect::check(pid, probes.as_deref(), placement.into()) {
                Ok(report) => {
                    let report = CheckReport {
                        show_all: all,
                        ..report
                    };
                    let text = format!("{}\n\n{report}", verdict_line(&report.verdict()));
                    print_report(format, text, || report.to_json())
                }
                Err(error) => exit::error(error, exit::ERROR),
            }
        }
        Command::Run(run_args) => run_command(*run_args),
        Command::Agent { config } => agent::command(&config),
        Command::Replay(replay_args) => replay_command(replay_args),
        Command::Generate(what) => match generate::generate(&what) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => exit::error(error, exit::ERROR),
        },
    }
}

/// `list`/`check` output: the text, or one JSON object on one line.
fn print_report(
    format: ReportFormat,
    text: String,
    json: impl FnOnce() -> serde_json::Value,
) -> ExitCode {
    match format {
        ReportFormat::Text => print!("{text}"),
        ReportFormat::Json => println!("{}", json()),
    }
    ExitCode::SUCCESS
}

/// `check`'s first line: `traceable: probectl run openssl --pid N (libssl.so.3)`, or why not.
fn verdict_line(verdict: &Verdict) -> String {
    let name = |path: &std::path::Path| {
        path.file_name().map_or_else(
            || path.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        )
    };
    if verdict.groups.is_empty() {
        let why = match verdict.refused.as_slice() {
            [] => "no group of the specs matches a file it maps".to_string(),
            refused => refused
                .iter()
                .map(|(group, path, reason)| format!("[{group}] {}: {reason}", name(path)))
                .collect::<Vec<_>>()
                .join("; "),
        };
        return format!(
            "{} process {} ({}): {why}",
            exit::stdout_style("not traceable:", exit::Style::Bad),
            verdict.pid,
            verdict.comm
        );
    }
    let ways: Vec<String> = verdict
        .groups
        .iter()
        .map(|(group, files)| {
            let files: Vec<String> = files.iter().map(|path| name(path)).collect();
            format!(
                "probectl run {group} --pid {} ({})",
                verdict.pid,
                files.join(", ")
            )
        })
        .collect();
    format!(
        "{} {}",
        exit::stdout_style("traceable:", exit::Style::Good),
        ways.join("; or ")
    )
}

fn replay_command(replay_args: ReplayArgs) -> ExitCode {
    let report = match replay_args
        .report
        .clone()
        .map(|path| report::create(&path).map(|file| (path, file)))
    {
        Some(Ok(report)) => Some(report),
        Some(Err(message)) => return exit::error(message, exit::ERROR),
        None => None,
    };
    let options = replay_args.resolve();
    match probectl_core::session::replay::replay(&options) {
        Ok(replayed) => {
            exit::note(format_args!(
                "replayed {} (recorded by probectl {} on Linux {})",
                options.recording.display(),
                replayed.start.probectl,
                replayed.start.kernel
            ));
            if replayed.incomplete {
                exit::warning(
                    "the recording ends before its run did (was probectl killed?): what it holds \
                     was replayed; the kernel's counts of the run's end are missing from the \
                     summary",
                );
            }
            if replayed.frames_not_recorded > 0 {
                exit::warning(format_args!(
                    "the recording reached its --record-limit: {} frames of the run's input \
                     after it were not recorded, so this replay shows the run up to there \
                     (the kernel's counts in the summary are the whole run's)",
                    replayed.frames_not_recorded
                ));
            }
            exit::summary(&replayed.summary);
            if let Some((path, file)) = report {
                if let Err(message) = report::write(&path, file, &replayed.summary) {
                    return exit::error(message, exit::ERROR);
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => exit::run_error(&error),
    }
}

fn run_command(run_args: RunArgs) -> ExitCode {
    if run_args.wait_without_pid() {
        let mut command = Cli::command();
        command.build();
        let message = "--wait needs --pid: it waits for a running process to load its TLS \
                       library (a command started with -- CMD is traced from its exec anyway)";
        let kind = clap::error::ErrorKind::MissingRequiredArgument;
        let error = match command.find_subcommand_mut("run") {
            Some(run) => run.error(kind, message),
            None => command.error(kind, message),
        };
        return exit::usage(error);
    }
    // The report file is made now, so that a path that cannot be written is an error before
    // anything is traced.
    let report = match run_args
        .report_path()
        .map(|path| report::create(&path).map(|file| (path, file)))
    {
        Some(Ok(report)) => Some(report),
        Some(Err(message)) => return exit::error(message, exit::ERROR),
        None => None,
    };
    let options = match run_args.resolve() {
        Ok(options) => options,
        Err(error) => return exit::process_error(&error),
    };
    let reach = match options.target {
        Target::Pid(pid) => privileges::Reach::Process(pid),
        Target::Command(_) => privileges::Reach::Command,
        Target::AllProcesses => privileges::Reach::AllProcesses,
    };
    if let Err(missing) = privileges::check(reach, &privileges::Credentials::current()) {
        return exit::error(missing, exit::ERROR);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            return exit::error(format_args!("starting the runtime: {error}"), exit::ERROR)
        }
    };
    match runtime.block_on(run(options)) {
        Ok(summary) => {
            exit::summary(&summary);
            if let Some((path, file)) = report {
                if let Err(message) = report::write(&path, file, &summary) {
                    return exit::error(message, exit::ERROR);
                }
            }
            exit::finished(summary.command_status)
        }
        Err(error) => exit::run_error(&error),
    }
}
