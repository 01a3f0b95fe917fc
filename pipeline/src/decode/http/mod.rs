//! `--decode http`: HTTP/1.x, HTTP/2 and gRPC exchanges decoded from the captured streams.
//!
//! [`HttpWriter`] is an [`EventWriter`]: it receives every event in per-connection,
//! per-direction stream order, detects the protocol of each connection from its bytes, and
//! writes one record per exchange (request and response) instead of one per TLS call.
//! Connections that are neither HTTP/1 nor HTTP/2 are written raw, as without `--decode`.
//! A jump in a stream's offset (bytes lost) ends the exchanges in progress as incomplete and
//! the decoder resynchronises on the next message or frame it recognises: nothing is guessed.

pub mod encoding;
pub mod grpc;
pub mod h1;
pub mod h2;
pub mod hpack;
pub(crate) mod hpack_tables;
pub mod live;
mod render;
#[cfg(test)]
mod tests;
pub mod websocket;

use std::collections::HashMap;
use std::io;

use crate::budget::MemoryBudget;
use crate::output::{ConnectionView, Event, EventWriter, Format, Output, Renderer};
use crate::Direction;
pub use hpack::Field;

/// Default of `--max-body`: bytes kept per body; the rest is counted.
pub const DEFAULT_MAX_BODY: u64 = 1024 * 1024;

/// Which protocols `--decode` decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decode {
    /// HTTP (and WebSocket), live or one record per exchange.
    Http(live::Mode),
}

/// The connection an exchange belongs to, owned (the events' views are borrowed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connection {
    pub id: u64,
    pub handle: u64,
    pub fd: Option<i32>,
    pub transport: Option<String>,
    pub local: Option<String>,
    pub remote: Option<String>,
}

impl Connection {
    fn from_view(view: &ConnectionView<'_>) -> Connection {
        Connection {
            id: view.id,
            handle: view.handle,
            fd: view.fd,
            transport: view.transport.map(str::to_string),
            local: view.local.map(str::to_string),
            remote: view.remote.map(str::to_string),
        }
    }
}

/// Who made the calls an exchange was decoded from (the first call of its request, or of its
/// response when the request was not seen).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub plugin: String,
    pub conn: Connection,
    /// Who the process is (cgroup, container), when known.
    pub process: Option<std::sync::Arc<crate::capture::identity::Identity>>,
}

/// What a connection's decoder keeps of bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `--max-body`: bytes kept per body.
    pub max_body: u64,
    /// Body bytes kept at most by one connection, all exchanges in flight together (pipelined
    /// HTTP/1 requests, multiplexed HTTP/2 streams): the memory bound.
    pub connection_bodies: u64,
    /// Live output: body bytes past the limits are handed over (`Body::overflow`) instead of
    /// only counted, so that a stream longer than `--max-body` is still shown piece by piece.
    pub live: bool,
}

impl Limits {
    pub fn new(max_body: u64) -> Limits {
        Limits {
            max_body,
            connection_bodies: max_body.max(32 << 20),
            live: false,
        }
    }
}

/// A body as kept: at most `--max-body` bytes of it, and how long it really was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Body {
    pub data: Vec<u8>,
    /// Bytes the body had on the wire (after de-chunking); more than `data` when over the limit.
    pub len: u64,
    /// Live output only: bytes past the limits that arrived since the writer last looked (it
    /// takes them after each call, so this holds at most one call's bytes).
    pub(crate) overflow: Vec<u8>,
    /// Bytes under `--max-body` not kept all the same: the connection's bodies or the memory
    /// budget of all connections were full (the rest of `not_kept` is over `--max-body`).
    pub over_budget: u64,
}

impl Body {
    /// Adds body bytes: kept up to `limits.max_body`, and while the connection holds less
    /// than `limits.connection_bodies` bytes of bodies in all (`held` now); always counted.
    fn push(&mut self, bytes: &[u8], limits: Limits, held: u64) {
        self.len += bytes.len() as u64;
        let under_max_body = (limits.max_body as usize)
            .saturating_sub(self.data.len())
            .min(bytes.len());
        let kept = under_max_body.min(limits.connection_bodies.saturating_sub(held) as usize);
        self.over_budget += (under_max_body - kept) as u64;
        self.data.extend_from_slice(&bytes[..kept]);
        if limits.live {
            self.overflow.extend_from_slice(&bytes[kept..]);
        }
    }

    /// Bytes of the body not kept (over `--max-body`).
    pub fn not_kept(&self) -> u64 {
        self.len - self.data.len() as u64
    }
}

/// A request or a response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Part {
    pub headers: Vec<Field>,
    pub body: Body,
    pub trailers: Vec<Field>,
    /// Wall-clock times of the first and last call that carried it.
    pub first_ns: u64,
    pub last_ns: u64,
    /// The whole message was seen (to its end).
    pub complete: bool,
}

