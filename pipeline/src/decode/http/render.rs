//! Writing exchanges: text in the style of `curl -v`, or one JSON object per line.

use std::io::{self, Write};

use base64::Engine as _;
use serde::Serialize;

use super::encoding::{self, Decoded, Outcome};
use super::grpc::{self, Call};
use super::live::{self, SseEvent, Which};
use super::{Exchange, Field, Part, Version};
use crate::output::{format_time, Format};

/// An exchange's own record, when it is over: the whole exchange (exchange mode), or, after
/// live output (`live` says what was written), its end.
pub(super) fn exchange(
    exchange: &Exchange,
    id: u64,
    live: Option<&live::State>,
    format: Format,
    max_body: u64,
    out: &mut dyn Write,
) -> io::Result<()> {
    let call = grpc::decode(exchange);
    match (format, live) {
        (Format::Json, _) => json(exchange, id, call.as_ref(), max_body, out),
        (_, Some(live)) => live_end(exchange, live, call.as_ref(), format, max_body, out),
        // Text and Hex (and any other human format): curl -v style.
        (_, None) => text(exchange, call.as_ref(), format, max_body, out),
    }
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `[name, value]`; an unknown name or value is `null`, and the entry then has a third
/// element: the dynamic table index it referred to.
fn json_field(field: &Field) -> serde_json::Value {
    let text = |bytes: &Option<Vec<u8>>| match bytes {
        Some(bytes) => serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()),
        None => serde_json::Value::Null,
    };
    let mut entry = vec![text(&field.name), text(&field.value)];
    if let Some(index) = field.unknown_index {
        entry.push(index.into());
    }
    serde_json::Value::Array(entry)
}

#[derive(Serialize)]
struct JsonPart {
    headers: Vec<serde_json::Value>,
    body_b64: String,
    /// Bytes the body had; more than `body_b64` holds when over `--max-body`.
    body_len: u64,
    trailers: Vec<serde_json::Value>,
    /// The message was seen to its end.
    complete: bool,
    /// The body with its `Content-Encoding` undone (only when it has one).
    #[serde(skip_serializing_if = "Option::is_none")]
    content_encoding: Option<JsonDecoded>,
}

/// A body's content coding undone (`encoding::decode`).
#[derive(Serialize)]
struct JsonDecoded {
    /// The `Content-Encoding` value as sent.
    coding: String,
    decoded_b64: String,
    decoded_len: u64,
    /// Decoded to its end: the whole body was kept and is a valid stream of its coding.
    complete: bool,
    /// Why not complete (`null` when complete).
    note: Option<String>,
}

impl JsonPart {
    fn new(part: &Part, max_body: u64) -> JsonPart {
        JsonPart {
            headers: part.headers.iter().map(json_field).collect(),
            body_b64: base64(&part.body.data),
            body_len: part.body.len,
            trailers: part.trailers.iter().map(json_field).collect(),
            complete: part.complete,
            content_encoding: decoded_body(part, max_body).map(|decoded| JsonDecoded {
                decoded_b64: base64(&decoded.data),
                decoded_len: decoded.data.len() as u64,
                complete: decoded.outcome == Outcome::Complete,
                note: decoded.outcome.note(),
                coding: decoded.coding,
            }),
        }
    }
}

/// The body of `part` with its content coding undone, when it has one (and a body).
fn decoded_body(part: &Part, max_body: u64) -> Option<Decoded> {
    if part.body.len == 0 {
        return None;
    }
    let coding = part.header("content-encoding")?;
    // A body not seen to its end is cut as much as one over --max-body.
    let cut = part.body.not_kept() > 0 || !part.complete;
    encoding::decode(coding, &part.body.data, cut, max_body)
}

#[derive(Serialize)]
struct JsonConnection<'a> {
    id: u64,
    handle: String,
    fd: Option<i32>,
    transport: Option<&'a str>,
    local: Option<&'a str>,
    remote: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonMessage {
    direction: &'static str,
    compressed: bool,
    data_b64: String,
    /// The length its prefix declared (more than the data when cut).
    len: u64,
}

