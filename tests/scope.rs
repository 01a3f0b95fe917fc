//! `--pid` and `-- cmd` probe only the traced processes: the kernel puts the breakpoints into
//! their address spaces alone (process-scoped uprobes, core/src/kernel/scoped.rs). The oracle is the
//! kernel's own state, read independently of probectl: a process's executable mapping of
//! libssl compared byte for byte with the file on disk (a uprobe is an int3, 0xCC, written
//! over the instruction), and tracefs's `uprobe_events`. Other tracers on the machine may have
//! breakpoints in libssl too: each check compares with the same process before probectl.

mod common;

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const LIBRARY: &str = "libssl.so.3";

/// Where process `pid`'s executable mapping of `LIBRARY` differs from the file: the offsets in
/// the file, and the bytes in memory there.
fn patched_bytes(pid: u32) -> Vec<(u64, u8)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let line = maps
        .lines()
        .find(|line| line.ends_with(LIBRARY) && line.split_whitespace().nth(1) == Some("r-xp"))
        .unwrap_or_else(|| panic!("pid {pid} has no executable mapping of {LIBRARY}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (start, end) = fields[0].split_once('-').expect("range");
    let start = u64::from_str_radix(start, 16).expect("start");
    let length = u64::from_str_radix(end, 16).expect("end") - start;
    let file_offset = u64::from_str_radix(fields[2], 16).expect("offset");
    // The path is the rest of the line: it may contain spaces.
    let path = PathBuf::from(
        line.splitn(6, char::is_whitespace)
            .nth(5)
            .expect("path")
            .trim(),
    );
    let mut memory = vec![0u8; length as usize];
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("mem");
    mem.seek(SeekFrom::Start(start)).expect("seek");
    mem.read_exact(&mut memory).expect("read memory");
    let mut file = vec![0u8; length as usize];
    let mut library = std::fs::File::open(&path).expect("library");
    library.seek(SeekFrom::Start(file_offset)).expect("seek");
    library.read_exact(&mut file).expect("read library");
    memory
        .iter()
        .zip(&file)
        .enumerate()
        .filter(|(_, (in_memory, on_disk))| in_memory != on_disk)
        .map(|(index, (in_memory, _))| (file_offset + index as u64, *in_memory))
        .collect()
}

/// A python3 that has imported ssl and waits for stdin to close.
fn idle_libssl_user() -> Guard {
    let child = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import ssl, sys; print('ready', flush=True); sys.stdin.read()",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut guard = Guard(child);
    let mut line = String::new();
    BufReader::new(guard.0.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    assert_eq!(line.trim(), "ready");
    guard
}

/// Waits (60 s at most) until no other probectl runs, such as the detach child of an earlier
/// test's system-wide run, whose breakpoints (at the same offsets) would blur the comparisons.
fn quiet_probectl() {
    let others = || {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
            .filter(|entry| {
                let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
                // "pid (comm) state ...": a zombie holds nothing.
                stat.contains("(probectl) ") && !stat.contains("(probectl) Z")
            })
            .count()
    };
    eventually("another probectl kept running", || others() == 0);
}

fn uprobe_events() -> String {
    std::fs::read_to_string("/sys/kernel/tracing/uprobe_events").unwrap_or_default()
}

/// Polls (60 s at most) until `done`; the kernel detaches in the background after probectl
/// exits, and each detach waits for RCU grace periods, which a busy machine makes long.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tracing_a_pid_probes_it_and_its_new_children_and_no_other_process() {
    let _exclusive = exclusive();
    quiet_probectl();
    let (_server, port) = s_server();
    let exchange = Exchange::new(&unique_request("scoped"));
    let bystander = idle_libssl_user();
    // The traced process forks its TLS client from a second thread, after the attach.
    let mut spawner = Command::new("/usr/bin/python3")
        .arg(peer("thread_spawner.py"))
        .args(exchange.client_args(port))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut spawner_output = BufReader::new(spawner.stdout.take().expect("stdout"));
    let mut line = String::new();
    spawner_output.read_line(&mut line).expect("ready");
    let spawner_pid = spawner.id();
    let (spawner_before, bystander_before) =
        (patched_bytes(spawner_pid), patched_bytes(bystander.pid()));

    let pid_text = spawner_pid.to_string();
    let trace = Trace::start(&["openssl", "--pid", &pid_text], &[]);
    let group = format!("probectl_{}/", trace.pid());
    assert!(
        uprobe_events().contains(&group),
        "no tracefs events of the run:\n{}",
        uprobe_events()
    );
    let patched = patched_bytes(spawner_pid);
    assert!(
        patched.len() > spawner_before.len(),
        "no breakpoint in the traced process"
    );
    assert!(
        patched.iter().all(|&(_, byte)| byte == 0xCC),
        "the traced process's libssl differs from the file by more than breakpoints: {patched:x?}"
    );
    assert_eq!(
        patched_bytes(bystander.pid()),
        bystander_before,
        "a process that is not traced got breakpoints"
    );

    writeln!(spawner.stdin.as_mut().expect("stdin")).expect("go");
    line.clear();
    spawner_output.read_line(&mut line).expect("done");
    assert_eq!(line.trim(), "done 0", "the client failed");
    let run = trace.stop();
    assert!(run.status.success(), "{}", run.stderr);
    let client = run
        .events
        .iter()
        .find(|event| event.pid != spawner_pid)
        .unwrap_or_else(|| panic!("nothing from the spawned client:\n{}", run.stderr))
        .pid;
    assert_eq!(stream(&run.events, client, "write"), exchange.request);
    assert_eq!(stream(&run.events, client, "read"), exchange.response());
    run.assert_no_losses();

    // After probectl, the traced process is as before: no breakpoint, no tracefs event.
    eventually("the run's tracefs events were not removed", || {
        !uprobe_events().contains(&group)
    });
    let ours: Vec<u64> = patched
        .iter()
        .filter(|patch| !spawner_before.contains(patch))
        .map(|&(offset, _)| offset)
        .collect();
    eventually("the run's breakpoints stayed in the traced process", || {
        let now = patched_bytes(spawner_pid);
        !now.iter().any(|(offset, _)| ours.contains(offset))
    });
    drop(spawner.stdin.take());
    assert!(spawner.wait().expect("spawner").success());
}

#[test]
fn a_library_in_a_directory_with_a_space_is_probed_in_the_traced_process() {
    let _exclusive = exclusive();
    quiet_probectl();
    let (_server, port) = s_server();
    let dir = scratch_file("libs with a space");
    std::fs::create_dir_all(&dir).expect("dir");
    for name in ["libssl.so.3", "libcrypto.so.3"] {
        std::fs::copy(format!("/usr/lib/x86_64-linux-gnu/{name}"), dir.join(name)).expect("copy");
    }
    let exchange = Exchange::new(&unique_request("space"));
    let mut client = Command::new("/usr/bin/python3")
        .arg(peer("tls_client.py"))
        .args(exchange.client_args(port))
        .arg("--hold")
        .env("LD_LIBRARY_PATH", &dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut output = BufReader::new(client.stdout.take().expect("stdout"));
    let mut line = String::new();
    output.read_line(&mut line).expect("ready");
    let pid = client.id();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    assert!(maps.contains("libs with a space/libssl.so.3"), "{maps}");

    let before = patched_bytes(pid);
    let trace = Trace::start(&["openssl", "--pid", &pid.to_string()], &[]);
    let patched = patched_bytes(pid);
    assert!(
        patched.len() > before.len(),
        "no breakpoint in the traced process"
    );
    assert!(
        patched.iter().all(|&(_, byte)| byte == 0xCC),
        "{patched:x?}"
    );
    writeln!(client.stdin.as_mut().expect("stdin")).expect("go");
    drop(client.stdin.take());
    assert!(client.wait().expect("client").success());
    let run = trace.wait();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        !run.stderr.contains("attached for all processes"),
        "{}",
        run.stderr
    );
    assert_eq!(stream(&run.events, pid, "write"), exchange.request);
    assert_eq!(stream(&run.events, pid, "read"), exchange.response());
}

#[test]
fn a_killed_probectl_leaves_its_tracefs_events_and_the_next_one_removes_them() {
    let _exclusive = exclusive();
    quiet_probectl();
    let traced = idle_libssl_user();
    let pid_text = traced.pid().to_string();
    let before = patched_bytes(traced.pid());
    let mut killed = Trace::start(&["openssl", "--pid", &pid_text], &[]);
    let group = format!("probectl_{}/", killed.pid());
    let during = patched_bytes(traced.pid());
    assert!(during.len() > before.len());
    killed.kill();
    // The kernel closed its descriptors: the breakpoints went, the events stayed.
    eventually("the killed run's breakpoints stayed", || {
        let now = patched_bytes(traced.pid());
        !during
            .iter()
            .any(|patch| !before.contains(patch) && now.contains(patch))
    });
    assert!(uprobe_events().contains(&group), "{}", uprobe_events());

    let next = Trace::start(&["openssl", "--pid", &pid_text], &[]);
    assert!(
        !uprobe_events().contains(&group),
        "the next run left the stale events:\n{}",
        uprobe_events()
    );
    let run = next.stop();
    assert!(run.status.success(), "{}", run.stderr);
}
