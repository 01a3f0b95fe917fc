//! HTTP/2 (frames, HPACK, gRPC rendering) through `--decode http`'s writer. The input is a
//! call stream (see the library) whose calls hold compact frames, `[type][flags][stream: u8]
//! [length: u16 BE][payload]`, that the target writes with correct 9-byte headers; type 0xff
//! is raw bytes (cut frames, garbage). The options' free bits: 1 the client preface opens the
//! first write call, 2 the server's SETTINGS opens the first read call.
//! Checks: as the `http1` target (memory bound after every call, nothing held after the
//! closes, exchanges counted = written, bodies within `--max-body`, valid output).
#![no_main]

use libfuzzer_sys::fuzz_target;
use probectl_fuzz::{frame, parse_calls, run_http, Options};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frames(mut compact: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while compact.len() >= 5 {
        let (kind, flags, stream) = (compact[0], compact[1], u32::from(compact[2]));
        let length = usize::from(u16::from_be_bytes([compact[3], compact[4]]));
        compact = &compact[5..];
        let length = length.min(compact.len());
        let (payload, rest) = compact.split_at(length);
        compact = rest;
        if kind == 0xff {
            out.extend_from_slice(payload);
        } else {
            out.extend(frame(kind, flags, stream, payload));
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&options, rest)) = data.split_first() else {
        return;
    };
    let options = Options::parse(options);
    let mut calls = parse_calls(rest);
    let (mut preface, mut settings) = (options.extra & 1 != 0, options.extra & 2 != 0);
    for call in &mut calls {
        call.data = frames(&call.data);
        if preface && !call.read {
            call.data.splice(0..0, PREFACE.iter().copied());
            preface = false;
        }
        if settings && call.read {
            call.data.splice(0..0, frame(4, 0, 0, &[]));
            settings = false;
        }
    }
    run_http(options, &calls);
});
