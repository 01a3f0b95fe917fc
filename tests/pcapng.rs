//! `--format pcapng` read back by the real tshark: what tshark dissects and reassembles must be
//! what the peers really sent (the file served, the bytes fed to a server), at the real
//! addresses and ports.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// Bytes that are not text, so that nothing but an exact copy matches.
fn pattern(size: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

/// A directory holding one file of `size` bytes, for `openssl s_server -WWW` to serve.
fn web_root(name: &str, size: usize) -> (PathBuf, Vec<u8>) {
    let root = scratch_file("www");
    std::fs::create_dir_all(&root).expect("web root");
    let content = pattern(size, size as u32);
    std::fs::write(root.join(name), &content).expect("write file");
    (root, content)
}

/// Runs `probectl run <args> --format pcapng -o <file> -- <command>` to completion; returns
/// the capture file, probectl's stderr, and the command's stdout.
fn trace_to_pcapng(args: &[&str], command: &[&str]) -> (PathBuf, String, String) {
    let capture = scratch_file("capture.pcapng");
    let output = Command::new(PROBECTL)
        .arg("run")
        .args(args)
        .args(["--format", "pcapng", "-o"])
        .arg(&capture)
        .arg("--")
        .args(command)
        .stdin(Stdio::null())
        .output()
        .expect("probectl");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "probectl failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (capture, stderr, stdout)
}

/// `tshark -r <capture> <args>`: its stdout.
fn tshark(capture: &Path, args: &[&str]) -> String {
    let output = Command::new("tshark")
        .arg("-r")
        .arg(capture)
        .args(args)
        .output()
        .expect("tshark");
    assert!(
        output.status.success(),
        "tshark {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// `tshark -z follow,tcp,raw,<stream>`: the two nodes ("addr:port") and what each sent.
fn follow(capture: &Path, stream: u32) -> ([String; 2], [Vec<u8>; 2]) {
    let text = tshark(capture, &["-q", "-z", &format!("follow,tcp,raw,{stream}")]);
    let mut nodes = [String::new(), String::new()];
    let mut data = [Vec::new(), Vec::new()];
    for line in text.lines() {
        if let Some(node) = line.strip_prefix("Node 0: ") {
            nodes[0] = node.to_string();
        } else if let Some(node) = line.strip_prefix("Node 1: ") {
            nodes[1] = node.to_string();
        } else if let Some(hex) = line.strip_prefix('\t') {
            data[1].extend(hex_decode(hex));
        } else if !line.is_empty() && line.bytes().all(|b| b.is_ascii_hexdigit()) {
            data[0].extend(hex_decode(line));
        }
    }
    (nodes, data)
}

/// curl fetches a 60 kB file from `openssl s_server -WWW` at `host` under probectl; tshark
/// must show the request and the response on the real ports and reassemble the file.
fn curl_fetch_is_dissected(host: &str) {
    let name = format!("file-{}.bin", std::process::id());
    let (root, content) = web_root(&name, 60_000);
    let (_server, port) = www_server(&root, host);
    let body = scratch_file("body");
    let url = format!("https://{host}:{port}/{name}");
    let (capture, _, client_port) = trace_to_pcapng(
        &["openssl"],
        &[
            "curl",
            "-gsk",
            "-w",
            "%{local_port}",
            &url,
            "-o",
            body.to_str().expect("path"),
        ],
    );
    assert_eq!(std::fs::read(&body).expect("curl's body"), content);

    // No options: the request and the response are dissected as HTTP.
    let listing = tshark(&capture, &[]);
    assert!(
        listing.contains(&format!("GET /{name} HTTP/1.1")),
        "{listing}"
    );
    assert!(listing.contains("HTTP/1.0 200 ok"), "{listing}");
    // On the real addresses and ports.
    let address = host.trim_matches(|c| c == '[' || c == ']');
    let ip_field = if address.contains(':') { "ipv6" } else { "ip" };
    let request = tshark(
        &capture,
        &[
            "-Y",
            "http.request",
            "-T",
            "fields",
            "-e",
            &format!("{ip_field}.src"),
            "-e",
            "tcp.srcport",
            "-e",
            &format!("{ip_field}.dst"),
            "-e",
            "tcp.dstport",
            "-e",
            "http.request.uri",
        ],
    );
    assert_eq!(
        request.trim(),
        format!("{address}\t{client_port}\t{address}\t{port}\t/{name}")
    );
    let response = tshark(
        &capture,
        &[
            "-Y",
            "http.response",
            "-T",
            "fields",
            "-e",
            "tcp.srcport",
            "-e",
            "tcp.dstport",
            "-e",
            "http.response.code",
        ],
    );
    assert_eq!(response.trim(), format!("{port}\t{client_port}\t200"));

    // The server's stream reassembles: the response head, then the file, byte-exact.
    let (nodes, streams) = follow(&capture, 0);
    assert_eq!(
        nodes,
        [format!("{host}:{client_port}"), format!("{host}:{port}")]
    );
    assert_eq!(
        streams[0],
        format!("GET /{name} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n").into_bytes()
    );
    let head = b"HTTP/1.0 200 ok\r\nContent-type: text/plain\r\n\r\n";
    assert!(streams[1].starts_with(head));
    assert!(
        streams[1][head.len()..] == content[..],
        "the server's stream ends with the file, byte-exact"
    );
}

#[test]
fn curl_over_ipv4_is_dissected_and_reassembled_by_tshark() {
    curl_fetch_is_dissected("127.0.0.1");
}

#[test]
fn curl_over_ipv6_is_dissected_and_reassembled_by_tshark() {
    curl_fetch_is_dissected("[::1]");
}

/// nginx with HTTP/2 over TLS on `port`, serving `root`, in the foreground with its own
/// temporary configuration.
fn nginx_http2(root: &Path, port: u16) -> Guard {
    let (cert, key) = cert_and_key();
    let dir = scratch_file("nginx");
    std::fs::create_dir_all(&dir).expect("nginx dir");
    let dir_text = dir.display();
    let config = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir_text}/nginx.pid;\n\
         error_log {dir_text}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n\
         client_body_temp_path {dir_text}/body;\n  proxy_temp_path {dir_text}/proxy;\n\
         fastcgi_temp_path {dir_text}/fastcgi;\n  uwsgi_temp_path {dir_text}/uwsgi;\n\
         scgi_temp_path {dir_text}/scgi;\n  server {{\n    listen 127.0.0.1:{port} ssl http2;\n\
         ssl_certificate {};\n    ssl_certificate_key {};\n    root {};\n  }}\n}}\n",
        cert.display(),
        key.display(),
        root.display()
    );
    let config_path = dir.join("nginx.conf");
    std::fs::write(&config_path, config).expect("nginx.conf");
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&config_path)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx");
    let guard = Guard(child);
    wait_for_listener(port);
    guard
}

