//! HTTP/2 (RFC 9113): frames of both directions of a connection, a per-direction HPACK
//! decoder, streams multiplexed by id, trailers. A connection joined after its start is
//! picked up at the first event that starts with a plausible frame; its dynamic tables are
//! unknown, and references to them are marked, never guessed.

use std::collections::BTreeMap;

use super::hpack::{self, Field};
use super::{Exchange, Input, Limits, Part, Side, Version};

/// The client connection preface (RFC 9113 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Largest non-DATA frame payload kept; larger ones are skipped (and a header block in one
/// loses the HPACK context).
const FRAME_CAP: usize = 1024 * 1024;
/// Largest header block (HEADERS + CONTINUATIONs) kept.
const BLOCK_CAP: usize = 1024 * 1024;
/// Largest decoded header list kept per block (as SETTINGS_MAX_HEADER_LIST_SIZE counts).
const LIST_CAP: usize = 1024 * 1024;
/// Most streams followed at once; beyond, the oldest is ended as incomplete.
const STREAMS_CAP: usize = 1024;
/// Frame length accepted when recognising a connection by its frames: the default
/// SETTINGS_MAX_FRAME_SIZE.
const DETECT_FRAME_MAX: u32 = 16_384;

mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// SETTINGS_MAX_FRAME_SIZE (RFC 9113 6.5.2).
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// How a connection was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// By the client preface: decoded from its first byte.
    Preface,
    /// By frames (joined mid-stream).
    Frames,
    /// By the server's connection preface (a SETTINGS frame) at the first byte of its stream:
    /// the server's side was seen first (a client that reads the server's SETTINGS before
    /// its first write succeeds, as node does). Decoded like `Frames` until the other side's
    /// first bytes tell: the client preface there means the connection is seen from its start.
    ServerPreface,
}

/// Whether `data`, the start of a connection's first event, is HTTP/2. `at_stream_start`:
/// `data` is the first byte of its direction's stream (offset 0).
pub fn detect(data: &[u8], at_stream_start: bool) -> Option<Start> {
    if starts_preface(data) {
        return Some(Start::Preface);
    }
    if !frames_plausible(data, true) {
        return None;
    }
    // RFC 9113 3.4: the server's preface is a SETTINGS frame (not an ACK) on stream 0.
    let server_preface = FrameHeader::parse(data).is_some_and(|header| {
        header.kind == kind::SETTINGS && header.flags & flag::ACK == 0 && header.stream == 0
    });
    Some(if at_stream_start && server_preface {
        Start::ServerPreface
    } else {
        Start::Frames
    })
}

/// Whether `data` starts with the client preface (or is the start of it, cut by the call).
fn starts_preface(data: &[u8]) -> bool {
    data.len() >= 4 && (data.starts_with(PREFACE) || PREFACE.starts_with(data))
}

#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    length: u32,
    kind: u8,
    flags: u8,
    stream: u32,
    reserved: bool,
}

impl FrameHeader {
    fn parse(bytes: &[u8]) -> Option<FrameHeader> {
        let bytes: &[u8; 9] = bytes.get(..9)?.try_into().ok()?;
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
        Some(FrameHeader {
            length: u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]),
            kind: bytes[3],
            flags: bytes[4],
            stream: stream & 0x7fff_ffff,
            reserved: stream & 0x8000_0000 != 0,
        })
    }

    /// Whether this looks like a real frame header: a known type with only its defined flags,
    /// the stream id and length its type requires.
    fn plausible(&self, max_length: u32) -> bool {
        if self.reserved || self.length > max_length {
            return false;
        }
        let on_stream = self.stream != 0;
        let (flags, stream_ok, length_ok) = match self.kind {
            kind::DATA => (flag::END_STREAM | flag::PADDED, on_stream, true),
            kind::HEADERS => (
                flag::END_STREAM | flag::END_HEADERS | flag::PADDED | flag::PRIORITY,
                on_stream,
                true,
            ),
            kind::PRIORITY => (0, on_stream, self.length == 5),
            kind::RST_STREAM => (0, on_stream, self.length == 4),
            kind::SETTINGS => (
                flag::ACK,
                !on_stream,
                if self.flags & flag::ACK != 0 {
                    self.length == 0
                } else {
                    self.length.is_multiple_of(6)
                },
            ),
            kind::PUSH_PROMISE => (
                flag::END_HEADERS | flag::PADDED,
                on_stream,
                self.length >= 4,
            ),
            kind::PING => (flag::ACK, !on_stream, self.length == 8),
            kind::GOAWAY => (0, !on_stream, self.length >= 8),
            kind::WINDOW_UPDATE => (0, true, self.length == 4),
            kind::CONTINUATION => (flag::END_HEADERS, on_stream, true),
            _ => return false,
        };
        self.flags & !flags == 0 && stream_ok && length_ok
    }
}

