//! rustls with the aws-lc-rs provider, through real BPF: Deno 2.9.6 (npm) and uv 0.13.9 (PyPI),
//! stripped executables whose aws-lc record AEAD is found by its error reports (see
//! `probectl_core::symbols::locate`), and the rustls fixture (tests/peers/rustls-fixture) built from
//! crates with fat LTO and stripped: a client on TLS 1.3 and 1.2, and a tokio-rustls server
//! under 20 concurrent connections. The ring provider is recognised and said to be untraced.
//!
//! The oracles are the peers' own records: tests/peers/recording_server.py for clients (every
//! byte it read and wrote per connection), tests/peers/tls_parallel.py's record of what each of
//! its connections sent and received for the server.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use common::recording::*;
use common::*;

/// The download size and the upload size of the fetch clients.
const DOWNLOAD: usize = 300_000;
const UPLOAD: usize = 200_000;

/// What every event of a traced rustls program must be.
fn assert_rustls_events(events: &[Event], executable: &Path) {
    let executable = std::fs::canonicalize(executable).expect("executable path");
    assert!(!events.is_empty(), "no events");
    for event in events {
        assert_eq!(event.group, "rustls", "{}", event.json);
        assert_eq!(Path::new(&event.library), executable, "{}", event.json);
        let expected: &[&str] = match event.direction.as_str() {
            // aws-lc-rs seals with a separate tag (seal_scatter) for TLS 1.2 records.
            "write" => &["EVP_AEAD_CTX_seal", "EVP_AEAD_CTX_seal_scatter"],
            _ => &["EVP_AEAD_CTX_open"],
        };
        assert!(
            expected.contains(&event.function.as_str()),
            "{}",
            event.json
        );
        assert_eq!(event.truncated, 0, "{}", event.json);
    }
}

/// The captured streams per connection (by `conn.id`, one per TLS connection, whatever the
/// handles): (client address, written, read), and each connection's events carry one fd and
/// the 4-tuple of a TCP connection to `port` (as client) or from it (as server).
fn streams_by_connection(
    events: &[Event],
    port: u16,
    server: bool,
) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let mut connections: BTreeMap<u64, (String, serde_json::Value, Vec<u8>, Vec<u8>)> =
        BTreeMap::new();
    for event in events {
        let conn = &event.json["conn"];
        let id = conn["id"].as_u64().expect("conn.id");
        assert!(conn["fd"].is_u64(), "conn.fd is known: {}", event.json);
        assert_eq!(conn["transport"].as_str(), Some("tcp"), "{}", event.json);
        let (ours, theirs) = if server {
            ("local", "remote")
        } else {
            ("remote", "local")
        };
        assert_eq!(
            conn[ours].as_str(),
            Some(format!("127.0.0.1:{port}").as_str()),
            "{}",
            event.json
        );
        let client = conn[theirs].as_str().expect("address").to_string();
        let entry = connections
            .entry(id)
            .or_insert_with(|| (client.clone(), conn["fd"].clone(), Vec::new(), Vec::new()));
        assert_eq!(
            entry.0, client,
            "one 4-tuple per connection: {}",
            event.json
        );
        assert_eq!(entry.1, conn["fd"], "one fd per connection: {}", event.json);
        match event.direction.as_str() {
            "write" => entry.2.extend_from_slice(&event.data),
            _ => entry.3.extend_from_slice(&event.data),
        }
    }
    connections
        .into_values()
        .map(|(client, _, written, read)| (client, written, read))
        .collect()
}

/// A traced client's connections are the recording server's, byte for byte, each with its
/// own client address.
fn assert_client_matches_recording(events: &[Event], recording: &Recording) {
    let captured: BTreeMap<String, (Vec<u8>, Vec<u8>)> =
        streams_by_connection(events, recording.port, false)
            .into_iter()
            .map(|(client, written, read)| (client, (written, read)))
            .collect();
    let recorded = recording.by_client();
    assert_eq!(
        captured.keys().collect::<Vec<_>>(),
        recorded.keys().collect::<Vec<_>>(),
        "one connection per connection the server accepted"
    );
    for (client, (written, read)) in &captured {
        let (server_read, server_written) = &recorded[client];
        assert!(
            written == server_read,
            "{client} written: {} bytes captured, the server read {}",
            written.len(),
            server_read.len()
        );
        assert!(
            read == server_written,
            "{client} read: {} bytes captured, the server wrote {}",
            read.len(),
            server_written.len()
        );
    }
}

