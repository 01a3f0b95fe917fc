//! Files identified by what the process really maps: a client in a chroot with its own copy of
//! libssl, and a client in a private mount namespace with a copy of libssl bind-mounted over
//! the host's. `--pid` and system-wide runs both capture the client's exchange byte-exact (the
//! oracle: the request the client was given and the response it recorded), and `check` names
//! the file the process really maps.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;

const HOST_LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";

/// A TLS client linked against the system libssl. It prints "ready" once its libraries are
/// mapped and waits for a line on stdin; then it sends the request file to 127.0.0.1:<port>,
/// writes everything it reads back into the response file, and prints "done".
fn client_program() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        gcc(
            r#"
#include <arpa/inet.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    char line[8];
    puts("ready");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin)) return 2;
    static char request[65536];
    FILE *in = fopen(argv[2], "rb");
    if (!in) return 3;
    size_t length = fread(request, 1, sizeof request, in);
    fclose(in);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {0};
    address.sin_family = AF_INET;
    address.sin_port = htons(atoi(argv[1]));
    address.sin_addr.s_addr = htonl(0x7f000001);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) return 4;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) return 5;
    if (SSL_write(ssl, request, (int)length) != (int)length) return 6;
    FILE *out = fopen(argv[3], "wb");
    if (!out) return 7;
    char buffer[16384];
    int got;
    while ((got = SSL_read(ssl, buffer, sizeof buffer)) > 0) fwrite(buffer, 1, got, out);
    fclose(out);
    close(fd);
    puts("done");
    fflush(stdout);
    return 0;
}
"#,
            "ns-tls-client",
            &["-lssl", "-lcrypto"],
        )
    })
}

/// The files `ldd` says the program loads, the dynamic loader included.
fn ldd_list(program: &Path) -> Vec<PathBuf> {
    let output = Command::new("ldd").arg(program).output().expect("ldd");
    assert!(output.status.success(), "ldd {}", program.display());
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, target)) => target.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// A chroot with the client and its own copies of every library it loads (libssl.so.3 among
/// them), each at the path `ldd` gives, and an `io/` directory for its request and response.
fn chroot_dir() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = scratch_file("chroot");
        let program = client_program();
        let mut files = ldd_list(program);
        assert!(
            files.iter().any(|file| file.ends_with("libssl.so.3")),
            "the client loads libssl.so.3: {files:?}"
        );
        files.push(program.to_path_buf());
        for file in &files {
            let inside = root.join(file.strip_prefix("/").expect("absolute"));
            std::fs::create_dir_all(inside.parent().expect("parent")).expect("mkdir");
            std::fs::copy(file, &inside).expect("copy into the chroot");
        }
        std::fs::create_dir_all(root.join("io")).expect("io dir");
        root
    })
}

/// The chroot's libssl.so.3, as the host sees it.
fn chroot_libssl() -> PathBuf {
    let client = client_program();
    let libssl = ldd_list(client)
        .into_iter()
        .find(|file| file.ends_with("libssl.so.3"))
        .expect("libssl in ldd");
    chroot_dir().join(libssl.strip_prefix("/").expect("absolute"))
}

/// A copy of the host's libssl.so.3 (another inode, same contents).
fn libssl_copy() -> &'static Path {
    static COPY: OnceLock<PathBuf> = OnceLock::new();
    COPY.get_or_init(|| {
        let copy = scratch_file("libssl.so.3");
        std::fs::copy(HOST_LIBSSL, &copy).expect("copy libssl");
        copy
    })
}

/// A client started and held before its connection; `request` and `response` are the files
/// as the host sees them.
struct HeldClient {
    program: Interactive,
    request: Vec<u8>,
    response_file: PathBuf,
}

impl HeldClient {
    fn pid(&self) -> u32 {
        self.program.pid()
    }

    /// Lets it connect, and waits until it is done.
    fn run(&mut self) {
        self.program.send(b"go\n");
        self.program.wait_for_output(b"done\n");
        assert!(self.program.wait_exit().success(), "the client failed");
    }

    fn response(&self) -> Vec<u8> {
        std::fs::read(&self.response_file).expect("response")
    }
}

/// The client inside the chroot (`chroot` execs it: same pid).
fn chrooted_client(port: u16, tag: &str) -> HeldClient {
    let root = chroot_dir();
    let name = scratch_file(tag)
        .file_name()
        .and_then(|name| name.to_str())
        .expect("name")
        .to_string();
    let request = unique_request(tag);
    let request_inside = format!("/io/{name}.request");
    let response_inside = format!("/io/{name}.response");
    std::fs::write(root.join(&request_inside[1..]), &request).expect("request");
    let program_inside = Path::new("/").join(
        client_program()
            .strip_prefix("/")
            .expect("absolute program path"),
    );
    let program = Interactive::spawn(
        Command::new("chroot")
            .arg(root)
            .arg(program_inside)
            .arg(port.to_string())
            .arg(&request_inside)
            .arg(&response_inside),
    );
    program.wait_for_output(b"ready\n");
    HeldClient {
        program,
        request,
        response_file: root.join(&response_inside[1..]),
    }
}