/// Whether `data` starts with a run of plausible frames (the last may be cut by the end of
/// `data`). `strict`: also frame lengths within the default maximum and no CONTINUATION first.
fn frames_plausible(data: &[u8], strict: bool) -> bool {
    let max_length = if strict {
        DETECT_FRAME_MAX
    } else {
        (1 << 24) - 1
    };
    frames_plausible_below(data, strict, max_length, u32::MAX)
}

/// `frames_plausible`, with frames up to `max_length` and stream ids up to `max_stream` only.
fn frames_plausible_below(data: &[u8], strict: bool, max_length: u32, max_stream: u32) -> bool {
    let mut at = 0;
    let mut first = true;
    loop {
        let Some(header) = FrameHeader::parse(&data[at..]) else {
            // Nothing but a cut header left: fine after at least one frame.
            return !first;
        };
        if !header.plausible(max_length)
            || header.stream > max_stream
            || (strict && first && header.kind == kind::CONTINUATION)
        {
            return false;
        }
        first = false;
        at += 9 + header.length as usize;
        if at >= data.len() {
            return true;
        }
    }
}

/// A frame being read.
struct Frame {
    header: FrameHeader,
    /// Payload bytes read so far.
    read: u32,
    /// The payload of a non-DATA frame (unless over `FRAME_CAP`).
    payload: Vec<u8>,
    /// DATA with PADDED: the pad length, once read.
    pad: Option<u8>,
}

/// One direction's frame reader.
#[derive(Default)]
struct Reader {
    /// Bytes of the client preface still to come.
    preface_left: usize,
    header: Vec<u8>,
    frame: Option<Frame>,
    /// Waiting for an event that starts with a frame (after a gap, or joined mid-stream).
    resync: bool,
    /// The other side was recognised by the server preface at its stream's start: this
    /// side's first event may begin with the client preface.
    maybe_preface: bool,
    /// A header block waiting for its CONTINUATIONs.
    block: Option<Block>,
}

struct Block {
    stream: u32,
    end_stream: bool,
    /// PUSH_PROMISE: the promised stream.
    promised: Option<u32>,
    fragment: Vec<u8>,
    /// Over `BLOCK_CAP`: the rest is dropped.
    overflowed: bool,
}

#[derive(Default)]
struct Stream {
    exchange: Option<Exchange>,
    request_done: bool,
    response_done: bool,
}

/// The HTTP/2 decoder of one connection.
pub struct Decoder {
    /// The direction that carries requests, once known.
    client_side: Option<Side>,
    readers: [Reader; 2],
    hpack: [hpack::Decoder; 2],
    streams: BTreeMap<u32, Stream>,
    /// Streams up to this id that are not followed are over (ended after a gap): their
    /// later frames are ignored.
    ended_through: u32,
    highest_stream: u32,
    /// Largest frame each direction may carry (SETTINGS_MAX_FRAME_SIZE of its receiver).
    max_frame: [u32; 2],
    pub(crate) limits: Limits,
    skipped: u64,
}

impl Decoder {
    /// The exchanges in progress, by stream id (for live output).
    pub(crate) fn in_progress(&mut self) -> impl Iterator<Item = &mut Exchange> {
        self.streams
            .values_mut()
            .filter_map(|stream| stream.exchange.as_mut())
    }

    /// A decoder for a connection recognised on `side` as `start`.
    /// The direction that carries requests (the client's), once known.
    pub(crate) fn client_side(&self) -> Option<Side> {
        self.client_side
    }

