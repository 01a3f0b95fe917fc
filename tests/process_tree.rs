//! `--pid N` traces N and its descendants that exist when probectl starts: nginx traced by its
//! master's pid captures what its existing workers send (the oracle: the files nginx served),
//! and a shell whose child is the TLS server is traced through that child, with a word on
//! stderr. `check --pid` shows the tree.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The pids whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let after_comm = &stat[stat.rfind(')').expect("comm") + 1..];
        if after_comm.split_whitespace().nth(1) == Some(&pid.to_string()) {
            children.push(child);
        }
    }
    children.sort_unstable();
    children
}

/// A process and the children it had, all killed (by pid) when dropped.
struct ProcessTree {
    root: Guard,
    children: Vec<u32>,
}

impl Drop for ProcessTree {
    fn drop(&mut self) {
        // The root first: an nginx master replaces workers that die, and the replacements
        // would outlive the test (holding the test runner's output pipe open).
        let _ = self.root.0.kill();
        let _ = self.root.0.wait();
        for &child in &self.children {
            // SAFETY: kill(2) on a pid this test started (a child of its own child).
            unsafe { libc::kill(child as i32, libc::SIGKILL) };
        }
    }
}

/// Waits (at most 20 s) until `pid` has `count` children that map `library`.
fn wait_for_children(pid: u32, count: usize, library: &str) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let children: Vec<u32> = children_of(pid)
            .into_iter()
            .filter(|child| {
                std::fs::read_to_string(format!("/proc/{child}/maps"))
                    .unwrap_or_default()
                    .contains(library)
            })
            .collect();
        if children.len() == count {
            return children;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} has children {children:?}, wanted {count} mapping {library}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Bytes that differ from file to file and are not text.
fn file_contents(seed: u64, size: usize) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..size)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

/// nginx with a master and 2 workers, TLS on a free loopback port, serving `files` from a
/// fresh directory. Runs in the foreground (`daemon off`): the spawned pid is the master.
fn nginx(files: &BTreeMap<String, Vec<u8>>) -> (ProcessTree, u16) {
    let (cert, key) = cert_and_key();
    let dir = scratch_file("nginx");
    let root = dir.join("www");
    std::fs::create_dir_all(&root).expect("nginx dir");
    for (name, contents) in files {
        std::fs::write(root.join(name), contents).expect("served file");
    }
    let port = free_port();
    let d = dir.display();
    let config = format!(
        "daemon off;
master_process on;
worker_processes 2;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {};
    ssl_certificate_key {};
    root {};
  }}
}}
",
        cert.display(),
        key.display(),
        root.display()
    );
    let config_path = dir.join("nginx.conf");
    std::fs::write(&config_path, config).expect("nginx.conf");
    let master = Guard(
        Command::new("nginx")
            .arg("-c")
            .arg(&config_path)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .spawn()
            .expect("nginx"),
    );
    let workers = wait_for_children(master.pid(), 2, "libssl.so.3");
    let tree = ProcessTree {
        root: master,
        children: workers,
    };
    wait_for_listener(port);
    (tree, port)
}

/// `curl` fetches https://127.0.0.1:<port>/<name> (its own process, its own connection) and
/// returns what it received.
fn curl(port: u16, name: &str) -> Vec<u8> {
    let output = Command::new("curl")
        .args(["-sSk", "--http1.1"])
        .arg(format!("https://127.0.0.1:{port}/{name}"))
        .output()
        .expect("curl");
    assert!(output.status.success(), "curl {name}: {output:?}");
    output.stdout
}

/// One connection's captured streams: (pids, read bytes, written bytes).
type Streams = (Vec<u32>, Vec<u8>, Vec<u8>);

/// The captured streams per connection id.
fn connections(events: &[Event]) -> BTreeMap<u64, Streams> {
    let mut by_id: BTreeMap<u64, Streams> = BTreeMap::new();
    for event in events {
        let id = event.json["conn"]["id"].as_u64().expect("conn.id");
        let entry = by_id.entry(id).or_default();
        if !entry.0.contains(&event.pid) {
            entry.0.push(event.pid);
        }
        match event.direction.as_str() {
            "read" => entry.1.extend_from_slice(&event.data),
            _ => entry.2.extend_from_slice(&event.data),
        }
    }
    by_id
}

