//! BoringSSL and OpenSSL export the same SSL_* names and may have the same file names: each
//! plugin recognises its own library and points at the other plugin, for shared libraries and
//! for executables that link the library statically. Also the built-in `list` and a `check`
//! of a BoringSSL process, snapshotted.

mod common;

use std::process::Command;
use std::sync::OnceLock;

use common::*;

fn failing_run(args: &[&str], pids: &[u32]) -> String {
    let (code, stdout, stderr) = probectl(args);
    assert_eq!(code, 1, "must fail: {stderr}");
    assert!(stdout.is_empty(), "nothing on stdout: {stdout}");
    let mut text = stderr;
    for pid in pids {
        text = text.replace(&pid.to_string(), "[pid]");
    }
    text
}

/// `bssl-tool server` waiting for a connection: a process that maps BoringSSL's libssl.so.0.
fn boringssl_process() -> Interactive {
    let (cert, key) = cert_and_key();
    let port = free_port();
    let server = Interactive::spawn(
        Command::new("bssl-tool")
            .args(["server", "-accept", &port.to_string(), "-key"])
            .arg(key)
            .arg("-cert")
            .arg(cert),
    );
    wait_for_listener(port);
    server
}

#[test]
fn openssl_pointed_at_boringssl_says_it_is_boringssl() {
    let server = boringssl_process();
    let pid = server.pid();
    insta::assert_snapshot!(failing_run(
        &["run", "openssl", "--pid", &pid.to_string()],
        &[pid]
    ));
}

#[test]
fn boringssl_pointed_at_openssl_says_it_is_openssl() {
    let (server, _port) = python_server(false);
    let pid = server.pid();
    insta::assert_snapshot!(failing_run(
        &["run", "boringssl", "--pid", &pid.to_string()],
        &[pid]
    ));
}

#[test]
fn boringssl_pointed_at_static_openssl_in_node_says_it_is_openssl() {
    let node = Guard(
        Command::new("node")
            .args(["-e", "setTimeout(() => {}, 60000)"])
            .spawn()
            .expect("node"),
    );
    let pid = node.pid();
    // node maps nothing called libssl: only its executable can match, and it is OpenSSL.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|path| !path.ends_with("node"))
        .unwrap_or(true)
    {
        assert!(std::time::Instant::now() < deadline, "node did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    insta::assert_snapshot!(failing_run(
        &["run", "boringssl", "--pid", &pid.to_string()],
        &[pid]
    ));
}

/// An executable carrying BoringSSL's API (as one that links BoringSSL statically does):
/// SSL_write/SSL_read plus a function only BoringSSL has, exported with -rdynamic. Debian has
/// no statically linked BoringSSL program, so this one stands in for it.
fn static_boringssl_executable() -> &'static std::path::Path {
    static BUILT: OnceLock<std::path::PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        gcc(
            r#"
#include <stdio.h>
int SSL_write(void *ssl, const void *buf, int num) { (void)ssl; (void)buf; return num; }
int SSL_read(void *ssl, void *buf, int num) { (void)ssl; (void)buf; return num; }
void SSL_CTX_set_custom_verify(void *ctx, int mode, void *callback) { (void)ctx; (void)mode; (void)callback; }
int main(void) { char line[8]; puts("ready"); fflush(stdout); return fgets(line, sizeof line, stdin) == NULL; }
"#,
            "static-boringssl",
            &["-rdynamic"],
        )
    })
}

#[test]
fn openssl_pointed_at_static_boringssl_says_it_is_boringssl() {
    let program = Interactive::spawn(&mut Command::new(static_boringssl_executable()));
    program.wait_for_output(b"ready\n");
    let pid = program.pid();
    let message = failing_run(&["run", "openssl", "--pid", &pid.to_string()], &[pid]);
    let dir = static_boringssl_executable()
        .parent()
        .expect("dir")
        .display()
        .to_string();
    insta::assert_snapshot!(message.replace(&dir, "[build]"));
}

#[test]
fn list_shows_every_group_and_where_it_would_attach() {
    let (code, stdout, stderr) = probectl(&["list"]);
    assert_eq!(code, 0, "{stderr}");
    // Found now or read from the cache that an earlier run (or test) left: the same.
    insta::assert_snapshot!(redact_offsets(&uncached(&stdout)));
}

/// `check`/`list` output without whether a located function came from the cache.
fn uncached(text: &str) -> String {
    text.replace(
        "cross-reference analysis, cached",
        "cross-reference analysis",
    )
}

#[test]
fn check_of_a_boringssl_process() {
    let server = boringssl_process();
    let pid = server.pid();
    let (code, stdout, stderr) = probectl(&["check", "--pid", &pid.to_string()]);
    assert_eq!(code, 0, "{stderr}");
    insta::assert_snapshot!(redact_offsets(&uncached(
        &stdout.replace(&pid.to_string(), "[pid]")
    )));
}

#[test]
fn check_of_a_process_that_does_not_exist() {
    insta::assert_snapshot!(failing_run(&["check", "--pid", "4194000"], &[]));
}
