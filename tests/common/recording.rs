//! The recording server (tests/peers/recording_server.py) and what tests compare with its
//! recordings: every byte the server read and wrote per connection, recorded by the server
//! itself, is the independent oracle of what a traced client sent and received.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::Digest as _;

use super::*;

/// The recording server, its port and the directory of its recordings.
pub struct Recording {
    _server: Guard,
    pub port: u16,
    pub dir: PathBuf,
}

impl Recording {
    pub fn start() -> Recording {
        let (cert, key) = cert_and_key();
        Recording::start_with(cert, key)
    }

    /// With the given certificate chain and key (see [`ca_and_leaf`]).
    pub fn start_with(cert: &Path, key: &Path) -> Recording {
        let dir = scratch_file("recording");
        std::fs::create_dir_all(&dir).expect("recording dir");
        let port = free_port();
        let server = Guard(
            Command::new("/usr/bin/python3")
                .arg(peer("recording_server.py"))
                .arg(port.to_string())
                .arg(cert)
                .arg(key)
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("recording server"),
        );
        wait_for_listener(port);
        Recording {
            _server: server,
            port,
            dir,
        }
    }

    /// The client address ("127.0.0.1:PORT") of every connection the server accepted, with
    /// (bytes read, bytes written).
    pub fn by_client(&self) -> BTreeMap<String, (Vec<u8>, Vec<u8>)> {
        (0..)
            .map_while(|n| {
                let peer = std::fs::read_to_string(self.dir.join(format!("{n}.peer"))).ok()?;
                let read = std::fs::read(self.dir.join(format!("{n}.in"))).ok()?;
                let written = std::fs::read(self.dir.join(format!("{n}.out"))).ok()?;
                Some((peer, (read, written)))
            })
            .collect()
    }

    /// (bytes read, bytes written) of every connection the server accepted, in order.
    /// The server's side of tests/peers/fetch_client.js: `GET /download/DOWNLOAD` answered with
    /// the pattern, then a `POST` of `body` answered with its sha256 (the peers worked).
    pub fn assert_fetched(&self, download: usize, body: &[u8]) {
        let connections = self.connections();
        let read: Vec<u8> = connections.iter().flat_map(|c| c.0.clone()).collect();
        let written: Vec<u8> = connections.iter().flat_map(|c| c.1.clone()).collect();
        let requests = http_messages(&read);
        let responses = http_messages(&written);
        assert_eq!(
            requests
                .iter()
                .map(|(line, body)| (line.as_str(), body.len()))
                .collect::<Vec<_>>(),
            [
                (format!("GET /download/{download} HTTP/1.1").as_str(), 0),
                ("POST /upload HTTP/1.1", body.len())
            ],
        );
        assert_eq!(requests[1].1, body);
        assert_eq!(responses.len(), 2);
        assert_eq!(responses[0].1, download_pattern(download));
        assert_eq!(responses[1].1, sha256_hex(body).into_bytes());
    }

    pub fn connections(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..)
            .map_while(|n| {
                let read = std::fs::read(self.dir.join(format!("{n}.in"))).ok()?;
                let written = std::fs::read(self.dir.join(format!("{n}.out"))).ok()?;
                Some((read, written))
            })
            .collect()
    }
}

/// Deterministic bytes that are not text.
pub fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// The bytes recording_server.py sends for `GET /download/N` (its own definition, restated).
pub fn download_pattern(size: usize) -> Vec<u8> {
    (0..251u8).cycle().take(size).collect()
}

/// HTTP/1.1 messages with Content-Length bodies (what the recording server and Bun's fetch
/// exchange here), parsed from one direction of a recording: (start line, body).
pub fn http_messages(mut bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut messages = Vec::new();
    while !bytes.is_empty() {
        let end = bytes
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .expect("a complete head");
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let length: usize = head
            .lines()
            .filter_map(|line| line.split_once(": "))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, value)| value.parse().expect("content-length"));
        let body = bytes[end + 4..end + 4 + length].to_vec();
        messages.push((head.lines().next().unwrap_or_default().to_string(), body));
        bytes = &bytes[end + 4 + length..];
    }
    messages
}

/// The raw events of a run (the lines of `--format json` without `--decode`).
pub fn events_of(run: &FinishedLines) -> Vec<Event> {
    let file = scratch_file("events-copy.json");
    let text: String = run.lines.iter().map(|line| format!("{line}\n")).collect();
    std::fs::write(&file, text).expect("events copy");
    let events = parse_events(&file);
    let _ = std::fs::remove_file(&file);
    events
}

pub fn decode_b64(value: &serde_json::Value) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(value.as_str().expect("base64 string"))
        .expect("base64")
}
