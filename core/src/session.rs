//! A tracing session: specs -> plan -> load and attach -> event loop -> summary.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};

use crate::bpf::{Attached, BpfError, KernelStats, LoadOptions, Tracer};
use crate::connections::{Connection, ConnectionTable, StreamRun};
use crate::discovery::{self, DiscoveryError};
use crate::events::{Call, Reassembler};
use crate::output::{
    open_output, AttachInfo, ConnectionView, Event, Format, OutputError, Renderer,
};
use crate::plan::{plan, Plan, PlanError, Scope};
use crate::spec::{Group, SpecError, SpecFile};
use crate::symbols::SymbolCache;
use probectl_common::{read_record, record_kind, CloseRecord, ConnectionRecord, ExecRecord};

/// Connections the summary lists one by one (those with losses are always listed).
const SUMMARY_CONNECTIONS: usize = 20;

/// When a process that started a program is looked at for new TLS code.
const RESCAN_DELAYS: [std::time::Duration; 2] = [
    std::time::Duration::from_millis(100),
    std::time::Duration::from_secs(1),
];

/// Attaches the files of `pid` that no traced process had (a program started after probectl,
/// e.g. a statically linked one). A process with nothing to trace is no error.
fn attach_new_files(
    groups: &[&Group],
    pid: u32,
    cache: &mut SymbolCache,
    tracer: &mut Tracer,
    sink: &mut Sink,
) -> Result<(), RunError> {
    let Ok(plan) = plan(groups, &Scope::Process(pid), cache) else {
        return Ok(());
    };
    let attached = tracer.attach(&plan)?;
    if attached.files.is_empty() {
        return Ok(());
    }
    debug_assert_eq!(attached.first_id as usize, sink.attach.len());
    report_plan(&plan, &attached, &format!(" (new in pid {pid})"), false);
    sink.summary.late_attach_failures += attached.failures.len();
    sink.attach.extend(attach_infos(&plan, &attached));
    Ok(())
}

/// How often the event loop drains the ring buffer when no wakeup came.
const DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// Largest `--max-bytes`.
pub const MAX_CAPTURE_LIMIT: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("unknown plugin \"{name}\"; known plugins: {known}")]
    UnknownPlugin { name: String, known: String },
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("cannot run {command}: {message}")]
    Spawn { command: String, message: String },
    #[error("no probe could be attached: {0}")]
    NothingAttached(String),
    #[error("invalid option: {0}")]
    Option(String),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Who to trace.
#[derive(Debug, Clone)]
pub enum Target {
    Pid(u32),
    Command(Vec<OsString>),
    AllProcesses,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Group names from the specs, or `all`.
    pub plugin: String,
    pub target: Target,
    pub specs: Option<PathBuf>,
    pub format: Format,
    pub output: Option<PathBuf>,
    pub max_capture_bytes: u64,
    pub ring_bytes: u32,
}

