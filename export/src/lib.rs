//! `--export otlp=URL`: one OpenTelemetry span per decoded HTTP exchange, sent to an OTLP
//! receiver (an OpenTelemetry Collector) over http/protobuf or gRPC with OpenTelemetry's own
//! exporter crates.
//!
//! The pipeline hands each exchange to [`ExportSink`] as it is written; the sink turns it into
//! a small owned record and puts it on a bounded queue without waiting (a full queue drops it,
//! counted). The exporter thread (its own tokio runtime: the pipeline has none) takes batches
//! off the queue, groups them by process (the resource: host, process, container, pod), and
//! sends them; a failed batch is retried with exponential backoff, then dropped, counted. So
//! a receiver that is down or slow costs a bounded queue and counts, never a stalled trace or
//! unbounded memory, and at the end every exchange is delivered or dropped by a named cause.

mod payload;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::logs::{LogBatch, LogExporter as _, SdkLoggerProvider};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanExporter, SpanLinks,
};
use opentelemetry_sdk::Resource;

use probectl_pipeline::capture::summary::{ExportCounts, PayloadCounts};
use probectl_pipeline::decode::http::{Exchange, ExchangeSink};

/// Spans queued at most (the memory bound while the receiver is down: a span is a few hundred
/// bytes, so about 10 MB).
pub const QUEUE_SPANS: usize = 32_768;
/// Spans sent in one request at most.
const BATCH_SPANS: usize = 1024;
/// `--export-payloads`: payload records queued at most, and the body bytes they may hold
/// together (a body is at most `--max-body`).
pub const QUEUE_PAYLOADS: usize = 8192;
pub const QUEUE_PAYLOAD_BYTES: u64 = 64 << 20;
/// Payload records sent in one request at most, and their body bytes at most (a record
/// larger than that goes alone).
const BATCH_PAYLOADS: usize = 256;
const BATCH_PAYLOAD_BYTES: u64 = 4 << 20;
/// How long a batch waits to fill before it goes.
const BATCH_WAIT: Duration = Duration::from_millis(200);
/// Attempts per batch (the first and its retries), with a backoff that doubles from
/// `BACKOFF_FIRST` up to `BACKOFF_MAX`.
const ATTEMPTS: u32 = 5;
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(4);
/// One request's time limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The wire protocol of the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/HTTP with protobuf bodies (`POST URL/v1/traces`), port 4318 by convention.
    HttpProtobuf,
    /// OTLP/gRPC, port 4317 by convention.
    Grpc,
}

/// `--export KIND=URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    pub protocol: Protocol,
    pub endpoint: String,
    pub queue_spans: usize,
    /// `--export-payloads`: each request's and response's headers and body as a log record
    /// tied to the exchange's span.
    pub payloads: bool,
    /// `--export-ca FILE`: PEM certificates trusted for an `https://` receiver, besides the
    /// system's roots.
    pub ca_file: Option<std::path::PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "--export {0}: give otlp=URL (OTLP over HTTP/protobuf, e.g. otlp=http://127.0.0.1:4318) \
         or otlp-grpc=URL (OTLP over gRPC, e.g. otlp-grpc=http://127.0.0.1:4317)"
    )]
    Syntax(String),
    #[error("--export-ca {path}: cannot read it")]
    CaFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--export-ca {0}: no PEM certificate in it")]
    CaPem(std::path::PathBuf),
    #[error("cannot start the OTLP exporter for {endpoint}: {message}")]
    Build { endpoint: String, message: String },
    #[error("cannot start the exporter's thread")]
    Thread(#[source] std::io::Error),
}