impl Part {
    fn started(ts_ns: u64) -> Part {
        Part {
            first_ns: ts_ns,
            last_ns: ts_ns,
            ..Part::default()
        }
    }

    /// The value of the first known header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find_map(|field| {
            field
                .name
                .as_deref()
                .filter(|n| n.eq_ignore_ascii_case(name.as_bytes()))
                .and(field.value.as_deref())
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
    Http2,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "1.0",
            Version::Http11 => "1.1",
            Version::Http2 => "2",
        }
    }
}

/// One request and its response, as decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The request's version (the response's, when the request was not seen).
    pub version: Version,
    /// HTTP/1: the version the response's status line gave, which may differ from the
    /// request's (a 1.0 server answering a 1.1 request).
    pub response_version: Option<Version>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub authority: Option<String>,
    pub status: Option<u16>,
    /// HTTP/1 reason phrase.
    pub reason: Option<String>,
    /// Interim (1xx) statuses before the final response.
    pub interim: Vec<u16>,
    pub request: Option<Part>,
    pub response: Option<Part>,
    pub stream_id: Option<u32>,
    pub origin: Origin,
    /// Why the exchange is not complete (bytes lost, connection closed first, ...).
    pub incomplete: Option<String>,
    /// Which exchange of its connection it is (HTTP/1: its place in the order of requests;
    /// HTTP/2: its stream id): with the connection id, the key of live output.
    pub(crate) key: u64,
}

impl Exchange {
    /// Body bytes kept for it.
    pub fn body_bytes(&self) -> u64 {
        [&self.request, &self.response]
            .into_iter()
            .flatten()
            .map(|part| part.body.data.len() as u64)
            .sum()
    }

    /// Bytes held for it (headers and bodies).
    pub fn held_bytes(&self) -> usize {
        [&self.request, &self.response]
            .into_iter()
            .flatten()
            .map(|part| {
                part.body.data.len()
                    + part
                        .headers
                        .iter()
                        .chain(&part.trailers)
                        .map(|f| {
                            f.name.as_ref().map_or(0, Vec::len)
                                + f.value.as_ref().map_or(0, Vec::len)
                        })
                        .sum::<usize>()
            })
            .sum()
    }

    /// An empty exchange of `version` (the decoders fill it in; the gRPC fuzz target builds
    /// its own).
    pub fn new(version: Version, origin: Origin) -> Exchange {
        Exchange {
            version,
            response_version: None,
            method: None,
            path: None,
            authority: None,
            status: None,
            reason: None,
            interim: Vec::new(),
            request: None,
            response: None,
            stream_id: None,
            origin,
            incomplete: None,
            key: 0,
        }
    }

    /// When it started: its request's first call, or its response's.
    pub fn ts_ns(&self) -> u64 {
        self.request
            .as_ref()
            .or(self.response.as_ref())
            .map_or(0, |part| part.first_ns)
    }

    /// Time to first byte: from the request's first call to the response's first call
    /// (`None` when either was not seen).
    pub fn ttfb_ns(&self) -> Option<u64> {
        let request = self.request.as_ref()?;
        let response = self.response.as_ref()?;
        Some(response.first_ns.saturating_sub(request.first_ns))
    }

    /// From the request's first call to the last call of the exchange.
    pub fn duration_ns(&self) -> u64 {
        let end = [self.request.as_ref(), self.response.as_ref()]
            .into_iter()
            .flatten()
            .map(|part| part.last_ns)
            .max()
            .unwrap_or(0);
        end.saturating_sub(self.ts_ns())
    }

    /// Marks it incomplete for `reason` (the first reason stays).
    fn mark_incomplete(&mut self, reason: &str) {
        if self.incomplete.is_none() {
            self.incomplete = Some(reason.to_string());
        }
    }
}

/// Where a call's bytes go: the side of the connection it belongs to, and its context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Read = 0,
    Write = 1,
}

impl Side {
    fn of(direction: Direction) -> Side {
        match direction {
            Direction::Read => Side::Read,
            Direction::Write => Side::Write,
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn other(self) -> Side {
        match self {
            Side::Read => Side::Write,
            Side::Write => Side::Read,
        }
    }
}

/// What a protocol decoder is given with each run of bytes.
pub(crate) struct Input<'a> {
    pub side: Side,
    pub data: &'a [u8],
    pub ts_ns: u64,
    pub origin: &'a Origin,
}

/// What a connection turned out to carry.
enum Protocol {
    /// Not recognised yet: events are written raw, and each event's start is tried again.
    Unknown,
    /// Written raw for the rest of the connection (after an HTTP/1 `Upgrade`).
    Raw,
    Http1(Box<h1::Decoder>),
    Http2(Box<h2::Decoder>),
    /// After a `101` to `Upgrade: websocket`: frames decoded into messages.
    WebSocket(Box<websocket::Decoder>),
}

impl Protocol {
    /// Bytes its decoder holds (buffers, bodies, tables).
    fn held_bytes(&self) -> usize {
        match self {
            Protocol::Http1(decoder) => decoder.held_bytes(),
            Protocol::Http2(decoder) => decoder.held_bytes(),
            Protocol::WebSocket(decoder) => decoder.held_bytes(),
            Protocol::Unknown | Protocol::Raw => 0,
        }
    }

