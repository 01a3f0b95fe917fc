//! Live `--decode http`: a Server-Sent-Events server under the test's control (node,
//! `tests/peers/sse_server.js`, HTTP/2 and HTTP/1.1) writes events at times it logs; probectl's
//! output is read from a pipe as it is written, and each event must be there within 0.5 s of
//! the time the server sent it. The pieces joined must equal what the client saved. Clients:
//! curl -N (HTTP/1.1 and HTTP/2), node's fetch, and Python's http.client.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::*;
use serde_json::Value;

/// Events per response, and the time between two.
const EVENTS: u32 = 8;
const GAP_MS: u64 = 300;
/// How late an event may be shown.
const LATE_MS: i64 = 500;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

struct SseServer {
    _server: Guard,
    port: u16,
    log: PathBuf,
}

impl SseServer {
    fn start() -> SseServer {
        let (cert, key) = cert_and_key();
        let port = free_port();
        let log = scratch_file("sse-sent.log");
        let server = Guard(
            Command::new("node")
                .arg(peer("sse_server.js"))
                .arg(port.to_string())
                .arg(cert)
                .arg(key)
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("node sse server"),
        );
        wait_for_listener(port);
        SseServer {
            _server: server,
            port,
            log,
        }
    }

    fn url(&self) -> String {
        format!(
            "https://127.0.0.1:{}/sse?n={EVENTS}&gap={GAP_MS}",
            self.port
        )
    }

    /// When the server wrote each event (epoch ms), by event number; the log is emptied.
    fn sent(&self) -> Vec<(u32, i64)> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let _ = std::fs::remove_file(&self.log);
        text.lines()
            .map(|line| {
                let entry: Value = serde_json::from_str(line).expect("log line");
                (
                    entry["event"].as_u64().expect("event") as u32,
                    entry["ms"].as_i64().expect("ms"),
                )
            })
            .collect()
    }
}

/// probectl's stdout, each line with the time it was read from the pipe.
struct Run {
    lines: Vec<(i64, String)>,
    stderr: String,
    success: bool,
}

fn traced(format: &str, command: &[&str], env: &[(&str, &str)]) -> Run {
    let mut child = Command::new(PROBECTL)
        .args([
            "run", "openssl", "--decode", "http", "--format", format, "--",
        ])
        .args(command)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("probectl");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let stderr = child.stderr.take().expect("stderr");
    let stderr_thread = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    let mut lines = Vec::new();
    for line in stdout.lines() {
        let Ok(line) = line else { break };
        lines.push((now_ms(), line));
    }
    let status = child.wait().expect("wait");
    Run {
        lines,
        stderr: stderr_thread.join().unwrap_or_default(),
        success: status.success(),
    }
}

