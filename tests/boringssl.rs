//! BoringSSL (Debian's android-libboringssl) through real BPF: `bssl-tool client` talks to
//! `bssl-tool server` on loopback; both sides are traced and must be byte-exact.

mod common;

use std::process::Command;

use common::*;

#[test]
fn bssl_client_and_server_are_captured_on_both_sides() {
    let (cert, key) = cert_and_key();
    let port = free_port();
    let mut server = Interactive::spawn(
        Command::new("bssl-tool")
            .args(["server", "-accept", &port.to_string(), "-key"])
            .arg(key)
            .arg("-cert")
            .arg(cert),
    );
    wait_for_listener(port);
    let server_trace = Trace::start(&["boringssl", "--pid", &server.pid().to_string()], &[]);
    let mut client = Interactive::spawn(Command::new("bssl-tool").args([
        "client",
        "-connect",
        &format!("127.0.0.1:{port}"),
    ]));
    wait_for_mapping(client.pid(), "libssl.so.0");
    let client_trace = Trace::start(&["boringssl", "--pid", &client.pid().to_string()], &[]);
    client.wait_for_log(b"Connected.");

    let request = unique_request("boringssl");
    let response = b"HTTP/1.0 200 OK\r\nContent-Length: 13\r\n\r\nhello, bssl!\n".to_vec();
    client.send(&request);
    server.wait_for_output(&request);
    server.send(&response);
    client.wait_for_output(&response);

    let server_run = server_trace.stop();
    let client_run = client_trace.stop();
    for run in [&server_run, &client_run] {
        assert!(run.status.success(), "{}", run.stderr);
        assert!(
            run.stderr
                .contains("[boringssl] /usr/lib/x86_64-linux-gnu/android/libssl.so.0 (BoringSSL)"),
            "{}",
            run.stderr
        );
        assert!(run.events.iter().all(|e| e.group == "boringssl"
            && e.library.ends_with("android/libssl.so.0")
            && (e.function == "SSL_write" || e.function == "SSL_read")));
    }
    assert_both_sides(
        (&client_run, client.pid()),
        (&server_run, server.pid()),
        port,
        &request,
        &response,
    );
    client.close_stdin();
    server.close_stdin();
}

/// `run all` with a BoringSSL program: libssl.so.0 is traced once, by the boringssl group
/// (openssl's spec matches it too, by file name and symbols), and nothing is said about
/// openssl turning it down.
#[test]
fn run_all_gives_boringssl_files_to_the_boringssl_group_only() {
    let (cert, key) = cert_and_key();
    let port = free_port();
    let server = Interactive::spawn(
        Command::new("bssl-tool")
            .args(["server", "-accept", &port.to_string(), "-key"])
            .arg(key)
            .arg("-cert")
            .arg(cert),
    );
    wait_for_listener(port);
    let trace = Trace::start(&["all", "--pid", &server.pid().to_string()], &[]);
    let mut client = Interactive::spawn(Command::new("bssl-tool").args([
        "client",
        "-connect",
        &format!("127.0.0.1:{port}"),
    ]));
    client.wait_for_log(b"Connected.");
    let request = unique_request("boringssl-all");
    client.send(&request);
    server.wait_for_output(&request);
    let run = trace.stop();
    assert!(run.status.success(), "{}", run.stderr);
    let attach_lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|line| line.contains("libssl"))
        .collect();
    assert_eq!(
        attach_lines,
        ["probectl: [boringssl] /usr/lib/x86_64-linux-gnu/android/libssl.so.0 (BoringSSL): 4 probes (3 emulated)"],
        "{}",
        run.stderr
    );
    assert_eq!(run.events.len(), 1, "one SSL_read, captured once");
    assert_eq!(run.events[0].group, "boringssl");
    assert_eq!(stream(&run.events, server.pid(), "read"), request);
}