impl ExportOptions {
    /// Parses `otlp=URL` or `otlp-grpc=URL`.
    pub fn parse(text: &str) -> Result<ExportOptions, ExportError> {
        let (kind, url) = text
            .split_once('=')
            .ok_or_else(|| ExportError::Syntax(text.to_string()))?;
        let protocol = match kind {
            "otlp" | "otlp-http" => Protocol::HttpProtobuf,
            "otlp-grpc" => Protocol::Grpc,
            _ => return Err(ExportError::Syntax(text.to_string())),
        };
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(ExportError::Syntax(text.to_string()));
        }
        Ok(ExportOptions {
            protocol,
            endpoint: url.to_string(),
            queue_spans: QUEUE_SPANS,
            payloads: false,
            ca_file: None,
        })
    }

    /// Checks what can be checked before tracing starts: `--export-ca` is readable and holds
    /// a certificate.
    pub fn check(&self) -> Result<(), ExportError> {
        Trust::of(self).map(|_| ())
    }

    /// What the summary calls it.
    pub fn target(&self) -> String {
        match self.protocol {
            Protocol::HttpProtobuf => format!("otlp {}", self.http_url()),
            Protocol::Grpc => format!("otlp-grpc {}", self.endpoint),
        }
    }

    /// The URL spans are posted to: the endpoint, with `/v1/traces` when it has no path.
    fn http_url(&self) -> String {
        if self.has_path() {
            self.endpoint.clone()
        } else {
            format!("{}/v1/traces", self.endpoint.trim_end_matches('/'))
        }
    }

    /// The URL payload log records are posted to: the endpoint with `/v1/logs`; an endpoint
    /// given with the traces' path (`.../v1/traces`) has it replaced.
    fn http_logs_url(&self) -> String {
        match self.endpoint.strip_suffix("/v1/traces") {
            Some(base) => format!("{base}/v1/logs"),
            None if self.has_path() => self.endpoint.clone(),
            None => format!("{}/v1/logs", self.endpoint.trim_end_matches('/')),
        }
    }

    fn has_path(&self) -> bool {
        let after_scheme = self.endpoint.split_once("://").map_or("", |(_, rest)| rest);
        matches!(after_scheme.split_once('/'), Some((_, path)) if !path.is_empty())
    }
}

/// Who made an exchange: the span's resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Process {
    pid: u32,
    comm: String,
    container: Option<String>,
    pod_uid: Option<String>,
    pod: Option<probectl_pipeline::capture::identity::PodNames>,
}

/// An exchange as a span, owned, small, made on the pipeline's thread.
#[derive(Debug, Clone)]
struct SpanRecord {
    process: Process,
    trace_id: TraceId,
    span_id: SpanId,
    parent: SpanId,
    kind: SpanKind,
    name: String,
    start_ns: u64,
    end_ns: u64,
    attributes: Vec<KeyValue>,
    error: Option<String>,
}

/// The counts both sides update.
#[derive(Default)]
struct Counters {
    offered: AtomicU64,
    delivered: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_export_failed: AtomicU64,
    dropped_at_exit: AtomicU64,
    retries: AtomicU64,
    last_error: Mutex<Option<String>>,
    payloads: PayloadCounters,
}

/// `--export-payloads`' counts, and the body bytes queued now (the byte bound).
#[derive(Default)]
struct PayloadCounters {
    offered: AtomicU64,
    delivered: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_export_failed: AtomicU64,
    body_bytes_delivered: AtomicU64,
    queued_bytes: AtomicU64,
}

/// The sink the pipeline's HTTP writer hands exchanges to.
pub struct ExportSink {
    queue: SyncSender<SpanRecord>,
    /// `--export-payloads`: the payload records' own queue (bounded in records and bytes).
    payloads: Option<SyncSender<payload::PayloadRecord>>,
    counters: Arc<Counters>,
    ids: RandomIdGenerator,
}

/// The exporter: its thread and its counts.
pub struct Exporter {
    options: ExportOptions,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    sink: Option<ExportSink>,
}

