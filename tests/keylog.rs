//! `--keylog FILE`: the session secrets probectl reads from a library's key-log function are the
//! ones the program writes itself (its own SSLKEYLOGFILE / -keylogfile / --tls-keylog), line for
//! line, for TLS 1.2 and 1.3, resumed sessions and a HelloRetryRequest; each is tied to its
//! connection in the JSON output and the report, and a connection joined after its handshake
//! is "keys not seen". Stripped BoringSSL (Bun's fetch and server, Chromium) takes its client
//! random from the ClientHello its socket sent or read; Go's secrets are tied to their
//! connection by it (the oracle: the addresses the peer itself reports). `--packets` is
//! decrypted by tshark from probectl's file alone, on loopback and on a veth pair into a
//! network namespace.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{cert_and_key, free_port, s_server, scratch_file, wait_for_port, Guard, Trace};

/// The NSS key-log lines of a file, without comments, as a set.
fn lines(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(str::to_string)
        .collect()
}

fn labels(lines: &BTreeSet<String>) -> BTreeSet<String> {
    lines
        .iter()
        .filter_map(|line| line.split(' ').next())
        .map(str::to_string)
        .collect()
}

const TLS13_LABELS: [&str; 5] = [
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
    "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0",
    "SERVER_TRAFFIC_SECRET_0",
    "EXPORTER_SECRET",
];

/// Runs `command` under `probectl run openssl --keylog` to completion (with `env` for it) and
/// checks what both sides wrote: the same lines, with these labels, the file 0600, every secret
/// tied to a connection of the report. Returns the lines.
fn same_keys(
    command: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
    oracle: &Path,
    expected_labels: &[&str],
) -> BTreeSet<String> {
    same_keys_of("openssl", command, env, oracle, expected_labels)
}

/// [`same_keys`] for the probes of `group`.
fn same_keys_of(
    group: &str,
    command: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
    oracle: &Path,
    expected_labels: &[&str],
) -> BTreeSet<String> {
    let keylog = scratch_file("keylog.txt");
    let keylog_arg = keylog.display().to_string();
    let run = Trace::start_with_env(&[group, "--keylog", &keylog_arg], command, env).wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    run.assert_no_losses();
    let ours = lines(&keylog);
    let theirs = lines(oracle);
    assert!(!theirs.is_empty(), "the program wrote no key log");
    assert_eq!(ours, theirs, "{}", run.stderr);
    let wanted: BTreeSet<String> = expected_labels.iter().map(|l| l.to_string()).collect();
    assert_eq!(labels(&ours), wanted);
    let mode = std::fs::metadata(&keylog)
        .expect("keylog")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    // Every line came from a secret record, each shown in the output with its client random.
    let shown: Vec<&serde_json::Value> = run
        .lines
        .iter()
        .filter_map(|line| line.get("secret"))
        .collect();
    assert_eq!(shown.len(), ours.len(), "{:?}", run.lines);
    for secret in &shown {
        let label = secret["label"].as_str().expect("label");
        let random = secret["client_random"].as_str().expect("client_random");
        assert!(
            ours.iter()
                .any(|line| line.starts_with(&format!("{label} {random} "))),
            "{secret}"
        );
    }
    let keylog_report = &run.report["keylog"];
    assert_eq!(
        keylog_report["written"],
        ours.len() as u64,
        "{}",
        run.report
    );
    assert_eq!(keylog_report["unusable"], 0);
    assert_eq!(keylog_report["without_handle"], 0);
    assert_eq!(keylog_report["without_client_random"], 0, "{}", run.report);
    // Each connection carries its keys: every client random of the key log names one.
    let connections = run.report["connections"]["kept"]
        .as_array()
        .expect("connections");
    let randoms: BTreeSet<&str> = ours
        .iter()
        .filter_map(|line| line.split(' ').nth(1))
        .collect();
    let tied: BTreeSet<&str> = connections
        .iter()
        .filter_map(|connection| connection["keys"]["client_random"].as_str())
        .collect();
    // (bssl-tool, under load, now and then ends without sending its request: its handshake is
    // then one that moved no data, counted as such below.)
    assert!(
        !tied.is_empty() || group == "boringssl",
        "{}\n{}",
        run.report,
        run.stderr
    );
    assert!(tied.is_subset(&randoms), "{}", run.report);
    // The rest are handshakes whose handle moved no data (s_client -reconnect's first five).
    assert_eq!(
        keylog_report["handshakes_without_data"],
        (randoms.len() - tied.len()) as u64,
        "{}",
        run.report
    );
    ours
}

/// `openssl s_client` sending a request (so that its connection moves data), then ending.
fn s_client(port: u16, version: &str, oracle: &Path, extra: &[&str]) -> Vec<String> {
    vec![
        "sh".to_string(),
        "-c".to_string(),
        format!(
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | openssl s_client -connect 127.0.0.1:{port} {version} -keylogfile {} {} >/dev/null 2>&1",
            oracle.display(),
            extra.join(" ")
        ),
    ]
}

#[test]
fn openssl_s_client_tls12_and_tls13() {
    let (_server, port) = s_server();
    for (version, labels) in [
        ("-tls1_2", &["CLIENT_RANDOM"][..]),
        ("-tls1_3", &TLS13_LABELS[..]),
    ] {
        let oracle = scratch_file("s_client.keys");
        let command = s_client(port, version, &oracle, &[]);
        let command: Vec<&str> = command.iter().map(String::as_str).collect();
        let keys = same_keys(&command, &[], &oracle, labels);
        assert_eq!(keys.len(), labels.len(), "{version}: one handshake");
    }
}

