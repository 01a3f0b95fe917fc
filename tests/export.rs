//! `--export`: spans sent to a real OTLP receiver, compared with what the client and the server
//! did. The receiver (`tests/peers/otlp_receiver.py`) decodes each request with the official
//! OpenTelemetry protobuf definitions (Debian's python3-opentelemetry-proto), over OTLP/HTTP
//! and OTLP/gRPC, and writes the spans it got; the oracle is what the test asked the client
//! for and what the peers report, never probectl's own output.
//!
//! The same exports through a real OpenTelemetry Collector (the core, built by scripts/setup
//! from Debian's packaging of its Go source) are tested in `tests/collector.rs`; this receiver
//! stays the far end there, since the core Collector has no file exporter.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::otlp::{export_counts, log_body, Receiver, CLIENT, SERVER};
use common::*;
use serde_json::Value;

/// The payload record of `message` ("request" or "response") of a span.
fn payload<'a>(logs: &'a [Value], span: &Value, message: &str) -> &'a Value {
    logs.iter()
        .find(|log| {
            log["span_id"] == span["span_id"]
                && log["attributes"]["probectl.payload.message"] == message
        })
        .unwrap_or_else(|| panic!("no {message} payload for span {span}: {logs:?}"))
}

fn curl(port: u16, path: &str, extra: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sk", "--http1.1"])
        .args(extra)
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl")
}