    pub(crate) fn new(side: Side, start: Start, limits: Limits) -> Decoder {
        let mut decoder = Decoder {
            client_side: None,
            readers: [Reader::default(), Reader::default()],
            hpack: [hpack::Decoder::new(), hpack::Decoder::new()],
            streams: BTreeMap::new(),
            ended_through: 0,
            highest_stream: 0,
            max_frame: [DETECT_FRAME_MAX; 2],
            limits,
            skipped: 0,
        };
        match start {
            Start::Preface => {
                decoder.client_side = Some(side);
                decoder.readers[side.index()].preface_left = PREFACE.len();
            }
            Start::Frames | Start::ServerPreface => {
                decoder.hpack = [hpack::Decoder::joined(), hpack::Decoder::joined()];
                for reader in &mut decoder.readers {
                    reader.resync = true;
                }
                if start == Start::ServerPreface {
                    decoder.readers[side.other().index()].maybe_preface = true;
                }
            }
        }
        decoder
    }

    /// Bytes held: frame buffers, header blocks, stream bodies, HPACK tables.
    /// Bytes of bodies held (of the streams in flight).
    pub fn body_bytes(&self) -> u64 {
        self.streams
            .values()
            .filter_map(|s| s.exchange.as_ref())
            .map(Exchange::body_bytes)
            .sum()
    }

    pub fn held_bytes(&self) -> usize {
        self.readers
            .iter()
            .map(|r| {
                r.header.capacity()
                    + r.frame.as_ref().map_or(0, |f| f.payload.capacity())
                    + r.block.as_ref().map_or(0, |b| b.fragment.capacity())
            })
            .sum::<usize>()
            + self
                .hpack
                .iter()
                .map(hpack::Decoder::table_size)
                .sum::<usize>()
            + self
                .streams
                .values()
                .filter_map(|s| s.exchange.as_ref())
                .map(Exchange::held_bytes)
                .sum::<usize>()
    }

    /// Bytes skipped while resynchronising since the last call.
    pub fn take_skipped(&mut self) -> u64 {
        std::mem::take(&mut self.skipped)
    }

    pub(crate) fn feed(&mut self, input: &Input<'_>, done: &mut Vec<Exchange>) {
        let side = input.side.index();
        let mut data = input.data;
        if std::mem::take(&mut self.readers[side].maybe_preface) && starts_preface(data) {
            // The client preface after the server's: both sides are seen from the start of
            // the connection (the kernel counts both from the same first call), so the
            // dynamic tables are fully known.
            self.client_side = Some(input.side);
            let reader = &mut self.readers[side];
            reader.resync = false;
            reader.preface_left = PREFACE.len();
            self.hpack[side] = hpack::Decoder::new();
            let server = input.side.other().index();
            // The server sends no header block before a request; if it somehow did, its
            // table stays marked partial (unknown references shown as such, never guessed).
            if self.hpack[server].is_pristine() {
                self.hpack[server] = hpack::Decoder::new();
            }
        }
        if self.readers[side].resync {
            // Streams are opened in increasing order: after a gap, an id far above the
            // highest seen is no frame header.
            let max_stream = if self.highest_stream == 0 {
                u32::MAX
            } else {
                self.highest_stream.saturating_add(2 * STREAMS_CAP as u32)
            };
            let max_length = self.max_frame[side];
            if !frames_plausible_below(data, true, max_length, max_stream) {
                self.skipped += data.len() as u64;
                return;
            }
            self.readers[side].resync = false;
        }
        let reader = &mut self.readers[side];
        if reader.preface_left > 0 {
            let start = PREFACE.len() - reader.preface_left;
            let take = reader.preface_left.min(data.len());
            if data[..take] != PREFACE[start..start + take] {
                reader.preface_left = 0;
                reader.resync = true;
                self.skipped += data.len() as u64;
                return;
            }
            reader.preface_left -= take;
            data = &data[take..];
        }
        while !data.is_empty() {
            let reader = &mut self.readers[side];
            let Some(mut frame) = reader.frame.take() else {
                let take = (9 - reader.header.len()).min(data.len());
                reader.header.extend_from_slice(&data[..take]);
                data = &data[take..];
                if let Some(header) = FrameHeader::parse(&reader.header) {
                    reader.header.clear();
                    let frame = Frame {
                        header,
                        read: 0,
                        payload: Vec::new(),
                        pad: None,
                    };
                    if header.length == 0 {
                        self.frame_done(input, frame, done);
                    } else {
                        self.readers[side].frame = Some(frame);
                    }
                }
                continue;
            };
            let left = (frame.header.length - frame.read) as usize;
            let take = left.min(data.len());
            let (bytes, rest) = data.split_at(take);
            data = rest;
            if frame.header.kind == kind::DATA {
                if !self.data_bytes(input, &mut frame, bytes, done) {
                    // Malformed: the reader waits for the next call starting with a frame.
                    self.skipped += data.len() as u64;
                    return;
                }
            } else {
                if frame.header.length as usize <= FRAME_CAP {
                    frame.payload.extend_from_slice(bytes);
                }
                frame.read += take as u32;
            }
            if frame.read == frame.header.length {
                self.frame_done(input, frame, done);
            } else {
                self.readers[side].frame = Some(frame);
            }
        }
    }

