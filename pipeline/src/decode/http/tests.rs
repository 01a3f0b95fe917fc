//! The decoder driven with synthetic streams: framing, resynchronisation, limits, formats,
//! and property tests (random and mutated streams: no panic, bounded memory).

use std::collections::HashMap;

use base64::Engine as _;
use proptest::prelude::*;

use super::*;
use crate::output::AttachInfo;

const MAX_BODY: u64 = 1 << 20;

/// Feeds synthetic events of connections to an `HttpWriter`, keeping each stream's offset.
struct Feeder {
    writer: HttpWriter,
    read: AttachInfo,
    write: AttachInfo,
    offsets: HashMap<(u64, bool), u64>,
    out: Vec<u8>,
    ts_ns: u64,
}

impl Feeder {
    fn new(format: Format, max_body: u64) -> Feeder {
        let attach = |direction, function: &str| AttachInfo {
            plugin: "openssl".into(),
            library: "/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
            function: function.into(),
            direction,
        };
        Feeder {
            writer: HttpWriter::new(format, max_body).quiet(),
            read: attach(Direction::Read, "SSL_read"),
            write: attach(Direction::Write, "SSL_write"),
            offsets: HashMap::new(),
            out: Vec::new(),
            ts_ns: 1_732_480_496_000_000_000,
        }
    }

    /// A feeder whose writer writes live (heads and pieces as they arrive).
    fn live(format: Format, max_body: u64) -> Feeder {
        let mut feeder = Feeder::new(format, max_body);
        feeder.writer = HttpWriter::new(format, max_body)
            .quiet()
            .with_mode(super::live::Mode::Live);
        feeder
    }

    /// What was written so far.
    fn text_so_far(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    fn view(conn: u64, offset: u64) -> ConnectionView<'static> {
        ConnectionView {
            id: conn,
            handle: 0x55d0_0000_0000 + conn,
            fd: Some(5),
            transport: Some("tcp"),
            local: Some("127.0.0.1:41234"),
            remote: Some("127.0.0.1:443"),
            offset,
        }
    }

    /// One call moving `len` bytes of which `data` were captured, after `lost` bytes lost.
    fn call(&mut self, conn: u64, direction: Direction, data: &[u8], len: u64, lost: u64) {
        self.ts_ns += 1_000_000;
        let offset = self
            .offsets
            .entry((conn, direction == Direction::Read))
            .or_insert(0);
        *offset += lost;
        let event = Event {
            ts_ns: self.ts_ns,
            pid: 4242,
            tid: 4243,
            comm: "client",
            attach: if direction == Direction::Read {
                &self.read
            } else {
                &self.write
            },
            conn: Feeder::view(conn, *offset),
            len,
            data,
            truncated: len - data.len() as u64,
            process: None,
        };
        *offset += len;
        self.writer.event(&event, &mut self.out).expect("write");
    }

    fn write(&mut self, conn: u64, data: &[u8]) {
        self.call(conn, Direction::Write, data, data.len() as u64, 0);
    }

    fn read(&mut self, conn: u64, data: &[u8]) {
        self.call(conn, Direction::Read, data, data.len() as u64, 0);
    }

    fn close(&mut self, conn: u64) {
        self.ts_ns += 1_000_000;
        self.writer
            .connection_closed(&Feeder::view(conn, 0), self.ts_ns, &mut self.out)
            .expect("close");
    }

    fn finish(mut self) -> (String, Stats) {
        self.writer.finish(&mut self.out).expect("finish");
        (
            String::from_utf8(self.out).expect("utf-8"),
            self.writer.stats,
        )
    }

    fn json(self) -> Vec<serde_json::Value> {
        let (text, _) = self.finish();
        text.lines()
            .map(|line| serde_json::from_str(line).expect("JSON line"))
            .collect()
    }
}

fn b64(value: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(value.as_str().expect("base64 string"))
        .expect("base64")
}

