//! Command-line conventions: help, `check`'s verdict, `list`/`check` JSON (snapshots and a
//! schema), size suffixes, `-q`, colour, and the man page and completions. Pids and offsets
//! are redacted in snapshots, never data.

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

/// probectl with a fixed terminal width for help (clap wraps to at most 100 columns) and no
/// colour unless asked.
fn probectl_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(PROBECTL);
    command
        .args(args)
        .env("COLUMNS", "100")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("probectl");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn redact_pid(text: &str, pid: u32) -> String {
    text.replace(&pid.to_string(), "[pid]")
}

#[test]
fn top_level_help() {
    let (code, stdout, stderr) = probectl_env(&["--help"], &[]);
    assert_eq!(code, 0, "{stderr}");
    // The hidden generate subcommand is not shown.
    assert!(!stdout.contains("generate"), "{stdout}");
    assert!(
        stdout.lines().all(|line| line.chars().count() <= 100),
        "{stdout}"
    );
    insta::assert_snapshot!(stdout);
}

#[test]
fn value_names_say_what_they_take() {
    let (_, stdout, _) = probectl_env(&["run", "--help"], &[]);
    for name in [
        "<GROUP>",
        "--pid <PID>",
        "--output <FILE>",
        "--probes <FILE>",
        "--max-bytes <BYTES>",
        "--ring-bytes <BYTES>",
        "--max-body <BYTES>",
    ] {
        assert!(stdout.contains(name), "{name} in:\n{stdout}");
    }
    assert!(!stdout.to_lowercase().contains("plugin"), "{stdout}");
}

#[test]
fn check_verdict_of_a_traceable_process() {
    let (server, _port) = s_server();
    wait_for_mapping(server.pid(), "libssl.so");
    let pid = server.pid().to_string();
    // A cache of located functions of its own: the key probe's function is found by analysis
    // on this run, whatever other runs left in the default cache.
    let cache = cache_dir();
    let cache = cache.to_str().expect("cache dir");
    let (code, stdout, stderr) =
        probectl_env(&["check", "--pid", &pid], &[("PROBECTL_CACHE_DIR", cache)]);
    assert_eq!(code, 0, "{stderr}");
    let first = stdout.lines().next().unwrap_or_default();
    assert_eq!(
        redact_pid(first, server.pid()),
        "traceable: probectl run openssl --pid [pid] (libssl.so.3)"
    );
    // The files no group matches are counted, not listed; --all lists them.
    assert!(!stdout.contains("libc.so.6"), "{stdout}");
    assert!(
        stdout.contains("that no group matches: --all shows them"),
        "{stdout}"
    );
    let (_, all, _) = probectl_env(&["check", "--pid", &pid, "--all"], &[]);
    assert!(all.contains("/libc.so.6\n  no group matches"), "{all}");
    insta::assert_snapshot!(redact_offsets(&redact_pid(&stdout, server.pid())));
}

#[test]
fn check_verdict_of_a_process_without_tls() {
    let sleeper = Guard(Command::new("sleep").arg("60").spawn().expect("sleep"));
    wait_for_mapping(sleeper.pid(), "libc.so");
    let pid = sleeper.pid().to_string();
    let (code, stdout, stderr) = probectl_env(&["check", "--pid", &pid], &[]);
    assert_eq!(code, 0, "{stderr}");
    insta::assert_snapshot!(redact_pid(&stdout, sleeper.pid()));
}

#[test]
fn check_names_the_process_it_checks_for_a_thread() {
    // A thread id of a process: check says "checking", never "tracing".
    let (server, _port) = python_server(false);
    let tid = std::fs::read_dir(format!("/proc/{}/task", server.pid()))
        .expect("tasks")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&tid| tid != server.pid());
    let Some(tid) = tid else {
        // The server is single-threaded: start a threaded program instead.
        let threaded = Guard(
            Command::new("/usr/bin/python3")
                .args(["-c", "import threading,time; threading.Thread(target=time.sleep, args=(60,)).start(); print('ok', flush=True); time.sleep(60)"])
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3"),
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
        let tid = std::fs::read_dir(format!("/proc/{}/task", threaded.pid()))
            .expect("tasks")
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|&tid| tid != threaded.pid())
            .expect("a second thread");
        let (code, _, stderr) = probectl_env(&["check", "--pid", &tid.to_string()], &[]);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stderr.contains(&format!("checking process {}", threaded.pid())),
            "{stderr}"
        );
        assert!(!stderr.contains("tracing"), "{stderr}");
        return;
    };
    let (code, _, stderr) = probectl_env(&["check", "--pid", &tid.to_string()], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("checking process"), "{stderr}");
    assert!(!stderr.contains("tracing"), "{stderr}");
}