    /// Bytes of bodies its decoder holds.
    fn body_bytes(&self) -> u64 {
        match self {
            Protocol::Http1(decoder) => decoder.body_bytes(),
            Protocol::Http2(decoder) => decoder.body_bytes(),
            Protocol::WebSocket(_) | Protocol::Unknown | Protocol::Raw => 0,
        }
    }

    /// Bodies in flight may hold `bytes` in all (WebSocket messages are not held whole).
    fn limit_bodies(&mut self, bytes: u64) {
        match self {
            Protocol::Http1(decoder) => decoder.limits.connection_bodies = bytes,
            Protocol::Http2(decoder) => decoder.limits.connection_bodies = bytes,
            Protocol::WebSocket(_) | Protocol::Unknown | Protocol::Raw => {}
        }
    }
}

struct ConnectionState {
    protocol: Protocol,
    /// Bytes written raw while the protocol was not known yet.
    raw_bytes: u64,
    /// Where each direction's stream continues (read, write): a larger offset is a gap.
    next_offset: [Option<u64>; 2],
}

/// Counts shown on stderr at the end of the run, and in the report.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub exchanges: u64,
    pub incomplete: u64,
    pub connections_http1: u64,
    pub connections_http2: u64,
    pub connections_raw: u64,
    /// Body bytes over `--max-body`, counted and not kept.
    pub body_bytes_not_kept: u64,
    /// Of those, bytes under `--max-body` not kept for the memory bounds (the connection's
    /// 32 MiB of bodies, or the budget of all connections: `--memory-budget`).
    pub body_bytes_over_budget: u64,
    /// Gaps (lost bytes) met inside decoded connections.
    pub gaps: u64,
    /// Bytes skipped while looking for the next message or frame after a gap or a join.
    pub bytes_skipped: u64,
    /// Connections upgraded to WebSocket, and the messages decoded on them.
    pub connections_websocket: u64,
    pub websocket_messages: u64,
    /// WebSocket directions written raw after a loss or a frame that is not one.
    pub websocket_raw_directions: u64,
    /// HTTP/1 connections joined mid-stream (decoded from a boundary after bytes shown raw),
    /// and the bytes shown raw before it.
    pub joined_mid_stream: u64,
    pub joined_raw_bytes: u64,
}

/// Linux's default range of ephemeral ports (`net.ipv4.ip_local_port_range`): a client's end
/// of a connection has one.
const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 32768..=60999;

/// Whether the traced end of a connection is its server, when the ports say so: one end's port
/// is in the ephemeral range (a client's) and the other's is not (a listening port). `None`
/// when the ports are not known or both are alike (a test server on an ephemeral port).
fn traced_is_server(conn: &ConnectionView<'_>) -> Option<bool> {
    let port = |address: Option<&str>| {
        address
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, port)| port.parse::<u16>().ok())
    };
    let local = EPHEMERAL_PORTS.contains(&port(conn.local)?);
    let remote = EPHEMERAL_PORTS.contains(&port(conn.remote)?);
    (local != remote).then_some(remote)
}

/// Receives every exchange the decoder completes, as it is written (the OpenTelemetry
/// exporter): a sink must not block (it queues, and counts what it cannot).
pub trait ExchangeSink: Send {
    /// `client`: whether the traced process sent the request (`None`: not known).
    fn exchange(&mut self, exchange: &Exchange, client: Option<bool>);
}

/// The `--decode http` writer.
pub struct HttpWriter {
    format: Format,
    limits: Limits,
    raw: Renderer,
    connections: HashMap<u64, ConnectionState>,
    done: Vec<Exchange>,
    /// WebSocket messages decoded, written after the exchanges of the same event.
    messages: Vec<websocket::Message>,
    /// Live output, or one record per exchange.
    mode: live::Mode,
    /// What was written of each exchange in progress, by (connection, exchange key).
    live: HashMap<(u64, u64), live::State>,
    /// The next exchange id.
    next_id: u64,
    /// The exchange the last text lines belong to (a new one starts with its `===` line).
    last_text: Option<u64>,
    pub stats: Stats,
    /// Whether the end-of-run counts go to stderr (off in tests).
    report: bool,
    /// What the decoders of all connections hold, against `--memory-budget`.
    budget: MemoryBudget,
    /// Where completed exchanges also go (`--export`).
    sink: Option<Box<dyn ExchangeSink>>,
    /// Connections removed since the last write of exchanges: the side their requests were
    /// sent on (emptied at every write, so as many as one call ends at most).
    ended_client: HashMap<u64, Side>,
    /// `--export`: the side each connection's requests are sent on, once its decoder knows.
    client_sides: HashMap<u64, Side>,
}