#[test]
fn resumed_sessions_tls12_and_tls13() {
    // -reconnect: the first handshake, then five more resuming its session, each logged.
    let (_server, port) = s_server();
    for (version, labels) in [
        ("-tls1_2", &["CLIENT_RANDOM"][..]),
        ("-tls1_3", &TLS13_LABELS[..]),
    ] {
        let oracle = scratch_file("reconnect.keys");
        let command = s_client(port, version, &oracle, &["-reconnect"]);
        let command: Vec<&str> = command.iter().map(String::as_str).collect();
        let keys = same_keys(&command, &[], &oracle, labels);
        let randoms: BTreeSet<&str> = keys
            .iter()
            .filter_map(|line| line.split(' ').nth(1))
            .collect();
        assert_eq!(randoms.len(), 6, "{version}: six handshakes: {keys:?}");
    }
}

#[test]
fn hello_retry_request() {
    // The client's key share is for X25519; the server takes only P-256 and asks again.
    let (cert, key) = cert_and_key();
    let port = free_port();
    let server = std::process::Command::new("openssl")
        .args(["s_server", "-www", "-quiet", "-groups", "P-256", "-accept"])
        .arg(port.to_string())
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let _server = Guard(server);
    wait_for_port(port);
    // The same handshake untraced shows the retry: two ServerHellos (the first one is the
    // HelloRetryRequest).
    let shown = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-tls1_3",
        ])
        .args(["-groups", "X25519:P-256", "-msg"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert_eq!(text.matches("], ServerHello").count(), 2, "{text}");
    let oracle = scratch_file("hrr.keys");
    let command = s_client(port, "-tls1_3", &oracle, &["-groups", "X25519:P-256"]);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    same_keys(&command, &[], &oracle, &TLS13_LABELS);
}

#[test]
fn curl_sslkeylogfile_tls12_and_tls13() {
    let (_server, port) = s_server();
    let url = format!("https://127.0.0.1:{port}/");
    for (version, labels) in [
        (
            &["--tlsv1.2", "--tls-max", "1.2"][..],
            &["CLIENT_RANDOM"][..],
        ),
        (&["--tlsv1.3"][..], &TLS13_LABELS[..]),
    ] {
        let oracle = scratch_file("curl.keys");
        let mut command = vec!["curl", "-sk", "-o", "/dev/null"];
        command.extend_from_slice(version);
        command.push(&url);
        same_keys(
            &command,
            &[("SSLKEYLOGFILE", oracle.as_os_str())],
            &oracle,
            labels,
        );
    }
}

#[test]
fn node_tls_keylog_tls12_and_tls13() {
    // node's OpenSSL is linked in, with nss_keylog_int inlined into ssl_log_secret: the
    // stand-in probe, whose client random is the field SSL_get_client_random reads.
    let (_server, port) = s_server();
    for (version, labels) in [
        ("TLSv1.2", &["CLIENT_RANDOM"][..]),
        ("TLSv1.3", &TLS13_LABELS[..]),
    ] {
        let oracle = scratch_file("node.keys");
        let keylog_flag = format!("--tls-keylog={}", oracle.display());
        let script = format!(
            "const tls = require('tls'); \
             const s = tls.connect({{ port: {port}, host: '127.0.0.1', rejectUnauthorized: false, \
               minVersion: '{version}', maxVersion: '{version}' }}, \
               () => s.write('GET / HTTP/1.0\\r\\n\\r\\n')); \
             s.on('data', () => {{}}); s.on('end', () => s.end());"
        );
        let command = ["node", keylog_flag.as_str(), "-e", script.as_str()];
        same_keys(&command, &[], &oracle, labels);
    }
}

#[test]
fn a_connection_joined_after_its_handshake_is_keys_not_seen() {
    let (_server, port) = s_server();
    let exchange = common::Exchange::new(b"GET / HTTP/1.0\r\n\r\n");
    let (mut client, line) = exchange.held_python_client(port, "--hold-connected");
    assert!(line.starts_with("connected"), "{line}");
    let keylog = scratch_file("late.keys");
    let keylog_arg = keylog.display().to_string();
    let pid = client.pid().to_string();
    let trace = Trace::start(&["openssl", "--keylog", &keylog_arg, "--pid", &pid], &[]);
    client.release();
    client.finish();
    let run = trace.stop_lines();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(lines(&keylog).is_empty());
    let connections = run.report["connections"]["kept"]
        .as_array()
        .expect("connections");
    assert_eq!(connections.len(), 1, "{}", run.report);
    assert_eq!(connections[0]["keys"], "not seen", "{}", run.report);
    assert!(run.stderr.contains("keys not seen"), "{}", run.stderr);
    assert_eq!(run.report["keylog"]["connections_keys_not_seen"], 1);
}

#[test]
fn an_existing_key_log_is_kept_unless_forced() {
    let keylog = scratch_file("existing.keys");
    std::fs::write(&keylog, "kept\n").expect("write");
    let keylog_arg = keylog.display().to_string();
    let (code, _, stderr) =
        common::probectl(&["run", "openssl", "--keylog", &keylog_arg, "--", "true"]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&keylog).expect("read"), "kept\n");
}

#[test]
fn check_shows_where_the_key_probe_goes_and_how_it_was_found() {
    let (server, _port) = s_server();
    let pid = server.pid().to_string();
    let (code, stdout, stderr) = common::probectl(&["check", "--pid", &pid]);
    assert_eq!(code, 0, "{stderr}");
    let line = stdout
        .lines()
        .position(|line| line.trim_start().starts_with("nss_keylog_int"))
        .unwrap_or_else(|| panic!("no nss_keylog_int in {stdout}"));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[line].contains("[cross-reference analysis") && lines[line].contains("entry only"),
        "{stdout}"
    );
    assert!(
        lines[line + 1].contains("the only reference to \"CLIENT_RANDOM\"")
            && lines[line + 1].contains("tail jump"),
        "{stdout}"
    );
}

