//! GnuTLS through real BPF: `gnutls-cli` and `wget` (both linked to libgnutls.so.30 on Debian)
//! against `gnutls-serv --http` on loopback; both sides traced and byte-exact.

mod common;

use std::process::Command;

use common::*;

/// `gnutls-serv --http` on a free port: answers a GET with a page describing the session.
fn gnutls_server() -> (Interactive, u16) {
    let (cert, key) = cert_and_key();
    let port = free_port();
    let server = Interactive::spawn(
        Command::new("gnutls-serv")
            .args(["--http", "-p", &port.to_string(), "--x509keyfile"])
            .arg(key)
            .arg("--x509certfile")
            .arg(cert),
    );
    wait_for_listener(port);
    (server, port)
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
    assert!(run.events.iter().all(|e| e.plugin == "gnutls"));
}

#[test]
fn gnutls_cli_and_gnutls_serv_are_captured_on_both_sides() {
    let (server, port) = gnutls_server();
    let server_trace = Trace::start(&["gnutls", "--pid", &server.pid().to_string()], &[]);
    let mut client = Interactive::spawn(Command::new("gnutls-cli").args([
        "--insecure",
        "-p",
        &port.to_string(),
        "127.0.0.1",
    ]));
    client.wait_for_output(b"- Simple Client Mode:");
    let client_trace = Trace::start(&["gnutls", "--pid", &client.pid().to_string()], &[]);

    let request = unique_request("gnutls-cli");
    client.send(&request);
    let client_output = client.wait_for_output(b"</HTML>\n");
    let server_run = server_trace.stop();
    let client_run = client_trace.stop();
    check_gnutls_run(&server_run);
    check_gnutls_run(&client_run);

    // The response is the page the server wrote, as gnutls-cli printed it on stdout.
    let response = stream(&server_run.events, server.pid(), "write");
    assert!(response.starts_with(b"HTTP/1.0 200 OK\r\n"), "{response:?}");
    assert!(
        client_output
            .windows(response.len())
            .any(|window| window == response),
        "gnutls-cli printed exactly what the server wrote"
    );
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

#[test]
fn wget_and_gnutls_serv_are_captured_on_both_sides() {
    let (server, port) = gnutls_server();
    let server_trace = Trace::start(&["gnutls", "--pid", &server.pid().to_string()], &[]);
    let body = scratch_file("wget-body");
    let url = format!("https://127.0.0.1:{port}/wget-test");
    let client_run = Trace::start(
        &["gnutls"],
        &[
            "wget",
            "-q",
            "--no-check-certificate",
            "-O",
            body.to_str().expect("path"),
            &url,
        ],
    )
    .wait();
    let server_run = server_trace.stop();
    check_gnutls_run(&server_run);
    check_gnutls_run(&client_run);

    let wget_pid = client_run.events.first().expect("events").pid;
    let request = stream(&client_run.events, wget_pid, "write");
    assert!(
        request.starts_with(b"GET /wget-test HTTP/1.1\r\n") && request.ends_with(b"\r\n\r\n"),
        "{:?}",
        String::from_utf8_lossy(&request)
    );
    let response = stream(&server_run.events, server.pid(), "write");
    // What wget saved is the response's body, exactly.
    let saved = std::fs::read(&body).expect("wget output");
    let header_end = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("header end")
        + 4;
    assert_eq!(response[header_end..], saved[..]);
    assert_both_sides(
        (&client_run, wget_pid),
        (&server_run, server.pid()),
        port,
        &request,
        &response,
    );
}
