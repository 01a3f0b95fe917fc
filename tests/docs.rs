//! The documentation's commands run: every fenced block marked ```` ```sh doctest ```` in
//! README.md and docs/*.md is run, line by line, against a local nginx, and a ```` ```text
//! expect ```` block right after it lists lines that must appear in what the commands wrote
//! (`[...]` matches any text). See CONTRIBUTING.md, "Runnable documentation".
//!
//! In the commands, `probectl` is the binary under test, `127.0.0.1:8443` is the nginx (its
//! real port is put in), and `1234` is the pid of its worker process. A command still running
//! after a few seconds (a `--pid` or system-wide trace) gets SIGINT, as Ctrl-C would send it,
//! with curl requests to the nginx meanwhile so that it has something to capture.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// How long a command may run before it gets SIGINT.
const RUN_TIME: Duration = Duration::from_secs(4);

/// One runnable block of a document.
#[derive(Debug)]
struct Block {
    /// `file:line` of the block's opening fence.
    place: String,
    commands: Vec<String>,
    /// The lines of the `text expect` block after it, if any.
    expect: Vec<String>,
}

/// The `sh doctest` blocks of a markdown file, each with its `text expect` block.
fn blocks(path: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(path).expect("read doc");
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks: Vec<Block> = Vec::new();
    let mut index = 0;
    // Returns the body of the fenced block opening at `start` and the index after its end.
    let fenced = |start: usize| -> (Vec<String>, usize) {
        let indent = lines[start].len() - lines[start].trim_start().len();
        let mut body = Vec::new();
        let mut at = start + 1;
        while at < lines.len() && lines[at].trim_start() != "```" {
            body.push(lines[at].get(indent..).unwrap_or("").to_string());
            at += 1;
        }
        (body, at + 1)
    };
    while index < lines.len() {
        let info = lines[index].trim_start();
        if info == "```sh doctest" {
            let (body, after) = fenced(index);
            let mut commands = Vec::new();
            let mut pending = String::new();
            for line in body {
                if let Some(start) = line.strip_suffix('\\') {
                    pending.push_str(start);
                    pending.push(' ');
                    continue;
                }
                pending.push_str(&line);
                if !pending.trim().is_empty() {
                    commands.push(std::mem::take(&mut pending));
                }
                pending.clear();
            }
            blocks.push(Block {
                place: format!("{}:{}", path.display(), index + 1),
                commands,
                expect: Vec::new(),
            });
            index = after;
            continue;
        }
        if info == "```text expect" {
            let (body, after) = fenced(index);
            let block = blocks.last_mut().unwrap_or_else(|| {
                panic!("{}:{}: expect without a doctest", path.display(), index + 1)
            });
            block.expect = body
                .into_iter()
                .filter(|line| !line.trim().is_empty())
                .collect();
            index = after;
            continue;
        }
        index += 1;
    }
    blocks
}

/// Whether `line` matches `pattern`, where `[...]` in the pattern matches any text.
fn matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split("[...]").collect();
    let (first, rest) = parts.split_first().expect("one part at least");
    let Some(mut remaining) = line.strip_prefix(first) else {
        return false;
    };
    for (index, part) in rest.iter().enumerate() {
        if index + 1 == rest.len() {
            return remaining.ends_with(part);
        }
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.is_empty()
}

/// nginx with HTTP/1.1 and HTTP/2 on a free port, serving `a.txt` ("hello\n") and `big.bin`.
struct Nginx {
    child: Child,
    port: u16,
    worker: u32,
}