/// The client in a private mount namespace where the copy of libssl is bind-mounted over the
/// host's path (`unshare` and `sh` exec: same pid). The host's file is untouched.
fn bind_mounted_client(port: u16, tag: &str) -> HeldClient {
    let request = unique_request(tag);
    let request_file = scratch_file("request");
    let response_file = scratch_file("response");
    std::fs::write(&request_file, &request).expect("request");
    let script = format!(
        "mount --bind '{}' '{HOST_LIBSSL}' && exec '{}' {port} '{}' '{}'",
        libssl_copy().display(),
        client_program().display(),
        request_file.display(),
        response_file.display()
    );
    let program = Interactive::spawn(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(script),
    );
    program.wait_for_output(b"ready\n");
    HeldClient {
        program,
        request,
        response_file,
    }
}

/// The (device, inode) of the libssl.so.3 that process `pid` maps, from its own maps line.
fn mapped_libssl_identity(pid: u32) -> (String, u64) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let line = maps
        .lines()
        .find(|line| line.ends_with("libssl.so.3"))
        .unwrap_or_else(|| panic!("pid {pid} maps no libssl.so.3:\n{maps}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_string(), fields[4].parse().expect("inode"))
}

/// Traces the held client (by pid, or system-wide), lets it run, and checks its exchange.
fn trace_and_check(mut client: HeldClient, port: u16, by_pid: bool) -> Finished {
    let pid = client.pid().to_string();
    let args: Vec<&str> = if by_pid {
        vec!["openssl", "--pid", &pid]
    } else {
        vec!["openssl"]
    };
    let trace = Trace::start(&args, &[]);
    client.run();
    let run = trace.stop();
    assert!(run.status.success(), "{}", run.stderr);
    let response = client.response();
    assert!(
        response.starts_with(b"HTTP/1.0 200 OK"),
        "the server answered: {:?}",
        String::from_utf8_lossy(&response)
    );
    assert_attributed(
        &run.events,
        client.pid(),
        Side::Client { server_port: port },
        &client.request,
        &response,
    );
    for event in run.events.iter().filter(|event| event.pid == client.pid()) {
        // The library as the client sees it.
        assert!(event.library.ends_with("/libssl.so.3"), "{}", event.library);
    }
    run
}

#[test]
fn chroot_with_its_own_libssl_traced_by_pid() {
    let (_server, port) = python_server(false);
    let client = chrooted_client(port, "chroot-pid");
    let run = trace_and_check(client, port, true);
    // The attach report names the chroot's copy.
    let copy = chroot_libssl();
    assert!(
        run.stderr
            .contains(&format!("(on the host: {})", copy.display())),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains(&format!("] {HOST_LIBSSL}")),
        "the host's libssl is not attached for a chrooted pid:\n{}",
        run.stderr
    );
}

#[test]
fn chroot_with_its_own_libssl_traced_system_wide() {
    let _exclusive = exclusive();
    let (_server, port) = python_server(false);
    let client = chrooted_client(port, "chroot-all");
    let run = trace_and_check(client, port, false);
    let copy = chroot_libssl();
    assert!(
        run.stderr
            .contains(&format!("(on the host: {})", copy.display())),
        "{}",
        run.stderr
    );
}

#[test]
fn check_names_the_chroot_copy_of_libssl() {
    let (_server, port) = python_server(false);
    let client = chrooted_client(port, "chroot-check");
    let pid = client.pid();
    let (code, stdout, stderr) = probectl(&["check", "--pid", &pid.to_string()]);
    assert_eq!(code, 0, "{stderr}");
    let root = chroot_dir().display().to_string();
    let program = client_program().display().to_string();
    insta::assert_snapshot!(redact_offsets(&uncached(
        &stdout
            .replace(&root, "[chroot]")
            .replace(&program, "[client]")
            .replace(&pid.to_string(), "[pid]")
    )));
    drop(client);
}

#[test]
fn bind_mounted_libssl_in_a_private_mount_namespace_traced_by_pid() {
    let (_server, port) = python_server(false);
    let client = bind_mounted_client(port, "bind-pid");
    let (device, inode) = mapped_libssl_identity(client.pid());
    assert_eq!(
        inode,
        std::fs::metadata(libssl_copy()).expect("copy").ino(),
        "the client maps the copy ({device})"
    );
    let run = trace_and_check(client, port, true);
    assert!(
        run.stderr.contains(&format!(", inode {inode})")),
        "the attach report names the copy by inode {inode}:\n{}",
        run.stderr
    );
}

#[test]
fn bind_mounted_libssl_in_a_private_mount_namespace_traced_system_wide() {
    let _exclusive = exclusive();
    let (_server, port) = python_server(false);
    let client = bind_mounted_client(port, "bind-all");
    let (_, inode) = mapped_libssl_identity(client.pid());
    let run = trace_and_check(client, port, false);
    assert!(
        run.stderr.contains(&format!(", inode {inode})")),
        "the copy is attached besides the host's libssl:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("] {HOST_LIBSSL} (OpenSSL")),
        "the host's libssl is attached too:\n{}",
        run.stderr
    );
}

#[test]
fn check_names_the_bind_mounted_copy_of_libssl() {
    let (_server, port) = python_server(false);
    let client = bind_mounted_client(port, "bind-check");
    let pid = client.pid();
    let copy = std::fs::metadata(libssl_copy()).expect("copy");
    let (code, stdout, stderr) = probectl(&["check", "--pid", &pid.to_string()]);
    assert_eq!(code, 0, "{stderr}");
    let expected = format!(
        "{HOST_LIBSSL}\n  the process's own file, not the one at this path on the host: device {}:{}, inode {}\n",
        libc::major(copy.dev()),
        libc::minor(copy.dev()),
        copy.ino()
    );
    assert!(stdout.contains(&expected), "{expected}\nnot in:\n{stdout}");
    drop(client);
}
