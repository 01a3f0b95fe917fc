//! A tracing session: specs -> plan -> load and attach -> event loop -> summary.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};

use crate::bpf::{Attached, BpfError, LoadOptions, Tracer};
use crate::connections::{ConnectionTable, StreamRun};
use crate::discovery::{self, DiscoveryError};
use crate::events::{Call, Reassembler};
use crate::output::{
    open_output, AttachInfo, ConnectionView, Event, EventWriter, Format, OutputError, Renderer,
};
use crate::placement::{Placement, PlacementMode};
use crate::plan::{plan, Plan, PlanError, Scope};
use crate::process::{find_executable, pidfd_open, spawn_held, ChildStatus, ProcessError};
use crate::spec::{Group, SpecError, SpecFile};
pub use crate::summary::Summary;
use crate::symbols::SymbolCache;
use probectl_common::{read_record, record_kind, CloseRecord, ConnectionRecord, ExecRecord};

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
    #[error(transparent)]
    Process(#[from] ProcessError),
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
    /// Where the uprobes go (`--placement`).
    pub placement: PlacementMode,
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
        let probes: Vec<_> = plan
            .probes
            .iter()
            .filter(|probe| std::ptr::eq(plan.file_of(probe), file))
            .collect();
        let emulated = probes
            .iter()
            .filter(|probe| matches!(probe.placement, Placement::Emulated { .. }))
            .count();
        let count = probes.len();
        let version = file
            .version
            .as_deref()
            .map(|v| format!(" ({v})"))
            .unwrap_or_default();
        eprintln!(
            "probectl: [{}] {}{version}: {count} probes{note} ({emulated} emulated)",
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
    writer: Box<dyn EventWriter>,
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
                    if let Some(id) = self.connections.on_close(&close) {
                        self.closed(id, close.ts_ns);
                    }
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
            if let Err(error) = self.writer.event(&event, &mut self.out) {
                self.write_error = Some(error);
            }
        }
    }

    /// Tells the writer that connection `id` ended.
    fn closed(&mut self, id: u64, ts_ns: u64) {
        let Some(connection) = self.connections.get(id) else {
            return;
        };
        let view = ConnectionView {
            id: connection.id,
            handle: connection.handle,
            fd: connection.fd,
            transport: connection.transport,
            local: connection.local.as_deref(),
            remote: connection.remote.as_deref(),
            offset: 0,
        };
        if self.write_error.is_none() {
            if let Err(error) =
                self.writer
                    .connection_closed(&view, ts_ns + self.clock_offset, &mut self.out)
            {
                self.write_error = Some(error);
            }
        }
    }
}

/// Checks the options that the command line parser cannot.
fn check_options(options: &RunOptions) -> Result<(), RunError> {
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
    Ok(())
}

/// Where to look for files to probe, for a target.
fn scope_for(target: &Target) -> Result<Scope, RunError> {
    Ok(match target {
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
            let executable = find_executable(program).ok_or_else(|| ProcessError::Spawn {
                command: program.to_string_lossy().into_owned(),
                message: "not found (no such file, or not in PATH)".into(),
            })?;
            Scope::Command { executable }
        }
    })
}

/// Runs a whole session; returns its summary (also printed on stderr).
pub async fn run(options: RunOptions) -> Result<Summary, RunError> {
    check_options(&options)?;
    let specs = SpecFile::load(options.specs.as_deref())?;
    let groups = select_groups(&specs, &options.plugin)?;
    crate::bpf::check_privileges()?;
    let scope = scope_for(&options.target)?;
    let mut cache = SymbolCache::with_placement(options.placement);
    let plan = plan(&groups, &scope, &mut cache)?;
    let out = open_output(options.output.as_deref())?;

    let mut tracer = Tracer::load(&LoadOptions {
        max_capture_bytes: options.max_capture_bytes,
        ring_bytes: options.ring_bytes,
        filter_by_pid: !matches!(options.target, Target::AllProcesses),
    })?;
    // The target goes into the kernel's pid filter before any probe exists. A command is held
    // before exec (and killed if anything below fails).
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
    for problem in &tracer.attribution_problems {
        eprintln!("probectl: connection attribution degraded: {problem}");
    }
    if tracer.attached() == 0 {
        let reasons: Vec<String> = attached
            .failures
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
    let group_names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    let failed = match attached.failures.len() {
        0 => String::new(),
        count => format!(", {count} FAILED"),
    };
    eprintln!(
        "probectl: tracing {} in {who}: {} probes attached{failed}; Ctrl-C to stop",
        group_names.join(", "),
        tracer.attached(),
    );

    let ring = tracer
        .take_events()
        .ok_or(BpfError::Load("ring buffer already taken".into()))?;
    let pidfd = match watched_pid {
        Some(pid) => {
            let context = "watching the traced process";
            let pidfd = pidfd_open(pid).map_err(|source| RunError::Io { context, source })?;
            Some(watch_readable(pidfd, context)?)
        }
        None => None,
    };
    let mut running = Running {
        ring: watch_readable(ring, "polling the ring buffer")?,
        reassembler: Reassembler::default(),
        sink: Sink {
            attach: attach_infos(&plan, &attached).collect(),
            execs: Vec::new(),
            writer: Box::new(Renderer::new(options.format)),
            out,
            clock_offset: monotonic_to_realtime_ns(),
            max_capture_bytes: options.max_capture_bytes,
            summary: Summary::default(),
            connections: ConnectionTable::default(),
            write_error: None,
        },
        tracer,
        groups,
        cache,
        rescans: Vec::new(),
    };
    // The probes are in place: let the command exec.
    let child_status = held.and_then(|child| child.release());
    let command_status = running.trace(child_status, pidfd, watched_pid).await?;
    running.finish(attached.failures.len(), command_status)
}

/// A session between attaching and detaching.
struct Running<'a> {
    ring: AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>,
    reassembler: Reassembler,
    sink: Sink,
    tracer: Tracer,
    groups: Vec<&'a Group>,
    cache: SymbolCache,
    /// Processes that started a program, to look at again at these times.
    rescans: Vec<(std::time::Instant, u32)>,
}