fn headers(value: &serde_json::Value) -> Vec<(String, String)> {
    value
        .as_array()
        .expect("headers")
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap_or("<unknown>").to_string(),
                pair[1].as_str().unwrap_or("<unknown>").to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------- HTTP/1

#[test]
fn h1_keep_alive_lengths_chunked_and_trailers() {
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    feeder.write(1, b"GET /a HTTP/1.1\r\nHost: example\r\n\r\n");
    feeder.read(1, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel");
    feeder.read(1, b"lo");
    feeder.write(
        1,
        b"POST /b HTTP/1.1\r\nHost: example\r\nContent-Length: 6\r\n\r\nab",
    );
    feeder.write(1, b"cdef");
    feeder.read(
        1,
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n",
    );
    feeder.read(1, b"2;ext=1\r\n12\r\n0\r\nX-Checksum: 7\r\n\r\n");
    let lines = feeder.json();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let first = &lines[0];
    assert_eq!(first["version"], "1.1");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/a");
    assert_eq!(first["authority"], "example");
    assert_eq!(first["status"], 200);
    assert_eq!(b64(&first["response"]["body_b64"]), b"hello");
    assert_eq!(first["incomplete"], serde_json::Value::Null);
    assert_eq!(first["duration_ns"], 2_000_000);
    let second = &lines[1];
    assert_eq!(second["method"], "POST");
    assert_eq!(b64(&second["request"]["body_b64"]), b"abcdef");
    assert_eq!(second["status"], 201);
    assert_eq!(b64(&second["response"]["body_b64"]), b"xyz12");
    assert_eq!(
        headers(&second["response"]["trailers"]),
        pairs(&[("X-Checksum", "7")])
    );
    assert_eq!(second["response"]["complete"], true);
}

#[test]
fn h1_pipelined_requests_are_answered_in_order() {
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    feeder.write(
        1,
        b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nHEAD /2 HTTP/1.1\r\nHost: h\r\n\r\nGET /3 HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    feeder.read(
        1,
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nAHTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
    );
    feeder.read(1, b"HTTP/1.1 204 No Content\r\n\r\n");
    let lines = feeder.json();
    let summary: Vec<(String, u64, Vec<u8>)> = lines
        .iter()
        .map(|line| {
            (
                line["path"].as_str().unwrap_or("-").to_string(),
                line["status"].as_u64().unwrap_or(0),
                b64(&line["response"]["body_b64"]),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("/1".to_string(), 200, b"A".to_vec()),
            ("/2".to_string(), 200, Vec::new()),
            ("/3".to_string(), 304, Vec::new()),
            ("-".to_string(), 204, Vec::new()),
        ]
    );
    assert_eq!(lines[3]["incomplete"], "request not seen");
}

#[test]
fn h1_100_continue_then_the_body_and_the_final_response() {
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    feeder.write(
        1,
        b"PUT /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    );
    feeder.read(1, b"HTTP/1.1 100 Continue\r\n\r\n");
    feeder.write(1, b"data");
    feeder.read(1, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let lines = feeder.json();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["interim"], serde_json::json!([100]));
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(b64(&lines[0]["request"]["body_b64"]), b"data");
    assert_eq!(b64(&lines[0]["response"]["body_b64"]), b"ok");
}

#[test]
fn h1_text_shows_the_response_s_own_version() {
    // openssl s_server -www answers an HTTP/1.1 request with an HTTP/1.0 status line.
    let mut feeder = Feeder::new(Format::Text, MAX_BODY);
    feeder.write(1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    feeder.read(1, b"HTTP/1.0 200 ok\r\nContent-Length: 2\r\n\r\nhi");
    let (text, _) = feeder.finish();
    assert!(text.contains("> GET / HTTP/1.1\n"), "{text}");
    assert!(text.contains("< HTTP/1.0 200 ok\n"), "{text}");
}

#[test]
fn h1_body_until_close() {
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    feeder.write(1, b"GET / HTTP/1.0\r\n\r\n");
    feeder.read(
        1,
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ",
    );
    feeder.read(1, b"it");
    feeder.close(1);
    let lines = feeder.json();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["version"], "1.0");
    assert_eq!(b64(&lines[0]["response"]["body_b64"]), b"all of it");
    assert_eq!(lines[0]["incomplete"], serde_json::Value::Null);
}

#[test]
fn h1_upgrade_switches_the_connection_to_raw() {
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    feeder.write(
        1,
        b"GET /tunnel HTTP/1.1\r\nHost: h\r\nUpgrade: other\r\nConnection: Upgrade\r\n\r\n",
    );
    feeder.read(
        1,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: other\r\n\r\n\x81\x02hi",
    );
    feeder.write(1, b"\x81\x02yo");
    let lines = feeder.json();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["status"], 101);
    assert_eq!(lines[0]["incomplete"], serde_json::Value::Null);
    // The bytes after the switch, raw, at their true offsets.
    assert_eq!(b64(&lines[1]["data_b64"]), b"\x81\x02hi");
    assert_eq!(lines[1]["conn"]["offset"], 52);
    assert_eq!(b64(&lines[2]["data_b64"]), b"\x81\x02yo");
}

/// The upgrade of a WebSocket client (the traced end writes the request), then frames both ways.
fn websocket_session(feeder: &mut Feeder, deflate: bool) {
    feeder.write(
        1,
        b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
    );
    let mut response = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGJzhZRbK+xOo=\r\n"
        .to_vec();
    if deflate {
        response.extend(b"Sec-WebSocket-Extensions: permessage-deflate\r\n");
    }
    response.extend(b"\r\n");
    // The server's first frame in the same call as the 101: "hello" unmasked.
    response.extend(b"\x81\x05hello");
    feeder.read(1, &response);
    // The client: "hi" masked, then a binary message in two fragments.
    feeder.write(1, b"\x81\x82\x3a\x76\x57\x32\x52\x1f");
    feeder.write(1, b"\x02\x02\x00\x01");
    feeder.write(1, b"\x80\x01\xff");
    // The server closes: 1000 "bye".
    feeder.read(1, b"\x88\x05\x03\xe8bye");
}

#[test]
fn websocket_frames_decoded_after_the_upgrade() {
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    websocket_session(&mut feeder, false);
    let lines = feeder.json();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(lines[0]["status"], 101);
    let messages: Vec<(&str, &str, Vec<u8>)> = lines[1..]
        .iter()
        .map(|line| {
            assert_eq!(line["type"], "websocket");
            assert_eq!(line["incomplete"], serde_json::Value::Null);
            (
                line["sender"].as_str().expect("sender"),
                line["opcode"].as_str().expect("opcode"),
                b64(&line["data_b64"]),
            )
        })
        .collect();
    assert_eq!(
        messages,
        vec![
            ("server", "text", b"hello".to_vec()),
            ("client", "text", b"hi".to_vec()),
            ("client", "binary", vec![0, 1, 0xff]),
            ("server", "close", b"\x03\xe8bye".to_vec()),
        ]
    );
    assert_eq!(lines[1]["text"], "hello");
    assert_eq!(lines[2]["masked"], true);
    assert_eq!(lines[3]["frames"], 2);
    assert_eq!(lines[4]["close"]["code"], 1000);
    assert_eq!(lines[4]["close"]["reason"], "bye");
}

#[test]
fn websocket_text_like_curl_verbose() {
    let mut feeder = Feeder::new(Format::Text, MAX_BODY);
    websocket_session(&mut feeder, false);
    let (text, stats) = feeder.finish();
    assert_eq!(stats.websocket_messages, 4);
    assert_eq!(stats.connections_websocket, 1);
    insta::assert_snapshot!(text);
}

#[test]
fn websocket_extension_only_counts_when_the_server_accepts_it() {
    // The client offered permessage-deflate, the server did not accept: RSV1 is not deflate.
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    websocket_session(&mut feeder, false);
    feeder.read(1, b"\xc1\x03abc");
    let lines = feeder.json();
    let last = lines.last().expect("a message");
    assert_eq!(b64(&last["data_b64"]), b"abc");
    assert!(last["note"]
        .as_str()
        .is_some_and(|n| n.contains("not negotiated")));
}

#[test]
fn h1_gap_ends_the_exchange_and_decoding_resynchronises() {
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    feeder.write(1, b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n01");
    // 8 bytes of the body lost, then the next request in a later call.
    feeder.call(
        1,
        Direction::Write,
        b"GET /y HTTP/1.1\r\nHost: h\r\n\r\n",
        28,
        8,
    );
    feeder.read(1, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    feeder.read(1, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nY");
    let (text, stats) = {
        let feeder = feeder;
        feeder.finish()
    };
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines[0]["path"], "/x");
    assert_eq!(lines[0]["incomplete"], "bytes lost (gap in the capture)");
    assert_eq!(b64(&lines[0]["request"]["body_b64"]), b"01");
    // The first response answers the lost request's exchange? No: that exchange was ended;
    // the response after the gap is matched with the request decoded after it.
    assert_eq!(lines[1]["path"], "/y");
    assert_eq!(lines[1]["status"], 200);
    assert_eq!(stats.gaps, 1);
}

#[test]
fn h1_bodies_over_max_body_are_counted() {
    let mut feeder = Feeder::new(Format::Json, 4);
    feeder.write(1, b"GET / HTTP/1.1\r\n\r\n");
    feeder.read(
        1,
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
    );
    let (text, stats) = feeder.finish();
    let line: serde_json::Value = serde_json::from_str(text.trim()).expect("json");
    assert_eq!(b64(&line["response"]["body_b64"]), b"0123");
    assert_eq!(line["response"]["body_len"], 10);
    assert_eq!(stats.body_bytes_not_kept, 6);
}

#[test]
fn the_memory_budget_bounds_the_bodies_of_all_connections_together() {
    // Eight connections, each in the middle of a 100,000-byte body at once, under a budget of
    // 300,000 bytes: the connections that come later keep less, the rest is counted as over
    // the budget (not over --max-body), and what is held never passes the budget.
    const BUDGET: u64 = 300_000;
    const BODY: usize = 100_000;
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    feeder.writer = HttpWriter::new(Format::Json, MAX_BODY)
        .quiet()
        .with_budget(BUDGET);
    let connections = 1..=8u64;
    for conn in connections.clone() {
        feeder.write(conn, b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
        feeder.read(
            conn,
            format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n").as_bytes(),
        );
    }
    let piece = vec![b'x'; BODY / 4];
    for _ in 0..3 {
        for conn in connections.clone() {
            feeder.read(conn, &piece);
            assert!(feeder.writer.budget().held() <= BUDGET);
            assert_eq!(
                feeder.writer.budget().held(),
                feeder.writer.held_bytes() as u64
            );
        }
    }
    for conn in connections.clone() {
        feeder.read(conn, &piece);
    }
    assert!(feeder.writer.budget().peak() <= BUDGET);
    let report = feeder.writer.report().expect("a report");
    let (text, stats) = feeder.finish();
    let kept: u64 = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .map(|l| {
            assert_eq!(l["response"]["body_len"], BODY);
            b64(&l["response"]["body_b64"]).len() as u64
        })
        .sum();
    assert_eq!(stats.exchanges, 8);
    // Held at once never passed the budget; over the run, exchanges that ended freed room
    // for the others' last pieces.
    assert!(kept > BUDGET / 2 && kept < 8 * BODY as u64, "kept {kept}");
    assert_eq!(stats.body_bytes_not_kept, 8 * BODY as u64 - kept);
    assert_eq!(stats.body_bytes_over_budget, stats.body_bytes_not_kept);
    assert_eq!(
        report["http"]["body_bytes_over_budget"],
        stats.body_bytes_over_budget
    );
    assert_eq!(report["memory_budget"]["limit"], BUDGET);
}

#[test]
fn the_bodies_a_connection_keeps_are_bounded_together() {
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    feeder.writer = HttpWriter::new(Format::Json, 8)
        .quiet()
        .with_limits(Limits {
            max_body: 8,
            connection_bodies: 12,
            live: false,
        });
    // Three streams in flight with 8-byte bodies: the third gets what is left of 12.
    let mut client = h2::PREFACE.to_vec();
    for id in [1u32, 3, 5] {
        client.extend(frame(
            HEADERS,
            0x5,
            id,
            &literal_block(&[(":method", "GET"), (":path", "/")]),
        ));
    }
    feeder.write(1, &client);
    for id in [1u32, 3, 5] {
        let mut server = frame(HEADERS, 0x4, id, &literal_block(&[(":status", "200")]));
        server.extend(frame(DATA, 0, id, b"01234567"));
        feeder.read(1, &server);
    }
    for id in [1u32, 3, 5] {
        feeder.read(1, &frame(DATA, 0x1, id, b""));
    }
    let (text, stats) = feeder.finish();
    let kept: Vec<(u64, u64)> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .map(|l| {
            (
                b64(&l["response"]["body_b64"]).len() as u64,
                l["response"]["body_len"].as_u64().expect("len"),
            )
        })
        .collect();
    assert_eq!(kept, vec![(8, 8), (4, 8), (0, 8)]);
    assert_eq!(stats.body_bytes_not_kept, 12);
}

#[test]
fn other_protocols_stay_raw() {
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    feeder.write(1, b"\x16\x03\x01 not http at all");
    feeder.read(1, b"+OK POP3 server ready\r\n");
    let lines = feeder.json();
    assert_eq!(lines.len(), 2);
    assert_eq!(b64(&lines[0]["data_b64"]), b"\x16\x03\x01 not http at all");
    assert_eq!(lines[1]["function"], "SSL_read");
}

#[test]
fn h1_text_like_curl_verbose_with_gzip_decompressed() {
    use std::io::Write as _;
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(b"decompressed text\n").expect("gzip");
    let compressed = gzip.finish().expect("gzip");
    let mut feeder = Feeder::new(Format::Text, MAX_BODY);
    feeder.write(
        1,
        b"POST /form HTTP/1.1\r\nHost: example\r\nContent-Length: 7\r\n\r\na=1&b=2",
    );
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        compressed.len()
    )
    .into_bytes();
    response.extend_from_slice(&compressed);
    feeder.read(1, &response);
    feeder.write(1, b"GET /bin HTTP/1.1\r\nHost: example\r\n\r\n");
    feeder.read(
        1,
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n\x00\x01\x02\x03",
    );
    feeder.write(1, b"GET /cut HTTP/1.1\r\nHost: example\r\n\r\n");
    let (text, _) = feeder.finish();
    insta::assert_snapshot!(text);
}

// ---------------------------------------------------------------- HTTP/2

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = payload.len() as u32;
    let mut out = length.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A header block of literal fields without indexing (names and values under 127 bytes).
fn literal_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(value.len() as u8);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).expect("ascii"), 16).expect("hex"))
        .collect()
}

const SETTINGS: u8 = 0x4;
const HEADERS: u8 = 0x1;
const DATA: u8 = 0x0;
const CONTINUATION: u8 = 0x9;
const RST_STREAM: u8 = 0x3;

#[test]
fn h2_multiplexed_streams_with_dynamic_table_padding_continuation_and_trailers() {
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    // Preface and SETTINGS, then two requests: RFC 7541 C.4.1 (stream 1) and, split over
    // HEADERS (padded, with priority) + CONTINUATION, C.4.2 which uses the dynamic table.
    let mut client = h2::PREFACE.to_vec();
    client.extend(frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]));
    client.extend(frame(
        HEADERS,
        0x1 | 0x4,
        1,
        &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
    ));
    feeder.write(1, &client);
    let block = hex("8286 84be 5886 a8eb 1064 9cbf");
    let mut padded = vec![2u8];
    padded.extend_from_slice(&[0, 0, 0, 1, 16]);
    padded.extend_from_slice(&block[..3]);
    padded.extend_from_slice(&[0, 0]);
    let mut second = frame(HEADERS, 0x8 | 0x20, 3, &padded);
    second.extend(frame(CONTINUATION, 0x4, 3, &block[3..]));
    second.extend(frame(DATA, 0x1, 3, b""));
    feeder.write(1, &second);
    // Responses interleaved: stream 3's first, in two DATA frames (one padded), then stream
    // 1's with trailers.
    let mut server = frame(SETTINGS, 0, 0, &[]);
    server.extend(frame(
        HEADERS,
        0x4,
        3,
        &literal_block(&[(":status", "200")]),
    ));
    server.extend(frame(
        HEADERS,
        0x4,
        1,
        &literal_block(&[(":status", "404")]),
    ));
    server.extend(frame(DATA, 0x8, 3, &[3, b'a', b'b', 0, 0, 0]));
    feeder.read(1, &server);
    let mut server = frame(DATA, 0, 1, b"not found");
    server.extend(frame(DATA, 0x1, 3, b"cd"));
    server.extend(frame(
        HEADERS,
        0x4 | 0x1,
        1,
        &literal_block(&[("x-trailer", "t")]),
    ));
    feeder.read(1, &server);
    let lines = feeder.json();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let (three, one) = (&lines[0], &lines[1]);
    assert_eq!(three["stream_id"], 3);
    assert_eq!(three["version"], "2");
    assert_eq!(three["method"], "GET");
    assert_eq!(three["authority"], "www.example.com");
    assert_eq!(
        headers(&three["request"]["headers"]),
        pairs(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
            ("cache-control", "no-cache"),
        ])
    );
    assert_eq!(three["status"], 200);
    assert_eq!(b64(&three["response"]["body_b64"]), b"abcd");
    assert_eq!(one["stream_id"], 1);
    assert_eq!(one["status"], 404);
    assert_eq!(b64(&one["response"]["body_b64"]), b"not found");
    assert_eq!(
        headers(&one["response"]["trailers"]),
        pairs(&[("x-trailer", "t")])
    );
}

