//! Bad input gets a clear error, a non-zero exit and no damage. Messages are snapshotted with
//! pids and scratch paths redacted.

mod common;

use std::process::{Command, Stdio};

use common::*;

/// Replaces what varies between runs (pids, scratch paths) with placeholders.
fn redact(text: &str, pids: &[u32]) -> String {
    let mut text = text.replace(&scratch().display().to_string(), "[scratch]");
    for pid in pids {
        text = text.replace(&pid.to_string(), "[pid]");
    }
    text
}

/// probectl's exit status for every error of its own (usage errors included).
const ERROR_STATUS: i32 = 1;

fn failing_run(args: &[&str], pids: &[u32]) -> String {
    failing_run_with(ERROR_STATUS, args, pids)
}

fn failing_run_with(status: i32, args: &[&str], pids: &[u32]) -> String {
    let (code, stdout, stderr) = probectl(args);
    assert_eq!(code, status, "must fail with {status}: {stderr}");
    assert!(stdout.is_empty(), "nothing on stdout: {stdout}");
    redact(&stderr, pids)
}

#[test]
fn unknown_plugin_lists_the_known_ones() {
    insta::assert_snapshot!(failing_run(&["run", "nosuchlib", "--pid", "1"], &[]));
}

#[test]
fn pid_that_does_not_exist() {
    // Above the kernel's pid_max default range used here: cannot exist.
    insta::assert_snapshot!(failing_run(&["run", "openssl", "--pid", "4194000"], &[]));
}

#[test]
fn process_without_a_matching_library() {
    let sleeper = Guard(Command::new("sleep").arg("60").spawn().expect("sleep"));
    let pid = sleeper.pid();
    insta::assert_snapshot!(failing_run(
        &["run", "openssl", "--pid", &pid.to_string()],
        &[pid]
    ));
}

#[test]
fn library_without_the_required_symbol() {
    let (server, _port) = python_server(false);
    let specs = scratch_file("missing-symbol.toml");
    std::fs::write(
        &specs,
        "[[group]]\nname = \"fake\"\nlibraries = [\"libssl.so*\"]\n\n[[group.probe]]\nsymbol = \"SSL_no_such_function\"\ndirection = \"write\"\nbuffer = \"arg1\"\nlength = \"return\"\n",
    )
    .expect("write specs");
    let pid = server.pid();
    let message = failing_run(
        &[
            "run",
            "fake",
            "--probes",
            specs.to_str().expect("path"),
            "--pid",
            &pid.to_string(),
        ],
        &[pid],
    );
    insta::assert_snapshot!(message);
}

#[test]
fn malformed_probes_file_names_file_line_and_column() {
    let specs = scratch().join("malformed.toml");
    std::fs::write(
        &specs,
        "[[group]]\nname = \"x\"\nlibraries = [\"libx.so*\"]\n\n[[group.probe]]\nsymbol = \"x_send\"\ndirection = \"sideways\"\nbuffer = \"arg1\"\nlength = \"return\"\n",
    )
    .expect("write specs");
    insta::assert_snapshot!(failing_run(
        &[
            "run",
            "x",
            "--probes",
            specs.to_str().expect("path"),
            "--pid",
            "1"
        ],
        &[]
    ));
}

#[test]
fn missing_probes_file() {
    insta::assert_snapshot!(failing_run(
        &["run", "openssl", "--probes", "/nonexistent/probes.toml"],
        &[]
    ));
}

#[test]
fn not_privileged_enough_to_load_bpf() {
    ensure_tracefs();
    // Drop to nobody: no capabilities at all.
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(PROBECTL)
        .args(["run", "openssl", "--pid", "1"])
        .stdin(Stdio::null())
        .output()
        .expect("setpriv");
    assert_eq!(output.status.code(), Some(1));
    insta::assert_snapshot!(String::from_utf8_lossy(&output.stderr));
}

#[test]
fn command_that_does_not_exist() {
    // 127, as a shell says "command not found".
    insta::assert_snapshot!(failing_run_with(
        127,
        &["run", "openssl", "--", "/nonexistent/program"],
        &[]
    ));
}

#[test]
fn command_not_in_path() {
    insta::assert_snapshot!(failing_run_with(
        127,
        &["run", "openssl", "--", "probectl-no-such-command"],
        &[]
    ));
}

