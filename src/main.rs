//! The `probectl` command line: [`args`] parses and validates it, [`exit`] owns what is said on
//! stderr and the exit status.

mod args;
mod exit;

use std::process::ExitCode;

use clap::Parser;
use probectl_core::inspect;
use probectl_core::session::run;

use args::{Cli, Command, RunArgs};

fn main() -> ExitCode {
    probectl_openssl::register();
    probectl_boringssl::register();
    probectl_gnutls::register();
    probectl_go::register();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return exit::usage(error),
    };
    let report = match cli.command {
        Command::List { probes, placement } => {
            inspect::list(probes.as_deref(), placement.into()).map(|r| r.to_string())
        }
        Command::Check {
            pid,
            probes,
            placement,
        } => match args::process_of(pid) {
            Ok(pid) => {
                inspect::check(pid, probes.as_deref(), placement.into()).map(|r| r.to_string())
            }
            Err(error) => return exit::process_error(&error),
        },
        Command::Run(run_args) => return run_command(run_args),
    };
    match report {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => exit::error(error, exit::ERROR),
    }
}

fn run_command(run_args: RunArgs) -> ExitCode {
    let options = match run_args.resolve() {
        Ok(options) => options,
        Err(error) => return exit::process_error(&error),
    };
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
        Ok(summary) => exit::finished(summary.command_status),
        Err(error) => exit::run_error(&error),
    }
}
