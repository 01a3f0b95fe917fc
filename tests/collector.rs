//! `--export` to a real OpenTelemetry Collector: the Collector core (0.152) that
//! `scripts/setup` builds from Debian's packaging of its Go source
//! (`tests/peers/otelcol/main.go`), with its OTLP receiver over HTTP and gRPC. The core has no
//! file exporter (that is in contrib, which no registry reachable here ships with an OTLP
//! receiver), so the Collector sends what it got on with its otlp_http exporter to the
//! project's OTLP receiver (`tests/peers/otlp_receiver.py`, the official protobuf
//! definitions), which writes it as JSON. The oracle is what the client asked, what the server
//! served and what came out of the far side of the Collector, never probectl's own output.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::otlp::{export_counts, log_body, Collector, Holding, Receiver, CLIENT, SERVER};
use common::*;
use serde_json::Value;

fn curl(port: u16, path: &str, extra: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sk", "--http1.1"])
        .args(extra)
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl")
}

/// The span whose `url.path` is `path`.
fn span_of<'a>(spans: &'a [Value], path: &str) -> &'a Value {
    spans
        .iter()
        .find(|span| span["attributes"]["url.path"] == path)
        .unwrap_or_else(|| panic!("no span for {path}: {spans:?}"))
}

/// A traced server's spans through the Collector as deployed (memory_limiter, batch, the
/// exporter's queue), over OTLP/HTTP: what comes out downstream is what curl asked and got.
#[test]
fn server_spans_through_the_collector_over_otlp_http() {
    let downstream = Receiver::start("http");
    let mut collector = Collector::start(Holding::Batched, &downstream);
    let (server, port) = python_server(false);
    let url = collector.http_url();
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
    for size in sizes {
        let header = format!("traceparent: {traceparent}");
        let extra: &[&str] = if size == 100 { &["-H", &header] } else { &[] };
        let output = curl(port, &format!("/download/{size}"), extra);
        assert!(output.status.success());
        assert_eq!(output.stdout.len() as u64, size, "what curl received");
    }
    std::thread::sleep(Duration::from_millis(300));
    let run = trace.stop_lines();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(
        export_counts(&run.report, &run.stderr),
        (3, 3, 0),
        "{}",
        run.stderr
    );
    // The Collector's graceful stop sends on what its batch processor and queue hold.
    collector.stop();
    let spans = downstream.spans();
    assert_eq!(spans.len(), 3, "{spans:?}\n{}", collector.log_text());
    for size in sizes {
        let span = span_of(&spans, &format!("/download/{size}"));
        let attributes = &span["attributes"];
        assert_eq!(span["name"], "GET");
        assert_eq!(span["kind"], SERVER, "the traced server answered: {span}");
        assert_eq!(attributes["http.request.method"], "GET");
        assert_eq!(attributes["http.response.status_code"], 200);
        assert_eq!(attributes["http.response.body.size"], size);
        assert_eq!(attributes["network.protocol.version"], "1.1");
        assert_eq!(attributes["server.port"], port);
        assert_eq!(attributes["client.address"], "127.0.0.1");
        assert_eq!(attributes["user_agent.original"], "curl/7.88.1");
        assert_eq!(span["resource"]["process.pid"], server.pid());
        assert_eq!(span["resource"]["service.name"], "python3");
        assert!(span["end"].as_u64() >= span["start"].as_u64());
        assert_eq!(span["status"], 0);
    }
    // The trace context curl sent survives the Collector.
    let first = span_of(&spans, "/download/100");
    assert_eq!(first["trace_id"], &traceparent[3..35]);
    assert_eq!(first["parent_span_id"], &traceparent[36..52]);
}

/// curl's span and its payload log records through the Collector over OTLP/gRPC (its traces
/// and logs pipelines): the response body downstream is the file curl wrote.
#[test]
fn client_span_and_payloads_through_the_collector_over_otlp_grpc() {
    let downstream = Receiver::start("http");
    let mut collector = Collector::start(Holding::Batched, &downstream);
    let (_server, port) = python_server(false);
    let url = collector.grpc_url();
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
            "-H",
            "X-Probe-Token: through-the-collector",
            "-o",
            output.to_str().expect("path"),
            &address,
        ],
    );
    let run = trace.wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(export_counts(&run.report, &run.stderr), (1, 1, 0));
    assert_eq!(
        report_number(&run.report, "/export/payloads/delivered", &run.stderr),
        2
    );
    collector.stop();
    let spans = downstream.spans();
    assert_eq!(spans.len(), 1, "{spans:?}\n{}", collector.log_text());
    let span = &spans[0];
    assert_eq!(span["kind"], CLIENT, "curl sent the request: {span}");
    assert_eq!(span["attributes"]["url.path"], "/download/777");
    assert_eq!(span["attributes"]["http.response.body.size"], 777);
    assert_eq!(span["attributes"]["server.port"], port);
    assert_eq!(span["resource"]["process.executable.name"], "curl");
    let logs = downstream.logs();
    assert_eq!(logs.len(), 2, "a request and a response: {logs:?}");
    for log in &logs {
        assert_eq!(log["span_id"], span["span_id"], "tied to the span: {log}");
        assert_eq!(log["trace_id"], span["trace_id"]);
    }
    let request = logs
        .iter()
        .find(|log| log["event_name"] == "probectl.http.request")
        .expect("the request record");
    assert_eq!(
        request["attributes"]["http.request.header.x-probe-token"],
        serde_json::json!(["through-the-collector"])
    );
    let response = logs
        .iter()
        .find(|log| log["event_name"] == "probectl.http.response")
        .expect("the response record");
    let written = std::fs::read(&output).expect("curl's file");
    assert_eq!(written.len(), 777);
    assert_eq!(log_body(response), written, "the body curl wrote");
}