impl Nginx {
    fn start() -> Nginx {
        let (cert, key) = cert_and_key();
        let work = scratch_file("docs-nginx");
        let root = work.join("root");
        std::fs::create_dir_all(&root).expect("root");
        std::fs::write(root.join("a.txt"), "hello\n").expect("a.txt");
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(root.join("big.bin"), big).expect("big.bin");
        let port = free_port();
        let temp = |name: &str| work.join(name).display().to_string();
        let config = format!(
            "user root;\nworker_processes 1;\ndaemon off;\npid {pid};\nerror_log {log};\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {body}; proxy_temp_path {proxy};\n\
               fastcgi_temp_path {fcgi}; uwsgi_temp_path {uwsgi}; scgi_temp_path {scgi};\n\
               server {{\n    listen 127.0.0.1:{port} ssl http2;\n\
                 ssl_certificate {cert}; ssl_certificate_key {key};\n    root {root};\n  }}\n}}\n",
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
        let master = child.id();
        wait_for_listener(port);
        // The worker: the master's child, once it maps libssl.
        let deadline = Instant::now() + Duration::from_secs(20);
        let worker = loop {
            let children =
                std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
                    .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().find_map(|pid| pid.parse().ok()) {
                break pid;
            }
            assert!(Instant::now() < deadline, "nginx started no worker");
            std::thread::sleep(Duration::from_millis(50));
        };
        wait_for_mapping(worker, "libssl.so");
        Nginx {
            child,
            port,
            worker,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Requests to the nginx every 300 ms while it lives, for traces that wait for traffic.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(port: u16) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let _ = Command::new("curl")
                    .args(["-sk", "-o", "/dev/null", "--max-time", "2"])
                    .arg(format!("https://127.0.0.1:{port}/a.txt"))
                    .status();
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        Traffic {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The documented command with this machine's port and pid put in.
fn localize(text: &str, nginx: &Nginx) -> String {
    text.replace("8443", &nginx.port.to_string())
        .replace("1234", &nginx.worker.to_string())
}

/// Runs one command line in its own process group in `dir`; returns (exited by itself, status
/// success, combined stdout and stderr).
fn run_line(line: &str, dir: &Path, bin: &Path) -> (bool, Option<i32>, String) {
    use std::os::unix::process::CommandExt;
    let out = dir.join("output.txt");
    let file = std::fs::File::create(&out).expect("output file");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!("exec 2>&1; {line}"))
        .current_dir(dir)
        .env("PATH", path)
        .env("COLUMNS", "100")
        .stdin(Stdio::null())
        .stdout(file)
        .process_group(0)
        .spawn()
        .expect("bash");
    let group = child.id() as i32;
    let started = Instant::now();
    let mut interrupted = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        let elapsed = started.elapsed();
        if elapsed > RUN_TIME && !interrupted {
            // SAFETY: kill(2) of the process group we created (Ctrl-C on a terminal).
            unsafe { libc::kill(-group, libc::SIGINT) };
            interrupted = true;
        }
        if elapsed > RUN_TIME * 6 {
            // SAFETY: as above.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            let _ = child.wait();
            panic!("{line}: did not end after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = String::from_utf8_lossy(&std::fs::read(&out).unwrap_or_default()).into_owned();
    (!interrupted, status.code(), output)
}

#[test]
fn the_documented_commands_run_and_say_what_the_docs_show() {
    let _exclusive = exclusive();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let blocks: Vec<Block> = files.iter().flat_map(|file| blocks(file)).collect();
    // The convention is in use: the README's usage block and the docs' examples.
    assert!(blocks.len() >= 4, "doctest blocks: {blocks:?}");
    assert!(blocks.iter().any(|block| block.place.contains("README.md")));
    assert!(
        blocks
            .iter()
            .filter(|block| !block.expect.is_empty())
            .count()
            >= 3
    );

    let nginx = Nginx::start();
    let _traffic = Traffic::start(nginx.port);
    let bin = Path::new(PROBECTL).parent().expect("bin dir").to_path_buf();
    let mut failures = Vec::new();
    for block in &blocks {
        let dir = scratch_file("doc-block");
        std::fs::create_dir_all(&dir).expect("dir");
        let mut output = String::new();
        for command in &block.commands {
            let line = localize(command, &nginx);
            let (by_itself, code, said) = run_line(&line, &dir, &bin);
            // A command that ended by itself must succeed; one that waited for Ctrl-C must
            // end cleanly on it (probectl exits 0; a pipeline's reader may report the signal).
            let ok = matches!(
                (by_itself, code),
                (true, Some(0)) | (false, Some(0 | 130)) | (false, None)
            );
            if !ok {
                failures.push(format!(
                    "{}: `{line}` exited with {code:?}:\n{said}",
                    block.place
                ));
            }
            output.push_str(&said);
        }
        let lines: Vec<&str> = output.lines().collect();
        for expected in &block.expect {
            let expected = localize(expected, &nginx);
            if !lines.iter().any(|line| matches(&expected, line)) {
                failures.push(format!(
                    "{}: no line matches {expected:?} in:\n{output}",
                    block.place
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn expect_patterns() {
    assert!(matches("a [...] c", "a b c"));
    assert!(matches("a [...] c", "a  c"));
    assert!(!matches("a [...] c", "a b d"));
    assert!(matches("curl[[...]] x", "curl[12/12] x"));
    assert!(matches("[...]GET /a[...]", "  12 GET /a HTTP/1.1"));
    assert!(!matches("GET", "GET /"));
    assert!(matches("exact", "exact"));
}
