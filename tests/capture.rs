//! Complete, attributable capture: large transfers byte-exact, every byte tied to its
//! connection's 4-tuple, stream offsets without unreported gaps, exact loss accounting, and
//! children of traced processes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use base64::Engine as _;
use common::*;
use sha2::{Digest, Sha256};

const EIGHT_MIB: usize = 8 * 1024 * 1024;

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The server's download pattern (tests/peers/tls_server.py).
fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

fn json_str<'a>(event: &'a Event, field: &str) -> Option<&'a str> {
    event.json["conn"][field].as_str()
}

fn conn_id(event: &Event) -> u64 {
    event.json["conn"]["id"].as_u64().expect("conn.id")
}

fn conn_offset(event: &Event) -> u64 {
    event.json["conn"]["offset"].as_u64().expect("conn.offset")
}

/// Every event of `pid` belongs to a connection whose offsets run without gaps, per direction.
fn assert_contiguous_streams(events: &[Event], pid: u32) {
    let mut next: BTreeMap<(u64, String), u64> = BTreeMap::new();
    for event in events.iter().filter(|e| e.pid == pid) {
        let key = (conn_id(event), event.direction.clone());
        let expected = next.entry(key).or_insert(0);
        assert_eq!(conn_offset(event), *expected, "offset of {event:?}");
        assert_eq!(event.truncated, 0);
        *expected += event.len;
    }
}

#[test]
fn eight_mib_upload_and_download_are_captured_completely() {
    let _exclusive = exclusive();
    let (server, port) = python_server(false);
    let upload = scratch_file("upload.bin");
    let upload_bytes: Vec<u8> = (0..EIGHT_MIB).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&upload, &upload_bytes).expect("write upload");
    let download = scratch_file("download.bin");
    let trace = Trace::start(
        &[
            "openssl",
            "--max-bytes",
            "16777216",
            "--pid",
            &server.pid().to_string(),
        ],
        &[],
    );
    let url = format!("https://127.0.0.1:{port}");
    let upload_answer = Command::new("curl")
        .args(["-sk", "--data-binary"])
        .arg(format!("@{}", upload.display()))
        .arg(format!("{url}/upload"))
        .output()
        .expect("curl upload");
    assert!(upload_answer.status.success());
    assert_eq!(
        String::from_utf8_lossy(&upload_answer.stdout),
        sha256(&upload_bytes)
    );
    let status = Command::new("curl")
        .args(["-sk", "-o"])
        .arg(&download)
        .arg(format!("{url}/download/{EIGHT_MIB}"))
        .status()
        .expect("curl download");
    assert!(status.success());
    let downloaded = std::fs::read(&download).expect("download");
    assert_eq!(downloaded, pattern(EIGHT_MIB));
    let run = trace.stop();
    assert!(run.status.success(), "{}", run.stderr);

    // The server read the whole upload (after the request head) ...
    let server_read = stream(&run.events, server.pid(), "read");
    let head_end = server_read
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head")
        + 4;
    let uploaded = &server_read[head_end..head_end + EIGHT_MIB];
    assert_eq!(sha256(uploaded), sha256(&upload_bytes));
    // ... and wrote the whole download, in one call larger than 8 MiB.
    let server_written = stream(&run.events, server.pid(), "write");
    assert!(server_written.ends_with(&downloaded));
    assert_eq!(
        sha256(&server_written[server_written.len() - EIGHT_MIB..]),
        sha256(&downloaded)
    );
    assert!(run
        .events
        .iter()
        .any(|e| e.direction == "write" && e.len > EIGHT_MIB as u64));
    assert_eq!(run.report_number("/losses/chunks_ring_full"), 0);
    assert_contiguous_streams(&run.events, server.pid());
}

#[test]
fn sixteen_concurrent_connections_are_each_attributed_to_their_own_port() {
    let (_server, port) = python_server(true);
    let tag = scratch_file("parallel");
    let tag = tag
        .file_name()
        .and_then(|n| n.to_str())
        .expect("tag")
        .to_string();
    let trace = Trace::start(
        &["openssl"],
        &[
            "/usr/bin/python3",
            peer("tls_parallel.py").to_str().expect("path"),
            "127.0.0.1",
            &port.to_string(),
            "16",
            &tag,
        ],
    );
    let run = trace.wait();
    assert!(run.status.success(), "{}", run.stderr);
    let client_pid = run.events.first().expect("events").pid;
    assert_contiguous_streams(&run.events, client_pid);
    let mut connections_seen = BTreeSet::new();
    for i in 0..16 {
        let marker = format!("/conn-{i}/{tag} ");
        let writes: Vec<&Event> = run
            .events
            .iter()
            .filter(|e| {
                e.direction == "write" && String::from_utf8_lossy(&e.data).contains(&marker)
            })
            .collect();
        assert_eq!(writes.len(), 1, "one request for connection {i}");
        let write = writes[0];
        let id = conn_id(write);
        assert!(connections_seen.insert(id), "connection ids are distinct");
        let local = json_str(write, "local").expect("local address");
        let remote = json_str(write, "remote").expect("remote address");
        assert_eq!(remote, format!("127.0.0.1:{port}"));
        let local_port: u16 = local
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        // The response the server sent on this connection reflects this request: its
        // attribution is checked by content.
        let response: Vec<u8> = run
            .events
            .iter()
            .filter(|e| e.direction == "read" && conn_id(e) == id)
            .flat_map(|e| e.data.clone())
            .collect();
        let reversed: Vec<u8> = format!("GET /conn-{i}/{tag} HTTP/1.0\r\n\r\n")
            .bytes()
            .rev()
            .collect();
        assert!(
            response.ends_with(&reversed),
            "response of connection {i} is its own"
        );
        assert!(run
            .events
            .iter()
            .filter(|e| conn_id(e) == id)
            .all(|e| json_str(e, "local") == Some(local)));
        assert!(local_port > 0);
    }
}

