//! OpenSSL through real BPF and real programs: what probectl captured must equal, byte for
//! byte, what the programs sent and received.

mod common;

use std::process::{Command, Stdio};

use common::*;

/// The request curl sends for these options, exactly.
fn curl_request(port: u16, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: */*\r\nUser-Agent: probectl-test\r\n\r\n").into_bytes()
}

#[test]
fn curl_to_s_server_command_mode_is_byte_exact() {
    let (_server, port) = s_server();
    let body = scratch_file("curl-body");
    let url = format!("https://127.0.0.1:{port}/curl-test");
    let body_arg = body.to_string_lossy().into_owned();
    let trace = Trace::start(
        &["openssl"],
        &[
            "curl",
            "-sk",
            "-i",
            "--raw",
            "-H",
            "User-Agent: probectl-test",
            &url,
            "-o",
            &body_arg,
        ],
    );
    let run = trace.wait();
    assert!(run.status.success(), "{}", run.stderr);
    let curl_pid = run.events.first().expect("events").pid;
    assert!(
        run.events.iter().all(|e| e.pid == curl_pid),
        "only the command is traced"
    );
    assert_eq!(
        stream(&run.events, curl_pid, "write"),
        curl_request(port, "/curl-test")
    );
    let received = std::fs::read(&body).expect("curl output");
    assert!(received.starts_with(b"HTTP/1.0 200 ok\r\n"));
    assert_eq!(stream(&run.events, curl_pid, "read"), received);
    let event = &run.events[0];
    assert_eq!(
        (event.comm.as_str(), event.group.as_str()),
        ("curl", "openssl")
    );
    assert!(event.library.ends_with("libssl.so.3"), "{}", event.library);
    assert_eq!(run.report_number("/events"), run.events.len() as u64);
    assert_eq!(run.report_number("/losses/chunks_ring_full"), 0);
}

#[test]
fn python_client_is_captured_through_the_ex_functions() {
    let (_server, port) = s_server();
    let exchange = Exchange::new(&unique_request("python"));
    let script = peer("tls_client.py");
    let run = exchange.traced(
        &["openssl"],
        &["/usr/bin/python3", script.to_str().expect("path")],
        port,
    );
    let pid = run.events.first().expect("events").pid;
    assert_eq!(stream(&run.events, pid, "write"), exchange.request);
    assert_eq!(stream(&run.events, pid, "read"), exchange.response());
    let functions: std::collections::BTreeSet<&str> =
        run.events.iter().map(|e| e.function.as_str()).collect();
    assert_eq!(
        functions,
        ["SSL_read_ex", "SSL_write_ex"].into(),
        "Python 3.10+ uses the _ex forms"
    );
}

#[test]
fn node_static_openssl_is_captured_from_the_executable() {
    // Not beside the system-wide test below: a node running when that trace starts gets its
    // executable attached at once, not "new in pid N" at its exec.
    let _exclusive = exclusive();
    let (_server, port) = s_server();
    let exchange = Exchange::new(&unique_request("node"));
    let script = peer("tls_client.js");
    let run = exchange.traced(
        &["openssl"],
        &["node", script.to_str().expect("path")],
        port,
    );
    let pid = run.events.first().expect("events").pid;
    assert_eq!(stream(&run.events, pid, "write"), exchange.request);
    assert_eq!(stream(&run.events, pid, "read"), exchange.response());
    let node = std::fs::canonicalize(which("node")).expect("node path");
    assert!(
        run.events
            .iter()
            .all(|e| std::path::Path::new(&e.library) == node),
        "captured from node's own executable: {:?}",
        run.events.iter().map(|e| &e.library).collect::<Vec<_>>()
    );
}

fn which(program: &str) -> std::path::PathBuf {
    let output = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .expect("sh");
    std::path::PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

#[test]
fn pid_mode_traces_an_already_running_server() {
    let (server, port) = python_server(false);
    let trace = Trace::start(&["openssl", "--pid", &server.pid().to_string()], &[]);
    let first = unique_request("pid-first");
    let second = unique_request("pid-second");
    let (client_a, response_a) = python_client(port, &first);
    let (client_b, response_b) = python_client(port, &second);
    let run = trace.stop();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.events.iter().all(|e| e.pid == server.pid()),
        "clients {client_a} {client_b} are not traced"
    );
    assert_eq!(
        stream(&run.events, server.pid(), "read"),
        [first, second].concat()
    );
    assert_eq!(
        stream(&run.events, server.pid(), "write"),
        [response_a, response_b].concat()
    );
}

#[test]
fn system_wide_mode_sees_two_different_processes() {
    let _exclusive = exclusive();
    let (_server, port) = s_server();
    let trace = Trace::start(&["openssl", "--ring-bytes", "134217728"], &[]);
    let url = format!("https://127.0.0.1:{port}/system-wide");
    let curl = Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-H",
            "User-Agent: probectl-test",
            &url,
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("curl");
    let curl_pid = curl.id();
    assert!(curl.wait_with_output().expect("curl").status.success());
    let request = unique_request("system-wide");
    let (python_pid, response) = python_client(port, &request);
    let run = trace.stop();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(
        stream(&run.events, curl_pid, "write"),
        curl_request(port, "/system-wide")
    );
    assert_eq!(stream(&run.events, python_pid, "write"), request);
    assert_eq!(stream(&run.events, python_pid, "read"), response);
}

#[test]
fn a_traced_process_that_exits_ends_the_run_cleanly() {
    let (_server, port) = s_server();
    let exchange = Exchange::new(&unique_request("exit"));
    let (mut client, ready) = exchange.held_python_client(port, "--hold");
    assert_eq!(ready, "ready");
    let pid = client.pid();
    let trace = Trace::start(&["openssl", "--pid", &pid.to_string()], &[]);
    client.release();
    assert_eq!(client.read_line(), "done");
    // The client exits: probectl must notice, deliver everything and exit 0 by itself.
    client.finish();
    let run = trace.wait();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("traced process {pid} exited")),
        "{}",
        run.stderr
    );
    assert_eq!(stream(&run.events, pid, "write"), exchange.request);
    assert_eq!(stream(&run.events, pid, "read"), exchange.response());
}

#[test]
fn calls_beyond_max_bytes_are_captured_up_to_the_limit_and_counted() {
    let (_server, port) = s_server();
    let url = format!("https://127.0.0.1:{port}/truncated");
    let body = scratch_file("body");
    let body_arg = body.to_string_lossy().into_owned();
    let run = Trace::start(
        &["openssl", "--max-bytes", "100"],
        &[
            "curl",
            "-sk",
            "-i",
            "--raw",
            "-H",
            "User-Agent: probectl-test",
            &url,
            "-o",
            &body_arg,
        ],
    )
    .wait();
    assert!(run.status.success(), "{}", run.stderr);
    let received = std::fs::read(&body).expect("body");
    let reads: Vec<&Event> = run
        .events
        .iter()
        .filter(|e| e.direction == "read")
        .collect();
    assert_eq!(reads.len(), 1, "s_server's page arrives in one SSL_read");
    let read = reads[0];
    assert_eq!(read.len, received.len() as u64);
    assert_eq!(read.data, received[..100]);
    assert_eq!(read.truncated, received.len() as u64 - 100);
    let expected_truncated: u64 = run.events.iter().map(|e| e.len.saturating_sub(100)).sum();
    assert_eq!(run.report_number("/bytes_truncated"), expected_truncated);
}

#[test]
fn a_call_larger_than_a_chunk_is_captured_completely() {
    let (_server, port) = s_server();
    // One sendall of ~200 KiB: a single SSL_write_ex spanning many 16 KiB chunks.
    let padding = "x".repeat(200 * 1024);
    let request = format!("GET /large HTTP/1.0\r\nX-Pad: {padding}\r\n\r\n").into_bytes();
    let exchange = Exchange::new(&request);
    let script = peer("tls_client.py");
    let run = exchange.traced(
        &["openssl"],
        &["/usr/bin/python3", script.to_str().expect("path")],
        port,
    );
    let pid = run.events.first().expect("events").pid;
    let writes: Vec<&Event> = run
        .events
        .iter()
        .filter(|e| e.direction == "write")
        .collect();
    assert_eq!(writes.len(), 1, "one call");
    assert_eq!(writes[0].len, request.len() as u64);
    assert_eq!(writes[0].truncated, 0);
    assert_eq!(stream(&run.events, pid, "write"), request);
}

#[test]
fn a_static_program_started_during_a_system_wide_trace_is_attached() {
    let _exclusive = exclusive();
    let (_server, port) = s_server();
    let trace = Trace::start(&["openssl", "--ring-bytes", "134217728"], &[]);
    let exchange = Exchange::new(&unique_request("late-node"));
    // node (OpenSSL linked into the executable) starts after probectl: it is found when it
    // execs; it connects once probectl says its executable is attached (however long that
    // takes on a busy machine).
    let mut node = Command::new("node")
        .arg(peer("tls_client.js"))
        .args(exchange.client_args(port))
        .arg("stdin")
        .stdin(Stdio::piped())
        .spawn()
        .expect("node");
    let pid = node.id();
    let attached = format!("probes (new in pid {pid}, attached ");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !trace.stderr_text().contains(&attached) {
        assert!(
            std::time::Instant::now() < deadline,
            "node was not attached: {}",
            trace.stderr_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::io::Write::write_all(&mut node.stdin.take().expect("stdin"), b"go\n").expect("go");
    assert!(node.wait_with_output().expect("node").status.success());
    let run = trace.stop();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("probes (new in pid {pid}, attached ")),
        "{}",
        run.stderr
    );
    assert_eq!(
        stream(&run.events, pid, "write"),
        exchange.request,
        "{}",
        run.stderr
    );
    assert_eq!(stream(&run.events, pid, "read"), exchange.response());
}
