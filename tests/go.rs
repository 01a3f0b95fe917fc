//! Go's crypto/tls (the `go` group, `abi = "go"`): real Go programs built by the test with
//! Debian's Go, traced through real BPF, compared byte for byte with what the peers were given
//! to send and what they recorded.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use common::*;

/// How a Go test program is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Build {
    /// `go build`: with `.symtab`.
    Normal,
    /// `go build -ldflags "-s -w"`: no symbol table, functions only in the pclntab.
    Stripped,
    /// `go build -buildmode=pie -ldflags "-s -w"`: the pclntab inside `.data.rel.ro`.
    StrippedPie,
    /// Go 1.23 (bookworm-backports, scripts/setup), `go build`: a newer ABI and runtime.
    Go123,
    /// Go 1.23, stripped PIE.
    Go123StrippedPie,
}

impl Build {
    fn flags(self) -> &'static [&'static str] {
        match self {
            Build::Normal | Build::Go123 => &[],
            Build::Stripped => &["-ldflags", "-s -w"],
            Build::StrippedPie | Build::Go123StrippedPie => {
                &["-buildmode=pie", "-ldflags", "-s -w"]
            }
        }
    }

    /// The Go toolchain that builds it: Debian 12's go (1.19), or Go 1.23.
    fn go(self) -> &'static str {
        match self {
            Build::Go123 | Build::Go123StrippedPie => "/usr/lib/go-1.23/bin/go",
            _ => "go",
        }
    }
}

/// tests/peers/go_https.go built with the system's `go` (once per build kind).
fn go_https(build: Build) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<Build, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
    let mut built = built
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = built.get(&build) {
        return path.clone();
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("probectl-tests-go");
    std::fs::create_dir_all(&dir).expect("dir");
    let program = dir.join(format!("go_https-{build:?}").to_lowercase());
    let status = Command::new(build.go())
        .arg("build")
        .args(build.flags())
        .arg("-o")
        .arg(&program)
        .arg(peer("go_https.go"))
        .env("GO111MODULE", "off")
        // Never fetch another toolchain (Go 1.21+ may): only the installed one.
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", dir.join(format!("cache-{build:?}")))
        .status()
        .expect("go build");
    assert!(status.success(), "go build {build:?}");
    built.insert(build, program.clone());
    program
}

/// Bytes no two tests share (a counter-seeded xorshift), so a stream can only match its own.
fn payload(tag: &str, len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ (len as u64);
    for byte in tag.bytes() {
        state = state.rotate_left(7) ^ u64::from(byte);
    }
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// The pid probectl reports for the command it started.
fn command_pid(stderr: &str) -> u32 {
    stderr
        .lines()
        .find_map(|line| {
            let rest = &line[line.find(" in command ")?..];
            let at = rest.find("(pid ")? + "(pid ".len();
            rest[at..].split(')').next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no command pid in:\n{stderr}"))
}

/// What follows the HTTP head (the first empty line) in a stream.
fn body_of(stream: &[u8]) -> &[u8] {
    let at = stream
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no HTTP head in {:?}",
                String::from_utf8_lossy(&stream[..stream.len().min(200)])
            )
        });
    &stream[at + 4..]
}

/// A go_https server on a free port answering with `response`, recording request bodies.
fn go_server(build: Build, response: &[u8], tag: &str) -> (Guard, u16, PathBuf) {
    go_server_with(build, response, tag, &[])
}

fn go_server_with(
    build: Build,
    response: &[u8],
    tag: &str,
    env: &[(&str, &str)],
) -> (Guard, u16, PathBuf) {
    let (cert, key) = cert_and_key();
    let response_file = scratch_file(&format!("{tag}-response"));
    std::fs::write(&response_file, response).expect("write response");
    let request_log = scratch_file(&format!("{tag}-requests"));
    let port = free_port();
    let child = Command::new(go_https(build))
        .arg("server")
        .arg(port.to_string())
        .arg(cert)
        .arg(key)
        .arg(&response_file)
        .env("REQUEST_LOG", &request_log)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // wait_for_port's plain TCP probe makes it log a failed handshake.
        .stderr(Stdio::null())
        .spawn()
        .expect("go server");
    let server = Guard(child);
    wait_for_port(port);
    (server, port, request_log)
}