impl Exporter {
    /// Builds the OTLP exporter and starts its thread. Nothing is sent until spans come.
    pub fn start(options: &ExportOptions) -> Result<Exporter, ExportError> {
        let (queue, spans) = sync_channel(options.queue_spans);
        let (payload_queue, payloads) = if options.payloads {
            let (sender, receiver) = sync_channel(QUEUE_PAYLOADS);
            (Some(sender), Some(receiver))
        } else {
            (None, None)
        };
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| ExportError::Build {
                endpoint: options.endpoint.clone(),
                message: error.to_string(),
            })?;
        let built = {
            // The gRPC client needs the runtime to exist when it is built.
            let _guard = runtime.enter();
            Trust::of(options).and_then(|trust| {
                let logs = match payloads {
                    Some(receiver) => Some((build_logs(options, &trust)?, receiver)),
                    None => None,
                };
                Ok((build(options, &trust)?, logs))
            })
        };
        let (exporter, log_exporter) = match built {
            Ok(built) => built,
            Err(error) => {
                // The caller may be in an async context, where dropping a runtime panics.
                runtime.shutdown_background();
                return Err(error);
            }
        };
        let thread = {
            let counters = counters.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("probectl-export".into())
                .spawn(move || {
                    runtime.block_on(send_loop(exporter, spans, log_exporter, counters, stop));
                })
                .map_err(ExportError::Thread)?
        };
        Ok(Exporter {
            options: options.clone(),
            counters: counters.clone(),
            stop,
            thread: Some(thread),
            sink: Some(ExportSink {
                queue,
                payloads: payload_queue,
                counters,
                ids: RandomIdGenerator::default(),
            }),
        })
    }

    /// The sink for the HTTP writer (once).
    pub fn sink(&mut self) -> Option<Box<dyn ExchangeSink>> {
        self.sink
            .take()
            .map(|sink| Box::new(sink) as Box<dyn ExchangeSink>)
    }

    /// Sends what is queued (for at most `deadline`), stops, and says what became of every
    /// exchange. Call once the pipeline has written its last exchange.
    pub fn finish(mut self, deadline: Duration) -> ExportCounts {
        self.sink = None;
        self.stop.store(true, Ordering::SeqCst);
        let until = Instant::now() + deadline;
        if let Some(thread) = self.thread.take() {
            while !thread.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
            // A thread still sending past the deadline is left to the end of the process;
            // what it had not delivered is counted below as dropped at exit.
        }
        let c = &self.counters;
        let offered = c.offered.load(Ordering::SeqCst);
        let delivered = c.delivered.load(Ordering::SeqCst);
        let dropped_queue_full = c.dropped_queue_full.load(Ordering::SeqCst);
        let dropped_export_failed = c.dropped_export_failed.load(Ordering::SeqCst);
        // Whatever is neither delivered nor dropped by another cause did not go out in time.
        let dropped_at_exit =
            offered.saturating_sub(delivered + dropped_queue_full + dropped_export_failed);
        c.dropped_at_exit.store(dropped_at_exit, Ordering::SeqCst);
        ExportCounts {
            target: self.options.target(),
            offered,
            delivered,
            dropped_queue_full,
            dropped_export_failed,
            dropped_at_exit,
            retries: c.retries.load(Ordering::SeqCst),
            last_error: c.last_error.lock().ok().and_then(|e| e.clone()),
            queue_capacity: self.options.queue_spans as u64,
            payloads: self.options.payloads.then(|| {
                let p = &c.payloads;
                let offered = p.offered.load(Ordering::SeqCst);
                let delivered = p.delivered.load(Ordering::SeqCst);
                let dropped_queue_full = p.dropped_queue_full.load(Ordering::SeqCst);
                let dropped_export_failed = p.dropped_export_failed.load(Ordering::SeqCst);
                PayloadCounts {
                    offered,
                    delivered,
                    dropped_queue_full,
                    dropped_export_failed,
                    dropped_at_exit: offered
                        .saturating_sub(delivered + dropped_queue_full + dropped_export_failed),
                    body_bytes_delivered: p.body_bytes_delivered.load(Ordering::SeqCst),
                    queue_capacity: QUEUE_PAYLOADS as u64,
                    queue_bytes: QUEUE_PAYLOAD_BYTES,
                }
            }),
        }
    }
}