#[test]
fn http2_is_dissected_with_the_option_probectl_prints() {
    let name = format!("h2-{}.bin", std::process::id());
    let (root, content) = web_root(&name, 20_000);
    let port = free_port();
    let _nginx = nginx_http2(&root, port);
    let body = scratch_file("h2-body");
    let url = format!("https://127.0.0.1:{port}/{name}");
    let (capture, stderr, _) = trace_to_pcapng(
        &["openssl"],
        &[
            "curl",
            "-sk",
            "--http2",
            &url,
            "-o",
            body.to_str().expect("path"),
        ],
    );
    assert_eq!(std::fs::read(&body).expect("curl's body"), content);
    let option = format!("-d tcp.port=={port},http2");
    assert!(
        stderr.contains(&format!("tshark {option} ")),
        "the option is printed:\n{stderr}"
    );
    let args: Vec<&str> = option.split(' ').collect();
    let frames = tshark(
        &capture,
        &[
            args[0],
            args[1],
            "-Y",
            "http2",
            "-T",
            "fields",
            "-e",
            "http2.headers.path",
            "-e",
            "http2.data.data",
        ],
    );
    assert!(
        frames
            .lines()
            .any(|line| line.split('\t').next() == Some(&format!("/{name}"))),
        ":path dissected:\n{frames}"
    );
    // tshark shows each DATA frame, and the body reassembled from them: the file.
    assert!(
        frames
            .lines()
            .filter_map(|line| line.split('\t').nth(1))
            .flat_map(|cell| cell.split(','))
            .any(|hex| hex_decode(hex) == content),
        "the DATA frames carry the file"
    );
}