#[derive(Serialize)]
struct JsonGrpc<'a> {
    service: Option<&'a str>,
    method: Option<&'a str>,
    status: Option<u32>,
    message: Option<&'a str>,
    messages: Vec<JsonMessage>,
}

#[derive(Serialize)]
struct JsonExchange<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    /// The exchange's id in this run (its live records carry it too).
    id: u64,
    version: &'static str,
    method: Option<&'a str>,
    path: Option<&'a str>,
    authority: Option<&'a str>,
    status: Option<u16>,
    /// Interim (1xx) statuses before the final one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    interim: &'a Vec<u16>,
    request: Option<JsonPart>,
    response: Option<JsonPart>,
    duration_ns: u64,
    /// From the request's first call to the response's first call.
    ttfb_ns: Option<u64>,
    stream_id: Option<u32>,
    ts_ns: u64,
    pid: u32,
    tid: u32,
    comm: &'a str,
    /// The group of probes.toml (`group` in JSON).
    #[serde(rename = "group")]
    plugin: &'a str,
    conn: JsonConnection<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<crate::output::JsonContainer<'a>>,
    /// Why the exchange is not complete; `null` when it is.
    incomplete: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc: Option<JsonGrpc<'a>>,
}

fn json_connection(origin: &super::Origin) -> JsonConnection<'_> {
    JsonConnection {
        id: origin.conn.id,
        handle: format!("{:#x}", origin.conn.handle),
        fd: origin.conn.fd,
        transport: origin.conn.transport.as_deref(),
        local: origin.conn.local.as_deref(),
        remote: origin.conn.remote.as_deref(),
    }
}

fn json(
    exchange: &Exchange,
    id: u64,
    call: Option<&Call>,
    max_body: u64,
    out: &mut dyn Write,
) -> io::Result<()> {
    let origin = &exchange.origin;
    let line = JsonExchange {
        kind: "http",
        id,
        version: exchange.version.as_str(),
        method: exchange.method.as_deref(),
        path: exchange.path.as_deref(),
        authority: exchange.authority.as_deref(),
        status: exchange.status,
        interim: &exchange.interim,
        request: exchange
            .request
            .as_ref()
            .map(|part| JsonPart::new(part, max_body)),
        response: exchange
            .response
            .as_ref()
            .map(|part| JsonPart::new(part, max_body)),
        duration_ns: exchange.duration_ns(),
        ttfb_ns: exchange.ttfb_ns(),
        stream_id: exchange.stream_id,
        ts_ns: exchange.ts_ns(),
        pid: origin.pid,
        tid: origin.tid,
        comm: &origin.comm,
        plugin: &origin.plugin,
        conn: JsonConnection {
            id: origin.conn.id,
            handle: format!("{:#x}", origin.conn.handle),
            fd: origin.conn.fd,
            transport: origin.conn.transport.as_deref(),
            local: origin.conn.local.as_deref(),
            remote: origin.conn.remote.as_deref(),
        },
        cgroup: origin.process.as_ref().map(|p| p.cgroup.as_str()),
        container: crate::output::JsonContainer::of(origin.process.as_deref()),
        incomplete: exchange.incomplete.as_deref(),
        grpc: call.map(|call| JsonGrpc {
            service: call.service.as_deref(),
            method: call.method.as_deref(),
            status: call.status,
            message: call.message.as_deref(),
            messages: call
                .messages
                .iter()
                .map(|message| JsonMessage {
                    direction: message.direction.as_str(),
                    compressed: message.compressed,
                    data_b64: base64(&message.data),
                    len: message.len,
                })
                .collect(),
        }),
    };
    let mut bytes = serde_json::to_vec(&line)?;
    bytes.push(b'\n');
    out.write_all(&bytes)
}