/// tests/peers/go_keylog.go built with Debian's Go (once).
fn go_keylog() -> &'static std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| go_build("go_keylog"))
}

/// tests/peers/go_keylog_server.go built with Debian's Go (once).
fn go_keylog_server() -> &'static std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| go_build("go_keylog_server"))
}

/// tests/peers/NAME.go built with Debian's Go.
fn go_build(name: &str) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("probectl-tests-go-keylog");
    std::fs::create_dir_all(&dir).expect("dir");
    let program = dir.join(name);
    let status = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&program)
        .arg(common::peer(&format!("{name}.go")))
        .env("GO111MODULE", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", dir.join("cache"))
        .status()
        .expect("go build");
    assert!(status.success(), "go build {name}.go");
    program
}

#[test]
fn go_server_secrets_are_tied_by_the_client_hello_it_read() {
    // A Go server's writeKeyLog gets no *Conn: its secrets are tied to the socket that read
    // the ClientHello with their random (seen when the read returns). The oracle is curl's
    // SSLKEYLOGFILE and the address curl itself reports.
    let (cert, key) = cert_and_key();
    let port = free_port();
    let server = std::process::Command::new(go_keylog_server())
        .arg(port.to_string())
        .arg(cert)
        .arg(key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("go server");
    let server = Guard(server);
    common::wait_for_listener(port);
    let pid = server.pid().to_string();
    for (version, expected) in [
        (
            &["--tlsv1.2", "--tls-max", "1.2"][..],
            &["CLIENT_RANDOM"][..],
        ),
        // Go logs no EXPORTER_SECRET; curl does.
        (&["--tlsv1.3"][..], &TLS13_LABELS[..4]),
    ] {
        let oracle = scratch_file("curl-go.keys");
        let keylog = scratch_file("go-server.keys");
        let keylog_arg = keylog.display().to_string();
        let trace = Trace::start(&["go", "--keylog", &keylog_arg, "--pid", &pid], &[]);
        let curl = std::process::Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{local_ip}:%{local_port}"])
            .args(version)
            .arg(format!("https://127.0.0.1:{port}/"))
            .env("SSLKEYLOGFILE", &oracle)
            .output()
            .expect("curl");
        assert!(curl.status.success(), "{curl:?}");
        let client = String::from_utf8(curl.stdout).expect("address");
        std::thread::sleep(std::time::Duration::from_millis(500));
        let run = trace.stop_lines();
        assert!(run.status.success(), "{}", run.stderr);
        let ours = lines(&keylog);
        let wanted: BTreeSet<String> = expected.iter().map(|l| l.to_string()).collect();
        let theirs: BTreeSet<String> = lines(&oracle)
            .into_iter()
            .filter(|line| {
                line.split(' ')
                    .next()
                    .is_some_and(|label| wanted.contains(label))
            })
            .collect();
        assert!(!theirs.is_empty(), "curl wrote no key log");
        assert_eq!(ours, theirs, "{}", run.stderr);
        assert_eq!(
            run.report["keylog"]["tied_by_client_hello"],
            ours.len() as u64,
            "{}",
            run.report
        );
        let random = ours
            .iter()
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .expect("a random");
        assert_connection_between(
            &run,
            random,
            &format!("127.0.0.1:{port}"),
            &client,
            expected.len(),
        );
    }
}

#[test]
fn go_key_log_writer_tls12_and_tls13() {
    // crypto/tls.(*Config).writeKeyLog, Go's register ABI. It has no *Conn: the secrets are
    // counted as without a handle, and tied to their connection by the ClientHello with their
    // client random that the connection's socket sent.
    let (_server, port) = s_server();
    let program = go_keylog().display().to_string();
    let port_arg = port.to_string();
    // Go logs no EXPORTER_SECRET.
    for (version, labels) in [("1.2", &["CLIENT_RANDOM"][..]), ("1.3", &TLS13_LABELS[..4])] {
        let oracle = scratch_file("go.keys");
        let oracle_arg = oracle.display().to_string();
        let keylog = scratch_file("go-probectl.keys");
        let keylog_arg = keylog.display().to_string();
        let address = scratch_file("go.address");
        let address_arg = address.display().to_string();
        let run = Trace::start(
            &["go", "--keylog", &keylog_arg],
            &[&program, &port_arg, &oracle_arg, version, &address_arg],
        )
        .wait_lines();
        assert!(run.status.success(), "{}", run.stderr);
        run.assert_no_losses();
        let ours = lines(&keylog);
        assert_eq!(ours, lines(&oracle), "{}", run.stderr);
        let mut wanted: Vec<String> = labels.iter().map(|label| label.to_string()).collect();
        wanted.sort();
        assert_eq!(labels_of(&ours), wanted, "TLS {version}");
        assert_eq!(run.report["keylog"]["written"], ours.len() as u64);
        assert_eq!(run.report["keylog"]["without_handle"], ours.len() as u64);
        assert_eq!(
            run.report["keylog"]["tied_by_client_hello"],
            ours.len() as u64,
            "{}",
            run.report
        );
        // The connection that carries the keys is the one the client itself saw: its own
        // local address, to the server's port.
        let random = ours
            .iter()
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .expect("a random");
        let local = std::fs::read_to_string(&address).expect("the client's address");
        assert_connection_has_keys(&run, random, &local, port, labels.len());
        // Each secret's JSON names the socket that sent its ClientHello.
        for secret in run.lines.iter().filter_map(|line| line.get("secret")) {
            assert!(secret["fd"].as_i64().is_some(), "{secret}");
        }
    }
}

/// The report's one connection whose keys name `random`: `local` -> 127.0.0.1:`port` (what
/// the client itself saw), with `secrets` secrets.
fn assert_connection_has_keys(
    run: &common::FinishedLines,
    random: &str,
    local: &str,
    port: u16,
    secrets: usize,
) {
    assert_connection_between(run, random, local, &format!("127.0.0.1:{port}"), secrets);
}

/// The report's one connection whose keys name `random`: `local` -> `remote`, with `secrets`
/// secrets.
fn assert_connection_between(
    run: &common::FinishedLines,
    random: &str,
    local: &str,
    remote: &str,
    secrets: usize,
) {
    let connections = run.report["connections"]["kept"]
        .as_array()
        .expect("connections");
    let tied: Vec<&serde_json::Value> = connections
        .iter()
        .filter(|connection| connection["keys"]["client_random"] == random)
        .collect();
    assert_eq!(tied.len(), 1, "{}", run.report);
    assert_eq!(tied[0]["local"], local, "{}", run.report);
    assert_eq!(tied[0]["remote"], remote, "{}", run.report);
    assert_eq!(tied[0]["keys"]["secrets"], secrets as u64, "{}", run.report);
}

fn labels_of(lines: &BTreeSet<String>) -> Vec<String> {
    let mut labels: Vec<String> = labels(lines).into_iter().collect();
    labels.sort();
    labels
}

#[test]
fn gnutls_cli_sslkeylogfile_tls12_and_tls13() {
    // GnuTLS's _gnutls_call_keylog_func, located by the "CLIENT_RANDOM" string; the client
    // random is the session's field that gnutls_session_get_random reads.
    let (_server, port) = s_server();
    for (versions, labels) in [
        ("+VERS-TLS1.2", &["CLIENT_RANDOM"][..]),
        ("+VERS-TLS1.3", &TLS13_LABELS[..]),
    ] {
        let oracle = scratch_file("gnutls.keys");
        let script = format!(
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | gnutls-cli --insecure \
             --priority NORMAL:-VERS-ALL:{versions} -p {port} 127.0.0.1 >/dev/null 2>&1"
        );
        same_keys_of(
            "gnutls",
            &["sh", "-c", &script],
            &[("SSLKEYLOGFILE", oracle.as_os_str())],
            &oracle,
            labels,
        );
    }
}

#[test]
fn bssl_tool_sslkeylogfile_tls12_and_tls13() {
    // BoringSSL's ssl_log_secret (Debian's android/libssl.so.0), located by the "CLIENT_RANDOM"
    // string; the client random is ssl->s3->client_random, through the pointer that
    // SSL_get_client_random follows.
    let (_server, port) = s_server();
    for (version, labels) in [
        ("tls1.2", &["CLIENT_RANDOM"][..]),
        ("tls1.3", &TLS13_LABELS[..]),
    ] {
        let oracle = scratch_file("bssl.keys");
        let script = format!(
            "(sleep 1; printf 'GET / HTTP/1.0\\r\\n\\r\\n'; sleep 3) | bssl-tool client \
             -connect 127.0.0.1:{port} -min-version {version} -max-version {version} \
             >/dev/null"
        );
        same_keys_of(
            "boringssl",
            &["sh", "-c", &script],
            &[("SSLKEYLOGFILE", oracle.as_os_str())],
            &oracle,
            labels,
        );
    }
}

/// `openssl s_server -www` on a free port speaking only `version` (`-tls1_2`, `-tls1_3`),
/// writing its own key log to `keylog`: the oracle of a traced client.
fn s_server_keylog(version: &str, keylog: &Path) -> (Guard, u16) {
    let (cert, key) = cert_and_key();
    let port = free_port();
    let child = std::process::Command::new("openssl")
        .args(["s_server", "-www", "-quiet", version, "-accept"])
        .arg(port.to_string())
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .arg("-keylogfile")
        .arg(keylog)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let guard = Guard(child);
    wait_for_port(port);
    (guard, port)
}

#[test]
fn bun_fetch_keys_equal_the_servers_tls12_and_tls13() {
    // Bun's BoringSSL is linked in and stripped: ssl_log_secret is found by the
    // "CLIENT_RANDOM" string, and there is no SSL_get_client_random to read the client
    // random's field from. Each secret takes the random of the ClientHello that its
    // connection's socket sent. The oracle is the server's own key log.
    let bun = common::npm_peer("bun");
    let cache = common::cache_dir();
    for (version, labels) in [
        ("-tls1_2", &["CLIENT_RANDOM"][..]),
        ("-tls1_3", &TLS13_LABELS[..]),
    ] {
        let oracle = scratch_file("bun-server.keys");
        let (server, port) = s_server_keylog(version, &oracle);
        let script = format!(
            "const r = await fetch('https://127.0.0.1:{port}/');              if (!(await r.text()).includes('s_server')) process.exit(3);"
        );
        let ours = same_keys_of(
            "boringssl",
            &[bun.to_str().expect("path"), "-e", &script],
            &[
                ("PROBECTL_CACHE_DIR", cache.as_os_str()),
                ("NODE_TLS_REJECT_UNAUTHORIZED", std::ffi::OsStr::new("0")),
            ],
            &oracle,
            labels,
        );
        drop(server);
        assert_eq!(ours.len(), labels.len(), "one handshake: {ours:?}");
    }
}

#[test]
fn bun_server_keys_equal_curls_tls12_and_tls13() {
    // A Bun server (Bun.serve over TLS), traced by --pid: its BoringSSL's secrets take the
    // random of the ClientHello its socket read (seen when the read returns). The oracle is
    // curl's SSLKEYLOGFILE; each secret is tied to the connection whose addresses curl
    // itself reports.
    let bun = common::npm_peer("bun");
    let (cert, key) = cert_and_key();
    let port = free_port();
    let script = format!(
        "Bun.serve({{ port: {port}, hostname: '127.0.0.1', \
           tls: {{ cert: Bun.file('{}'), key: Bun.file('{}') }}, \
           fetch() {{ return new Response('served by bun'); }} }});",
        cert.display(),
        key.display()
    );
    let server = std::process::Command::new(&bun)
        .args(["-e", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("bun");
    let server = Guard(server);
    common::wait_for_listener(port);
    let pid = server.pid().to_string();
    let cache = common::cache_dir();
    for (version, expected) in [
        (
            &["--tlsv1.2", "--tls-max", "1.2"][..],
            &["CLIENT_RANDOM"][..],
        ),
        (&["--tlsv1.3"][..], &TLS13_LABELS[..]),
    ] {
        let oracle = scratch_file("curl-bun.keys");
        let keylog = scratch_file("bun-server.keys");
        let keylog_arg = keylog.display().to_string();
        let trace = Trace::start_with_env(
            &["boringssl", "--keylog", &keylog_arg, "--pid", &pid],
            &[],
            &[("PROBECTL_CACHE_DIR", cache.as_os_str())],
        );
        let url = format!("https://127.0.0.1:{port}/");
        let curl = std::process::Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{local_ip}:%{local_port}"])
            .args(version)
            .arg(&url)
            .env("SSLKEYLOGFILE", &oracle)
            .output()
            .expect("curl");
        assert!(curl.status.success(), "{curl:?}");
        let client = String::from_utf8(curl.stdout).expect("address");
        // The server's last secrets come as its response goes out: wait for them.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let run = trace.stop_lines();
        assert!(run.status.success(), "{}", run.stderr);
        let ours = lines(&keylog);
        let theirs = lines(&oracle);
        assert!(!theirs.is_empty(), "curl wrote no key log");
        assert_eq!(ours, theirs, "{}", run.stderr);
        let wanted: BTreeSet<String> = expected.iter().map(|l| l.to_string()).collect();
        assert_eq!(labels(&ours), wanted);
        assert_eq!(run.report["keylog"]["without_client_random"], 0);
        let random = ours
            .iter()
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .expect("a random");
        assert_connection_between(
            &run,
            random,
            &format!("127.0.0.1:{port}"),
            &client,
            expected.len(),
        );
    }
}

#[test]
fn chromium_keys_are_its_own_tls12_and_tls13() {
    // Chromium's BoringSSL is linked in and stripped, like Bun's. Headless Chromium loads a
    // page from openssl s_server; its own --ssl-key-log-file is the oracle. Every connection
    // that moved data has its keys, all of them in Chromium's key log; a connection Chromium
    // opened and never used (a preconnect) moved no data, so its handle's socket, and with it
    // its ClientHello's random, is never known: those secrets are counted, not written.
    // Every run must trace: about one in ten traced nothing before probectl bound its probes to
    // each process that execs (the network service lost its breakpoints; see
    // `ScopedProbes::rebind`).
    let chromium = Path::new("/usr/lib/chromium/chromium");
    assert!(
        chromium.exists(),
        "Debian's chromium is not installed (run scripts/setup)"
    );
    let cache = common::cache_dir();
    for (version, expected) in [
        ("-tls1_2", &["CLIENT_RANDOM"][..]),
        ("-tls1_3", &TLS13_LABELS[..]),
    ] {
        let server_keys = scratch_file("chromium-server.keys");
        let (server, port) = s_server_keylog(version, &server_keys);
        let oracle = scratch_file("chromium.keys");
        let profile = scratch_file("chromium-profile");
        let keylog = scratch_file("chromium-probectl.keys");
        let keylog_arg = keylog.display().to_string();
        let oracle_flag = format!("--ssl-key-log-file={}", oracle.display());
        let profile_flag = format!("--user-data-dir={}", profile.display());
        let url = format!("https://127.0.0.1:{port}/");
        // The flags that work on these machines (no GPU, no sandbox as root, no network
        // beyond the page).
        let run = Trace::start_with_env(
            &["boringssl", "--keylog", &keylog_arg],
            &[
                chromium.to_str().expect("path"),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--ignore-certificate-errors",
                &profile_flag,
                &oracle_flag,
                "--dump-dom",
                &url,
            ],
            &[("PROBECTL_CACHE_DIR", cache.as_os_str())],
        )
        .wait_lines();
        drop(server);
        assert!(run.status.success(), "{}", run.stderr);
        let ours = lines(&keylog);
        let theirs = lines(&oracle);
        assert!(!theirs.is_empty(), "Chromium wrote no key log");
        assert!(ours.is_subset(&theirs), "{ours:?}\n{theirs:?}");
        let keylog_report = &run.report["keylog"];
        assert_eq!(
            keylog_report["written"],
            ours.len() as u64,
            "{}",
            run.report
        );
        assert_eq!(keylog_report["unusable"], 0);
        // Every secret is written, or counted as without its ClientHello's random.
        assert_eq!(
            keylog_report["secrets"],
            theirs.len() as u64,
            "{}\n{}",
            run.report,
            run.stderr
        );
        assert_eq!(
            keylog_report["without_client_random"],
            (theirs.len() - ours.len()) as u64,
            "{}",
            run.report
        );
        // Each connection that moved data has its handshake's keys, all of them.
        let connections = run.report["connections"]["kept"]
            .as_array()
            .expect("connections");
        let used: Vec<&serde_json::Value> = connections
            .iter()
            .filter(|connection| connection["written"].as_u64() > Some(0))
            .collect();
        assert!(!used.is_empty(), "{}", run.report);
        for connection in used {
            assert_eq!(connection["remote"], format!("127.0.0.1:{port}"));
            let random = connection["keys"]["client_random"]
                .as_str()
                .unwrap_or_else(|| panic!("no keys: {connection}"));
            let of_random: BTreeSet<String> = theirs
                .iter()
                .filter(|line| line.split(' ').nth(1) == Some(random))
                .cloned()
                .collect();
            assert!(of_random.is_subset(&ours), "{connection}");
            let wanted: BTreeSet<String> = expected.iter().map(|l| l.to_string()).collect();
            assert_eq!(labels(&of_random), wanted, "{connection}");
        }
    }
}

/// nginx with HTTP/1.1 and HTTP/2 over TLS on `port`, serving `root`, in the foreground.
fn nginx(root: &Path, port: u16) -> Guard {
    nginx_in(root, "127.0.0.1", port, None)
}

/// [`nginx`] listening on `address`, run in network namespace `namespace` if given.
fn nginx_in(root: &Path, address: &str, port: u16, namespace: Option<&str>) -> Guard {
    let (cert, key) = cert_and_key();
    let dir = scratch_file("nginx");
    std::fs::create_dir_all(&dir).expect("nginx dir");
    let dir_text = dir.display();
    let config = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir_text}/nginx.pid;\n\
         error_log {dir_text}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n\
         client_body_temp_path {dir_text}/body;\n  proxy_temp_path {dir_text}/proxy;\n\
         fastcgi_temp_path {dir_text}/fastcgi;\n  uwsgi_temp_path {dir_text}/uwsgi;\n\
         scgi_temp_path {dir_text}/scgi;\n  server {{\n    listen {address}:{port} ssl http2;\n\
         ssl_certificate {};\n    ssl_certificate_key {};\n    root {};\n  }}\n}}\n",
        cert.display(),
        key.display(),
        root.display()
    );
    let config_path = dir.join("nginx.conf");
    std::fs::write(&config_path, config).expect("nginx.conf");
    let mut command = match namespace {
        Some(namespace) => {
            let mut command = std::process::Command::new("ip");
            command.args(["netns", "exec", namespace, "nginx"]);
            command
        }
        None => std::process::Command::new("nginx"),
    };
    let child = command
        .arg("-c")
        .arg(&config_path)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nginx");
    let guard = Guard(child);
    match namespace {
        Some(_) => wait_for_address(address, port),
        None => common::wait_for_listener(port),
    }
    guard
}