impl HttpWriter {
    pub fn new(format: Format, max_body: u64) -> HttpWriter {
        HttpWriter {
            format,
            limits: Limits::new(max_body),
            raw: Renderer::new(format),
            connections: HashMap::new(),
            done: Vec::new(),
            messages: Vec::new(),
            mode: live::Mode::Exchange,
            live: HashMap::new(),
            next_id: 1,
            last_text: None,
            stats: Stats::default(),
            report: true,
            budget: MemoryBudget::default(),
            sink: None,
            ended_client: HashMap::new(),
            client_sides: HashMap::new(),
        }
    }

    /// Hands every completed exchange to `sink` too.
    pub fn with_sink(mut self, sink: Box<dyn ExchangeSink>) -> HttpWriter {
        self.sink = Some(sink);
        self
    }

    /// Whether the traced process is the client of connection `id`: the side its decoder
    /// sends requests on, else (a connection already gone) the end with the higher port.
    fn traced_is_client(&self, origin: &Origin) -> Option<bool> {
        let id = origin.conn.id;
        let side = self
            .client_sides
            .get(&id)
            .or_else(|| self.ended_client.get(&id))
            .copied();
        match side {
            Some(side) => Some(side == Side::Write),
            None => {
                let port = |address: Option<&str>| {
                    address
                        .and_then(|a| a.rsplit_once(':'))
                        .and_then(|(_, port)| port.parse::<u16>().ok())
                };
                Some(port(origin.conn.local.as_deref())? > port(origin.conn.remote.as_deref())?)
            }
        }
    }

    /// The side a connection's decoder sends requests on, when it knows.
    fn client_of(protocol: &Protocol) -> Option<Side> {
        match protocol {
            Protocol::Http1(decoder) => Some(decoder.request_side()),
            Protocol::Http2(decoder) => decoder.client_side(),
            _ => None,
        }
    }

    /// Removes a connection's state, keeping (for the exporter, until the next write) which
    /// side its requests were sent on.
    fn remove_connection(&mut self, id: u64) -> Option<ConnectionState> {
        let state = self.connections.remove(&id)?;
        if let Some(side) = self.client_sides.remove(&id) {
            self.ended_client.insert(id, side);
        }
        Some(state)
    }

    /// With a memory budget of `limit` bytes for all connections (`--memory-budget`).
    pub fn with_budget(mut self, limit: u64) -> HttpWriter {
        self.budget = MemoryBudget::new(limit);
        self
    }

    /// The memory budget: its limit, and what is held now and at most.
    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// With other limits (tests).
    pub fn with_limits(mut self, limits: Limits) -> HttpWriter {
        self.limits = limits;
        self
    }

    /// Live output (heads and body pieces as they arrive) or one record per exchange.
    pub fn with_mode(mut self, mode: live::Mode) -> HttpWriter {
        self.mode = mode;
        self.limits.live = mode == live::Mode::Live;
        self
    }

    /// Without the end-of-run report on stderr.
    pub fn quiet(mut self) -> HttpWriter {
        self.report = false;
        self
    }

    /// Bytes the decoders hold (buffers, bodies, tables), for the memory bound's tests.
    pub fn held_bytes(&self) -> usize {
        self.connections
            .values()
            .map(|state| state.protocol.held_bytes())
            .sum::<usize>()
            + self
                .live
                .values()
                .map(|state| state.sse.capacity())
                .sum::<usize>()
    }

