//! `probectl replay`: a recording (`probectl run --record FILE`, the format of
//! `probectl_pipeline::capture::recording`) read and run through the whole data pipeline and
//! the summary, as `probectl replay FILE [--format ...] [--decode http]` does. The input is one
//! options byte (bits 0-1 the format: JSON, text, hex, pcapng; bit 2 `--decode http`, bit 3
//! its live mode), then
//! the recording file. The seeds are recordings (`make_seeds.py` writes the pipeline seeds'
//! records as recordings, with their start, attach, tick and end frames).
//! Checks: no panic; a file that does not start with the magic is refused; a replay that
//! succeeds wrote a well-formed output (JSON lines, one per event counted without
//! `--decode`; the HTTP writer's checks with it; pcapng as the pcapng target checks it; text
//! and hex UTF-8) and its summary renders as the report's JSON; errors display.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use probectl_core::session::replay::{replay, ReplayOptions};
use probectl_fuzz::{b64, blocks, check_http_output, packet};
use probectl_pipeline::capture::recording::MAGIC;
use probectl_pipeline::decode::http::live::Mode;
use probectl_pipeline::decode::http::Decode;
use probectl_pipeline::output::Format;

/// This process's scratch files (tmpfs when there is one): the recording and the output.
fn scratch() -> &'static (PathBuf, PathBuf) {
    static SCRATCH: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("probectl-fuzz-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        (dir.join("input.rec"), dir.join("output"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&options, recording)) = data.split_first() else {
        return;
    };
    let (input, output) = scratch();
    std::fs::write(input, recording).unwrap();
    let _ = std::fs::remove_file(output);
    let format =
        [Format::Json, Format::Text, Format::Hex, Format::Pcapng][usize::from(options & 3)];
    let mode = if options & 8 != 0 {
        Mode::Live
    } else {
        Mode::Exchange
    };
    let decode = (options & 4 != 0).then_some((Decode::Http(mode), 4096));
    let result = replay(&ReplayOptions {
        recording: input.clone(),
        format,
        output: Some(output.clone()),
        force: true,
        decode,
        // Small, so that the budget's eviction and counting paths run too.
        memory_budget: if options & 16 != 0 { 64 * 1024 } else { 128 << 20 },
    });
    let replayed = match result {
        Ok(replayed) => replayed,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    assert!(recording.starts_with(MAGIC), "only a recording replays");
    let summary = replayed.summary.to_json();
    serde_json::to_string(&summary).unwrap();
    let out = std::fs::read(output).unwrap_or_default();
    if std::env::var_os("PROBECTL_FUZZ_SHOW").is_some() {
        eprintln!("{summary}\n{}", String::from_utf8_lossy(&out));
    }
    match (format, decode.is_some()) {
        (Format::Pcapng, _) => {
            for frame in blocks(&out) {
                packet(&frame);
            }
        }
        (Format::Json, true) => {
            check_http_output(&out, Format::Json, 4096);
        }
        (Format::Json, false) => {
            let text = std::str::from_utf8(&out).expect("JSON is UTF-8");
            let mut lines = 0u64;
            for line in text.lines() {
                let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
                let kept = b64(&value["data_b64"]).len() as u64;
                assert_eq!(
                    kept + value["truncated"].as_u64().unwrap(),
                    value["len"].as_u64().unwrap()
                );
                lines += 1;
            }
            assert_eq!(lines, replayed.summary.counts.events, "one line per event");
        }
        _ => {
            std::str::from_utf8(&out).expect("text and hex are UTF-8");
        }
    }
});
