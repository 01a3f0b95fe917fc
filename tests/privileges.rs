//! Least privilege, proven: probectl run as user nobody with exactly the capabilities the
//! README lists captures a real TLS exchange byte for byte, and with any one of them dropped it
//! fails at once with an error naming the capability it lacks (and writes no output file).
//!
//! Capabilities are set with setpriv (util-linux): inheritable, ambient and bounding sets all
//! equal to the list, so that probectl's effective set after exec is exactly that list.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const NOBODY: &str = "65534";
/// What `-- CMD` and `--pid` of a process of the same user need.
const COMMAND_SET: &[&str] = &["bpf", "perfmon", "dac_override"];

/// `setpriv` running `args` as nobody with exactly `caps` (names without `cap_`).
fn as_nobody(caps: &[&str]) -> Command {
    let set: String = std::iter::once("-all".to_string())
        .chain(caps.iter().map(|cap| format!("+{cap}")))
        .collect::<Vec<_>>()
        .join(",");
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(format!("--bounding-set={set}"))
        .arg(PROBECTL)
        .stdin(Stdio::null());
    command
}

/// A directory nobody can write (the test's scratch area is root's).
fn nobody_dir(name: &str) -> PathBuf {
    let dir = scratch_file(name);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    dir
}

/// The request file for the Python client, readable by nobody.
fn request_in(dir: &Path, tag: &str) -> (PathBuf, Vec<u8>) {
    let request = unique_request(tag);
    let path = dir.join("request");
    std::fs::write(&path, &request).expect("write request");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    (path, request)
}

/// The Python client's command line (Debian's python3: libssl.so.3).
fn client_args(port: u16, request: &Path, response: &Path) -> Vec<String> {
    vec![
        "/usr/bin/python3".into(),
        peer("tls_client.py").display().to_string(),
        "127.0.0.1".into(),
        port.to_string(),
        request.display().to_string(),
        response.display().to_string(),
    ]
}

#[test]
fn a_command_traced_with_exactly_the_documented_capabilities_is_captured() {
    ensure_tracefs();
    let (_server, port) = python_server(false);
    let dir = nobody_dir("least-privilege");
    let (request_file, request) = request_in(&dir, "least-privilege");
    let response_file = dir.join("response");
    let events_file = dir.join("events.json");
    let output = as_nobody(COMMAND_SET)
        .args(["run", "openssl", "--format", "json", "-o"])
        .arg(&events_file)
        .arg("--")
        .args(client_args(port, &request_file, &response_file))
        .output()
        .expect("setpriv probectl");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("FAILED"), "{stderr}");
    // The oracle: what the client itself sent (the test's file) and received (its own file).
    let response = std::fs::read(&response_file).expect("the client's response");
    assert!(response.starts_with(b"HTTP/1.0 200 OK"), "{response:?}");
    let events = parse_events(&events_file);
    let pid = events.first().expect("events").pid;
    assert!(
        events.iter().all(|event| event.pid == pid),
        "only the command"
    );
    assert_attributed(
        &events,
        pid,
        Side::Client { server_port: port },
        &request,
        &response,
    );
    let mode = std::fs::metadata(&events_file)
        .expect("events")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn one_capability_fewer_is_named() {
    ensure_tracefs();
    let dir = nobody_dir("one-fewer");
    let events_file = dir.join("events.json");
    for dropped in COMMAND_SET {
        let caps: Vec<&str> = COMMAND_SET
            .iter()
            .copied()
            .filter(|cap| cap != dropped)
            .collect();
        let output = as_nobody(&caps)
            .args(["run", "openssl", "-o"])
            .arg(&events_file)
            .args(["--", "/bin/true"])
            .output()
            .expect("setpriv probectl");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "without {dropped}: {stderr}");
        let name = format!("CAP_{}", dropped.to_uppercase());
        assert!(
            stderr.contains(&format!("(missing: {name})")),
            "without {dropped}, the error names {name}: {stderr}"
        );
        assert!(!stderr.contains("tracing"), "nothing attached: {stderr}");
        assert!(!events_file.exists(), "no output file without {dropped}");
    }
}

/// Waits for "probectl: tracing" on the child's stderr (collected by a thread).
fn wait_tracing(child: &mut Child) -> std::sync::Arc<std::sync::Mutex<String>> {
    use std::io::BufRead;
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = text.clone();
    let pipe = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut text = sink.lock().expect("lock");
            text.push_str(&line);
            text.push('\n');
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !text.lock().expect("lock").contains("probectl: tracing ") {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("probectl exited ({status}): {}", text.lock().expect("lock"));
        }
        assert!(Instant::now() < deadline, "probectl did not attach");
        std::thread::sleep(Duration::from_millis(20));
    }
    text
}

#[test]
fn another_users_process_needs_sys_ptrace_too() {
    ensure_tracefs();
    // The server runs as root, probectl as nobody.
    let (server, port) = python_server(false);
    let pid = server.pid().to_string();
    let dir = nobody_dir("other-user");
    let events_file = dir.join("events.json");

    let output = as_nobody(COMMAND_SET)
        .args(["run", "openssl", "--pid", &pid, "-o"])
        .arg(&events_file)
        .output()
        .expect("setpriv probectl");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("(missing: CAP_SYS_PTRACE)"), "{stderr}");
    assert!(!events_file.exists());

    let mut caps = COMMAND_SET.to_vec();
    caps.push("sys_ptrace");
    let mut probectl = as_nobody(&caps)
        .args(["run", "openssl", "--format", "json", "--pid", &pid, "-o"])
        .arg(&events_file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv probectl");
    let stderr = wait_tracing(&mut probectl);
    let request = unique_request("other-user");
    let (_, response) = python_client(port, &request);
    // SAFETY: kill(2) on our own unreaped child (setpriv exec'd probectl: same pid).
    unsafe { libc::kill(probectl.id() as i32, libc::SIGINT) };
    let status = probectl.wait().expect("wait");
    let stderr = stderr.lock().expect("lock").clone();
    assert!(status.success(), "{stderr}");
    let events = parse_events(&events_file);
    // The server's side of the exchange: it read the request and wrote the response.
    assert_attributed(
        &events,
        server.pid(),
        Side::Server { port },
        &response,
        &request,
    );
}

#[test]
fn every_process_needs_sys_admin_too() {
    ensure_tracefs();
    let output = as_nobody(COMMAND_SET)
        .args(["run", "openssl"])
        .output()
        .expect("setpriv probectl");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("(missing: CAP_SYS_ADMIN)"), "{stderr}");
    insta::assert_snapshot!(stderr);
}