#[test]
fn h2_joined_mid_stream_marks_unknown_dynamic_indices() {
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    // No preface: the connection is recognised by its frames. 0xbe is dynamic index 62,
    // unknown; 0x82 (:method GET) and 0x84 (:path /) are static.
    feeder.write(1, &frame(HEADERS, 0x5, 7, &hex("82 84 be 00 01 78 01 79")));
    feeder.read(1, &frame(HEADERS, 0x5, 7, &hex("88 bf")));
    let lines = feeder.json();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/");
    assert_eq!(
        line["request"]["headers"],
        serde_json::json!([
            [":method", "GET"],
            [":path", "/"],
            [null, null, 62],
            ["x", "y"]
        ])
    );
    assert_eq!(line["status"], 200);
    assert_eq!(
        line["response"]["headers"],
        serde_json::json!([[":status", "200"], [null, null, 63]])
    );
}

#[test]
fn h2_server_settings_read_before_the_client_preface_is_the_connection_start() {
    // A client that reads the server's SETTINGS before its first write succeeds (node with
    // memory BIOs): the read stream's first event comes first. The client preface that
    // starts the write stream then says both sides are seen from the start: the requests
    // are decoded, with their dynamic table (RFC 7541 C.4.1, then C.4.2 which uses it).
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    feeder.read(1, &frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]));
    let mut client = h2::PREFACE.to_vec();
    client.extend(frame(SETTINGS, 0, 0, &[]));
    client.extend(frame(SETTINGS, 0x1, 0, &[]));
    client.extend(frame(
        HEADERS,
        0x1 | 0x4,
        1,
        &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
    ));
    client.extend(frame(
        HEADERS,
        0x1 | 0x4,
        3,
        &hex("8286 84be 5886 a8eb 1064 9cbf"),
    ));
    feeder.write(1, &client);
    let mut server = frame(HEADERS, 0x4, 1, &literal_block(&[(":status", "200")]));
    server.extend(frame(DATA, 0x1, 1, b"one"));
    server.extend(frame(
        HEADERS,
        0x4 | 0x1,
        3,
        &literal_block(&[(":status", "204")]),
    ));
    feeder.read(1, &server);
    let (text, stats) = feeder.finish();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(stats.bytes_skipped, 0);
    for line in &lines {
        assert_eq!(line["incomplete"], serde_json::Value::Null, "{line}");
        assert_eq!(line["method"], "GET");
        assert_eq!(line["path"], "/");
        assert_eq!(line["authority"], "www.example.com");
    }
    assert_eq!(lines[0]["stream_id"], 1);
    assert_eq!(b64(&lines[0]["response"]["body_b64"]), b"one");
    assert_eq!(lines[1]["stream_id"], 3);
    assert_eq!(lines[1]["status"], 204);
    assert_eq!(
        headers(&lines[1]["request"]["headers"]),
        pairs(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
            ("cache-control", "no-cache"),
        ])
    );
}

