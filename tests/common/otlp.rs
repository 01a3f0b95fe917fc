//! The OTLP receiver of the tests (`tests/peers/otlp_receiver.py`): it decodes each request
//! with the official OpenTelemetry protobuf definitions and writes what it got as JSON lines.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::*;

/// `SPAN_KIND_SERVER` and `SPAN_KIND_CLIENT` of the OTLP protobuf.
pub const SERVER: u64 = 2;
pub const CLIENT: u64 = 3;

/// A run's export counts from its `--report`: (offered, delivered, dropped by any cause).
pub fn export_counts(report: &Value, stderr: &str) -> (u64, u64, u64) {
    let offered = report_number(report, "/export/offered", stderr);
    let delivered = report_number(report, "/export/delivered", stderr);
    let dropped = report_number(report, "/export/dropped_queue_full", stderr)
        + report_number(report, "/export/dropped_export_failed", stderr)
        + report_number(report, "/export/dropped_at_exit", stderr);
    (offered, delivered, dropped)
}

/// A log record's body as bytes (a string body, or bytes in base64).
pub fn log_body(record: &Value) -> Vec<u8> {
    use base64::Engine;
    match (&record["body"], &record["body_b64"]) {
        (Value::String(text), _) => text.as_bytes().to_vec(),
        (_, Value::String(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64 body"),
        _ => panic!("a log record without a body: {record}"),
    }
}

/// The receiver, killed when dropped.
pub struct Receiver {
    guard: Option<Guard>,
    mode: &'static str,
    port: u16,
    out: PathBuf,
}

impl Receiver {
    pub fn start(mode: &'static str) -> Receiver {
        let mut receiver = Receiver {
            guard: None,
            mode,
            port: free_port(),
            out: scratch_file("spans.json"),
        };
        receiver.restart();
        receiver
    }

    /// Starts (again) on the same port, appending to the same file.
    pub fn restart(&mut self) {
        let mut command = Command::new("/usr/bin/python3");
        command
            .arg(peer("otlp_receiver.py"))
            .arg(self.mode)
            .arg(self.port.to_string())
            .arg(&self.out);
        if self.mode.ends_with('s') {
            let (_ca, leaf, key) = ca_and_leaf();
            command.arg(leaf).arg(key);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("otlp_receiver.py");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("receiver output");
        assert_eq!(line.trim(), "listening", "the receiver did not start");
        self.guard = Some(Guard(child));
    }

    pub fn stop(&mut self) {
        self.guard = None;
    }

    pub fn url(&self) -> String {
        match self.mode {
            "http" => format!("otlp=http://127.0.0.1:{}", self.port),
            "https" => format!("otlp=https://127.0.0.1:{}", self.port),
            "grpcs" => format!("otlp-grpc=https://127.0.0.1:{}", self.port),
            _ => format!("otlp-grpc=http://127.0.0.1:{}", self.port),
        }
    }

    pub fn spans(&self) -> Vec<Value> {
        read_spans(&self.out)
    }

    /// The log records it got (the receiver writes them next to the spans).
    pub fn logs(&self) -> Vec<Value> {
        let mut path = self.out.clone().into_os_string();
        path.push(".logs");
        read_spans(Path::new(&path))
    }
}

pub fn read_spans(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("span JSON"))
        .collect()
}

/// The OpenTelemetry Collector that `scripts/setup` builds from the Collector core's own Go
/// source (Debian sid's golang-opentelemetry-collector-dev; `tests/peers/otelcol/main.go`).
pub fn collector_binary() -> PathBuf {
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/collector/otelcol-probectl");
    assert!(
        binary.is_file(),
        "{} is missing: run scripts/setup, which builds the OpenTelemetry Collector",
        binary.display()
    );
    binary
}

/// How the Collector's pipelines hold what they get.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// As deployed: memory_limiter and batch processors, the exporter's queue and retries.
    /// What it holds is sent on at its graceful stop (SIGTERM).
    Batched,
    /// Nothing held: no batch processor, no queue, so the OTLP receiver answers only once the
    /// exporter has handed the data to the downstream receiver. An answer probectl counts as
    /// delivered then means the spans are already downstream.
    Synchronous,
}

/// A real OpenTelemetry Collector: an OTLP receiver (HTTP and gRPC) whose traces and logs
/// pipelines end in the otlp_http exporter to a downstream [`Receiver`] (the core Collector
/// has no file exporter: it is in contrib). Killed when dropped.
pub struct Collector {
    guard: Option<Guard>,
    holding: Holding,
    http_port: u16,
    grpc_port: u16,
    config: PathBuf,
    log: PathBuf,
    /// Where its current run's part of `log` starts.
    run_start: usize,
}

impl Collector {
    pub fn start(holding: Holding, downstream: &Receiver) -> Collector {
        let mut collector = Collector {
            guard: None,
            holding,
            http_port: free_port(),
            grpc_port: free_port(),
            config: scratch_file("otelcol.yaml"),
            log: scratch_file("otelcol.log"),
            run_start: 0,
        };
        collector.restart(downstream);
        collector
    }

    /// Starts (again) on the same ports, exporting to `downstream`; returns once its log says
    /// that it accepts data.
    pub fn restart(&mut self, downstream: &Receiver) {
        assert!(self.guard.is_none(), "the Collector is running");
        assert_eq!(downstream.mode, "http", "the otlp_http exporter's receiver");
        let (processors, holding) = match self.holding {
            Holding::Batched => (
                "[memory_limiter, batch]",
                "    sending_queue:\n      queue_size: 10000\n",
            ),
            Holding::Synchronous => (
                "[]",
                "    sending_queue:\n      enabled: false\n    retry_on_failure:\n      enabled: false\n",
            ),
        };
        let config = format!(
            "receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{http}
      grpc:
        endpoint: 127.0.0.1:{grpc}
processors:
  memory_limiter:
    check_interval: 1s
    limit_mib: 512
  batch:
    timeout: 200ms
exporters:
  otlp_http:
    endpoint: http://127.0.0.1:{downstream}
{holding}service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      processors: {processors}
      exporters: [otlp_http]
    logs:
      receivers: [otlp]
      processors: {processors}
      exporters: [otlp_http]
",
            http = self.http_port,
            grpc = self.grpc_port,
            downstream = downstream.port,
        );
        std::fs::write(&self.config, config).expect("Collector config");
        // One log for all its runs (a failure shows them all); this run's part starts here.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("Collector log");
        self.run_start = log.metadata().expect("log size").len() as usize;
        let child = Command::new(collector_binary())
            .arg("--config")
            .arg(format!("file:{}", self.config.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("the Collector");
        let mut guard = Guard(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.this_run().contains("Everything is ready") {
            if let Ok(Some(status)) = guard.0.try_wait() {
                panic!("the Collector exited ({status}):\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "the Collector did not start:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.guard = Some(guard);
    }

    /// Stops it as an orchestrator does (SIGTERM: its graceful shutdown, which sends on what
    /// it holds) and waits for its exit.
    pub fn stop(&mut self) {
        let mut guard = self.guard.take().expect("the Collector is running");
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        unsafe { libc::kill(guard.pid() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = guard.0.try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the Collector did not stop:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{status}:\n{}", self.log_text());
        assert!(
            self.this_run().contains("Shutdown complete."),
            "{}",
            self.log_text()
        );
    }

    /// `--export` for its OTLP/HTTP receiver.
    pub fn http_url(&self) -> String {
        format!("otlp=http://127.0.0.1:{}", self.http_port)
    }

    /// `--export` for its OTLP/gRPC receiver.
    pub fn grpc_url(&self) -> String {
        format!("otlp-grpc=http://127.0.0.1:{}", self.grpc_port)
    }

    /// The log of its last (or current) run.
    fn this_run(&self) -> String {
        self.log_text()
            .get(self.run_start..)
            .unwrap_or("")
            .to_string()
    }

    /// Its log, every run.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
