//! `probectl run --record FILE` and `probectl replay FILE`, through real BPF: curl downloads
//! and uploads on the recording server (tests/peers/recording_server.py) under a live run that
//! records; the replay must print exactly what the live run printed (stdout, the summary and
//! the `--report` JSON), in every format and with `--decode http`. What both carry is checked
//! against the server's own record of the bytes, so an equal but wrong replay fails too.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::recording::*;
use common::*;

const DOWNLOAD: usize = 300_000;
const UPLOAD: usize = 100_000;

/// curl on the recording server: GET /download/DOWNLOAD, then POST a body, one connection.
fn curl_args(recording: &Recording, body: &Path) -> Vec<String> {
    let base = format!("https://127.0.0.1:{}", recording.port);
    vec![
        "curl".into(),
        "-sk".into(),
        "-o".into(),
        "/dev/null".into(),
        format!("{base}/download/{DOWNLOAD}"),
        "--next".into(),
        "-sk".into(),
        "-o".into(),
        "/dev/null".into(),
        "--data-binary".into(),
        format!("@{}", body.display()),
        format!("{base}/upload"),
    ]
}

struct Run {
    output: Output,
    report: serde_json::Value,
}

fn read_report(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("report");
    serde_json::from_str(&text).expect("report JSON")
}

/// `probectl run openssl ARGS --record REC --report R -- curl ...`: events on stdout.
fn live(args: &[&str], record: &Path) -> (Run, Recording, Vec<u8>) {
    let recording = Recording::start();
    let body = noise(UPLOAD, 11);
    let body_file = scratch_file("upload.bin");
    std::fs::write(&body_file, &body).expect("body");
    let report = scratch_file("live-report.json");
    let output = Command::new(PROBECTL)
        .args(["run", "openssl"])
        .args(args)
        .arg("--record")
        .arg(record)
        .arg("--report")
        .arg(&report)
        .arg("--")
        .args(curl_args(&recording, &body_file))
        .stdin(Stdio::null())
        .output()
        .expect("probectl run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    recording.assert_fetched(DOWNLOAD, &body);
    let report = read_report(&report);
    assert_no_losses(&report, &stderr);
    (Run { output, report }, recording, body)
}

fn replay(record: &Path, args: &[&str]) -> Run {
    let report = scratch_file("replay-report.json");
    let output = Command::new(PROBECTL)
        .arg("replay")
        .arg(record)
        .args(args)
        .arg("--report")
        .arg(&report)
        .stdin(Stdio::null())
        .output()
        .expect("probectl replay");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    Run {
        report: read_report(&report),
        output,
    }
}

/// The summary's lines on stderr (from the totals line on).
fn summary_lines(stderr: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let first = lines
        .iter()
        .position(|line| line.contains(" events, ") && line.contains("bytes captured"))
        .unwrap_or_else(|| panic!("a summary in {text}"));
    lines[first..]
        .iter()
        .filter(|line| !line.starts_with("probectl: replayed "))
        .cloned()
        .collect()
}

fn assert_replays_the_live_run(args: &[&str]) -> (Run, Recording, Vec<u8>) {
    let record = scratch_file("run.rec");
    let (live, recording, body) = live(args, &record);
    let again = replay(&record, args);
    assert!(
        !live.output.stdout.is_empty(),
        "the live run printed events"
    );
    assert!(
        again.output.stdout == live.output.stdout,
        "{args:?}: the replay printed {} bytes, the live run {}",
        again.output.stdout.len(),
        live.output.stdout.len()
    );
    assert_eq!(
        summary_lines(&again.output.stderr),
        summary_lines(&live.output.stderr),
        "{args:?}"
    );
    assert_eq!(again.report, live.report, "{args:?}: --report");
    (live, recording, body)
}

/// What the JSON events of one run carry, per direction, in order.
fn streams_of_json(stdout: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut written, mut read) = (Vec::new(), Vec::new());
    for line in String::from_utf8_lossy(stdout).lines() {
        let event: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        let data = decode_b64(&event["data_b64"]);
        match event["direction"].as_str() {
            Some("write") => written.extend_from_slice(&data),
            _ => read.extend_from_slice(&data),
        }
    }
    (written, read)
}

#[test]
fn a_replay_prints_what_the_live_json_run_printed() {
    let _exclusive = exclusive();
    let (live, recording, _) = assert_replays_the_live_run(&["--format", "json"]);
    let connections = recording.connections();
    assert_eq!(connections.len(), 1, "one connection");
    let (written, read) = streams_of_json(&live.output.stdout);
    assert!(
        written == connections[0].0,
        "what curl wrote is what the server read"
    );
    assert!(
        read == connections[0].1,
        "what curl read is what the server wrote"
    );
}

#[test]
fn a_replay_prints_what_the_live_text_and_hex_runs_printed() {
    let _exclusive = exclusive();
    assert_replays_the_live_run(&[]);
    assert_replays_the_live_run(&["--hex"]);
}