/// Checks that each event was shown within `LATE_MS` of its sending, finding it with `shows`.
fn assert_live(run: &Run, sent: &[(u32, i64)], what: &str, shows: impl Fn(&str, u32) -> bool) {
    assert_eq!(
        sent.len(),
        EVENTS as usize,
        "{what}: the server sent every event"
    );
    for (event, sent_ms) in sent {
        let Some((read_ms, _)) = run.lines.iter().find(|(_, line)| shows(line, *event)) else {
            panic!(
                "{what}: event {event} never shown:\n{}",
                run.lines
                    .iter()
                    .map(|(_, l)| l.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        };
        let late = read_ms - sent_ms;
        assert!(
            late < LATE_MS,
            "{what}: event {event} shown {late} ms after it was sent"
        );
    }
    // The events are shown apart, not all at the end: the first is read well before the last
    // was sent.
    let first = run
        .lines
        .iter()
        .find(|(_, line)| shows(line, 1))
        .map(|(ms, _)| *ms)
        .unwrap_or(i64::MAX);
    let last_sent = sent.last().map_or(0, |(_, ms)| *ms);
    assert!(
        first < last_sent,
        "{what}: the first event was shown after the last was sent"
    );
}

/// The JSON lines of a run.
fn json_lines(run: &Run) -> Vec<Value> {
    run.lines
        .iter()
        .map(|(_, line)| serde_json::from_str(line).expect("JSON line"))
        .collect()
}

fn decode_b64(value: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(value.as_str().expect("base64"))
        .expect("base64")
}

/// Runs `command` (which saves the body to `saved`) traced in JSON; checks timing, the SSE
/// fields, the pieces against what the client saved, and the exchange's record.
fn check_json_client(
    server: &SseServer,
    what: &str,
    command: &[&str],
    env: &[(&str, &str)],
    saved: &Path,
    version: &str,
) {
    let run = traced("json", command, env);
    assert!(run.success, "{what}: {}", run.stderr);
    let sent = server.sent();
    let is_event = |line: &str, event: u32| {
        line.contains("\"type\":\"http_body\"")
            && line.contains(&format!("\"data\":\"event {event} of {EVENTS}\""))
    };
    assert_live(&run, &sent, what, is_event);
    let lines = json_lines(&run);
    let record = lines
        .iter()
        .find(|line| line["type"] == "http")
        .unwrap_or_else(|| panic!("{what}: the exchange's record"));
    let id = record["id"].clone();
    assert_eq!(record["version"], version, "{what}");
    assert_eq!(record["status"], 200, "{what}");
    assert_eq!(record["incomplete"], Value::Null, "{what}");
    assert!(
        record["ttfb_ns"].as_u64().is_some_and(|ns| ns > 0),
        "{what}"
    );
    assert!(
        record["duration_ns"]
            .as_u64()
            .is_some_and(|ns| ns >= (EVENTS as u64 - 1) * GAP_MS * 1_000_000),
        "{what}: {record}"
    );
    let pieces: Vec<&Value> = lines
        .iter()
        .filter(|line| line["type"] == "http_body" && line["id"] == id)
        .collect();
    assert_eq!(pieces.len(), EVENTS as usize, "{what}: one piece per event");
    let joined: Vec<u8> = pieces
        .iter()
        .flat_map(|p| decode_b64(&p["data_b64"]))
        .collect();
    let saved = std::fs::read(saved).expect("the client's file");
    assert!(
        joined == saved,
        "{what}: the pieces joined equal what the client saved"
    );
    for (number, piece) in pieces.iter().enumerate() {
        assert_eq!(piece["sse"]["id"], (number + 1).to_string(), "{what}");
    }
    assert!(
        lines
            .iter()
            .filter(|l| l["type"] == "http_head" && l["id"] == id)
            .count()
            == 2,
        "{what}: the request's and the response's heads"
    );
}

#[test]
fn curl_sse_over_http1_and_http2_is_shown_as_it_arrives() {
    let server = SseServer::start();
    let url = server.url();
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let saved = scratch_file("curl-sse");
        let saved_arg = saved.display().to_string();
        check_json_client(
            &server,
            &format!("curl {flag}"),
            &["curl", "-sk", "-N", flag, "-o", &saved_arg, &url],
            &[],
            &saved,
            version,
        );
    }
    // Text too: each event's `data:` line.
    let run = traced(
        "text",
        &["curl", "-sk", "-N", "--http2", "-o", "/dev/null", &url],
        &[],
    );
    assert!(run.success, "{}", run.stderr);
    let sent = server.sent();
    assert_live(&run, &sent, "curl text", |line, event| {
        line == format!("data: event {event} of {EVENTS}")
    });
    let text: Vec<&str> = run.lines.iter().map(|(_, l)| l.as_str()).collect();
    assert!(
        text.iter().any(|l| l.starts_with("< HTTP/2 200")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|l| l.starts_with("* done #1: 200, request body 0 bytes")
                && l.contains("time to first byte")),
        "{text:?}"
    );
}

#[test]
fn node_fetch_sse_is_shown_as_it_arrives() {
    let server = SseServer::start();
    let saved = scratch_file("node-sse");
    let script = "const fs = require('fs');\
        (async () => {\
          const response = await fetch(process.argv[1]);\
          const chunks = [];\
          for await (const chunk of response.body) chunks.push(Buffer.from(chunk));\
          fs.writeFileSync(process.argv[2], Buffer.concat(chunks));\
        })();";
    let url = server.url();
    let saved_arg = saved.display().to_string();
    check_json_client(
        &server,
        "node fetch",
        &["node", "-e", script, &url, &saved_arg],
        &[("NODE_TLS_REJECT_UNAUTHORIZED", "0")],
        &saved,
        "1.1",
    );
}

#[test]
fn python_client_sse_is_shown_as_it_arrives() {
    let server = SseServer::start();
    let saved = scratch_file("python-sse");
    let script = "import http.client, ssl, sys\n\
        context = ssl._create_unverified_context()\n\
        connection = http.client.HTTPSConnection('127.0.0.1', int(sys.argv[1]), context=context)\n\
        connection.request('GET', sys.argv[2], headers={'Accept': 'text/event-stream'})\n\
        response = connection.getresponse()\n\
        with open(sys.argv[3], 'wb') as out:\n\
        \x20   while True:\n\
        \x20       chunk = response.read1(65536)\n\
        \x20       if not chunk:\n\
        \x20           break\n\
        \x20       out.write(chunk)\n";
    let port = server.port.to_string();
    let path = format!("/sse?n={EVENTS}&gap={GAP_MS}");
    let saved_arg = saved.display().to_string();
    check_json_client(
        &server,
        "python http.client",
        &["/usr/bin/python3", "-c", script, &port, &path, &saved_arg],
        &[],
        &saved,
        "1.1",
    );
}

/// `--pid` of a curl part-way through a long chunked response (SSE over HTTP/1.1, 12 s): the rest of
/// the response is decoded from the first whole chunk on (its heads were not seen), and what
/// came before that is shown raw and counted. The oracle is what curl saved.
#[test]
fn joined_mid_way_through_a_chunked_response() {
    let server = SseServer::start();
    let saved = scratch_file("joined-sse");
    let url = format!("https://127.0.0.1:{}/sse?n=40&gap={GAP_MS}", server.port);
    let mut curl = Guard(
        Command::new("curl")
            .args(["-sk", "-N", "--http1.1", "-o"])
            .arg(&saved)
            .arg(&url)
            .stdin(Stdio::null())
            .spawn()
            .expect("curl"),
    );
    wait_for_mapping(curl.pid(), "libssl");
    // A few events go by untraced.
    std::thread::sleep(std::time::Duration::from_millis(4 * GAP_MS));
    let pid = curl.pid().to_string();
    let run = Trace::start(&["openssl", "--decode", "http", "--pid", &pid], &[]).wait_lines();
    let _ = curl.0.wait();
    assert!(run.status.success(), "{}", run.stderr);
    let saved = std::fs::read(&saved).expect("curl's file");
    assert!(
        saved.ends_with(b"data: event 40 of 40\n\n"),
        "curl got it all"
    );
    let record = run
        .lines
        .iter()
        .find(|line| line["type"] == "http")
        .unwrap_or_else(|| panic!("an exchange: {:?}", run.lines));
    assert!(
        record["incomplete"]
            .as_str()
            .is_some_and(|reason| reason.starts_with("joined mid-stream")),
        "{record}"
    );
    assert_eq!(record["request"], Value::Null);
    assert_eq!(record["response"]["complete"], true, "{record}");
    let body = decode_b64(&record["response"]["body_b64"]);
    assert!(
        body.len() >= 8 * 26 && saved.ends_with(&body),
        "the rest of the body, de-chunked, is the end of what curl saved: {}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        !body.starts_with(b"id: 1\n"),
        "joined after the first event"
    );
    // Live pieces were written as the chunks came, and join to the same body.
    let pieces: Vec<u8> = run
        .lines
        .iter()
        .filter(|line| line["type"] == "http_body" && line["id"] == record["id"])
        .flat_map(|line| decode_b64(&line["data_b64"]))
        .collect();
    assert_eq!(pieces, body);
    // Whatever came before the first whole chunk was written raw, and counted.
    let raw: u64 = run
        .lines
        .iter()
        .filter(|line| line.get("type").is_none())
        .map(|line| line["len"].as_u64().expect("len"))
        .sum();
    if raw > 0 {
        assert!(
            run.stderr.contains(&format!(
                "1 connections joined mid-stream, decoded from a message or chunk boundary after {raw} bytes shown raw"
            )),
            "{}",
            run.stderr
        );
    }
    let _ = server.sent();
}
