//! rustls peers for probectl's tests, built stripped with fat LTO (see Cargo.toml).
//!
//! `rustls-fixture client PORT CA DOWNLOAD UPLOAD [tls12]`: one connection to 127.0.0.1:PORT
//! (verified against the CA file), keep-alive: `GET /download/DOWNLOAD`, then a `POST` of
//! UPLOAD bytes, each response read whole; then close_notify. The server's recording is the
//! oracle. Prints the local address.
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("client") => client(&args[1..]),
        Some("server") => server(&args[1..]),
        _ => {
            eprintln!("usage: rustls-fixture client|server ...");
            std::process::exit(2);
        }
    }
}