#[test]
fn h2_server_settings_first_without_a_client_preface_is_joined_mid_stream() {
    // The same first read, but the write stream does not start with the preface (the
    // connection was joined): its dynamic table stays unknown, references marked.
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    feeder.read(1, &frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]));
    feeder.write(1, &frame(HEADERS, 0x5, 7, &hex("82 84 be")));
    feeder.read(1, &frame(HEADERS, 0x5, 7, &hex("88")));
    let lines = feeder.json();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        lines[0]["request"]["headers"],
        serde_json::json!([[":method", "GET"], [":path", "/"], [null, null, 62]])
    );
    assert_eq!(lines[0]["status"], 200);
}

#[test]
fn h2_gap_ends_open_streams_and_decoding_resynchronises() {
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    let mut client = h2::PREFACE.to_vec();
    client.extend(frame(
        HEADERS,
        0x5,
        1,
        &literal_block(&[(":method", "GET"), (":path", "/1")]),
    ));
    feeder.write(1, &client);
    feeder.read(
        1,
        &frame(HEADERS, 0x4, 1, &literal_block(&[(":status", "200")])),
    );
    // Lost: the rest of stream 1's response. Then stream 3, whole.
    let mut rest = frame(DATA, 0, 1, b"0123456789");
    rest.truncate(12);
    feeder.call(1, Direction::Read, &rest, 19, 0);
    feeder.write(
        1,
        &frame(
            HEADERS,
            0x5,
            3,
            &literal_block(&[(":method", "GET"), (":path", "/3")]),
        ),
    );
    let mut server = frame(DATA, 0x1, 1, b"789");
    server.extend(frame(
        HEADERS,
        0x4,
        3,
        &literal_block(&[(":status", "201")]),
    ));
    feeder.call(1, Direction::Read, &server[3..], server.len() as u64 - 3, 0);
    feeder.read(1, &frame(DATA, 0x1, 3, b"three"));
    let lines = feeder.json();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["stream_id"], 1);
    assert_eq!(lines[0]["incomplete"], "bytes lost (gap in the capture)");
    assert_eq!(b64(&lines[0]["response"]["body_b64"]), b"012");
    assert_eq!(lines[1]["stream_id"], 3);
    assert_eq!(
        lines[1]["status"],
        serde_json::Value::Null,
        "headers in the skipped event"
    );
    assert_eq!(lines[1]["incomplete"], "response headers not seen");
    assert_eq!(b64(&lines[1]["response"]["body_b64"]), b"three");
}

