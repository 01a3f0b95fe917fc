//! `probectl generate man DIR` and `probectl generate completions SHELL` (a hidden subcommand):
//! the man pages and completion scripts, made from the same clap definition as `--help`, so
//! that an installed binary always matches them (scripts/install runs it).

use std::io::Write as _;
use std::path::Path;

use clap::CommandFactory;

use crate::args::{Cli, Generate};

/// Why generating failed (said by the caller).
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("writing man pages into {dir}: {source}")]
    Man {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the completion script: {0}")]
    Completions(#[source] std::io::Error),
}

pub fn generate(what: &Generate) -> Result<(), GenerateError> {
    let command = Cli::command();
    match what {
        Generate::Man { dir } => man_pages(command, dir),
        Generate::Completions { shell } => {
            let mut command = command;
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut command, "probectl", &mut script);
            std::io::stdout()
                .write_all(&script)
                .map_err(GenerateError::Completions)
        }
    }
}

/// probectl.1 and one page per visible subcommand (probectl-run.1, ...).
fn man_pages(command: clap::Command, dir: &Path) -> Result<(), GenerateError> {
    let error = |source| GenerateError::Man {
        dir: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(error)?;
    clap_mangen::generate_to(command, dir).map_err(error)
}
