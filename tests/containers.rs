//! Containers and selections through real BPF: two Podman containers (runc, a rootfs directory,
//! no image) run curl against a real HTTPS server; every exchange is attributed to its
//! container by id, `--container` traces one container and not the other (selected in the
//! kernel, at start and at exec), and `--port`, `--host`, `--comm` and `--cgroup` select
//! connections and programs.
//!
//! The oracles are independent of probectl: the ids Podman gives (`podman inspect`), the paths
//! each container's curl asked for (each path names its container and is unique to the run),
//! and what curl received (the file the server served).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const RUNC: &str = "/usr/sbin/runc";

fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .arg("--runtime")
        .arg(RUNC)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("podman")
}

/// A root file system with nothing of its own: the host's /usr is bind-mounted read-only.
fn rootfs() -> PathBuf {
    let dir = scratch_file("rootfs");
    for sub in ["usr", "etc", "tmp", "proc", "dev", "sys"] {
        std::fs::create_dir_all(dir.join(sub)).expect("rootfs dir");
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("sbin", "usr/sbin"),
    ] {
        std::os::unix::fs::symlink(target, dir.join(link)).expect("rootfs link");
    }
    dir
}

/// A running container, removed when dropped.
struct Container {
    name: String,
    id: String,
}

impl Container {
    /// Runs curl in the container (`podman exec`: a process that enters it from outside) and
    /// returns what curl received.
    fn curl(&self, url: &str) -> String {
        let output = podman(&["exec", &self.name, "curl", "-sk", "--http1.1", url]);
        assert!(output.status.success(), "curl in {}: {output:?}", self.name);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.name]);
    }
}

/// The files the server serves, one per container and way of starting curl, each with its own
/// content: `<tag>.txt` holds `<tag> <nonce>`.
struct Site {
    root: PathBuf,
    nonce: String,
}