/// What a finished session reports.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub events: u64,
    pub bytes_captured: u64,
    /// Bytes over the per-call capture limit.
    pub bytes_truncated: u64,
    pub kernel: KernelStats,
    /// Ring buffer records of a kind this version does not know.
    pub unknown_records: u64,
    /// Every connection seen, with its byte counts and gaps.
    pub connections: Vec<Connection>,
    /// Events that arrived behind their stream's position.
    pub out_of_order: u64,
    pub probes_attached: usize,
    pub attach_failures: usize,
    /// Attach points of programs started during the run that failed to attach.
    pub late_attach_failures: usize,
    /// The exit status of the command probectl started, if any.
    pub command_status: Option<ExitStatus>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "probectl: {} events, {} bytes captured, {} bytes truncated (over --max-bytes), \
             {} events lost ({} bytes), {} probes attached, {} failed to attach",
            self.events,
            self.bytes_captured,
            self.bytes_truncated,
            self.kernel.chunks_lost,
            self.kernel.bytes_lost,
            self.probes_attached,
            self.attach_failures,
        )?;
        if self.kernel.read_faults > 0 || self.kernel.length_faults > 0 {
            write!(
                f,
                ", {} unreadable buffers, {} unreadable lengths",
                self.kernel.read_faults, self.kernel.length_faults
            )?;
        }
        let closed = self.connections.iter().filter(|c| c.closed).count();
        write!(
            f,
            "\nprobectl: {} connections ({closed} closed), {} calls without a known fd, {} calls on two fds",
            self.connections.len(),
            self.kernel.fd_unknown,
            self.kernel.fd_mismatches,
        )?;
        if self.kernel.records_lost > 0 {
            write!(f, ", {} connection records lost", self.kernel.records_lost)?;
        }
        if self.kernel.nesting_overflows > 0 {
            write!(
                f,
                ", {} calls not traced (nested too deep)",
                self.kernel.nesting_overflows
            )?;
        }
        if self.out_of_order > 0 {
            write!(f, ", {} events out of order", self.out_of_order)?;
        }
        if self.unknown_records > 0 {
            write!(f, ", {} unknown records", self.unknown_records)?;
        }
        // Every connection with a loss, and the first few of the others: one record each.
        let mut listed = 0;
        for connection in &self.connections {
            let lossy = connection.gaps != [0, 0];
            if !lossy && listed >= SUMMARY_CONNECTIONS {
                continue;
            }
            listed += 1;
            write!(
                f,
                "\nprobectl: conn#{} {} (pid {}): {} bytes written, {} read",
                connection.id,
                connection.describe(),
                connection.pid,
                connection.moved[0],
                connection.moved[1],
            )?;
            if lossy {
                write!(
                    f,
                    ", lost {} bytes written, {} bytes read",
                    connection.gaps[0], connection.gaps[1]
                )?;
            }
            write!(
                f,
                "{}",
                if connection.closed {
                    ", closed"
                } else {
                    ", open"
                }
            )?;
        }
        if listed < self.connections.len() {
            write!(
                f,
                "\nprobectl: ... and {} more connections",
                self.connections.len() - listed
            )?;
        }
        Ok(())
    }
}

/// Resolves the plugin name to groups: one, or every group for `all`.
pub fn select_groups<'a>(specs: &'a SpecFile, name: &str) -> Result<Vec<&'a Group>, RunError> {
    if name == "all" {
        return Ok(specs.groups.iter().collect());
    }
    specs
        .group(name)
        .map(|group| vec![group])
        .ok_or_else(|| RunError::UnknownPlugin {
            name: name.to_string(),
            known: {
                let mut names = specs.group_names();
                names.push("all");
                names.join(", ")
            },
        })
}

/// Finds `program` the way a shell would (a name without '/' is looked up in PATH).
fn find_executable(program: &OsString) -> Option<PathBuf> {
    let path = Path::new(program);
    if path.components().count() > 1 {
        return path.is_file().then(|| path.to_path_buf());
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&search)
        .map(|directory| directory.join(path))
        .find(|candidate| candidate.is_file())
}

/// What output needs about the attach points `attached` gave ids to, in attach-id order.
fn attach_infos<'a>(
    plan: &'a Plan,
    attached: &'a Attached,
) -> impl Iterator<Item = AttachInfo> + 'a {
    attached.probes.iter().map(|&index| {
        let probe = &plan.probes[index];
        let file = plan.file_of(probe);
        AttachInfo {
            plugin: file.group.clone(),
            library: file.file.path.clone(),
            function: probe.probe.symbol.clone(),
            direction: probe.probe.direction,
        }
    })
}

