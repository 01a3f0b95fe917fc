//! `--report FILE`: the run's summary as JSON, for scripts and tests (see
//! `Summary::to_json`). The file is created when the run starts (0600: it names the traced
//! processes and their peers) and written when it ends.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use probectl_core::output::create_private;
use probectl_core::session::Summary;

/// Creates (or empties) the report file, mode 0600.
pub fn create(path: &Path) -> Result<File, String> {
    create_private(path)
        .map_err(|error| format!("cannot create the report {}: {error}", path.display()))
}

/// Writes the summary into the report file.
pub fn write(path: &Path, mut file: File, summary: &Summary) -> Result<(), String> {
    let mut text = summary.to_json().to_string();
    text.push('\n');
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|error| format!("cannot write the report {}: {error}", path.display()))
}