/// Deno's fetch (tests/peers/fetch_client.js): GET /download/300000, then POST a 200 KB body, on
/// the recording server, traced by `probectl run <args> -- deno run ... fetch_client.js`.
fn traced_deno_fetch(args: &[&str]) -> (FinishedLines, Recording, Vec<u8>) {
    let deno = npm_peer("deno");
    let recording = Recording::start();
    let body = noise(UPLOAD, 11);
    let body_file = scratch_file("deno-upload.bin");
    std::fs::write(&body_file, &body).expect("body");
    let cache = cache_dir();
    let client = peer("fetch_client.js");
    let port = recording.port.to_string();
    let size = DOWNLOAD.to_string();
    let run = Trace::start_with_env(
        args,
        &[
            deno.to_str().expect("path"),
            "run",
            "--allow-read",
            "--allow-net",
            "--unsafely-ignore-certificate-errors",
            client.to_str().expect("path"),
            &port,
            &size,
            body_file.to_str().expect("path"),
        ],
        &[("PROBECTL_CACHE_DIR", cache.as_os_str())],
    )
    .wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    // The peers worked: the server got the body and answered its digest after the download.
    recording.assert_fetched(DOWNLOAD, &body);
    (run, recording, body)
}

#[test]
fn deno_fetch_is_byte_exact_in_both_directions() {
    let _exclusive = exclusive();
    let (run, recording, _) = traced_deno_fetch(&["rustls"]);
    let events = events_of(&run);
    assert_rustls_events(&events, &npm_peer("deno"));
    assert_client_matches_recording(&events, &recording);
    assert!(
        run.stderr
            .contains("(rustls 0.23.40 with aws-lc-rs 1.16.3): 4 probes"),
        "the versions are named: {}",
        run.stderr
    );
    run.assert_no_losses();
}

#[test]
fn deno_fetch_decoded_as_http_matches_the_recording() {
    let _exclusive = exclusive();
    let (run, recording, body) = traced_deno_fetch(&["rustls", "--decode", "http=exchange"]);
    let exchanges: Vec<&serde_json::Value> = run
        .lines
        .iter()
        .filter(|line| line["type"] == "http")
        .collect();
    assert_eq!(
        exchanges.len(),
        run.lines.len(),
        "nothing raw: {:?}",
        run.lines
    );
    let connections = recording.connections();
    let read: Vec<u8> = connections.iter().flat_map(|c| c.0.clone()).collect();
    let written: Vec<u8> = connections.iter().flat_map(|c| c.1.clone()).collect();
    let recorded: Vec<(String, u64, String, String)> = http_messages(&read)
        .iter()
        .zip(&http_messages(&written))
        .map(
            |((request_line, request_body), (status_line, response_body))| {
                (
                    request_line
                        .split(' ')
                        .nth(1)
                        .unwrap_or_default()
                        .to_string(),
                    status_line
                        .split(' ')
                        .nth(1)
                        .and_then(|code| code.parse().ok())
                        .expect("status"),
                    sha256_hex(request_body),
                    sha256_hex(response_body),
                )
            },
        )
        .collect();
    let decoded: Vec<(String, u64, String, String)> = exchanges
        .iter()
        .map(|exchange| {
            assert_eq!(
                exchange["incomplete"],
                serde_json::Value::Null,
                "{exchange}"
            );
            (
                exchange["path"].as_str().expect("path").to_string(),
                exchange["status"].as_u64().expect("status"),
                sha256_hex(&decode_b64(&exchange["request"]["body_b64"])),
                sha256_hex(&decode_b64(&exchange["response"]["body_b64"])),
            )
        })
        .collect();
    assert_eq!(decoded, recorded);
    assert_eq!(recorded[1].2, sha256_hex(&body));
}