#[test]
fn a_replay_prints_what_the_live_decoded_and_pcapng_runs_printed() {
    let _exclusive = exclusive();
    let (live, _, body) = assert_replays_the_live_run(&["--decode", "http", "--format", "json"]);
    let exchanges: Vec<serde_json::Value> = String::from_utf8_lossy(&live.output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .filter(|line: &serde_json::Value| line["type"] == "http")
        .collect();
    assert_eq!(exchanges.len(), 2, "GET and POST");
    assert_eq!(
        decode_b64(&exchanges[0]["response"]["body_b64"]),
        download_pattern(DOWNLOAD)
    );
    assert!(decode_b64(&exchanges[1]["request"]["body_b64"]) == body);
    assert_replays_the_live_run(&["--format", "pcapng"]);
}

#[test]
fn one_recording_replays_in_any_format_and_decoded() {
    let _exclusive = exclusive();
    let record = scratch_file("any.rec");
    let (live, recording, body) = live(&[], &record);
    // Recorded from a text run, replayed as JSON: the bytes are the server's.
    let json = replay(&record, &["--format", "json"]);
    let connections = recording.connections();
    let (written, read) = streams_of_json(&json.output.stdout);
    assert!(written == connections[0].0 && read == connections[0].1);
    assert_eq!(json.report, live.report);
    let decoded = replay(&record, &["--decode", "http", "--format", "json"]);
    let text = String::from_utf8_lossy(&decoded.output.stdout);
    let post = text
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("JSON"))
        .find(|line| line["type"] == "http" && line["method"] == "POST")
        .expect("the POST exchange");
    assert!(decode_b64(&post["request"]["body_b64"]) == body);
}

#[test]
fn a_recording_cut_short_replays_what_it_holds_and_says_so() {
    let _exclusive = exclusive();
    let record = scratch_file("cut.rec");
    let (live, _, _) = live(&["--format", "json"], &record);
    let bytes = std::fs::read(&record).expect("recording");
    let cut = scratch_file("cut-short.rec");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let again = replay(&cut, &["--format", "json"]);
    let stderr = String::from_utf8_lossy(&again.output.stderr);
    assert!(
        stderr.contains("warning: the recording ends before its run did"),
        "{stderr}"
    );
    let live_lines: Vec<&[u8]> = live.output.stdout.split(|&b| b == b'\n').collect();
    let replayed: Vec<&[u8]> = again.output.stdout.split(|&b| b == b'\n').collect();
    assert!(
        replayed.len() > 2 && replayed.len() < live_lines.len(),
        "part of the events: {} of {} lines",
        replayed.len(),
        live_lines.len()
    );
    // Events before the cut are the live run's, but the last one may be cut by its call's
    // own missing chunks: every whole line but the last is the live run's, in order.
    for (index, line) in replayed[..replayed.len() - 2].iter().enumerate() {
        assert!(line == &live_lines[index], "line {index}");
    }
}

#[test]
fn a_recording_stops_at_its_limit_while_the_run_goes_on_and_the_replay_says_so() {
    let _exclusive = exclusive();
    let record = scratch_file("limited.rec");
    let limit: u64 = 64 * 1024;
    let limit_arg = limit.to_string();
    // The live run prints every event (checked against the server inside `live`) while its
    // recording stops near 64 KiB of the 400 KB the calls carried.
    let (live, _, _) = live(&["--format", "json", "--record-limit", &limit_arg], &record);
    let live_stderr = String::from_utf8_lossy(&live.output.stderr);
    assert!(
        live_stderr.contains("warning: the recording reached --record-limit (65536 bytes)"),
        "{live_stderr}"
    );
    let size = std::fs::metadata(&record).expect("recording").len();
    // The end frame (the kernel's counts) is written past the limit; it is small.
    assert!(size > limit / 2 && size < limit + 16 * 1024, "{size} bytes");
    let again = replay(&record, &["--format", "json"]);
    let stderr = String::from_utf8_lossy(&again.output.stderr);
    assert!(
        stderr.contains("warning: the recording reached its --record-limit: "),
        "{stderr}"
    );
    assert!(!stderr.contains("ends before its run did"), "{stderr}");
    // What the replay printed is the start of what the live run printed, line by line.
    let live_lines: Vec<&[u8]> = live.output.stdout.split(|&b| b == b'\n').collect();
    let replayed: Vec<&[u8]> = again.output.stdout.split(|&b| b == b'\n').collect();
    assert!(replayed.len() > 1 && replayed.len() < live_lines.len());
    for (index, line) in replayed[..replayed.len() - 2].iter().enumerate() {
        assert!(line == &live_lines[index], "line {index}");
    }
}

fn replay_error(path: &Path) -> (i32, String) {
    let output = Command::new(PROBECTL)
        .arg("replay")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("probectl replay");
    assert!(output.stdout.is_empty(), "nothing on stdout");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).replace(&path.display().to_string(), "[file]"),
    )
}

#[test]
fn replay_refuses_other_files_and_versions_with_the_reason() {
    let dir = scratch_file("bad-recordings");
    std::fs::create_dir_all(&dir).expect("dir");
    let other = dir.join("notes.txt");
    std::fs::write(&other, b"GET / HTTP/1.1\r\n").expect("write");
    let newer = dir.join("newer.rec");
    let mut bytes = b"probectl-recording\n".to_vec();
    bytes.extend_from_slice(&99u32.to_le_bytes());
    std::fs::write(&newer, &bytes).expect("write");
    let missing: PathBuf = dir.join("missing.rec");
    let mut messages = String::new();
    for path in [&other, &newer, &missing] {
        let (status, stderr) = replay_error(path);
        assert_eq!(status, 1, "{stderr}");
        messages.push_str(&stderr);
    }
    insta::assert_snapshot!(messages);
}

#[test]
fn record_refuses_an_existing_file_before_anything_runs() {
    let record = scratch_file("existing.rec");
    std::fs::write(&record, b"an earlier recording").expect("write");
    let marker = scratch_file("ran");
    let output = Command::new(PROBECTL)
        .args(["run", "openssl", "--record"])
        .arg(&record)
        .arg("--")
        .args(["touch", marker.to_str().expect("path")])
        .stdin(Stdio::null())
        .output()
        .expect("probectl run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot create the recording") && stderr.contains("File exists"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&record).expect("read"),
        b"an earlier recording"
    );
    assert!(!marker.exists(), "the command never ran");
}
