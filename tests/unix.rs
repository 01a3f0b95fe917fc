//! probectl behaves like a Unix tool: `-- CMD` exits as a shell says, a signal to probectl ends
//! the command too (no orphan) with the output complete, `--pid` of a thread traces its
//! process, and on a shared terminal events are whole lines.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The pid in "tracing ... command NAME (pid N)".
fn command_pid(stderr: &str) -> u32 {
    let line = stderr
        .lines()
        .find(|line| line.contains("probectl: tracing "))
        .unwrap_or_else(|| panic!("no tracing line:\n{stderr}"));
    let at = line.find("(pid ").expect("(pid") + 5;
    line[at..]
        .split(')')
        .next()
        .and_then(|pid| pid.parse().ok())
        .expect("pid")
}

#[test]
fn a_command_killed_by_sigterm_makes_probectl_exit_143() {
    let (code, _stdout, stderr) = probectl(&["run", "openssl", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(code, 143, "{stderr}");
}

#[test]
fn a_command_exit_code_is_passed_on() {
    let (code, _stdout, stderr) = probectl(&["run", "openssl", "--", "sh", "-c", "exit 7"]);
    assert_eq!(code, 7, "{stderr}");
}

#[test]
fn a_command_that_is_not_executable_exits_126_without_tracing() {
    let (code, stdout, stderr) = probectl(&["run", "openssl", "--", "/etc/passwd"]);
    assert_eq!(code, 126, "{stderr}");
    assert!(stdout.is_empty());
    assert!(!stderr.contains("tracing"), "{stderr}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
}

#[test]
fn a_command_that_is_not_found_exits_127_without_tracing() {
    let (code, stdout, stderr) =
        probectl(&["run", "openssl", "--", "probectl-no-such-command-anywhere"]);
    assert_eq!(code, 127, "{stderr}");
    assert!(stdout.is_empty());
    assert!(!stderr.contains("tracing"), "{stderr}");
}

/// Sends `signal` to probectl while its command (a TLS client that lingers after its exchange)
/// runs: probectl passes it on, the command is gone when probectl exits, probectl's status is
/// the command's as a shell gives it, and the output is complete: valid JSON lines with the
/// client's request and response byte-exact (as the client itself recorded them).
fn signal_to_probectl_ends_the_command(signal: i32, expected_status: i32) {
    let (_server, port) = python_server(false);
    let exchange = Exchange::new(&unique_request("signal"));
    let client_args = exchange.client_args(port);
    let client = peer("tls_client.py");
    let mut command = vec!["/usr/bin/python3", client.to_str().expect("path")];
    command.extend(client_args.iter().map(String::as_str));
    command.push("--linger");
    let trace = Trace::start(&["openssl"], &command);
    let done = Path::new(&format!("{}.done", exchange.response_file.display())).to_path_buf();
    wait_for_file(&done);
    let child = command_pid(&trace.stderr_text());
    assert!(Path::new(&format!("/proc/{child}")).exists());
    // SAFETY: kill(2) on our own unreaped child (probectl).
    unsafe { libc::kill(trace.pid() as i32, signal) };
    let run = trace.wait();
    assert_eq!(run.status.code(), Some(expected_status), "{}", run.stderr);
    assert!(
        !Path::new(&format!("/proc/{child}")).exists(),
        "the command (pid {child}) outlived probectl"
    );
    let said: Vec<String> = run
        .stderr
        .lines()
        .filter(|line| line.contains("passing SIG") || line.contains("ended by"))
        .map(|line| line.replace(&child.to_string(), "[pid]"))
        .collect();
    insta::assert_snapshot!(format!("signal_{expected_status}"), said.join("\n"));
    assert_eq!(
        run.report_number("/losses/chunks_ring_full"),
        0,
        "{}",
        run.stderr
    );
    assert_eq!(stream(&run.events, child, "write"), exchange.request);
    assert_eq!(stream(&run.events, child, "read"), exchange.response());
}

#[test]
fn sigint_to_probectl_ends_the_command_and_delivers_everything() {
    // Python exits with SIGINT after an uncaught KeyboardInterrupt: 128 + 2.
    signal_to_probectl_ends_the_command(libc::SIGINT, 130);
}

#[test]
fn sigterm_to_probectl_ends_the_command_and_delivers_everything() {
    signal_to_probectl_ends_the_command(libc::SIGTERM, 143);
}

#[test]
fn a_command_that_ignores_the_signal_is_killed_after_the_grace_time() {
    // exec: the command itself (sleep) ignores SIGTERM.
    let trace = Trace::start(&["openssl"], &["sh", "-c", "trap '' TERM; exec sleep 600"]);
    let child = command_pid(&trace.stderr_text());
    // Once sleep runs, the trap is set (and inherited as "ignored").
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default() != "sleep\n" {
        assert!(Instant::now() < deadline, "sleep never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: kill(2) on our own unreaped child (probectl).
    unsafe { libc::kill(trace.pid() as i32, libc::SIGTERM) };
    let run = trace.wait();
    assert_eq!(
        run.status.code(),
        Some(128 + libc::SIGKILL),
        "{}",
        run.stderr
    );
    assert!(
        !Path::new(&format!("/proc/{child}")).exists(),
        "the command (pid {child}) outlived probectl"
    );
    let said: Vec<String> = run
        .stderr
        .lines()
        .filter(|line| {
            line.contains("passing SIG") || line.contains("killing") || line.contains("ended by")
        })
        .map(|line| line.replace(&child.to_string(), "[pid]"))
        .collect();
    insta::assert_snapshot!(said.join("\n"));
}

/// The Python TLS server with a second thread that only sleeps: its thread id is not the
/// process's pid.
fn threaded_python_server() -> (Guard, u16, u32) {
    let (cert, key) = cert_and_key();
    let port = free_port();
    let script = format!(
        "import runpy, sys, threading, time\n\
         threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n\
         sys.argv = [{server:?}, {port:?}, {cert:?}, {key:?}]\n\
         runpy.run_path({server:?}, run_name='__main__')\n",
        server = peer("tls_server.py").display().to_string(),
        port = port.to_string(),
        cert = cert.display().to_string(),
        key = key.display().to_string(),
    );
    let child = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("python3");
    let guard = Guard(child);
    wait_for_port(port);
    let pid = guard.pid();
    let tid = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&tid| tid != pid)
        .expect("a second thread");
    (guard, port, tid)
}

#[test]
fn pid_of_a_thread_traces_its_process() {
    let (server, port, tid) = threaded_python_server();
    let trace = Trace::start(&["openssl", "--pid", &tid.to_string()], &[]);
    let request = unique_request("thread");
    let (_client, response) = python_client(port, &request);
    let run = trace.stop();
    assert!(run.status.success(), "{}", run.stderr);
    let said = run
        .stderr
        .lines()
        .find(|line| line.contains("is a thread of process"))
        .unwrap_or_else(|| panic!("no word about the thread:\n{}", run.stderr))
        .replace(&tid.to_string(), "[tid]")
        .replace(&server.pid().to_string(), "[pid]");
    insta::assert_snapshot!(said);
    assert!(run
        .stderr
        .contains(&format!("in pid {} (python3)", server.pid())));
    assert_eq!(stream(&run.events, server.pid(), "read"), request);
    assert_eq!(stream(&run.events, server.pid(), "write"), response);
}

/// A client that prints lines on stdout between its TLS exchanges, to the terminal that
/// probectl's events also go to. Each line in one write(2) (`print` may write the text and its
/// newline separately): the test checks probectl's lines, not Python's.
const CHATTY_CLIENT: &str = r#"
import socket, ssl, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
for i in range(count):
    sys.stdout.buffer.write(f"client line {i} before\n".encode()); sys.stdout.buffer.flush()
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(f"GET /chatty/{i} HTTP/1.0\r\n\r\n".encode())
            while tls.recv(65536):
                pass
    sys.stdout.buffer.write(f"client line {i} after\n".encode()); sys.stdout.buffer.flush()
"#;

#[test]
fn on_a_shared_terminal_events_are_whole_lines_and_probectl_says_how_to_separate_them() {
    let (_server, port) = python_server(false);
    let count = 20;
    let script = scratch_file("chatty.py");
    std::fs::write(&script, CHATTY_CLIENT).expect("write script");
    let inner = format!(
        "{PROBECTL} run openssl --format json -- /usr/bin/python3 {} {port} {count}",
        script.display()
    );
    // script(1) runs it on a new pseudo-terminal: stdout and stderr of probectl and of the
    // command all go to that terminal, and script copies it to our pipe.
    let output = Command::new("script")
        .args(["-qefc", &inner, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script");
    let transcript = String::from_utf8_lossy(&output.stdout).replace("\r\n", "\n");
    assert!(output.status.success(), "{transcript}");
    let hints = transcript.matches("use -o FILE").count();
    assert_eq!(hints, 1, "one hint:\n{transcript}");
    let mut requests = Vec::new();
    for line in transcript.lines().filter(|line| !line.is_empty()) {
        if line.starts_with("probectl: ")
            || (line.starts_with("client line ")
                && (line.ends_with(" before") || line.ends_with(" after")))
        {
            continue;
        }
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("not a whole line ({error}): {line:?}\n{transcript}"));
        if event["direction"] == "write" {
            requests.push(event["data_b64"].as_str().expect("data").to_string());
        }
    }
    let expected: Vec<String> = (0..count)
        .map(|i| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .encode(format!("GET /chatty/{i} HTTP/1.0\r\n\r\n"))
        })
        .collect();
    assert_eq!(requests, expected, "{transcript}");
}

/// The warnings of a run's stderr, with `pid` and the scratch directory redacted.
fn warnings(stderr: &str, pid: u32) -> String {
    stderr
        .lines()
        .filter(|line| line.contains("warning:"))
        .map(|line| {
            line.replace(&format!("(pid {pid})"), "(pid [pid])")
                .replace(&scratch().display().to_string(), "[scratch]")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_command_that_maps_no_library_of_the_group_gets_one_warning() {
    let run = Trace::start(&["openssl"], &["sleep", "1"]).wait();
    assert!(run.status.success(), "{}", run.stderr);
    let pid = command_pid(&run.stderr);
    assert!(run.events.is_empty());
    insta::assert_snapshot!(warnings(&run.stderr, pid));
}

#[test]
fn a_command_that_uses_its_tls_library_gets_no_warning() {
    let (_server, port) = python_server(false);
    let exchange = Exchange::new(&unique_request("no-warning"));
    let run = exchange.traced(
        &["openssl"],
        &[
            "/usr/bin/python3",
            peer("tls_client.py").to_str().expect("path"),
        ],
        port,
    );
    assert!(!run.stderr.contains("warning:"), "{}", run.stderr);
    let pid = command_pid(&run.stderr);
    assert_eq!(stream(&run.events, pid, "write"), exchange.request);
}

const GO_CLIENT: &str = r#"package main

import (
	"crypto/tls"
	"io"
	"os"
)

func main() {
	conn, err := tls.Dial("tcp", "127.0.0.1:"+os.Args[1], &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		panic(err)
	}
	conn.Write([]byte("GET /go HTTP/1.0\r\n\r\n"))
	io.Copy(os.Stdout, conn)
}
"#;

#[test]
fn a_go_program_is_told_at_once_that_go_is_not_covered() {
    let (_server, port) = python_server(false);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("probectl-tests-go");
    std::fs::create_dir_all(&dir).expect("dir");
    let source = dir.join("client.go");
    let program = dir.join("go-client");
    std::fs::write(&source, GO_CLIENT).expect("write Go source");
    let status = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&program)
        .arg(&source)
        .env("GO111MODULE", "off")
        .status()
        .expect("go build");
    assert!(status.success(), "go build");
    let run = Trace::start(
        &["openssl"],
        &[program.to_str().expect("path"), &port.to_string()],
    )
    .wait();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(run.events.is_empty());
    let pid = command_pid(&run.stderr);
    let said = warnings(&run.stderr.replace(&dir.display().to_string(), "[go]"), pid);
    assert_eq!(said.lines().count(), 1, "one warning: {}", run.stderr);
    insta::assert_snapshot!(said);
}

#[test]
fn a_command_never_runs_when_probectl_fails_to_start() {
    // The output cannot be created: known only after attaching, with the command held.
    let marker = scratch_file("ran");
    let script = format!("touch '{}'", marker.display());
    let (code, stdout, stderr) = probectl(&[
        "run",
        "openssl",
        "-o",
        "/nonexistent-directory/events.txt",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("cannot create output file"), "{stderr}");
    assert!(!marker.exists(), "the command ran untraced");
}

/// An output that takes nothing (a pipe nobody reads, a paused pager) blocks the thread that
/// drains the ring, and with it the event loop. Ctrl-C still stops the run: once the output has
/// taken nothing for a while after it, probectl gives it up, says how many bytes were not
/// written, prints its summary and exits 1.
#[test]
fn ctrl_c_stops_a_run_whose_output_takes_nothing() {
    let _exclusive = exclusive();
    let recording = common::recording::Recording::start();
    const SIZE: usize = 30_000_000;
    let url = format!("https://127.0.0.1:{}/download/{SIZE}", recording.port);
    let mut child = Command::new(PROBECTL)
        .args(["run", "openssl", "--hex", "--"])
        .args(["curl", "-sk", "-o", "/dev/null", &url])
        .stdin(Stdio::null())
        // Piped and never read: after the pipe's buffer and probectl's own, writes block.
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("probectl");
    let stdout = child.stdout.take();
    // The download happened (the server's record of what it sent).
    let sent = recording.dir.join("0.out");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&sent).map_or(0, |m| m.len()) < SIZE as u64 {
        assert!(Instant::now() < deadline, "the download did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "blocked on its output"
    );
    // SAFETY: kill has no memory effects; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "probectl did not stop while its output took nothing"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(stdout);
    let mut stderr = String::new();
    use std::io::Read as _;
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bytes captured"), "the summary: {stderr}");
    assert!(
        stderr.contains("the output took nothing for 2 s after probectl was told to stop")
            && stderr.contains("bytes of events not written"),
        "{stderr}"
    );
}