/// The certificates of `--export-ca`, read once at the start (PEM).
#[derive(Clone, Default)]
struct Trust {
    ca_pem: Option<Vec<u8>>,
}

impl Trust {
    fn of(options: &ExportOptions) -> Result<Trust, ExportError> {
        let Some(path) = &options.ca_file else {
            return Ok(Trust::default());
        };
        let pem = std::fs::read(path).map_err(|source| ExportError::CaFile {
            path: path.clone(),
            source,
        })?;
        if !pem
            .windows(b"-----BEGIN CERTIFICATE-----".len())
            .any(|w| w == b"-----BEGIN CERTIFICATE-----")
        {
            return Err(ExportError::CaPem(path.clone()));
        }
        Ok(Trust { ca_pem: Some(pem) })
    }

    /// The async HTTP client (the exporter's default is a blocking one, which may not run
    /// inside the runtime): rustls with the system's roots and `--export-ca`'s.
    fn http_client(&self, endpoint: &str) -> Result<reqwest::Client, ExportError> {
        let mut builder = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
        if let Some(pem) = &self.ca_pem {
            let certificates =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|error| ExportError::Build {
                    endpoint: endpoint.to_string(),
                    message: format!("--export-ca: {error}"),
                })?;
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        builder.build().map_err(|error| ExportError::Build {
            endpoint: endpoint.to_string(),
            message: error.to_string(),
        })
    }

    /// The gRPC client's TLS, for an `https://` endpoint: the system's roots and
    /// `--export-ca`'s.
    fn grpc_tls(&self) -> opentelemetry_otlp::tonic_types::transport::ClientTlsConfig {
        use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
        let config = ClientTlsConfig::new().with_native_roots();
        match &self.ca_pem {
            Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
            None => config,
        }
    }
}

/// Builds an OTLP exporter of `options`: `$exporter` is `SpanExporter` or `LogExporter`
/// (builders of different types with the same methods, hence a macro), `$http_url` the URL
/// of its signal for OTLP/HTTP.
macro_rules! build_exporter {
    ($exporter:ident, $options:expr, $trust:expr, $http_url:expr) => {{
        let (options, trust): (&ExportOptions, &Trust) = ($options, $trust);
        let built = match options.protocol {
            Protocol::HttpProtobuf => opentelemetry_otlp::$exporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint($http_url)
                .with_timeout(REQUEST_TIMEOUT)
                .with_http_client(trust.http_client(&options.endpoint)?)
                .build(),
            Protocol::Grpc => {
                let builder = opentelemetry_otlp::$exporter::builder()
                    .with_tonic()
                    .with_endpoint(options.endpoint.clone())
                    .with_timeout(REQUEST_TIMEOUT);
                if options.endpoint.starts_with("https://") {
                    builder.with_tls_config(trust.grpc_tls()).build()
                } else {
                    builder.build()
                }
            }
        };
        built.map_err(|error| ExportError::Build {
            endpoint: options.endpoint.clone(),
            message: error.to_string(),
        })
    }};
}

/// Builds the OTLP span exporter of `options`.
fn build(
    options: &ExportOptions,
    trust: &Trust,
) -> Result<opentelemetry_otlp::SpanExporter, ExportError> {
    build_exporter!(SpanExporter, options, trust, options.http_url())
}

/// Builds the OTLP log exporter of `options` (`--export-payloads`).
fn build_logs(
    options: &ExportOptions,
    trust: &Trust,
) -> Result<opentelemetry_otlp::LogExporter, ExportError> {
    build_exporter!(LogExporter, options, trust, options.http_logs_url())
}