fn text(
    exchange: &Exchange,
    call: Option<&Call>,
    format: Format,
    max_body: u64,
    out: &mut dyn Write,
) -> io::Result<()> {
    let origin = &exchange.origin;
    let conn = &origin.conn;
    write!(
        out,
        "=== {} {}[{}/{}] {}{} conn#{} ",
        format_time(exchange.ts_ns()),
        origin.comm,
        origin.pid,
        origin.tid,
        origin.plugin,
        crate::output::identity_suffix(origin.process.as_deref()),
        conn.id
    )?;
    match (&conn.local, &conn.remote) {
        (Some(local), Some(remote)) => write!(out, "{local} -> {remote} ")?,
        _ => write!(out, "handle {:#x} ", conn.handle)?,
    }
    let version = version_text(exchange.version);
    write!(out, "{version}")?;
    if let Some(id) = exchange.stream_id {
        write!(out, " stream {id}")?;
    }
    let duration = exchange.duration_ns();
    writeln!(
        out,
        " ({}.{:03} ms)",
        duration / 1_000_000,
        (duration / 1000) % 1000
    )?;
    let h2 = exchange.version == Version::Http2;
    if let Some(request) = &exchange.request {
        request_head(out, exchange, request)?;
        body(
            out,
            request,
            call,
            grpc::MessageDirection::Request,
            format,
            max_body,
        )?;
        headers(out, '>', &request.trailers, h2, &[])?;
    }
    if let Some(response) = &exchange.response {
        response_head(out, exchange, response)?;
        body(
            out,
            response,
            call,
            grpc::MessageDirection::Response,
            format,
            max_body,
        )?;
        headers(out, '<', &response.trailers, h2, &[])?;
    }
    grpc_line(out, call)?;
    if let Some(reason) = &exchange.incomplete {
        writeln!(out, "* incomplete: {reason}")?;
    }
    Ok(())
}

