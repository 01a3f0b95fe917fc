//! GnuTLS through real BPF: `gnutls-cli` and `wget` (both linked to libgnutls.so.30 on Debian)
//! against `gnutls-serv --http` on loopback; both sides traced and byte-exact. The expected
//! bytes come from the peers: the server sends the body the test chose (`--httpdata`), the
//! clients record what they sent and received (gnutls-cli's stdout with its messages in a log
//! file; wget's debug log and its saved response).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

/// `gnutls-serv --http` on a free port, answering every GET with `body` (after its own
/// response head).
fn gnutls_server(body: &[u8]) -> (Interactive, u16) {
    let (cert, key) = cert_and_key();
    let port = free_port();
    let body_file = scratch_file("httpdata");
    std::fs::write(&body_file, body).expect("write body");
    let server = Interactive::spawn(
        Command::new("gnutls-serv")
            .args(["--http", "-p", &port.to_string(), "--x509keyfile"])
            .arg(key)
            .arg("--x509certfile")
            .arg(cert)
            .arg(format!("--httpdata={}", body_file.display())),
    );
    wait_for_listener(port);
    (server, port)
}

/// A body unique to this test run, with bytes that text output would escape.
fn chosen_body(tag: &str) -> Vec<u8> {
    let file = scratch_file(tag);
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("x");
    format!("<html>{tag} {name}\r\n\ttab, quote \" and \\ backslash\n</html>\n").into_bytes()
}

fn check_gnutls_run(run: &Finished) {
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("[gnutls] /usr/lib/x86_64-linux-gnu/libgnutls.so.30"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("(GnuTLS 3."),
        "the plugin names the version: {}",
        run.stderr
    );
    assert!(run.events.iter().all(|e| e.group == "gnutls"));
}

#[test]
fn gnutls_cli_and_gnutls_serv_are_captured_on_both_sides() {
    let body = chosen_body("gnutls-cli");
    let (server, port) = gnutls_server(&body);
    let server_trace = Trace::start(&["gnutls", "--pid", &server.pid().to_string()], &[]);
    // Its messages go to the log: its stdout is exactly the data it received.
    let log: PathBuf = scratch_file("gnutls-cli.log");
    let mut client = Interactive::spawn(
        Command::new("gnutls-cli")
            .arg(format!("--logfile={}", log.display()))
            .args(["--insecure", "-p", &port.to_string(), "127.0.0.1"]),
    );
    // (Its log is written in blocks: the loader having mapped GnuTLS is what tells it is
    // ready to be traced; it sends nothing before its handshake and our request anyway.)
    wait_for_mapping(client.pid(), "libgnutls.so");
    let client_trace = Trace::start(&["gnutls", "--pid", &client.pid().to_string()], &[]);

    let request = unique_request("gnutls-cli");
    client.send(&request);
    // The server's answer ends with the body it was given.
    let response = client.wait_for_output(&body);
    let server_run = server_trace.stop();
    let client_run = client_trace.stop();
    check_gnutls_run(&server_run);
    check_gnutls_run(&client_run);

    assert!(response.starts_with(b"HTTP/1.0 200 OK\r\n"), "{response:?}");
    assert!(response.ends_with(&body), "{response:?}");
    assert_both_sides(
        (&client_run, client.pid()),
        (&server_run, server.pid()),
        port,
        &request,
        &response,
    );
    let functions: std::collections::BTreeSet<&str> = client_run
        .events
        .iter()
        .map(|e| e.function.as_str())
        .collect();
    assert_eq!(
        functions,
        ["gnutls_record_recv", "gnutls_record_send"].into()
    );
    client.close_stdin();
}

/// The request wget logged with `-d`: between "---request begin---\n" and "---request end---".
fn logged_request(log: &[u8]) -> Vec<u8> {
    let begin = b"---request begin---\n";
    let end = b"---request end---";
    let start = log
        .windows(begin.len())
        .position(|w| w == begin)
        .expect("request begin in wget's log")
        + begin.len();
    let length = log[start..]
        .windows(end.len())
        .position(|w| w == end)
        .expect("request end in wget's log");
    log[start..start + length].to_vec()
}

#[test]
fn wget_and_gnutls_serv_are_captured_on_both_sides() {
    let body = chosen_body("wget");
    let (server, port) = gnutls_server(&body);
    let server_trace = Trace::start(&["gnutls", "--pid", &server.pid().to_string()], &[]);
    // wget's own record: its request in the debug log, the response (head and body, as it
    // received them) in the saved file.
    let saved = scratch_file("wget-response");
    let log = scratch_file("wget.log");
    let url = format!("https://127.0.0.1:{port}/wget-test");
    let client_run = Trace::start(
        &["gnutls"],
        &[
            "wget",
            "-d",
            "-o",
            log.to_str().expect("path"),
            "--save-headers",
            "--no-check-certificate",
            "-O",
            saved.to_str().expect("path"),
            &url,
        ],
    )
    .wait();
    let server_run = server_trace.stop();
    check_gnutls_run(&server_run);
    check_gnutls_run(&client_run);

    let wget_pid = client_run.events.first().expect("events").pid;
    let request = logged_request(&std::fs::read(&log).expect("wget log"));
    assert!(
        request.starts_with(b"GET /wget-test HTTP/1.1\r\n") && request.ends_with(b"\r\n\r\n"),
        "{:?}",
        String::from_utf8_lossy(&request)
    );
    let response = std::fs::read(&saved).expect("wget output");
    // What wget saved after the head is the body the server was given, exactly.
    let header_end = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("header end")
        + 4;
    assert_eq!(response[header_end..], body[..]);
    assert_both_sides(
        (&client_run, wget_pid),
        (&server_run, server.pid()),
        port,
        &request,
        &response,
    );
}