impl Running<'_> {
    /// Delivers events until Ctrl-C/SIGTERM, the command's exit (its status is returned), the
    /// traced process's exit, or an output error.
    async fn trace(
        &mut self,
        mut child_status: Option<ChildStatus>,
        pidfd: Option<AsyncFd<std::os::fd::OwnedFd>>,
        watched_pid: Option<u32>,
    ) -> Result<Option<std::process::ExitStatus>, RunError> {
        let signal_error = |source| RunError::Io {
            context: "installing signal handlers",
            source,
        };
        let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;
        let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
        // Records are submitted without waking us until the ring fills up (see
        // ebpf/src/main.rs): drain it on a short timer too, which bounds how late a quiet trace
        // shows its events.
        let mut drain_timer = tokio::time::interval(DRAIN_INTERVAL);
        drain_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = drain_timer.tick() => {
                    drain(self.ring.get_mut(), &mut self.reassembler, &mut self.sink);
                    self.attach_new_programs()?;
                }
                guard = self.ring.readable_mut() => {
                    let mut guard = guard.map_err(|source| RunError::Io { context: "polling the ring buffer", source })?;
                    drain(guard.get_inner_mut(), &mut self.reassembler, &mut self.sink);
                    guard.clear_ready();
                }
                status = wait_some(child_status.as_mut()), if child_status.is_some() => {
                    return Ok(status.ok().and_then(Result::ok));
                }
                _ = wait_some(pidfd.as_ref().map(|pidfd| pidfd.readable())), if pidfd.is_some() => {
                    eprintln!("probectl: traced process {} exited", watched_pid.unwrap_or(0));
                    return Ok(None);
                }
                _ = interrupt.recv() => return Ok(None),
                _ = terminate.recv() => return Ok(None),
            }
            if let Err(error) = self.sink.out.flush() {
                self.sink.write_error.get_or_insert(error);
            }
            if self.sink.write_error.is_some() {
                return Ok(None);
            }
        }
    }

    /// Processes that started a program are looked at again a little later (once the dynamic
    /// loader has mapped their libraries) and once more after a second (for late loads).
    fn attach_new_programs(&mut self) -> Result<(), RunError> {
        let now = std::time::Instant::now();
        for pid in self.sink.execs.drain(..) {
            self.rescans.push((now + RESCAN_DELAYS[0], pid));
            self.rescans.push((now + RESCAN_DELAYS[1], pid));
        }
        let (due, later): (Vec<_>, Vec<_>) =
            self.rescans.iter().partition(|(when, _)| *when <= now);
        self.rescans = later;
        for (_, pid) in due {
            attach_new_files(
                &self.groups,
                pid,
                &mut self.cache,
                &mut self.tracer,
                &mut self.sink,
            )?;
        }
        Ok(())
    }

    /// Delivers what is left, prints the summary, detaches.
    fn finish(
        mut self,
        attach_failures: usize,
        command_status: Option<std::process::ExitStatus>,
    ) -> Result<Summary, RunError> {
        // Whatever the kernel wrote before we stopped is still delivered.
        drain(self.ring.get_mut(), &mut self.reassembler, &mut self.sink);
        let sink = &mut self.sink;
        self.reassembler.flush(&mut |call| sink.emit(call));
        if sink.write_error.is_none() {
            if let Err(error) = sink.writer.finish(&mut sink.out) {
                sink.write_error = Some(error);
            }
        }
        let flushed = self.sink.out.flush();
        let mut summary = self.sink.summary.clone();
        summary.kernel = self.tracer.kernel_stats();
        summary.out_of_order = self.sink.connections.out_of_order;
        summary.connections = self.sink.connections.all().into_iter().cloned().collect();
        summary.probes_attached = self.tracer.attached();
        summary.attach_failures = attach_failures + summary.late_attach_failures;
        summary.command_status = command_status;
        // The summary first: detaching takes the kernel about 100 ms per probe.
        eprintln!("{summary}");
        let write_error = self.sink.write_error.take().or(flushed.err());
        drop(self);
        match write_error {
            Some(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(RunError::Io {
                context: "writing output",
                source: error,
            }),
            _ => Ok(summary),
        }
    }
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
