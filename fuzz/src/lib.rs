//! Helpers shared by the fuzz targets of `fuzz_targets/`: the call-stream input format, a
//! feeder that hands calls to an [`EventWriter`] like the pipeline does, output checks, an
//! HPACK encoder (the decoder's round trip) and HTTP/2 frames.
//!
//! The call-stream format (what the `http1` and `http2` targets read, and what
//! `make_seeds.py` writes): one options byte (bits 0-1 the format: text, hex, JSON, JSON with
//! `--decode http` live; bits 2 and 7 `--max-body`; bit 3 close at the end), then calls, each
//! `[control][length: u16 big-endian][length bytes]` (a last call cut short keeps what there is).
//! Control bits: 0 read (else write), 1 the second connection, 2 three bytes lost before the
//! call, 3 the call moved 7 bytes more than were captured, 4 the connection closes after it.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;

use base64::Engine as _;
use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
use probectl_pipeline::decode::http::live::Mode;
use probectl_pipeline::decode::http::{hpack, Field, HttpWriter};
use probectl_pipeline::output::{AttachInfo, ConnectionView, Event, EventWriter, Format};
use probectl_pipeline::Direction;

/// Bytes a decoder may hold for a connection, whatever it is fed (the decoder tests' bound:
/// bodies up to the per-connection limit plus the fixed caps of heads, frames and tables).
pub const MEMORY_BOUND: usize = 64 << 20;

/// The options byte of a call stream.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub format: Format,
    pub max_body: u64,
    /// Close the connections at the end (else the run ends with them open).
    pub close_at_end: bool,
    /// `--decode http` in live mode (heads and body pieces as they arrive; JSON), else one
    /// record per exchange.
    pub live: bool,
    /// Free bits for the targets (bits 4..7).
    pub extra: u8,
}

impl Options {
    pub fn parse(byte: u8) -> Options {
        Options {
            format: [Format::Text, Format::Hex, Format::Json, Format::Json][usize::from(byte & 3)],
            max_body: [0, 16, 4096, 1 << 20]
                [usize::from((byte >> 2) & 1) * 2 + usize::from(byte >> 7)],
            close_at_end: byte & 0x08 != 0,
            live: byte & 3 == 3,
            extra: (byte >> 4) & 0x7,
        }
    }
}

/// One call of a call stream.
#[derive(Debug, Clone)]
pub struct Call {
    pub read: bool,
    pub conn: u64,
    /// Bytes lost before it (a gap in the stream).
    pub lost: u64,
    /// Bytes the call moved beyond those captured.
    pub uncaptured: u64,
    pub close_after: bool,
    pub data: Vec<u8>,
}

/// Splits a call stream (see the module documentation).
pub fn parse_calls(mut input: &[u8]) -> Vec<Call> {
    let mut calls = Vec::new();
    while input.len() >= 3 {
        let control = input[0];
        let length = usize::from(u16::from_be_bytes([input[1], input[2]]));
        input = &input[3..];
        let length = length.min(input.len());
        let (data, rest) = input.split_at(length);
        input = rest;
        calls.push(Call {
            read: control & 1 != 0,
            conn: 1 + u64::from(control >> 1 & 1),
            lost: if control & 4 != 0 { 3 } else { 0 },
            uncaptured: if control & 8 != 0 { 7 } else { 0 },
            close_after: control & 16 != 0,
            data: data.to_vec(),
        });
    }
    calls
}

/// Feeds calls to a writer as the pipeline does: per connection and direction in stream order,
/// offsets advancing by what each call moved (captured or not) and jumping over lost bytes.
pub struct Feeder<W: EventWriter> {
    pub writer: W,
    read: AttachInfo,
    write: AttachInfo,
    offsets: HashMap<(u64, bool), u64>,
    /// Connections closed: a later call on the same number is a new connection id.
    generation: HashMap<u64, u64>,
    pub out: Vec<u8>,
    ts_ns: u64,
    /// Bytes handed to the writer (captured).
    pub captured: u64,
    pub events: u64,
}

fn attach(direction: Direction, function: &str) -> AttachInfo {
    AttachInfo {
        plugin: "openssl".into(),
        library: PathBuf::from("/usr/lib/x86_64-linux-gnu/libssl.so.3"),
        function: function.into(),
        direction,
    }
}

impl<W: EventWriter> Feeder<W> {
    pub fn new(writer: W) -> Feeder<W> {
        Feeder {
            writer,
            read: attach(Direction::Read, "SSL_read"),
            write: attach(Direction::Write, "SSL_write"),
            offsets: HashMap::new(),
            generation: HashMap::new(),
            out: Vec::new(),
            ts_ns: 1_732_480_496_000_000_000,
            captured: 0,
            events: 0,
        }
    }

