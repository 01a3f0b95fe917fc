//! HTTP/1 through `--decode http`'s writer: a call stream (see the library) whose first call
//! starts as HTTP/1 (a start line chosen by the options' free bits, or the stream as it is).
//! Checks: no panic, the decoders' memory bound after every call, nothing held once the
//! connections close, every exchange counted is written, bodies within `--max-body`, the
//! output UTF-8 (text, hex) or JSON lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use probectl_fuzz::{parse_calls, run_http, Call, Options};

const STARTS: [&[u8]; 8] = [
    b"",
    b"GET / HTTP/1.1\r\nHost: h\r\n",
    b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n",
    b"HEAD / HTTP/1.1\r\n",
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.0 200 OK\r\n",
    b"CONNECT h:443 HTTP/1.1\r\n",
    b"PUT /u HTTP/1.1\r\nContent-Length: 5\r\n",
];

fuzz_target!(|data: &[u8]| {
    let Some((&options, rest)) = data.split_first() else {
        return;
    };
    let options = Options::parse(options);
    let mut calls = parse_calls(rest);
    let start = STARTS[usize::from(options.extra)];
    if !start.is_empty() {
        let response = start.starts_with(b"HTTP/");
        match calls.first_mut() {
            Some(first) => {
                first.read = response;
                first.data.splice(0..0, start.iter().copied());
            }
            None => calls.push(Call {
                read: response,
                conn: 1,
                lost: 0,
                uncaptured: 0,
                close_after: false,
                data: start.to_vec(),
            }),
        }
    }
    run_http(options, &calls);
});