#[test]
fn h2_reset_stream_is_incomplete() {
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    let mut client = h2::PREFACE.to_vec();
    client.extend(frame(
        HEADERS,
        0x5,
        1,
        &literal_block(&[(":method", "GET"), (":path", "/")]),
    ));
    client.extend(frame(RST_STREAM, 0, 1, &8u32.to_be_bytes()));
    feeder.write(1, &client);
    let lines = feeder.json();
    assert_eq!(lines[0]["incomplete"], "stream reset (CANCEL)");
}

#[test]
fn h2_goaway_ends_the_streams_it_refuses() {
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    let mut client = h2::PREFACE.to_vec();
    for id in [1u32, 3] {
        client.extend(frame(
            HEADERS,
            0x5,
            id,
            &literal_block(&[(":method", "GET"), (":path", "/")]),
        ));
    }
    feeder.write(1, &client);
    // The server processed stream 1 only.
    let mut goaway = 1u32.to_be_bytes().to_vec();
    goaway.extend_from_slice(&0u32.to_be_bytes());
    feeder.read(1, &frame(0x7, 0, 0, &goaway));
    feeder.read(
        1,
        &frame(HEADERS, 0x5, 1, &literal_block(&[(":status", "200")])),
    );
    let lines = feeder.json();
    let ends: Vec<(u64, &serde_json::Value)> = lines
        .iter()
        .map(|l| (l["stream_id"].as_u64().expect("id"), &l["incomplete"]))
        .collect();
    assert_eq!(
        ends,
        vec![
            (3, &serde_json::Value::from("not processed (GOAWAY)")),
            (1, &serde_json::Value::Null)
        ]
    );
}

/// A gRPC server-streaming call: request message, two response messages, status trailers.
fn grpc_call(feeder: &mut Feeder) {
    let message = |bytes: &[u8]| {
        let mut out = vec![0u8];
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
        out
    };
    let mut client = h2::PREFACE.to_vec();
    client.extend(frame(
        HEADERS,
        0x4,
        1,
        &literal_block(&[
            (":method", "POST"),
            (":scheme", "https"),
            (":path", "/demo.Greeter/Stream"),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]),
    ));
    client.extend(frame(DATA, 0x1, 1, &message(b"\x0a\x03bob")));
    feeder.write(1, &client);
    let mut server = frame(
        HEADERS,
        0x4,
        1,
        &literal_block(&[(":status", "200"), ("content-type", "application/grpc")]),
    );
    server.extend(frame(
        DATA,
        0,
        1,
        &[message(b"one"), message(b"two")].concat(),
    ));
    server.extend(frame(
        HEADERS,
        0x5,
        1,
        &literal_block(&[("grpc-status", "5"), ("grpc-message", "not%20here")]),
    ));
    feeder.read(1, &server);
}

#[test]
fn grpc_json_has_service_method_status_and_messages() {
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    grpc_call(&mut feeder);
    let (text, _) = feeder.finish();
    // The line as written: field order included (times are the feeder's, fixed).
    insta::assert_snapshot!(text);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let grpc = &lines[0]["grpc"];
    assert_eq!(grpc["service"], "demo.Greeter");
    assert_eq!(grpc["method"], "Stream");
    assert_eq!(grpc["status"], 5);
    assert_eq!(grpc["message"], "not here");
    let messages: Vec<(String, Vec<u8>)> = grpc["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["direction"].as_str().expect("dir").to_string(),
                b64(&m["data_b64"]),
            )
        })
        .collect();
    assert_eq!(
        messages,
        vec![
            ("request".to_string(), b"\x0a\x03bob".to_vec()),
            ("response".to_string(), b"one".to_vec()),
            ("response".to_string(), b"two".to_vec()),
        ]
    );
}

#[test]
fn grpc_text() {
    let mut feeder = Feeder::new(Format::Text, MAX_BODY);
    grpc_call(&mut feeder);
    let (text, _) = feeder.finish();
    insta::assert_snapshot!(text);
}

#[test]
fn a_traced_server_reads_the_requests() {
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    feeder.read(1, b"GET /s HTTP/1.1\r\nHost: h\r\n\r\n");
    feeder.write(1, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let mut preface = h2::PREFACE.to_vec();
    preface.extend(frame(
        HEADERS,
        0x5,
        1,
        &literal_block(&[(":method", "GET"), (":path", "/h2")]),
    ));
    feeder.read(2, &preface);
    feeder.write(
        2,
        &frame(HEADERS, 0x4, 1, &literal_block(&[(":status", "204")])),
    );
    feeder.write(2, &frame(DATA, 0x1, 1, b""));
    let lines = feeder.json();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        (&lines[0]["path"], &lines[0]["status"]),
        (&"/s".into(), &200.into())
    );
    assert_eq!(b64(&lines[0]["response"]["body_b64"]), b"ok");
    assert_eq!(
        (&lines[1]["path"], &lines[1]["status"]),
        (&"/h2".into(), &204.into())
    );
    assert_eq!(lines[1]["incomplete"], serde_json::Value::Null);
}

