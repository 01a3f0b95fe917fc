//! Throughput of the output encoders, fast and reference, on random and on printable data:
//! `cargo run --release -p probectl-encode --example encode_throughput [MB]` (default 64).
//! scripts/bench runs it; BENCHMARKS.md reports its numbers.

use std::time::Instant;

use probectl_encode as encode;

type Encoder = fn(&[u8], &mut Vec<u8>);

/// MB/s of input through `encoder`, over `data` in 16 KiB events (one TLS record each).
fn throughput(encoder: Encoder, data: &[u8]) -> f64 {
    let mut out = Vec::new();
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let started = Instant::now();
        for event in data.chunks(16384) {
            out.clear();
            encoder(event, &mut out);
            std::hint::black_box(&out);
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    data.len() as f64 / best / 1e6
}

fn main() {
    let megabytes: usize = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(64);
    let len = megabytes * 1_000_000;
    // xorshift64*: random bytes without a dependency.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let random: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect();
    let printable: Vec<u8> = random
        .iter()
        .enumerate()
        .map(|(index, &byte)| {
            if index % 80 == 79 {
                b'\n'
            } else {
                0x20 + byte % 0x5f
            }
        })
        .collect();
    let encoders: [(&str, Encoder, Encoder); 3] = [
        ("text", encode::escape_text, encode::reference::escape_text),
        ("hex", encode::hexdump, encode::reference::hexdump),
        ("base64", encode::base64, encode::reference::base64),
    ];
    println!("encoder\tdata\tfast MB/s\treference MB/s");
    for (name, fast, reference) in encoders {
        for (kind, data) in [("random", &random), ("printable", &printable)] {
            println!(
                "{name}\t{kind}\t{:.0}\t{:.0}",
                throughput(fast, data),
                throughput(reference, data)
            );
        }
    }
}
