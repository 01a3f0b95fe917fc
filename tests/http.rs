//! `--decode http` through real BPF and real peers: Python's http.client against a Python
//! HTTPS server (HTTP/1.1), curl and node against nginx (HTTP/2), gRPC with python3-grpcio,
//! an HTTP/2 connection joined mid-stream, br and zstd bodies, and WebSocket (python3-websockets
//! over wss). Expected values are what the peers were given
//! to send (files the test wrote), never probectl's capture.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use common::*;
use serde_json::Value;
use sha2::Digest;

/// Deterministic bytes that are not text (every byte value, no pattern a decoder could latch on).
fn noise(len: usize, seed: u32) -> Vec<u8> {
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

fn decode_b64(value: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(
            value
                .as_str()
                .unwrap_or_else(|| panic!("base64 string: {value}")),
        )
        .expect("base64")
}

/// The exchange records of a run (raw events, if any, left out).
fn exchanges(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|line| line["type"] == "http").collect()
}

fn response_body(exchange: &Value) -> Vec<u8> {
    decode_b64(&exchange["response"]["body_b64"])
}

/// `[name, value]` pairs of a header list; unknown parts as `?`.
fn fields(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .expect("header list")
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap_or("?").to_string(),
                pair[1].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

fn dir(name: &str) -> PathBuf {
    let dir = scratch_file(name);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

/// nginx with `http2` on, in the foreground, with a config and a root of its own on a free
/// loopback port. Stopped (SIGTERM, which also ends its workers) when dropped.
struct Nginx {
    child: Child,
    port: u16,
}

impl Nginx {
    fn start(root: &Path) -> Nginx {
        let (cert, key) = cert_and_key();
        let work = dir("nginx");
        let port = free_port();
        let temp = |name: &str| work.join(name).display().to_string();
        let config = format!(
            "user root;\n\
             worker_processes 1;\n\
             daemon off;\n\
             pid {pid};\n\
             error_log {log};\n\
             events {{ worker_connections 64; }}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {body}; proxy_temp_path {proxy};\n\
               fastcgi_temp_path {fcgi}; uwsgi_temp_path {uwsgi}; scgi_temp_path {scgi};\n\
               server {{\n\
                 listen 127.0.0.1:{port} ssl http2;\n\
                 ssl_certificate {cert}; ssl_certificate_key {key};\n\
                 root {root};\n\
               }}\n\
             }}\n",
            pid = temp("nginx.pid"),
            log = temp("error.log"),
            body = temp("body"),
            proxy = temp("proxy"),
            fcgi = temp("fcgi"),
            uwsgi = temp("uwsgi"),
            scgi = temp("scgi"),
            cert = cert.display(),
            key = key.display(),
            root = root.display(),
        );
        let config_path = work.join("nginx.conf");
        std::fs::write(&config_path, config).expect("nginx.conf");
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&config_path)
            .arg("-p")
            .arg(&work)
            .arg("-e")
            .arg(work.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx");
        let nginx = Nginx { child, port };
        wait_for_listener(port);
        nginx
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

#[test]
fn python_http_client_keep_alive_get_post_big_and_chunked() {
    let files = dir("http1-files");
    let small = b"a small body\n".to_vec();
    let big = noise(70_000, 1);
    std::fs::write(files.join("small"), &small).expect("write");
    std::fs::write(files.join("big"), &big).expect("write");
    let upload = noise(5000, 2);
    let upload_file = scratch_file("upload");
    std::fs::write(&upload_file, &upload).expect("write");
    let (cert, key) = cert_and_key();
    let port = free_port();
    let _server = Guard(
        Command::new("/usr/bin/python3")
            .arg(peer("http_server.py"))
            .arg(port.to_string())
            .arg(cert)
            .arg(key)
            .arg(&files)
            .stdin(Stdio::null())
            .spawn()
            .expect("python3 server"),
    );
    wait_for_listener(port);
    let out = dir("http1-out");
    let client = peer("http_client.py");
    let port_arg = port.to_string();
    let run = Trace::start(
        &["openssl", "--decode", "http"],
        &[
            "/usr/bin/python3",
            client.to_str().expect("path"),
            &port_arg,
            upload_file.to_str().expect("path"),
            out.to_str().expect("path"),
        ],
    )
    .wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    let http = exchanges(&run.lines);
    // Nothing raw: exchanges, and their live heads and body pieces.
    assert!(
        run.lines
            .iter()
            .all(|line| ["http", "http_head", "http_body"]
                .contains(&line["type"].as_str().unwrap_or("raw"))),
        "nothing raw: {:?}",
        run.lines
    );
    let summary: Vec<(&str, &str, u64)> = http
        .iter()
        .map(|e| {
            (
                e["method"].as_str().expect("method"),
                e["path"].as_str().expect("path"),
                e["status"].as_u64().expect("status"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("GET", "/files/small", 200),
            ("POST", "/upload", 201),
            ("GET", "/files/big", 200),
            ("GET", "/chunked/big", 200),
        ]
    );
    let authority = format!("127.0.0.1:{port}");
    for exchange in &http {
        assert_eq!(exchange["version"], "1.1");
        assert_eq!(exchange["authority"], authority.as_str());
        assert_eq!(exchange["incomplete"], Value::Null, "{exchange}");
        assert_eq!(exchange["conn"]["remote"], authority.as_str());
        assert_eq!(
            exchange["conn"]["id"], http[0]["conn"]["id"],
            "one connection"
        );
        assert_eq!(exchange["comm"], "python3");
    }
    assert_eq!(response_body(http[0]), small);
    assert_eq!(decode_b64(&http[1]["request"]["body_b64"]), upload);
    assert_eq!(
        response_body(http[1]),
        format!("{:x}", sha2::Sha256::digest(&upload)).into_bytes()
    );
    assert_eq!(response_body(http[2]), big);
    assert_eq!(http[2]["response"]["body_len"], 70_000);
    assert_eq!(response_body(http[3]), big, "de-chunked");
    assert!(fields(&http[3]["response"]["headers"])
        .contains(&("Transfer-Encoding".to_string(), "chunked".to_string())));
    assert_eq!(
        fields(&http[3]["response"]["trailers"]),
        vec![("X-Trailer".to_string(), "done".to_string())]
    );
    // The client got what the server was given (the peers themselves worked).
    assert_eq!(std::fs::read(out.join("chunked")).expect("read"), big);
    assert!(
        run.stderr
            .contains("http: 4 exchanges (0 incomplete) on 1 HTTP/1"),
        "{}",
        run.stderr
    );
}

#[test]
fn curl_http2_two_urls_over_one_connection_from_nginx() {
    let root = dir("h2-root");
    let small = b"hello from nginx\n".to_vec();
    let big = noise(300_000, 3);
    std::fs::write(root.join("a.txt"), &small).expect("write");
    std::fs::write(root.join("big.bin"), &big).expect("write");
    let nginx = Nginx::start(&root);
    let received = scratch_file("curl-big");
    let curl_args = [
        "curl".to_string(),
        "-sk".to_string(),
        "--http2".to_string(),
        "-o".to_string(),
        "/dev/null".to_string(),
        "-o".to_string(),
        received.display().to_string(),
        "-H".to_string(),
        "User-Agent: probectl-test".to_string(),
        nginx.url("/a.txt"),
        nginx.url("/big.bin"),
    ];
    let command: Vec<&str> = curl_args.iter().map(String::as_str).collect();
    let run = Trace::start(&["openssl", "--decode", "http"], &command).wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(std::fs::read(&received).expect("curl output"), big);
    let http = exchanges(&run.lines);
    assert_eq!(http.len(), 2, "{:?}", run.lines);
    let authority = format!("127.0.0.1:{}", nginx.port);
    for (exchange, (path, stream)) in http.iter().zip([("/a.txt", 1), ("/big.bin", 3)]) {
        assert_eq!(exchange["version"], "2");
        assert_eq!(exchange["method"], "GET");
        assert_eq!(exchange["path"], path);
        assert_eq!(exchange["stream_id"], stream);
        assert_eq!(exchange["authority"], authority.as_str());
        assert_eq!(exchange["status"], 200);
        assert_eq!(exchange["incomplete"], Value::Null, "{exchange}");
        assert_eq!(
            exchange["conn"]["id"], http[0]["conn"]["id"],
            "one connection"
        );
        assert!(
            fields(&exchange["request"]["headers"])
                .contains(&("user-agent".to_string(), "probectl-test".to_string())),
            "{exchange}"
        );
    }
    assert_eq!(response_body(http[0]), small);
    assert_eq!(response_body(http[1]), big, "byte-exact");

    // The same in text, as curl -v shows it: live (the default), and one exchange at once.
    for mode in ["http", "http=exchange"] {
        let output = Command::new(PROBECTL)
            .args(["run", "openssl", "--decode", mode, "--"])
            .args(&curl_args)
            .stdin(Stdio::null())
            .output()
            .expect("probectl");
        assert!(output.status.success());
        let text = String::from_utf8_lossy(&output.stdout);
        for line in [
            "> GET /a.txt HTTP/2\n",
            "> user-agent: probectl-test\n",
            "< HTTP/2 200\n",
            "hello from nginx\n",
            "> GET /big.bin HTTP/2\n",
        ] {
            assert!(text.contains(line), "{mode}: {line:?} in:\n{text}");
        }
        if mode == "http" {
            // Each exchange starts with its line and id, and ends with its totals and timing.
            assert!(text.contains(" HTTP/2 stream 3 #2\n"), "{text}");
            assert!(
                text.contains("* done #2: 200, request body 0 bytes, response body 300000 bytes;"),
                "{text}"
            );
        } else {
            assert!(text.contains("[300000 bytes]\n"), "{text}");
            assert!(text.contains(" HTTP/2 stream 3 ("), "{text}");
        }
    }
}

#[test]
fn node_http2_client_with_concurrent_streams() {
    let root = dir("node-root");
    let sizes = [1000usize, 20_000, 50_000, 100_000];
    for (index, size) in sizes.iter().enumerate() {
        std::fs::write(
            root.join(format!("f{index}")),
            noise(*size, 10 + index as u32),
        )
        .expect("write");
    }
    let nginx = Nginx::start(&root);
    let out = dir("node-out");
    let script = peer("h2_client.js");
    let base = nginx.url("");
    let run = Trace::start(
        &["openssl", "--decode", "http"],
        &[
            "node",
            script.to_str().expect("path"),
            &base,
            out.to_str().expect("path"),
            "/f0,/f1,/f2,/f3",
        ],
    )
    .wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    let http = exchanges(&run.lines);
    assert_eq!(http.len(), 4, "{:?}", run.lines);
    let by_path: BTreeMap<&str, &Value> = http
        .iter()
        .map(|e| (e["path"].as_str().expect("path"), *e))
        .collect();
    let mut streams: Vec<u64> = http
        .iter()
        .map(|e| e["stream_id"].as_u64().expect("stream id"))
        .collect();
    streams.sort_unstable();
    assert_eq!(streams, vec![1, 3, 5, 7]);
    for (index, size) in sizes.iter().enumerate() {
        let exchange = by_path[format!("/f{index}").as_str()];
        assert_eq!(exchange["status"], 200);
        assert_eq!(exchange["incomplete"], Value::Null, "{exchange}");
        assert_eq!(exchange["conn"]["id"], http[0]["conn"]["id"], "one session");
        assert_eq!(response_body(exchange), noise(*size, 10 + index as u32));
        assert!(fields(&exchange["request"]["headers"])
            .contains(&("x-probectl-test".to_string(), "phase-header".to_string())));
    }
}

#[test]
fn grpc_unary_server_streaming_and_error_status() {
    let files = dir("grpc-files");
    let unary = [b"unary reply \x00\x01\xff".to_vec(), noise(300, 4)].concat();
    let stream = [noise(10, 5), b"second message".to_vec(), noise(20_000, 6)];
    std::fs::write(files.join("unary"), &unary).expect("write");
    for (index, message) in stream.iter().enumerate() {
        std::fs::write(files.join(format!("stream.{index}")), message).expect("write");
    }
    std::fs::write(files.join("fail_message"), "no such thing: 42").expect("write");
    let request = noise(77, 7);
    let request_file = scratch_file("grpc-request");
    std::fs::write(&request_file, &request).expect("write");
    let (cert, key) = cert_and_key();
    let port = free_port();
    let mut server = Guard(
        Command::new("/usr/bin/python3")
            .arg(peer("grpc_peer.py"))
            .arg("server")
            .arg(port.to_string())
            .arg(cert)
            .arg(key)
            .arg(&files)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("grpc server"),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("server output");
    assert_eq!(line.trim(), "listening");
    let out = dir("grpc-out");
    let script = peer("grpc_peer.py");
    let port_arg = port.to_string();
    let run = Trace::start(
        &["openssl", "--decode", "http"],
        &[
            "/usr/bin/python3",
            script.to_str().expect("path"),
            "client",
            &port_arg,
            cert.to_str().expect("path"),
            request_file.to_str().expect("path"),
            out.to_str().expect("path"),
        ],
    )
    .wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(out.join("fail")).expect("fail"),
        "NOT_FOUND no such thing: 42"
    );
    let http = exchanges(&run.lines);
    assert_eq!(http.len(), 3, "{:?}", run.lines);
    let messages = |exchange: &Value, direction: &str| -> Vec<Vec<u8>> {
        exchange["grpc"]["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter(|m| m["direction"] == direction)
            .map(|m| {
                assert_eq!(m["compressed"], false);
                decode_b64(&m["data_b64"])
            })
            .collect()
    };
    // (method, grpc status, grpc message, the response messages the server was given)
    let expected = [
        ("Unary", 0, None, vec![unary.clone()]),
        ("Stream", 0, None, stream.to_vec()),
        ("Fail", 5, Some("no such thing: 42"), vec![]),
    ];
    for (exchange, (method, status, message, responses)) in http.iter().zip(expected) {
        let grpc = &exchange["grpc"];
        assert_eq!(grpc["service"], "demo.Echo", "{exchange}");
        assert_eq!(grpc["method"], method);
        assert_eq!(grpc["status"], status);
        assert_eq!(grpc["message"].as_str(), message);
        assert_eq!(messages(exchange, "request"), vec![request.clone()]);
        assert_eq!(messages(exchange, "response"), responses, "{method}");
        assert_eq!(exchange["version"], "2");
        assert_eq!(exchange["status"], 200);
        assert_eq!(exchange["path"], format!("/demo.Echo/{method}"));
        assert_eq!(exchange["incomplete"], Value::Null, "{exchange}");
    }
}

#[test]
fn http2_connection_joined_mid_stream() {
    let root = dir("join-root");
    for index in 0..4u32 {
        std::fs::write(root.join(format!("j{index}")), noise(5000, 20 + index)).expect("write");
    }
    let nginx = Nginx::start(&root);
    let out = dir("join-out");
    let script = peer("h2_client.js");
    let mut client = Command::new("node")
        .arg(&script)
        .arg(nginx.url(""))
        .arg(&out)
        .arg("/j0,/j1")
        .arg("--hold")
        .arg("/j2,/j3")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node");
    let mut stdout = BufReader::new(client.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("client output");
    assert_eq!(line.trim(), "phase1 done");
    // The session has exchanged requests: probectl starts now.
    let trace = Trace::start(
        &[
            "openssl",
            "--decode",
            "http",
            "--pid",
            &client.id().to_string(),
        ],
        &[],
    );
    {
        use std::io::Write;
        writeln!(client.stdin.as_mut().expect("stdin")).expect("release");
    }
    assert!(client.wait().expect("node").success());
    let run = trace.wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    let http = exchanges(&run.lines);
    assert_eq!(http.len(), 2, "{:?}", run.lines);
    let mut paths = Vec::new();
    for exchange in &http {
        let path = exchange["path"].as_str().expect("path: a literal, decoded");
        paths.push(path.to_string());
        let index: u32 = path[2..].parse().expect("index");
        assert_eq!(exchange["method"], "GET", "static table");
        assert_eq!(exchange["status"], 200);
        assert_eq!(response_body(exchange), noise(5000, 20 + index));
        let headers = exchange["request"]["headers"].as_array().expect("headers");
        // Indexed before probectl joined: unknown, with the index it referred to.
        let unknown: Vec<&Value> = headers.iter().filter(|h| h[0].is_null()).collect();
        assert!(!unknown.is_empty(), "{exchange}");
        for header in &unknown {
            assert!(
                header[2].as_u64().is_some_and(|index| index > 61),
                "{header}"
            );
        }
        assert!(
            !fields(&exchange["request"]["headers"])
                .iter()
                .any(|(name, _)| name == "x-probectl-test"),
            "sent before the join, so only known as an index: {exchange}"
        );
        // First sent after the join: known.
        assert!(
            fields(&exchange["request"]["headers"])
                .contains(&("x-late".to_string(), "after-join".to_string())),
            "{exchange}"
        );
    }
    paths.sort();
    assert_eq!(paths, vec!["/j2", "/j3"]);
}

#[test]
fn http2_bytes_not_captured_end_the_exchange_and_decoding_resumes() {
    let root = dir("gap-root");
    let small = b"after the gap\n".to_vec();
    let big = noise(200_000, 30);
    std::fs::write(root.join("small.txt"), &small).expect("write");
    std::fs::write(root.join("big.bin"), &big).expect("write");
    let nginx = Nginx::start(&root);
    // --max-bytes 4096: every read of a 16 KiB record loses its end, a gap in the stream.
    let big_url = nginx.url("/big.bin");
    let small_url = nginx.url("/small.txt");
    let run = Trace::start(
        &["openssl", "--decode", "http", "--max-bytes", "4096"],
        &[
            "curl",
            "-sk",
            "--http2",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            &big_url,
            &small_url,
        ],
    )
    .wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    let http = exchanges(&run.lines);
    assert_eq!(http.len(), 2, "{:?}", run.lines);
    let (first, second) = (http[0], http[1]);
    assert_eq!(first["path"], "/big.bin");
    assert_eq!(first["incomplete"], "bytes lost (gap in the capture)");
    let kept = response_body(first);
    assert!(
        !kept.is_empty() && kept.len() < big.len() && big.starts_with(&kept),
        "what was kept is a true prefix, never invented: {} bytes",
        kept.len()
    );
    assert_eq!(second["path"], "/small.txt");
    assert_eq!(second["stream_id"], 3);
    assert_eq!(second["status"], 200);
    assert_eq!(response_body(second), small);
    assert_eq!(second["incomplete"], Value::Null, "{second}");
}

/// The Python HTTPS/1.1 server of `tests/peers/http_server.py` serving the files of `files`.
fn python_http_server(files: &Path) -> (Guard, u16) {
    let (cert, key) = cert_and_key();
    let port = free_port();
    let server = Guard(
        Command::new("/usr/bin/python3")
            .arg(peer("http_server.py"))
            .arg(port.to_string())
            .arg(cert)
            .arg(key)
            .arg(files)
            .stdin(Stdio::null())
            .spawn()
            .expect("python3 server"),
    );
    wait_for_listener(port);
    (server, port)
}

#[test]
fn br_and_zstd_bodies_decode_to_the_original() {
    let files = dir("encoded-files");
    // Text of about 60 kB that compresses well but not to nothing.
    let original: Vec<u8> = (0..3000u32)
        .flat_map(|i| {
            format!("line {i}: {}\n", i.wrapping_mul(2_654_435_761) % 99_991).into_bytes()
        })
        .collect();
    let original_path = files.join("original.txt");
    std::fs::write(&original_path, &original).expect("write");
    // Compressed by tools of their own (node's zlib, the zstd program): the oracle is the file
    // written above, never probectl's output.
    let status = Command::new("node")
        .arg("-e")
        .arg(
            "const fs = require('fs'), zlib = require('zlib');\
             fs.writeFileSync(process.argv[2], zlib.brotliCompressSync(fs.readFileSync(process.argv[1])));",
        )
        .arg(&original_path)
        .arg(files.join("original.br"))
        .status()
        .expect("node");
    assert!(status.success(), "node brotli");
    let status = Command::new("zstd")
        .args(["-q", "-f", "-o"])
        .arg(files.join("original.zst"))
        .arg(&original_path)
        .status()
        .expect("zstd");
    assert!(status.success(), "zstd");
    let br = std::fs::read(files.join("original.br")).expect("br");
    let zst = std::fs::read(files.join("original.zst")).expect("zst");
    assert!(br.len() < original.len() / 2 && zst.len() < original.len() / 2);
    let (_server, port) = python_http_server(&files);
    let saved_br = scratch_file("saved.br");
    let saved_zst = scratch_file("saved.zst");
    let curl_args = [
        "curl".to_string(),
        "-sk".to_string(),
        "--http1.1".to_string(),
        "-o".to_string(),
        saved_br.display().to_string(),
        "-o".to_string(),
        saved_zst.display().to_string(),
        format!("https://127.0.0.1:{port}/encoded/br/original.br"),
        format!("https://127.0.0.1:{port}/encoded/zstd/original.zst"),
    ];
    let command: Vec<&str> = curl_args.iter().map(String::as_str).collect();
    let run = Trace::start(&["openssl", "--decode", "http"], &command).wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    // The peers worked: curl saved the coded bodies as sent.
    assert_eq!(std::fs::read(&saved_br).expect("saved"), br);
    assert_eq!(std::fs::read(&saved_zst).expect("saved"), zst);
    let http = exchanges(&run.lines);
    assert_eq!(http.len(), 2, "{:?}", run.lines);
    for (exchange, coding, coded) in [(http[0], "br", &br), (http[1], "zstd", &zst)] {
        let response = &exchange["response"];
        assert_eq!(&response_body(exchange), coded, "the raw body is kept");
        let decoded = &response["content_encoding"];
        assert_eq!(decoded["coding"], coding, "{exchange}");
        assert_eq!(decoded["complete"], true, "{exchange}");
        assert_eq!(decoded["note"], Value::Null, "{exchange}");
        assert_eq!(decoded["decoded_len"], original.len() as u64);
        assert!(decode_b64(&decoded["decoded_b64"]) == original, "{coding}");
    }

    // Cut by --max-body: the coding is still named, what was kept is decoded, and it says so.
    let cut = Trace::start(
        &["openssl", "--decode", "http", "--max-body", "2000"],
        &command,
    )
    .wait_lines();
    assert!(cut.status.success(), "{}", cut.stderr);
    let http = exchanges(&cut.lines);
    assert_eq!(http.len(), 2, "{:?}", cut.lines);
    for (exchange, coding) in [(http[0], "br"), (http[1], "zstd")] {
        let decoded = &exchange["response"]["content_encoding"];
        assert_eq!(decoded["coding"], coding, "{exchange}");
        assert_eq!(decoded["complete"], false, "{exchange}");
        assert!(
            decoded["note"]
                .as_str()
                .is_some_and(|note| note.contains("cut")),
            "{exchange}"
        );
        let prefix = decode_b64(&decoded["decoded_b64"]);
        assert!(original.starts_with(&prefix), "{coding}: a true prefix");
    }

    // Text names the coding and shows the text.
    let output = Command::new(PROBECTL)
        .args(["run", "openssl", "--decode", "http", "--"])
        .args(&curl_args)
        .stdin(Stdio::null())
        .output()
        .expect("probectl");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for line in [
        format!("[{} bytes br, {} decompressed]\n", br.len(), original.len()),
        format!(
            "[{} bytes zstd, {} decompressed]\n",
            zst.len(),
            original.len()
        ),
        "line 2999: ".to_string(),
    ] {
        assert!(text.contains(&line), "{line:?} in:\n{text}");
    }
}

/// A peer's log of `tests/peers/ws_peer.py`: (direction, kind, data) in order.
fn websocket_log(path: &Path) -> Vec<(String, String, Vec<u8>)> {
    std::fs::read_to_string(path)
        .expect("peer log")
        .lines()
        .map(|line| {
            let entry: Value = serde_json::from_str(line).expect("JSON");
            (
                entry["dir"].as_str().expect("dir").to_string(),
                entry["kind"].as_str().expect("kind").to_string(),
                decode_b64(&entry["b64"]),
            )
        })
        .collect()
}

/// The data messages of one sender as probectl decoded them: (kind, data).
fn websocket_messages(lines: &[Value], sender: &str) -> Vec<(String, Vec<u8>)> {
    lines
        .iter()
        .filter(|line| line["type"] == "websocket" && line["sender"] == sender)
        .filter(|line| line["opcode"] == "text" || line["opcode"] == "binary")
        .map(|line| {
            (
                line["opcode"].as_str().expect("opcode").to_string(),
                decode_b64(&line["data_b64"]),
            )
        })
        .collect()
}

/// The python3-websockets server of ws_peer.py on `port` (stopped when the guard drops), and
/// the file it logs its messages to.
fn websocket_server(port: u16) -> (Guard, PathBuf) {
    let (cert, key) = cert_and_key();
    let log = scratch_file("ws-server.log");
    let server = Guard(
        Command::new("/usr/bin/python3")
            .arg(peer("ws_peer.py"))
            .arg("server")
            .arg(port.to_string())
            .arg(cert)
            .arg(key)
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 websockets server"),
    );
    wait_for_listener(port);
    (server, log)
}

/// The messages of a peer's log in one direction ("sent" or "received"): (kind, data).
fn logged(log: &[(String, String, Vec<u8>)], direction: &str) -> Vec<(String, Vec<u8>)> {
    log.iter()
        .filter(|(dir, _, _)| dir == direction)
        .map(|(_, kind, data)| (kind.clone(), data.clone()))
        .collect()
}

/// Node's own WebSocket client (undici's, node 20 with --experimental-websocket; TLS through
/// node's statically linked OpenSSL) against the python3-websockets server: every message each
/// side sent is what the other logged, and what probectl decoded, in order (node sends whole
/// messages and offers no compression).
#[test]
fn websocket_messages_from_node_over_wss() {
    let port = free_port();
    let (_server, server_log) = websocket_server(port);
    let client_log = scratch_file("ws-node-client.log");
    let script = peer("ws_client.js");
    let port_arg = port.to_string();
    let run = Trace::start_with_env(
        &["openssl", "--decode", "http"],
        &[
            "node",
            "--experimental-websocket",
            script.to_str().expect("path"),
            &port_arg,
            client_log.to_str().expect("path"),
        ],
        &[("NODE_TLS_REJECT_UNAUTHORIZED", std::ffi::OsStr::new("0"))],
    )
    .wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    let client = websocket_log(&client_log);
    let server = websocket_log(&server_log);
    let of = logged;
    assert_eq!(of(&client, "sent"), of(&server, "received"));
    assert_eq!(of(&server, "sent"), of(&client, "received"));
    assert_eq!(of(&client, "sent").len(), 4);
    assert_eq!(of(&server, "sent").len(), 12);
    assert!(
        websocket_messages(&run.lines, "client") == of(&client, "sent"),
        "the client's messages (masked on the wire)"
    );
    assert!(
        websocket_messages(&run.lines, "server") == of(&client, "received"),
        "the server's messages"
    );
}

#[test]
fn websocket_messages_from_python_websockets_over_wss() {
    for compression in ["none", "deflate"] {
        let port = free_port();
        let (_server, server_log) = websocket_server(port);
        let client_log = scratch_file("ws-client.log");
        let script = peer("ws_peer.py");
        let port_arg = port.to_string();
        let run = Trace::start(
            &["openssl", "--decode", "http"],
            &[
                "/usr/bin/python3",
                script.to_str().expect("path"),
                "client",
                &port_arg,
                client_log.to_str().expect("path"),
                compression,
            ],
        )
        .wait_lines();
        assert!(run.status.success(), "{compression}: {}", run.stderr);
        let client = websocket_log(&client_log);
        let server = websocket_log(&server_log);
        let of = logged;
        // The peers agree with each other (the oracle is sound) ...
        assert_eq!(of(&client, "sent"), of(&server, "received"));
        assert_eq!(of(&server, "sent"), of(&client, "received"));
        assert_eq!(of(&client, "sent").len(), 4);
        assert_eq!(of(&server, "sent").len(), 12);
        // ... and probectl's messages are theirs, in order.
        let sent_by_client = websocket_messages(&run.lines, "client");
        let sent_by_server = websocket_messages(&run.lines, "server");
        assert!(
            sent_by_client == of(&client, "sent"),
            "{compression}: the client's messages"
        );
        assert!(
            sent_by_server == of(&client, "received"),
            "{compression}: the server's messages"
        );
        let records: Vec<&Value> = run
            .lines
            .iter()
            .filter(|line| line["type"] == "websocket")
            .collect();
        for record in &records {
            assert_eq!(record["incomplete"], Value::Null, "{record}");
            assert_eq!(record["note"], Value::Null, "{record}");
            // Client frames are masked, the server's are not.
            assert_eq!(record["masked"], record["sender"] == "client", "{record}");
            assert_eq!(
                record["direction"],
                if record["sender"] == "client" {
                    "write"
                } else {
                    "read"
                }
            );
        }
        // Text as text; the fragmented messages reassembled from their frames.
        assert!(records
            .iter()
            .any(|r| r["text"] == "hello, websocket" && r["frames"] == 1));
        assert!(records.iter().any(|r| r["sender"] == "client"
            && r["text"] == "first fragment, second fragment, third"
            && r["frames"].as_u64().is_some_and(|frames| frames >= 3)));
        assert!(records.iter().any(|r| r["sender"] == "server"
            && r["text"] == "fragmented from the server"
            && r["frames"].as_u64().is_some_and(|frames| frames >= 3)));
        let compressed = records.iter().filter(|r| r["compressed"] == true).count();
        if compression == "deflate" {
            // Every data message was deflated (and inflated back, as the checks above show).
            assert_eq!(compressed, 16, "{compression}");
            let big = records
                .iter()
                .find(|r| r["len"] == 120_890)
                .expect("the 100 kB message");
            assert!(big["wire_len"].as_u64().expect("wire_len") < 60_000);
        } else {
            assert_eq!(compressed, 0);
        }
        assert!(
            run.stderr
                .contains("websocket: 18 messages on 1 connections"),
            "{}",
            run.stderr
        );
    }
}