/// `uv pip install six` against the recording server as its index, traced by `probectl run
/// rustls <args>`. uv asks for /simple/six/ and gets "hello /simple/six/", which is no index
/// page: it fails, after the exchange the tests are about.
fn traced_uv_install(args: &[&str]) -> (FinishedLines, Recording) {
    let uv = uv_peer();
    let (ca, leaf, key) = ca_and_leaf();
    let recording = Recording::start_with(leaf, key);
    let cache = cache_dir();
    let venv = scratch_file("uv-venv");
    let status = Command::new("/usr/bin/python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .expect("python3 -m venv");
    assert!(status.success());
    let index = format!("https://127.0.0.1:{}/simple/", recording.port);
    let python = venv.join("bin/python");
    let mut probectl_args = vec!["rustls"];
    probectl_args.extend_from_slice(args);
    let run = Trace::start_with_env(
        &probectl_args,
        &[
            uv.to_str().expect("path"),
            "pip",
            "install",
            "--no-cache",
            "--python",
            python.to_str().expect("path"),
            "--index-url",
            &index,
            "six",
        ],
        &[
            ("PROBECTL_CACHE_DIR", cache.as_os_str()),
            ("SSL_CERT_FILE", ca.as_os_str()),
        ],
    )
    .wait_lines();
    let recorded = recording.connections();
    assert_eq!(recorded.len(), 1, "uv connected once: {}", run.stderr);
    assert!(
        recorded[0].0.starts_with(b"GET /simple/six/ HTTP/1.1\r\n"),
        "{}",
        String::from_utf8_lossy(&recorded[0].0)
    );
    assert!(recorded[0].1.ends_with(b"hello /simple/six/"));
    assert!(
        run.stderr
            .contains("(rustls 0.23.46 with aws-lc-rs 1.18.0): 4 probes"),
        "{}",
        run.stderr
    );
    (run, recording)
}

#[test]
fn uv_pip_install_request_and_answer_are_byte_exact() {
    let _exclusive = exclusive();
    let (run, recording) = traced_uv_install(&[]);
    let events = events_of(&run);
    assert_rustls_events(&events, &uv_peer());
    assert_client_matches_recording(&events, &recording);
}

#[test]
fn uv_pip_install_decoded_as_http_matches_the_recording() {
    let _exclusive = exclusive();
    let (run, recording) = traced_uv_install(&["--decode", "http"]);
    let exchanges: Vec<&serde_json::Value> = run
        .lines
        .iter()
        .filter(|line| line["type"] == "http")
        .collect();
    assert_eq!(exchanges.len(), 1, "one exchange: {:?}", run.lines);
    let exchange = exchanges[0];
    assert_eq!(
        exchange["incomplete"],
        serde_json::Value::Null,
        "{exchange}"
    );
    let recorded = &recording.connections()[0];
    let request = &http_messages(&recorded.0)[0];
    let response = &http_messages(&recorded.1)[0];
    assert_eq!(exchange["method"], "GET");
    assert_eq!(exchange["path"], "/simple/six/");
    assert_eq!(request.0, "GET /simple/six/ HTTP/1.1");
    assert_eq!(exchange["status"], 200);
    assert_eq!(
        sha256_hex(&decode_b64(&exchange["response"]["body_b64"])),
        sha256_hex(&response.1)
    );
    assert_eq!(response.1, b"hello /simple/six/");
}

/// The fixture's client against the recording server, on one TLS version; returns the
/// functions that sealed its records.
fn fixture_client_is_byte_exact(version: &[&str]) -> Vec<String> {
    let _exclusive = exclusive();
    let fixture = rustls_fixture("aws-lc-rs");
    let (ca, leaf, key) = ca_and_leaf();
    let recording = Recording::start_with(leaf, key);
    let cache = cache_dir();
    let port = recording.port.to_string();
    let download = DOWNLOAD.to_string();
    let upload = UPLOAD.to_string();
    let mut command = vec![
        fixture.to_str().expect("path"),
        "client",
        &port,
        ca.to_str().expect("path"),
        &download,
        &upload,
    ];
    command.extend_from_slice(version);
    let run = Trace::start_with_env(
        &["rustls"],
        &command,
        &[("PROBECTL_CACHE_DIR", cache.as_os_str())],
    )
    .wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    let recorded = recording.connections();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        http_messages(&recorded[0].1)[0].1,
        download_pattern(DOWNLOAD)
    );
    let events = events_of(&run);
    assert_rustls_events(&events, &fixture);
    assert_client_matches_recording(&events, &recording);
    run.assert_no_losses();
    let mut sealing: Vec<String> = events
        .iter()
        .filter(|event| event.direction == "write")
        .map(|event| event.function.clone())
        .collect();
    sealing.dedup();
    sealing
}