/// Asserts `value[key]` exists and has the JSON type `kind` ("string", "number", "bool",
/// "array", "object", "null", or "string|null", ...).
fn assert_field(value: &Value, key: &str, kind: &str) {
    let field = value
        .get(key)
        .unwrap_or_else(|| panic!("no field {key} in {value}"));
    let actual = match field {
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::Null => "null",
    };
    assert!(
        kind.split('|').any(|k| k == actual),
        "{key} is {actual}, expected {kind}: {value}"
    );
}

/// The schema of one file report (`list` files, `check` matches).
fn assert_file_report(file: &Value) {
    assert_field(file, "via", "string");
    assert_field(file, "outcome", "string");
    assert!(
        ["traced", "missing_required", "rejected", "unreadable"]
            .contains(&file["outcome"].as_str().unwrap_or_default()),
        "{file}"
    );
    assert_field(file, "reason", "string|null");
    assert_field(file, "version", "string|null");
    assert_field(file, "symbols", "array");
    for symbol in file["symbols"].as_array().into_iter().flatten() {
        assert_field(symbol, "symbol", "string");
        assert_field(symbol, "optional", "bool");
        assert_field(symbol, "offset", "number|null");
        assert_field(symbol, "placement", "string|null");
    }
}

#[test]
fn list_json_schema() {
    let (code, stdout, stderr) = probectl_env(&["list", "--format", "json"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "one object on one line");
    let list: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_field(&list, "specs", "string");
    assert_field(&list, "groups", "array");
    let groups = list["groups"].as_array().expect("groups");
    let names: Vec<&str> = groups.iter().filter_map(|g| g["name"].as_str()).collect();
    assert_eq!(
        names,
        ["openssl", "boringssl", "gnutls", "nss", "go", "rustls"]
    );
    for group in groups {
        for (key, kind) in [
            ("name", "string"),
            ("description", "string"),
            ("plugin", "bool"),
            ("looks_for", "string"),
            ("probes", "array"),
            ("files", "array"),
        ] {
            assert_field(group, key, kind);
        }
        for probe in group["probes"].as_array().expect("probes") {
            assert_field(probe, "symbol", "string");
            assert_field(probe, "role", "string");
            assert_field(probe, "direction", "string|null");
            assert_field(probe, "optional", "bool");
            assert_field(probe, "description", "string");
        }
        for file in group["files"].as_array().expect("files") {
            assert_field(file, "path", "string");
            assert_file_report(file);
        }
    }
    // The same facts as the text: the openssl group attaches to libssl.so.3.
    let openssl = &groups[0];
    assert!(openssl["files"]
        .as_array()
        .expect("files")
        .iter()
        .any(|file| file["path"]
            .as_str()
            .is_some_and(|path| path.ends_with("/libssl.so.3"))
            && file["outcome"] == "traced"));
    // Offsets and versions vary with the host's libraries: the snapshot is of the shape.
    let shape: Vec<String> = groups
        .iter()
        .map(|group| {
            let probes: Vec<String> = group["probes"]
                .as_array()
                .expect("probes")
                .iter()
                .map(|probe| format!("{}:{}", probe["symbol"], probe["role"]))
                .collect();
            format!(
                "{} {} [{}]",
                group["name"],
                group["looks_for"],
                probes.join(", ")
            )
        })
        .collect();
    insta::assert_snapshot!(shape.join("\n"));
}

#[test]
fn check_json_schema() {
    let (server, _port) = s_server();
    wait_for_mapping(server.pid(), "libssl.so");
    let pid = server.pid().to_string();
    let (code, stdout, stderr) = probectl_env(&["check", "--pid", &pid, "--format", "json"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "one object on one line");
    let check: Value = serde_json::from_str(&stdout).expect("JSON");
    for (key, kind) in [
        ("pid", "number"),
        ("comm", "string"),
        ("traceable", "bool"),
        ("groups", "array"),
        ("refused", "array"),
        ("processes", "array"),
    ] {
        assert_field(&check, key, kind);
    }
    assert_eq!(check["pid"], server.pid());
    assert_eq!(check["traceable"], true);
    assert_eq!(check["groups"][0]["group"], "openssl");
    assert!(check["groups"][0]["files"][0]
        .as_str()
        .is_some_and(|path| path.ends_with("/libssl.so.3")));
    for refused in check["refused"].as_array().expect("refused") {
        assert_field(refused, "group", "string");
        assert_field(refused, "path", "string");
        assert_field(refused, "reason", "string");
    }
    let process = &check["processes"][0];
    for (key, kind) in [
        ("pid", "number"),
        ("comm", "string"),
        ("depth", "number"),
        ("executable", "string"),
        ("files", "array"),
    ] {
        assert_field(process, key, kind);
    }
    // Every mapped file is in the JSON, matched or not (the oracle: the process's own maps).
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let files = process["files"].as_array().expect("files");
    assert!(maps.contains("/libc.so.6"));
    assert!(files.iter().any(|file| file["path"]
        .as_str()
        .is_some_and(|p| p.ends_with("/libc.so.6"))
        && file["matches"].as_array().is_some_and(Vec::is_empty)));
    for file in files {
        assert_field(file, "path", "string");
        assert_field(file, "host_view", "string|null");
        assert_field(file, "executable", "bool");
        assert_field(file, "shown_above", "bool");
        assert_field(file, "matches", "array");
        for matched in file["matches"].as_array().expect("matches") {
            assert_field(matched, "group", "string");
            assert_file_report(matched);
        }
    }
    let matched: Vec<String> = files
        .iter()
        .flat_map(|file| {
            file["matches"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |m| {
                    format!(
                        "{} [{}] {} {}",
                        file["path"], m["group"], m["via"], m["outcome"]
                    )
                })
        })
        .collect();
    insta::assert_snapshot!(matched.join("\n"));
}

#[test]
fn sizes_take_suffixes() {
    let (server, _port) = s_server();
    let pid = server.pid().to_string();
    // Accepted: the run starts (it is then interrupted); plain numbers still work.
    for args in [
        ["--max-bytes", "64K", "--ring-bytes", "1M"],
        ["--max-bytes", "65536", "--ring-bytes", "1048576"],
        ["--max-bytes", "1MiB", "--ring-bytes", "64MiB"],
    ] {
        let mut trace = Trace::start(&[&["openssl", "--pid", &pid][..], &args[..]].concat(), &[]);
        trace.kill();
    }
    let (code, _, stderr) = probectl_env(
        &["run", "openssl", "--max-bytes", "1.5M", "--pid", &pid],
        &[],
    );
    assert_eq!(code, 1);
    insta::assert_snapshot!(stderr);
    let (code, _, stderr) = probectl_env(
        &["run", "openssl", "--ring-bytes", "3M", "--pid", &pid],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("must be a power of two of at least 4096 (4K)"),
        "{stderr}"
    );
    let (code, _, stderr) = probectl_env(
        &["run", "openssl", "--max-bytes", "65M", "--pid", &pid],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("must be between 1 and 67108864 bytes (64M)"),
        "{stderr}"
    );
}

#[test]
fn a_capture_limit_given_with_a_suffix_is_applied() {
    // --max-bytes 1K: the server's 4000-byte answer is cut at 1024 bytes, and the rest counted.
    let (server, port) = python_server(false);
    let request = b"GET /download/4000 HTTP/1.0\r\nHost: x\r\n\r\n".to_vec();
    let exchange = Exchange::new(&request);
    let run = exchange.traced(
        &["openssl", "--max-bytes", "1K"],
        &[
            "/usr/bin/python3",
            peer("tls_client.py").to_str().expect("path"),
        ],
        port,
    );
    drop(server);
    let read: Vec<&Event> = run
        .events
        .iter()
        .filter(|e| e.direction == "read")
        .collect();
    assert!(!read.is_empty(), "{}", run.stderr);
    assert!(read.iter().all(|e| e.data.len() <= 1024), "{}", run.stderr);
    let big = read.iter().find(|e| e.len > 1024).expect("a read over 1K");
    assert_eq!(big.data.len(), 1024);
    assert_eq!(big.truncated, big.len - 1024);
    assert!(run.report_number("/bytes_truncated") > 0);
}

#[test]
fn quiet_says_only_errors_and_warnings() {
    let (_server, port) = s_server();
    let url = format!("https://127.0.0.1:{port}/quiet");
    let (code, stdout, stderr) = probectl_env(
        &[
            "run",
            "openssl",
            "-q",
            "--",
            "curl",
            "-sk",
            "-o",
            "/dev/null",
            &url,
        ],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr, "", "nothing on stderr with -q");
    assert!(stdout.contains("GET /quiet HTTP/1.1"), "{stdout}");
    // Errors are still said.
    let (code, _, stderr) = probectl_env(&["run", "nosuchgroup", "-q", "--", "true"], &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("error: unknown group \"nosuchgroup\""),
        "{stderr}"
    );
}

#[test]
fn a_command_is_told_only_about_files_it_may_map() {
    // curl maps libssl.so.3, never BoringSSL's android/libssl.so.0: nothing is said about it.
    let (_server, port) = s_server();
    let url = format!("https://127.0.0.1:{port}/noise");
    let (code, _, stderr) = probectl_env(
        &[
            "run",
            "openssl",
            "--",
            "curl",
            "-sk",
            "-o",
            "/dev/null",
            &url,
        ],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("skipped"), "{stderr}");
    assert!(!stderr.contains("android"), "{stderr}");
}

#[test]
fn wait_needs_pid() {
    let (code, stdout, stderr) = probectl_env(&["run", "openssl", "--wait", "--", "true"], &[]);
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    insta::assert_snapshot!(stderr);
}

#[test]
fn colour_follows_color_and_no_color() {
    let (server, _port) = s_server();
    wait_for_mapping(server.pid(), "libssl.so");
    let pid = server.pid().to_string();
    let green = "\x1b[1;32mtraceable:\x1b[0m";
    // Not a terminal: no colour unless --color always.
    let (_, plain, _) = probectl_env(&["check", "--pid", &pid], &[]);
    assert!(!plain.contains('\x1b'), "{plain}");
    let (_, always, _) = probectl_env(&["check", "--pid", &pid, "--color", "always"], &[]);
    assert!(always.starts_with(green), "{always:?}");
    let (_, never, _) = probectl_env(
        &["check", "--pid", &pid, "--color", "never"],
        &[("NO_COLOR", "1")],
    );
    assert!(!never.contains('\x1b'));
    // NO_COLOR does not override an explicit --color always (no-color.org: user-level
    // configuration wins), and errors are coloured the same way.
    let (_, _, stderr) = probectl_env(
        &["run", "nosuchgroup", "--color", "always", "--", "true"],
        &[("NO_COLOR", "1")],
    );
    assert!(
        stderr.starts_with("probectl: \x1b[1;31merror:\x1b[0m"),
        "{stderr:?}"
    );
}

#[test]
fn man_page_and_completions_are_generated_from_the_cli() {
    let dir = scratch_file("man");
    let (code, _, stderr) = probectl_env(&["generate", "man", dir.to_str().expect("path")], &[]);
    assert_eq!(code, 0, "{stderr}");
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .expect("man dir")
        .filter_map(|entry| Some(entry.ok()?.file_name().to_str()?.to_string()))
        .collect();
    pages.sort();
    assert_eq!(
        pages,
        [
            "probectl-agent.1",
            "probectl-check.1",
            "probectl-list.1",
            "probectl-replay.1",
            "probectl-run.1",
            "probectl.1"
        ]
    );
    let run_page = std::fs::read_to_string(dir.join("probectl-run.1")).expect("page");
    assert!(run_page.contains(".TH probectl-run 1"), "{run_page}");
    assert!(run_page.contains("max\\-bytes"), "{run_page}");
    // man itself renders it, when installed.
    if Command::new("man").arg("--version").output().is_ok() {
        let output = Command::new("man")
            .arg("-l")
            .arg(dir.join("probectl.1"))
            .env("MANWIDTH", "80")
            .output()
            .expect("man");
        assert!(output.status.success());
        assert!(String::from_utf8_lossy(&output.stdout).contains("probectl"));
    }
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, script, stderr) = probectl_env(&["generate", "completions", shell], &[]);
        assert_eq!(code, 0, "{shell}: {stderr}");
        assert!(script.contains("max-bytes"), "{shell}: {script}");
    }
    // bash accepts the script and completes the subcommands from it.
    let (_, script, _) = probectl_env(&["generate", "completions", "bash"], &[]);
    let file = scratch_file("probectl.bash");
    std::fs::write(&file, script).expect("write");
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(probectl ''); COMP_CWORD=1; _probectl probectl '' probectl; echo \"${{COMPREPLY[*]}}\"",
            file.display()
        ))
        .output()
        .expect("bash");
    let words = String::from_utf8_lossy(&output.stdout);
    for subcommand in ["run", "list", "check"] {
        assert!(words.split_whitespace().any(|w| w == subcommand), "{words}");
    }
}
