//! Spec-only extensibility: a library probectl has never heard of is traced from a probes file
//! alone (no Rust, no BPF). The test builds a tiny shared library with its own
//! `mylib_send(ctx, buf, len)` / `mylib_recv(ctx, buf, len)` and a program using it.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use common::*;

const LIBRARY: &str = r#"
#include <sys/types.h>
#include <unistd.h>

struct mylib_ctx { int fd; };

/* Sends len bytes of buf on the context's descriptor; returns the count or -1. */
ssize_t mylib_send(struct mylib_ctx *ctx, const void *buf, size_t len) {
    return write(ctx->fd, buf, len);
}

/* Receives at most len bytes into buf; returns the count, 0 at the end, or -1. */
ssize_t mylib_recv(struct mylib_ctx *ctx, void *buf, size_t len) {
    return read(ctx->fd, buf, len);
}
"#;

/// Two contexts on a socketpair: "a" sends the message and "b" receives it, then "b" sends
/// the reply and "a" receives it. Waits for a line on stdin before and after, so that a test
/// can look at the running process.
const PROGRAM: &str = r#"
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

struct mylib_ctx { int fd; };
ssize_t mylib_send(struct mylib_ctx *ctx, const void *buf, size_t len);
ssize_t mylib_recv(struct mylib_ctx *ctx, void *buf, size_t len);

static void transfer(struct mylib_ctx *from, struct mylib_ctx *to,
                     const unsigned char *data, size_t len) {
    unsigned char buffer[4096];
    if (mylib_send(from, data, len) != (ssize_t)len) { perror("send"); _exit(1); }
    size_t got = 0;
    while (got < len) {
        ssize_t n = mylib_recv(to, buffer + got, sizeof buffer - got);
        if (n <= 0) { perror("recv"); _exit(1); }
        got += (size_t)n;
    }
    if (memcmp(buffer, data, len) != 0) { fputs("corrupted\n", stderr); _exit(1); }
}

int main(int argc, char **argv) {
    int fds[2];
    char line[16];
    unsigned char message[600];
    const char reply[] = "mylib reply: got it\n";
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) { perror("socketpair"); return 1; }
    struct mylib_ctx a = { fds[0] }, b = { fds[1] };
    for (int i = 0; i < 600; i++) message[i] = (unsigned char)(i * 7 + 3);
    if (argc > 1) { puts("ready"); fflush(stdout); if (!fgets(line, sizeof line, stdin)) return 1; }
    transfer(&a, &b, message, sizeof message);
    transfer(&b, &a, (const unsigned char *)reply, strlen(reply));
    if (argc > 1) { puts("done"); fflush(stdout); if (!fgets(line, sizeof line, stdin)) return 1; }
    return 0;
}
"#;

struct Built {
    library: PathBuf,
    program: PathBuf,
    probes: PathBuf,
}

/// Builds the library, the program and the probes file once per test binary.
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let library = gcc(LIBRARY, "libmylib.so", &["-shared", "-fPIC"]);
        let dir = library.parent().expect("dir").to_str().expect("path");
        let program = gcc(
            PROGRAM,
            "mylib-demo",
            &[&format!("-L{dir}"), "-lmylib", &format!("-Wl,-rpath,{dir}")],
        );
        // The whole integration: this file. `paths` because the library is not in a system
        // library directory (where `libraries = ["libmylib.so"]` would find it).
        let probes = library.with_file_name("mylib.toml");
        std::fs::write(
            &probes,
            format!(
                r#"[[group]]
name = "mylib"
description = "the test suite's own library"
paths = ["{}"]

# ssize_t mylib_send(struct mylib_ctx *ctx, const void *buf, size_t len)
[[group.probe]]
symbol = "mylib_send"
direction = "write"
connection = "arg0"
buffer = "arg1"
length = "return"
returns = "ssize_t"

# ssize_t mylib_recv(struct mylib_ctx *ctx, void *buf, size_t len)
[[group.probe]]
symbol = "mylib_recv"
direction = "read"
connection = "arg0"
buffer = "arg1"
length = "return"
returns = "ssize_t"
"#,
                library.display()
            ),
        )
        .expect("write probes");
        Built {
            library,
            program,
            probes,
        }
    })
}