/// The parallel client's own report of the ports it used, checked against probectl's.
#[test]
fn client_ports_match_what_the_client_really_used() {
    let _exclusive = exclusive();
    let (_server, port) = python_server(true);
    let tag = scratch_file("ports");
    let tag = tag.file_name().and_then(|n| n.to_str()).expect("tag");
    // System-wide: the client is seen from its first call, and its stdout stays ours.
    let trace = Trace::start(&["openssl", "--ring-bytes", "134217728"], &[]);
    let output = Command::new("/usr/bin/python3")
        .arg(peer("tls_parallel.py"))
        .args(["127.0.0.1", &port.to_string(), "16", tag])
        .output()
        .expect("client");
    assert!(output.status.success());
    let run = trace.stop();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("client report");
    for i in 0..16 {
        let entry = &report[i.to_string()];
        let used_port = entry["port"].as_u64().expect("port");
        let request = base64::engine::general_purpose::STANDARD
            .decode(entry["request_b64"].as_str().expect("request"))
            .expect("base64");
        let write = run
            .events
            .iter()
            .find(|e| e.direction == "write" && e.data == request)
            .unwrap_or_else(|| panic!("request {i} captured:\n{}", run.stderr));
        assert_eq!(
            json_str(write, "local"),
            Some(format!("127.0.0.1:{used_port}").as_str())
        );
        let response = base64::engine::general_purpose::STANDARD
            .decode(entry["response_b64"].as_str().expect("response"))
            .expect("base64");
        let captured: Vec<u8> = run
            .events
            .iter()
            .filter(|e| e.pid == write.pid && e.direction == "read" && conn_id(e) == conn_id(write))
            .flat_map(|e| e.data.clone())
            .collect();
        assert_eq!(
            captured, response,
            "response {i} attributed to its connection"
        );
    }
}