/// Waits until `address:port` accepts a TCP connection (a server in another namespace).
fn wait_for_address(address: &str, port: u16) {
    let target: std::net::SocketAddr = format!("{address}:{port}").parse().expect("address");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&target, std::time::Duration::from_millis(200))
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {target}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn sha256(bytes: &[u8]) -> String {
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(bytes).expect("sha256sum input");
    }
    let output = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

fn tshark(args: &[&str]) -> String {
    let output = std::process::Command::new("tshark")
        .args(args)
        .output()
        .expect("tshark");
    assert!(
        output.status.success(),
        "tshark {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_tcpdump_capture_decrypts_with_the_key_log() {
    // The packets as they went on the wire (tcpdump, a separate capture), the keys from
    // probectl's --keylog alone: tshark decrypts both connections, and the bodies it
    // reassembles (HTTP/1.1, then HTTP/2) are the server's file.
    let name = "file.bin";
    let root = scratch_file("www");
    std::fs::create_dir_all(&root).expect("root");
    let content: Vec<u8> = (0..150_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(root.join(name), &content).expect("file");
    let port = free_port();
    let _nginx = nginx(&root, port);
    let capture = scratch_file("wire.pcap");
    let mut tcpdump = std::process::Command::new("tcpdump")
        .args([
            "-i",
            "lo",
            "--immediate-mode",
            "-U",
            "-s",
            "0",
            "-B",
            "65536",
            "-w",
        ])
        .arg(&capture)
        .args(["tcp", "port", &port.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tcpdump");
    let tcpdump_said = {
        use std::io::BufRead;
        let stderr = tcpdump.stderr.take().expect("stderr");
        let mut lines = std::io::BufReader::new(stderr).lines();
        let listening = lines.any(|line| line.is_ok_and(|line| line.contains("listening on")));
        assert!(listening, "tcpdump did not start");
        std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<String>>())
    };
    let keylog = scratch_file("wire.keys");
    let keylog_arg = keylog.display().to_string();
    let url = format!("https://127.0.0.1:{port}/{name}");
    let body = scratch_file("body");
    let body_arg = body.display().to_string();
    let script = format!(
        "curl -sk --http1.1 -o {body_arg}.1 {url} && curl -sk --http2 -o {body_arg}.2 {url}"
    );
    let run = Trace::start(
        &["openssl", "--keylog", &keylog_arg],
        &["sh", "-c", &script],
    )
    .wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    for copy in ["1", "2"] {
        assert_eq!(
            std::fs::read(format!("{body_arg}.{copy}")).expect("curl's body"),
            content
        );
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    // SAFETY: kill(2) on our own child, not reaped yet.
    unsafe { libc::kill(tcpdump.id() as i32, libc::SIGINT) };
    assert!(tcpdump.wait().expect("tcpdump").success());
    // A capture with holes would make a failure here tcpdump's, not probectl's.
    let said = tcpdump_said.join().expect("tcpdump's stderr").join("\n");
    let count = |what: &str| {
        said.lines()
            .find(|line| line.ends_with(what))
            .and_then(|line| line.split(' ').next()?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no \"{what}\" in {said}"))
    };
    // On loopback the filter sees each packet twice (sent, then received): tcpdump keeps one.
    // Not asserted: a packet the filter saw as tcpdump was told to stop may not be written
    // (seen once in a full run: 4 of 122 not written, at the end). The bodies' sha256 below
    // is the check; a hole only explains its failure.
    let capture_note = if count("packets dropped by kernel") == 0
        && 2 * count("packets captured") == count("packets received by filter")
    {
        String::new()
    } else {
        format!(" (tcpdump's capture may have holes: {said})")
    };
    let capture_arg = capture.display().to_string();
    let keys = format!("tls.keylog_file:{keylog_arg}");
    // HTTP/1.1: the first TLS stream, decrypted; what the server sent is the response.
    let followed = tshark(&[
        "-r",
        &capture_arg,
        "-o",
        &keys,
        "-q",
        "-z",
        "follow,tls,raw,0",
    ]);
    let response: Vec<u8> = followed
        .lines()
        .filter_map(|line| line.strip_prefix('\t'))
        .flat_map(hex_decode)
        .collect();
    let at = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head decrypted{capture_note}"));
    assert_eq!(
        sha256(&response[at + 4..]),
        sha256(&content),
        "HTTP/1.1 body{capture_note}"
    );
    // HTTP/2: the DATA frames of the second connection, decrypted and dissected.
    let frames = tshark(&[
        "-r",
        &capture_arg,
        "-o",
        &keys,
        "-Y",
        "http2.data.data && tcp.stream == 1",
        "-T",
        "fields",
        "-e",
        "http2.data.data",
    ]);
    // Each DATA frame's bytes, and with the last one the body tshark reassembled from them.
    let reassembled: Vec<String> = frames
        .lines()
        .flat_map(|line| line.split(','))
        .map(|hex| sha256(&hex_decode(hex)))
        .collect();
    assert!(
        reassembled.contains(&sha256(&content)),
        "no reassembled body is the file ({} values){capture_note}",
        reassembled.len()
    );
    // Without the key log, nothing is decrypted: the capture alone is no oracle.
    let plain = tshark(&[
        "-r",
        &capture_arg,
        "-Y",
        "http2 || http",
        "-T",
        "fields",
        "-e",
        "frame.number",
    ]);
    assert!(plain.trim().is_empty(), "{plain}");
}

/// The response bodies tshark reassembles from `capture` (decrypting with what `extra` gives
/// it): the HTTP/1.1 one of TLS stream 0, and every HTTP/2 DATA frame or reassembled body of
/// TCP stream 1, as sha256s.
fn bodies(capture: &str, extra: &[&str]) -> (String, Vec<String>) {
    let mut args = vec!["-r", capture];
    args.extend_from_slice(extra);
    let mut follow = args.clone();
    follow.extend_from_slice(&["-q", "-z", "follow,tls,raw,0"]);
    let response: Vec<u8> = tshark(&follow)
        .lines()
        .filter_map(|line| line.strip_prefix('\t'))
        .flat_map(hex_decode)
        .collect();
    let at = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or(response.len().saturating_sub(4));
    let http1 = sha256(response.get(at + 4..).unwrap_or_default());
    let mut fields = args.clone();
    fields.extend_from_slice(&[
        "-Y",
        "http2.data.data && tcp.stream == 1",
        "-T",
        "fields",
        "-e",
        "http2.data.data",
    ]);
    let http2 = tshark(&fields)
        .lines()
        .flat_map(|line| line.split(','))
        .map(|hex| sha256(&hex_decode(hex)))
        .collect();
    (http1, http2)
}

#[test]
fn the_packets_pcapng_decrypts_by_itself() {
    // --packets: the real packets of curl's two connections (HTTP/1.1, then HTTP/2), captured
    // on loopback with an AF_PACKET socket, each connection's secrets in a Decryption Secrets
    // Block. tshark is given that file alone.
    let name = "file.bin";
    let root = scratch_file("www");
    std::fs::create_dir_all(&root).expect("root");
    let content: Vec<u8> = (0..150_000u32)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8)
        .collect();
    std::fs::write(root.join(name), &content).expect("file");
    let port = free_port();
    let _nginx = nginx(&root, port);
    let packets = scratch_file("packets.pcapng");
    let packets_arg = packets.display().to_string();
    let url = format!("https://127.0.0.1:{port}/{name}");
    let body = scratch_file("body").display().to_string();
    let script =
        format!("curl -sk --http1.1 -o {body}.1 {url} && curl -sk --http2 -o {body}.2 {url}");
    let run = Trace::start(
        &["openssl", "--packets", &packets_arg],
        &["sh", "-c", &script],
    )
    .wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    for copy in ["1", "2"] {
        assert_eq!(
            std::fs::read(format!("{body}.{copy}")).expect("body"),
            content
        );
    }
    let mode = std::fs::metadata(&packets)
        .expect("pcapng")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let counts = &run.report["packets"];
    assert_eq!(counts["packets_dropped_by_socket"], 0, "{}", run.report);
    assert_eq!(counts["secrets_blocks"], 2, "{}", run.report);
    assert!(run.stderr.contains("probectl: packets: "), "{}", run.stderr);
    let (http1, http2) = bodies(&packets_arg, &[]);
    assert_eq!(http1, sha256(&content), "HTTP/1.1 body");
    assert!(http2.contains(&sha256(&content)), "HTTP/2 body");
    // Only the traced connections' packets: two TCP streams.
    let streams = tshark(&["-r", &packets_arg, "-T", "fields", "-e", "tcp.stream"]);
    let streams: BTreeSet<&str> = streams.lines().collect();
    assert_eq!(streams.len(), 2, "{streams:?}");
}

/// A network namespace with one end of a veth pair, the other end in probectl's namespace:
/// `local` (here) and `remote` (in the namespace) are the two ends' IPv4 addresses. Removed
/// when dropped.
struct VethNamespace {
    name: String,
    host_end: String,
}

impl VethNamespace {
    fn new() -> VethNamespace {
        // Unique per test process: two runs side by side do not meet.
        let id = std::process::id() % 50_000;
        let name = format!("probectl-t{id}");
        let host_end = format!("pct{id}a");
        let namespace_end = format!("pct{id}b");
        let namespace = VethNamespace {
            name: name.clone(),
            host_end: host_end.clone(),
        };
        let octet = 1 + id % 250;
        for command in [
            format!("ip netns add {name}"),
            format!("ip link add {host_end} type veth peer name {namespace_end}"),
            format!("ip link set {namespace_end} netns {name}"),
            format!("ip addr add 10.231.{octet}.1/24 dev {host_end}"),
            format!("ip link set {host_end} up"),
            format!("ip -n {name} addr add 10.231.{octet}.2/24 dev {namespace_end}"),
            format!("ip -n {name} link set {namespace_end} up"),
            format!("ip -n {name} link set lo up"),
        ] {
            let status = std::process::Command::new("sh")
                .args(["-c", &command])
                .status()
                .expect("ip");
            assert!(status.success(), "{command}");
        }
        namespace
    }

    fn addresses(&self) -> (String, String) {
        let octet = 1 + (std::process::id() % 50_000) % 250;
        (format!("10.231.{octet}.1"), format!("10.231.{octet}.2"))
    }
}

impl Drop for VethNamespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it the pair.
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_end])
            .status();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn the_packets_of_a_real_interface_decrypt_by_themselves() {
    // --packets on a veth pair (not loopback): nginx in its own network namespace, curl here;
    // probectl's capture socket sees the packets on the veth's end in its namespace. tshark,
    // given probectl's file alone, decrypts both bodies (HTTP/1.1 and HTTP/2), equal to the
    // served file.
    let namespace = VethNamespace::new();
    let (local, remote) = namespace.addresses();
    let name = "file.bin";
    let root = scratch_file("www-veth");
    std::fs::create_dir_all(&root).expect("root");
    let content: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(root.join(name), &content).expect("file");
    let port = free_port();
    let _nginx = nginx_in(&root, &remote, port, Some(&namespace.name));
    let packets = scratch_file("veth.pcapng");
    let packets_arg = packets.display().to_string();
    let url = format!("https://{remote}:{port}/{name}");
    let body = scratch_file("veth-body").display().to_string();
    let script =
        format!("curl -sk --http1.1 -o {body}.1 {url} && curl -sk --http2 -o {body}.2 {url}");
    let run = Trace::start(
        &["openssl", "--packets", &packets_arg],
        &["sh", "-c", &script],
    )
    .wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    for copy in ["1", "2"] {
        assert_eq!(
            std::fs::read(format!("{body}.{copy}")).expect("body"),
            content
        );
    }
    let counts = &run.report["packets"];
    assert_eq!(counts["packets_dropped_by_socket"], 0, "{}", run.report);
    assert_eq!(counts["secrets_blocks"], 2, "{}", run.report);
    let (http1, http2) = bodies(&packets_arg, &[]);
    assert_eq!(http1, sha256(&content), "HTTP/1.1 body");
    assert!(http2.contains(&sha256(&content)), "HTTP/2 body");
    // The packets are the veth's, between the two ends' addresses, each seen once.
    let hosts = tshark(&[
        "-r",
        &packets_arg,
        "-T",
        "fields",
        "-e",
        "ip.src",
        "-e",
        "ip.dst",
    ]);
    let hosts: BTreeSet<&str> = hosts.lines().collect();
    let wanted: BTreeSet<String> = [format!("{local}\t{remote}"), format!("{remote}\t{local}")]
        .into_iter()
        .collect();
    assert_eq!(
        hosts
            .iter()
            .map(|line| line.to_string())
            .collect::<BTreeSet<_>>(),
        wanted
    );
    // Each packet once (a capture that kept both the sending and the receiving copy would
    // show the same IP id, sequence and acknowledgement twice).
    let packets = tshark(&[
        "-r",
        &packets_arg,
        "-T",
        "fields",
        "-e",
        "ip.src",
        "-e",
        "ip.id",
        "-e",
        "tcp.seq_raw",
        "-e",
        "tcp.ack_raw",
        "-e",
        "tcp.flags",
        "-e",
        "tcp.len",
    ]);
    let all: Vec<&str> = packets.lines().collect();
    let distinct: BTreeSet<&str> = all.iter().copied().collect();
    assert!(all.len() > 20, "{packets}");
    assert_eq!(all.len(), distinct.len(), "packets twice: {packets}");
}