    fn write_done(&mut self, out: &mut dyn Output) -> io::Result<()> {
        for mut exchange in std::mem::take(&mut self.done) {
            self.stats.exchanges += 1;
            if self.sink.is_some() {
                let client = self.traced_is_client(&exchange.origin);
                if let Some(sink) = self.sink.as_mut() {
                    sink.exchange(&exchange, client);
                }
            }
            self.stats.incomplete += u64::from(exchange.incomplete.is_some());
            for part in [&exchange.request, &exchange.response]
                .into_iter()
                .flatten()
            {
                self.stats.body_bytes_not_kept += part.body.not_kept();
                self.stats.body_bytes_over_budget += part.body.over_budget;
            }
            match self.mode {
                live::Mode::Exchange => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.last_text = None;
                    render::exchange(&exchange, id, None, self.format, self.limits.max_body, out)?;
                }
                live::Mode::Live => {
                    let ts_ns = [&exchange.request, &exchange.response]
                        .into_iter()
                        .flatten()
                        .map(|part| part.last_ns)
                        .max()
                        .unwrap_or(0);
                    self.live_update(&mut exchange, ts_ns, true, out)?;
                    let key = (exchange.origin.conn.id, exchange.key);
                    if let Some(state) = self.live.remove(&key) {
                        self.text_header(&exchange, state.id, ts_ns, out)?;
                        render::exchange(
                            &exchange,
                            state.id,
                            Some(&state),
                            self.format,
                            self.limits.max_body,
                            out,
                        )?;
                    }
                }
            }
        }
        self.ended_client.clear();
        for message in self.messages.drain(..) {
            self.stats.websocket_messages += 1;
            self.stats.body_bytes_not_kept += message.not_kept();
            self.last_text = None;
            render::websocket(&message, self.format, out)?;
        }
        Ok(())
    }

    /// In text, the `===` line of exchange `id` when the last lines were of something else.
    fn text_header(
        &mut self,
        exchange: &Exchange,
        id: u64,
        ts_ns: u64,
        out: &mut dyn Output,
    ) -> io::Result<()> {
        if self.format != Format::Json && self.last_text != Some(id) {
            render::live_header(exchange, id, ts_ns, out)?;
        }
        self.last_text = Some(id);
        Ok(())
    }

    /// Live output of the exchanges in progress on a connection: what is new in them.
    fn look(
        &mut self,
        protocol: &mut Protocol,
        ts_ns: u64,
        out: &mut dyn Output,
    ) -> io::Result<()> {
        match protocol {
            Protocol::Http1(decoder) => {
                for exchange in decoder.in_progress() {
                    self.live_update(exchange, ts_ns, false, out)?;
                }
            }
            Protocol::Http2(decoder) => {
                for exchange in decoder.in_progress() {
                    self.live_update(exchange, ts_ns, false, out)?;
                }
            }
            Protocol::Unknown | Protocol::Raw | Protocol::WebSocket(_) => {}
        }
        Ok(())
    }

    /// Writes what is new in `exchange` since it was last looked at: a head that is complete,
    /// body bytes (SSE events whole); `end`: the exchange is over, an SSE event without its
    /// blank line is written too.
    fn live_update(
        &mut self,
        exchange: &mut Exchange,
        ts_ns: u64,
        end: bool,
        out: &mut dyn Output,
    ) -> io::Result<()> {
        use live::Which;
        let key = (exchange.origin.conn.id, exchange.key);
        if !self.live.contains_key(&key) {
            let id = self.next_id;
            self.next_id += 1;
            self.live.insert(
                key,
                live::State {
                    id,
                    ..live::State::default()
                },
            );
        }
        for which in [Which::Request, Which::Response] {
            let part = match which {
                Which::Request => exchange.request.as_mut(),
                Which::Response => exchange.response.as_mut(),
            };
            let Some(part) = part else {
                continue;
            };
            // Bytes past the limits, handed over once and not kept.
            let overflow = std::mem::take(&mut part.body.overflow);
            let part: &Part = part;
            let index = which as usize;
            let Some(state) = self.live.get_mut(&key) else {
                return Ok(());
            };
            let id = state.id;
            let write_head = !state.head[index];
            state.head[index] = true;
            let data = &part.body.data;
            let start = state.written[index].min(data.len());
            state.written[index] = data.len();
            let mut new = data[start..].to_vec();
            new.extend_from_slice(&overflow);
            let streamed = render::streamed_in_text(part);
            let sse = which == Which::Response && live::is_event_stream(part) && streamed;
            // Pieces: (offset in the body, bytes).
            let mut pieces: Vec<(u64, Vec<u8>)> = Vec::new();
            if sse {
                state.sse.extend_from_slice(&new);
                for event in live::split_events(&mut state.sse, end) {
                    let len = event.len() as u64;
                    pieces.push((state.next_offset[index], event));
                    state.next_offset[index] += len;
                }
            } else if !new.is_empty() {
                let len = new.len() as u64;
                pieces.push((state.next_offset[index], new));
                state.next_offset[index] += len;
            }
            state.pieces[index] += pieces.len() as u64;
            if !write_head && pieces.is_empty() {
                continue;
            }
            let text_pieces = self.format == Format::Json || streamed;
            let exchange: &Exchange = exchange;
            if write_head || text_pieces {
                self.text_header(exchange, id, ts_ns, out)?;
            }
            if write_head {
                render::live_head(exchange, which, id, self.format, out)?;
            }
            if !text_pieces {
                continue;
            }
            for (offset, piece) in pieces {
                let event = sse.then(|| live::parse_event(&piece));
                render::live_piece(
                    exchange,
                    which,
                    id,
                    offset,
                    &piece,
                    event.as_ref(),
                    ts_ns,
                    self.format,
                    out,
                )?;
            }
        }
        Ok(())
    }

    /// The exchange that upgraded connection `id` to WebSocket, if it did: its `101` answered
    /// `Upgrade: websocket`. Returns whether permessage-deflate was accepted.
    fn websocket_upgrade(&self, id: u64) -> Option<bool> {
        let exchange = self
            .done
            .iter()
            .rev()
            .find(|exchange| exchange.origin.conn.id == id && exchange.status == Some(101))?;
        let response = exchange.response.as_ref()?;
        let upgrade = response.header("upgrade")?;
        if !String::from_utf8_lossy(upgrade)
            .to_ascii_lowercase()
            .contains("websocket")
        {
            return None;
        }
        // Only an extension the server accepted counts (RFC 7692, section 5).
        let deflate = response.headers.iter().any(|field| {
            field
                .name
                .as_deref()
                .is_some_and(|name| name.eq_ignore_ascii_case(b"sec-websocket-extensions"))
                && field.value.as_deref().is_some_and(|value| {
                    String::from_utf8_lossy(value).split(',').any(|extension| {
                        extension.split(';').next().is_some_and(|name| {
                            name.trim().eq_ignore_ascii_case("permessage-deflate")
                        })
                    })
                })
        });
        Some(deflate)
    }

    /// The protocol of a connection not recognised yet, from a call of `side`, and where in the
    /// call decoding starts (bytes before it are shown raw).
    ///
    /// - At the start of the call: an HTTP/1 request or status line; the HTTP/2 client preface,
    ///   or (joined after its start) a plausible run of frames.
    /// - Joined in the middle of an HTTP/1 body: a whole chunk at the start of the call (its
    ///   size line, its data and its CRLF), or the last chunk; or, anywhere in the call, a
    ///   request or status line right after an empty line (the end of a head or of a chunked
    ///   body). Nothing less counts as a boundary.
    fn detect(
        &mut self,
        side: Side,
        event: &Event<'_>,
        origin: &dyn Fn() -> Origin,
    ) -> (Protocol, usize) {
        let data = event.data;
        if let Some(role) = h1::detect(data) {
            self.stats.connections_http1 += 1;
            let request_side = match role {
                h1::Role::Request => side,
                h1::Role::Response => side.other(),
            };
            return (
                Protocol::Http1(Box::new(h1::Decoder::new(request_side, self.limits))),
                0,
            );
        }
        if let Some(start) = h2::detect(data, event.conn.offset == 0) {
            self.stats.connections_http2 += 1;
            return (
                Protocol::Http2(Box::new(h2::Decoder::new(side, start, self.limits))),
                0,
            );
        }
        if h1::chunk_start(data) {
            self.stats.connections_http1 += 1;
            // The chunks are a response's (streamed responses are what a trace joins in the
            // middle of), unless the ports say that the traced end is the server and reads
            // them, or the client and writes them.
            let request_side = match traced_is_server(&event.conn) {
                Some(server) if server == (side == Side::Read) => side,
                _ => side.other(),
            };
            let decoder = h1::Decoder::joined_in_chunked_body(
                side,
                request_side,
                self.limits,
                &origin(),
                event.ts_ns,
            );
            return (Protocol::Http1(Box::new(decoder)), 0);
        }
        if let Some((at, role)) = h1::message_after_blank_line(data) {
            self.stats.connections_http1 += 1;
            let request_side = match role {
                h1::Role::Request => side,
                h1::Role::Response => side.other(),
            };
            return (
                Protocol::Http1(Box::new(h1::Decoder::new(request_side, self.limits))),
                at,
            );
        }
        (Protocol::Unknown, 0)
    }
}

