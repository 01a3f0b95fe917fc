//! Real deployments that used to lose or merge data: memory-BIO servers that reuse their
//! connection handles, thread churn before a fork, libraries loaded long after exec. Every
//! expected byte comes from the peers (what curl received by its own record, what the client
//! was given to send), never from probectl.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;

/// The bytes curl sends for `path` with the options of `curl_fetch`.
fn curl_request(path: &str, port: u16) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: */*\r\nUser-Agent: probectl-test\r\n\r\n"
    )
    .into_bytes()
}

/// Starts curl fetching `path`; it writes every byte it received (head and body, raw) to the
/// returned file: the client's own record.
fn curl_fetch(path: &str, port: u16) -> (std::process::Child, std::path::PathBuf) {
    let out = scratch_file("curl-received");
    let child = Command::new("curl")
        .args([
            "-sk",
            "--http1.1",
            "-i",
            "--raw",
            "-H",
            "User-Agent: probectl-test",
        ])
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .arg("-o")
        .arg(&out)
        .spawn()
        .expect("curl");
    (child, out)
}

/// A server printing "ready" on stdout once it listens.
fn start_server(program: &str, script: &str, port: u16) -> Guard {
    let (cert, key) = cert_and_key();
    let mut child = Command::new(program)
        .arg(peer(script))
        .arg(port.to_string())
        .arg(cert)
        .arg(key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("server output");
    assert_eq!(line.trim(), "ready");
    Guard(child)
}

/// 5 sequential and 5 concurrent curl connections to a memory-BIO server traced with --pid:
/// exactly 10 connections, each with exactly its own request and response.
fn one_connection_per_client(program: &str, script: &str, tag: &str) {
    let port = free_port();
    let server = start_server(program, script, port);
    let pid = server.pid();
    let trace = Trace::start(&["openssl", "--pid", &pid.to_string()], &[]);
    let mut clients = Vec::new();
    for index in 0..5 {
        let path = format!("/{tag}/sequential/{index}");
        let (mut child, out) = curl_fetch(&path, port);
        assert!(child.wait().expect("curl").success());
        clients.push((curl_request(&path, port), out));
    }
    let concurrent: Vec<_> = (0..5)
        .map(|index| {
            let path = format!("/{tag}/concurrent/{index}");
            let (child, out) = curl_fetch(&path, port);
            (child, curl_request(&path, port), out)
        })
        .collect();
    for (mut child, request, out) in concurrent {
        assert!(child.wait().expect("curl").success());
        clients.push((request, out));
    }
    let run = trace.stop();
    assert!(run.status.success(), "{}", run.stderr);
    let mut connections: BTreeMap<u64, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
    for event in run.events.iter().filter(|event| event.pid == pid) {
        let id = event.json["conn"]["id"].as_u64().expect("conn.id");
        let streams = connections.entry(id).or_default();
        match event.direction.as_str() {
            "read" => streams.0.extend_from_slice(&event.data),
            _ => streams.1.extend_from_slice(&event.data),
        }
    }
    assert_eq!(
        connections.len(),
        10,
        "one connection per client: {connections:#?}\n{}",
        run.stderr
    );
    for (request, out) in &clients {
        let received = std::fs::read(out).expect("curl output");
        assert!(!received.is_empty());
        let matching: Vec<_> = connections
            .values()
            .filter(|(read, _)| read == request)
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "exactly one connection read {:?}",
            String::from_utf8_lossy(request)
        );
        assert_eq!(
            String::from_utf8_lossy(&matching[0].1),
            String::from_utf8_lossy(&received)
        );
    }
    run.assert_no_losses();
}

#[test]
fn a_python_asyncio_server_gets_one_connection_per_client() {
    let _exclusive = exclusive();
    one_connection_per_client("/usr/bin/python3", "async_server.py", "asyncio");
}

#[test]
fn a_node_https_server_gets_one_connection_per_client() {
    let _exclusive = exclusive();
    one_connection_per_client("node", "https_server.js", "node");
}

#[test]
fn a_child_forked_after_17000_threads_is_traced() {
    let _exclusive = exclusive();
    let (_server, port) = s_server();
    let exchange = Exchange::new(&unique_request("thread-churn"));
    let script = peer("thread_churn.py");
    let run = exchange.traced(
        &["openssl"],
        &["/usr/bin/python3", script.to_str().expect("path"), "17000"],
        port,
    );
    let pid = run.events.first().expect("the child's events").pid;
    assert_eq!(stream(&run.events, pid, "write"), exchange.request);
    assert_eq!(stream(&run.events, pid, "read"), exchange.response());
    run.assert_no_losses();
}

/// A private copy of libssl and libcrypto in an unusual directory.
fn unusual_library_dir() -> std::path::PathBuf {
    let dir = scratch_file("unusual-libs");
    std::fs::create_dir_all(&dir).expect("dir");
    for name in ["libssl.so.3", "libcrypto.so.3"] {
        std::fs::copy(format!("/usr/lib/x86_64-linux-gnu/{name}"), dir.join(name)).expect("copy");
    }
    dir
}

/// python3 importing ssl (dlopen of the private libssl copy) `delay` seconds after exec.
fn late_importer(exchange: &Exchange, port: u16, dir: &std::path::Path) -> Interactive {
    let mut command = Command::new("/usr/bin/python3");
    command
        .arg(peer("late_import.py"))
        .arg("3")
        .args(exchange.client_args(port))
        .env("LD_LIBRARY_PATH", dir);
    let client = Interactive::spawn(&mut command);
    client.wait_for_output(b"started");
    client
}

fn assert_late_library_captured(
    run: &Finished,
    pid: u32,
    dir: &std::path::Path,
    exchange: &Exchange,
) {
    let copy = dir.join("libssl.so.3");
    assert!(
        run.stderr
            .lines()
            .any(|line| line.contains(&copy.display().to_string())
                && line.contains(&format!("(new in pid {pid}, attached "))),
        "the private copy was attached when mapped:\n{}",
        run.stderr
    );
    assert_eq!(
        stream(&run.events, pid, "write"),
        exchange.request,
        "{}",
        run.stderr
    );
    assert_eq!(stream(&run.events, pid, "read"), exchange.response());
    assert!(run
        .events
        .iter()
        .filter(|event| event.pid == pid)
        .all(|event| event.library == copy.display().to_string()));
}

#[test]
fn a_library_loaded_3_s_after_exec_is_captured_with_pid() {
    let _exclusive = exclusive();
    let (_server, port) = s_server();
    let dir = unusual_library_dir();
    let exchange = Exchange::new(&unique_request("late-pid"));
    let mut client = late_importer(&exchange, port, &dir);
    let pid = client.pid();
    let trace = Trace::start(&["openssl", "--wait", "--pid", &pid.to_string()], &[]);
    assert!(
        trace.stderr_text().contains("waiting for it to load one"),
        "{}",
        trace.stderr_text()
    );
    assert!(client.wait_exit().success());
    let run = trace.wait();
    assert!(run.status.success(), "{}", run.stderr);
    assert_late_library_captured(&run, pid, &dir, &exchange);
}

#[test]
fn a_library_loaded_3_s_after_exec_is_captured_system_wide() {
    let _exclusive = exclusive();
    let (_server, port) = s_server();
    let dir = unusual_library_dir();
    let exchange = Exchange::new(&unique_request("late-host"));
    let trace = Trace::start(&["openssl"], &[]);
    let mut client = late_importer(&exchange, port, &dir);
    let pid = client.pid();
    assert!(client.wait_exit().success());
    let run = trace.stop();
    assert!(run.status.success(), "{}", run.stderr);
    assert_late_library_captured(&run, pid, &dir, &exchange);
}