/// Says which files were attached (with `note`, e.g. "for pid 12"), what was skipped and why,
/// and what failed.
fn report_plan(plan: &Plan, attached: &Attached, note: &str, report_skips: bool) {
    let failures = &attached.failures;
    for file in attached.files.iter().map(|&index| &plan.files[index]) {
        let count = plan
            .probes
            .iter()
            .filter(|probe| std::ptr::eq(plan.file_of(probe), file))
            .count();
        let version = file
            .version
            .as_deref()
            .map(|v| format!(" ({v})"))
            .unwrap_or_default();
        eprintln!(
            "probectl: [{}] {}{version}: {count} probes{note}",
            file.group,
            file.file.path.display()
        );
    }
    for skip in plan.skipped.iter().filter(|_| report_skips) {
        match &skip.symbol {
            Some(symbol) => eprintln!(
                "probectl: [{}] skipped {symbol} in {}: {}",
                skip.group,
                skip.path.display(),
                skip.reason
            ),
            None => eprintln!(
                "probectl: [{}] skipped {}: {}",
                skip.group,
                skip.path.display(),
                skip.reason
            ),
        }
    }
    for failure in failures {
        eprintln!(
            "probectl: FAILED to attach {} in {}: {}",
            failure.symbol,
            failure.path.display(),
            failure.message
        );
    }
}

/// A child started by probectl, held before `exec` until the probes are in place, so that it
/// is traced from its first TLS byte.
struct HeldChild {
    pid: u32,
    release: std::fs::File,
    status: tokio::sync::oneshot::Receiver<std::io::Result<ExitStatus>>,
}

fn pipe() -> std::io::Result<(std::fs::File, std::fs::File)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both fds are open and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((read.into(), write.into()))
}

fn spawn_held(argv: &[OsString]) -> Result<HeldChild, RunError> {
    let io = |context| move |source| RunError::Io { context, source };
    let (mut pid_read, pid_write) = pipe().map_err(io("creating a pipe"))?;
    let (release_read, release) = pipe().map_err(io("creating a pipe"))?;
    let mut command = std::process::Command::new(&argv[0]);
    command.args(&argv[1..]);
    let (pid_fd, release_fd) = (pid_write.as_raw_fd(), release_read.as_raw_fd());
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // calls (getpid, write, read) on fds that stay open in the child until exec (CLOEXEC).
    unsafe {
        command.pre_exec(move || {
            let pid = libc::getpid().to_ne_bytes();
            libc::write(pid_fd, pid.as_ptr().cast(), pid.len());
            let mut byte = 0u8;
            // Wait for the parent to attach the probes (or to die: EOF also releases us).
            libc::read(release_fd, (&raw mut byte).cast(), 1);
            Ok(())
        });
    }
    let (status_tx, status) = tokio::sync::oneshot::channel();
    let (spawned_tx, spawned) = std::sync::mpsc::channel();
    // spawn() returns only after exec, which waits for our release: run it on its own thread.
    // The child's ends stay open here until spawn() is done: the pre_exec closure uses them by
    // number in the forked child.
    std::thread::spawn(move || {
        let child = command.spawn();
        drop((pid_write, release_read));
        let waited = match child {
            Ok(mut child) => {
                let _ = spawned_tx.send(Ok(()));
                child.wait()
            }
            Err(error) => {
                let _ = spawned_tx.send(Err(error));
                return;
            }
        };
        let _ = status_tx.send(waited);
    });
    let mut pid_bytes = [0u8; 4];
    let command_name = argv[0].to_string_lossy().into_owned();
    if pid_read.read_exact(&mut pid_bytes).is_err() {
        // The child never reached pre_exec: spawn failed before fork or in it.
        let message = match spawned.recv() {
            Ok(Err(error)) => error.to_string(),
            _ => "the child did not start".to_string(),
        };
        return Err(RunError::Spawn {
            command: command_name,
            message,
        });
    }
    Ok(HeldChild {
        pid: u32::from_ne_bytes(pid_bytes),
        release,
        status,
    })
}

/// A pidfd: becomes readable when the process exits.
fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; a non-negative result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly opened descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Awaits an optional future; `None` never completes (the select! arm is disabled then).
async fn wait_some<F: std::future::Future>(future: Option<F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// Registers an owned descriptor with the runtime, for readiness.
fn watch_readable<T: AsRawFd>(inner: T, context: &'static str) -> Result<AsyncFd<T>, RunError> {
    // SAFETY: `inner` owns its descriptor (a ring buffer map or a pidfd) and keeps it open,
    // unchanged, for as long as the AsyncFd that takes ownership of it lives.
    unsafe { AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE) }.map_err(
        |error| RunError::Io {
            context,
            source: std::io::Error::other(error.to_string()),
        },
    )
}