#[test]
fn command_that_is_not_executable() {
    // 126, as a shell says "Permission denied"; nothing is attached ("tracing" is never said).
    insta::assert_snapshot!(failing_run_with(
        126,
        &["run", "openssl", "--", "/etc/passwd"],
        &[]
    ));
}

#[test]
fn command_that_is_a_directory() {
    insta::assert_snapshot!(failing_run_with(
        126,
        &["run", "openssl", "--", "/usr"],
        &[]
    ));
}

#[test]
fn kernel_thread() {
    // pid 2 is kthreadd on every Linux system.
    insta::assert_snapshot!(failing_run(&["run", "openssl", "--pid", "2"], &[]));
}

#[test]
fn kernel_thread_in_check() {
    insta::assert_snapshot!(failing_run(&["check", "--pid", "2"], &[]));
}

#[test]
fn hex_conflicts_with_json() {
    insta::assert_snapshot!(failing_run(
        &["run", "openssl", "--hex", "--format", "json"],
        &[]
    ));
}

#[test]
fn pid_conflicts_with_a_command() {
    insta::assert_snapshot!(failing_run(
        &["run", "openssl", "--pid", "1", "--", "true"],
        &[]
    ));
}

#[test]
fn ring_size_that_is_not_a_power_of_two() {
    insta::assert_snapshot!(failing_run(
        &["run", "openssl", "--ring-bytes", "5000", "--pid", "1"],
        &[]
    ));
}

#[test]
fn unknown_subcommand() {
    insta::assert_snapshot!(failing_run(&["trace", "openssl"], &[]));
}

#[test]
fn missing_plugin() {
    insta::assert_snapshot!(failing_run(&["run"], &[]));
}

#[test]
fn help_of_each_subcommand_shows_examples() {
    for subcommand in ["run", "list", "check"] {
        let (code, stdout, stderr) = probectl(&[subcommand, "--help"]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("\nExamples:\n"), "{stdout}");
        insta::assert_snapshot!(format!("help_{subcommand}"), stdout);
    }
}

#[test]
fn no_output_file_is_created_or_truncated_on_a_startup_error() {
    let sleeper = Guard(Command::new("sleep").arg("60").spawn().expect("sleep"));
    let pid = sleeper.pid().to_string();
    let fresh = scratch_file("never-created.txt");
    let (code, _, stderr) = probectl(&[
        "run",
        "openssl",
        "--pid",
        &pid,
        "-o",
        fresh.to_str().expect("path"),
    ]);
    assert_eq!(code, ERROR_STATUS, "{stderr}");
    assert!(!fresh.exists(), "{} was created", fresh.display());
    let existing = scratch_file("kept.txt");
    std::fs::write(&existing, b"earlier capture\n").expect("write");
    for args in [
        vec!["run", "openssl", "--pid", pid.as_str()],
        vec!["run", "nosuchlib", "--pid", pid.as_str()],
        vec!["run", "openssl", "--", "/etc/passwd"],
        vec!["run", "openssl", "--", "/nonexistent/program"],
    ] {
        let mut args = args.clone();
        args.extend(["-o", existing.to_str().expect("path")]);
        let (code, _, stderr) = probectl(&args);
        assert_ne!(code, 0, "{args:?}: {stderr}");
        assert_eq!(
            std::fs::read(&existing).expect("read"),
            b"earlier capture\n",
            "{args:?} touched the output file"
        );
    }
}

#[test]
fn capture_limit_out_of_range() {
    insta::assert_snapshot!(failing_run(
        &["run", "openssl", "--max-bytes", "0", "--pid", "1"],
        &[]
    ));
}

#[test]
fn output_file_is_created_private() {
    let (server, port) = python_server(false);
    let output = scratch_file("private.json");
    let mut probectl = Command::new(PROBECTL)
        .args([
            "run",
            "openssl",
            "--format",
            "json",
            "--pid",
            &server.pid().to_string(),
            "--output",
        ])
        .arg(&output)
        .stderr(Stdio::piped())
        .spawn()
        .expect("probectl");
    let mut stderr = std::io::BufReader::new(probectl.stderr.take().expect("stderr"));
    let mut line = String::new();
    use std::io::BufRead;
    while !line.contains("probectl: tracing") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).expect("stderr") > 0,
            "probectl ended early"
        );
    }
    python_client(port, &unique_request("private"));
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(probectl.id() as i32, libc::SIGINT) };
    assert!(probectl.wait().expect("wait").success());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&output)
        .expect("output")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!parse_events(&output).is_empty());
}
