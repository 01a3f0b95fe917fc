//! Shared parts of the integration tests: real TLS peers, probectl runs, JSON event parsing.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;

pub mod otlp;
pub mod recording;

pub const PROBECTL: &str = env!("CARGO_BIN_EXE_probectl");

/// A scratch directory for this test binary.
pub fn scratch() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("probectl-tests");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A unique file path in the scratch directory.
pub fn scratch_file(name: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    scratch().join(format!("{}-{n}-{name}", std::process::id()))
}

pub fn peer(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

/// A per-test directory for probectl's cache of located functions (`PROBECTL_CACHE_DIR`).
pub fn cache_dir() -> PathBuf {
    let dir = scratch_file("locate-cache");
    std::fs::create_dir_all(&dir).expect("cache dir");
    dir
}

/// A self-signed certificate and key (made once per test binary).
pub fn cert_and_key() -> &'static (PathBuf, PathBuf) {
    static CERT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    CERT.get_or_init(|| {
        let cert = scratch_file("cert.pem");
        let key = scratch_file("key.pem");
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .expect("openssl req");
        assert!(status.success());
        (cert, key)
    })
}

/// A CA certificate, and a server certificate it signed for `IP:127.0.0.1` with its key: what
/// rustls accepts (it refuses a self-signed certificate used as the server's own). (CA, leaf,
/// leaf key).
pub fn ca_and_leaf() -> &'static (PathBuf, PathBuf, PathBuf) {
    static FILES: OnceLock<(PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    FILES.get_or_init(|| {
        let ca = scratch_file("ca.pem");
        let ca_key = scratch_file("ca.key");
        let leaf = scratch_file("leaf.pem");
        let leaf_key = scratch_file("leaf.key");
        let request = scratch_file("leaf.csr");
        let extensions = scratch_file("leaf.ext");
        std::fs::write(
            &extensions,
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .expect("extensions");
        let run = |args: &[&std::ffi::OsStr]| {
            let status = Command::new("openssl")
                .args(args)
                .stderr(Stdio::null())
                .status()
                .expect("openssl");
            assert!(status.success(), "openssl {args:?}");
        };
        let os = |text: &'static str| std::ffi::OsStr::new(text);
        run(&[
            os("req"),
            os("-x509"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-days"),
            os("2"),
            os("-subj"),
            os("/CN=probectl test CA"),
            os("-addext"),
            os("basicConstraints=critical,CA:TRUE"),
            os("-keyout"),
            ca_key.as_os_str(),
            os("-out"),
            ca.as_os_str(),
        ]);
        run(&[
            os("req"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-subj"),
            os("/CN=127.0.0.1"),
            os("-keyout"),
            leaf_key.as_os_str(),
            os("-out"),
            request.as_os_str(),
        ]);
        run(&[
            os("x509"),
            os("-req"),
            os("-days"),
            os("2"),
            os("-in"),
            request.as_os_str(),
            os("-CA"),
            ca.as_os_str(),
            os("-CAkey"),
            ca_key.as_os_str(),
            os("-CAcreateserial"),
            os("-extfile"),
            extensions.as_os_str(),
            os("-out"),
            leaf.as_os_str(),
        ]);
        (ca, leaf, leaf_key)
    })
}

/// The rustls fixture (tests/peers/rustls-fixture) built with the crypto provider `provider`
/// ("aws-lc-rs" or "ring"): stripped, fat LTO, the versions of its Cargo.lock. Built once into
/// target/rustls-fixture/PROVIDER (cargo makes a second build a no-op, and serialises
/// concurrent ones).
pub fn rustls_fixture(provider: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target/rustls-fixture").join(provider);
    let mut command = Command::new(env!("CARGO"));
    command
        .args([
            "build",
            "--release",
            "--locked",
            "--quiet",
            "--no-default-features",
        ])
        .args(["--features", provider])
        .arg("--manifest-path")
        .arg(root.join("tests/peers/rustls-fixture/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        // The build must not inherit this test's own cargo settings (profile, target dir).
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    let output = command.output().expect("cargo build of the rustls fixture");
    assert!(
        output.status.success(),
        "building the rustls fixture ({provider}) failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    target.join("release/rustls-fixture")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Serialises the tests of one test binary that trace the whole host, or that move a lot of
/// data: a system-wide trace would otherwise also capture the bulk transfers of the tests
/// running beside it, and could overflow its ring buffer with them.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A child process killed when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Guard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// Waits until process `pid` maps a file whose name contains `name` (the dynamic loader has
/// run), so that a `--pid` trace finds the library.
pub fn wait_for_mapping(pid: u32, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .contains(name)
    {
        assert!(
            Instant::now() < deadline,
            "process {pid} never mapped {name}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (at most 60 s) for `path` to exist (a peer's marker file).
pub fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `openssl s_server -www` on a free port: answers any GET with a status page.
pub fn s_server() -> (Guard, u16) {
    let (cert, key) = cert_and_key();
    let port = free_port();
    let child = Command::new("openssl")
        .args(["s_server", "-www", "-quiet", "-accept"])
        .arg(port.to_string())
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let guard = Guard(child);
    wait_for_port(port);
    (guard, port)
}

/// `openssl s_server -WWW` serving the files of `root`, listening on `host` (`127.0.0.1` or
/// `[::1]`) at a free port.
pub fn www_server(root: &Path, host: &str) -> (Guard, u16) {
    let (cert, key) = cert_and_key();
    let port = free_port();
    let child = Command::new("openssl")
        .args(["s_server", "-WWW", "-quiet", "-accept"])
        .arg(format!("{host}:{port}"))
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let guard = Guard(child);
    wait_for_listener(port);
    (guard, port)
}

/// The Python TLS server (Debian's python3: OpenSSL 3 `_ex` functions). `openssl s_server -www`
/// is no good as a traced server: its SSL BIO calls OpenSSL's internal functions, not the
/// exported ones.
pub fn python_server(fork: bool) -> (Guard, u16) {
    let (cert, key) = cert_and_key();
    let port = free_port();
    let mut command = Command::new("/usr/bin/python3");
    command
        .arg(peer("tls_server.py"))
        .arg(port.to_string())
        .arg(cert)
        .arg(key);
    if fork {
        command.arg("--fork");
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 server");
    let guard = Guard(child);
    wait_for_port(port);
    (guard, port)
}

/// An HTTP request that s_server -www answers; unique per call so that concurrent tests'
/// traffic cannot be mistaken for each other's.
pub fn unique_request(tag: &str) -> Vec<u8> {
    let file = scratch_file(tag);
    format!(
        "GET /{tag}/{} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: probectl-test\r\n\r\n",
        file.file_name().and_then(|n| n.to_str()).unwrap_or("x")
    )
    .into_bytes()
}

/// One event of `--format json` output, with its data decoded.
#[derive(Debug, Clone)]
pub struct Event {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub group: String,
    pub library: String,
    pub function: String,
    pub direction: String,
    pub len: u64,
    pub truncated: u64,
    pub data: Vec<u8>,
    pub json: serde_json::Value,
}

pub fn parse_events(path: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let json: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"));
            let field = |name: &str| {
                json[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("no {name} in {line}"))
                    .to_string()
            };
            let number = |name: &str| {
                json[name]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no {name} in {line}"))
            };
            Event {
                pid: number("pid") as u32,
                tid: number("tid") as u32,
                comm: field("comm"),
                group: field("group"),
                library: field("library"),
                function: field("function"),
                direction: field("direction"),
                len: number("len"),
                truncated: number("truncated"),
                data: base64::engine::general_purpose::STANDARD
                    .decode(field("data_b64"))
                    .expect("base64"),
                json,
            }
        })
        .collect()
}

/// The concatenated data of one process's events in one direction, in output order.
pub fn stream(events: &[Event], pid: u32, direction: &str) -> Vec<u8> {
    events
        .iter()
        .filter(|event| event.pid == pid && event.direction == direction)
        .flat_map(|event| event.data.iter().copied())
        .collect()
}

/// A running probectl.
pub struct Trace {
    child: Child,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<std::thread::JoinHandle<()>>,
    pub output: PathBuf,
    /// The run's `--report` file: its totals and losses as JSON.
    report: PathBuf,
}

impl Drop for Trace {
    /// A test that fails before it stops its trace must not leave a tracer running: the next
    /// tests would share the machine with its probes (and a system-wide one sees them all).
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A finished probectl run.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stderr: String,
    pub events: Vec<Event>,
    /// What `--report` wrote (`Null` when probectl was killed before it could).
    pub report: serde_json::Value,
}

impl Finished {
    /// A number of the report, by JSON pointer, e.g. "/bytes_truncated".
    pub fn report_number(&self, pointer: &str) -> u64 {
        report_number(&self.report, pointer, &self.stderr)
    }

    /// Asserts that the report counts no loss of any cause.
    pub fn assert_no_losses(&self) {
        assert_no_losses(&self.report, &self.stderr);
    }
}

/// A number of a `--report` JSON, by JSON pointer.
pub fn report_number(report: &serde_json::Value, pointer: &str, stderr: &str) -> u64 {
    report
        .pointer(pointer)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("no number at {pointer} in the report {report}\n{stderr}"))
}

/// Every loss counter of a `--report` JSON is 0, and it has no loss message.
pub fn assert_no_losses(report: &serde_json::Value, stderr: &str) {
    let losses = report["losses"]
        .as_object()
        .unwrap_or_else(|| panic!("no losses in the report {report}\n{stderr}"));
    for (cause, count) in losses {
        assert_eq!(count.as_u64(), Some(0), "{cause}: {report}\n{stderr}");
    }
    assert_eq!(report["loss_messages"], serde_json::json!([]), "{stderr}");
}

impl Trace {
    /// Starts `probectl run <args> --format json --output <file>` and waits until its probes are
    /// attached. `command` (after `--`) is optional.
    pub fn start(args: &[&str], command: &[&str]) -> Trace {
        Trace::start_with_env(args, command, &[])
    }

    /// [`Trace::start`] with these environment variables set for probectl (and so for the
    /// command it starts), e.g. `PROBECTL_CACHE_DIR`.
    pub fn start_with_env(
        args: &[&str],
        command: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Trace {
        let output = scratch_file("events.json");
        // A test that names its own report file reads it itself (then `report` is Null).
        let report = scratch_file("report.json");
        let _ = std::fs::remove_file(&report);
        let mut cmd = Command::new(PROBECTL);
        cmd.envs(env.iter().copied());
        cmd.arg("run")
            .args(args)
            .arg("--format")
            .arg("json")
            .arg("--output")
            .arg(&output);
        if !args.contains(&"--report") {
            cmd.arg("--report").arg(&report);
        }
        if !command.is_empty() {
            cmd.arg("--").args(command);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn probectl");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        let stderr_thread = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut text = sink.lock().expect("lock");
                text.push_str(&line);
                text.push('\n');
            }
        });
        let mut trace = Trace {
            child,
            stderr,
            stderr_thread: Some(stderr_thread),
            output,
            report,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if trace.stderr_text().contains("probectl: tracing ") {
                break;
            }
            if let Ok(Some(status)) = trace.child.try_wait() {
                // A command may finish before we look: that is fine for `--` runs.
                if !command.is_empty() && status.success() {
                    break;
                }
                panic!("probectl exited early ({status}):\n{}", trace.stderr_text());
            }
            assert!(
                Instant::now() < deadline,
                "probectl did not attach:\n{}",
                trace.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        trace
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// Kills probectl with SIGKILL (no cleanup of its own) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.wait_exit();
    }

    /// Sends SIGINT (Ctrl-C) and collects the run.
    pub fn stop(self) -> Finished {
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.wait()
    }

    /// Sends SIGINT and collects the run, its output read as JSON lines of any kind
    /// (`--decode` writes exchanges, and raw events for what it does not decode).
    pub fn stop_lines(self) -> FinishedLines {
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.wait_lines()
    }

    /// Waits (at most 60 s) for probectl to exit and collects the run as JSON lines.
    pub fn wait_lines(mut self) -> FinishedLines {
        let status = self.wait_exit();
        let text = std::fs::read_to_string(&self.output).unwrap_or_default();
        let _ = std::fs::remove_file(&self.output);
        FinishedLines {
            status,
            report: self.take_report(),
            stderr: self.stderr_text(),
            lines: text
                .lines()
                .map(|line| {
                    serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"))
                })
                .collect(),
        }
    }

    /// Waits (at most 60 s) for probectl to exit by itself and collects the run.
    pub fn wait(mut self) -> Finished {
        let status = self.wait_exit();
        let finished = Finished {
            status,
            stderr: self.stderr_text(),
            events: parse_events(&self.output),
            report: self.take_report(),
        };
        let _ = std::fs::remove_file(&self.output);
        finished
    }

    /// The `--report` JSON of a run that ended (`Null` if it wrote none), and the file gone.
    fn take_report(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(&self.report).unwrap_or_default();
        let _ = std::fs::remove_file(&self.report);
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    fn wait_exit(&mut self) -> ExitStatus {
        self.wait_exit_within(Duration::from_secs(60))
    }

    /// [`Trace::wait`] for a command that runs long (thousands of processes), at most `limit`.
    pub fn wait_within(mut self, limit: Duration) -> Finished {
        let status = self.wait_exit_within(limit);
        let finished = Finished {
            status,
            stderr: self.stderr_text(),
            events: parse_events(&self.output),
            report: self.take_report(),
        };
        let _ = std::fs::remove_file(&self.output);
        finished
    }

    /// Waits at most `limit` for probectl's exit without reading its events (a run too large
    /// to hold in memory as [`Event`]s): its status, stderr, report, and the output file, which
    /// the caller reads and removes.
    pub fn wait_unparsed_within(
        mut self,
        limit: Duration,
    ) -> (ExitStatus, String, serde_json::Value, PathBuf) {
        let status = self.wait_exit_within(limit);
        (
            status,
            self.stderr_text(),
            self.take_report(),
            self.output.clone(),
        )
    }

    fn wait_exit_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("probectl did not exit:\n{}", self.stderr_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(thread) = self.stderr_thread.take() {
            let _ = thread.join();
        }
        status
    }
}

/// A finished probectl run whose output is kept as JSON values, one per line.
#[derive(Debug)]
pub struct FinishedLines {
    pub status: ExitStatus,
    pub stderr: String,
    pub lines: Vec<serde_json::Value>,
    /// What `--report` wrote (see [`Finished::report`]).
    pub report: serde_json::Value,
}

impl FinishedLines {
    /// Asserts that the report counts no loss of any cause.
    pub fn assert_no_losses(&self) {
        assert_no_losses(&self.report, &self.stderr);
    }
}

/// Runs `probectl <args>` to completion; returns (exit code, stdout, stderr).
pub fn probectl(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(PROBECTL)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("probectl");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// One request/response exchange of the peer clients (tests/peers/tls_client.{py,js}): the
/// request in a scratch file, and the file where the client writes what it received.
pub struct Exchange {
    pub request: Vec<u8>,
    pub request_file: PathBuf,
    pub response_file: PathBuf,
}

impl Exchange {
    pub fn new(request: &[u8]) -> Exchange {
        let exchange = Exchange {
            request: request.to_vec(),
            request_file: scratch_file("request"),
            response_file: scratch_file("response"),
        };
        std::fs::write(&exchange.request_file, request).expect("write request");
        exchange
    }

    /// The client's arguments: host, port, request file, response file.
    pub fn client_args(&self, port: u16) -> Vec<String> {
        vec![
            "127.0.0.1".to_string(),
            port.to_string(),
            self.request_file.display().to_string(),
            self.response_file.display().to_string(),
        ]
    }

    /// What the client received.
    pub fn response(&self) -> Vec<u8> {
        std::fs::read(&self.response_file).expect("response")
    }

    /// Runs `probectl run <probectl_args> -- <program...> <client args>` to completion.
    pub fn traced(&self, probectl_args: &[&str], program: &[&str], port: u16) -> Finished {
        let args = self.client_args(port);
        let command: Vec<&str> = program
            .iter()
            .copied()
            .chain(args.iter().map(String::as_str))
            .collect();
        let run = Trace::start(probectl_args, &command).wait();
        assert!(run.status.success(), "{}", run.stderr);
        run
    }

    /// Starts the Python client with `flag` (`--hold` or `--hold-connected`): it prints a line
    /// and waits for one on stdin at that point. Returns it and the line it printed.
    pub fn held_python_client(&self, port: u16, flag: &str) -> (HeldClient, String) {
        let mut child = Command::new("/usr/bin/python3")
            .arg(peer("tls_client.py"))
            .args(self.client_args(port))
            .arg(flag)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut client = HeldClient {
            child,
            stdin: Some(stdin),
            stdout,
        };
        let line = client.read_line();
        (client, line)
    }
}

/// A peer client waiting on its stdin (see `Exchange::held_python_client`).
pub struct HeldClient {
    pub child: Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
}

impl HeldClient {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the client go on past its hold point.
    pub fn release(&mut self) {
        use std::io::Write;
        if let Some(stdin) = self.stdin.as_mut() {
            writeln!(stdin).expect("release the client");
        }
    }

    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("client output");
        line.trim().to_string()
    }

    /// Closes its stdin (its last hold) and waits for it to exit successfully.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        assert!(self.child.wait().expect("client").success());
    }
}

/// Runs the Python TLS client (Debian's python3, OpenSSL 3 `_ex` functions) to completion.
pub fn python_client(port: u16, request: &[u8]) -> (u32, Vec<u8>) {
    let exchange = Exchange::new(request);
    let mut child = Command::new("/usr/bin/python3")
        .arg(peer("tls_client.py"))
        .args(exchange.client_args(port))
        .spawn()
        .expect("python3");
    let pid = child.id();
    assert!(
        child.wait().expect("wait").success(),
        "python client failed"
    );
    (pid, exchange.response())
}

/// A peer program whose stdin the test writes and whose stdout it collects: the interactive
/// TLS tools (bssl-tool, gnutls-cli, tstclnt) move data between stdin/stdout and the connection.
pub struct Interactive {
    guard: Guard,
    stdin: Option<std::process::ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

/// Collects everything a pipe delivers into a shared buffer, on its own thread.
fn collect(mut pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let sink = buffer.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().expect("lock").extend_from_slice(&chunk[..n]);
        }
    });
    buffer
}

fn wait_for_bytes(buffer: &Mutex<Vec<u8>>, needle: &[u8], what: &str) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = buffer.lock().expect("lock").clone();
        if output.windows(needle.len()).any(|window| window == needle) {
            return output;
        }
        assert!(
            Instant::now() < deadline,
            "{:?} never appeared on {what}: {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(&output)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Interactive {
    pub fn spawn(command: &mut Command) -> Interactive {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = collect(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        Interactive {
            guard: Guard(child),
            stdin,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).expect("write to peer");
        stdin.flush().expect("flush");
    }

    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits (at most 20 s) until the program's stdout contains `needle`; returns all of it.
    pub fn wait_for_output(&self, needle: &[u8]) -> Vec<u8> {
        wait_for_bytes(&self.stdout, needle, "stdout")
    }

    /// The same for stderr (where the tools log their handshake).
    pub fn wait_for_log(&self, needle: &[u8]) -> Vec<u8> {
        wait_for_bytes(&self.stderr, needle, "stderr")
    }

    /// Waits (at most 20 s) for the program to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.guard.0.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "peer did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits until something listens on the TCP port, without connecting: servers that serve one
/// connection (bssl-tool server) must not see a probe connection.
pub fn wait_for_listener(port: u16) {
    let wanted = format!(":{port:04X} ");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listening = ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
            std::fs::read_to_string(table)
                .unwrap_or_default()
                .lines()
                .skip(1)
                .any(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    fields.len() > 3
                        && format!("{} ", fields[1]).ends_with(&wanted)
                        && fields[3] == "0A"
                })
        });
        if listening {
            return;
        }
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Which end of the connection a traced process is.
#[derive(Debug, Clone, Copy)]
pub enum Side {
    Client { server_port: u16 },
    Server { port: u16 },
}

/// Checks that `pid`'s events are one connection, byte-exact in both directions: every event
/// carries the same `conn.id`, `conn.handle` and 4-tuple, whose server-side port is the one
/// of `side`, and the written and read streams are exactly `written` and `read`. Returns the
/// handle.
pub fn assert_attributed(
    events: &[Event],
    pid: u32,
    side: Side,
    written: &[u8],
    read: &[u8],
) -> String {
    let mine: Vec<&Event> = events.iter().filter(|event| event.pid == pid).collect();
    assert!(!mine.is_empty(), "no events for pid {pid}");
    let handle = mine[0].json["conn"]["handle"]
        .as_str()
        .expect("conn.handle")
        .to_string();
    let conn = &mine[0].json["conn"];
    let (field, port) = match side {
        Side::Client { server_port } => ("remote", server_port),
        Side::Server { port } => ("local", port),
    };
    let address = conn[field]
        .as_str()
        .unwrap_or_else(|| panic!("conn.{field} is known: {}", mine[0].json));
    assert_eq!(
        address,
        format!("127.0.0.1:{port}"),
        "conn.{field} of {}",
        mine[0].json
    );
    let other = if field == "local" { "remote" } else { "local" };
    assert!(
        conn[other]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "conn.{other} is known: {}",
        mine[0].json
    );
    assert_eq!(conn["transport"].as_str(), Some("tcp"));
    for event in &mine {
        for key in ["id", "handle", "fd", "local", "remote"] {
            assert_eq!(
                event.json["conn"][key], conn[key],
                "one connection: conn.{key} of {}",
                event.json
            );
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&stream(events, pid, "write")),
        String::from_utf8_lossy(written),
        "written stream of pid {pid}"
    );
    assert_eq!(stream(events, pid, "write"), written);
    assert_eq!(stream(events, pid, "read"), read);
    handle
}

/// Both ends of one exchange on loopback: the client wrote `request` and read `response` on
/// a connection to `port`, the server the other way round (see `assert_attributed`).
pub fn assert_both_sides(
    client: (&Finished, u32),
    server: (&Finished, u32),
    port: u16,
    request: &[u8],
    response: &[u8],
) {
    assert_attributed(
        &client.0.events,
        client.1,
        Side::Client { server_port: port },
        request,
        response,
    );
    assert_attributed(
        &server.0.events,
        server.1,
        Side::Server { port },
        response,
        request,
    );
}

/// Builds a C source with gcc into the scratch directory (once per output name and test binary).
pub fn gcc(source: &str, output: &str, extra: &[&str]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("probectl-tests-c");
    std::fs::create_dir_all(&dir).expect("dir");
    let source_path = dir.join(format!("{output}.c"));
    let output_path = dir.join(output);
    std::fs::write(&source_path, source).expect("write C source");
    let status = Command::new("gcc")
        .args(["-O1", "-g", "-o"])
        .arg(&output_path)
        .arg(&source_path)
        .args(extra)
        .status()
        .expect("gcc");
    assert!(status.success(), "gcc {output}");
    output_path
}

/// `check`/`list` output without whether a located function was read from the locate cache
/// (another run's or test's) or found again: the same for snapshots that are not about the
/// cache.
pub fn uncached(text: &str) -> String {
    text.replace(
        "cross-reference analysis, cached",
        "cross-reference analysis",
    )
}

/// Replaces hexadecimal offsets (`0x3f2d0`) with `[offset]`: they change with every build of a
/// library. Version lines (`version: OpenSSL 3.0.19 ...`) become `version: [version]`, except
/// BoringSSL's, which is only its name.
pub fn redact_offsets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let line = match line.find("; version: ") {
            Some(at) if !line.contains("version: BoringSSL") => {
                format!("{}; version: [version]\n", &line[..at])
            }
            _ => line.to_string(),
        };
        let mut rest = line.as_str();
        while let Some(at) = rest.find("0x") {
            out.push_str(&rest[..at]);
            let digits = rest[at + 2..]
                .find(|c: char| !c.is_ascii_hexdigit())
                .unwrap_or(rest.len() - at - 2);
            if digits == 0 {
                out.push_str("0x");
            } else {
                out.push_str("[offset]");
            }
            rest = &rest[at + 2 + digits..];
        }
        out.push_str(rest);
    }
    out
}

/// Mounts tracefs at /sys/kernel/tracing if it is not (a fresh machine), as probectl run as
/// root would: tests of what an unprivileged probectl says must not depend on whether a root
/// run happened before them.
pub fn ensure_tracefs() {
    let mounted = std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|line| line.split_whitespace().nth(1) == Some("/sys/kernel/tracing"));
    if !mounted {
        let status = Command::new("mount")
            .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
            .status()
            .expect("mount");
        assert!(status.success(), "mounting tracefs");
    }
}

/// Where scripts/setup installs the pinned programs that carry their own TLS without its
/// symbols (bun, deno, uv): `$PROBECTL_PEERS`, else /opt/probectl-peers.
pub fn peers_dir() -> PathBuf {
    std::env::var_os("PROBECTL_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/probectl-peers"))
}

fn installed_peer(path: PathBuf, what: &str) -> PathBuf {
    let runs = Command::new(&path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|output| output.status.success());
    // Absent is a failure, not a skip: CI runs scripts/setup, so a missing peer is a broken
    // setup, and a test that silently passed without it would prove nothing.
    assert!(
        runs,
        "{what} is not installed at {} (run scripts/setup)",
        path.display()
    );
    path
}

/// A program of an npm package installed by scripts/setup: `bun` (1.4.5) or `deno` (2.9.6).
/// Panics (the test fails) when it is not there.
pub fn npm_peer(name: &str) -> PathBuf {
    let binary = match name {
        "bun" => "bun/bin/bun.exe",
        "deno" => "deno/deno",
        other => panic!("no npm peer {other} in scripts/setup"),
    };
    installed_peer(
        peers_dir().join("npm/node_modules").join(binary),
        &format!("npm package {name}"),
    )
}

/// uv 0.13.9 (PyPI), installed by scripts/setup into a venv. Panics when it is not there.
pub fn uv_peer() -> PathBuf {
    installed_peer(peers_dir().join("uv/bin/uv"), "PyPI package uv")
}