/// Offset from CLOCK_MONOTONIC (what BPF timestamps use) to wall-clock time.
fn monotonic_to_realtime_ns() -> u64 {
    let now = |clock| {
        let mut time = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: time is a valid timespec for clock_gettime to fill.
        unsafe { libc::clock_gettime(clock, &mut time) };
        time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64
    };
    now(libc::CLOCK_REALTIME).saturating_sub(now(libc::CLOCK_MONOTONIC))
}

/// Turns calls into events and writes them; counts what it wrote.
struct Sink {
    attach: Vec<AttachInfo>,
    renderer: Renderer,
    out: Box<dyn Write + Send>,
    clock_offset: u64,
    max_capture_bytes: u64,
    summary: Summary,
    connections: ConnectionTable,
    /// Processes that started a new program since the last look (EXEC records).
    execs: Vec<u32>,
    write_error: Option<std::io::Error>,
}

impl Sink {
    /// Dispatches one ring buffer record.
    fn record(&mut self, reassembler: &mut Reassembler, record: &[u8]) {
        // SAFETY: every record starts with its u32 kind.
        match unsafe { read_record::<u32>(record) } {
            Some(record_kind::CHUNK) => reassembler.push(record, &mut |call| self.emit(call)),
            Some(record_kind::CONNECTION) => {
                // SAFETY: ConnectionRecord is repr(C) integers only.
                if let Some(connection) = unsafe { read_record::<ConnectionRecord>(record) } {
                    self.connections.on_connection(&connection);
                }
            }
            Some(record_kind::EXEC) => {
                // SAFETY: ExecRecord is repr(C) integers only.
                if let Some(exec) = unsafe { read_record::<ExecRecord>(record) } {
                    self.execs.push(exec.pid);
                }
            }
            Some(record_kind::CLOSE) => {
                // SAFETY: CloseRecord is repr(C) integers only.
                if let Some(close) = unsafe { read_record::<CloseRecord>(record) } {
                    self.connections.on_close(&close);
                }
            }
            _ => self.summary.unknown_records += 1,
        }
    }

    fn emit(&mut self, call: Call<'_>) {
        let header = call.header;
        let Some(attach) = self.attach.get(header.attach_id as usize) else {
            return;
        };
        let comm_len = header
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(header.comm.len());
        let comm = std::str::from_utf8(&header.comm[..comm_len]).unwrap_or("?");
        let missing = call.missing();
        // Bytes over the capture limit are counted once, by the run that ends the call.
        let over_limit = if call.start + call.span == header.call_len {
            header
                .call_len
                .saturating_sub(self.max_capture_bytes.max(call.start))
        } else {
            0
        };
        self.summary.events += 1;
        self.summary.bytes_captured += call.data.len() as u64;
        self.summary.bytes_truncated += over_limit;
        let placement = self.connections.place(&StreamRun {
            pid: header.pid,
            handle: header.connection,
            fd: header.fd,
            direction: attach.direction,
            offset: header.stream_offset + call.start,
            span: call.span,
            captured: call.data.len() as u64,
        });
        let conn = match self.connections.get(placement.id) {
            Some(connection) => ConnectionView {
                id: connection.id,
                handle: connection.handle,
                fd: connection.fd,
                transport: connection.transport,
                local: connection.local.as_deref(),
                remote: connection.remote.as_deref(),
                offset: placement.offset,
            },
            None => ConnectionView {
                id: placement.id,
                handle: header.connection,
                offset: placement.offset,
                ..ConnectionView::default()
            },
        };
        let event = Event {
            ts_ns: header.call_end_ns + self.clock_offset,
            pid: header.pid,
            tid: header.tid,
            comm,
            attach,
            conn,
            len: call.span,
            data: call.data,
            truncated: missing,
        };
        if self.write_error.is_none() {
            if let Err(error) = self.renderer.render(&event, &mut self.out) {
                self.write_error = Some(error);
            }
        }
    }
}

