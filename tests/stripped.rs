//! Executables that carry their TLS library without its symbols, through real BPF: Bun 1.4.5
//! (BoringSSL linked in, SSL_write and SSL_peek found by the errors they report, see
//! `probectl_core::symbols::locate`), and programs where there is nothing of the kind to find (Deno's
//! aws-lc, a stripped C program). The peers are pinned and installed by scripts/setup; a
//! missing one fails the test.
//!
//! The oracle is tests/peers/recording_server.py: every byte it read and wrote per connection,
//! recorded by the server itself.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::recording::*;
use common::*;

/// The download size and the upload size of the fetch client.
const DOWNLOAD: usize = 300_000;
const UPLOAD: usize = 200_000;

/// Bun's fetch: GET /download/300000, then POST a 200 KB body, on the recording server,
/// traced by `probectl run <args> -- bun.exe fetch_client.js`. Returns the run, Bun's pid
/// (the events' only pid), the recording and the body.
fn traced_bun_fetch(args: &[&str]) -> (FinishedLines, Recording, Vec<u8>) {
    let bun = npm_peer("bun");
    let recording = Recording::start();
    let body = noise(UPLOAD, 7);
    let body_file = scratch_file("upload.bin");
    std::fs::write(&body_file, &body).expect("body");
    let cache = cache_dir();
    let client = peer("fetch_client.js");
    let port = recording.port.to_string();
    let size = DOWNLOAD.to_string();
    let run = Trace::start_with_env(
        args,
        &[
            bun.to_str().expect("path"),
            client.to_str().expect("path"),
            &port,
            &size,
            body_file.to_str().expect("path"),
        ],
        &[
            ("PROBECTL_CACHE_DIR", cache.as_os_str()),
            ("NODE_TLS_REJECT_UNAUTHORIZED", OsStr::new("0")),
        ],
    )
    .wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    // The peers worked: the server got the body and answered its digest after the download.
    recording.assert_fetched(DOWNLOAD, &body);
    (run, recording, body)
}

/// Every event is Bun's own TLS, from its executable, and each of its connections (by
/// `conn.handle`, the SSL*) wrote and read exactly what the server recorded for one of its
/// connections.
fn assert_bun_matches_recording(events: &[Event], recording: &Recording) {
    let bun = std::fs::canonicalize(npm_peer("bun")).expect("bun path");
    assert!(!events.is_empty(), "no events");
    let pid = events[0].pid;
    for event in events {
        assert_eq!(event.pid, pid, "only the command: {}", event.json);
        assert_eq!(event.group, "boringssl", "{}", event.json);
        assert_eq!(Path::new(&event.library), bun, "{}", event.json);
        let expected = match event.direction.as_str() {
            "write" => "SSL_write",
            // SSL_read is inlined in Bun: SSL_peek stands in for it.
            _ => "SSL_peek",
        };
        assert_eq!(event.function, expected, "{}", event.json);
        assert_eq!(event.truncated, 0);
    }
    let mut captured: BTreeMap<String, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
    for event in events {
        let handle = event.json["conn"]["handle"]
            .as_str()
            .expect("conn.handle")
            .to_string();
        let streams = captured.entry(handle).or_default();
        match event.direction.as_str() {
            "write" => streams.0.extend_from_slice(&event.data),
            _ => streams.1.extend_from_slice(&event.data),
        }
    }
    let mut captured: Vec<(Vec<u8>, Vec<u8>)> = captured.into_values().collect();
    let mut recorded = recording.connections();
    captured.sort();
    recorded.sort();
    assert_eq!(
        captured.len(),
        recorded.len(),
        "one captured connection per connection the server accepted"
    );
    for (captured, recorded) in captured.iter().zip(&recorded) {
        assert!(
            captured.0 == recorded.0,
            "written: {} bytes captured, server read {}",
            captured.0.len(),
            recorded.0.len()
        );
        assert!(
            captured.1 == recorded.1,
            "read: {} bytes captured, server wrote {}",
            captured.1.len(),
            recorded.1.len()
        );
    }
    assert_bun_fds(events, recording);
}