    fn id(&self, conn: u64) -> u64 {
        conn + 2 * self.generation.get(&conn).copied().unwrap_or(0)
    }

    pub fn view(id: u64, offset: u64) -> ConnectionView<'static> {
        ConnectionView {
            id,
            handle: 0x55d0_0000_0000 + id,
            fd: Some(5),
            transport: Some("tcp"),
            local: Some("127.0.0.1:41234"),
            remote: Some("127.0.0.1:443"),
            offset,
        }
    }

    pub fn call(&mut self, call: &Call) {
        self.ts_ns += 1_000_000;
        let id = self.id(call.conn);
        let offset = self.offsets.entry((id, call.read)).or_insert(0);
        *offset += call.lost;
        let len = call.data.len() as u64 + call.uncaptured;
        let event = Event {
            ts_ns: self.ts_ns,
            pid: 4242,
            tid: 4243,
            comm: "client",
            attach: if call.read { &self.read } else { &self.write },
            conn: Feeder::<W>::view(id, *offset),
            len,
            data: &call.data,
            truncated: call.uncaptured,
            process: None,
        };
        *offset += len;
        self.captured += call.data.len() as u64;
        self.events += 1;
        self.writer.event(&event, &mut self.out).unwrap();
        if call.close_after {
            self.close(call.conn);
        }
    }

    pub fn close(&mut self, conn: u64) {
        self.ts_ns += 1_000_000;
        let id = self.id(conn);
        self.writer
            .connection_closed(&Feeder::<W>::view(id, 0), self.ts_ns, &mut self.out)
            .unwrap();
        *self.generation.entry(conn).or_insert(0) += 1;
    }

    pub fn finish(&mut self) {
        self.writer.finish(&mut self.out).unwrap();
    }
}

pub fn b64(value: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(value.as_str().expect("base64 string"))
        .expect("base64")
}

/// Checks what an `HttpWriter` wrote: in JSON every line is an object; an exchange's bodies
/// keep at most `max_body` bytes and never more than they had, gRPC messages never more than
/// their prefix declared; raw events keep at most what they moved. Text and hex are UTF-8.
/// Returns the number of exchanges written.
pub fn check_http_output(out: &[u8], format: Format, max_body: u64) -> u64 {
    let text = std::str::from_utf8(out).expect("the output is UTF-8");
    if format != Format::Json {
        return 0;
    }
    let mut exchanges = 0;
    for line in text.lines() {
        let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        if value["type"] == "http_head" {
            // Live mode: an exchange's head, as soon as it is complete.
            continue;
        }
        if value["type"] == "http" {
            exchanges += 1;
            for part in ["request", "response"] {
                let part = &value[part];
                if part.is_null() {
                    continue;
                }
                let kept = b64(&part["body_b64"]).len() as u64;
                let len = part["body_len"].as_u64().expect("body_len");
                assert!(kept <= max_body, "body keeps {kept} > max_body {max_body}");
                assert!(kept <= len, "body keeps {kept} of {len}");
            }
            if let Some(messages) = value["grpc"]["messages"].as_array() {
                for message in messages {
                    let kept = b64(&message["data_b64"]).len() as u64;
                    assert!(kept <= message["len"].as_u64().expect("len"));
                }
            }
        } else {
            // Raw events, WebSocket messages, live body pieces.
            let kept = b64(&value["data_b64"]).len() as u64;
            let len = value["len"].as_u64().expect("len");
            assert!(kept <= len, "{} keeps {kept} of {len}", value["type"]);
            if value["type"] == "websocket" {
                assert!(
                    kept <= max_body,
                    "a WebSocket message keeps {kept} > max_body {max_body}"
                );
            }
        }
    }
    exchanges
}

/// Runs calls through an `HttpWriter` and checks the bound, the output and the counts
/// (`PROBECTL_FUZZ_SHOW=1` prints them).
pub fn run_http(options: Options, calls: &[Call]) {
    let mut writer = HttpWriter::new(options.format, options.max_body).quiet();
    if options.live {
        writer = writer.with_mode(Mode::Live);
    }
    let mut feeder = Feeder::new(writer);
    for call in calls {
        feeder.call(call);
        let held = feeder.writer.held_bytes();
        assert!(held < MEMORY_BOUND, "the decoders hold {held} bytes");
    }
    if options.close_at_end {
        feeder.close(1);
        feeder.close(2);
        assert_eq!(
            feeder.writer.held_bytes(),
            0,
            "closed connections hold nothing"
        );
    }
    feeder.finish();
    let stats = feeder.writer.stats.clone();
    if std::env::var_os("PROBECTL_FUZZ_SHOW").is_some() {
        eprintln!("{stats:?}\n{}", String::from_utf8_lossy(&feeder.out));
    }
    assert!(stats.incomplete <= stats.exchanges);
    let written = check_http_output(&feeder.out, options.format, options.max_body);
    if options.format == Format::Json {
        assert_eq!(
            written, stats.exchanges,
            "every exchange counted is written"
        );
    }
}

