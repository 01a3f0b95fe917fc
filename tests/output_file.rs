//! `-o FILE` is safe: an existing file is refused unless `--force`, a symbolic link is never
//! followed, the mode of a file probectl did not create is never changed, a file that cannot
//! be written is an error before the traced command runs, and a write error later stops the
//! run at once with its cause, keeping what was written.
//!
//! "Before the command runs" is proved by the command itself: `touch MARKER`, whose file must
//! not exist after probectl refused.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const ERROR_STATUS: i32 = 1;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

/// `probectl run openssl [extra] -o OUTPUT -- touch MARKER`: refused, with nothing traced and
/// the command never run. Returns stderr.
fn refused(output: &Path, extra: &[&str]) -> String {
    let marker = scratch_file("marker");
    let mut args = vec!["run", "openssl", "-o", output.to_str().expect("path")];
    args.extend_from_slice(extra);
    args.extend(["--", "touch", marker.to_str().expect("path")]);
    let (code, _, stderr) = probectl(&args);
    assert_eq!(code, ERROR_STATUS, "{args:?}: {stderr}");
    assert!(
        !marker.exists(),
        "{args:?}: the command ran before the error: {stderr}"
    );
    assert!(!stderr.contains("probectl: tracing"), "{stderr}");
    stderr
}

#[test]
fn an_existing_file_is_refused_unless_forced_and_keeps_its_mode() {
    let existing = scratch_file("existing.txt");
    std::fs::write(&existing, b"an earlier capture\n").expect("write");
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let stderr = refused(&existing, &[]);
    assert!(stderr.contains("exists"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(
        std::fs::read(&existing).expect("read"),
        b"an earlier capture\n"
    );
    assert_eq!(mode(&existing), 0o640);

    // With --force it is written over, and keeps the mode it had.
    let (_server, port) = s_server();
    let url = format!("https://127.0.0.1:{port}/forced");
    let (code, _, stderr) = probectl(&[
        "run",
        "openssl",
        "--format",
        "json",
        "-o",
        existing.to_str().expect("path"),
        "--force",
        "--",
        "curl",
        "-sk",
        "-o",
        "/dev/null",
        &url,
    ]);
    assert_eq!(code, 0, "{stderr}");
    let events = parse_events(&existing);
    assert!(
        events
            .iter()
            .any(|event| event.data.starts_with(b"GET /forced HTTP/1.1")),
        "curl's request in the file"
    );
    assert_eq!(
        mode(&existing),
        0o640,
        "the mode of a file it did not create"
    );
}

#[test]
fn a_read_only_file_is_refused_even_when_forced() {
    let read_only = scratch_file("read-only.txt");
    std::fs::write(&read_only, b"keep me\n").expect("write");
    std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    let stderr = refused(&read_only, &[]);
    assert!(stderr.contains("exists"), "{stderr}");
    let stderr = refused(&read_only, &["--force"]);
    assert!(stderr.contains("read-only (mode 0444)"), "{stderr}");
    assert_eq!(std::fs::read(&read_only).expect("read"), b"keep me\n");
    assert_eq!(mode(&read_only), 0o444);
}

#[test]
fn a_symbolic_link_is_never_followed() {
    let target = scratch_file("link-target.txt");
    std::fs::write(&target, b"the link's target\n").expect("write");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let link = scratch_file("link");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    for extra in [&[][..], &["--force"][..]] {
        let stderr = refused(&link, extra);
        assert!(stderr.contains("symbolic link"), "{stderr}");
    }
    assert_eq!(
        std::fs::read(&target).expect("read"),
        b"the link's target\n"
    );
    assert_eq!(mode(&target), 0o644);
    // A dangling link: nothing is created where it points.
    let nowhere = scratch_file("nowhere.txt");
    let dangling = scratch_file("dangling");
    std::os::unix::fs::symlink(&nowhere, &dangling).expect("symlink");
    let stderr = refused(&dangling, &["--force"]);
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert!(!nowhere.exists());
}

#[test]
fn an_unwritable_target_is_an_error_before_tracing() {
    let missing_dir = scratch_file("no-such-dir").join("out.txt");
    let directory = scratch_file("a-directory");
    std::fs::create_dir_all(&directory).expect("dir");
    for (output, extra, says) in [
        (PathBuf::from("/proc/version"), &[][..], "exists"),
        (
            PathBuf::from("/proc/version"),
            &["--force"][..],
            "read-only",
        ),
        // Writable, but writing would rename the process: a kernel interface, never written.
        (
            PathBuf::from("/proc/self/comm"),
            &["--force"][..],
            "on procfs",
        ),
        // Takes no writes: the probe's zero-byte write fails.
        // procfs refuses to create files, even for root.
        (
            PathBuf::from("/proc/probectl-output"),
            &[][..],
            "cannot create",
        ),
        (
            PathBuf::from("/dev/full"),
            &[][..],
            "No space left on device",
        ),
        (missing_dir, &[][..], "No such file or directory"),
        (directory, &["--force"][..], "cannot create"),
    ] {
        let stderr = refused(&output, extra);
        assert!(
            stderr.contains(says),
            "{} {extra:?}: {says:?} in {stderr}",
            output.display()
        );
    }
}

#[test]
fn a_run_that_fails_to_start_leaves_no_file() {
    let fresh = scratch_file("never.txt");
    let (code, _, stderr) = probectl(&[
        "run",
        "openssl",
        "--probes",
        "/nonexistent/probes.toml",
        "-o",
        fresh.to_str().expect("path"),
        "--",
        "true",
    ]);
    assert_eq!(code, ERROR_STATUS, "{stderr}");
    assert!(!fresh.exists());
}

/// A tmpfs of its own, unmounted when dropped.
struct SmallDisk(PathBuf);

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_write_error_stops_the_run_at_once_and_keeps_what_was_written() {
    let mount = scratch_file("small-disk");
    std::fs::create_dir_all(&mount).expect("dir");
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
        .arg(&mount)
        .status()
        .expect("mount");
    assert!(status.success(), "mount tmpfs");
    let disk = SmallDisk(mount.clone());
    let output = disk.0.join("events.json");
    let (_server, port) = s_server();
    // About 60 s of requests, each answered with a page of about 5 kB: the 16 kB disk is full
    // after a few of them.
    let script = format!(
        "for i in $(seq 300); do curl -sk -o /dev/null https://127.0.0.1:{port}/$i; sleep 0.2; done"
    );
    let started = Instant::now();
    let run = Command::new(PROBECTL)
        .args(["run", "openssl", "--format", "json", "-o"])
        .arg(&output)
        .args(["--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("probectl");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(ERROR_STATUS), "{stderr}");
    assert!(
        took < Duration::from_secs(20),
        "stopped at once, not when the command ended: {took:?}: {stderr}"
    );
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(
        stderr.contains(output.to_str().expect("path")),
        "the file is named: {stderr}"
    );
    // What was written is kept: whole JSON lines from the start (the last may be cut).
    let text = std::fs::read_to_string(&output).expect("kept");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 1, "{text}");
    for line in &lines[..lines.len() - 1] {
        let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert!(value["data_b64"].is_string(), "{line}");
    }
    assert_eq!(mode(&output), 0o600);
    drop(disk);
}