impl ExchangeSink for ExportSink {
    fn exchange(&mut self, exchange: &Exchange, client: Option<bool>) {
        self.counters.offered.fetch_add(1, Ordering::Relaxed);
        let record = span_of(exchange, client, &self.ids);
        if let Some(queue) = &self.payloads {
            let records =
                payload::records_of(exchange, &record.process, record.trace_id, record.span_id);
            for payload in records {
                offer_payload(queue, &self.counters.payloads, payload);
            }
        }
        match self.queue.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {
                // The thread is gone (it never stops before the sink does): counted as an
                // export failure, never lost silently.
                self.counters
                    .dropped_export_failed
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Queues a payload record unless the queue is full in records or in body bytes (counted).
fn offer_payload(
    queue: &SyncSender<payload::PayloadRecord>,
    counters: &PayloadCounters,
    record: payload::PayloadRecord,
) {
    counters.offered.fetch_add(1, Ordering::Relaxed);
    let bytes = record.body_bytes();
    // Reserve the bytes first: the exporter's thread gives them back as it takes records.
    let before = counters.queued_bytes.fetch_add(bytes, Ordering::SeqCst);
    if before + bytes > QUEUE_PAYLOAD_BYTES && before > 0 {
        counters.queued_bytes.fetch_sub(bytes, Ordering::SeqCst);
        counters.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
        return;
    }
    match queue.try_send(record) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            counters.queued_bytes.fetch_sub(bytes, Ordering::SeqCst);
            counters.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
        }
        Err(TrySendError::Disconnected(_)) => {
            counters.queued_bytes.fetch_sub(bytes, Ordering::SeqCst);
            counters
                .dropped_export_failed
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A header's value as text.
fn header(part: Option<&probectl_pipeline::decode::http::Part>, name: &str) -> Option<String> {
    part?
        .header(name)
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

/// `traceparent` (W3C Trace Context): the trace and parent span a request carried.
fn traceparent(value: &str) -> Option<(TraceId, SpanId)> {
    let mut fields = value.trim().split('-');
    let _version = fields.next()?;
    let trace = TraceId::from_hex(fields.next()?).ok()?;
    let span = SpanId::from_hex(fields.next()?).ok()?;
    (trace != TraceId::INVALID && span != SpanId::INVALID).then_some((trace, span))
}

/// `host[:port]` split, with the scheme's port when none is given.
fn host_port(text: &str) -> (String, Option<i64>) {
    if let Some(rest) = text.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return (host.to_string(), port);
        }
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host.to_string(), port.parse().ok()),
        _ => (text.to_string(), None),
    }
}

/// The span of an exchange, with the stable HTTP semantic conventions' attributes.
fn span_of(exchange: &Exchange, client: Option<bool>, ids: &RandomIdGenerator) -> SpanRecord {
    let origin = &exchange.origin;
    let request = exchange.request.as_ref();
    let response = exchange.response.as_ref();
    let server = client == Some(false);
    let mut attributes = Vec::with_capacity(16);
    let method = exchange.method.clone().unwrap_or_else(|| "_OTHER".into());
    attributes.push(KeyValue::new("http.request.method", method.clone()));
    if let Some(status) = exchange.status {
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
    }
    attributes.push(KeyValue::new("url.scheme", "https"));
    if let Some(path) = exchange.path.as_deref() {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        attributes.push(KeyValue::new("url.path", path.to_string()));
        if !query.is_empty() {
            attributes.push(KeyValue::new("url.query", query.to_string()));
        }
    }
    attributes.push(KeyValue::new("network.protocol.name", "http"));
    attributes.push(KeyValue::new(
        "network.protocol.version",
        exchange.version.as_str(),
    ));
    let (local, remote) = (origin.conn.local.as_deref(), origin.conn.remote.as_deref());
    // The server's name: the request's authority (Host), else the server end's address.
    let server_end = if server { local } else { remote };
    let authority = exchange
        .authority
        .clone()
        .or_else(|| header(request, "host"))
        .or_else(|| server_end.map(str::to_string));
    if let Some(authority) = authority {
        let (host, port) = host_port(&authority);
        attributes.push(KeyValue::new("server.address", host));
        let port = port.or_else(|| server_end.and_then(|end| host_port(end).1));
        if let Some(port) = port {
            attributes.push(KeyValue::new("server.port", port));
        }
    }
    if let Some(peer) = remote {
        let (address, port) = host_port(peer);
        if server {
            attributes.push(KeyValue::new("client.address", address.clone()));
            if let Some(port) = port {
                attributes.push(KeyValue::new("client.port", port));
            }
        }
        attributes.push(KeyValue::new("network.peer.address", address));
        if let Some(port) = port {
            attributes.push(KeyValue::new("network.peer.port", port));
        }
    }
    if let Some(agent) = header(request, "user-agent") {
        attributes.push(KeyValue::new("user_agent.original", agent));
    }
    if let Some(part) = request {
        attributes.push(KeyValue::new(
            "http.request.body.size",
            part.body.len as i64,
        ));
    }
    if let Some(part) = response {
        attributes.push(KeyValue::new(
            "http.response.body.size",
            part.body.len as i64,
        ));
    }
    attributes.push(KeyValue::new(
        "probectl.connection.id",
        origin.conn.id as i64,
    ));
    if let Some(reason) = exchange.incomplete.as_deref() {
        attributes.push(KeyValue::new("probectl.incomplete", reason.to_string()));
    }
    // Errors as the conventions say: 5xx always, 4xx on the client's side only.
    let error = match exchange.status {
        Some(status) if status >= 500 || (!server && status >= 400) => Some(status.to_string()),
        _ => exchange
            .incomplete
            .as_ref()
            .map(|_| "incomplete".to_string()),
    };
    if let Some(error) = &error {
        attributes.push(KeyValue::new("error.type", error.clone()));
    }
    let (trace_id, parent) = header(request, "traceparent")
        .as_deref()
        .and_then(traceparent)
        .unwrap_or_else(|| (ids.new_trace_id(), SpanId::INVALID));
    let start_ns = exchange.ts_ns();
    SpanRecord {
        process: Process {
            pid: origin.pid,
            comm: origin.comm.clone(),
            container: origin.process.as_ref().and_then(|p| p.container.clone()),
            pod_uid: origin.process.as_ref().and_then(|p| p.pod_uid.clone()),
            pod: origin.process.as_ref().and_then(|p| p.pod.clone()),
        },
        trace_id,
        span_id: ids.new_span_id(),
        parent,
        kind: match client {
            Some(false) => SpanKind::Server,
            Some(true) => SpanKind::Client,
            None => SpanKind::Internal,
        },
        name: method,
        start_ns,
        end_ns: start_ns.saturating_add(exchange.duration_ns()),
        attributes,
        error,
    }
}

fn time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

/// The resource of a process: host, process, container, pod.
fn resource(process: &Process, host: &str) -> Resource {
    let mut attributes = vec![
        KeyValue::new("service.name", process.comm.clone()),
        KeyValue::new("host.name", host.to_string()),
        KeyValue::new("process.pid", i64::from(process.pid)),
        KeyValue::new("process.executable.name", process.comm.clone()),
        KeyValue::new("telemetry.distro.name", "probectl"),
    ];
    if let Some(id) = &process.container {
        attributes.push(KeyValue::new("container.id", id.clone()));
    }
    if let Some(uid) = &process.pod_uid {
        attributes.push(KeyValue::new("k8s.pod.uid", uid.clone()));
    }
    if let Some(pod) = &process.pod {
        attributes.push(KeyValue::new("k8s.pod.name", pod.name.clone()));
        attributes.push(KeyValue::new("k8s.namespace.name", pod.namespace.clone()));
        if let Some(container) = &pod.container {
            attributes.push(KeyValue::new("k8s.container.name", container.clone()));
        }
    }
    Resource::builder_empty()
        .with_attributes(attributes)
        .build()
}

fn span_data(record: SpanRecord, scope: &InstrumentationScope) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            record.trace_id,
            record.span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: record.parent,
        parent_span_is_remote: record.parent != SpanId::INVALID,
        span_kind: record.kind,
        name: Cow::Owned(record.name),
        start_time: time(record.start_ns),
        end_time: time(record.end_ns),
        attributes: record.attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match record.error {
            Some(error) => Status::error(error),
            None => Status::Unset,
        },
        instrumentation_scope: scope.clone(),
    }
}

