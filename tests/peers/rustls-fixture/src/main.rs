//! rustls peers for probectl's tests, built stripped with fat LTO (see Cargo.toml).
//!
//! `rustls-fixture client PORT CA DOWNLOAD UPLOAD [tls12]`: one connection to 127.0.0.1:PORT
//! (verified against the CA file), keep-alive: `GET /download/DOWNLOAD`, then a `POST` of
//! UPLOAD bytes, each response read whole; then close_notify. The server's recording is the
//! oracle. Prints the local address.
//!
//! `rustls-fixture loop CA CERT KEY SIZE COUNT`: a client and a server in this process over a
//! loopback TCP connection, on one thread: COUNT times, the client writes SIZE bytes and the
//! server reads them (one record sealed and one opened per message up to 16 KiB). Prints
//! `{"seconds": S, "count": COUNT, "size": SIZE}`, the loop's own time (scripts/bench).
//!
//! `rustls-fixture server PORT CERT KEY`: a tokio-rustls server (multi-threaded runtime).
//! Each connection sends one request (read up to its blank line) and gets
//! `HTTP/1.0 200 OK` with a body of the request line repeated to 40,000 bytes, then
//! close_notify. Prints "listening" once ready.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[cfg(feature = "aws-lc-rs")]
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

#[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn noise(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

/// Reads one HTTP/1.1 response: headers, then Content-Length bytes.
fn read_response(tls: &mut impl Read) -> Vec<u8> {
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte).expect("response header");
        response.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&response).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .expect("content-length");
    let mut body = vec![0u8; length];
    tls.read_exact(&mut body).expect("response body");
    response.extend_from_slice(&body);
    response
}

fn client(args: &[String]) {
    let [port, ca, download, upload, rest @ ..] = args else {
        panic!("client PORT CA DOWNLOAD UPLOAD [tls12]");
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA cert")).expect("CA added");
    }
    let versions: &[&rustls::SupportedProtocolVersion] = if rest.first().map(String::as_str) == Some("tls12") {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("connection");
    let socket = TcpStream::connect(("127.0.0.1", port.parse::<u16>().expect("port"))).expect("connect");
    println!("{}", socket.local_addr().expect("local address"));
    let mut tls = rustls::StreamOwned::new(connection, socket);
    let request = format!("GET /download/{download} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    tls.write_all(request.as_bytes()).expect("request");
    read_response(&mut tls);
    let body = noise(upload.parse().expect("upload size"));
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).expect("post head");
    tls.write_all(&body).expect("post body");
    read_response(&mut tls);
    tls.conn.send_close_notify();
    tls.flush().expect("close_notify");
}

async fn serve(stream: tokio::net::TcpStream, acceptor: tokio_rustls::TlsAcceptor) -> std::io::Result<()> {
    let mut tls = acceptor.accept(stream).await?;
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = tls.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buffer[..read]);
    }
    let line_end = request.iter().position(|&byte| byte == b'\r').unwrap_or(request.len());
    let line = &request[..line_end];
    let body: Vec<u8> = line.iter().copied().cycle().take(40_000).collect();
    let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
    tls.write_all(head.as_bytes()).await?;
    tls.write_all(&body).await?;
    tls.shutdown().await
}

fn server(args: &[String]) {
    let [port, cert, key] = args else {
        panic!("server PORT CERT KEY");
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("cert file")
        .map(|cert| cert.expect("cert"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>().expect("port")))
            .await
            .expect("bind");
        println!("listening");
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = serve(stream, acceptor).await;
            });
        }
    });
}

/// Moves the client's pending records to the socket, and the server's reads until `want`
/// bytes of plaintext arrived (see `bench_loop`).
fn receive(
    server: &mut rustls::ServerConnection,
    socket: &mut TcpStream,
    buffer: &mut [u8],
    want: usize,
) {
    let mut got = 0;
    while got < want {
        match server.reader().read(&mut buffer[..]) {
            Ok(read) => {
                got += read;
                continue;
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => panic!("server read: {error}"),
        }
        server.read_tls(socket).expect("server read_tls");
        server.process_new_packets().expect("server records");
    }
}

fn bench_loop(args: &[String]) {
    let [ca, cert, key, size, count] = args else {
        panic!("loop CA CERT KEY SIZE COUNT");
    };
    let size: usize = size.parse().expect("size");
    let count: usize = count.parse().expect("count");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA cert")).expect("CA added");
    }
    let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("cert file")
        .map(|cert| cert.expect("cert"))
        .collect();
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, PrivateKeyDer::from_pem_file(key).expect("key"))
        .expect("server config");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut client_socket = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
    let (mut server_socket, _) = listener.accept().expect("accept");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let mut client = rustls::ClientConnection::new(Arc::new(client_config), name).expect("client");
    let mut server = rustls::ServerConnection::new(Arc::new(server_config)).expect("server");
    // The handshake, both sides on this thread: each moves what it has until neither has more.
    while client.is_handshaking() || server.is_handshaking() {
        while client.wants_write() {
            client.write_tls(&mut client_socket).expect("client write_tls");
        }
        if server.is_handshaking() || server.wants_read() {
            server.read_tls(&mut server_socket).expect("server read_tls");
            server.process_new_packets().expect("server handshake");
        }
        while server.wants_write() {
            server.write_tls(&mut server_socket).expect("server write_tls");
        }
        if client.is_handshaking() {
            client.read_tls(&mut client_socket).expect("client read_tls");
            client.process_new_packets().expect("client handshake");
        }
    }
    let message = vec![b'x'; size];
    let mut buffer = vec![0u8; size.max(16384)];
    let started = std::time::Instant::now();
    for _ in 0..count {
        client.writer().write_all(&message).expect("write");
        while client.wants_write() {
            client.write_tls(&mut client_socket).expect("client write_tls");
        }
        receive(&mut server, &mut server_socket, &mut buffer, size);
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("{{\"seconds\": {seconds}, \"count\": {count}, \"size\": {size}}}");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("client") => client(&args[1..]),
        Some("server") => server(&args[1..]),
        Some("loop") => bench_loop(&args[1..]),
        _ => {
            eprintln!("usage: rustls-fixture client|server ...");
            std::process::exit(2);
        }
    }
}