fn grpc_line(out: &mut dyn Write, call: Option<&Call>) -> io::Result<()> {
    if let Some(call) = call {
        writeln!(
            out,
            "* grpc {}/{}: status {}{}",
            call.service.as_deref().unwrap_or("?"),
            call.method.as_deref().unwrap_or("?"),
            call.status
                .map_or("[not seen]".to_string(), |s| s.to_string()),
            call.message
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

/// `> METHOD PATH VERSION`, the request's headers, `>`.
fn request_head(out: &mut dyn Write, exchange: &Exchange, request: &Part) -> io::Result<()> {
    let version = version_text(exchange.version);
    let h2 = exchange.version == Version::Http2;
    writeln!(
        out,
        "> {} {} {version}",
        exchange.method.as_deref().unwrap_or("[unknown method]"),
        exchange.path.as_deref().unwrap_or("[unknown path]")
    )?;
    headers(out, '>', &request.headers, h2, &[":method", ":path"])?;
    writeln!(out, ">")
}

/// Interim statuses, `< VERSION STATUS REASON`, the response's headers, `<`.
fn response_head(out: &mut dyn Write, exchange: &Exchange, response: &Part) -> io::Result<()> {
    let version = version_text(exchange.version);
    let h2 = exchange.version == Version::Http2;
    if exchange.status.is_none() && response.headers.is_empty() {
        // Joined mid-stream: the body goes on, its head was never seen.
        return writeln!(out, "< [response head not seen]\n<");
    }
    for status in &exchange.interim {
        writeln!(out, "< {version} {status}")?;
    }
    let status = exchange
        .status
        .map_or("[unknown status]".to_string(), |s| s.to_string());
    let version = exchange
        .response_version
        .map_or(version, |version| version_text(version));
    match &exchange.reason {
        Some(reason) if !reason.is_empty() => writeln!(out, "< {version} {status} {reason}")?,
        _ => writeln!(out, "< {version} {status}")?,
    }
    headers(out, '<', &response.headers, h2, &[":status"])?;
    writeln!(out, "<")
}

/// Whether text output shows a part's body piece by piece: not when it must be decoded whole
/// first (a content coding, gRPC's length-prefixed messages).
pub(super) fn streamed_in_text(part: &Part) -> bool {
    let coded = part.header("content-encoding").is_some_and(|value| {
        let value = String::from_utf8_lossy(value).trim().to_ascii_lowercase();
        !value.is_empty() && value != "identity"
    });
    let grpc = part.header("content-type").is_some_and(|value| {
        String::from_utf8_lossy(value)
            .to_ascii_lowercase()
            .starts_with("application/grpc")
    });
    !coded && !grpc
}

/// The line that starts a run of live text of one exchange:
/// `=== TIME comm[pid/tid] group conn#N local -> remote VERSION [stream N] #ID`.
pub(super) fn live_header(
    exchange: &Exchange,
    id: u64,
    ts_ns: u64,
    out: &mut dyn Write,
) -> io::Result<()> {
    let origin = &exchange.origin;
    let conn = &origin.conn;
    write!(
        out,
        "=== {} {}[{}/{}] {}{} conn#{} ",
        format_time(ts_ns),
        origin.comm,
        origin.pid,
        origin.tid,
        origin.plugin,
        crate::output::identity_suffix(origin.process.as_deref()),
        conn.id
    )?;
    match (&conn.local, &conn.remote) {
        (Some(local), Some(remote)) => write!(out, "{local} -> {remote} ")?,
        _ => write!(out, "handle {:#x} ", conn.handle)?,
    }
    write!(out, "{}", version_text(exchange.version))?;
    if let Some(stream) = exchange.stream_id {
        write!(out, " stream {stream}")?;
    }
    writeln!(out, " #{id}")
}

#[derive(Serialize)]
struct JsonHead<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: u64,
    part: &'static str,
    version: &'static str,
    method: Option<&'a str>,
    path: Option<&'a str>,
    authority: Option<&'a str>,
    status: Option<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    interim: &'a Vec<u16>,
    headers: Vec<serde_json::Value>,
    stream_id: Option<u32>,
    ts_ns: u64,
    pid: u32,
    tid: u32,
    comm: &'a str,
    #[serde(rename = "group")]
    plugin: &'a str,
    conn: JsonConnection<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<crate::output::JsonContainer<'a>>,
}

/// A part's head, live: text as in the exchange's record, JSON as an `http_head` record.
pub(super) fn live_head(
    exchange: &Exchange,
    which: Which,
    id: u64,
    format: Format,
    out: &mut dyn Write,
) -> io::Result<()> {
    let part = match which {
        Which::Request => exchange.request.as_ref(),
        Which::Response => exchange.response.as_ref(),
    };
    let Some(part) = part else {
        return Ok(());
    };
    if format != Format::Json {
        return match which {
            Which::Request => request_head(out, exchange, part),
            Which::Response => response_head(out, exchange, part),
        };
    }
    let origin = &exchange.origin;
    let line = JsonHead {
        kind: "http_head",
        id,
        part: which.as_str(),
        version: exchange.version.as_str(),
        method: exchange.method.as_deref(),
        path: exchange.path.as_deref(),
        authority: exchange.authority.as_deref(),
        status: match which {
            Which::Request => None,
            Which::Response => exchange.status,
        },
        interim: &exchange.interim,
        headers: part.headers.iter().map(json_field).collect(),
        stream_id: exchange.stream_id,
        ts_ns: part.first_ns,
        pid: origin.pid,
        tid: origin.tid,
        comm: &origin.comm,
        plugin: &origin.plugin,
        conn: json_connection(origin),
        cgroup: origin.process.as_ref().map(|p| p.cgroup.as_str()),
        container: crate::output::JsonContainer::of(origin.process.as_deref()),
    };
    let mut bytes = serde_json::to_vec(&line)?;
    bytes.push(b'\n');
    out.write_all(&bytes)
}

#[derive(Serialize)]
struct JsonSse<'a> {
    event: Option<&'a str>,
    data: &'a str,
    id: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonPiece<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: u64,
    part: &'static str,
    /// Where the piece starts in the body (de-chunked, as sent).
    offset: u64,
    len: u64,
    data_b64: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sse: Option<JsonSse<'a>>,
    ts_ns: u64,
    pid: u32,
    conn: u64,
}

/// A piece of a body, live: text shows it (a text piece as text, a binary one as `[N bytes]`),
/// JSON writes an `http_body` record; an SSE event's fields are parsed.
#[allow(clippy::too_many_arguments)]
pub(super) fn live_piece(
    exchange: &Exchange,
    which: Which,
    id: u64,
    offset: u64,
    data: &[u8],
    sse: Option<&SseEvent>,
    ts_ns: u64,
    format: Format,
    out: &mut dyn Write,
) -> io::Result<()> {
    if format == Format::Json {
        let line = JsonPiece {
            kind: "http_body",
            id,
            part: which.as_str(),
            offset,
            len: data.len() as u64,
            data_b64: base64(data),
            sse: sse.map(|event| JsonSse {
                event: event.event.as_deref(),
                data: &event.data,
                id: event.id.as_deref(),
            }),
            ts_ns,
            pid: exchange.origin.pid,
            conn: exchange.origin.conn.id,
        };
        let mut bytes = serde_json::to_vec(&line)?;
        bytes.push(b'\n');
        return out.write_all(&bytes);
    }
    if format == Format::Hex {
        hexdump(out, data)
    } else if printable(data) {
        out.write_all(data)?;
        if !data.ends_with(b"\n") {
            writeln!(out)?;
        }
        Ok(())
    } else {
        writeln!(out, "[{} bytes]", data.len())
    }
}

/// The end of an exchange written live (text): what was not shown piece by piece (a coded or
/// gRPC body, whole), trailers, bytes not kept, gRPC, then a `* done` line with the timing.
fn live_end(
    exchange: &Exchange,
    live: &live::State,
    call: Option<&Call>,
    format: Format,
    max_body: u64,
    out: &mut dyn Write,
) -> io::Result<()> {
    let h2 = exchange.version == Version::Http2;
    for (which, part, mark, direction) in [
        (
            Which::Request,
            exchange.request.as_ref(),
            '>',
            grpc::MessageDirection::Request,
        ),
        (
            Which::Response,
            exchange.response.as_ref(),
            '<',
            grpc::MessageDirection::Response,
        ),
    ] {
        let Some(part) = part else {
            continue;
        };
        // A streamed body was shown whole, piece by piece, also past --max-body.
        if !streamed_in_text(part) && (live.written[which as usize] > 0 || part.body.len > 0) {
            body(out, part, call, direction, format, max_body)?;
        }
        headers(out, mark, &part.trailers, h2, &[])?;
    }
    grpc_line(out, call)?;
    let ms = |ns: u64| format!("{}.{:03} ms", ns / 1_000_000, (ns / 1000) % 1000);
    let status = exchange
        .status
        .map_or("[no status]".to_string(), |s| s.to_string());
    let body_len = |part: &Option<Part>| part.as_ref().map_or(0, |p| p.body.len);
    writeln!(
        out,
        "* done #{}: {status}, request body {} bytes, response body {} bytes; time to first byte {}, total {}",
        live.id,
        body_len(&exchange.request),
        body_len(&exchange.response),
        exchange.ttfb_ns().map_or("[not seen]".to_string(), ms),
        ms(exchange.duration_ns())
    )?;
    if let Some(reason) = &exchange.incomplete {
        writeln!(out, "* incomplete: {reason}")?;
    }
    Ok(())
}

fn headers(
    out: &mut dyn Write,
    mark: char,
    fields: &[Field],
    h2: bool,
    skip: &[&str],
) -> io::Result<()> {
    for field in fields {
        if h2 && skip.iter().any(|name| field.is(name)) {
            continue;
        }
        let index = field.unknown_index.unwrap_or(0);
        match (&field.name, &field.value) {
            (Some(name), Some(value)) => {
                writeln!(out, "{mark} {}: {}", escape(name), escape(value))?
            }
            (None, Some(value)) => writeln!(
                out,
                "{mark} [unknown name: dynamic table index {index}]: {}",
                escape(value)
            )?,
            _ => writeln!(out, "{mark} [unknown field: dynamic table index {index}]")?,
        }
    }
    Ok(())
}

/// Header text with control bytes escaped.
fn escape(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                text.push_str(&format!("\\x{:02x}", c as u32));
            } else {
                text.push(c);
            }
        }
        for byte in chunk.invalid() {
            text.push_str(&format!("\\x{byte:02x}"));
        }
    }
    text
}