#[test]
fn nginx_traced_by_its_master_pid_captures_the_existing_workers() {
    let files: BTreeMap<String, Vec<u8>> = [
        ("small.txt".to_string(), b"hello from nginx\n".to_vec()),
        ("a.bin".to_string(), file_contents(1, 100_000)),
        ("b.bin".to_string(), file_contents(2, 300_001)),
        ("c.bin".to_string(), file_contents(3, 40_000)),
    ]
    .into_iter()
    .collect();
    let (nginx, port) = nginx(&files);
    let master = nginx.root.pid();
    let trace = Trace::start(&["openssl", "--pid", &master.to_string()], &[]);
    assert!(
        trace
            .stderr_text()
            .contains(&format!("in pid {master} (nginx) and its 2 descendants")),
        "{}",
        trace.stderr_text()
    );
    let names: Vec<&String> = files.keys().chain(files.keys()).collect();
    for name in &names {
        // nginx served exactly the file.
        assert_eq!(&curl(port, name), &files[*name], "curl {name}");
    }
    let run = trace.stop();
    assert!(run.status.success(), "{}", run.stderr);

    // Every request is one connection, served by a worker: the request it read names the file,
    // and what it wrote is the response head followed by exactly the file's bytes.
    let connections = connections(&run.events);
    let mut served: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, (pids, read, written)) in &connections {
        assert_eq!(pids.len(), 1, "conn#{id} is one process's: {pids:?}");
        assert!(
            nginx.children.contains(&pids[0]),
            "conn#{id} is a worker's ({:?}), not pid {}",
            nginx.children,
            pids[0]
        );
        let request = String::from_utf8_lossy(read);
        let name = files
            .keys()
            .find(|name| request.starts_with(&format!("GET /{name} HTTP/1.1\r\n")))
            .unwrap_or_else(|| panic!("conn#{id} read an unknown request: {request:?}"));
        let head_end = written
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("conn#{id}: no response head"))
            + 4;
        assert!(written.starts_with(b"HTTP/1.1 200 OK\r\n"), "conn#{id}");
        assert!(
            written[head_end..] == files[name][..],
            "conn#{id}: the body of {name} ({} bytes captured, {} served)",
            written.len() - head_end,
            files[name].len()
        );
        *served.entry(name).or_default() += 1;
    }
    for name in files.keys() {
        assert_eq!(served.get(name.as_str()), Some(&2), "{name}: {served:?}");
    }
}

#[test]
fn check_of_nginx_shows_the_process_tree() {
    let files: BTreeMap<String, Vec<u8>> = [("index.html".to_string(), b"hi\n".to_vec())]
        .into_iter()
        .collect();
    let (nginx, _port) = nginx(&files);
    let master = nginx.root.pid();
    let (code, stdout, stderr) = probectl(&["check", "--pid", &master.to_string()]);
    assert_eq!(code, 0, "{stderr}");
    let mut text = stdout;
    for pid in std::iter::once(master).chain(nginx.children.iter().copied()) {
        text = text.replace(&pid.to_string(), "[pid]");
    }
    insta::assert_snapshot!(redact_offsets(&uncached(&text)));
}

/// `sh -c '<server> & wait'`: a shell that maps no TLS library, whose child is the server.
fn server_under_a_shell(command: &str) -> (ProcessTree, u32) {
    let shell = Guard(
        Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("{command} & wait"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("sh"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let child = loop {
        if let Some(&child) = children_of(shell.pid()).first() {
            break child;
        }
        assert!(Instant::now() < deadline, "the shell started nothing");
        std::thread::sleep(Duration::from_millis(10));
    };
    (
        ProcessTree {
            root: shell,
            children: vec![child],
        },
        child,
    )
}

fn python_server_command(port: u16) -> String {
    let (cert, key) = cert_and_key();
    format!(
        "/usr/bin/python3 '{}' {port} '{}' '{}'",
        peer("tls_server.py").display(),
        cert.display(),
        key.display()
    )
}

#[test]
fn a_root_without_the_library_is_traced_through_its_descendants() {
    let port = free_port();
    let (shell, server) = server_under_a_shell(&python_server_command(port));
    wait_for_port(port);
    wait_for_mapping(server, "libssl.so.3");
    let root = shell.root.pid();
    let trace = Trace::start(&["openssl", "--pid", &root.to_string()], &[]);
    let note = trace
        .stderr_text()
        .lines()
        .find(|line| line.contains("maps no openssl library itself"))
        .unwrap_or_else(|| panic!("no word about the descendants:\n{}", trace.stderr_text()))
        .to_string();
    let request = unique_request("tree");
    let (_client, response) = python_client(port, &request);
    let run = trace.stop();
    assert!(run.status.success(), "{}", run.stderr);
    assert_attributed(
        &run.events,
        server,
        Side::Server { port },
        &response,
        &request,
    );
    insta::assert_snapshot!(note
        .replace(&root.to_string(), "[root]")
        .replace(&server.to_string(), "[server]"));
}

#[test]
fn a_tree_where_no_member_maps_the_library_is_the_usual_error() {
    let (shell, child) = server_under_a_shell("sleep 60");
    let root = shell.root.pid();
    let (code, stdout, stderr) = probectl(&["run", "openssl", "--pid", &root.to_string()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty());
    insta::assert_snapshot!(stderr
        .replace(&root.to_string(), "[root]")
        .replace(&child.to_string(), "[child]"));
}