/// A net/http client POSTs a body to a net/http server, HTTP/1.1 over TLS, both Go programs
/// of `build`: the server traced with `--pid`, the client started by probectl (`--`). Every
/// stream is compared with what its peer was given to send.
fn https_exchange(build: Build) {
    let tag = format!("{build:?}");
    // 8 MiB through the normal build: thousands of calls, several chunks each.
    let response_len = if build == Build::Normal {
        8 * 1024 * 1024 + 17
    } else {
        1024 * 1024 + 17
    };
    let response = payload(&format!("{tag}-response"), response_len);
    let post = payload(&format!("{tag}-post"), 200 * 1024 + 3);
    let (server, port, request_log) = go_server(build, &response, &tag);
    let server_pid = server.pid().to_string();
    // net/http hands the whole response body to one (*Conn).Write: let the call be captured
    // whole (the default --max-bytes is 1 MiB).
    let server_trace = Trace::start(
        &[
            "go",
            "--pid",
            &server_pid,
            "--max-bytes",
            "16777216",
            "--ring-bytes",
            "67108864",
        ],
        &[],
    );
    let post_file = scratch_file(&format!("{tag}-post"));
    std::fs::write(&post_file, &post).expect("write post");
    let received = scratch_file(&format!("{tag}-received"));
    let program = go_https(build);
    let client = Trace::start(
        &["go"],
        &[
            program.to_str().expect("path"),
            "client",
            &port.to_string(),
            post_file.to_str().expect("path"),
            received.to_str().expect("path"),
        ],
    )
    .wait();
    let server_run = server_trace.stop();
    assert!(client.status.success(), "{}", client.stderr);
    assert!(server_run.status.success(), "{}", server_run.stderr);
    // The peers themselves got what was sent.
    assert_eq!(std::fs::read(&received).expect("client's record"), response);
    assert_eq!(std::fs::read(&request_log).expect("server's record"), post);

    let client_pid = command_pid(&client.stderr);
    let written = stream(&client.events, client_pid, "write");
    assert!(
        written.starts_with(b"POST /upload HTTP/1.1\r\n"),
        "{:?}",
        String::from_utf8_lossy(&written[..written.len().min(200)])
    );
    assert_eq!(body_of(&written), post, "the client's POST body");
    let read = stream(&client.events, client_pid, "read");
    assert!(read.starts_with(b"HTTP/1.1 200 OK\r\n"));
    let same = |got: &[u8], want: &[u8], what: &str| {
        assert!(
            got == want,
            "{what}: {} bytes captured, {} expected",
            got.len(),
            want.len()
        );
    };
    same(
        body_of(&read),
        &response,
        "the response body the client read",
    );
    // One connection, keyed by the *tls.Conn.
    let client_events: Vec<&Event> = client
        .events
        .iter()
        .filter(|event| event.pid == client_pid)
        .collect();
    let conn = &client_events[0].json["conn"];
    assert!(client_events
        .iter()
        .all(|event| event.json["conn"]["id"] == conn["id"]
            && event.json["conn"]["handle"] == conn["handle"]));
    assert!(client_events
        .iter()
        .all(|event| event.function.starts_with("crypto/tls.(*Conn).")));
    // The fd and addresses, learnt from the socket syscalls Go makes inside the calls.
    let server_address = format!("127.0.0.1:{port}");
    assert_eq!(conn["remote"].as_str(), Some(server_address.as_str()));
    assert_eq!(conn["transport"].as_str(), Some("tcp"));
    assert!(conn["fd"].as_i64().is_some(), "{conn}");
    for key in ["fd", "local", "remote"] {
        assert!(
            client_events
                .iter()
                .all(|event| event.json["conn"][key] == conn[key]),
            "one conn.{key}"
        );
    }

    let server_pid = server.pid();
    // The server's side of the same connection: its local address is the client's remote,
    // its remote the client's local.
    let server_conns: Vec<&serde_json::Value> = server_run
        .events
        .iter()
        .filter(|event| event.pid == server_pid)
        .map(|event| &event.json["conn"])
        .collect();
    assert!(!server_conns.is_empty());
    for server_conn in &server_conns {
        assert_eq!(server_conn["local"], conn["remote"], "{server_conn}");
        assert_eq!(server_conn["remote"], conn["local"], "{server_conn}");
        assert!(server_conn["fd"].as_i64().is_some(), "{server_conn}");
    }
    let server_read = stream(&server_run.events, server_pid, "read");
    assert!(server_read.starts_with(b"POST /upload HTTP/1.1\r\n"));
    assert_eq!(body_of(&server_read), post, "the POST body the server read");
    let server_written = stream(&server_run.events, server_pid, "write");
    assert!(server_written.starts_with(b"HTTP/1.1 200 OK\r\n"));
    same(
        body_of(&server_written),
        &response,
        "the response body the server wrote",
    );
    server_run.assert_no_losses();
    assert!(
        client.stderr.contains("(Go 1."),
        "the attach report names the Go version:\n{}",
        client.stderr
    );
    client.assert_no_losses();
    assert!(
        !client.stderr.contains("warning:"),
        "a traced Go command gets no warning:\n{}",
        client.stderr
    );
}