/// Whether bytes read as text: UTF-8 without control characters other than tab and line ends.
fn printable(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|text| {
        text.chars()
            .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
    })
}

fn body(
    out: &mut dyn Write,
    part: &Part,
    call: Option<&Call>,
    direction: grpc::MessageDirection,
    format: Format,
    max_body: u64,
) -> io::Result<()> {
    if part.body.len == 0 {
        return Ok(());
    }
    if let Some(call) = call {
        for (number, message) in call
            .messages
            .iter()
            .filter(|m| m.direction == direction)
            .enumerate()
        {
            writeln!(
                out,
                "[grpc message {}: {} bytes{}{}]",
                number + 1,
                message.len,
                if message.compressed {
                    ", compressed"
                } else {
                    ""
                },
                if (message.data.len() as u64) < message.len {
                    format!(", {} not kept", message.len - message.data.len() as u64)
                } else {
                    String::new()
                }
            )?;
            if format == Format::Hex {
                hexdump(out, &message.data)?;
            }
        }
    } else {
        let decoded = decoded_body(part, max_body);
        let mut shown: &[u8] = &part.body.data;
        if let Some(decoded) = &decoded {
            let coding = escape(decoded.coding.as_bytes());
            match &decoded.outcome {
                // The body as sent is shown: its coding could not be undone.
                Outcome::Unsupported(_) | Outcome::Failed(_) => writeln!(
                    out,
                    "[{} bytes {coding}: {}]",
                    part.body.len,
                    decoded.outcome.note().unwrap_or_default()
                )?,
                outcome => {
                    shown = &decoded.data;
                    match outcome.note() {
                        None => writeln!(
                            out,
                            "[{} bytes {coding}, {} decompressed]",
                            part.body.len,
                            decoded.data.len()
                        )?,
                        Some(note) => writeln!(
                            out,
                            "[{} bytes {coding}, {} kept, {} decompressed: {note}]",
                            part.body.len,
                            part.body.data.len(),
                            decoded.data.len()
                        )?,
                    }
                }
            }
        }
        if format == Format::Hex {
            hexdump(out, shown)?;
        } else if printable(shown) {
            out.write_all(shown)?;
            if !shown.ends_with(b"\n") {
                writeln!(out)?;
            }
        } else {
            writeln!(out, "[{} bytes]", shown.len())?;
        }
    }
    if part.body.not_kept() > 0 {
        writeln!(
            out,
            "[{} more body bytes not kept (over --max-body, or the connection's limit)]",
            part.body.not_kept()
        )?;
    }
    Ok(())
}

