//! `probectl agent --config FILE`: a system-wide trace configured by a TOML file, its logs JSON
//! lines on stderr, SIGHUP reloading it (the running trace delivers what it holds first; a bad
//! file is refused and the running trace goes on), SIGTERM ending it. The oracle: the paths the
//! test's curl fetched, and what curl received.

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn write_config(path: &Path, output: &Path, extra: &str) {
    let text = format!(
        "group = \"openssl\"\n[select]\ncomm = \"curl\"\n{extra}\n[output]\nfile = \"{}\"\ndecode = \"http=exchange\"\n",
        output.display()
    );
    std::fs::write(path, text).expect("config");
}

/// The JSON log lines so far.
fn logs(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
        })
        .collect()
}

/// Waits until `count` log lines satisfy `what`.
fn wait_logs(path: &Path, count: usize, what: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while logs(path).iter().filter(|line| what(line)).count() < count {
        assert!(
            Instant::now() < deadline,
            "logs never said it:\n{}",
            std::fs::read_to_string(path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tracing(line: &Value) -> bool {
    line["topic"] == "tracing"
        && line["msg"]
            .as_str()
            .is_some_and(|m| m.starts_with("tracing "))
}

fn paths(output: &Path) -> Vec<String> {
    std::fs::read_to_string(output)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|line| line["path"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_agent_reloads_on_sighup_without_losing_what_it_holds() {
    let _lock = exclusive();
    let root = scratch_file("site");
    std::fs::create_dir_all(&root).expect("site");
    let nonce = std::process::id();
    for name in ["one", "two", "three", "four"] {
        std::fs::write(
            root.join(format!("{name}-{nonce}.txt")),
            format!("{name}\n"),
        )
        .expect("file");
    }
    let (_first, first_port) = www_server(&root, "127.0.0.1");
    let (_second, second_port) = www_server(&root, "127.0.0.1");
    let fetch = |port: u16, name: &str| {
        let output = Command::new("curl")
            .args(["-sk", "--http1.1"])
            .arg(format!("https://127.0.0.1:{port}/{name}-{nonce}.txt"))
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&output.stdout), format!("{name}\n"));
    };
    let config = scratch_file("agent.toml");
    let output = scratch_file("agent.json");
    let log = scratch_file("agent.log");
    write_config(&config, &output, "");
    let mut agent = Command::new(PROBECTL)
        .arg("agent")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("probectl agent");
    let guard = KillOnDrop(agent.id());
    wait_logs(&log, 1, tracing);
    fetch(first_port, "one");
    // A new selection: only the second server's port.
    write_config(&config, &output, &format!("port = [{second_port}]"));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGHUP) };
    wait_logs(&log, 2, tracing);
    // What the first trace held was written before the second started.
    assert!(
        paths(&output).contains(&format!("/one-{nonce}.txt")),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    fetch(first_port, "two");
    fetch(second_port, "three");
    // A broken file is refused; the running trace goes on.
    std::fs::write(&config, "group = \n").expect("config");
    // SAFETY: as above.
    unsafe { libc::kill(agent.id() as i32, libc::SIGHUP) };
    wait_logs(&log, 1, |line| {
        line["level"] == "error"
            && line["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("reload refused"))
    });
    fetch(second_port, "four");
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: as above.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait().expect("wait");
    // Reaped: its pid is no longer ours to signal.
    std::mem::forget(guard);
    assert!(status.success(), "{status}");
    let seen = paths(&output);
    for wanted in ["one", "three", "four"] {
        assert!(
            seen.contains(&format!("/{wanted}-{nonce}.txt")),
            "{wanted}: {seen:?}"
        );
    }
    assert!(
        !seen.contains(&format!("/two-{nonce}.txt")),
        "the second configuration selects the other port only: {seen:?}"
    );
    // Every line on stderr is a JSON object with a level and a message; each trace's summary
    // is logged when it ends.
    let lines = logs(&log);
    assert!(lines
        .iter()
        .all(|l| l["level"].is_string() && l["msg"].is_string()));
    let ended: Vec<&Value> = lines.iter().filter(|l| l["msg"] == "trace ended").collect();
    assert_eq!(ended.len(), 2, "{lines:?}");
    assert_eq!(ended[1]["generation"], 2);
    assert_eq!(
        ended[1]["summary"]["selection"]["addresses"][0],
        format!("port {second_port}")
    );
    let mode = std::fs::metadata(&output)
        .expect("output")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let mut text = String::new();
    std::fs::File::open(&output)
        .expect("output")
        .read_to_string(&mut text)
        .expect("read");
    assert!(!text.is_empty());
}

/// Kills the agent if the test fails before it stops it (forgotten once it is reaped).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a pid of ours; harmless if it has exited.
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}
