//! Lists the functions of an executable that report errors of one library from one source
//! file, with their reason codes: what a `locate` rule in probes.toml is written from.
//!
//! `cargo run -p probectl-core --example locate_survey -- FILE SOURCE LIBRARY`
//! e.g. `... bun ssl/ssl_lib.cc 16`.

use std::path::Path;
use std::process::ExitCode;

use probectl_core::symbols::locate::survey;
use probectl_core::symbols::ElfFile;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, source, library] = args.as_slice() else {
        eprintln!("usage: locate_survey FILE SOURCE LIBRARY");
        return ExitCode::from(2);
    };
    let Ok(library) = library.parse::<u64>() else {
        eprintln!("locate_survey: LIBRARY must be a number, not {library:?}");
        return ExitCode::from(2);
    };
    let elf = match ElfFile::open(Path::new(file)) {
        Ok(elf) => elf,
        Err(error) => {
            eprintln!("locate_survey: {error}");
            return ExitCode::from(1);
        }
    };
    let started = std::time::Instant::now();
    let functions = survey(&elf, source, library);
    for (entry, size, reasons) in &functions {
        println!("{entry:#x} {size:6} {reasons:?}");
    }
    eprintln!("{} functions in {:?}", functions.len(), started.elapsed());
    ExitCode::SUCCESS
}
