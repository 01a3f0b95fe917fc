//! Probe placement (core/src/symbols/placement.rs) through real BPF: the same OpenSSL calls captured
//! byte for byte with `--placement auto` (SSL_write/SSL_read of libssl.so.3 on emulated entry
//! and exit points) and `--placement classic` (entry uprobe + uretprobe): error returns, a
//! traced call nested in another, a call larger than a chunk, and SSL_read returning 0 at close.

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use common::*;

const LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";

fn ssl_calls() -> &'static std::path::Path {
    static BUILT: OnceLock<std::path::PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let source = std::fs::read_to_string(peer("ssl_calls.c")).expect("ssl_calls.c");
        gcc(&source, "ssl_calls", &["-lssl", "-lcrypto"])
    })
}

/// What the program sends, by file name in its directory.
fn messages(tag: &str) -> BTreeMap<&'static str, Vec<u8>> {
    let mut request =
        format!("GET /placement/{tag} HTTP/1.0\r\nHost: localhost\r\n\r\n").into_bytes();
    request.extend_from_slice(&unique_request(tag));
    let big: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let response: Vec<u8> = (0..5_000u32).map(|i| (i * 13 % 256) as u8).collect();
    let nested = format!("nested SSL_write inside SSL_read ({tag})\n").into_bytes();
    BTreeMap::from([
        ("request", request),
        ("big", big),
        ("response", response),
        ("nested", nested),
    ])
}

/// The bytes of one connection handle in one direction, in order.
fn handle_stream(events: &[Event], pid: u32, handle: &str, direction: &str) -> Vec<u8> {
    events
        .iter()
        .filter(|event| {
            event.pid == pid
                && event.direction == direction
                && event.json["conn"]["handle"].as_str() == Some(handle)
        })
        .flat_map(|event| event.data.iter().copied())
        .collect()
}

fn run_with(placement: &str, emulated: usize) {
    let _exclusive = exclusive();
    let (cert, key) = cert_and_key();
    let dir = scratch().join(format!("ssl-calls-{placement}"));
    std::fs::create_dir_all(&dir).expect("dir");
    let sent = messages(placement);
    for (name, bytes) in &sent {
        std::fs::write(dir.join(name), bytes).expect("write message");
    }
    let program = ssl_calls().to_str().expect("path");
    let trace = Trace::start(
        &["openssl", "--placement", placement],
        &[
            program,
            cert.to_str().expect("path"),
            key.to_str().expect("path"),
            dir.to_str().expect("path"),
        ],
    );
    let run = trace.wait();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stderr.lines().any(|line| line.contains(LIBSSL)
            && line.ends_with(&format!(": 6 probes ({emulated} emulated)"))),
        "{}",
        run.stderr
    );
    let results: BTreeMap<String, String> = std::fs::read_to_string(dir.join("results"))
        .expect("results")
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    assert_eq!(results["write_negative"], "-1");
    assert_eq!(results["nested"], "1");
    assert_eq!(results["read_at_close"], "0");

    let pid = run
        .events
        .iter()
        .find(|event| event.comm.starts_with("ssl_calls"))
        .map(|event| event.pid)
        .unwrap_or_else(|| panic!("no event of ssl_calls:\n{}", run.stderr));
    let events: Vec<&Event> = run.events.iter().filter(|event| event.pid == pid).collect();
    let all: Vec<Event> = events.iter().map(|event| (*event).clone()).collect();
    let handle = |name: &str| results[name].clone();
    let mut request_and_big = sent["request"].clone();
    request_and_big.extend_from_slice(&sent["big"]);
    assert_eq!(
        handle_stream(&all, pid, &handle("client_a"), "write"),
        request_and_big
    );
    assert_eq!(
        handle_stream(&all, pid, &handle("server_a"), "read"),
        request_and_big
    );
    assert_eq!(
        handle_stream(&all, pid, &handle("server_a"), "write"),
        sent["response"]
    );
    assert_eq!(
        handle_stream(&all, pid, &handle("client_a"), "read"),
        sent["response"]
    );
    assert_eq!(
        handle_stream(&all, pid, &handle("client_b"), "write"),
        sent["nested"]
    );
    assert_eq!(
        handle_stream(&all, pid, &handle("server_b"), "read"),
        sent["nested"]
    );
    // Nothing else: the -1 and the 0 returns captured nothing, nothing was cut.
    let expected_bytes: usize =
        2 * (request_and_big.len() + sent["response"].len() + sent["nested"].len());
    let captured: usize = events.iter().map(|event| event.data.len()).sum();
    assert_eq!(captured, expected_bytes, "{}", run.stderr);
    assert!(events
        .iter()
        .all(|event| event.truncated == 0 && event.len > 0));
    // The large write is one call, captured whole.
    assert!(events
        .iter()
        .any(|event| event.function == "SSL_write" && event.len == sent["big"].len() as u64));
}

#[test]
fn openssl_calls_are_byte_exact_with_emulated_placement() {
    run_with("auto", 4);
}

#[test]
fn openssl_calls_are_byte_exact_with_classic_placement() {
    run_with("classic", 0);
}
