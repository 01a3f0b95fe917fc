//! NSS/NSPR through real BPF, added by spec only (probes.toml's nss group: no Rust or BPF code
//! knows NSS): NSS's `tstclnt` against its `selfserv` on loopback.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::*;

/// An NSS certificate database holding the test certificate and key as "server".
fn nss_db() -> &'static str {
    static DB: OnceLock<String> = OnceLock::new();
    DB.get_or_init(|| {
        let (cert, key) = cert_and_key();
        let dir: PathBuf = scratch_file("nssdb");
        std::fs::create_dir_all(&dir).expect("db dir");
        let db = format!("sql:{}", dir.display());
        let p12 = scratch_file("server.p12");
        let run = |command: &mut Command| {
            let output = command
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("{command:?}: {e}"));
            assert!(output.status.success(), "{command:?}: {output:?}");
        };
        run(Command::new("certutil").args(["-N", "-d", &db, "--empty-password"]));
        run(Command::new("openssl")
            .args([
                "pkcs12", "-export", "-name", "server", "-passout", "pass:", "-inkey",
            ])
            .arg(key)
            .arg("-in")
            .arg(cert)
            .arg("-out")
            .arg(&p12));
        run(Command::new("pk12util")
            .arg("-i")
            .arg(&p12)
            .args(["-d", &db, "-W", ""]));
        db
    })
}

#[test]
fn tstclnt_and_selfserv_are_captured_and_only_tls_io_is() {
    let db = nss_db();
    let port = free_port();
    let server = Interactive::spawn(Command::new("selfserv").args([
        "-d",
        db,
        "-n",
        "server",
        "-p",
        &port.to_string(),
    ]));
    wait_for_listener(port);
    let server_trace = Trace::start(&["nss", "--pid", &server.pid().to_string()], &[]);
    // tstclnt reads the request from stdin with PR_Read and prints the response on stdout with
    // PR_Write: the same NSPR functions as the TLS I/O, on file descriptors, which the spec's
    // only_if leaves out. The byte-exact streams below prove they are not captured.
    let mut client = Interactive::spawn(Command::new("tstclnt").args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-d",
        db,
        "-o",
    ]));
    wait_for_mapping(client.pid(), "libnspr4.so");
    let client_trace = Trace::start(&["nss", "--pid", &client.pid().to_string()], &[]);
    let request = unique_request("nss");
    client.send(&request);
    client.wait_for_output(b"EOF");
    // selfserv closes the connection after its answer; tstclnt keeps waiting on stdin.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let server_run = server_trace.stop();
    let client_run = client_trace.stop();
    let printed = client.wait_for_output(b"EOF");
    for run in [&server_run, &client_run] {
        assert!(run.status.success(), "{}", run.stderr);
        assert!(
            run.stderr
                .contains("[nss] /usr/lib/x86_64-linux-gnu/libnspr4.so: 6 probes"),
            "{}",
            run.stderr
        );
    }
    // selfserv answers with a header, the request echoed, and "EOF".
    assert!(printed.starts_with(b"HTTP/1.0 200 OK\r\n"), "{printed:?}");
    assert!(printed.windows(request.len()).any(|w| w == request));
    let handle = assert_attributed(
        &client_run.events,
        client.pid(),
        Side::Client { server_port: port },
        &request,
        &printed,
    );
    assert!(client_run.events.iter().all(|e| e.group == "nss"
        && e.library.ends_with("libnspr4.so")
        && ["PR_Send", "PR_Recv", "PR_Write", "PR_Read"].contains(&e.function.as_str())));
    assert_ne!(handle, "0x0");
    // selfserv sends its response with one PR_Writev (a list of buffers): the spec's `vector`
    // describes it, and the server's written stream is exactly what the client received.
    assert_attributed(
        &server_run.events,
        server.pid(),
        Side::Server { port },
        &printed,
        &request,
    );
    assert!(server_run.events.iter().any(|e| e.function == "PR_Writev"));
}