impl EventWriter for HttpWriter {
    fn event(&mut self, event: &Event<'_>, out: &mut dyn Output) -> io::Result<()> {
        let side = Side::of(event.attach.direction);
        let state = self
            .connections
            .entry(event.conn.id)
            .or_insert(ConnectionState {
                protocol: Protocol::Unknown,
                raw_bytes: 0,
                next_offset: [None, None],
            });
        let gap = state.next_offset[side.index()].is_some_and(|next| event.conn.offset != next);
        state.next_offset[side.index()] = Some(event.conn.offset.saturating_add(event.len));
        let mut protocol = std::mem::replace(&mut state.protocol, Protocol::Raw);
        let raw_before = state.raw_bytes;
        // Bodies may grow to what the budget leaves this connection beside its heads and
        // buffers (and no more than the connection's own cap). Heads, frames and tables have
        // fixed caps of their own: they count against the budget, and a connection's can pass
        // it by no more than those caps.
        let held_before = protocol.held_bytes() as u64;
        let other_than_bodies = held_before.saturating_sub(protocol.body_bytes());
        let allowance = self
            .budget
            .allowance(held_before)
            .saturating_sub(other_than_bodies);
        protocol.limit_bodies(self.limits.connection_bodies.min(allowance));
        // Who made the call: owned copies, only for the decoded protocols.
        let origin = || Origin {
            pid: event.pid,
            tid: event.tid,
            comm: event.comm.to_string(),
            plugin: event.attach.plugin.clone(),
            conn: Connection::from_view(&event.conn),
            process: event.process.cloned(),
        };
        // Where decoding starts in this call (after bytes shown raw, when joined mid-stream).
        let mut decode_from = 0;
        if matches!(protocol, Protocol::Unknown) && !event.data.is_empty() {
            let (detected, from) = self.detect(side, event, &origin);
            protocol = detected;
            decode_from = from;
            if !matches!(protocol, Protocol::Unknown) && (raw_before > 0 || from > 0) {
                // Joined mid-stream: what came before the first boundary was shown raw.
                self.stats.joined_mid_stream += 1;
                self.stats.joined_raw_bytes += raw_before + from as u64;
            }
            if from > 0 {
                self.last_text = None;
                let before = Event {
                    data: &event.data[..from],
                    len: from as u64,
                    truncated: 0,
                    ..*event
                };
                if let Err(error) = self.raw.event(&before, out) {
                    if let Some(state) = self.connections.get_mut(&event.conn.id) {
                        state.protocol = protocol;
                    }
                    return Err(error);
                }
            }
        }
        // The side requests go on, while the decoder is out of the connection's state (the
        // exchanges it completes in this call are written before it goes back).
        if self.sink.is_some() {
            if let Some(client) = Self::client_of(&protocol) {
                self.client_sides.insert(event.conn.id, client);
            }
        }
        let data = &event.data[decode_from..];
        let event = &Event {
            data,
            len: event.len - decode_from as u64,
            conn: ConnectionView {
                offset: event.conn.offset + decode_from as u64,
                ..event.conn
            },
            ..*event
        };
        let mut raw_from = None;
        match &mut protocol {
            Protocol::Unknown | Protocol::Raw => {
                raw_from = Some(0);
                if let (Protocol::Unknown, Some(state)) =
                    (&protocol, self.connections.get_mut(&event.conn.id))
                {
                    state.raw_bytes += event.len;
                }
            }
            Protocol::Http1(decoder) => {
                if gap {
                    self.stats.gaps += 1;
                    decoder.gap(side, &mut self.done);
                }
                let origin = origin();
                let input = Input {
                    side,
                    data: event.data,
                    ts_ns: event.ts_ns,
                    origin: &origin,
                };
                if let Some(upgraded_at) = decoder.feed(&input, &mut self.done) {
                    raw_from = Some(upgraded_at);
                }
                if event.truncated > 0 {
                    self.stats.gaps += 1;
                    decoder.gap(side, &mut self.done);
                }
                self.stats.bytes_skipped += decoder.take_skipped();
            }
            Protocol::Http2(decoder) => {
                if gap {
                    self.stats.gaps += 1;
                    decoder.gap(side, &mut self.done);
                }
                let origin = origin();
                let input = Input {
                    side,
                    data: event.data,
                    ts_ns: event.ts_ns,
                    origin: &origin,
                };
                decoder.feed(&input, &mut self.done);
                if event.truncated > 0 {
                    self.stats.gaps += 1;
                    decoder.gap(side, &mut self.done);
                }
                self.stats.bytes_skipped += decoder.take_skipped();
            }
            Protocol::WebSocket(decoder) => {
                if gap {
                    self.stats.gaps += 1;
                    decoder.gap(side, &mut self.messages);
                }
                if decoder.decodes(side) {
                    decoder.feed(side, event.data, event.ts_ns, &origin(), &mut self.messages);
                    if event.truncated > 0 {
                        self.stats.gaps += 1;
                        decoder.gap(side, &mut self.messages);
                    }
                } else {
                    raw_from = Some(0);
                }
            }
        }
        if let (Some(at), Protocol::Http1(decoder)) = (raw_from, &mut protocol) {
            let request_side = decoder.request_side();
            // Upgraded: what follows the switch is another protocol, shown raw unless it is
            // WebSocket.
            decoder.finish("connection upgraded", &mut self.done);
            match self.websocket_upgrade(event.conn.id) {
                Some(deflate) => {
                    let mut ws =
                        websocket::Decoder::new(request_side, deflate, self.limits.max_body);
                    let rest = &event.data[at.min(event.data.len())..];
                    ws.feed(side, rest, event.ts_ns, &origin(), &mut self.messages);
                    if event.truncated > 0 {
                        self.stats.gaps += 1;
                        ws.gap(side, &mut self.messages);
                    }
                    raw_from = None;
                    protocol = Protocol::WebSocket(Box::new(ws));
                    self.stats.connections_websocket += 1;
                }
                None => {
                    protocol = Protocol::Raw;
                    self.stats.connections_raw += 1;
                }
            }
        }
        if let Protocol::WebSocket(decoder) = &mut protocol {
            self.stats.websocket_raw_directions += std::mem::take(&mut decoder.lost_directions);
        }
        // Exchanges that ended first, then what is new in those in progress.
        let mut result = self.write_done(out);
        if result.is_ok() && self.mode == live::Mode::Live {
            result = self.look(&mut protocol, event.ts_ns, out);
        }
        self.budget
            .update(held_before, protocol.held_bytes() as u64);
        if let Some(state) = self.connections.get_mut(&event.conn.id) {
            state.protocol = protocol;
        }
        result?;
        if let Some(at) = raw_from {
            self.last_text = None;
            let at = at.min(event.data.len());
            if at < event.data.len() || (at == 0 && event.data.is_empty()) {
                let rest = Event {
                    data: &event.data[at..],
                    len: event.len.saturating_sub(at as u64),
                    conn: ConnectionView {
                        offset: event.conn.offset.saturating_add(at as u64),
                        ..event.conn
                    },
                    ..*event
                };
                self.raw.event(&rest, out)?;
            }
        }
        Ok(())
    }