// ------------------------------------------------------------------------------- HPACK

/// How the encoder writes one field (RFC 7541 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    /// An indexed field when the table has it, else a literal with incremental indexing.
    Indexed,
    /// A literal with incremental indexing, its name indexed when the table has it.
    Incremental,
    /// A literal without indexing.
    WithoutIndexing,
    /// A literal never indexed.
    NeverIndexed,
}

/// An HPACK encoder with its own model of the dynamic table: what the decoder must decode
/// back to the same fields, and the same table.
pub struct Encoder {
    /// Newest first.
    entries: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max_size: usize,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            entries: VecDeque::new(),
            size: 0,
            max_size: hpack::DEFAULT_TABLE_SIZE,
        }
    }
}

fn entry_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + 32
}

pub fn encode_integer(out: &mut Vec<u8>, first: u8, prefix_bits: u8, mut value: u64) {
    let max_prefix = (1u64 << prefix_bits) - 1;
    if value < max_prefix {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max_prefix as u8);
    value -= max_prefix;
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub fn huffman_encode(input: &[u8]) -> Vec<u8> {
    let codes = probectl_pipeline::fuzzing::HUFFMAN_CODES;
    let mut out = Vec::new();
    let mut bits: u64 = 0;
    let mut count = 0u32;
    for &byte in input {
        let (code, length) = codes[usize::from(byte)];
        bits = (bits << length) | u64::from(code);
        count += u32::from(length);
        while count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
        bits &= (1u64 << count) - 1;
    }
    if count > 0 {
        // Padded with the most significant bits of EOS (ones).
        out.push(((bits << (8 - count)) | ((1u64 << (8 - count)) - 1)) as u8);
    }
    out
}

pub fn encode_string(out: &mut Vec<u8>, text: &[u8], huffman: bool) {
    if huffman {
        let coded = huffman_encode(text);
        encode_integer(out, 0x80, 7, coded.len() as u64);
        out.extend_from_slice(&coded);
    } else {
        encode_integer(out, 0, 7, text.len() as u64);
        out.extend_from_slice(text);
    }
}

impl Encoder {
    /// The index of (name, value), or of the name alone, in the static then dynamic table.
    fn find(&self, name: &[u8], value: &[u8]) -> (Option<u64>, Option<u64>) {
        let statics = probectl_pipeline::fuzzing::STATIC_TABLE;
        let mut name_index = None;
        for (index, (n, v)) in statics.iter().enumerate() {
            if n.as_bytes() == name {
                if v.as_bytes() == value {
                    return (Some(index as u64 + 1), Some(index as u64 + 1));
                }
                name_index.get_or_insert(index as u64 + 1);
            }
        }
        for (index, (n, v)) in self.entries.iter().enumerate() {
            let index = index as u64 + 1 + statics.len() as u64;
            if n == name {
                if v == value {
                    return (Some(index), Some(index));
                }
                name_index.get_or_insert(index);
            }
        }
        (None, name_index)
    }

    fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = entry_size(name, value);
        while self.size + size > self.max_size {
            match self.entries.pop_back() {
                Some((n, v)) => self.size -= entry_size(&n, &v),
                None => break,
            }
        }
        if size <= self.max_size {
            self.size += size;
            self.entries.push_front((name.to_vec(), value.to_vec()));
        }
    }

    /// A dynamic table size update (at the start of a block).
    pub fn size_update(&mut self, out: &mut Vec<u8>, size: usize) {
        encode_integer(out, 0x20, 5, size as u64);
        self.max_size = size;
        while self.size > self.max_size {
            match self.entries.pop_back() {
                Some((n, v)) => self.size -= entry_size(&n, &v),
                None => break,
            }
        }
    }

    pub fn table_size(&self) -> usize {
        self.size
    }

    pub fn field(
        &mut self,
        out: &mut Vec<u8>,
        name: &[u8],
        value: &[u8],
        representation: Representation,
        huffman: bool,
    ) {
        let (whole, name_index) = self.find(name, value);
        let literal = |out: &mut Vec<u8>, first: u8, prefix: u8| {
            encode_integer(out, first, prefix, name_index.unwrap_or(0));
            if name_index.is_none() {
                encode_string(out, name, huffman);
            }
            encode_string(out, value, huffman);
        };
        match representation {
            Representation::Indexed if whole.is_some() => {
                encode_integer(out, 0x80, 7, whole.unwrap_or(0));
            }
            Representation::Indexed | Representation::Incremental => {
                literal(out, 0x40, 6);
                self.insert(name, value);
            }
            Representation::WithoutIndexing => literal(out, 0x00, 4),
            Representation::NeverIndexed => literal(out, 0x10, 4),
        }
    }
}

