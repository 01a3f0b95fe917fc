//! `--export-payloads`: the bytes of each request and response as OpenTelemetry log records,
//! tied to the exchange's span by its trace and span ids. Opt-in: payloads are the sensitive
//! part (credentials, personal data), so they leave the host only when asked for.
//!
//! One record per message seen: its headers as `http.request.header.<name>` /
//! `http.response.header.<name>` attributes (the semantic conventions' names, values as string
//! lists), its body as the record's body (a string when it is UTF-8, bytes otherwise). A body
//! is what `--decode http` kept of it (`--max-body`, the memory budget); the bytes it had on the
//! wire and those not kept are attributes, so a cut body is never mistaken for a whole one.

use std::collections::BTreeMap;
use std::time::SystemTime;

use opentelemetry::logs::{AnyValue, LogRecord, Logger, Severity};
use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
use opentelemetry::Key;
use opentelemetry_sdk::logs::{SdkLogRecord, SdkLogger};

use probectl_pipeline::decode::http::{Exchange, Part};

use crate::{time, Process};

/// Which message of the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Message {
    Request,
    Response,
}

impl Message {
    fn name(self) -> &'static str {
        match self {
            Message::Request => "request",
            Message::Response => "response",
        }
    }
}

/// A message's payload, owned, made on the pipeline's thread.
#[derive(Debug, Clone)]
pub(crate) struct PayloadRecord {
    pub(crate) process: Process,
    trace_id: TraceId,
    span_id: SpanId,
    message: Message,
    time_ns: u64,
    /// Header names (lower case) and their values, in order, repeated names together.
    headers: BTreeMap<String, Vec<String>>,
    body: Vec<u8>,
    /// Body bytes on the wire, and those not kept.
    body_len: u64,
    body_not_kept: u64,
    complete: bool,
    connection: u64,
    method: Option<String>,
    path: Option<String>,
    status: Option<u16>,
}

impl PayloadRecord {
    /// Body bytes held (the queue's byte bound counts these).
    pub(crate) fn body_bytes(&self) -> u64 {
        self.body.len() as u64
    }
}

/// The payload records of an exchange: its request and its response, where seen.
pub(crate) fn records_of(
    exchange: &Exchange,
    process: &Process,
    trace_id: TraceId,
    span_id: SpanId,
) -> Vec<PayloadRecord> {
    [
        (Message::Request, exchange.request.as_ref()),
        (Message::Response, exchange.response.as_ref()),
    ]
    .into_iter()
    .filter_map(|(message, part)| Some((message, part?)))
    .map(|(message, part)| PayloadRecord {
        process: process.clone(),
        trace_id,
        span_id,
        message,
        time_ns: part.first_ns,
        headers: headers(part),
        body: part.body.data.clone(),
        body_len: part.body.len,
        body_not_kept: part.body.not_kept(),
        complete: part.complete,
        connection: exchange.origin.conn.id,
        method: exchange.method.clone(),
        path: exchange.path.clone(),
        status: exchange.status,
    })
    .collect()
}

/// Header fields by lower-case name (fields whose name or value HPACK could not recover are
/// left out: the span's `probectl.incomplete` says why an exchange is not whole).
fn headers(part: &Part) -> BTreeMap<String, Vec<String>> {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for field in part.headers.iter().chain(&part.trailers) {
        let (Some(name), Some(value)) = (&field.name, &field.value) else {
            continue;
        };
        // HTTP/2 pseudo-headers (:method, :path, ...) are the span's attributes already.
        if name.starts_with(b":") {
            continue;
        }
        by_name
            .entry(String::from_utf8_lossy(name).to_ascii_lowercase())
            .or_default()
            .push(String::from_utf8_lossy(value).into_owned());
    }
    by_name
}

/// The SDK's log record of a payload (made on the exporter's thread).
pub(crate) fn sdk_record(logger: &SdkLogger, payload: PayloadRecord) -> SdkLogRecord {
    let mut record = logger.create_log_record();
    let message = payload.message.name();
    record.set_event_name(match payload.message {
        Message::Request => "probectl.http.request",
        Message::Response => "probectl.http.response",
    });
    record.set_timestamp(time(payload.time_ns));
    record.set_observed_timestamp(SystemTime::now());
    record.set_severity_number(Severity::Info);
    record.set_severity_text("INFO");
    record.set_trace_context(payload.trace_id, payload.span_id, Some(TraceFlags::SAMPLED));
    record.add_attribute("probectl.payload.message", message);
    record.add_attribute("probectl.connection.id", payload.connection as i64);
    if let Some(method) = payload.method {
        record.add_attribute("http.request.method", method);
    }
    if let Some(path) = payload.path {
        record.add_attribute("url.path", path);
    }
    if let Some(status) = payload.status {
        record.add_attribute("http.response.status_code", i64::from(status));
    }
    for (name, values) in payload.headers {
        let values: Vec<AnyValue> = values.into_iter().map(AnyValue::from).collect();
        record.add_attribute(
            Key::from(format!("http.{message}.header.{name}")),
            AnyValue::ListAny(Box::new(values)),
        );
    }
    record.add_attribute(format!("http.{message}.body.size"), payload.body_len as i64);
    record.add_attribute("probectl.body.not_kept", payload.body_not_kept as i64);
    record.add_attribute("probectl.body.complete", payload.complete);
    record.set_body(match String::from_utf8(payload.body) {
        Ok(text) => AnyValue::from(text),
        Err(error) => AnyValue::Bytes(Box::new(error.into_bytes())),
    });
    record
}