#[test]
fn go_https_client_and_server_normal_build() {
    https_exchange(Build::Normal);
}

#[test]
fn go_https_client_and_server_stripped() {
    https_exchange(Build::Stripped);
}

#[test]
fn go_https_client_and_server_stripped_pie() {
    https_exchange(Build::StrippedPie);
}

#[test]
fn go_1_23_https_client_and_server() {
    https_exchange(Build::Go123);
}

#[test]
fn go_1_23_https_client_and_server_stripped_pie() {
    https_exchange(Build::Go123StrippedPie);
}

/// A client whose goroutine grows its stack (deep recursion) and has it shrunk by the
/// collector between Reads of a tls.Conn, and whose first Write runs the handshake on a fresh
/// 8 KiB stack: it runs as it does untraced (a uretprobe's rewritten return address would
/// crash it with "unexpected return pc"), and what it read is captured byte for byte.
#[test]
fn a_go_program_that_grows_its_stacks_runs_correctly_traced() {
    let response = payload("deep-response", 300 * 1000 + 11);
    let (_server, port, _) = go_server(Build::Normal, &response, "deep");
    let program = go_https(Build::Normal);
    let untraced_file = scratch_file("deep-untraced");
    let untraced = Command::new(&program)
        .arg("deep")
        .arg(port.to_string())
        .arg(&untraced_file)
        .output()
        .expect("untraced run");
    assert!(untraced.status.success(), "{untraced:?}");
    let traced_file = scratch_file("deep-traced");
    let run = Trace::start(
        &["go"],
        &[
            program.to_str().expect("path"),
            "deep",
            &port.to_string(),
            traced_file.to_str().expect("path"),
        ],
    )
    .wait();
    assert!(run.status.success(), "{}", run.stderr);
    let recorded = std::fs::read(&traced_file).expect("traced run's record");
    assert_eq!(body_of(&recorded), response);
    // Same program output traced and untraced: same length and sha256 of what it read (the
    // HTTP head's Date may differ in its bytes, never in its length).
    let untraced_record = std::fs::read(&untraced_file).expect("untraced record");
    assert_eq!(body_of(&untraced_record), response);
    assert_eq!(untraced_record.len(), recorded.len());
    let pid = command_pid(&run.stderr);
    assert_eq!(
        stream(&run.events, pid, "read"),
        recorded,
        "the read stream is what the program read"
    );
    assert_eq!(
        stream(&run.events, pid, "write"),
        b"GET /deep HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    );
    run.assert_no_losses();
}

/// `check --pid` on a stripped Go server: the go group, its Go version, and the same function
/// offsets (from the pclntab) as the symbol table of the same program built unstripped gives;
/// the return probes are on every `ret` objdump finds in the function.
#[test]
fn check_finds_the_functions_of_a_stripped_go_program() {
    let (normal, _, _) = go_server(Build::Normal, b"x", "check-normal");
    let (stripped, _, _) = go_server(Build::Stripped, b"x", "check-stripped");
    let check = |pid: u32| {
        let (code, stdout, stderr) = probectl(&["check", "--pid", &pid.to_string()]);
        assert_eq!(code, 0, "{stderr}");
        stdout
    };
    let function_lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| line.contains("crypto/tls.(*Conn)."))
            .map(str::trim)
            .map(str::to_string)
            .collect()
    };
    let normal_text = check(normal.pid());
    let stripped_text = check(stripped.pid());
    assert!(stripped_text.contains("version: Go 1."), "{stripped_text}");
    assert_eq!(function_lines(&stripped_text).len(), 3, "{stripped_text}");
    assert_eq!(function_lines(&stripped_text), function_lines(&normal_text));
    // Every `ret` of the function, as objdump decodes it from the unstripped build.
    let program = go_https(Build::Normal);
    let nm = Command::new("nm").arg(&program).output().expect("nm");
    let nm = String::from_utf8_lossy(&nm.stdout);
    for function in ["crypto/tls.(*Conn).Write", "crypto/tls.(*Conn).Read"] {
        let mut addresses: Vec<u64> = nm
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let address = u64::from_str_radix(fields.next()?, 16).ok()?;
                let _kind = fields.next()?;
                Some((address, fields.next()?.to_string()))
            })
            .map(|(address, _)| address)
            .collect();
        addresses.sort_unstable();
        let start = nm
            .lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                let address = fields.next()?;
                let _kind = fields.next()?;
                (fields.next()? == function).then(|| u64::from_str_radix(address, 16).ok())?
            })
            .expect("nm knows the function");
        let end = *addresses
            .iter()
            .find(|&&address| address > start)
            .expect("a next symbol");
        let objdump = Command::new("objdump")
            .args([
                "-d",
                "--no-show-raw-insn",
                &format!("--start-address={start:#x}"),
                &format!("--stop-address={end:#x}"),
            ])
            .arg(&program)
            .output()
            .expect("objdump");
        let rets: Vec<String> = String::from_utf8_lossy(&objdump.stdout)
            .lines()
            .filter_map(|line| {
                let (address, rest) = line.trim_start().split_once(":\t")?;
                let address = u64::from_str_radix(address.trim(), 16).ok()?;
                (rest.split_whitespace().next()? == "ret")
                    .then(|| format!("+{:#x}", address - start))
            })
            .collect();
        assert!(!rets.is_empty(), "objdump found no ret in {function}");
        let line = function_lines(&normal_text)
            .into_iter()
            .find(|line| line.starts_with(function))
            .expect("check shows the function");
        assert!(
            // Found by name (Go's pclntab counts as a symbol table): no "[...]" mark.
            line.ends_with(&format!("ret {}", rets.join(","))),
            "{line} vs objdump's {rets:?}"
        );
    }
    let shown: String = stripped_text
        .lines()
        .skip_while(|line| !line.contains("(executable)"))
        .take(6)
        .map(|line| format!("{line}\n"))
        .collect();
    let shown = shown.replace(
        go_https(Build::Stripped)
            .parent()
            .expect("dir")
            .to_str()
            .expect("path"),
        "[dir]",
    );
    insta::assert_snapshot!(redact_offsets(&shown));
}