    fn connection_closed(
        &mut self,
        conn: &ConnectionView<'_>,
        ts_ns: u64,
        out: &mut dyn Output,
    ) -> io::Result<()> {
        if let Some(state) = self.remove_connection(conn.id) {
            self.budget.update(state.protocol.held_bytes() as u64, 0);
            match state.protocol {
                Protocol::Http1(mut decoder) => decoder.closed(ts_ns, &mut self.done),
                Protocol::Http2(mut decoder) => {
                    decoder.finish("connection closed first", &mut self.done)
                }
                Protocol::WebSocket(mut decoder) => {
                    decoder.finish("connection closed first", &mut self.messages)
                }
                Protocol::Unknown => self.stats.connections_raw += 1,
                Protocol::Raw => {}
            }
        }
        self.write_done(out)?;
        self.raw.connection_closed(conn, ts_ns, out)
    }

    fn report(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "http": self.stats,
            "memory_budget": {
                "limit": self.budget.limit(),
                "peak": self.budget.peak(),
            },
        }))
    }

    fn finish(&mut self, out: &mut dyn Output) -> io::Result<()> {
        let mut ids: Vec<u64> = self.connections.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(state) = self.remove_connection(id) {
                match state.protocol {
                    Protocol::Http1(mut decoder) => {
                        decoder.finish("trace ended first", &mut self.done)
                    }
                    Protocol::Http2(mut decoder) => {
                        decoder.finish("trace ended first", &mut self.done)
                    }
                    Protocol::WebSocket(mut decoder) => {
                        decoder.finish("trace ended first", &mut self.messages)
                    }
                    Protocol::Unknown => self.stats.connections_raw += 1,
                    Protocol::Raw => {}
                }
            }
        }
        self.write_done(out)?;
        self.raw.finish(out)?;
        if self.report {
            let stats = &self.stats;
            crate::notice::info(
                crate::notice::Topic::Decode,
                format!(
                    "http: {} exchanges ({} incomplete) on {} HTTP/1 and {} HTTP/2 connections, \
                 {} connections raw; {} gaps, {} bytes skipped to resynchronise, \
                 {} body bytes not kept ({} of them for the memory bounds: the connection's \
                 bodies or --memory-budget full, the rest over --max-body)",
                    stats.exchanges,
                    stats.incomplete,
                    stats.connections_http1,
                    stats.connections_http2,
                    stats.connections_raw,
                    stats.gaps,
                    stats.bytes_skipped,
                    stats.body_bytes_not_kept,
                    stats.body_bytes_over_budget
                ),
            );
            if stats.joined_mid_stream > 0 {
                crate::notice::info(
                    crate::notice::Topic::Decode,
                    format!(
                        "http: {} connections joined mid-stream, decoded from a message or \
                         chunk boundary after {} bytes shown raw",
                        stats.joined_mid_stream, stats.joined_raw_bytes
                    ),
                );
            }
            if stats.connections_websocket > 0 {
                crate::notice::info(
                    crate::notice::Topic::Decode,
                    format!(
                        "websocket: {} messages on {} connections; {} directions written raw \
                         (bytes lost, or a frame that is not one)",
                        stats.websocket_messages,
                        stats.connections_websocket,
                        stats.websocket_raw_directions
                    ),
                );
            }
        }
        Ok(())
    }
}