/// Runs a whole session; returns its summary (also printed on stderr).
pub async fn run(options: RunOptions) -> Result<Summary, RunError> {
    if options.max_capture_bytes == 0 || options.max_capture_bytes > MAX_CAPTURE_LIMIT {
        return Err(RunError::Option(format!(
            "--max-bytes must be between 1 and {MAX_CAPTURE_LIMIT}"
        )));
    }
    if !options.ring_bytes.is_power_of_two() || options.ring_bytes < 4096 {
        return Err(RunError::Option(
            "--ring-bytes must be a power of two of at least 4096".into(),
        ));
    }
    let specs = SpecFile::load(options.specs.as_deref())?;
    let groups = select_groups(&specs, &options.plugin)?;
    crate::bpf::check_privileges()?;

    let scope = match &options.target {
        Target::Pid(pid) => {
            if !discovery::process_exists(*pid) {
                return Err(DiscoveryError::NoSuchProcess { pid: *pid }.into());
            }
            Scope::Process(*pid)
        }
        Target::AllProcesses => Scope::Host,
        Target::Command(argv) => {
            let program = argv
                .first()
                .ok_or_else(|| RunError::Option("no command after --".into()))?;
            let executable = find_executable(program).ok_or_else(|| RunError::Spawn {
                command: program.to_string_lossy().into_owned(),
                message: "not found (no such file, or not in PATH)".into(),
            })?;
            Scope::Command { executable }
        }
    };
    let mut cache = SymbolCache::default();
    let plan = plan(&groups, &scope, &mut cache)?;
    let out = open_output(options.output.as_deref())?;

    let mut tracer = Tracer::load(&LoadOptions {
        max_capture_bytes: options.max_capture_bytes,
        ring_bytes: options.ring_bytes,
        filter_by_pid: !matches!(options.target, Target::AllProcesses),
    })?;
    let mut held = None;
    let mut watched_pid = None;
    match &options.target {
        Target::Pid(pid) => {
            tracer.trace_pid(*pid)?;
            watched_pid = Some(*pid);
        }
        Target::Command(argv) => {
            let child = spawn_held(argv)?;
            tracer.trace_pid(child.pid)?;
            held = Some(child);
        }
        Target::AllProcesses => {}
    }
    let attached = tracer.attach(&plan)?;
    report_plan(&plan, &attached, "", true);
    let failures = attached.failures.clone();
    for problem in &tracer.attribution_problems {
        eprintln!("probectl: connection attribution degraded: {problem}");
    }
    if tracer.attached() == 0 {
        let reasons: Vec<String> = failures
            .iter()
            .map(|f| format!("{} in {}: {}", f.symbol, f.path.display(), f.message))
            .collect();
        return Err(RunError::NothingAttached(reasons.join("; ")));
    }
    let who = match &options.target {
        Target::Pid(pid) => format!("pid {pid} ({})", discovery::comm(*pid)),
        Target::Command(argv) => format!(
            "command {} (pid {})",
            argv[0].to_string_lossy(),
            held.as_ref().map_or(0, |child| child.pid)
        ),
        Target::AllProcesses => "all processes".to_string(),
    };
    eprintln!(
        "probectl: tracing {} in {who}: {} probes attached{}; Ctrl-C to stop",
        groups
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        tracer.attached(),
        if failures.is_empty() {
            String::new()
        } else {
            format!(", {} FAILED", failures.len())
        },
    );

    let mut sink = Sink {
        attach: attach_infos(&plan, &attached).collect(),
        execs: Vec::new(),
        renderer: Renderer::new(options.format),
        out,
        clock_offset: monotonic_to_realtime_ns(),
        max_capture_bytes: options.max_capture_bytes,
        summary: Summary::default(),
        connections: ConnectionTable::default(),
        write_error: None,
    };
    let ring = tracer
        .take_events()
        .ok_or(BpfError::Load("ring buffer already taken".into()))?;
    let mut ring = watch_readable(ring, "polling the ring buffer")?;
    let mut reassembler = Reassembler::default();

    let mut command_status = None;
    let mut child_status = match held {
        Some(mut child) => {
            // The probes are in place: let the command exec.
            let _ = child.release.write_all(&[1]);
            Some(child.status)
        }
        None => None,
    };
    let pidfd = match watched_pid {
        Some(pid) => {
            let context = "watching the traced process";
            let pidfd = pidfd_open(pid).map_err(|source| RunError::Io { context, source })?;
            Some(watch_readable(pidfd, context)?)
        }
        None => None,
    };
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|source| RunError::Io {
        context: "installing signal handlers",
        source,
    })?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|source| RunError::Io {
        context: "installing signal handlers",
        source,
    })?;

    // Records are submitted without waking us until the ring fills up (see ebpf/src/main.rs):
    // drain it on a short timer too, which bounds how late a quiet trace shows its events.
    let mut drain_timer = tokio::time::interval(DRAIN_INTERVAL);
    drain_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Processes that started a program are looked at again a little later (once the dynamic
    // loader has mapped their libraries) and once more after a second (for late loads).
    let mut rescans: Vec<(std::time::Instant, u32)> = Vec::new();
    loop {
        tokio::select! {
            _ = drain_timer.tick() => {
                drain(ring.get_mut(), &mut reassembler, &mut sink);
                let now = std::time::Instant::now();
                for pid in sink.execs.drain(..) {
                    rescans.push((now + RESCAN_DELAYS[0], pid));
                    rescans.push((now + RESCAN_DELAYS[1], pid));
                }
                let (due, later): (Vec<_>, Vec<_>) = rescans.iter().partition(|(when, _)| *when <= now);
                rescans = later;
                for (_, pid) in due {
                    attach_new_files(&groups, pid, &mut cache, &mut tracer, &mut sink)?;
                }
                if let Err(error) = sink.out.flush() {
                    sink.write_error.get_or_insert(error);
                }
                if sink.write_error.is_some() {
                    break;
                }
            }
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(|source| RunError::Io { context: "polling the ring buffer", source })?;
                drain(guard.get_inner_mut(), &mut reassembler, &mut sink);
                guard.clear_ready();
                if let Err(error) = sink.out.flush() {
                    sink.write_error.get_or_insert(error);
                }
                if sink.write_error.is_some() {
                    break;
                }
            }
            status = wait_some(child_status.as_mut()), if child_status.is_some() => {
                command_status = status.ok().and_then(Result::ok);
                break;
            }
            _ = wait_some(pidfd.as_ref().map(|pidfd| pidfd.readable())), if pidfd.is_some() => {
                eprintln!("probectl: traced process {} exited", watched_pid.unwrap_or(0));
                break;
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
    // Whatever the kernel wrote before we stopped is still delivered.
    drain(ring.get_mut(), &mut reassembler, &mut sink);
    reassembler.flush(&mut |call| sink.emit(call));
    let flushed = sink.out.flush();
    let mut summary = sink.summary.clone();
    summary.kernel = tracer.kernel_stats();
    summary.out_of_order = sink.connections.out_of_order;
    summary.connections = sink.connections.all().into_iter().cloned().collect();
    summary.probes_attached = tracer.attached();
    summary.attach_failures = failures.len() + summary.late_attach_failures;
    summary.command_status = command_status;
    // The summary first: detaching takes the kernel about 100 ms per probe.
    eprintln!("{summary}");
    drop(ring);
    drop(tracer);
    if let Some(error) = sink.write_error.take().or(flushed.err()) {
        if error.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(RunError::Io {
                context: "writing output",
                source: error,
            });
        }
    }
    Ok(summary)
}

fn drain(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    reassembler: &mut Reassembler,
    sink: &mut Sink,
) {
    while let Some(record) = ring.next() {
        sink.record(reassembler, &record);
    }
}