    /// Payload bytes of a DATA frame: body bytes go to the stream as they come. Returns
    /// `false` when the frame is malformed (the reader then resynchronises).
    fn data_bytes(
        &mut self,
        input: &Input<'_>,
        frame: &mut Frame,
        mut bytes: &[u8],
        done: &mut Vec<Exchange>,
    ) -> bool {
        let header = frame.header;
        let padded = header.flags & flag::PADDED != 0;
        if padded && frame.read == 0 {
            if let Some((&pad, rest)) = bytes.split_first() {
                frame.pad = Some(pad);
                bytes = rest;
                frame.read = 1;
                if u32::from(pad) >= header.length {
                    self.lose_sync(input.side, "malformed frame", done);
                    return false;
                }
            }
        }
        let data_end = header.length - u32::from(frame.pad.unwrap_or(0));
        let body_len = (data_end.saturating_sub(frame.read) as usize).min(bytes.len());
        frame.read += bytes.len() as u32;
        if body_len > 0 {
            self.body(input, header.stream, &bytes[..body_len], done);
        }
        true
    }

    /// A whole frame has been read (for DATA, its body was already delivered).
    fn frame_done(&mut self, input: &Input<'_>, frame: Frame, done: &mut Vec<Exchange>) {
        let side = input.side;
        let header = frame.header;
        let reader = &mut self.readers[side.index()];
        if reader.block.is_some() && header.kind != kind::CONTINUATION {
            // A header block cut by another frame: a protocol error; the HPACK context is lost.
            reader.block = None;
            self.hpack[side.index()].lose_sync();
        }
        let oversized = header.length as usize > FRAME_CAP;
        let payload = &frame.payload[..];
        match header.kind {
            kind::DATA if header.flags & flag::END_STREAM != 0 => {
                self.end_part(input, header.stream, done);
            }
            kind::HEADERS | kind::PUSH_PROMISE => {
                if oversized {
                    self.hpack[side.index()].lose_sync();
                    return;
                }
                let Some((fragment, promised)) = header_fragment(&header, payload) else {
                    self.hpack[side.index()].lose_sync();
                    return;
                };
                let block = Block {
                    stream: header.stream,
                    end_stream: header.kind == kind::HEADERS
                        && header.flags & flag::END_STREAM != 0,
                    promised,
                    fragment: fragment.to_vec(),
                    overflowed: false,
                };
                if header.flags & flag::END_HEADERS != 0 {
                    self.header_block(input, block, done);
                } else {
                    self.readers[side.index()].block = Some(block);
                }
            }
            kind::CONTINUATION => {
                let reader = &mut self.readers[side.index()];
                let Some(mut block) = reader.block.take() else {
                    return;
                };
                if oversized || block.fragment.len() + payload.len() > BLOCK_CAP {
                    block.overflowed = true;
                } else {
                    block.fragment.extend_from_slice(payload);
                }
                if header.flags & flag::END_HEADERS != 0 {
                    self.header_block(input, block, done);
                } else {
                    self.readers[side.index()].block = Some(block);
                }
            }
            kind::RST_STREAM => {
                let code = payload
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                if let Some(mut stream) = self.streams.remove(&header.stream) {
                    if let Some(mut exchange) = stream.exchange.take() {
                        if !(stream.request_done && stream.response_done) {
                            exchange.mark_incomplete(&format!(
                                "stream reset ({})",
                                error_name(code.unwrap_or(u32::MAX))
                            ));
                        }
                        touch(&mut exchange, input.ts_ns);
                        done.push(exchange);
                    }
                }
            }
            kind::SETTINGS if header.flags & flag::ACK == 0 => {
                // The sender's receive limit is the other direction's frame size limit.
                for setting in payload.chunks_exact(6) {
                    let id = u16::from_be_bytes([setting[0], setting[1]]);
                    let value =
                        u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
                    if id == SETTINGS_MAX_FRAME_SIZE && (DETECT_FRAME_MAX..1 << 24).contains(&value)
                    {
                        self.max_frame[side.other().index()] = value;
                    }
                }
            }
            kind::GOAWAY => {
                // Streams the sender's peer opened above the last one it processed never will be.
                let Some(last) = payload.get(..4) else {
                    return;
                };
                let last = u32::from_be_bytes([last[0], last[1], last[2], last[3]]) & 0x7fff_ffff;
                let peer_opened_odd = !self.is_request_side(side);
                let refused: Vec<u32> = self
                    .streams
                    .range(last.saturating_add(1)..)
                    .map(|(&id, _)| id)
                    .filter(|id| (id % 2 == 1) == peer_opened_odd)
                    .collect();
                for id in refused {
                    if let Some(mut exchange) = self.streams.remove(&id).and_then(|s| s.exchange) {
                        exchange.mark_incomplete("not processed (GOAWAY)");
                        done.push(exchange);
                    }
                }
            }
            _ => {}
        }
    }