/// The host's name, for the resource.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_default()
}

/// The exporter thread: batches from the queues, sent by process, retried, counted.
async fn send_loop(
    mut exporter: opentelemetry_otlp::SpanExporter,
    spans: Receiver<SpanRecord>,
    mut logs: Option<(
        opentelemetry_otlp::LogExporter,
        Receiver<payload::PayloadRecord>,
    )>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    let host = host_name();
    let scope = InstrumentationScope::builder("probectl")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    // The SDK makes log records only through a logger; this provider has no processor (the
    // records go to the exporter below, not through the SDK's pipeline).
    let provider = SdkLoggerProvider::builder().build();
    let logger = opentelemetry::logs::LoggerProvider::logger(&provider, "probectl");
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let batch = take_batch(&spans, stopping);
        let mut sent_payloads = false;
        if let Some((log_exporter, payloads)) = &mut logs {
            // Payloads come with their exchanges' spans: taken after them, without waiting.
            loop {
                let batch = take_payloads(payloads, &counters.payloads);
                if batch.is_empty() {
                    break;
                }
                sent_payloads = true;
                send_payloads(
                    log_exporter,
                    batch,
                    &logger,
                    &scope,
                    &host,
                    &counters,
                    &stop,
                )
                .await;
            }
        }
        if batch.is_empty() {
            if stopping && !sent_payloads {
                return;
            }
            continue;
        }
        for (process, records) in by_process(batch, |record| &record.process) {
            let count = records.len() as u64;
            let data: Vec<SpanData> = records
                .into_iter()
                .map(|record| span_data(record, &scope))
                .collect();
            exporter.set_resource(&resource(&process, &host));
            let sent = with_retries(&counters, &stop, || exporter.export(data.clone())).await;
            if sent {
                counters.delivered.fetch_add(count, Ordering::Relaxed);
            } else {
                counters
                    .dropped_export_failed
                    .fetch_add(count, Ordering::Relaxed);
            }
        }
    }
}