#[test]
fn rustls_client_on_tls13_is_byte_exact() {
    assert_eq!(fixture_client_is_byte_exact(&[]), ["EVP_AEAD_CTX_seal"]);
}

#[test]
fn rustls_client_on_tls12_is_byte_exact() {
    // TLS 1.2 records: 13-byte headers, and aws-lc-rs seals them with a separate tag.
    assert_eq!(
        fixture_client_is_byte_exact(&["tls12"]),
        ["EVP_AEAD_CTX_seal_scatter"]
    );
}

/// 20 connections at once to the fixture's tokio-rustls server (two worker threads), each with
/// its own request: every connection's bytes are its own, as its client recorded them.
#[test]
fn tokio_rustls_server_under_20_connections_is_byte_exact_per_connection() {
    let _exclusive = exclusive();
    const CONNECTIONS: usize = 20;
    let fixture = rustls_fixture("aws-lc-rs");
    let (_, leaf, key) = ca_and_leaf();
    let cache = cache_dir();
    let port = free_port();
    let port_text = port.to_string();
    let trace = Trace::start_with_env(
        &["rustls"],
        &[
            fixture.to_str().expect("path"),
            "server",
            &port_text,
            leaf.to_str().expect("path"),
            key.to_str().expect("path"),
        ],
        &[("PROBECTL_CACHE_DIR", cache.as_os_str())],
    );
    wait_for_listener(port);
    let output = Command::new("/usr/bin/python3")
        .arg(peer("tls_parallel.py"))
        .args(["127.0.0.1", &port_text, &CONNECTIONS.to_string(), "rustls"])
        .stderr(Stdio::inherit())
        .output()
        .expect("tls_parallel.py");
    assert!(output.status.success());
    let clients: serde_json::Value = serde_json::from_slice(&output.stdout).expect("client JSON");
    let mut expected: BTreeMap<String, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
    for client in clients.as_object().expect("object").values() {
        let address = format!("127.0.0.1:{}", client["port"]);
        let request = decode_b64(&client["request_b64"]);
        let response = decode_b64(&client["response_b64"]);
        assert!(response.len() > 40_000, "the server answered");
        // The server wrote what the client read, and read what it sent.
        expected.insert(address, (response, request));
    }
    assert_eq!(expected.len(), CONNECTIONS);
    let finished = trace.stop();
    let events: Vec<Event> = finished.events;
    assert_rustls_events(&events, &fixture);
    let captured: BTreeMap<String, (Vec<u8>, Vec<u8>)> = streams_by_connection(&events, port, true)
        .into_iter()
        .map(|(client, written, read)| (client, (written, read)))
        .collect();
    assert_eq!(
        captured.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "one connection per client connection"
    );
    for (client, streams) in &captured {
        assert!(streams == &expected[client], "{client}: bytes differ");
    }
}

/// rustls on ring: recognised, named, and said not to be traced (ring reports no errors to
/// locate its functions by); nothing is attached to it.
#[test]
fn rustls_on_ring_is_named_and_not_traced() {
    let fixture = rustls_fixture("ring");
    let (ca, leaf, key) = ca_and_leaf();
    let recording = Recording::start_with(leaf, key);
    let cache = cache_dir();
    let port = recording.port.to_string();
    let run = Trace::start_with_env(
        &["all"],
        &[
            fixture.to_str().expect("path"),
            "client",
            &port,
            ca.to_str().expect("path"),
            "1000",
            "1000",
        ],
        &[("PROBECTL_CACHE_DIR", cache.as_os_str())],
    )
    .wait();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(recording.connections().len(), 1, "the client worked");
    assert!(run.events.is_empty());
    let pid: u32 = run
        .stderr
        .lines()
        .find_map(|line| line.split_once("(pid ")?.1.split(')').next()?.parse().ok())
        .expect("the client's pid in the output");
    let told: String = run
        .stderr
        .lines()
        .filter(|line| line.contains("with ring"))
        .map(|line| format!("{line}\n"))
        .collect::<String>()
        .replace(&fixture.display().to_string(), "[fixture]")
        .replace(&pid.to_string(), "[pid]");
    insta::assert_snapshot!(told);
}