#[test]
fn h2_push_promise_becomes_its_own_exchange() {
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    let mut client = h2::PREFACE.to_vec();
    client.extend(frame(
        HEADERS,
        0x5,
        1,
        &literal_block(&[(":method", "GET"), (":path", "/")]),
    ));
    feeder.write(1, &client);
    let mut promise = 2u32.to_be_bytes().to_vec();
    promise.extend(literal_block(&[
        (":method", "GET"),
        (":path", "/style.css"),
    ]));
    let mut server = frame(0x5, 0x4, 1, &promise);
    server.extend(frame(
        HEADERS,
        0x5,
        1,
        &literal_block(&[(":status", "200")]),
    ));
    server.extend(frame(
        HEADERS,
        0x4,
        2,
        &literal_block(&[(":status", "200")]),
    ));
    server.extend(frame(DATA, 0x1, 2, b"body{}"));
    feeder.read(1, &server);
    let lines = feeder.json();
    let paths: Vec<(&str, u64)> = lines
        .iter()
        .map(|l| {
            (
                l["path"].as_str().expect("path"),
                l["stream_id"].as_u64().expect("id"),
            )
        })
        .collect();
    assert_eq!(paths, vec![("/", 1), ("/style.css", 2)]);
    assert_eq!(b64(&lines[1]["response"]["body_b64"]), b"body{}");
    assert!(lines.iter().all(|l| l["incomplete"].is_null()), "{lines:?}");
}

#[test]
fn h2_joined_text_and_hex() {
    let mut feeder = Feeder::new(Format::Hex, MAX_BODY);
    feeder.write(1, &frame(HEADERS, 0x5, 7, &hex("82 84 be 0f 2f 02 78 79")));
    feeder.read(1, &frame(HEADERS, 0x4, 7, &hex("88")));
    feeder.read(1, &frame(DATA, 0x1, 7, b"\x00binary\xff body bytes"));
    let (text, stats) = feeder.finish();
    assert_eq!((stats.connections_http2, stats.exchanges), (1, 1));
    insta::assert_snapshot!(text);
}