/// The server's answer to /item/NAME (tests/peers/go_https.go, `itemBody`).
fn item_body(name: &str) -> Vec<u8> {
    format!("item {name};").repeat(3000).into_bytes()
}

/// The bodies of the HTTP/1.1 responses (with Content-Length) one after another in `stream`.
fn response_bodies(mut stream: &[u8]) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    while !stream.is_empty() {
        let head_end = stream
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .expect("a response head")
            + 4;
        let head = String::from_utf8_lossy(&stream[..head_end]).to_string();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .expect("Content-Length")
            .trim()
            .parse()
            .expect("a length");
        bodies.push(stream[head_end..head_end + length].to_vec());
        stream = &stream[head_end + length..];
    }
    bodies
}

/// 50 concurrent requests from 50 goroutines over at most 5 connections, GOMAXPROCS=2
/// (goroutines move between threads): every response body is in the stream of the connection
/// the client says it used, identified by the local address the client saw.
#[test]
fn concurrent_go_requests_land_in_their_own_connections() {
    let (_server, port, _) = go_server(Build::Normal, b"unused", "parallel");
    let program = go_https(Build::Normal);
    let listing = scratch_file("parallel-listing");
    let run = Trace::start(
        &["go"],
        &[
            program.to_str().expect("path"),
            "parallel",
            &port.to_string(),
            "50",
            listing.to_str().expect("path"),
        ],
    )
    .wait();
    assert!(run.status.success(), "{}", run.stderr);
    // The client's own record: which local address each request went out from.
    let mut expected: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    let mut expected_requests: HashMap<String, Vec<String>> = HashMap::new();
    let listing = std::fs::read_to_string(&listing).expect("listing");
    for line in listing.lines() {
        let (item, local) = line.split_once(' ').expect("item and address");
        expected
            .entry(local.to_string())
            .or_default()
            .push(item_body(item));
        expected_requests
            .entry(local.to_string())
            .or_default()
            .push(format!("GET /item/{item} HTTP/1.1"));
    }
    assert_eq!(expected.values().map(Vec::len).sum::<usize>(), 50);
    let mut captured: HashMap<String, Vec<u8>> = HashMap::new();
    let mut written: HashMap<String, Vec<u8>> = HashMap::new();
    for event in &run.events {
        let conn = &event.json["conn"];
        let local = conn["local"].as_str().unwrap_or_else(|| panic!("{conn}"));
        assert_eq!(
            conn["remote"].as_str(),
            Some(format!("127.0.0.1:{port}").as_str())
        );
        let streams = if event.direction == "read" {
            &mut captured
        } else {
            &mut written
        };
        streams
            .entry(local.to_string())
            .or_default()
            .extend(&event.data);
    }
    for (local, requests) in &expected_requests {
        let mut requests = requests.clone();
        let mut sent: Vec<String> = String::from_utf8_lossy(&written[local])
            .lines()
            .filter(|line| line.starts_with("GET "))
            .map(str::to_string)
            .collect();
        requests.sort();
        sent.sort();
        assert_eq!(sent, requests, "the requests of connection {local}");
    }
    let mut connections: Vec<&String> = expected.keys().collect();
    connections.sort();
    let mut seen: Vec<&String> = captured.keys().collect();
    seen.sort();
    assert_eq!(seen, connections, "the same connections");
    for (local, bodies) in &expected {
        let mut bodies = bodies.clone();
        let mut got = response_bodies(&captured[local]);
        bodies.sort();
        got.sort();
        assert!(got == bodies, "the bodies of connection {local}");
    }
    run.assert_no_losses();
}

