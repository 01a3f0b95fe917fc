//! Processes that exit without closing their connections: the kernel tells probectl when such
//! a process is gone, and its connections end then, with their bytes intact.

mod common;

use common::*;

#[test]
fn connections_of_processes_that_exit_without_closing_end_with_them() {
    let (_server, port) = python_server(false);
    let children = 12;
    let tag = format!("exit-{}", std::process::id());
    let report = scratch_file("report.json");
    let report_arg = report.display().to_string();
    let run = Trace::start(
        &["openssl", "--report", &report_arg],
        &[
            "/usr/bin/python3",
            &peer("exit_without_close.py").display().to_string(),
            &port.to_string(),
            &children.to_string(),
            &tag,
        ],
    )
    .wait();
    assert!(run.status.success(), "{}", run.stderr);
    // Each child's request, byte-exact, in its own connection (the oracle: what it sent).
    let mut pids: Vec<u32> = run.events.iter().map(|event| event.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), children, "{}", run.stderr);
    let mut requests: Vec<String> = pids
        .iter()
        .map(|pid| String::from_utf8_lossy(&stream(&run.events, *pid, "write")).into_owned())
        .collect();
    requests.sort();
    let mut expected: Vec<String> = (0..children)
        .map(|index| format!("GET /{tag}/{index} HTTP/1.0\r\nHost: x\r\n\r\n"))
        .collect();
    expected.sort();
    assert_eq!(requests, expected);
    // No close(2) ended them: their processes' ends did. The report (JSON) says so, in its
    // own fields; the summary on stderr too.
    let mode = std::fs::metadata(&report).expect("report").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    assert_eq!(report["format"], 2);
    assert_eq!(report["connections"]["total"], children);
    assert_eq!(report["connections"]["closed"], children);
    assert_eq!(report["connections"]["ended_with_their_process"], children);
    assert_eq!(report["events"].as_u64(), Some(run.events.len() as u64));
    assert_eq!(report["command_exit_code"], 0);
    let losses = report["losses"].as_object().expect("losses");
    assert!(losses.values().all(|count| count == 0), "{report}");
    let kept = report["connections"]["kept"].as_array().expect("kept");
    assert_eq!(kept.len(), children);
    for connection in kept {
        assert_eq!(connection["transport"], "tcp", "{connection}");
        assert_eq!(
            connection["remote"],
            format!("127.0.0.1:{port}"),
            "{connection}"
        );
        assert_eq!(connection["not_captured_written"], 0, "{connection}");
    }
    assert!(
        run.stderr.contains(&format!(
            "probectl: {children} connections ({children} closed)"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "{children} connections ended with their process (it exited without closing them)"
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn a_report_that_cannot_be_written_is_an_error_before_anything_is_traced() {
    let (code, stdout, stderr) = probectl(&[
        "run",
        "openssl",
        "--report",
        "/nonexistent-directory/report.json",
        "--",
        "/bin/true",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("cannot create the report /nonexistent-directory/report.json"),
        "{stderr}"
    );
    assert!(!stderr.contains("tracing"), "{stderr}");
}