#[test]
fn server_spans_over_otlp_http_match_what_the_server_served() {
    let receiver = Receiver::start("http");
    let (server, port) = python_server(false);
    let url = receiver.url();
    let trace = Trace::start(
        &[
            "openssl",
            "--pid",
            &server.pid().to_string(),
            "--decode",
            "http",
            "--export",
            &url,
        ],
        &[],
    );
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let sizes = [100u64, 2000, 30_000];
    for (n, size) in sizes.iter().enumerate() {
        let extra: Vec<&str> = if n == 0 {
            vec![
                "-H",
                "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ]
        } else {
            vec![]
        };
        let output = curl(port, &format!("/download/{size}"), &extra);
        assert!(output.status.success());
        // What the server sent, as curl received it.
        assert_eq!(output.stdout.len() as u64, *size);
    }
    std::thread::sleep(Duration::from_millis(300));
    let run = trace.stop_lines();
    assert!(run.status.success(), "{}", run.stderr);
    let (offered, delivered, dropped) = export_counts(&run.report, &run.stderr);
    assert_eq!((offered, delivered, dropped), (3, 3, 0), "{}", run.stderr);
    let spans = receiver.spans();
    assert_eq!(spans.len(), 3, "{spans:?}");
    for (span, size) in spans.iter().zip(sizes) {
        let attributes = &span["attributes"];
        assert_eq!(span["name"], "GET");
        assert_eq!(span["kind"], SERVER, "the traced server answered: {span}");
        assert_eq!(attributes["http.request.method"], "GET");
        assert_eq!(attributes["url.path"], format!("/download/{size}"));
        assert_eq!(attributes["http.response.status_code"], 200);
        assert_eq!(attributes["http.response.body.size"], size);
        // The request's version (curl --http1.1; the server answers in 1.0).
        assert_eq!(attributes["network.protocol.version"], "1.1");
        assert_eq!(attributes["server.port"], port);
        assert_eq!(attributes["client.address"], "127.0.0.1");
        assert_eq!(attributes["user_agent.original"], "curl/7.88.1");
        assert_eq!(span["resource"]["process.pid"], server.pid());
        assert_eq!(span["resource"]["service.name"], "python3");
        assert!(span["end"].as_u64() >= span["start"].as_u64());
        assert_eq!(span["status"], 0);
    }
    // The request's W3C trace context: the span joins that trace, under that parent.
    assert_eq!(spans[0]["trace_id"], &traceparent[3..35]);
    assert_eq!(spans[0]["parent_span_id"], &traceparent[36..52]);
    assert_ne!(spans[1]["trace_id"], spans[2]["trace_id"]);
    assert!(
        run.stderr.contains("3 spans offered, 3 delivered"),
        "{}",
        run.stderr
    );
}

#[test]
fn client_spans_over_otlp_grpc() {
    let receiver = Receiver::start("grpc");
    let (_server, port) = python_server(false);
    let url = receiver.url();
    let address = format!("https://127.0.0.1:{port}/download/777");
    let trace = Trace::start(
        &["openssl", "--decode", "http", "--export", &url],
        &["curl", "-sk", "--http1.1", "-o", "/dev/null", &address],
    );
    let run = trace.wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    let spans = receiver.spans();
    assert_eq!(spans.len(), 1, "{spans:?}\n{}", run.stderr);
    let span = &spans[0];
    assert_eq!(span["kind"], CLIENT, "curl sent the request: {span}");
    assert_eq!(span["attributes"]["url.path"], "/download/777");
    assert_eq!(span["attributes"]["http.response.body.size"], 777);
    assert_eq!(span["attributes"]["server.address"], "127.0.0.1");
    assert_eq!(span["attributes"]["server.port"], port);
    assert_eq!(span["attributes"]["network.peer.port"], port);
    assert_eq!(span["resource"]["process.executable.name"], "curl");
    assert_eq!(export_counts(&run.report, &run.stderr), (1, 1, 0));
}

#[test]
fn a_receiver_down_mid_run_loses_nothing_silently() {
    let mut receiver = Receiver::start("http");
    let (_server, port) = python_server(false);
    let url = receiver.url();
    let done = scratch_file("done");
    // 40 requests over about 4 s; each one that succeeded is counted by the shell (the
    // oracle of how many exchanges there were).
    let script = format!(
        "n=0; for i in $(seq 40); do curl -sfk --http1.1 -o /dev/null https://127.0.0.1:{port}/download/$i && n=$((n+1)); sleep 0.1; done; echo $n > {}",
        done.display()
    );
    let trace = Trace::start(
        &["openssl", "--decode", "http", "--export", &url],
        &["sh", "-c", &script],
    );
    // Down for a second and a half in the middle, then back on the same port.
    std::thread::sleep(Duration::from_millis(1200));
    receiver.stop();
    let down = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    receiver.restart();
    let run = trace.wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(down.elapsed() > Duration::from_millis(1500));
    let made: u64 = std::fs::read_to_string(&done)
        .expect("the loop's count")
        .trim()
        .parse()
        .expect("a number");
    assert_eq!(made, 40, "every curl succeeded");
    let (offered, delivered, dropped) = export_counts(&run.report, &run.stderr);
    // Every exchange was handed over, and each is delivered or dropped by a cause...
    assert_eq!(offered, made, "{}", run.stderr);
    assert_eq!(delivered + dropped, offered, "{}", run.stderr);
    // ... the receiver has exactly the delivered ones, each once...
    let spans = receiver.spans();
    assert_eq!(spans.len() as u64, delivered, "{}", run.stderr);
    let mut ids: Vec<&str> = spans.iter().filter_map(|s| s["span_id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len() as u64, delivered);
    // ... and the outage was met by retries (it is shorter than the backoff's budget, so the
    // spans of its time went out once it was back).
    assert!(
        report_number(&run.report, "/export/retries", &run.stderr) >= 1,
        "{}",
        run.stderr
    );
    assert_eq!(delivered, offered, "{}", run.stderr);
}

#[test]
fn payloads_as_log_records_tied_to_their_spans() {
    let receiver = Receiver::start("http");
    let (server, port) = python_server(false);
    let url = receiver.url();
    let trace = Trace::start(
        &[
            "openssl",
            "--pid",
            &server.pid().to_string(),
            "--decode",
            "http",
            "--max-body",
            "4000",
            "--export",
            &url,
            "--export-payloads",
        ],
        &[],
    );
    // A binary upload (not UTF-8: a bytes body) with a header the oracle knows; the server
    // answers the body's sha256 in hex (a text body).
    let upload: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 256) as u8).collect();
    let upload_file = scratch_file("upload.bin");
    std::fs::write(&upload_file, &upload).expect("upload file");
    let posted = curl(
        port,
        "/upload",
        &[
            "-H",
            "X-Probe-Token: secret-123",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &format!("@{}", upload_file.display()),
        ],
    );
    assert!(posted.status.success());
    // A download longer than --max-body: the record keeps 4000 bytes and says 6000 were sent.
    let download = curl(port, "/download/10000", &[]);
    assert!(download.status.success());
    assert_eq!(download.stdout.len(), 10_000);
    std::thread::sleep(Duration::from_millis(300));
    let run = trace.stop_lines();
    assert!(run.status.success(), "{}", run.stderr);
    let spans = receiver.spans();
    assert_eq!(spans.len(), 2, "{spans:?}");
    let logs = receiver.logs();
    assert_eq!(
        logs.len(),
        4,
        "a request and a response per exchange: {logs:?}"
    );
    let (upload_span, download_span) = (&spans[0], &spans[1]);
    assert_eq!(upload_span["attributes"]["url.path"], "/upload");
    // The upload: the request's body is the file curl sent, the response's what curl got.
    let request = payload(&logs, upload_span, "request");
    assert_eq!(request["trace_id"], upload_span["trace_id"]);
    assert_eq!(request["event_name"], "probectl.http.request");
    assert_eq!(log_body(request), upload, "the request body curl sent");
    assert!(request["body_b64"].is_string(), "binary goes as bytes");
    assert_eq!(
        request["attributes"]["http.request.header.x-probe-token"],
        serde_json::json!(["secret-123"])
    );
    assert_eq!(request["attributes"]["http.request.body.size"], 3000);
    assert_eq!(request["attributes"]["probectl.body.not_kept"], 0);
    assert_eq!(request["attributes"]["probectl.body.complete"], true);
    assert_eq!(request["resource"]["process.pid"], server.pid());
    let response = payload(&logs, upload_span, "response");
    assert_eq!(
        log_body(response),
        posted.stdout,
        "the answer curl received"
    );
    assert!(response["body"].is_string(), "text goes as a string");
    assert_eq!(
        response["attributes"]["http.response.header.content-length"],
        serde_json::json!(["64"])
    );
    // The download: cut at --max-body, and it says so.
    let response = payload(&logs, download_span, "response");
    assert_eq!(log_body(response), download.stdout[..4000]);
    assert_eq!(response["attributes"]["http.response.body.size"], 10_000);
    assert_eq!(response["attributes"]["probectl.body.not_kept"], 6000);
    assert_eq!(
        report_number(&run.report, "/export/payloads/offered", &run.stderr),
        4
    );
    assert_eq!(
        report_number(&run.report, "/export/payloads/delivered", &run.stderr),
        4
    );
    assert_eq!(
        report_number(
            &run.report,
            "/export/payloads/body_bytes_delivered",
            &run.stderr
        ),
        3000 + 64 + 4000
    );
    assert!(
        run.stderr
            .contains("4 payload records offered, 4 delivered (7064 body bytes)"),
        "{}",
        run.stderr
    );
}

#[test]
fn payloads_over_otlp_grpc() {
    let receiver = Receiver::start("grpc");
    let (_server, port) = python_server(false);
    let url = receiver.url();
    let address = format!("https://127.0.0.1:{port}/download/777");
    let output = scratch_file("download.out");
    let trace = Trace::start(
        &[
            "openssl",
            "--decode",
            "http",
            "--export",
            &url,
            "--export-payloads",
        ],
        &[
            "curl",
            "-sk",
            "--http1.1",
            "-o",
            output.to_str().expect("path"),
            &address,
        ],
    );
    let run = trace.wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    let spans = receiver.spans();
    assert_eq!(spans.len(), 1, "{spans:?}\n{}", run.stderr);
    let logs = receiver.logs();
    let response = payload(&logs, &spans[0], "response");
    assert_eq!(
        log_body(response),
        std::fs::read(&output).expect("curl's file"),
        "the body curl wrote"
    );
    let request = payload(&logs, &spans[0], "request");
    assert_eq!(
        request["attributes"]["http.request.header.user-agent"],
        serde_json::json!(["curl/7.88.1"])
    );
    assert_eq!(request["resource"]["process.executable.name"], "curl");
}

#[test]
fn export_payloads_needs_export() {
    let (code, _, stderr) = probectl(&["run", "openssl", "--export-payloads", "--", "true"]);
    assert_eq!(code, 1, "a usage error: {stderr}");
    assert!(stderr.contains("--export <KIND=URL>"), "{stderr}");
}

/// `https://` receivers: the receiver's certificate is signed by a private CA that
/// `--export-ca` names; with the system's roots alone the same receiver is refused, counted.
#[test]
fn tls_receivers_with_export_ca() {
    let (ca, _leaf, _key) = ca_and_leaf();
    let (_server, port) = python_server(false);
    for mode in ["https", "grpcs"] {
        let receiver = Receiver::start(mode);
        let url = receiver.url();
        let address = format!("https://127.0.0.1:{port}/download/321");
        let ca = ca.to_str().expect("path");
        let trace = Trace::start(
            &[
                "openssl",
                "--decode",
                "http",
                "--export",
                &url,
                "--export-ca",
                ca,
                "--export-payloads",
            ],
            &["curl", "-sk", "--http1.1", "-o", "/dev/null", &address],
        );
        let run = trace.wait_lines();
        assert!(run.status.success(), "{mode}: {}", run.stderr);
        let spans = receiver.spans();
        assert_eq!(spans.len(), 1, "{mode}: {spans:?}\n{}", run.stderr);
        assert_eq!(spans[0]["attributes"]["http.response.body.size"], 321);
        assert_eq!(receiver.logs().len(), 2, "{mode}: {}", run.stderr);
        assert_eq!(export_counts(&run.report, &run.stderr), (1, 1, 0), "{mode}");
    }
    // The same receiver, without the CA: every attempt fails on the certificate, and the span
    // is counted as dropped with the error shown.
    let receiver = Receiver::start("https");
    let url = receiver.url();
    let address = format!("https://127.0.0.1:{port}/download/5");
    let trace = Trace::start(
        &["openssl", "--decode", "http", "--export", &url],
        &["curl", "-sk", "--http1.1", "-o", "/dev/null", &address],
    );
    let run = trace.wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(receiver.spans().is_empty());
    let (offered, delivered, dropped) = export_counts(&run.report, &run.stderr);
    assert_eq!((offered, delivered, dropped), (1, 0, 1), "{}", run.stderr);
    assert!(run.stderr.contains("last error"), "{}", run.stderr);
}

#[test]
fn export_ca_must_hold_a_certificate() {
    let not_pem = scratch_file("not-a-ca.pem");
    std::fs::write(&not_pem, "hello").expect("file");
    let (code, _, stderr) = probectl(&[
        "run",
        "openssl",
        "--decode",
        "http",
        "--export",
        "otlp=https://127.0.0.1:1",
        "--export-ca",
        not_pem.to_str().expect("path"),
        "--",
        "true",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no PEM certificate in it"), "{stderr}");
}