/// The Collector stopped (SIGTERM) mid-run and started again on the same ports while the
/// client goes on: every exchange is delivered or dropped by a named cause, and what probectl
/// counts as delivered is what came out of the Collector, each once.
///
/// The traffic runs in three phases that the test steps through (no timing): exchanges 1-15
/// with the Collector up, 16-25 after it stopped, 26-40 after it is back. Each Collector run
/// sends on to its own downstream receiver (A before the stop, B after the restart), so B holds
/// exactly what probectl delivered after the restart. The Collector holds nothing
/// ([`Holding::Synchronous`]): its OTLP receiver answers only once the spans are downstream, so
/// what it would hold at its stop (its own matter, not probectl's) cannot blur the count.
#[test]
fn the_collector_stopped_and_restarted_mid_run_loses_nothing_silently() {
    let before = Receiver::start("http");
    let after = Receiver::start("http");
    let mut collector = Collector::start(Holding::Synchronous, &before);
    let (_server, port) = python_server(false);
    let url = collector.http_url();
    let [first_done, stopped, second_done, restarted, count] =
        ["first", "stopped", "second", "restarted", "count"].map(scratch_file);
    let wait = |file: &Path| format!("while [ ! -e {} ]; do sleep 0.02; done", file.display());
    // Each exchange that succeeded is counted by the shell (the oracle of how many there were).
    let script = format!(
        "n=0; for i in $(seq 40); do
           if [ $i = 16 ]; then touch {first}; {wait_stopped}; fi
           if [ $i = 26 ]; then touch {second}; {wait_restarted}; fi
           curl -sfk --http1.1 -o /dev/null https://127.0.0.1:{port}/download/$i && n=$((n+1))
           sleep 0.1
         done; echo $n > {count}",
        first = first_done.display(),
        second = second_done.display(),
        wait_stopped = wait(&stopped),
        wait_restarted = wait(&restarted),
        count = count.display(),
    );
    let trace = Trace::start(
        &["openssl", "--decode", "http", "--export", &url],
        &["sh", "-c", &script],
    );
    wait_for_file(&first_done);
    collector.stop();
    std::fs::write(&stopped, "").expect("marker");
    wait_for_file(&second_done);
    collector.restart(&after);
    std::fs::write(&restarted, "").expect("marker");
    let run = trace.wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    let made: u64 = std::fs::read_to_string(&count)
        .expect("the loop's count")
        .trim()
        .parse()
        .expect("a number");
    assert_eq!(made, 40, "every curl succeeded");

    // probectl's account: every exchange offered, each delivered or dropped by a cause.
    let (offered, delivered, dropped) = export_counts(&run.report, &run.stderr);
    assert_eq!(offered, made, "{}", run.stderr);
    assert_eq!(delivered + dropped, offered, "{}", run.stderr);
    // The outage was met: exports failed against the stopped Collector and were retried.
    assert!(
        report_number(&run.report, "/export/retries", &run.stderr) >= 1,
        "{}",
        run.stderr
    );

    // What came out of the Collector: each exchange's span at most once, and together exactly
    // what probectl counted delivered.
    let paths = |spans: &[Value]| -> Vec<u64> {
        spans
            .iter()
            .map(|span| {
                let attributes = &span["attributes"];
                let path = attributes["url.path"].as_str().expect("url.path");
                let i: u64 = path
                    .strip_prefix("/download/")
                    .and_then(|i| i.parse().ok())
                    .unwrap_or_else(|| panic!("a path the client did not ask: {span}"));
                assert_eq!(attributes["http.response.body.size"], i, "{span}");
                assert_eq!(attributes["http.response.status_code"], 200, "{span}");
                i
            })
            .collect()
    };
    let (a, b) = (paths(&before.spans()), paths(&after.spans()));
    let all: BTreeSet<u64> = a.iter().chain(&b).copied().collect();
    assert_eq!(all.len(), a.len() + b.len(), "a span twice: {a:?} {b:?}");
    assert_eq!(
        (a.len() + b.len()) as u64,
        delivered,
        "downstream before the stop {a:?}, after the restart {b:?}\n{}\n{}",
        run.stderr,
        collector.log_text()
    );
    // Not vacuous: spans went through both Collector runs; the first one got only exchanges
    // made before its stop; every exchange made after the restart went through the second.
    assert!(!a.is_empty() && a.iter().all(|&i| i <= 15), "{a:?}");
    for i in 26..=40 {
        assert!(
            b.contains(&i),
            "exchange {i} after the restart: {b:?}\n{}",
            run.stderr
        );
    }
    assert!(
        run.stderr
            .contains(&format!("{offered} spans offered, {delivered} delivered")),
        "{}",
        run.stderr
    );
}