#[test]
fn bun_packets_decrypt_by_themselves() {
    // --packets with Bun's stripped BoringSSL: its secrets' client random comes from its
    // ClientHello, and names its connection's packets. tshark, given probectl's file alone,
    // decrypts the body nginx served (sha256).
    let bun = common::npm_peer("bun");
    let name = "bun.bin";
    let root = scratch_file("www-bun");
    std::fs::create_dir_all(&root).expect("root");
    let content: Vec<u8> = (0..120_000u32)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 9) as u8)
        .collect();
    std::fs::write(root.join(name), &content).expect("file");
    let port = free_port();
    let _nginx = nginx(&root, port);
    let packets = scratch_file("bun.pcapng");
    let packets_arg = packets.display().to_string();
    let script = format!(
        "const r = await fetch('https://127.0.0.1:{port}/{name}'); \
         const body = new Uint8Array(await r.arrayBuffer()); \
         if (body.length !== {}) process.exit(3);",
        content.len()
    );
    let cache = common::cache_dir();
    let run = Trace::start_with_env(
        &["boringssl", "--packets", &packets_arg],
        &[bun.to_str().expect("path"), "-e", &script],
        &[
            ("PROBECTL_CACHE_DIR", cache.as_os_str()),
            ("NODE_TLS_REJECT_UNAUTHORIZED", std::ffi::OsStr::new("0")),
        ],
    )
    .wait_lines();
    assert!(run.status.success(), "{}", run.stderr);
    let counts = &run.report["packets"];
    assert_eq!(counts["secrets_blocks"], 1, "{}", run.report);
    let (http1, _) = bodies(&packets_arg, &[]);
    assert_eq!(http1, sha256(&content), "the body, from the pcapng alone");
}
