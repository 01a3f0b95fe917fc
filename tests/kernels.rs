//! The kernel matrix's checks: probectl's core paths against real OpenSSL programs, each
//! compared with what the programs themselves sent and received. `scripts/kernels` runs this
//! test binary inside a VM for each kernel of the matrix; `cargo test --test kernels` runs it
//! on the host. Kept to a few short exchanges: in an emulated (TCG) guest every step is slow.

mod common;

use std::process::{Command, Stdio};

use common::*;

/// What the running kernel offers (probed as probectl does).
fn features_of_this_kernel() -> probectl_core::kernel::features::KernelFeatures {
    probectl_core::kernel::features::KernelFeatures::probe().expect("probe the kernel (root)")
}

/// The request curl sends for these options, exactly.
fn curl_request(port: u16, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: */*\r\nUser-Agent: probectl-test\r\n\r\n").into_bytes()
}

/// The local port a `--hold-connected` client printed ("connected <port>").
fn connected_port(line: &str) -> u16 {
    line.strip_prefix("connected ")
        .and_then(|port| port.trim().parse().ok())
        .unwrap_or_else(|| panic!("client said {line:?}"))
}

#[test]
fn command_mode_curl_to_s_server_is_byte_exact() {
    let (_server, port) = s_server();
    let body = scratch_file("kernels-curl-body");
    let url = format!("https://127.0.0.1:{port}/kernels-curl");
    let body_arg = body.to_string_lossy().into_owned();
    let run = Trace::start(
        &["openssl"],
        &[
            "curl",
            "-sk",
            "-i",
            "--raw",
            "-H",
            "User-Agent: probectl-test",
            &url,
            "-o",
            &body_arg,
        ],
    )
    .wait();
    assert!(run.status.success(), "{}", run.stderr);
    let curl_pid = run.events.first().expect("events").pid;
    assert!(run.events.iter().all(|e| e.pid == curl_pid));
    assert_eq!(
        stream(&run.events, curl_pid, "write"),
        curl_request(port, "/kernels-curl")
    );
    let received = std::fs::read(&body).expect("curl output");
    assert!(received.starts_with(b"HTTP/1.0 200 ok\r\n"));
    assert_eq!(stream(&run.events, curl_pid, "read"), received);
}

#[test]
fn pid_mode_traces_a_running_python_client() {
    let (_server, port) = s_server();
    let exchange = Exchange::new(&unique_request("kernels-pid"));
    // Connected (TCP and TLS) before probectl starts: the 4-tuple must come from the kernel.
    let (mut client, connected) = exchange.held_python_client(port, "--hold-connected");
    let local_port = connected_port(&connected);
    let pid = client.pid();
    let trace = Trace::start(&["openssl", "--pid", &pid.to_string()], &[]);
    // Process-scoped probes are tracefs events of the run's own group, removed after it.
    let group = format!("probectl_{}/", trace.pid());
    let uprobe_events =
        || std::fs::read_to_string("/sys/kernel/tracing/uprobe_events").unwrap_or_default();
    assert!(uprobe_events().contains(&group), "{}", uprobe_events());
    client.release();
    client.finish();
    let run = trace.wait();
    assert!(run.status.success(), "{}", run.stderr);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while uprobe_events().contains(&group) {
        assert!(
            std::time::Instant::now() < deadline,
            "the run's tracefs events were not removed:\n{}",
            uprobe_events()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_attributed(
        &run.events,
        pid,
        Side::Client { server_port: port },
        &exchange.request,
        &exchange.response(),
    );
    assert_eq!(
        run.events[0].json["conn"]["local"].as_str(),
        Some(format!("127.0.0.1:{local_port}").as_str())
    );
}

#[test]
fn system_wide_trace_sees_curl_and_python() {
    let _exclusive = exclusive();
    let (_server, port) = s_server();
    let trace = Trace::start(&["openssl"], &[]);
    let url = format!("https://127.0.0.1:{port}/kernels-system-wide");
    let curl = Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-H",
            "User-Agent: probectl-test",
            &url,
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("curl");
    let curl_pid = curl.id();
    assert!(curl.wait_with_output().expect("curl").status.success());
    let request = unique_request("kernels-system-wide");
    let (python_pid, response) = python_client(port, &request);
    let run = trace.stop();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(
        stream(&run.events, curl_pid, "write"),
        curl_request(port, "/kernels-system-wide")
    );
    assert_eq!(stream(&run.events, python_pid, "write"), request);
    assert_eq!(stream(&run.events, python_pid, "read"), response);
}

#[test]
fn server_side_four_tuple_names_both_ends() {
    let (server, port) = python_server(false);
    let trace = Trace::start(&["openssl", "--pid", &server.pid().to_string()], &[]);
    let exchange = Exchange::new(&unique_request("kernels-tuple"));
    let (mut client, connected) = exchange.held_python_client(port, "--hold-connected");
    let client_port = connected_port(&connected);
    client.release();
    client.finish();
    let run = trace.stop();
    assert!(run.status.success(), "{}", run.stderr);
    assert_attributed(
        &run.events,
        server.pid(),
        Side::Server { port },
        &exchange.response(),
        &exchange.request,
    );
    let conn = &run.events[0].json["conn"];
    assert_eq!(
        (conn["local"].as_str(), conn["remote"].as_str()),
        (
            Some(format!("127.0.0.1:{port}").as_str()),
            Some(format!("127.0.0.1:{client_port}").as_str())
        )
    );
}

/// Without kernel BTF (hidden here by an empty directory mounted over /sys/kernel/btf in a
/// private mount namespace) probectl says it has no socket addresses, and captures the data
/// as usual.
#[test]
fn without_kernel_btf_data_is_captured_without_addresses() {
    let (_server, port) = s_server();
    let empty = scratch_file("no-btf");
    std::fs::create_dir_all(&empty).expect("empty dir");
    let body = scratch_file("kernels-no-btf-body");
    let output = scratch_file("kernels-no-btf.json");
    let url = format!("https://127.0.0.1:{port}/kernels-no-btf");
    let run = Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            r#"mount --bind "$0" /sys/kernel/btf && exec "$@""#,
        ])
        .arg(&empty)
        .args([PROBECTL, "run", "openssl", "--format", "json", "--output"])
        .arg(&output)
        .args([
            "--",
            "curl",
            "-sk",
            "-i",
            "--raw",
            "-H",
            "User-Agent: probectl-test",
        ])
        .arg(&url)
        .arg("-o")
        .arg(&body)
        .stdin(Stdio::null())
        .output()
        .expect("unshare");
    let stderr = String::from_utf8_lossy(&run.stderr);
    if !features_of_this_kernel().uprobe_cookies {
        // Without cookies the attach points are told apart through BTF's offsets (the address
        // fallback, ebpf/src/compat.rs): without BTF too, the run is refused, in one line.
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(
                "lacks BPF cookies on uprobes (Linux 5.15+): probectl needs Linux 5.15 or newer"
            ),
            "{stderr}"
        );
        return;
    }
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("no socket addresses: cannot read /sys/kernel/btf/vmlinux"),
        "{stderr}"
    );
    let events = parse_events(&output);
    let curl_pid = events.first().expect("events").pid;
    assert_eq!(
        stream(&events, curl_pid, "write"),
        curl_request(port, "/kernels-no-btf")
    );
    assert_eq!(
        stream(&events, curl_pid, "read"),
        std::fs::read(&body).expect("curl output")
    );
    assert!(events.iter().all(
        |event| event.json["conn"]["local"].is_null() && event.json["conn"]["remote"].is_null()
    ));
}

/// The fallback programs of kernels without `bpf_loop` (and, on 5.10, without cookies), forced
/// with `PROBECTL_FALLBACKS` on a kernel that has both: a call of many chunks is byte-exact,
/// and a call longer than the chunk chain copies is cut at its bound, counted and shown,
/// never silently (4 MiB: 256 chunks, 8 per run of the chunk program, 32 tail calls). The oracle is what curl received from the server's one `sendall` per
/// answer (tests/peers/tls_server.py).
#[test]
fn fallback_programs_copy_many_chunks_and_count_what_they_cut() {
    const BOUND: usize = 256 * 16 * 1024;
    let (server, port) = python_server(false);
    let trace = Trace::start_with_env(
        &[
            "openssl",
            "--pid",
            &server.pid().to_string(),
            "--max-bytes",
            "8M",
        ],
        &[],
        &[("PROBECTL_FALLBACKS", std::ffi::OsStr::new("bounded"))],
    );
    let download = |size: usize| {
        let body = scratch_file(&format!("kernels-fallback-{size}"));
        let status = Command::new("curl")
            .args(["-sk", "-i", "--raw", "-o"])
            .arg(&body)
            .arg(format!("https://127.0.0.1:{port}/download/{size}"))
            .status()
            .expect("curl");
        assert!(status.success());
        std::fs::read(&body).expect("curl output")
    };
    let whole = download(200_000);
    let long = download(4_400_000);
    let run = trace.stop();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("a chain of tail calls copies a call instead"),
        "{}",
        run.stderr
    );
    let sent = stream(&run.events, server.pid(), "write");
    assert_eq!(sent.len(), whole.len() + BOUND, "{}", run.stderr);
    assert!(
        sent[..whole.len()] == whole[..],
        "the 200 kB answer differs"
    );
    assert!(
        sent[whole.len()..] == long[..BOUND],
        "the cut answer differs"
    );
    assert_eq!(run.report_number("/losses/calls_cut_bounded_loop"), 1);
    assert_eq!(
        run.report_number("/losses/bytes_cut_bounded_loop"),
        (long.len() - BOUND) as u64
    );
    assert!(run.stderr.contains("1 calls cut ("), "{}", run.stderr);
}

/// `probectl check` names the fallbacks a run on this kernel loads, with the feature's kernel
/// version, on stderr (forced here: on a kernel with every feature it says nothing).
#[test]
fn check_names_the_fallbacks_with_their_kernel_versions() {
    let mut sleeper = Command::new("sleep").arg("30").spawn().expect("sleep");
    let output = Command::new(PROBECTL)
        .args(["check", "--pid", &sleeper.id().to_string()])
        .env("PROBECTL_FALLBACKS", "bounded")
        .stdin(Stdio::null())
        .output()
        .expect("probectl check");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("bpf_loop (Linux 5.17+): a chain of tail calls copies a call instead"),
        "{stderr}"
    );
    if !features_of_this_kernel().uprobe_cookies {
        assert!(
            stderr.contains("lacks BPF cookies on uprobes (Linux 5.15+): attach points are told apart by their code address"),
            "{stderr}"
        );
    }
}