impl Site {
    fn new() -> Site {
        let root = scratch_file("site");
        std::fs::create_dir_all(&root).expect("site");
        let nonce = format!(
            "{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        );
        Site { root, nonce }
    }

    fn file(&self, tag: &str) -> (String, String) {
        let name = format!("{tag}-{}.txt", self.nonce);
        let content = format!("{tag} {}\n", self.nonce);
        std::fs::write(self.root.join(&name), &content).expect("site file");
        (format!("/{name}"), content)
    }
}

/// The decoded exchanges of a run, by request path: (container id, runtime) of each.
fn exchanges_by_path(lines: &[Value]) -> Vec<(String, Option<String>, Option<String>)> {
    lines
        .iter()
        .filter(|line| line["type"] == "http_head" && line["part"] == "request")
        .filter_map(|line| {
            Some((
                line["path"].as_str()?.to_string(),
                line["container"]["id"].as_str().map(str::to_string),
                line["container"]["runtime"].as_str().map(str::to_string),
            ))
        })
        .collect()
}

/// Two containers: each runs a loop of curl (started before probectl: traced from the pid
/// filter seeded at start) and gets one curl by `podman exec` (admitted at exec).
struct Setup {
    _server: Guard,
    port: u16,
    site: Site,
    containers: [Container; 2],
    loop_paths: [String; 2],
}

fn setup() -> Setup {
    let site = Site::new();
    let (server, port) = www_server(&site.root, "127.0.0.1");
    let rootfs = rootfs();
    let mut loop_paths = Vec::new();
    let mut containers = Vec::new();
    for n in 1..=2 {
        let (path, _) = site.file(&format!("loop{n}"));
        let marker = site.root.join(format!("started{n}-{}", site.nonce));
        // The loop says it has started by a file in the site (written from the host's view:
        // the site is bind-mounted), so that the test knows the loop's process exists.
        let script = format!(
            "touch /site/{marker}; while :; do curl -sk --http1.1 -o /dev/null https://127.0.0.1:{port}{path}; sleep 0.2; done",
            marker = marker.file_name().and_then(|n| n.to_str()).expect("name"),
        );
        let name = format!("probectl-test-{}-{n}", std::process::id());
        let container = start_with_site(&name, &rootfs, &site.root, &script);
        wait_for_file(&marker);
        containers.push(container);
        loop_paths.push(path);
    }
    let containers: [Container; 2] = containers.try_into().ok().expect("two containers");
    let loop_paths: [String; 2] = loop_paths.try_into().expect("two paths");
    Setup {
        _server: server,
        port,
        site,
        containers,
        loop_paths,
    }
}

/// Starts `script` (sh) in a container on the host's network, with the host's /usr and the
/// site (at /site, for the loop's start marker) bind-mounted.
fn start_with_site(name: &str, rootfs: &Path, site: &Path, script: &str) -> Container {
    std::fs::create_dir_all(rootfs.join("site")).expect("site mount point");
    let _ = podman(&["rm", "-f", name]);
    let output = podman(&[
        "run",
        "-d",
        "--name",
        name,
        // CAP_SYS_RESOURCE is absent here: podman's default limits cannot be set.
        "--ulimit",
        "nofile=1000:1000",
        "--ulimit",
        "nproc=1000:1000",
        "--network",
        "host",
        "-v",
        "/usr:/usr:ro",
        "-v",
        &format!("{}:/site", site.display()),
        "--rootfs",
        rootfs.to_str().expect("path"),
        "sh",
        "-c",
        script,
    ]);
    assert!(
        output.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The oracle: the id as Podman itself reports it.
    let inspect = podman(&["inspect", "--format", "{{.Id}}", name]);
    let id = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
    assert_eq!(id.len(), 64, "podman inspect: {inspect:?}");
    Container {
        name: name.to_string(),
        id,
    }
}

#[test]
fn every_exchange_is_attributed_to_its_container() {
    let _lock = exclusive();
    let setup = setup();
    let trace = Trace::start(&["openssl", "--decode", "http"], &[]);
    let mut exec_paths = Vec::new();
    for (n, container) in setup.containers.iter().enumerate() {
        let (path, content) = setup.site.file(&format!("exec{}", n + 1));
        let got = container.curl(&format!("https://127.0.0.1:{}{path}", setup.port));
        assert_eq!(got, content, "what curl received in {}", container.name);
        exec_paths.push(path);
    }
    // The loops make more requests meanwhile.
    std::thread::sleep(Duration::from_millis(800));
    let run = trace.stop_lines();
    assert!(run.status.success(), "{}", run.stderr);
    let exchanges = exchanges_by_path(&run.lines);
    for (n, container) in setup.containers.iter().enumerate() {
        for path in [&exec_paths[n], &setup.loop_paths[n]] {
            let seen: Vec<_> = exchanges.iter().filter(|(p, _, _)| p == path).collect();
            assert!(!seen.is_empty(), "no exchange for {path}:\n{}", run.stderr);
            for (_, id, runtime) in seen {
                assert_eq!(id.as_deref(), Some(container.id.as_str()), "{path}");
                assert_eq!(runtime.as_deref(), Some("podman"), "{path}");
            }
        }
    }
    // The report lists both containers with what was captured in them, and each connection
    // of theirs names its container.
    let listed: Vec<&str> = run.report["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter(|c| c["events"].as_u64() > Some(0))
        .filter_map(|c| c["id"].as_str())
        .collect();
    for container in &setup.containers {
        assert!(
            listed.contains(&container.id.as_str()),
            "{} not in {listed:?}",
            container.id
        );
        assert!(
            run.stderr
                .contains(&format!("container {} (podman)", &container.id[..12])),
            "{}",
            run.stderr
        );
    }
    let remote = format!("127.0.0.1:{}", setup.port);
    let connections = run.report["connections"]["kept"].as_array().expect("kept");
    let ours: Vec<&Value> = connections
        .iter()
        .filter(|c| c["remote"].as_str() == Some(remote.as_str()))
        .collect();
    assert!(!ours.is_empty(), "{}", run.report);
    let ids: Vec<&str> = setup.containers.iter().map(|c| c.id.as_str()).collect();
    for connection in ours {
        let id = connection["container"].as_str().unwrap_or("none");
        assert!(ids.contains(&id), "{connection}");
        assert!(
            connection["cgroup"]
                .as_str()
                .is_some_and(|cgroup| cgroup.contains(id)),
            "{connection}"
        );
    }
}

#[test]
fn container_selects_one_container_in_the_kernel() {
    let _lock = exclusive();
    let setup = setup();
    let [first, second] = &setup.containers;
    // By name: the runtime's own files name it.
    let trace = Trace::start(
        &["openssl", "--decode", "http", "--container", &first.name],
        &[],
    );
    let mut exec_paths = Vec::new();
    for (n, container) in setup.containers.iter().enumerate() {
        let (path, content) = setup.site.file(&format!("sel{}", n + 1));
        let got = container.curl(&format!("https://127.0.0.1:{}{path}", setup.port));
        assert_eq!(got, content);
        exec_paths.push(path);
    }
    std::thread::sleep(Duration::from_millis(800));
    let run = trace.stop_lines();
    assert!(run.status.success(), "{}", run.stderr);
    let exchanges = exchanges_by_path(&run.lines);
    // The first container's traffic, from the loop (traced from start) and from the exec
    // (admitted when it started curl).
    for path in [&exec_paths[0], &setup.loop_paths[0]] {
        let seen: Vec<_> = exchanges.iter().filter(|(p, _, _)| p == path).collect();
        assert!(!seen.is_empty(), "no exchange for {path}:\n{}", run.stderr);
        for (_, id, _) in seen {
            assert_eq!(id.as_deref(), Some(first.id.as_str()));
        }
    }
    // Nothing of the second container's, nor of any other process.
    for path in [&exec_paths[1], &setup.loop_paths[1]] {
        assert!(
            !exchanges.iter().any(|(p, _, _)| p == path),
            "{path} of the other container was captured"
        );
    }
    // Every head of the run is the first container's.
    for line in run.lines.iter().filter(|line| line["type"] == "http_head") {
        assert_eq!(
            line["container"]["id"].as_str(),
            Some(first.id.as_str()),
            "{line}"
        );
    }
    let report = &run.report;
    assert_eq!(report["selection"]["in_kernel"], true, "{report}");
    assert!(
        report_number(report, "/selection/processes_at_start", &run.stderr) >= 1,
        "{report}"
    );
    assert!(
        report_number(report, "/selection/processes_admitted_at_exec", &run.stderr) >= 1,
        "the exec'd curl: {report}"
    );
    // Not copied: the kernel never passed the other container's calls on, so no event was
    // dropped after a copy, and only the selected container has any.
    assert_eq!(
        report_number(report, "/selection/events_not_selected", &run.stderr),
        0
    );
    let containers = report["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "{report}");
    assert_eq!(containers[0]["id"].as_str(), Some(first.id.as_str()));
    assert!(!run.stderr.contains(&second.id[..12]), "{}", run.stderr);
    run.assert_no_losses();
}

#[test]
fn port_and_comm_select_connections_and_programs() {
    let _lock = exclusive();
    let site = Site::new();
    let (_first, first_port) = www_server(&site.root, "127.0.0.1");
    let (_second, second_port) = www_server(&site.root, "127.0.0.1");
    let (path, content) = site.file("port");
    let curl = |port: u16| {
        let output = Command::new("curl")
            .args(["-sk", "--http1.1"])
            .arg(format!("https://127.0.0.1:{port}{path}"))
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&output.stdout), content);
    };
    // --port: the calls of the other port's connection are not copied, counted.
    let trace = Trace::start(
        &[
            "openssl",
            "--decode",
            "http",
            "--comm",
            "curl",
            "--port",
            &first_port.to_string(),
        ],
        &[],
    );
    curl(first_port);
    curl(second_port);
    // A program of another name: not admitted at all.
    let (s_client_path, _) = site.file("s_client");
    let mut s_client = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect"])
        .arg(format!("127.0.0.1:{first_port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("s_client");
    {
        use std::io::Write;
        let mut stdin = s_client.stdin.take().expect("stdin");
        let _ = write!(stdin, "GET {s_client_path} HTTP/1.0\r\n\r\n");
    }
    let _ = s_client.wait();
    std::thread::sleep(Duration::from_millis(300));
    let run = trace.stop_lines();
    assert!(run.status.success(), "{}", run.stderr);
    let remotes: Vec<&str> = run
        .lines
        .iter()
        .filter(|line| {
            line["type"] == "http_head"
                && line["part"] == "request"
                && line["path"].as_str() == Some(path.as_str())
        })
        .filter_map(|line| line["conn"]["remote"].as_str())
        .collect();
    assert_eq!(
        remotes,
        [format!("127.0.0.1:{first_port}")],
        "{}",
        run.stderr
    );
    assert!(
        !run.lines
            .iter()
            .any(|line| line.get("comm").is_some_and(|comm| comm != "curl")),
        "only curl is traced"
    );
    assert!(
        !run.lines
            .iter()
            .any(|line| line["path"].as_str() == Some(s_client_path.as_str())),
        "openssl s_client is not curl"
    );
    let report = &run.report;
    assert_other_connection_not_copied(&run);
    assert!(report_number(report, "/selection/processes_admitted_at_exec", &run.stderr) >= 2);
}

/// The other connection's request and response cost no copy: the kernel knew its socket from
/// curl's first SSL_write (its write(2) is made inside the call) and left out both calls, and
/// nothing of it was copied before (nothing dropped after the copy).
fn assert_other_connection_not_copied(run: &FinishedLines) {
    let calls = report_number(
        &run.report,
        "/selection/calls_not_selected_in_kernel",
        &run.stderr,
    );
    assert!(calls >= 2, "{}", run.stderr);
    assert_eq!(
        report_number(&run.report, "/selection/events_not_selected", &run.stderr),
        0,
        "{}",
        run.stderr
    );
}

/// The request paths of a run's decoded requests, in order.
fn request_paths(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|line| line["type"] == "http_head" && line["part"] == "request")
        .filter_map(|line| line["path"].as_str().map(str::to_string))
        .collect()
}

/// curl's body for `url` (from the local address `from`), which must be `content` (the file
/// the server served).
fn fetch(url: &str, from: &str, content: &str) {
    let output = Command::new("curl")
        .args(["-sk", "--http1.1", "--interface", from, url])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&output.stdout), content, "{url}");
}

/// `--host NAME`: the name is resolved once at start (localhost: 127.0.0.1, ::1), and only the
/// connections with one of its addresses at an end (local or remote) are written; the others'
/// calls are not copied (the kernel's count). The other connection goes from 127.0.0.3 to
/// 127.0.0.2, so that neither of its ends is localhost.
#[test]
fn host_selects_connections_by_a_resolved_name() {
    let _lock = exclusive();
    let site = Site::new();
    let (_near, near_port) = www_server(&site.root, "127.0.0.1");
    let (_far, far_port) = www_server(&site.root, "127.0.0.2");
    let (near_path, near_content) = site.file("near");
    let (far_path, far_content) = site.file("far");
    let trace = Trace::start(
        &[
            "openssl",
            "--decode",
            "http",
            "--comm",
            "curl",
            "--host",
            "localhost",
        ],
        &[],
    );
    fetch(
        &format!("https://127.0.0.1:{near_port}{near_path}"),
        "127.0.0.1",
        &near_content,
    );
    fetch(
        &format!("https://127.0.0.2:{far_port}{far_path}"),
        "127.0.0.3",
        &far_content,
    );
    std::thread::sleep(Duration::from_millis(300));
    let run = trace.stop_lines();
    assert!(run.status.success(), "{}", run.stderr);
    let paths = request_paths(&run.lines);
    assert!(paths.contains(&near_path), "{paths:?}\n{}", run.stderr);
    assert!(!paths.contains(&far_path), "{paths:?}\n{}", run.stderr);
    let report = &run.report;
    assert_eq!(report["selection"]["addresses_in_kernel"], true);
    assert_other_connection_not_copied(&run);
    assert_eq!(
        report_number(report, "/selection/events_address_unknown", &run.stderr),
        0
    );
}

/// A cgroup v2 made for the test, removed (with its processes gone) when dropped.
struct TestCgroup {
    dir: PathBuf,
    /// Its path under the cgroup v2 root, as `--cgroup` takes it.
    path: String,
}

impl TestCgroup {
    fn new() -> TestCgroup {
        let root = probectl_core::selection::cgroup2_root().expect("a cgroup v2 hierarchy");
        let path = format!("/probectl-test-{}", std::process::id());
        let dir = root.join(&path[1..]);
        std::fs::create_dir_all(&dir).expect("mkdir cgroup");
        TestCgroup { dir, path }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `--cgroup PATH`, system-wide: a program started in the cgroup after the run began is admitted
/// by the kernel at its exec and traced; the same program outside it is not traced, and none of
/// its calls is copied (nothing of it reaches the output or the address filter).
#[test]
fn cgroup_selects_the_processes_of_one_cgroup_in_the_kernel() {
    let _lock = exclusive();
    let site = Site::new();
    let (_server, port) = www_server(&site.root, "127.0.0.1");
    let (inside_path, inside_content) = site.file("inside");
    let (outside_path, outside_content) = site.file("outside");
    let cgroup = TestCgroup::new();
    let trace = Trace::start(
        &["openssl", "--decode", "http", "--cgroup", &cgroup.path],
        &[],
    );
    // sh moves itself into the cgroup, then starts curl there: the exec the kernel admits.
    let procs = cgroup.dir.join("cgroup.procs");
    let inside = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {} && exec curl -sk --http1.1 https://127.0.0.1:{port}{inside_path}",
            procs.display()
        ))
        .output()
        .expect("sh");
    assert_eq!(String::from_utf8_lossy(&inside.stdout), inside_content);
    let outside = Command::new("curl")
        .args(["-sk", "--http1.1"])
        .arg(format!("https://127.0.0.1:{port}{outside_path}"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let outside_pid = outside.id();
    let outside = outside.wait_with_output().expect("curl");
    assert_eq!(String::from_utf8_lossy(&outside.stdout), outside_content);
    std::thread::sleep(Duration::from_millis(300));
    let run = trace.stop_lines();
    assert!(run.status.success(), "{}", run.stderr);
    let paths = request_paths(&run.lines);
    assert!(!paths.contains(&outside_path), "{paths:?}\n{}", run.stderr);
    assert!(
        !run.lines
            .iter()
            .any(|line| line["pid"].as_u64() == Some(u64::from(outside_pid))),
        "nothing of the curl outside the cgroup"
    );
    // Exactly the request of the curl inside, once.
    assert_eq!(paths, [inside_path], "{}", run.stderr);
    let report = &run.report;
    assert!(report_number(report, "/selection/processes_admitted_at_exec", &run.stderr) >= 1);
}