/// A 4 KiB ring buffer cannot hold a 256 KiB burst: parts of the middle of what the server
/// sends are lost. tshark must report each gap, and every byte it has must be the server's,
/// in place.
#[test]
fn lost_bytes_are_a_gap_that_tshark_reports() {
    let (cert, key) = cert_and_key();
    let port = free_port();
    let mut server = Interactive::spawn(
        Command::new("openssl")
            .args(["s_server", "-quiet", "-accept"])
            .arg(port.to_string())
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key),
    );
    wait_for_listener(port);
    let client = Interactive::spawn(Command::new("openssl").args([
        "s_client",
        "-quiet",
        "-connect",
        &format!("127.0.0.1:{port}"),
    ]));
    wait_for_mapping(client.pid(), "libssl");
    let capture = scratch_file("lossy.pcapng");
    let mut probectl = Command::new(PROBECTL)
        .args(["run", "openssl", "--ring-bytes", "4096", "--pid"])
        .arg(client.pid().to_string())
        .args(["--format", "pcapng", "-o"])
        .arg(&capture)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("probectl");
    let stderr = collect_lines(probectl.stderr.take().expect("stderr"));
    wait_for_text(&stderr, "probectl: tracing ");

    let head = b"head of the stream\n".to_vec();
    let middle = pattern(256 * 1024, 7);
    let tail = b"tail of the stream\n".to_vec();
    let mut sent = Vec::new();
    for part in [&head, &middle, &tail] {
        server.send(part);
        sent.extend_from_slice(part);
        client.wait_for_output(&part[part.len() - 16..]);
        // Leave probectl time to drain the ring before the next part.
        std::thread::sleep(Duration::from_millis(300));
    }
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(probectl.id() as i32, libc::SIGINT) };
    assert!(probectl.wait().expect("probectl").success());
    let summary = stderr.lock().expect("lock").clone();
    assert!(!summary.contains(" 0 events lost"), "{summary}");

    let port_filter = format!("tcp.srcport == {port} && tcp.len > 0");
    let segments = tshark(
        &capture,
        &[
            "-Y",
            &port_filter,
            "-T",
            "fields",
            "-e",
            "tcp.seq",
            "-e",
            "tcp.payload",
            "-e",
            "tcp.analysis.lost_segment",
        ],
    );
    let mut gaps = 0;
    let mut captured = 0;
    let mut expected_seq = 1;
    for line in segments.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let seq: usize = fields[0].parse().expect("tcp.seq");
        let payload = hex_decode(fields[1]);
        // Relative sequence number 1 is stream offset 0: every byte is the server's, in place.
        assert!(
            payload == sent[seq - 1..seq - 1 + payload.len()],
            "the segment at {seq} is what the server sent there"
        );
        let reported = fields.get(2).is_some_and(|f| !f.is_empty());
        assert_eq!(reported, seq > expected_seq, "lost segment flag at {seq}");
        gaps += reported as usize;
        captured += payload.len();
        expected_seq = seq + payload.len();
    }
    assert!(gaps >= 1, "tshark reports the gap:\n{segments}");
    assert!(captured < sent.len());
    // What follows the gaps is still there, in place: the stream's head, then its tail at
    // the very end. (tshark 4.0's `-z follow` stops at the first gap, so the segments are
    // checked one by one above.)
    let first = segments.lines().next().expect("segments");
    assert!(first.starts_with("1\t"), "the head is at offset 0: {first}");
    let last = segments.lines().last().expect("segments");
    assert_eq!(
        last.split('\t').next(),
        Some((sent.len() - tail.len() + 1).to_string().as_str()),
        "the tail is at the end of the stream"
    );
    assert_eq!(expected_seq, sent.len() + 1);
    drop(client);
}

/// Collects a pipe's lines into a shared string, on its own thread.
fn collect_lines(pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut text = sink.lock().expect("lock");
            text.push_str(&line);
            text.push('\n');
        }
    });
    text
}

fn wait_for_text(text: &Mutex<String>, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !text.lock().expect("lock").contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} never appeared:\n{}",
            text.lock().expect("lock")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_live_pipe_to_tshark_shows_the_request_while_the_trace_runs() {
    let (_server, port) = s_server();
    let path = format!("/live-{}", std::process::id());
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let exchange = Exchange::new(request.as_bytes());
    let (mut client, line) = exchange.held_python_client(port, "--hold");
    assert_eq!(line, "ready");
    let mut probectl = Command::new(PROBECTL)
        .args(["run", "openssl", "--pid"])
        .arg(client.pid().to_string())
        .args(["--format", "pcapng"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("probectl");
    let stderr = collect_lines(probectl.stderr.take().expect("stderr"));
    let tshark = Command::new("tshark")
        .args(["-l", "-i", "-", "-Y", "http.request"])
        .stdin(Stdio::from(probectl.stdout.take().expect("stdout")))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tshark");
    let mut tshark = Guard(tshark);
    let shown = collect_lines(tshark.0.stdout.take().expect("tshark stdout"));
    wait_for_text(&stderr, "probectl: tracing ");

    client.release();
    assert_eq!(client.read_line(), "done");
    wait_for_text(&shown, &format!("GET {path} HTTP/1.1"));
    assert!(
        probectl.try_wait().expect("probectl").is_none(),
        "the request was shown while probectl was still tracing"
    );
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(probectl.id() as i32, libc::SIGINT) };
    assert!(probectl.wait().expect("probectl").success());
    assert!(tshark.0.wait().expect("tshark").success());
    client.finish();
}

#[test]
fn pcapng_to_a_terminal_is_refused() {
    // A pseudo-terminal as stdout, through script(1).
    let output = Command::new("script")
        .args(["-qec"])
        .arg(format!("{PROBECTL} run openssl --format pcapng"))
        .arg("/dev/null")
        .stdin(Stdio::null())
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("--format pcapng is binary: write it to a file (-o FILE) or a pipe"),
        "{text}"
    );
}