fn message() -> Vec<u8> {
    (0..600u32).map(|i| (i * 7 + 3) as u8).collect()
}

const REPLY: &[u8] = b"mylib reply: got it\n";

#[test]
fn a_library_added_by_a_probes_file_alone_is_captured_byte_exact() {
    let built = built();
    let run = Trace::start(
        &["mylib", "--probes", built.probes.to_str().expect("path")],
        &[built.program.to_str().expect("path")],
    )
    .wait();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("[mylib] {}: 2 probes", built.library.display())),
        "{}",
        run.stderr
    );
    let pid = run.events.first().expect("events").pid;
    // Context "a" sent the message and received the reply; "b" the other way round.
    let by_handle = |handle: &str, direction: &str| -> Vec<u8> {
        run.events
            .iter()
            .filter(|e| e.json["conn"]["handle"] == handle && e.direction == direction)
            .flat_map(|e| e.data.iter().copied())
            .collect()
    };
    let first = &run.events[0];
    assert_eq!(
        (first.function.as_str(), first.direction.as_str()),
        ("mylib_send", "write")
    );
    let a = first.json["conn"]["handle"].as_str().expect("handle");
    let b = run
        .events
        .iter()
        .find(|e| e.json["conn"]["handle"] != a)
        .and_then(|e| e.json["conn"]["handle"].as_str())
        .expect("second context");
    assert_eq!(by_handle(a, "write"), message());
    assert_eq!(by_handle(b, "read"), message());
    assert_eq!(by_handle(b, "write"), REPLY);
    assert_eq!(by_handle(a, "read"), REPLY);
    assert_eq!(
        stream(&run.events, pid, "write"),
        [message(), REPLY.to_vec()].concat()
    );
    assert!(run
        .events
        .iter()
        .all(|e| e.group == "mylib" && std::path::Path::new(&e.library) == built.library));
}

/// Replaces what varies between machines and runs in list/check output.
fn redact(text: &str, pids: &[u32]) -> String {
    let dir = built().library.parent().expect("dir").display().to_string();
    let mut text = text.replace(&dir, "[build]");
    for pid in pids {
        text = text.replace(&pid.to_string(), "[pid]");
    }
    redact_offsets(&text)
}

#[test]
fn check_shows_the_process_files_and_the_offsets_of_a_spec_only_library() {
    let built = built();
    let mut program = Interactive::spawn(Command::new(&built.program).arg("hold"));
    program.wait_for_output(b"ready\n");
    let pid = program.pid();
    let (code, stdout, stderr) = probectl(&[
        "check",
        "--pid",
        &pid.to_string(),
        "--probes",
        built.probes.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    insta::assert_snapshot!(redact(&stdout, &[pid]));
    program.send(b"go\n");
    program.wait_for_output(b"done\n");
    program.send(b"go\n");
    assert!(program.wait_exit().success());
}

#[test]
fn list_shows_a_spec_only_library_and_its_offsets() {
    let built = built();
    let (code, stdout, stderr) =
        probectl(&["list", "--probes", built.probes.to_str().expect("path")]);
    assert_eq!(code, 0, "{stderr}");
    insta::assert_snapshot!(redact(&stdout, &[]));
}

/// With `libraries = [...]` instead of a path, `-- command` still finds a library that the
/// command loads through its RPATH (outside the system library directories).
#[test]
fn a_command_finds_its_library_by_name_through_its_rpath() {
    let built = built();
    let text = std::fs::read_to_string(&built.probes).expect("probes");
    let by_name = text.replace(
        &format!("paths = [\"{}\"]", built.library.display()),
        "libraries = [\"libmylib.so*\"]",
    );
    assert_ne!(by_name, text);
    let probes = built.probes.with_file_name("mylib-by-name.toml");
    std::fs::write(&probes, by_name).expect("write probes");
    let run = Trace::start(
        &["mylib", "--probes", probes.to_str().expect("path")],
        &[built.program.to_str().expect("path")],
    )
    .wait();
    assert!(run.status.success(), "{}", run.stderr);
    let pid = run.events.first().expect("events").pid;
    assert_eq!(
        stream(&run.events, pid, "write"),
        [message(), REPLY.to_vec()].concat()
    );
}