fn hexdump(out: &mut dyn Write, data: &[u8]) -> io::Result<()> {
    for (line, bytes) in data.chunks(16).enumerate() {
        write!(out, "{:08x} ", line * 16)?;
        for column in 0..16 {
            if column == 8 {
                out.write_all(b" ")?;
            }
            match bytes.get(column) {
                Some(byte) => write!(out, " {byte:02x}")?,
                None => out.write_all(b"   ")?,
            }
        }
        out.write_all(b"  |")?;
        for &byte in bytes {
            out.write_all(&[if (0x20..0x7f).contains(&byte) {
                byte
            } else {
                b'.'
            }])?;
        }
        out.write_all(b"|\n")?;
    }
    Ok(())
}

/// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
fn version_text(version: Version) -> &'static str {
    match version {
        Version::Http2 => "HTTP/2",
        Version::Http11 => "HTTP/1.1",
        Version::Http10 => "HTTP/1.0",
    }
}

#[derive(Serialize)]
struct JsonClose {
    code: u16,
    reason: String,
}

#[derive(Serialize)]
struct JsonWebSocket<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    /// `client` or `server`: which end sent it.
    sender: &'static str,
    /// `write` (the traced process sent it) or `read`.
    direction: &'static str,
    opcode: &'static str,
    frames: u32,
    masked: bool,
    compressed: bool,
    /// Payload bytes on the wire (all frames).
    wire_len: u64,
    /// Bytes of the message (inflated, when compressed); more than `data_b64` holds when over
    /// `--max-body`.
    len: u64,
    data_b64: String,
    /// A text message's data as text (when it is valid UTF-8).
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    close: Option<JsonClose>,
    ts_ns: u64,
    duration_ns: u64,
    pid: u32,
    tid: u32,
    comm: &'a str,
    #[serde(rename = "group")]
    plugin: &'a str,
    conn: JsonConnection<'a>,
    incomplete: Option<&'a str>,
    note: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<crate::output::JsonContainer<'a>>,
}

