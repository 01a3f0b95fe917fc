//! Processes that exit without closing their connections: the kernel tells probectl when such
//! a process is gone, and its connections end then, with their bytes intact.

mod common;

use common::*;

#[test]
fn connections_of_processes_that_exit_without_closing_end_with_them() {
    let (_server, port) = python_server(false);
    let children = 12;
    let tag = format!("exit-{}", std::process::id());
    let run = Trace::start(
        &["openssl"],
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
    // No close(2) ended them: their processes' ends did, and the summary says so.
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