    /// Decodes a complete header block and gives it to its stream.
    fn header_block(&mut self, input: &Input<'_>, block: Block, done: &mut Vec<Exchange>) {
        let side = input.side;
        // Decoded header lists count against the connection's budget, with bodies.
        let held: u64 = self
            .streams
            .values()
            .filter_map(|s| s.exchange.as_ref())
            .map(|e| e.held_bytes() as u64)
            .sum();
        let limit = (self.limits.connection_bodies.saturating_sub(held) as usize).min(LIST_CAP);
        let decoder = &mut self.hpack[side.index()];
        let mut dropped = 0;
        let fields = if block.overflowed {
            decoder.lose_sync();
            Err("header block over the size limit")
        } else {
            match decoder.decode_limited(&block.fragment, limit) {
                Ok(decoded) => {
                    dropped = decoded.dropped;
                    Ok(decoded.fields)
                }
                Err(_) => {
                    decoder.lose_sync();
                    Err("undecodable header block")
                }
            }
        };
        if let Some(promised) = block.promised {
            // A pushed request: the promised stream's response follows from the server.
            if let Ok(fields) = fields {
                if let Some(stream) = self.stream(promised, done) {
                    let exchange = stream
                        .exchange
                        .get_or_insert_with(|| new_exchange(input, promised));
                    let mut part = Part::started(input.ts_ns);
                    set_pseudo(exchange, &fields);
                    part.headers = fields;
                    part.complete = true;
                    exchange.request = Some(part);
                    stream.request_done = true;
                }
            }
            return;
        }
        let has_request_pseudo = fields.as_ref().is_ok_and(|fields| {
            fields
                .iter()
                .any(|f| f.is(":method") || f.is(":path") || f.is(":scheme"))
        });
        let has_status = fields
            .as_ref()
            .is_ok_and(|fields| fields.iter().any(|f| f.is(":status")));
        if self.client_side.is_none() {
            if has_request_pseudo {
                self.client_side = Some(side);
            } else if has_status {
                self.client_side = Some(side.other());
            }
        }
        let request = self.is_request_side(side);
        let Some(stream) = self.stream(block.stream, done) else {
            return;
        };
        let exchange = stream
            .exchange
            .get_or_insert_with(|| new_exchange(input, block.stream));
        if dropped > 0 {
            exchange.mark_incomplete(&format!(
                "{dropped} header fields over the size limit, not kept"
            ));
        }
        let fields = match fields {
            Ok(fields) => fields,
            Err(reason) => {
                exchange.mark_incomplete(reason);
                Vec::new()
            }
        };
        let slot = if request {
            &mut exchange.request
        } else {
            &mut exchange.response
        };
        match slot {
            // After headers or body bytes, a header block is trailers.
            Some(part) if !part.headers.is_empty() || part.body.len > 0 || part.complete => {
                part.trailers = fields;
                part.last_ns = input.ts_ns;
            }
            _ => {
                let status = fields
                    .iter()
                    .find(|f| f.is(":status"))
                    .and_then(|f| f.value.as_deref())
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse::<u16>().ok());
                if !request && status.is_some_and(|s| (100..200).contains(&s)) {
                    exchange.interim.extend(status);
                } else {
                    let part = slot.get_or_insert_with(|| Part::started(input.ts_ns));
                    part.last_ns = input.ts_ns;
                    set_pseudo(exchange, &fields);
                    let slot = if request {
                        &mut exchange.request
                    } else {
                        &mut exchange.response
                    };
                    if let Some(part) = slot.as_mut() {
                        part.headers = fields;
                    }
                }
            }
        }
        if block.end_stream {
            self.end_part(input, block.stream, done);
        }
    }

    /// The stream `id`, created if new; `None` for a stream already over.
    fn stream(&mut self, id: u32, done: &mut Vec<Exchange>) -> Option<&mut Stream> {
        if !self.streams.contains_key(&id) {
            if id == 0 || id <= self.ended_through {
                return None;
            }
            if self.streams.len() >= STREAMS_CAP {
                if let Some((_, mut oldest)) = self.streams.pop_first() {
                    if let Some(mut exchange) = oldest.exchange.take() {
                        exchange.mark_incomplete("too many concurrent streams");
                        done.push(exchange);
                    }
                }
            }
            self.highest_stream = self.highest_stream.max(id);
            self.streams.insert(id, Stream::default());
        }
        self.streams.get_mut(&id)
    }

    fn is_request_side(&self, side: Side) -> bool {
        // Until a header block shows the roles, the traced process is taken for the client.
        self.client_side
            .map_or(side == Side::Write, |client| client == side)
    }

    fn body(&mut self, input: &Input<'_>, id: u32, bytes: &[u8], done: &mut Vec<Exchange>) {
        let request = self.is_request_side(input.side);
        let limits = self.limits;
        let held: u64 = self
            .streams
            .values()
            .filter_map(|s| s.exchange.as_ref())
            .map(Exchange::body_bytes)
            .sum();
        let Some(stream) = self.stream(id, done) else {
            return;
        };
        let exchange = stream
            .exchange
            .get_or_insert_with(|| new_exchange(input, id));
        let part = part_mut(exchange, request, input.ts_ns);
        part.body.push(bytes, limits, held);
        part.last_ns = input.ts_ns;
    }

    /// END_STREAM on `side` of stream `id`.
    fn end_part(&mut self, input: &Input<'_>, id: u32, done: &mut Vec<Exchange>) {
        let request = self.is_request_side(input.side);
        let Some(stream) = self.stream(id, done) else {
            return;
        };
        let exchange = stream
            .exchange
            .get_or_insert_with(|| new_exchange(input, id));
        let part = part_mut(exchange, request, input.ts_ns);
        part.complete = true;
        part.last_ns = input.ts_ns;
        if request {
            stream.request_done = true;
        } else {
            stream.response_done = true;
        }
        let request_seen = exchange.request.is_some();
        if stream.response_done && (stream.request_done || !request_seen) {
            if let Some(mut stream) = self.streams.remove(&id) {
                if let Some(mut exchange) = stream.exchange.take() {
                    if exchange.request.is_none() {
                        exchange.mark_incomplete("request not seen");
                    }
                    done.push(exchange);
                }
            }
        }
    }

    /// Bytes of `side` were lost: every stream in progress ends as incomplete, the HPACK
    /// context of that direction is no longer known, and its reader waits for a frame start.
    pub(crate) fn gap(&mut self, side: Side, done: &mut Vec<Exchange>) {
        self.lose_sync(side, "bytes lost (gap in the capture)", done);
    }

    /// `side`'s framing is lost (for `reason`): as for a gap.
    fn lose_sync(&mut self, side: Side, reason: &str, done: &mut Vec<Exchange>) {
        let reader = &mut self.readers[side.index()];
        reader.resync = true;
        reader.frame = None;
        reader.header.clear();
        reader.block = None;
        reader.preface_left = 0;
        self.hpack[side.index()].lose_sync();
        self.ended_through = self.ended_through.max(self.highest_stream);
        self.end_all(reason, done);
    }

    /// The connection is over (closed, or the trace ended): what is left is incomplete.
    pub(crate) fn finish(&mut self, reason: &str, done: &mut Vec<Exchange>) {
        self.end_all(reason, done);
    }

    fn end_all(&mut self, reason: &str, done: &mut Vec<Exchange>) {
        for (_, mut stream) in std::mem::take(&mut self.streams) {
            if let Some(mut exchange) = stream.exchange.take() {
                if !(stream.request_done && stream.response_done) {
                    exchange.mark_incomplete(reason);
                }
                done.push(exchange);
            }
        }
    }
}