#[test]
fn a_connection_opened_before_probectl_started_is_attributed() {
    let (_server, port) = python_server(false);
    let exchange = Exchange::new(&unique_request("preexisting"));
    let request = exchange.request.clone();
    let (mut client, connected) = exchange.held_python_client(port, "--hold-connected");
    let local_port: u16 = connected
        .strip_prefix("connected ")
        .and_then(|p| p.parse().ok())
        .expect("port");
    let trace = Trace::start(&["openssl", "--pid", &client.pid().to_string()], &[]);
    client.release();
    client.finish();
    let run = trace.wait();
    let write = run
        .events
        .iter()
        .find(|e| e.direction == "write")
        .expect("request captured");
    assert_eq!(write.data, request);
    assert_eq!(
        json_str(write, "local"),
        Some(format!("127.0.0.1:{local_port}").as_str())
    );
    assert_eq!(
        json_str(write, "remote"),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    assert_eq!(json_str(write, "transport"), Some("tcp"));
    assert!(write.json["conn"]["fd"].as_i64().expect("fd") >= 0);
}

/// The per-connection record of the summary for the connection to `port`: (bytes written,
/// read, lost written, lost read), the losses 0 when the record lists none.
fn summary_record(stderr: &str, port: u16) -> (u64, u64, u64, u64) {
    let line = stderr
        .lines()
        .find(|line| line.contains("conn#") && line.contains(&format!("-> 127.0.0.1:{port} ")))
        .unwrap_or_else(|| panic!("no summary record for port {port}:\n{stderr}"));
    let number_before = |text: &str, label: &str| -> u64 {
        let at = text
            .find(label)
            .unwrap_or_else(|| panic!("no {label:?} in {line}"));
        text[..at]
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number before {label:?} in {line}"))
    };
    let (moved, lost) = match line.split_once(", not captured ") {
        Some((moved, lost)) => (moved, Some(lost)),
        None => (line, None),
    };
    let written = number_before(moved, " bytes written");
    let read = number_before(moved, " read");
    let (lost_written, lost_read) = match lost {
        Some(lost) => (
            number_before(&format!(" {lost}"), " bytes written"),
            number_before(lost, " bytes read"),
        ),
        None => (0, 0),
    };
    (written, read, lost_written, lost_read)
}

#[test]
fn a_tiny_ring_buffer_reports_exactly_the_bytes_it_lost() {
    let _exclusive = exclusive();
    let (_server, port) = python_server(false);
    let download = scratch_file("lossy-download");
    let counts = scratch_file("lossy-counts");
    let url = format!("https://127.0.0.1:{port}/download/{EIGHT_MIB}");
    // curl's own count of the bytes it moved: the request it sent, the head and body it
    // received (exec: the traced pid stays curl's).
    let script = format!(
        "exec curl -sk -i --raw -H 'User-Agent: probectl-test' -o '{}' \
         -w '%{{size_request}} %{{size_header}} %{{size_download}}' '{url}' > '{}'",
        download.display(),
        counts.display()
    );
    let run = Trace::start(
        &["openssl", "--ring-bytes", "65536"],
        &["sh", "-c", &script],
    )
    .wait();
    assert!(run.status.success(), "{}", run.stderr);
    let counted: Vec<u64> = std::fs::read_to_string(&counts)
        .expect("curl's counts")
        .split_whitespace()
        .map(|n| n.parse().expect("count"))
        .collect();
    let (sent, received) = (counted[0], counted[1] + counted[2]);
    // curl's count agrees with what it saved (head and body, with -i).
    assert_eq!(
        std::fs::read(&download).expect("download").len() as u64,
        received
    );
    assert!(received > EIGHT_MIB as u64);
    let pid = run.events.first().expect("events").pid;
    assert!(
        run.events.iter().all(|e| e.pid == pid),
        "only curl is traced"
    );
    let captured = |direction: &str| -> u64 {
        run.events
            .iter()
            .filter(|e| e.direction == direction)
            .map(|e| e.data.len() as u64)
            .sum()
    };
    let (captured_written, captured_read) = (captured("write"), captured("read"));
    let lost: u64 = run
        .stderr
        .split("chunks lost (")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("lost bytes in the summary");
    assert!(
        lost > 0,
        "a 64 KiB ring cannot hold an 8 MiB burst: {}",
        run.stderr
    );
    assert_eq!(run.report_number("/bytes_truncated"), 0);
    // The totals: every byte curl moved was captured or reported lost, exactly.
    assert_eq!(
        sent + received,
        captured_written + captured_read + lost,
        "{}",
        run.stderr
    );
    // The connection's record, per direction: the same, and its byte counts are curl's.
    let (written, read, lost_written, lost_read) = summary_record(&run.stderr, port);
    assert_eq!(
        (sent, received),
        (captured_written + lost_written, captured_read + lost_read),
        "{}",
        run.stderr
    );
    assert_eq!((written, read), (sent, received), "{}", run.stderr);
    // Every missing byte shows in the events: as `truncated`, or as a gap in the offsets.
    let mut next: BTreeMap<(u64, String), u64> = BTreeMap::new();
    let mut visible_loss = 0;
    for event in run.events.iter().filter(|e| e.pid == pid) {
        let expected = next
            .entry((conn_id(event), event.direction.clone()))
            .or_insert(0);
        assert!(conn_offset(event) >= *expected);
        visible_loss += conn_offset(event) - *expected + event.truncated;
        *expected = conn_offset(event) + event.len;
    }
    // Calls lost whole at the very end of a stream leave no later event to show their gap;
    // whatever the events show is part of what the summary reports.
    assert!(
        visible_loss <= lost,
        "visible {visible_loss} vs lost {lost}"
    );
    assert!(
        run.stderr.contains("bytes read"),
        "per-connection loss is reported:\n{}",
        run.stderr
    );
}

#[test]
fn a_forking_server_is_traced_in_all_its_children() {
    let (server, port) = python_server(true);
    let trace = Trace::start(&["openssl", "--pid", &server.pid().to_string()], &[]);
    let mut exchanges = Vec::new();
    for n in 0..3 {
        let request = unique_request(&format!("fork-{n}"));
        let (_client, response) = python_client(port, &request);
        exchanges.push((request, response));
    }
    let run = trace.stop();
    assert!(run.status.success(), "{}", run.stderr);
    let children: BTreeSet<u32> = run.events.iter().map(|e| e.pid).collect();
    assert!(!children.contains(&server.pid()), "the parent only accepts");
    assert_eq!(children.len(), 3, "one child per connection: {children:?}");
    for (request, response) in exchanges {
        let child = run
            .events
            .iter()
            .find(|e| e.direction == "read" && e.data == request)
            .expect("request captured in a child")
            .pid;
        assert_eq!(stream(&run.events, child, "read"), request);
        assert_eq!(stream(&run.events, child, "write"), response);
    }
}