#[test]
fn stream_offsets_at_the_end_of_the_range_do_not_overflow() {
    // Found by the pipeline fuzz target: a malformed record's stream offset near u64::MAX
    // overflowed the next expected offset.
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    let request = b"GET /edge HTTP/1.1\r\nHost: h\r\n\r\n";
    for offset in [u64::MAX - 4, u64::MAX] {
        let event = Event {
            ts_ns: 1,
            pid: 1,
            tid: 1,
            comm: "c",
            attach: &feeder.write,
            conn: Feeder::view(1, offset),
            len: request.len() as u64,
            data: request,
            truncated: 0,
            process: None,
        };
        feeder.writer.event(&event, &mut feeder.out).expect("write");
    }
    // The stream's end saturated at u64::MAX, where the second request starts: no gap.
    let lines = feeder.json();
    let paths: Vec<&str> = lines
        .iter()
        .map(|l| l["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, vec!["/edge", "/edge"]);
}

// ---------------------------------------------------------------- properties

/// Bytes a decoder may hold for a connection, whatever it is fed: bodies up to the limit per
/// exchange in flight, plus the fixed caps of heads, frames and tables.
const MEMORY_BOUND: usize = 64 << 20;

fn valid_h1() -> Vec<(Direction, Vec<u8>)> {
    vec![
        (Direction::Write, b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n".to_vec()),
        (Direction::Read, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nxyz".to_vec()),
        (Direction::Write, b"GET /g HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()),
        (Direction::Read, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nrest".to_vec()),
    ]
}

fn valid_h2() -> Vec<(Direction, Vec<u8>)> {
    let mut client = h2::PREFACE.to_vec();
    client.extend(frame(
        HEADERS,
        0x5,
        1,
        &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
    ));
    client.extend(frame(
        HEADERS,
        0x4,
        3,
        &hex("8286 84be 5886 a8eb 1064 9cbf"),
    ));
    client.extend(frame(DATA, 0x9, 3, &[2, b'h', b'i', 0, 0]));
    let mut server = frame(SETTINGS, 0, 0, &[]);
    server.extend(frame(HEADERS, 0x4, 1, &hex("4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3")));
    server.extend(frame(DATA, 0x1, 1, b"body"));
    server.extend(frame(HEADERS, 0x5, 3, &hex("4883 640e ffc1 c0bf")));
    vec![(Direction::Write, client), (Direction::Read, server)]
}

/// Feeds `calls` cut at `cuts`, with bytes lost where `gaps` says; checks the bound.
fn feed_all(calls: &[(Direction, Vec<u8>)], cuts: &[usize], gaps: &[u8], format: Format) {
    // Both modes: one record per exchange, and live.
    for live in [false, true] {
        let mut feeder = if live {
            Feeder::live(format, 4096)
        } else {
            Feeder::new(format, 4096)
        };
        for (index, (direction, bytes)) in calls.iter().enumerate() {
            let cut = cuts.get(index).copied().unwrap_or(0) % (bytes.len() + 1);
            for (part_index, part) in [&bytes[..cut], &bytes[cut..]].into_iter().enumerate() {
                if part.is_empty() {
                    continue;
                }
                let lost =
                    u64::from(gaps.get(index * 2 + part_index).copied().unwrap_or(0) % 8 == 7);
                feeder.call(1, *direction, part, part.len() as u64, lost * 3);
                assert!(feeder.writer.held_bytes() < MEMORY_BOUND);
            }
        }
        feeder.close(1);
        assert!(feeder.writer.held_bytes() < MEMORY_BOUND);
        let _ = feeder.finish();
    }
}

fn mutate(calls: &mut [(Direction, Vec<u8>)], edits: &[(usize, usize, u8)]) {
    for &(call, at, byte) in edits {
        let index = call % calls.len();
        let bytes = &mut calls[index].1;
        if !bytes.is_empty() {
            let at = at % bytes.len();
            bytes[at] = byte;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_streams_do_not_panic(
        calls in prop::collection::vec(
            (any::<bool>(), prop::collection::vec(any::<u8>(), 0..300)),
            1..12,
        ),
        start in prop::sample::select(vec![&b""[..], b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n", h2::PREFACE]),
    ) {
        let mut calls: Vec<(Direction, Vec<u8>)> = calls
            .into_iter()
            .map(|(read, bytes)| (if read { Direction::Read } else { Direction::Write }, bytes))
            .collect();
        calls[0].1.splice(0..0, start.iter().copied());
        feed_all(&calls, &[], &[], Format::Json);
    }

    #[test]
    fn mutated_http1_does_not_panic(
        edits in prop::collection::vec((any::<usize>(), any::<usize>(), any::<u8>()), 0..8),
        cuts in prop::collection::vec(any::<usize>(), 4),
        gaps in prop::collection::vec(any::<u8>(), 8),
    ) {
        let mut calls = valid_h1();
        mutate(&mut calls, &edits);
        feed_all(&calls, &cuts, &gaps, Format::Text);
    }

    #[test]
    fn mutated_http2_does_not_panic(
        edits in prop::collection::vec((any::<usize>(), any::<usize>(), any::<u8>()), 0..8),
        cuts in prop::collection::vec(any::<usize>(), 2),
        gaps in prop::collection::vec(any::<u8>(), 4),
    ) {
        let mut calls = valid_h2();
        mutate(&mut calls, &edits);
        feed_all(&calls, &cuts, &gaps, Format::Json);
    }

    #[test]
    fn hpack_random_blocks_do_not_panic(
        blocks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..6),
        joined in any::<bool>(),
    ) {
        let mut decoder = if joined { hpack::Decoder::joined() } else { hpack::Decoder::new() };
        for block in blocks {
            let _ = decoder.decode(&block);
            prop_assert!(decoder.table_size() <= hpack::TABLE_MEMORY_CAP);
        }
    }
}

#[test]
fn valid_streams_decode_whole_when_cut_anywhere() {
    // Every cut of each call into two calls gives the same exchanges.
    for (calls, expected) in [(valid_h1(), 2usize), (valid_h2(), 2)] {
        for cut in 0..200 {
            let mut feeder = Feeder::new(Format::Json, MAX_BODY);
            for (index, (direction, bytes)) in calls.iter().enumerate() {
                // The first call must hold the start of the request line or the preface:
                // that is how a connection is recognised.
                let first = if index == 0 { 24 } else { 0 };
                let at = first + cut % (bytes.len() - first + 1);
                for part in [&bytes[..at], &bytes[at..]] {
                    if !part.is_empty() {
                        feeder.call(1, *direction, part, part.len() as u64, 0);
                    }
                }
            }
            feeder.close(1);
            let lines = feeder.json();
            let complete = lines
                .iter()
                .filter(|l| l["type"] == "http" && l["incomplete"].is_null())
                .count();
            assert_eq!(complete, expected, "cut {cut}: {lines:?}");
        }
    }
}

// ---------------------------------------------------------------- live output

/// A chunked SSE response, one event per call, as a server streams it.
const SSE_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";

fn sse_chunk(event: &str) -> Vec<u8> {
    format!("{:x}\r\n{event}\r\n", event.len()).into_bytes()
}

#[test]
fn live_text_shows_each_part_as_it_arrives() {
    let mut feeder = Feeder::live(Format::Text, MAX_BODY);
    feeder.write(
        1,
        b"GET /stream HTTP/1.1\r\nHost: h\r\nAccept: text/event-stream\r\n\r\n",
    );
    let after_request = feeder.text_so_far();
    assert!(
        after_request.contains("> GET /stream HTTP/1.1\n"),
        "{after_request}"
    );
    assert!(!after_request.contains("< HTTP"), "{after_request}");
    feeder.read(1, SSE_HEAD);
    assert!(feeder.text_so_far().contains("< HTTP/1.1 200 OK\n"));
    let events = [
        "data: one\n\n",
        "event: tick\ndata: two\n\n",
        "data: thr",
        "ee\n\n",
    ];
    feeder.read(1, &sse_chunk(events[0]));
    assert!(feeder.text_so_far().ends_with("data: one\n\n"));
    feeder.read(1, &sse_chunk(events[1]));
    assert!(feeder.text_so_far().ends_with("event: tick\ndata: two\n\n"));
    // Half an event waits for its other half.
    feeder.read(1, &sse_chunk(events[2]));
    assert!(!feeder.text_so_far().contains("data: thr"));
    feeder.read(1, &sse_chunk(events[3]));
    assert!(feeder.text_so_far().ends_with("data: three\n\n"));
    assert!(!feeder.text_so_far().contains("* done"));
    feeder.read(1, b"0\r\n\r\n");
    let (text, stats) = feeder.finish();
    assert_eq!(stats.exchanges, 1);
    insta::assert_snapshot!(text);
}

#[test]
fn live_json_pieces_join_to_the_body_and_carry_the_exchange_id() {
    let mut feeder = Feeder::live(Format::Json, MAX_BODY);
    // Two exchanges on two connections, interleaved: each piece names its own.
    for conn in [1, 2] {
        feeder.write(conn, b"GET /s HTTP/1.1\r\nHost: h\r\n\r\n");
        feeder.read(conn, SSE_HEAD);
    }
    let events = ["data: a\n\n", "id: 9\ndata: b\ndata: c\n\n"];
    for event in events {
        for conn in [1, 2] {
            feeder.read(conn, &sse_chunk(event));
        }
    }
    for conn in [1, 2] {
        feeder.read(conn, b"0\r\n\r\n");
    }
    let lines = feeder.json();
    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| l["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        kinds,
        [
            "http_head",
            "http_head",
            "http_head",
            "http_head",
            "http_body",
            "http_body",
            "http_body",
            "http_body",
            "http",
            "http"
        ]
    );
    for id in [1, 2] {
        let of_it: Vec<&serde_json::Value> = lines.iter().filter(|l| l["id"] == id).collect();
        let pieces: Vec<u8> = of_it
            .iter()
            .filter(|l| l["type"] == "http_body")
            .flat_map(|l| b64(&l["data_b64"]))
            .collect();
        let last = of_it.last().expect("the exchange's record");
        assert_eq!(last["type"], "http");
        assert_eq!(
            pieces,
            b64(&last["response"]["body_b64"]),
            "pieces join to the body"
        );
        let sse: Vec<&serde_json::Value> = of_it.iter().filter_map(|l| l.get("sse")).collect();
        assert_eq!(sse[0]["data"], "a");
        assert_eq!(sse[1]["data"], "b\nc");
        assert_eq!(sse[1]["id"], "9");
        assert_eq!(last["ttfb_ns"], 1_000_000);
        let conn = of_it[0]["conn"]["id"].clone();
        assert!(of_it
            .iter()
            .all(|l| l["conn"] == conn || l["conn"]["id"] == conn));
    }
}

#[test]
fn live_http2_data_frames_are_pieces() {
    let mut feeder = Feeder::live(Format::Json, MAX_BODY);
    let mut client = h2::PREFACE.to_vec();
    client.extend(frame(SETTINGS, 0, 0, &[]));
    client.extend(frame(
        HEADERS,
        0x1 | 0x4,
        1,
        &literal_block(&[(":method", "GET"), (":path", "/s"), (":scheme", "https")]),
    ));
    feeder.write(1, &client);
    feeder.read(
        1,
        &frame(HEADERS, 0x4, 1, &literal_block(&[(":status", "200")])),
    );
    feeder.read(1, &frame(DATA, 0, 1, b"first piece "));
    let so_far = feeder.text_so_far();
    assert!(so_far.contains("\"type\":\"http_body\""), "{so_far}");
    feeder.read(1, &frame(DATA, 0x1, 1, b"second piece"));
    let lines = feeder.json();
    let pieces: Vec<Vec<u8>> = lines
        .iter()
        .filter(|l| l["type"] == "http_body")
        .map(|l| b64(&l["data_b64"]))
        .collect();
    assert_eq!(pieces, [b"first piece ".to_vec(), b"second piece".to_vec()]);
    assert_eq!(lines.last().expect("record")["type"], "http");
}

#[test]
fn live_pieces_go_on_past_max_body() {
    // 10 bytes kept per body: the exchange's record keeps 10, the live pieces show all.
    let mut feeder = Feeder::live(Format::Json, 10);
    feeder.write(1, b"GET /s HTTP/1.1\r\nHost: h\r\n\r\n");
    feeder.read(1, SSE_HEAD);
    let events: Vec<String> = (0..20)
        .map(|i| format!("data: event number {i}\n\n"))
        .collect();
    for event in &events {
        feeder.read(1, &sse_chunk(event));
    }
    feeder.read(1, b"0\r\n\r\n");
    let lines = feeder.json();
    let pieces: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["type"] == "http_body").collect();
    assert_eq!(pieces.len(), 20);
    let joined: Vec<u8> = pieces.iter().flat_map(|p| b64(&p["data_b64"])).collect();
    assert_eq!(joined, events.concat().into_bytes());
    let mut offset = 0;
    for piece in &pieces {
        assert_eq!(piece["offset"], offset);
        offset += piece["len"].as_u64().expect("len");
    }
    let record = lines.last().expect("record");
    assert_eq!(b64(&record["response"]["body_b64"]).len(), 10);
    assert_eq!(record["response"]["body_len"], offset);
}

// ---------------------------------------------------------------- joining HTTP/1 mid-stream

#[test]
fn joined_in_a_chunked_response_resynchronises_at_a_whole_chunk() {
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    // Joined in the middle of a chunk: not a boundary, shown raw.
    feeder.read(1, b"rest of an earlier chunk\r\n");
    // A chunk-size line whose chunk is not whole in the call: no proof either.
    feeder.read(1, b"40\r\nonly part of it");
    feeder.read(1, b"5\r\nabcde\r\n");
    feeder.read(1, b"3\r\nxyz\r\n");
    feeder.read(1, b"0\r\n\r\n");
    feeder.write(1, b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n");
    feeder.read(1, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let (text, stats) = feeder.finish();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(b64(&lines[0]["data_b64"]), b"rest of an earlier chunk\r\n");
    assert_eq!(b64(&lines[1]["data_b64"]), b"40\r\nonly part of it");
    let joined = &lines[2];
    assert_eq!(joined["type"], "http");
    assert_eq!(joined["request"], serde_json::Value::Null);
    assert_eq!(b64(&joined["response"]["body_b64"]), b"abcdexyz");
    assert_eq!(joined["response"]["complete"], true);
    assert!(joined["incomplete"]
        .as_str()
        .is_some_and(|reason| reason.starts_with("joined mid-stream")));
    assert_eq!(lines[3]["path"], "/next");
    assert_eq!(b64(&lines[3]["response"]["body_b64"]), b"ok");
    assert_eq!(lines[3]["incomplete"], serde_json::Value::Null);
    assert_eq!(stats.joined_mid_stream, 1);
    assert_eq!(stats.joined_raw_bytes, 26 + 19);
}

#[test]
fn joined_before_a_request_after_an_empty_line_starts_there() {
    let mut feeder = Feeder::new(Format::Json, MAX_BODY);
    feeder.write(
        1,
        b"tail of a body\r\nX-Trailer: 1\r\n\r\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    feeder.read(1, b"HTTP/1.1 204 No Content\r\n\r\n");
    let (text, stats) = feeder.finish();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        b64(&lines[0]["data_b64"]),
        b"tail of a body\r\nX-Trailer: 1\r\n\r\n"
    );
    assert_eq!(lines[0]["conn"]["offset"], 0);
    assert_eq!(lines[1]["path"], "/x");
    assert_eq!(lines[1]["status"], 204);
    assert_eq!(lines[1]["incomplete"], serde_json::Value::Null);
    assert_eq!(stats.joined_raw_bytes, 32);
}

#[test]
fn chunk_and_boundary_proofs() {
    assert!(h1::chunk_start(b"5\r\nabcde\r\n"));
    assert!(h1::chunk_start(b"5;ext=1\r\nabcde\r\n6\r\n"));
    assert!(h1::chunk_start(b"0\r\n\r\n"));
    assert!(!h1::chunk_start(b"5\r\nabcdef\r\n"));
    assert!(!h1::chunk_start(b"5\r\nabc"));
    assert!(!h1::chunk_start(b"zz\r\nabcde\r\n"));
    assert!(!h1::chunk_start(b"5\nabcde\r\n"));
    assert!(!h1::chunk_start(b"0\r\nX"));
    assert_eq!(
        h1::message_after_blank_line(b"x\r\n\r\nHTTP/1.1 200 OK\r\n"),
        Some((5, h1::Role::Response))
    );
    assert_eq!(
        h1::message_after_blank_line(b"x\r\nGET / HTTP/1.1\r\n"),
        None
    );
    assert_eq!(
        h1::message_after_blank_line(b"x\r\n\r\nGET / HTTP/1.1"),
        None
    );
}

#[test]
fn the_server_end_is_known_by_its_port_when_only_one_end_is_ephemeral() {
    let conn = |local, remote| ConnectionView {
        local: Some(local),
        remote: Some(remote),
        ..ConnectionView::default()
    };
    assert_eq!(
        traced_is_server(&conn("10.0.0.1:443", "10.0.0.2:51234")),
        Some(true)
    );
    assert_eq!(
        traced_is_server(&conn("10.0.0.2:51234", "10.0.0.1:8443")),
        Some(false)
    );
    // A server on an ephemeral port (tests, port 0), or two listening ports: not told.
    assert_eq!(
        traced_is_server(&conn("127.0.0.1:40001", "127.0.0.1:51234")),
        None
    );
    assert_eq!(
        traced_is_server(&conn("127.0.0.1:8443", "127.0.0.1:443")),
        None
    );
    assert_eq!(traced_is_server(&ConnectionView::default()), None);
}