/// Bun's calls make no socket syscall (its event loop corks writes and reads ahead), so the
/// fds are inferred from the thread's syscalls next to them: each connection's events carry
/// one fd and the 4-tuple of a TCP connection to the recording server, and the bytes of each
/// client address are what the server recorded for that client address.
fn assert_bun_fds(events: &[Event], recording: &Recording) {
    let port = recording.port;
    let mut by_address: BTreeMap<String, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
    for event in events {
        let local = event.json["conn"]["local"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        let streams = by_address.entry(local).or_default();
        match event.direction.as_str() {
            "write" => streams.0.extend_from_slice(&event.data),
            _ => streams.1.extend_from_slice(&event.data),
        }
    }
    assert!(
        by_address == recording.by_client(),
        "the bytes of each client address are what the server recorded for it: captured {:?}",
        by_address.keys().collect::<Vec<_>>()
    );
    let mut fds: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for event in events {
        let conn = &event.json["conn"];
        assert!(conn["fd"].is_u64(), "conn.fd is known: {}", event.json);
        assert_eq!(conn["transport"].as_str(), Some("tcp"), "{}", event.json);
        assert_eq!(
            conn["remote"].as_str(),
            Some(format!("127.0.0.1:{port}").as_str()),
            "{}",
            event.json
        );
        let handle = conn["handle"].as_str().expect("conn.handle").to_string();
        let first = fds.entry(handle).or_insert_with(|| conn["fd"].clone());
        assert_eq!(&conn["fd"], first, "one fd per connection: {}", event.json);
    }
}

#[test]
fn bun_fetch_is_byte_exact_in_both_directions() {
    let _exclusive = exclusive();
    let (run, recording, _) = traced_bun_fetch(&["boringssl"]);
    assert_bun_matches_recording(&events_of(&run), &recording);
    assert!(
        run.stderr.contains(&format!(
            "[boringssl] {} (BoringSSL): 2 probes",
            npm_peer("bun").display()
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn bun_fetch_under_run_all_is_traced_once_by_boringssl() {
    let _exclusive = exclusive();
    let (run, recording, _) = traced_bun_fetch(&["all"]);
    // Every event is boringssl's (checked there): no other group traces Bun's executable too.
    assert_bun_matches_recording(&events_of(&run), &recording);
    let bun = npm_peer("bun").display().to_string();
    let attached: Vec<&str> = run
        .stderr
        .lines()
        .filter(|line| line.contains(&bun) && line.contains("probes"))
        .filter(|line| !line.contains("tracing "))
        .collect();
    assert_eq!(attached.len(), 1, "{}", run.stderr);
    assert!(attached[0].contains("[boringssl]"), "{}", run.stderr);
}

#[test]
fn bun_fetch_decoded_as_http_matches_the_recording() {
    let _exclusive = exclusive();
    let (run, recording, body) = traced_bun_fetch(&["boringssl", "--decode", "http=exchange"]);
    let exchanges: Vec<&serde_json::Value> = run
        .lines
        .iter()
        .filter(|line| line["type"] == "http")
        .collect();
    assert_eq!(
        exchanges.len(),
        run.lines.len(),
        "nothing raw: {:?}",
        run.lines
    );
    let read: Vec<u8> = recording
        .connections()
        .into_iter()
        .flat_map(|c| c.0)
        .collect();
    let written: Vec<u8> = recording
        .connections()
        .into_iter()
        .flat_map(|c| c.1)
        .collect();
    let requests = http_messages(&read);
    let responses = http_messages(&written);
    let decoded: Vec<(String, String, u64, String, String)> = exchanges
        .iter()
        .map(|exchange| {
            assert_eq!(
                exchange["incomplete"],
                serde_json::Value::Null,
                "{exchange}"
            );
            assert_eq!(exchange["version"], "1.1");
            (
                exchange["method"].as_str().expect("method").to_string(),
                exchange["path"].as_str().expect("path").to_string(),
                exchange["status"].as_u64().expect("status"),
                sha256_hex(&decode_b64(&exchange["request"]["body_b64"])),
                sha256_hex(&decode_b64(&exchange["response"]["body_b64"])),
            )
        })
        .collect();
    let recorded: Vec<(String, String, u64, String, String)> = requests
        .iter()
        .zip(&responses)
        .map(
            |((request_line, request_body), (status_line, response_body))| {
                let mut words = request_line.split(' ');
                (
                    words.next().unwrap_or_default().to_string(),
                    words.next().unwrap_or_default().to_string(),
                    status_line
                        .split(' ')
                        .nth(1)
                        .and_then(|code| code.parse().ok())
                        .expect("status"),
                    sha256_hex(request_body),
                    sha256_hex(response_body),
                )
            },
        )
        .collect();
    assert_eq!(decoded, recorded);
    // The oracle's own bodies are the client's (checked in traced_bun_fetch); restated here
    // so that this test says what it compared.
    assert_eq!(recorded[1].3, sha256_hex(&body));
}

/// Debian's Chromium: BoringSSL linked into a stripped 300 MB executable, where SSL_read has
/// SSL_peek inlined and SSL_peek is a function of its own too (Chromium peeks at one byte).
const CHROMIUM: &str = "/usr/lib/chromium/chromium";

/// Headless Chromium loads a 300 KB page from the recording server. Its network service (a
/// child process of the same executable) writes the requests and reads the page through
/// SSL_write and SSL_read, located by the errors they report: every connection's bytes are
/// what the server recorded for that client address, with fd and 4-tuple, and no peeked byte
/// is shown twice.
#[test]
fn chromium_page_load_is_byte_exact_with_fd_and_addresses() {
    let _exclusive = exclusive();
    let recording = Recording::start();
    let cache = cache_dir();
    let profile = scratch_file("chromium-profile");
    let url = format!("https://127.0.0.1:{}/page/{DOWNLOAD}", recording.port);
    let profile_arg = format!("--user-data-dir={}", profile.display());
    // The executable itself, not Debian's wrapper script: probectl attaches a command's files
    // before its exec, while a file mapped after an exec of the script's is attached late.
    let run = Trace::start_with_env(
        &["boringssl"],
        &[
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--ignore-certificate-errors",
            &profile_arg,
            "--dump-dom",
            &url,
        ],
        &[("PROBECTL_CACHE_DIR", cache.as_os_str())],
    )
    .wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    run.assert_no_losses();
    // The page was asked for and sent whole (the server's record).
    let recorded: BTreeMap<String, (Vec<u8>, Vec<u8>)> = recording
        .by_client()
        .into_iter()
        .filter(|(_, (read, written))| !read.is_empty() || !written.is_empty())
        .collect();
    let asked = format!("GET /page/{DOWNLOAD} HTTP/1.1");
    assert!(
        recorded
            .values()
            .any(|(read, written)| read.starts_with(asked.as_bytes()) && written.len() > DOWNLOAD),
        "the server sent the page"
    );
    let events = events_of(&run);
    assert!(!events.is_empty(), "no events: {}", run.stderr);
    let mut by_address: BTreeMap<String, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
    for event in &events {
        assert_eq!(event.group, "boringssl", "{}", event.json);
        assert_eq!(event.library, CHROMIUM, "{}", event.json);
        let expected = if event.direction == "write" {
            "SSL_write"
        } else {
            "SSL_read"
        };
        assert_eq!(event.function, expected, "{}", event.json);
        assert_eq!(event.truncated, 0, "{}", event.json);
        let conn = &event.json["conn"];
        assert!(conn["fd"].is_u64(), "conn.fd is known: {}", event.json);
        assert_eq!(
            conn["remote"].as_str(),
            Some(format!("127.0.0.1:{}", recording.port).as_str()),
            "{}",
            event.json
        );
        let local = conn["local"].as_str().expect("conn.local").to_string();
        let streams = by_address.entry(local).or_default();
        match event.direction.as_str() {
            "write" => streams.0.extend_from_slice(&event.data),
            _ => streams.1.extend_from_slice(&event.data),
        }
    }
    assert_eq!(
        by_address.keys().collect::<Vec<_>>(),
        recorded.keys().collect::<Vec<_>>(),
        "one captured connection per connection that carried bytes"
    );
    for (address, (written, read)) in &by_address {
        let (server_read, server_wrote) = &recorded[address];
        assert!(
            written == server_read,
            "{address}: {} bytes written captured, the server read {}",
            written.len(),
            server_read.len()
        );
        assert!(
            read == server_wrote,
            "{address}: {} bytes read captured, the server wrote {}",
            read.len(),
            server_wrote.len()
        );
    }
    assert!(
        run.stderr
            .contains(&format!("[boringssl] {CHROMIUM} (BoringSSL): 2 probes")),
        "{}",
        run.stderr
    );
}

/// Replaces whole numbers equal to one of `pids` with `[pid]`.
fn redact_pids(text: &str, pids: &[u32]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if pids.iter().any(|pid| pid.to_string() == *digits) {
            out.push_str("[pid]");
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

/// `probectl check` or run output made stable: pids, the peers' install directory, the cache
/// directory, build ids and addresses or offsets replaced; everything else (what was looked
/// for, found, and why) kept.
fn redact(text: &str, pids: &[u32], cache: &Path) -> String {
    let mut text = text
        .replace(&peers_dir().display().to_string(), "[peers]")
        .replace(&cache.display().to_string(), "[cache]");
    for build_id in build_ids(cache) {
        text = text.replace(&build_id, "[build-id]");
    }
    redact_offsets(&redact_pids(&text, pids))
}

/// The build ids the cache has files for.
fn build_ids(cache: &Path) -> Vec<String> {
    std::fs::read_dir(cache)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| {
                    entry
                        .file_name()
                        .to_str()?
                        .strip_suffix(".json")
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An idle Bun process (its executable mapped, as any Bun is).
fn idle_bun() -> Guard {
    Guard(
        Command::new(npm_peer("bun"))
            .args(["-e", "setTimeout(() => {}, 60000)"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("bun"),
    )
}

fn check(pid: u32, cache: &Path) -> String {
    let output = Command::new(PROBECTL)
        .args(["check", "--pid", &pid.to_string()])
        .env("PROBECTL_CACHE_DIR", cache)
        .stdin(Stdio::null())
        .output()
        .expect("probectl check");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// The one cache file (there is one executable with located functions: Bun's).
fn cache_file(cache: &Path) -> PathBuf {
    let ids = build_ids(cache);
    assert_eq!(ids.len(), 1, "one cache file in {}", cache.display());
    cache.join(format!("{}.json", ids[0]))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn check_of_bun_says_how_each_function_was_found() {
    let bun = idle_bun();
    let cache = cache_dir();
    let cold = check(bun.pid(), &cache);
    assert_eq!(
        // SSL_write, SSL_peek, and the key probe's ssl_log_secret (--keylog).
        cold.matches("[cross-reference analysis]").count(),
        3,
        "{cold}"
    );
    let file = cache_file(&cache);
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&cache), 0o700);
    let cached = check(bun.pid(), &cache);
    assert_eq!(
        cached.matches("[cross-reference analysis, cached]").count(),
        3,
        "{cached}"
    );
    // Only how they were found differs, not what was found.
    assert_eq!(
        cached.replace(
            "[cross-reference analysis, cached]",
            "[cross-reference analysis]"
        ),
        cold
    );
    insta::assert_snapshot!("check_of_bun_cold", redact(&cold, &[bun.pid()], &cache));
    insta::assert_snapshot!("check_of_bun_cached", redact(&cached, &[bun.pid()], &cache));
}

/// The damage note `locate` adds to each located function's evidence.
fn damage_note(why: &str) -> String {
    format!(" (the cache file was damaged: {why}; analysed anew)")
}

/// Damages the cache file with `damage`, and checks that the next `check` says so, finds the
/// same functions by analysis, and rewrites a sound file that the run after reads as is.
fn damaged_cache_is_recomputed(damage: impl Fn(&str) -> String, why: &str) {
    let bun = idle_bun();
    let cache = cache_dir();
    let cold = check(bun.pid(), &cache);
    let file = cache_file(&cache);
    let sound = std::fs::read_to_string(&file).expect("cache file");
    let damaged = damage(&sound);
    assert_ne!(damaged, sound, "the damage changes the file");
    std::fs::write(&file, &damaged).expect("damage");

    let recomputed = check(bun.pid(), &cache);
    assert_eq!(
        recomputed.matches(&damage_note(why)).count(),
        3,
        "{recomputed}"
    );
    assert_eq!(recomputed.replace(&damage_note(why), ""), cold);
    let rewritten = std::fs::read_to_string(&file).expect("cache file");
    let rewritten_json: serde_json::Value =
        serde_json::from_str(&rewritten).expect("the rewritten cache file is JSON");
    let sound_json: serde_json::Value = serde_json::from_str(&sound).expect("JSON");
    assert_eq!(
        rewritten_json, sound_json,
        "the same results as the first run"
    );
    assert_eq!(mode(&file), 0o600);

    let after = check(bun.pid(), &cache);
    assert!(!after.contains("damaged"), "{after}");
    assert_eq!(
        after.replace(
            "[cross-reference analysis, cached]",
            "[cross-reference analysis]"
        ),
        cold
    );
}

#[test]
fn a_cache_file_with_an_edited_address_is_recomputed() {
    damaged_cache_is_recomputed(
        |text| {
            let mut json: serde_json::Value = serde_json::from_str(text).expect("JSON");
            let entries = json["entries"].as_object_mut().expect("entries");
            let (_, entry) = entries
                .iter_mut()
                .find(|(key, _)| key.starts_with("SSL_write "))
                .expect("an SSL_write entry");
            let address = entry["address"].as_u64().expect("address");
            entry["address"] = serde_json::Value::from(address + 16);
            serde_json::to_string_pretty(&json).expect("JSON")
        },
        "its checksum does not match its entries",
    );
}

#[test]
fn a_cache_file_of_garbage_is_recomputed() {
    damaged_cache_is_recomputed(
        |_| "\u{0}\u{1}garbage".to_string(),
        "not a cache file: expected value at line 1 column 1",
    );
}

#[test]
fn deno_has_no_boringssl_and_a_run_says_what_was_looked_for() {
    let deno = npm_peer("deno");
    let recording = Recording::start();
    let cache = cache_dir();
    let script = format!(
        "await (await fetch('https://127.0.0.1:{}/deno')).text()",
        recording.port
    );
    let run = Trace::start_with_env(
        &["boringssl"],
        &[
            deno.to_str().expect("path"),
            "eval",
            "--unsafely-ignore-certificate-errors",
            &script,
        ],
        &[("PROBECTL_CACHE_DIR", cache.as_os_str())],
    )
    .wait();
    assert!(run.status.success(), "{}", run.stderr);
    // Deno did speak TLS (its aws-lc), and none of it was captured.
    let connections = recording.connections();
    assert_eq!(connections.len(), 1, "deno connected once");
    assert!(connections[0].0.starts_with(b"GET /deno HTTP/1.1\r\n"));
    assert_eq!(run.events.len(), 0);
    let pid: u32 = run
        .stderr
        .lines()
        .find_map(|line| line.split_once("(pid ")?.1.split(')').next()?.parse().ok())
        .expect("deno's pid in the output");
    let warnings: String = run
        .stderr
        .lines()
        .filter(|line| line.contains("warning"))
        .map(|line| format!("{line}\n"))
        .collect();
    insta::assert_snapshot!(redact(&warnings, &[pid], &cache));
}

#[test]
fn a_stripped_c_program_has_nothing_to_trace_and_the_error_says_why() {
    let program = gcc(
        r#"
#include <stdio.h>
int main(void) { char line[8]; puts("ready"); fflush(stdout); return fgets(line, sizeof line, stdin) == NULL; }
"#,
        "stripped-plain",
        &["-s"],
    );
    let mut process = Interactive::spawn(&mut Command::new(&program));
    process.wait_for_output(b"ready\n");
    let pid = process.pid();
    let cache = cache_dir();
    let output = Command::new(PROBECTL)
        .args(["run", "boringssl", "--pid", &pid.to_string()])
        .env("PROBECTL_CACHE_DIR", &cache)
        .stdin(Stdio::null())
        .output()
        .expect("probectl");
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let dir = program.parent().expect("dir").display().to_string();
    let message = String::from_utf8_lossy(&output.stderr).replace(&dir, "[build]");
    insta::assert_snapshot!(redact(&message, &[pid], &cache));
    process.close_stdin();
    let _ = process.wait_exit();
}

#[test]
fn check_of_deno_says_what_locating_found() {
    let deno = Guard(
        Command::new(npm_peer("deno"))
            .args(["eval", "setTimeout(() => {}, 60000)"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("deno"),
    );
    let cache = cache_dir();
    let report = check(deno.pid(), &cache);
    // Only the executable's part: the files deno maps besides (its own caches, libraries)
    // depend on what ran before.
    let executable: String = report
        .split("\n\n")
        .take(3)
        .collect::<Vec<_>>()
        .join("\n\n");
    // How many files deno maps by then varies from run to run.
    let executable: String = executable
        .lines()
        .map(|line| match line.rsplit_once(", ") {
            Some((head, tail)) if tail.ends_with(" mapped files") => {
                format!("{head}, [n] mapped files")
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    insta::assert_snapshot!(redact(&executable, &[deno.pid()], &cache));
}