/// One WebSocket message: a JSON line, or a header line and its data.
pub(super) fn websocket(
    message: &super::websocket::Message,
    format: Format,
    out: &mut dyn Write,
) -> io::Result<()> {
    let origin = &message.origin;
    let text = (message.opcode_name() == "text")
        .then(|| std::str::from_utf8(&message.data).ok())
        .flatten();
    if format == Format::Json {
        let line = JsonWebSocket {
            kind: "websocket",
            sender: message.sender.as_str(),
            direction: match message.side {
                super::Side::Read => "read",
                super::Side::Write => "write",
            },
            opcode: message.opcode_name(),
            frames: message.frames,
            masked: message.masked,
            compressed: message.compressed,
            wire_len: message.wire_len,
            len: message.len,
            data_b64: base64(&message.data),
            text,
            close: message
                .close()
                .map(|(code, reason)| JsonClose { code, reason }),
            ts_ns: message.first_ns,
            duration_ns: message.last_ns.saturating_sub(message.first_ns),
            pid: origin.pid,
            tid: origin.tid,
            comm: &origin.comm,
            plugin: &origin.plugin,
            conn: JsonConnection {
                id: origin.conn.id,
                handle: format!("{:#x}", origin.conn.handle),
                fd: origin.conn.fd,
                transport: origin.conn.transport.as_deref(),
                local: origin.conn.local.as_deref(),
                remote: origin.conn.remote.as_deref(),
            },
            incomplete: message.incomplete.as_deref(),
            note: message.note.as_deref(),
            cgroup: origin.process.as_ref().map(|p| p.cgroup.as_str()),
            container: crate::output::JsonContainer::of(origin.process.as_deref()),
        };
        let mut bytes = serde_json::to_vec(&line)?;
        bytes.push(b'\n');
        return out.write_all(&bytes);
    }
    let conn = &origin.conn;
    write!(
        out,
        "=== {} {}[{}/{}] {}{} conn#{} ",
        format_time(message.first_ns),
        origin.comm,
        origin.pid,
        origin.tid,
        origin.plugin,
        crate::output::identity_suffix(origin.process.as_deref()),
        conn.id
    )?;
    match (&conn.local, &conn.remote) {
        (Some(local), Some(remote)) => write!(out, "{local} -> {remote} ")?,
        _ => write!(out, "handle {:#x} ", conn.handle)?,
    }
    let mark = match message.sender {
        super::websocket::Sender::Client => '>',
        super::websocket::Sender::Server => '<',
    };
    let mut details = vec![format!("{} bytes", message.len)];
    if message.masked {
        details.push("masked".into());
    }
    if message.frames > 1 {
        details.push(format!("{} frames", message.frames));
    }
    if message.compressed {
        details.push(format!("deflated: {} bytes sent", message.wire_len));
    }
    write!(
        out,
        "WebSocket {mark} {} ({})",
        message.opcode_name(),
        details.join(", ")
    )?;
    if let Some((code, reason)) = message.close() {
        write!(out, " {code}")?;
        if !reason.is_empty() {
            write!(out, " {}", escape(reason.as_bytes()))?;
        }
        writeln!(out)?;
    } else {
        writeln!(out)?;
        let data = &message.data;
        if !data.is_empty() {
            if format == Format::Hex {
                hexdump(out, data)?;
            } else if text.is_some() || printable(data) {
                out.write_all(data)?;
                if !data.ends_with(b"\n") {
                    writeln!(out)?;
                }
            } else {
                writeln!(out, "[{} bytes]", data.len())?;
            }
        }
    }
    if message.not_kept() > 0 {
        writeln!(
            out,
            "[{} more message bytes not kept (over --max-body)]",
            message.not_kept()
        )?;
    }
    if let Some(note) = &message.note {
        writeln!(out, "* {note}")?;
    }
    if let Some(reason) = &message.incomplete {
        writeln!(out, "* incomplete: {reason}")?;
    }
    Ok(())
}
