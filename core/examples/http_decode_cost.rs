//! What `--decode http` costs the reader: the same synthetic calls written by the raw JSON
//! writer and by the HTTP decoder (JSON and text; one record per exchange, `http=exchange`,
//! and live, the default), to a sink, timed.
//!
//! `cargo run --release -p probectl-core --example http_decode_cost`

use std::time::Instant;

use probectl_core::decode::http::live::Mode;
use probectl_core::decode::http::HttpWriter;
use probectl_core::output::{AttachInfo, ConnectionView, Event, EventWriter, Format, Renderer};
use probectl_core::spec::Direction;

/// One call: its direction and bytes.
type Call = (Direction, Vec<u8>);

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// HTTP/1.1 keep-alive: a GET, then a response of `size` bytes read in 16 KiB calls.
fn http1(exchanges: usize, size: usize) -> Vec<Call> {
    let mut calls = Vec::new();
    let payload = body(size);
    for index in 0..exchanges {
        calls.push((
            Direction::Write,
            format!("GET /item/{index} HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
                .into_bytes(),
        ));
        let mut response =
            format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n")
                .into_bytes();
        response.extend_from_slice(&payload);
        calls.extend(
            response
                .chunks(16 * 1024)
                .map(|c| (Direction::Read, c.to_vec())),
        );
    }
    calls
}

/// HTTP/2: streams of a GET (HPACK, RFC 7541 C.4.1) and a response of `size` bytes in 16 KiB
/// DATA frames, one frame per call.
fn http2(exchanges: usize, size: usize) -> Vec<Call> {
    let block: Vec<u8> = [
        0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90,
        0xf4, 0xff,
    ]
    .to_vec();
    let mut calls = vec![(
        Direction::Write,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
    )];
    let payload = body(size);
    for index in 0..exchanges {
        let stream = 1 + 2 * index as u32;
        calls.push((Direction::Write, frame(0x1, 0x5, stream, &block)));
        // :status 200 (static index 8), content-type literal without indexing.
        let mut response = vec![0x88, 0x0f, 0x10, 0x18];
        response.extend_from_slice(b"application/grpc");
        calls.push((Direction::Read, frame(0x1, 0x4, stream, &response)));
        let chunks: Vec<&[u8]> = payload.chunks(16 * 1024).collect();
        for (at, chunk) in chunks.iter().enumerate() {
            let flags = if at + 1 == chunks.len() { 0x1 } else { 0 };
            calls.push((Direction::Read, frame(0x0, flags, stream, chunk)));
        }
    }
    calls
}

/// HTTP/1.1 Server-Sent Events: one chunked response of `events` events of about 64 bytes,
/// one event per call (as a server streaming an LLM's tokens writes them).
fn sse(events: usize) -> Vec<Call> {
    let mut calls = vec![
        (
            Direction::Write,
            b"GET /v1/stream HTTP/1.1\r\nHost: example.com\r\nAccept: text/event-stream\r\n\r\n"
                .to_vec(),
        ),
        (
            Direction::Read,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec(),
        ),
    ];
    for index in 0..events {
        let event =
            format!("id: {index}\ndata: {{\"token\":\"word{index}\",\"index\":{index}}}\n\n");
        calls.push((
            Direction::Read,
            format!("{:x}\r\n{event}\r\n", event.len()).into_bytes(),
        ));
    }
    calls.push((Direction::Read, b"0\r\n\r\n".to_vec()));
    calls
}

/// Bytes per second through `writer`, best of three.
fn measure(calls: &[Call], make: &dyn Fn() -> Box<dyn EventWriter>) -> (f64, f64) {
    let attach = |direction, function: &str| AttachInfo {
        plugin: "openssl".into(),
        library: "/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
        function: function.into(),
        direction,
    };
    let read = attach(Direction::Read, "SSL_read");
    let write = attach(Direction::Write, "SSL_write");
    let bytes: usize = calls.iter().map(|(_, data)| data.len()).sum();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let mut writer = make();
        // Each event rendered into memory and dropped: the rendering's cost alone.
        let mut out: Vec<u8> = Vec::new();
        let mut offsets = [0u64; 2];
        let started = Instant::now();
        for (direction, data) in calls {
            let side = usize::from(*direction == Direction::Write);
            let event = Event {
                ts_ns: 1_700_000_000_000_000_000,
                pid: 1,
                tid: 1,
                comm: "bench",
                attach: if side == 1 { &write } else { &read },
                conn: ConnectionView {
                    id: 1,
                    handle: 0x1000,
                    fd: Some(3),
                    transport: Some("tcp"),
                    local: Some("127.0.0.1:40000"),
                    remote: Some("127.0.0.1:443"),
                    offset: offsets[side],
                },
                len: data.len() as u64,
                data,
                truncated: 0,
                process: None,
            };
            offsets[side] += data.len() as u64;
            if writer.event(&event, &mut out).is_err() {
                return (0.0, 0.0);
            }
            out.clear();
        }
        if writer.finish(&mut out).is_err() {
            return (0.0, 0.0);
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    (bytes as f64 / best / 1e6, best)
}

fn main() {
    let workloads: [(&str, Vec<Call>, usize, &str); 5] = [
        (
            "HTTP/1.1, 2000 x 64 KiB responses",
            http1(2000, 64 * 1024),
            2000,
            "exchange",
        ),
        (
            "HTTP/1.1, 20000 x 100 B responses",
            http1(20_000, 100),
            20_000,
            "exchange",
        ),
        (
            "HTTP/2, 2000 x 64 KiB responses",
            http2(2000, 64 * 1024),
            2000,
            "exchange",
        ),
        (
            "HTTP/2, 20000 x 100 B responses",
            http2(20_000, 100),
            20_000,
            "exchange",
        ),
        (
            "HTTP/1.1 SSE, 1 response of 100000 events (~60 B, one per call)",
            sse(100_000),
            100_000,
            "event",
        ),
    ];
    println!("| workload | raw JSON | JSON, exchange | JSON, live | text, exchange | text, live |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, calls, units, unit) in &workloads {
        let raw = measure(calls, &|| Box::new(Renderer::new(Format::Json)));
        let decoded = |format, mode| {
            measure(calls, &|| {
                Box::new(HttpWriter::new(format, 1 << 20).quiet().with_mode(mode))
            })
        };
        let per = |(mb_s, seconds): (f64, f64)| {
            format!(
                "{mb_s:.0} MB/s ({:.1} µs/{unit})",
                seconds * 1e6 / *units as f64
            )
        };
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            per(raw),
            per(decoded(Format::Json, Mode::Exchange)),
            per(decoded(Format::Json, Mode::Live)),
            per(decoded(Format::Text, Mode::Exchange)),
            per(decoded(Format::Text, Mode::Live)),
        );
    }
}