/// A batch grouped by process: one request each, under that process's resource.
fn by_process<T>(batch: Vec<T>, process: impl Fn(&T) -> &Process) -> BTreeMap<Process, Vec<T>> {
    let mut groups: BTreeMap<Process, Vec<T>> = BTreeMap::new();
    for record in batch {
        groups
            .entry(process(&record).clone())
            .or_default()
            .push(record);
    }
    groups
}

/// Sends `export` until it succeeds: `ATTEMPTS` times with a doubling backoff, once when
/// stopping (the deadline is the caller's). Failures are counted as retries and the last error
/// kept.
async fn with_retries<F, Fut>(counters: &Counters, stop: &AtomicBool, mut export: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = opentelemetry_sdk::error::OTelSdkResult>,
{
    let attempts = if stop.load(Ordering::SeqCst) {
        1
    } else {
        ATTEMPTS
    };
    let mut backoff = BACKOFF_FIRST;
    for attempt in 1..=attempts {
        match export().await {
            Ok(()) => return true,
            Err(error) => {
                if let Ok(mut last) = counters.last_error.lock() {
                    *last = Some(error.to_string());
                }
                if attempt < attempts {
                    counters.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
    false
}

/// Sends a batch of payload records, by process, as OTLP log records.
async fn send_payloads(
    exporter: &mut opentelemetry_otlp::LogExporter,
    batch: Vec<payload::PayloadRecord>,
    logger: &opentelemetry_sdk::logs::SdkLogger,
    scope: &InstrumentationScope,
    host: &str,
    counters: &Counters,
    stop: &AtomicBool,
) {
    for (process, records) in by_process(batch, |record| &record.process) {
        let count = records.len() as u64;
        let bytes: u64 = records.iter().map(payload::PayloadRecord::body_bytes).sum();
        let records: Vec<_> = records
            .into_iter()
            .map(|record| payload::sdk_record(logger, record))
            .collect();
        exporter.set_resource(&resource(&process, host));
        let exporter: &opentelemetry_otlp::LogExporter = exporter;
        let records = &records;
        let sent = with_retries(counters, stop, move || {
            let pairs: Vec<_> = records.iter().map(|record| (record, scope)).collect();
            async move { exporter.export(LogBatch::new(&pairs)).await }
        })
        .await;
        let p = &counters.payloads;
        if sent {
            p.delivered.fetch_add(count, Ordering::Relaxed);
            p.body_bytes_delivered.fetch_add(bytes, Ordering::Relaxed);
        } else {
            p.dropped_export_failed.fetch_add(count, Ordering::Relaxed);
        }
    }
}

/// The payload records waiting, up to a batch's bounds (never waits); their bytes leave the
/// queue's count as they are taken.
fn take_payloads(
    payloads: &Receiver<payload::PayloadRecord>,
    counters: &PayloadCounters,
) -> Vec<payload::PayloadRecord> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while batch.len() < BATCH_PAYLOADS && bytes < BATCH_PAYLOAD_BYTES {
        match payloads.try_recv() {
            Ok(record) => {
                bytes += record.body_bytes();
                counters
                    .queued_bytes
                    .fetch_sub(record.body_bytes(), Ordering::SeqCst);
                batch.push(record);
            }
            Err(_) => break,
        }
    }
    batch
}

/// Up to `BATCH_SPANS` records: waits `BATCH_WAIT` for the first (not at all when stopping),
/// then takes what is there.
fn take_batch(spans: &Receiver<SpanRecord>, stopping: bool) -> Vec<SpanRecord> {
    let mut batch = Vec::new();
    if !stopping {
        match spans.recv_timeout(BATCH_WAIT) {
            Ok(record) => batch.push(record),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return batch,
        }
        // A moment for more to come, so that a steady stream goes in full batches.
        let until = Instant::now() + BATCH_WAIT;
        while batch.len() < BATCH_SPANS {
            let left = until.saturating_duration_since(Instant::now());
            match spans.recv_timeout(left) {
                Ok(record) => batch.push(record),
                Err(_) => break,
            }
        }
        return batch;
    }
    while batch.len() < BATCH_SPANS {
        match spans.try_recv() {
            Ok(record) => batch.push(record),
            Err(_) => break,
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_options_parse() {
        let http = ExportOptions::parse("otlp=http://127.0.0.1:4318").expect("http");
        assert_eq!(http.protocol, Protocol::HttpProtobuf);
        assert_eq!(http.http_url(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(http.http_logs_url(), "http://127.0.0.1:4318/v1/logs");
        let path = ExportOptions::parse("otlp=http://c.example/otlp/v1/traces").expect("path");
        assert_eq!(path.http_url(), "http://c.example/otlp/v1/traces");
        assert_eq!(path.http_logs_url(), "http://c.example/otlp/v1/logs");
        let other = ExportOptions::parse("otlp=http://c.example/ingest").expect("other path");
        assert_eq!(other.http_logs_url(), "http://c.example/ingest");
        let tls = ExportOptions::parse("otlp=https://c.example").expect("https");
        assert_eq!(tls.http_url(), "https://c.example/v1/traces");
        let grpc = ExportOptions::parse("otlp-grpc=http://127.0.0.1:4317").expect("grpc");
        assert_eq!(grpc.protocol, Protocol::Grpc);
        assert!(ExportOptions::parse("jaeger=http://x").is_err());
        assert!(ExportOptions::parse("otlp=127.0.0.1:4318").is_err());
    }

    #[test]
    fn traceparent_and_authority() {
        let (trace, span) =
            traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
        assert_eq!(format!("{trace}"), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(format!("{span}"), "00f067aa0ba902b7");
        assert!(traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        assert!(traceparent("garbage").is_none());
        assert_eq!(
            host_port("example.com:8443"),
            ("example.com".into(), Some(8443))
        );
        assert_eq!(host_port("[::1]:443"), ("::1".into(), Some(443)));
        assert_eq!(host_port("example.com"), ("example.com".into(), None));
    }
}
