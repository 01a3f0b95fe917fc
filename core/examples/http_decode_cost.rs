//! What `--decode http` costs the reader: the same synthetic calls written by the raw JSON
//! writer and by the HTTP decoder (JSON and text), to a sink, timed.
//!
//! `cargo run --release -p probectl-core --example http_decode_cost`

use std::time::Instant;

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
    let workloads: [(&str, Vec<Call>, usize); 4] = [
        (
            "HTTP/1.1, 2000 x 64 KiB responses",
            http1(2000, 64 * 1024),
            2000,
        ),
        (
            "HTTP/1.1, 20000 x 100 B responses",
            http1(20_000, 100),
            20_000,
        ),
        (
            "HTTP/2, 2000 x 64 KiB responses",
            http2(2000, 64 * 1024),
            2000,
        ),
        (
            "HTTP/2, 20000 x 100 B responses",
            http2(20_000, 100),
            20_000,
        ),
    ];
    println!("| workload | raw JSON | --decode http, JSON | --decode http, text |");
    println!("| --- | --- | --- | --- |");
    for (name, calls, exchanges) in &workloads {
        let raw = measure(calls, &|| Box::new(Renderer::new(Format::Json)));
        let json = measure(calls, &|| {
            Box::new(HttpWriter::new(Format::Json, 1 << 20).quiet())
        });
        let text = measure(calls, &|| {
            Box::new(HttpWriter::new(Format::Text, 1 << 20).quiet())
        });
        let per = |(mb_s, seconds): (f64, f64)| {
            format!(
                "{mb_s:.0} MB/s ({:.1} µs/exchange)",
                seconds * 1e6 / *exchanges as f64
            )
        };
        println!("| {name} | {} | {} | {} |", per(raw), per(json), per(text));
    }
}
