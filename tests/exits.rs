//! Processes that exit without closing their connections: the kernel tells probectl when such
//! a process is gone, and its connections end then, with their bytes intact.

mod common;

use common::*;

#[test]
fn connections_of_processes_that_exit_without_closing_end_with_them() {
    // Alone: a_reused_pid_starts_new_connections makes the kernel hand out one pid again and
    // again, and this test counts its children by pid.
    let _exclusive = exclusive();
    let (_server, port) = python_server(false);
    let children = 12;
    let tag = format!("exit-{}", std::process::id());
    let report = scratch_file("report.json");
    let report_arg = report.display().to_string();
    let run = Trace::start(
        &["openssl", "--report", &report_arg],
        &[
            "/usr/bin/python3",
            &peer("exit_without_close.py").display().to_string(),
            &port.to_string(),
            &children.to_string(),
            &tag,
        ],
    )
    .wait();
    assert!(run.status.success(), "{}", run.stderr);
    // Each child's request, byte-exact, in its own connection (the oracle: what it sent).
    let mut pids: Vec<u32> = run.events.iter().map(|event| event.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), children, "{}", run.stderr);
    let mut requests: Vec<String> = pids
        .iter()
        .map(|pid| String::from_utf8_lossy(&stream(&run.events, *pid, "write")).into_owned())
        .collect();
    requests.sort();
    let mut expected: Vec<String> = (0..children)
        .map(|index| format!("GET /{tag}/{index} HTTP/1.0\r\nHost: x\r\n\r\n"))
        .collect();
    expected.sort();
    assert_eq!(requests, expected);
    // No close(2) ended them: their processes' ends did. The report (JSON) says so, in its
    // own fields; the summary on stderr too.
    let mode = std::fs::metadata(&report).expect("report").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    assert_eq!(report["format"], 2);
    assert_eq!(report["connections"]["total"], children);
    assert_eq!(report["connections"]["closed"], children);
    assert_eq!(report["connections"]["ended_with_their_process"], children);
    assert_eq!(report["events"].as_u64(), Some(run.events.len() as u64));
    assert_eq!(report["command_exit_code"], 0);
    let losses = report["losses"].as_object().expect("losses");
    assert!(losses.values().all(|count| count == 0), "{report}");
    let kept = report["connections"]["kept"].as_array().expect("kept");
    assert_eq!(kept.len(), children);
    for connection in kept {
        assert_eq!(connection["transport"], "tcp", "{connection}");
        assert_eq!(
            connection["remote"],
            format!("127.0.0.1:{port}"),
            "{connection}"
        );
        assert_eq!(connection["not_captured_written"], 0, "{connection}");
    }
    assert!(
        run.stderr.contains(&format!(
            "probectl: {children} connections ({children} closed)"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "{children} connections ended with their process (it exited without closing them)"
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn a_report_that_cannot_be_written_is_an_error_before_anything_is_traced() {
    let (code, stdout, stderr) = probectl(&[
        "run",
        "openssl",
        "--report",
        "/nonexistent-directory/report.json",
        "--",
        "/bin/true",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("cannot create the report /nonexistent-directory/report.json"),
        "{stderr}"
    );
    assert!(!stderr.contains("tracing"), "{stderr}");
}

/// Bytes written and read by one connection.
type Streams = (Vec<u8>, Vec<u8>);

/// Thousands of short processes, each dying with its TLS connection open (no close, no
/// SSL_free: `bench/churn_client.c`): every connection ends with its process and its bytes are
/// what the server recorded for its client address, while what probectl keeps stays bounded:
/// ended connections beyond the most recent 1,024 fold into totals, and its heap (from the
/// report) does not grow by the ~35 KB per dead connection it once did.
#[test]
fn thousands_of_processes_dying_with_open_connections_keep_probectl_bounded() {
    use std::collections::BTreeMap;
    let _exclusive = exclusive();
    const CHILDREN: usize = 1100;
    const READ: usize = 16_384;
    let client = gcc(
        include_str!("../bench/churn_client.c"),
        "churn_client",
        &["-lssl", "-lcrypto"],
    );
    let recording = common::recording::Recording::start();
    let port = recording.port.to_string();
    let children = CHILDREN.to_string();
    let read = READ.to_string();
    let run = Trace::start(
        &["openssl"],
        &[
            client.to_str().expect("path"),
            "127.0.0.1",
            &port,
            "/download/20000",
            &children,
            &read,
        ],
    )
    .wait_within(std::time::Duration::from_secs(600));
    assert!(run.status.success(), "{}", run.stderr);
    let report = &run.report;
    assert_no_losses(report, &run.stderr);
    let connections = &report["connections"];
    assert_eq!(connections["total"], CHILDREN, "{connections}");
    assert_eq!(connections["ended_with_their_process"], CHILDREN);
    let kept = connections["kept"].as_array().expect("kept").len();
    assert!(kept <= 1024, "{kept} connections kept one by one");
    assert_eq!(
        connections["folded"]["connections"].as_u64(),
        Some((CHILDREN - kept) as u64)
    );
    let heap = report["memory"]["heap_kib"]
        .as_u64()
        .expect("memory.heap_kib");
    assert!(heap > 0 && heap < 64 * 1024, "probectl's heap: {heap} KiB");
    // Bytes: per connection, what the child wrote is what the server read, and what it read
    // is the start of what the server wrote. Children one after another reuse client ports
    // (a socket reset at exit leaves no TIME_WAIT): per address, connections pair up in order.
    let mut captured: BTreeMap<u64, (String, Vec<u8>, Vec<u8>)> = BTreeMap::new();
    for event in &run.events {
        let conn = &event.json["conn"];
        let id = conn["id"].as_u64().expect("conn.id");
        let local = conn["local"].as_str().expect("conn.local").to_string();
        let streams = captured
            .entry(id)
            .or_insert_with(|| (local, Vec::new(), Vec::new()));
        match event.direction.as_str() {
            "write" => streams.1.extend_from_slice(&event.data),
            _ => streams.2.extend_from_slice(&event.data),
        }
    }
    assert_eq!(captured.len(), CHILDREN, "one connection per child");
    let mut by_address: BTreeMap<String, Vec<Streams>> = BTreeMap::new();
    for (local, written, read) in captured.into_values() {
        by_address.entry(local).or_default().push((written, read));
    }
    let mut recorded: BTreeMap<String, Vec<Streams>> = BTreeMap::new();
    for index in 0..CHILDREN {
        let file = |suffix: &str| recording.dir.join(format!("{index}.{suffix}"));
        let peer = std::fs::read_to_string(file("peer")).expect("peer");
        let server_read = std::fs::read(file("in")).expect("in");
        let server_wrote = std::fs::read(file("out")).expect("out");
        recorded
            .entry(peer)
            .or_default()
            .push((server_read, server_wrote));
    }
    assert_eq!(
        by_address.keys().collect::<Vec<_>>(),
        recorded.keys().collect::<Vec<_>>()
    );
    for (address, connections) in &by_address {
        let theirs = &recorded[address];
        assert_eq!(connections.len(), theirs.len(), "{address}");
        for ((written, read), (server_read, server_wrote)) in connections.iter().zip(theirs) {
            assert!(written == server_read, "{address}: the request");
            assert_eq!(read.len(), READ, "{address}");
            assert!(
                server_wrote.starts_with(read),
                "{address}: the start of the response"
            );
        }
    }
}

/// A pid reused: a process exits with its TLS connection open, and the next process the
/// kernel gives its pid (forced through ns_last_pid) opens one from the same parent state, so
/// with the same pid and, likely, the same SSL* handle. They are two connections, each with
/// exactly its own bytes, both ended with their process.
#[test]
fn a_reused_pid_starts_new_connections() {
    let _exclusive = exclusive();
    let (_server, port) = python_server(false);
    let tag = format!("reuse-{}", std::process::id());
    let run = Trace::start(
        &["openssl"],
        &[
            "/usr/bin/python3",
            &peer("pid_reuse.py").display().to_string(),
            &port.to_string(),
            &tag,
        ],
    )
    .wait();
    assert!(run.status.success(), "{}", run.stderr);
    assert_no_losses(&run.report, &run.stderr);
    let mut connections: std::collections::BTreeMap<u64, (u32, String, Vec<u8>)> =
        std::collections::BTreeMap::new();
    for event in run.events.iter().filter(|event| event.direction == "write") {
        let conn = &event.json["conn"];
        let entry = connections
            .entry(conn["id"].as_u64().expect("conn.id"))
            .or_insert_with(|| {
                (
                    event.pid,
                    conn["handle"].as_str().expect("handle").to_string(),
                    Vec::new(),
                )
            });
        entry.2.extend_from_slice(&event.data);
    }
    let connections: Vec<(u32, String, Vec<u8>)> = connections.into_values().collect();
    assert_eq!(connections.len(), 2, "{connections:?}");
    assert_eq!(connections[0].0, connections[1].0, "the same pid");
    for (connection, name) in connections.iter().zip(["A", "B"]) {
        assert_eq!(
            String::from_utf8_lossy(&connection.2),
            format!("GET /{tag}/{name} HTTP/1.0\r\nHost: x\r\n\r\n")
        );
    }
    let report = &run.report["connections"];
    assert_eq!(report["total"], 2, "{report}");
    assert_eq!(report["ended_with_their_process"], 2, "{report}");
}