/// A Go program started while a system-wide trace runs is attached when it execs (it is held
/// until the trace reports the attach) and captured.
#[test]
fn a_go_program_started_during_a_system_wide_trace_is_captured() {
    let _alone = exclusive();
    let response = payload("system-wide-response", 64 * 1024 + 5);
    let post = payload("system-wide-post", 10 * 1024 + 1);
    // The server is another executable than the client: the client's file is new to the trace.
    let (_server, port, _) = go_server(Build::Normal, &response, "system-wide");
    let trace = Trace::start(&["go"], &[]);
    let post_file = scratch_file("system-wide-post");
    std::fs::write(&post_file, &post).expect("write post");
    let received = scratch_file("system-wide-received");
    let mut client = Command::new(go_https(Build::Stripped))
        .arg("client")
        .arg(port.to_string())
        .arg(&post_file)
        .arg(&received)
        .env("GO_HTTPS_WAIT_STDIN", "1")
        .stdin(Stdio::piped())
        .spawn()
        .expect("go client");
    let client_pid = client.id();
    // Attached for this client, or already for another process of the same executable that
    // another test started meanwhile (then this client's exec needs no new attach).
    let executable = go_https(Build::Stripped).display().to_string();
    let attached = |text: &str| {
        text.lines()
            .any(|line| line.contains(&executable) && line.contains("(new in pid "))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !attached(&trace.stderr_text()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the new Go program was never attached:\n{}",
            trace.stderr_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    {
        use std::io::Write as _;
        let mut stdin = client.stdin.take().expect("stdin");
        stdin.write_all(b"go\n").expect("release the client");
    }
    let output = client.wait_with_output().expect("client");
    assert!(output.status.success());
    let run = trace.stop();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(std::fs::read(&received).expect("client's record"), response);
    assert_eq!(body_of(&stream(&run.events, client_pid, "write")), post);
    assert_eq!(body_of(&stream(&run.events, client_pid, "read")), response);
}

/// The payloads of the HTTP/2 DATA frames of stream `stream_id` in a captured stream, in order.
/// Frames: a 9-byte header (24-bit length, type, flags, 31-bit stream id); DATA is type 0, and
/// its PADDED flag (0x8) puts a pad length byte first and padding last.
fn http2_data(mut bytes: &[u8], stream_id: u32) -> Vec<u8> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if bytes.starts_with(PREFACE) {
        bytes = &bytes[PREFACE.len()..];
    }
    let mut data = Vec::new();
    while bytes.len() >= 9 {
        let length = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        let (kind, flags) = (bytes[3], bytes[4]);
        let id = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
        let payload = &bytes[9..9 + length];
        if kind == 0 && id == stream_id {
            if flags & 0x8 != 0 {
                let pad = payload[0] as usize;
                data.extend(&payload[1..payload.len() - pad]);
            } else {
                data.extend(payload);
            }
        }
        bytes = &bytes[9 + length..];
    }
    assert!(bytes.is_empty(), "a partial frame at the end");
    data
}

/// Go's default HTTP/2 (ALPN h2) between a Go client and server: the client's stream is the
/// HTTP/2 connection, whose DATA frames carry exactly the body the server answers with.
#[test]
fn go_http2_client_and_server() {
    let (server, port, _) =
        go_server_with(Build::Normal, b"unused", "h2", &[("GO_HTTPS_HTTP2", "1")]);
    let server_pid = server.pid().to_string();
    let server_trace = Trace::start(&["go", "--pid", &server_pid], &[]);
    let received = scratch_file("h2-received");
    let program = go_https(Build::Stripped);
    let client = Trace::start(
        &["go"],
        &[
            program.to_str().expect("path"),
            "h2",
            &port.to_string(),
            "http2-body",
            received.to_str().expect("path"),
        ],
    )
    .wait();
    let server_run = server_trace.stop();
    assert!(client.status.success(), "{}", client.stderr);
    let body = item_body("http2-body");
    assert_eq!(std::fs::read(&received).expect("client's record"), body);
    let client_pid = command_pid(&client.stderr);
    let written = stream(&client.events, client_pid, "write");
    assert!(written.starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    assert_eq!(
        http2_data(&stream(&client.events, client_pid, "read"), 1),
        body,
        "the body in the DATA frames the client read"
    );
    assert_eq!(
        http2_data(&stream(&server_run.events, server.pid(), "write"), 1),
        body,
        "the body in the DATA frames the server wrote"
    );
}

/// A Go server killed while its goroutines are blocked in `Read`: those calls never return,
/// and what they left in the kernel's table of Go calls is removed when the process's exit is
/// heard (the report counts it); the table does not fill with the dead.
#[test]
fn calls_left_in_flight_by_a_killed_go_server_are_removed() {
    const IDLE: usize = 12;
    let _alone = exclusive();
    let response = payload("killed-response", 100);
    let (mut server, port, _) = go_server(Build::Normal, &response, "killed");
    let pid = server.pid().to_string();
    let trace = Trace::start(&["go", "--pid", &pid], &[]);
    // Connections that finish their handshake and send nothing: each server goroutine then
    // waits in tls.(*Conn).Read.
    let mut idle = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import socket, ssl, sys\n\
             port, count = int(sys.argv[1]), int(sys.argv[2])\n\
             context = ssl.create_default_context()\n\
             context.check_hostname = False\n\
             context.verify_mode = ssl.CERT_NONE\n\
             held = [context.wrap_socket(socket.create_connection(('127.0.0.1', port)), server_hostname='x') for _ in range(count)]\n\
             print('ready', flush=True)\n\
             sys.stdin.read()\n",
            &port.to_string(),
            &IDLE.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("idle clients");
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(idle.stdout.take().expect("stdout")),
        &mut ready,
    )
    .expect("ready line");
    assert_eq!(ready.trim(), "ready");
    // The server's goroutines reach Read right after their handshakes.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let _ = server.0.kill();
    let _ = server.0.wait();
    let run = trace.wait();
    drop(idle.stdin.take());
    let _ = idle.wait();
    let removed = run.report_number("/kernel_entries_of_exited_processes_removed/go_calls");
    assert!(
        removed >= IDLE as u64,
        "{removed} Go calls removed, {IDLE} were blocked in Read: {}",
        run.report
    );
}

/// A Go server with thousands of goroutines blocked in `Read` at once (one per connection the
/// client opened and holds), then all of them answering: every blocked call is kept in the
/// kernel's table of Go calls until it returns, and each connection's streams are exactly what
/// the client sent and received (its own record, by its local address), with no loss.
#[test]
fn a_go_server_with_thousands_of_blocked_readers_is_exact() {
    use base64::Engine as _;
    const BLOCKED: usize = 3000;
    let _alone = exclusive();
    let (server, port, _) = go_server(Build::Normal, b"unused", "blocked");
    let pid = server.pid().to_string();
    let trace = Trace::start(&["go", "--pid", &pid], &[]);
    let listing = scratch_file("blocked-listing");
    let client = Command::new(go_https(Build::Normal))
        .args(["blocked", &port.to_string(), &BLOCKED.to_string()])
        .arg(&listing)
        .status()
        .expect("the blocked client");
    assert!(client.success(), "the blocked client failed");
    // The server's last writes and closes are in the ring once the client has read them.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let run = trace.stop();
    run.assert_no_losses();
    // Each call got its fd, though Go preempts goroutines between a call's entry and its
    // first syscall on a busy machine (the note that tells the fd is the goroutine's).
    assert_eq!(
        run.report_number("/fds/events_without_fd"),
        0,
        "{}",
        run.stderr
    );
    let decode = |text: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .expect("base64")
    };
    // The client's record, by its local address (the server's remote one).
    let mut expected: HashMap<String, (Vec<u8>, Vec<u8>)> = HashMap::new();
    for line in std::fs::read_to_string(&listing).expect("listing").lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 4, "{line}");
        expected.insert(
            fields[1].to_string(),
            (decode(fields[2]), decode(fields[3])),
        );
    }
    assert_eq!(expected.len(), BLOCKED);
    let mut captured: HashMap<String, (Vec<u8>, Vec<u8>)> = HashMap::new();
    for event in &run.events {
        let remote = event.json["conn"]["remote"]
            .as_str()
            .unwrap_or_else(|| panic!("{}", event.json))
            .to_string();
        let streams = captured.entry(remote).or_default();
        match event.direction.as_str() {
            "read" => streams.0.extend_from_slice(&event.data),
            _ => streams.1.extend_from_slice(&event.data),
        }
    }
    assert_eq!(
        captured.len(),
        BLOCKED,
        "one connection per client connection"
    );
    for (address, (request, response)) in &expected {
        let (read, written) = &captured[address];
        assert!(read == request, "{address}: the request the server read");
        assert!(
            written == response,
            "{address}: the response the server wrote"
        );
    }
}
