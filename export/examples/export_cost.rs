//! The exporter's cost, without BPF (`scripts/bench --only export`): decoded HTTP exchanges are
//! handed to the exporter's sink as the pipeline would, at a paced rate, and sent over
//! OTLP/HTTP to a receiver that answers every request at once without decoding it (a child
//! process: its CPU is not counted). Prints a Markdown table: exchanges/s exported, the CPU
//! (user + system) probectl's side spent per 10,000 exchanges, and, with no receiver at all,
//! the peak RSS against the queue's bound. With `PROBECTL_COLLECTOR=PATH` (a Collector built by
//! scripts/setup), the same rates also go to a real OpenTelemetry Collector that decodes every
//! request (OTLP receiver, batch processor, debug exporter at basic verbosity), and its CPU is
//! reported too.
//!
//!   cargo run --release -p probectl-export --example export_cost [SECONDS] [DOWN_SECONDS]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use probectl_export::{ExportOptions, Exporter, QUEUE_SPANS};
use probectl_pipeline::decode::http::{Body, Connection, Exchange, Origin, Part, Version};

/// Answers OTLP/HTTP requests (200, an empty ExportTraceServiceResponse) until killed.
fn receiver(listener: TcpListener) {
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            loop {
                let mut length = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(value) = lower.strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
                if reader.get_mut().write_all(reply).is_err() {
                    return;
                }
            }
        });
    }
}

fn exchange(n: u64) -> Exchange {
    let origin = Origin {
        pid: 4242,
        tid: 4242,
        comm: "curl".into(),
        plugin: "openssl".into(),
        conn: Connection {
            id: n / 10,
            handle: 0x1000,
            fd: Some(5),
            transport: Some("tcp".into()),
            local: Some("10.0.0.1:40000".into()),
            remote: Some("10.0.0.2:443".into()),
        },
        process: None,
    };
    let mut exchange = Exchange::new(Version::Http11, origin);
    exchange.method = Some("GET".into());
    exchange.path = Some(format!("/api/items/{n}?page=2"));
    exchange.authority = Some("api.example.com".into());
    exchange.status = Some(200);
    let part = |first_ns: u64, len: u64| {
        let mut body = Body::default();
        body.len = len;
        Part {
            headers: Vec::new(),
            body,
            trailers: Vec::new(),
            first_ns,
            last_ns: first_ns + 1000,
            complete: true,
        }
    };
    let ts = 1_800_000_000_000_000_000 + n * 1000;
    exchange.request = Some(part(ts, 0));
    exchange.response = Some(part(ts + 500_000, 1234));
    exchange
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let time = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// A process's CPU (user + system) in seconds, from `/proc/PID/stat`.
fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) close with ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// The same rates through a real Collector (`PROBECTL_COLLECTOR`), as a second table.
fn through_collector(binary: &str, seconds: f64) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = std::env::temp_dir().join(format!("probectl-bench-otelcol-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("config dir");
    let config = dir.join("otelcol.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}
processors:
  batch: {{}}
exporters:
  debug:
    verbosity: basic
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug]
"
        ),
    )
    .expect("config");
    let mut collector = Command::new(binary)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the Collector");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the Collector did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("otlp=http://127.0.0.1:{port}");
    println!();
    println!("To the real Collector ({binary}):");
    println!();
    println!("| offered (exchanges/s) | seconds | offered | delivered | dropped | exported/s | CPU s per 10,000 | Collector CPU s per 10,000 |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for rate in [20_000u64, 40_000] {
        let before = cpu_seconds_of(collector.id());
        let r = run(&url, rate, seconds);
        let collector_cpu = cpu_seconds_of(collector.id()) - before;
        println!(
            "| {rate} | {:.1} | {} | {} | {} | {:.0} | {:.3} | {:.3} |",
            r.seconds,
            r.offered,
            r.delivered,
            r.dropped,
            r.delivered as f64 / r.seconds,
            r.cpu / (r.offered as f64 / 10_000.0),
            collector_cpu / (r.offered as f64 / 10_000.0),
        );
    }
    // SAFETY: kill(2) on our own child, not reaped yet.
    unsafe { libc::kill(collector.id() as i32, libc::SIGTERM) };
    let _ = collector.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Run {
    offered: u64,
    delivered: u64,
    dropped: u64,
    seconds: f64,
    cpu: f64,
}

/// Offers `rate` exchanges a second for `seconds` to an exporter sending to `url`.
fn run(url: &str, rate: u64, seconds: f64) -> Run {
    let options = ExportOptions::parse(url).expect("options");
    let mut exporter = Exporter::start(&options).expect("exporter");
    let mut sink = exporter.sink().expect("sink");
    let cpu = cpu_seconds();
    let started = Instant::now();
    let total = (rate as f64 * seconds) as u64;
    for n in 0..total {
        // Paced: exchange n is offered at n / rate seconds.
        let due = Duration::from_secs_f64(n as f64 / rate as f64);
        let elapsed = started.elapsed();
        if due > elapsed + Duration::from_millis(1) {
            std::thread::sleep(due - elapsed);
        }
        sink.exchange(&exchange(n), Some(true));
    }
    drop(sink);
    let counts = exporter.finish(Duration::from_secs(30));
    // Functional, not a timing: every exchange is delivered or dropped by a cause.
    let accounted = counts.delivered
        + counts.dropped_queue_full
        + counts.dropped_export_failed
        + counts.dropped_at_exit;
    if accounted != counts.offered {
        eprintln!(
            "export_cost: {} offered, {accounted} accounted for",
            counts.offered
        );
        std::process::exit(1);
    }
    Run {
        offered: counts.offered,
        delivered: counts.delivered,
        dropped: counts.dropped_queue_full + counts.dropped_export_failed + counts.dropped_at_exit,
        seconds: started.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - cpu,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    if first.as_deref() == Some("--receiver") {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        println!("{}", listener.local_addr().expect("addr").port());
        receiver(listener);
        return;
    }
    let seconds: f64 = first.and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let down_seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(30.0);
    let mut child = Command::new(std::env::current_exe().expect("self"))
        .arg("--receiver")
        .stdout(Stdio::piped())
        .spawn()
        .expect("receiver");
    let mut port = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut port)
        .expect("port");
    let url = format!("otlp=http://127.0.0.1:{}", port.trim());
    println!("| offered (exchanges/s) | seconds | offered | delivered | dropped | exported/s | CPU s per 10,000 |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for rate in [20_000u64, 40_000] {
        let r = run(&url, rate, seconds);
        println!(
            "| {rate} | {:.1} | {} | {} | {} | {:.0} | {:.3} |",
            r.seconds,
            r.offered,
            r.delivered,
            r.dropped,
            r.delivered as f64 / r.seconds,
            r.cpu / (r.offered as f64 / 10_000.0),
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    if let Ok(binary) = std::env::var("PROBECTL_COLLECTOR") {
        through_collector(&binary, seconds);
    }
    // The receiver down: a port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!(
        "otlp=http://127.0.0.1:{}",
        closed.local_addr().expect("addr").port()
    );
    drop(closed);
    let rss_before = status_kib("VmRSS");
    let r = run(&dead, 20_000, down_seconds);
    println!();
    println!(
        "Receiver down for {:.0} s at 20,000 exchanges/s: {} offered, {} delivered, {} dropped (counted); \
         RSS {} KiB before, peak {} KiB (queue bound {} spans).",
        r.seconds,
        r.offered,
        r.delivered,
        r.dropped,
        rss_before,
        status_kib("VmHWM"),
        QUEUE_SPANS
    );
}
