//! Scale: one probectl through 100,000 short connections. Each connection's bytes are exactly
//! what the client sent and received (its own log is the oracle), and what probectl keeps stays
//! bounded: ended connections fold into totals, the kernel's tables are emptied as connections
//! close, and its memory (from the report) does not grow with the count.

mod common;

use std::collections::HashMap;
use std::io::BufRead;
use std::time::Duration;

use base64::Engine as _;
use common::*;

/// What one connection sent and received, as the client logged it (`bench/short_conns.c`).
fn read_client_log(path: &std::path::Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    use std::io::Read;
    let bytes = std::fs::read(path).expect("the client's log");
    let mut log = std::io::Cursor::new(bytes.as_slice());
    let number = |log: &mut std::io::Cursor<&[u8]>| {
        let mut word = [0u8; 4];
        log.read_exact(&mut word).expect("a length");
        u32::from_le_bytes(word) as usize
    };
    let mut connections = Vec::new();
    while (log.position() as usize) < bytes.len() {
        assert_eq!(number(&mut log), connections.len(), "the log's order");
        let mut sent = vec![0; number(&mut log)];
        log.read_exact(&mut sent).expect("the request");
        let mut received = vec![0; number(&mut log)];
        log.read_exact(&mut received).expect("the response");
        connections.push((sent, received));
    }
    connections
}

#[test]
fn a_hundred_thousand_short_connections_are_each_exact_while_probectl_stays_bounded() {
    let _exclusive = exclusive();
    const CONNECTIONS: usize = 100_000;
    let client = gcc(
        include_str!("../bench/short_conns.c"),
        "short_conns",
        &["-lssl", "-lcrypto"],
    );
    let root = scratch_file("short-conns-root");
    std::fs::create_dir_all(&root).expect("root");
    std::fs::write(root.join("small"), "a small response body\n").expect("small");
    let (_server, port) = www_server(&root, "127.0.0.1");
    let log = scratch_file("short_conns.log");
    let port = port.to_string();
    let count = CONNECTIONS.to_string();
    let run = Trace::start(
        &["openssl"],
        &[
            client.to_str().expect("path"),
            "127.0.0.1",
            &port,
            "/small",
            &count,
            log.to_str().expect("path"),
        ],
    );
    let (status, stderr, report, output) = run.wait_unparsed_within(Duration::from_secs(1500));
    assert!(status.success(), "{stderr}");
    assert_no_losses(&report, &stderr);
    // Bounded: every connection closed and counted, at most 1,024 kept one by one, the rest
    // folded into totals; the heap stays small.
    let connections = &report["connections"];
    assert_eq!(connections["total"], CONNECTIONS, "{connections}");
    assert_eq!(connections["closed"], CONNECTIONS, "{connections}");
    let kept = connections["kept"].as_array().expect("kept").len();
    assert!(kept <= 1024, "{kept} connections kept one by one");
    assert_eq!(
        connections["folded"]["connections"].as_u64(),
        Some((CONNECTIONS - kept) as u64)
    );
    let heap = report_number(&report, "/memory/heap_kib", &stderr);
    assert!(heap > 0 && heap < 32 * 1024, "probectl's heap: {heap} KiB");
    // Exact: each connection's streams are one connection's of the client's log, and every
    // logged connection is there once.
    let oracle = read_client_log(&log);
    assert_eq!(oracle.len(), CONNECTIONS);
    let mut captured: HashMap<u64, (Vec<u8>, Vec<u8>)> = HashMap::new();
    let file = std::fs::File::open(&output).expect("the events");
    for line in std::io::BufReader::new(file).lines() {
        let line = line.expect("a line");
        let event: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        let id = event["conn"]["id"].as_u64().expect("conn.id");
        let data = base64::engine::general_purpose::STANDARD
            .decode(event["data_b64"].as_str().expect("data_b64"))
            .expect("base64");
        let streams = captured.entry(id).or_default();
        match event["direction"].as_str() {
            Some("write") => streams.0.extend_from_slice(&data),
            _ => streams.1.extend_from_slice(&data),
        }
    }
    let _ = std::fs::remove_file(&output);
    assert_eq!(
        captured.len(),
        CONNECTIONS,
        "one connection id per connection"
    );
    let mut seen = vec![false; CONNECTIONS];
    for (id, (written, read)) in &captured {
        let text = String::from_utf8_lossy(written);
        let index: usize = text
            .split("X-Conn: ")
            .nth(1)
            .and_then(|rest| rest.split("\r\n").next())
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| panic!("conn#{id} wrote {text:?}"));
        assert!(!seen[index], "connection {index} twice");
        seen[index] = true;
        assert!(
            written == &oracle[index].0,
            "connection {index}: the request"
        );
        assert!(read == &oracle[index].1, "connection {index}: the response");
    }
}