/// A field as the decoder gives a known one.
pub fn known(name: &[u8], value: &[u8]) -> Field {
    Field {
        name: Some(name.to_vec()),
        value: Some(value.to_vec()),
        unknown_index: None,
    }
}

// ------------------------------------------------------------------------------- HTTP/2

/// A frame: the 9-byte header (length, type, flags, stream) and the payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = payload.len() as u32;
    let mut out = length.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

// ------------------------------------------------------------------------------- pcapng

/// A TCP packet of a written capture.
#[derive(Debug, PartialEq, Eq)]
pub struct Packet {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub seq: u32,
    pub payload: Vec<u8>,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// Checks a pcapng file's block framing (see the `pcapng` target); returns the enhanced
/// packet blocks' data.
pub fn blocks(file: &[u8]) -> Vec<Vec<u8>> {
    let mut at = 0;
    let mut index = 0;
    let mut packets = Vec::new();
    while at < file.len() {
        assert!(file.len() - at >= 12, "a block header at {at}");
        let kind = u32_at(file, at);
        let length = u32_at(file, at + 4) as usize;
        assert!(length >= 12 && length % 4 == 0, "block length {length}");
        assert!(at + length <= file.len(), "block past the end");
        assert_eq!(
            u32_at(file, at + length - 4) as usize,
            length,
            "trailing length"
        );
        let body = &file[at + 8..at + length - 4];
        match (index, kind) {
            (0, 0x0A0D_0D0A) => {
                assert_eq!(u32_at(body, 0), 0x1A2B_3C4D, "byte-order magic");
                assert_eq!(&body[4..8], &[1, 0, 0, 0], "version 1.0");
            }
            (1, 1) => {}
            (i, 6) if i >= 2 => {
                assert_eq!(u32_at(body, 0), 0, "interface 0");
                let captured = u32_at(body, 12) as usize;
                let original = u32_at(body, 16) as usize;
                assert_eq!(captured, original);
                assert!(20 + captured <= body.len(), "packet data within its block");
                packets.push(body[20..20 + captured].to_vec());
            }
            _ => panic!("block {index} of type {kind:#x}"),
        }
        at += length;
        index += 1;
    }
    assert!(
        index >= 2 || file.is_empty(),
        "a section header and an interface"
    );
    packets
}

/// Decodes an Ethernet frame: IPv4/IPv6 and TCP, with their lengths and checksums checked.
pub fn packet(frame: &[u8]) -> Packet {
    let headers = PacketHeaders::from_ethernet_slice(frame).expect("an Ethernet frame");
    let Some(TransportHeader::Tcp(tcp)) = headers.transport else {
        panic!("TCP: {headers:?}");
    };
    let payload = headers.payload.slice().to_vec();
    let (from, to, checksum) = match headers.net.expect("IP") {
        NetHeaders::Ipv4(ip, _) => {
            assert_eq!(
                ip.header_checksum,
                ip.calc_header_checksum(),
                "IPv4 checksum"
            );
            assert_eq!(
                usize::from(ip.total_len),
                frame.len() - 14,
                "IPv4 total length"
            );
            let checksum = tcp.calc_checksum_ipv4(&ip, &payload).expect("checksum");
            (ip.source.into(), ip.destination.into(), checksum)
        }
        NetHeaders::Ipv6(ip, _) => {
            assert_eq!(
                usize::from(ip.payload_length),
                frame.len() - 54,
                "IPv6 payload length"
            );
            let checksum = tcp.calc_checksum_ipv6(&ip, &payload).expect("checksum");
            (
                std::net::IpAddr::from(ip.source),
                std::net::IpAddr::from(ip.destination),
                checksum,
            )
        }
        other => panic!("IP: {other:?}"),
    };
    assert_eq!(tcp.checksum, checksum, "TCP checksum");
    Packet {
        from: SocketAddr::new(from, tcp.source_port),
        to: SocketAddr::new(to, tcp.destination_port),
        seq: tcp.sequence_number,
        payload,
    }
}