/// The request or response of an exchange. One first met in a DATA frame or at END_STREAM
/// is created, and its headers were not seen: the exchange is incomplete.
fn part_mut(exchange: &mut Exchange, request: bool, ts_ns: u64) -> &mut Part {
    let seen = if request {
        exchange.request.is_some()
    } else {
        exchange.response.is_some()
    };
    if !seen {
        exchange.mark_incomplete(if request {
            "request headers not seen"
        } else {
            "response headers not seen"
        });
    }
    let slot = if request {
        &mut exchange.request
    } else {
        &mut exchange.response
    };
    slot.get_or_insert_with(|| Part::started(ts_ns))
}

fn new_exchange(input: &Input<'_>, id: u32) -> Exchange {
    let mut exchange = Exchange::new(Version::Http2, input.origin.clone());
    exchange.stream_id = Some(id);
    exchange.key = u64::from(id);
    exchange
}

fn touch(exchange: &mut Exchange, ts_ns: u64) {
    for part in [exchange.request.as_mut(), exchange.response.as_mut()]
        .into_iter()
        .flatten()
    {
        part.last_ns = part.last_ns.max(ts_ns);
    }
}

/// Method, path, authority and status from the pseudo-header fields.
fn set_pseudo(exchange: &mut Exchange, fields: &[Field]) {
    for field in fields {
        let (Some(name), Some(value)) = (field.name.as_deref(), field.value.as_deref()) else {
            continue;
        };
        let text = || Some(String::from_utf8_lossy(value).into_owned());
        match name {
            b":method" => exchange.method = text(),
            b":path" => exchange.path = text(),
            b":authority" => exchange.authority = text(),
            b":status" => {
                exchange.status = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok())
            }
            _ => {}
        }
    }
}

/// The header block fragment of a HEADERS or PUSH_PROMISE payload (without padding and
/// priority), and the promised stream of a PUSH_PROMISE. `None` when malformed.
fn header_fragment<'a>(header: &FrameHeader, payload: &'a [u8]) -> Option<(&'a [u8], Option<u32>)> {
    let mut start = 0usize;
    let mut end = payload.len();
    if header.flags & flag::PADDED != 0 {
        let pad = *payload.first()? as usize;
        start = 1;
        end = end.checked_sub(pad)?;
    }
    let mut promised = None;
    if header.kind == kind::HEADERS && header.flags & flag::PRIORITY != 0 {
        start += 5;
    }
    if header.kind == kind::PUSH_PROMISE {
        let id = payload.get(start..start + 4)?;
        promised = Some(u32::from_be_bytes([id[0], id[1], id[2], id[3]]) & 0x7fff_ffff);
        start += 4;
    }
    if start > end {
        return None;
    }
    Some((&payload[start..end], promised))
}

/// RFC 9113 7: error code names.
fn error_name(code: u32) -> String {
    let name = match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => return format!("error code {code:#x}"),
    };
    name.to_string()
}
