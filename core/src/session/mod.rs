//! A tracing session: specs -> plan -> load and attach -> event loop -> summary.

pub mod control;
pub mod process;
pub mod replay;

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};

use crate::capture::pipeline::{AttachTable, Pipeline};
use crate::capture::recording::{End, Recorder, Start};
pub use crate::capture::summary::Summary;
use crate::kernel::{Attached, BpfError, LoadOptions, Tracer};
use crate::notice::{self, Topic};
use crate::output::{open_output, Format, OutputError, OutputFile};
use crate::plan::{plan, Plan, PlanError, Scope};
use crate::session::control::{attach_plan, ControlPlane};
use crate::session::process::{find_executable, pidfd_open, spawn_held, ChildStatus, ProcessError};
use crate::spec::{Group, SpecError, SpecFile};
use crate::symbols::placement::{Placement, PlacementMode};
use crate::symbols::SymbolCache;
use crate::targets::{self, DiscoveryError};

/// How often the event loop drains the ring buffer when no wakeup came.
const DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// Largest `--max-bytes`.
pub const MAX_CAPTURE_LIMIT: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("unknown group \"{name}\"; known groups: {known}")]
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
    #[error(transparent)]
    Recording(#[from] crate::capture::recording::RecordingError),
    #[error(transparent)]
    Selection(#[from] crate::selection::SelectionError),
    #[error(transparent)]
    Export(#[from] probectl_export::ExportError),
    /// Said with its causes (which socket, why): the error printer shows the top only.
    #[error("--cri-socket: {}", crate::kernel::error_chain(.0))]
    Cri(#[source] crate::cri::CriError),
    /// Writing the output failed: the run stopped there, and its summary is still told.
    #[error("{}", write_failure(.path.as_deref(), .source))]
    WriteFailed {
        summary: Box<Summary>,
        /// The `-o` file (`None`: stdout).
        path: Option<PathBuf>,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What a write error says: the `-o` file named, and what became of it.
fn write_failure(path: Option<&std::path::Path>, source: &std::io::Error) -> String {
    match path {
        Some(path) => format!(
            "cannot write output file {}: {source}; the run stopped there, and what was \
             written before is kept",
            path.display()
        ),
        None => format!("writing output: {source}"),
    }
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
    /// `--force`: an existing regular output file may be overwritten (it keeps its mode).
    pub force: bool,
    pub max_capture_bytes: u64,
    pub ring_bytes: u32,
    /// `--decode http` (with `--max-body`): exchanges instead of calls.
    pub decode: Option<(crate::decode::http::Decode, u64)>,
    /// `--memory-budget`: what the writer may hold for all connections.
    pub memory_budget: u64,
    /// Where the uprobes go (`--placement`).
    pub placement: PlacementMode,
    /// `--pid` of a process that maps no matching library yet: trace it anyway and attach
    /// when it loads one, instead of failing.
    pub wait_for_library: bool,
    /// `--record FILE`: the pipeline's whole input, for `probectl replay`.
    pub record: Option<PathBuf>,
    /// `--record-limit`: the most bytes of input the recording takes.
    pub record_limit: u64,
    /// `--keylog FILE`: the session secrets of every traced handshake, as NSS key-log lines
    /// (the groups' `[[group.secret]]` probes are attached only then).
    pub keylog: Option<PathBuf>,
    /// `--packets FILE`: the real packets of the traced connections, with their secrets, as
    /// pcapng (see `crate::output::packets`).
    pub packets: Option<PathBuf>,
    /// `--container`, `--cgroup`, `--comm`, `--port`, `--host`.
    pub selection: crate::selection::Selection,
    /// `--export otlp=URL`: a span per decoded HTTP exchange.
    pub export: Option<probectl_export::ExportOptions>,
    /// `--cri-socket PATH`: the container runtime that names pods (none: the runtimes'
    /// default sockets, where one exists).
    pub cri_socket: Option<PathBuf>,
    /// The output file is appended to (created 0600 if missing; the agent's runs).
    pub append: bool,
    /// Ends the run when notified, as SIGTERM does: everything in flight is delivered (the
    /// agent's reload).
    pub stop: Option<std::sync::Arc<tokio::sync::Notify>>,
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

/// Says which files were attached (with `note`, e.g. "for pid 12"), what was skipped and why,
/// and what failed.
pub(crate) fn report_plan(plan: &Plan, attached: &Attached, note: &str, report_skips: bool) {
    if let Some(first) = attached.unscoped.first() {
        notice::warning(
            Topic::Attach,
            format!(
                "{} probe(s) attached for all processes, not only the traced ones (other \
                 processes that map the file pay the uprobe traps; what is captured is still \
                 filtered): {first}",
                attached.unscoped.len()
            ),
        );
    }
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
        // Go functions: exits on every `ret` (no uretprobe), said so.
        let at_rets = probes
            .iter()
            .filter(|probe| {
                matches!(probe.placement, Placement::Returns { .. })
                    && probe.probe.role == crate::spec::Role::Data
            })
            .count();
        let at_rets = if at_rets > 0 {
            format!(", {at_rets} returning at every ret")
        } else {
            String::new()
        };
        let count = probes.len();
        let version = file
            .version
            .as_deref()
            .map(|v| format!(" ({v})"))
            .unwrap_or_default();
        notice::info(
            Topic::Attach,
            format!(
                "[{}] {}{version}: {count} probes{note} ({emulated} emulated{at_rets})",
                file.group,
                file.file.describe()
            ),
        );
    }
    for skip in plan.skipped.iter().filter(|_| report_skips) {
        let what = match &skip.symbol {
            Some(symbol) => format!("{symbol} in {}", skip.path.display()),
            None => skip.path.display().to_string(),
        };
        notice::info(
            Topic::Attach,
            format!("[{}] skipped {what}: {}", skip.group, skip.reason),
        );
    }
    for failure in failures {
        notice::warning(
            Topic::Attach,
            format!(
                "FAILED to attach {} in {}: {}",
                failure.symbol,
                failure.path.display(),
                failure.message
            ),
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

/// A clock's time in ns.
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: time is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(clock, &mut time) };
    time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64
}

/// CLOCK_MONOTONIC in ns: the clock of BPF timestamps, and of the pipeline.
pub(crate) fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Offset from CLOCK_MONOTONIC (what BPF timestamps use) to wall-clock time.
fn monotonic_to_realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME).saturating_sub(monotonic_ns())
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
    if options.format == Format::Pcapng && options.decode.is_some() {
        return Err(RunError::Option(
            "--decode http and --format pcapng do not go together: pcapng carries the raw \
             streams (Wireshark decodes HTTP itself)"
                .into(),
        ));
    }
    if options.export.is_some() && options.decode.is_none() {
        return Err(RunError::Option(
            "--export sends a span per HTTP exchange: it needs --decode http".into(),
        ));
    }
    if let Some(export) = &options.export {
        export.check()?;
    }
    if options.format == Format::Pcapng
        && options.output.is_none()
        && crate::output::terminal::stdout_is_terminal()
    {
        return Err(RunError::Option(
            "--format pcapng is binary: write it to a file (-o FILE) or a pipe (| tshark -i -), \
             not to a terminal"
                .into(),
        ));
    }
    Ok(())
}

/// Where to look for files to probe, for a target.
fn scope_for(target: &Target) -> Result<Scope, RunError> {
    Ok(match target {
        Target::Pid(pid) => {
            if !targets::process_exists(*pid) {
                return Err(DiscoveryError::NoSuchProcess { pid: *pid }.into());
            }
            // The process and its descendants that exist now; the kernel follows later forks.
            let members = targets::process_tree(*pid).iter().map(|m| m.pid).collect();
            Scope::Tree {
                root: *pid,
                members,
            }
        }
        Target::AllProcesses => Scope::Host,
        Target::Command(argv) => {
            let program = argv
                .first()
                .ok_or_else(|| RunError::Option("no command after --".into()))?;
            let executable = find_executable(program)?;
            Scope::Command { executable }
        }
    })
}

/// Runs a whole session; returns its summary (also printed on stderr).
pub async fn run(options: RunOptions) -> Result<Summary, RunError> {
    check_options(&options)?;
    // Ctrl-C and SIGTERM are ours from the start: one that comes while probectl attaches (or
    // just after it says it traces) still ends the run with everything delivered and the
    // summary, never kills it halfway.
    let signal_error = |source| RunError::Io {
        context: "installing signal handlers",
        source,
    };
    let interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
    // Also a flag the handler sets itself: an output that blocks the event loop's thread
    // must not keep the stop from being seen (see `crate::output::writer`).
    for signal in [libc::SIGINT, libc::SIGTERM] {
        signal_hook::flag::register(signal, crate::output::writer::stop_flag())
            .map_err(signal_error)?;
    }
    let mut specs = SpecFile::load(options.specs.as_deref())?;
    if options.keylog.is_none() && options.packets.is_none() {
        // Key-log functions run on every handshake: without --keylog they cost a trap for
        // nothing.
        for group in &mut specs.groups {
            group
                .probes
                .retain(|probe| probe.role != crate::spec::Role::Secret);
        }
    }
    let groups = select_groups(&specs, &options.plugin)?;
    crate::kernel::check_privileges()?;
    let mut scope = scope_for(&options.target)?;
    if options.selection.selects_processes() && matches!(options.target, Target::Command(_)) {
        return Err(RunError::Option(
            "--container, --cgroup and --comm select among running processes: a command \
             probectl starts (-- CMD) is selected already"
                .into(),
        ));
    }
    // The process selection, against what runs now: with --pid, the tree narrowed to it;
    // system-wide, the processes that match now, and the kernel admits later ones at exec.
    // Before anything is loaded: a --cri-socket that does not answer ends the run here. The
    // runtime also names containers for --container NAME.
    let cri = open_cri(options.cri_socket.as_deref())?;
    let kernel_selection = if options.selection.selects_processes() {
        let within = match &scope {
            Scope::Tree { members, .. } => Some(members.as_slice()),
            _ => None,
        };
        let resolved = crate::selection::resolve(&options.selection, within, cri.as_ref())?;
        if let Scope::Tree { members, .. } = &mut scope {
            members.retain(|pid| resolved.pids.contains(pid));
            if members.is_empty() {
                return Err(RunError::Option(format!(
                    "no process of the --pid tree matches the selection ({})",
                    resolved.described.join(", ")
                )));
            }
        }
        Some(resolved)
    } else {
        None
    };
    let addresses = crate::selection::addresses(&options.selection)?;
    let (address_filter, addresses_in_kernel) = addresses.as_ref().map_or(
        (Default::default(), false),
        crate::selection::kernel_address_filter,
    );
    let selecting_at_exec =
        matches!(options.target, Target::AllProcesses) && kernel_selection.is_some();
    // The output is opened and probed before anything is traced: a file that may not or cannot
    // be written is an error before the command runs. It is emptied (an existing file, with
    // --force) only once tracing starts, and a file created here is removed if it never does.
    let output_file = options
        .output
        .as_deref()
        .map(|path| {
            if options.append {
                OutputFile::append(path)
            } else {
                OutputFile::prepare(path, options.force)
            }
        })
        .transpose()?;
    // The key log, the same way: secrets are as private as the plaintext.
    let keylog_file = options
        .keylog
        .as_deref()
        .map(|path| OutputFile::prepare(path, options.force))
        .transpose()?;
    let packets_file = options
        .packets
        .as_deref()
        .map(|path| OutputFile::prepare(path, options.force))
        .transpose()?;
    let mut cache = SymbolCache::with_placement(options.placement);
    let plan = match (plan(&groups, &scope, &mut cache), &options.target) {
        (Ok(plan), _) => plan,
        // A running process may load its TLS library later (dlopen): with --wait, wait.
        (
            Err(PlanError::NothingToTrace {
                pid,
                comm,
                groups,
                looked_for,
            }),
            Target::Pid(_),
        ) if options.wait_for_library => {
            notice::warning(
                Topic::Coverage,
                format!(
                    "process {pid} ({comm}) maps no library of {groups} yet ({looked_for}); \
                     waiting for it to load one"
                ),
            );
            Plan::default()
        }
        (Err(error), _) => return Err(error.into()),
    };

    let mut tracer = Tracer::load(&LoadOptions {
        max_capture_bytes: options.max_capture_bytes,
        ring_bytes: options.ring_bytes,
        filter_by_pid: !matches!(options.target, Target::AllProcesses) || selecting_at_exec,
        go: groups.iter().any(|group| group.abi == crate::spec::Abi::Go),
        scoped: !selecting_at_exec,
        select_at_exec: kernel_selection.clone().filter(|_| selecting_at_exec),
        address_filter,
        // Secrets are tied to sockets by the ClientHellos the processes send.
        watch_hellos: options.keylog.is_some() || options.packets.is_some(),
    })?;
    // The target goes into the kernel's pid filter before any probe exists. A command is held
    // before exec (and killed if anything below fails).
    let mut held = None;
    let mut watched_pid = None;
    match &options.target {
        Target::Pid(pid) => {
            let members = match &scope {
                Scope::Tree { members, .. } => members.as_slice(),
                _ => std::slice::from_ref(pid),
            };
            for member in members {
                tracer.trace_pid(*member)?;
            }
            watched_pid = Some(*pid);
        }
        Target::Command(argv) => {
            let child = spawn_held(argv)?;
            tracer.trace_pid(child.pid)?;
            held = Some(child);
        }
        Target::AllProcesses => {
            if let Some(selection) = kernel_selection.as_ref() {
                for pid in &selection.pids {
                    tracer.trace_pid(*pid)?;
                }
            }
        }
    }
    let table = AttachTable::default();
    let attached = attach_plan(&mut tracer, &table, &plan)?;
    // What was skipped is said only for files the traced processes map (a `--pid` tree's):
    // a command, or a system-wide run, is planned from the host's library directories, whose
    // files it may never map (BoringSSL's android/libssl.so.0 beside libssl.so.3).
    report_plan(
        &plan,
        &attached,
        "",
        matches!(options.target, Target::Pid(_)),
    );
    if let Some(note) = plan.tree.as_ref().and_then(|tree| tree.note()) {
        notice::info(Topic::Tracing, note);
    }
    for fallback in &tracer.kernel_notices {
        notice::warning(Topic::Tracing, fallback.clone());
    }
    for problem in &tracer.attribution_problems {
        notice::warning(
            Topic::Attribution,
            format!("connection attribution degraded: {problem}"),
        );
    }
    if tracer.attached() == 0 && !plan.probes.is_empty() {
        let reasons: Vec<String> = attached
            .failures
            .iter()
            .map(|f| format!("{} in {}: {}", f.symbol, f.path.display(), f.message))
            .collect();
        return Err(RunError::NothingAttached(reasons.join("; ")));
    }
    // Only now, with everything attached, is the output kept (and an existing file emptied): a
    // run that fails to start leaves no file behind and an existing one untouched.
    let out = open_output(output_file)?;
    let keylog = keylog_file
        .map(|file| file.commit().and_then(crate::output::append_mode))
        .transpose()?;
    let packets = match packets_file {
        Some(file) => Some(
            crate::output::packets::PacketCapture::start(Box::new(std::io::BufWriter::new(
                file.commit()?,
            )))
            .map_err(|source| RunError::Io {
                context: "opening the packet capture socket (AF_PACKET)",
                source,
            })?,
        ),
        None => None,
    };
    let who = match &options.target {
        Target::Pid(pid) => match plan.tree.as_ref().map_or(0, |tree| tree.descendants()) {
            0 => format!("pid {pid} ({})", targets::comm(*pid)),
            1 => format!("pid {pid} ({}) and its descendant", targets::comm(*pid)),
            count => format!(
                "pid {pid} ({}) and its {count} descendants",
                targets::comm(*pid)
            ),
        },
        Target::Command(argv) => format!(
            "command {} (pid {})",
            argv[0].to_string_lossy(),
            held.as_ref().map_or(0, |child| child.pid)
        ),
        Target::AllProcesses => match kernel_selection.as_ref() {
            Some(selection) => format!(
                "{} ({} processes now, and those that start a program in it)",
                selection.described.join(" and "),
                selection.pids.len()
            ),
            None => "all processes".to_string(),
        },
    };
    let group_names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    let looked_for = groups
        .iter()
        .map(|group| crate::plan::describe_search(group))
        .collect::<Vec<_>>()
        .join("; ");
    let failed = match attached.failures.len() {
        0 => String::new(),
        count => format!(", {count} FAILED"),
    };
    notice::info(
        Topic::Tracing,
        format!(
            "tracing {} in {who}: {} probes attached{failed}; Ctrl-C to stop",
            group_names.join(", "),
            tracer.attached(),
        ),
    );

    let ring = tracer
        .take_events()
        .ok_or(BpfError::Load("ring buffer already taken".into()))?;
    // A traced process that exits before we watch it (a short program) ends the run at once,
    // with whatever it did delivered.
    let mut exited_already = false;
    let pidfd = match watched_pid.map(pidfd_open) {
        Some(Ok(pidfd)) => Some(watch_readable(pidfd, "watching the traced process")?),
        Some(Err(error)) if error.raw_os_error() == Some(libc::ESRCH) => {
            exited_already = true;
            None
        }
        Some(Err(source)) => {
            return Err(RunError::Io {
                context: "watching the traced process",
                source,
            })
        }
        None => None,
    };
    let clock_offset = monotonic_to_realtime_ns();
    let recorder = match &options.record {
        Some(path) => Some(Recorder::create(
            path,
            &Start {
                probectl: env!("CARGO_PKG_VERSION").to_string(),
                clock_offset,
                max_capture_bytes: options.max_capture_bytes,
                kernel: crate::kernel::features::kernel_release(),
            },
            options.record_limit,
        )?),
        None => None,
    };
    let mut exporter = options
        .export
        .as_ref()
        .map(probectl_export::Exporter::start)
        .transpose()?;
    let mut pipeline = Pipeline::new(
        table.clone(),
        writer_for(
            options.format,
            options.decode,
            options.memory_budget,
            exporter.as_mut().and_then(|e| e.sink()),
        )?,
        out,
        clock_offset,
        options.max_capture_bytes,
    )
    .map_err(|source| RunError::Io {
        context: "starting the output thread",
        source,
    })?;
    if let Some(recorder) = recorder {
        pipeline.record_into(recorder);
    }
    if let Some(keylog) = keylog {
        pipeline.keylog_into(keylog);
    }
    if let Some(packets) = &packets {
        pipeline.packets_into(packets.secrets());
    }
    let cri_counts = cri.as_ref().map(crate::cri::Cri::counts);
    // Both the resolver and the pod namer run on the pipeline's thread.
    let cri = cri.map(|cri| std::sync::Arc::new(std::sync::Mutex::new(cri)));
    let mut resolver = crate::capture::identity::LiveResolver::default();
    let cri_of_resolver = cri.clone();
    pipeline.resolve_identities_with(Box::new(move |pid, cgroup_id| {
        let mut identity = resolver.resolve(pid, cgroup_id)?;
        if let (Some(cri), Some(id)) = (cri_of_resolver.as_ref(), identity.container.as_deref()) {
            if let Some(pod) = lock_cri(cri).pod_of(id) {
                identity.pod_uid.get_or_insert(pod.uid.clone());
                identity.pod = Some(pod.names());
            }
        }
        Some(identity)
    }));
    if let Some(cri) = cri {
        pipeline.name_pods_with(Box::new(move || {
            let mut cri = lock_cri(&cri);
            let named = cri
                .take_named()
                .into_iter()
                .map(|(id, pod)| {
                    let names = pod.names();
                    (id, names, pod.uid)
                })
                .collect();
            (named, cri.awaiting())
        }));
    }
    if let Some(addresses) = addresses {
        pipeline.select_addresses(addresses);
    }
    let selection_summary = crate::capture::summary::SelectionSummary {
        processes: kernel_selection
            .as_ref()
            .map(|s| s.described.clone())
            .unwrap_or_default(),
        processes_at_start: kernel_selection.as_ref().map_or(0, |s| s.pids.len() as u64),
        in_kernel: kernel_selection.is_some(),
        addresses: options
            .selection
            .ports
            .iter()
            .map(|port| format!("port {port}"))
            .chain(
                options
                    .selection
                    .hosts
                    .iter()
                    .map(|host| format!("host {host}")),
            )
            .collect(),
        addresses_in_kernel: addresses_in_kernel && tracer.filters_addresses(),
    };
    let groups: Vec<Group> = groups.into_iter().cloned().collect();
    let mut running = Running {
        ring: watch_readable(ring, "polling the ring buffer")?,
        pipeline,
        control: ControlPlane::start(tracer, groups, cache, table),
        interrupt,
        terminate,
        output: options.output.clone(),
        packets,
        selection: selection_summary,
        exporter,
        cri_counts,
        stop: options.stop.clone(),
    };
    // The probes are in place: let the command exec.
    let mut command = held.map(|child| child.release()).transpose()?;
    if let (Some(command), Scope::Command { executable }) = (command.as_mut(), &scope) {
        let files = plan.files.iter().map(|file| file.file.id).collect();
        let plural = if group_names.len() > 1 { "s" } else { "" };
        let groups_text = format!("group{plural} {}", group_names.join(", "));
        command.watch_libraries(executable, files, groups_text, looked_for);
    }
    let traced = running
        .trace(
            command.as_mut().map(|c| c.status()),
            pidfd,
            watched_pid,
            exited_already,
        )
        .await?;
    // probectl stopping (a signal, an output error) ends the command too, before the last
    // drain, so that what it did until it exited is delivered.
    let command_status = match command.as_mut() {
        Some(command) => command.end(traced).await,
        None => traced,
    };
    let summary = running.finish(attached.failures.len(), command_status)?;
    if let Some(command) = command.as_mut() {
        command.warn_if_untraceable(summary.counts.events);
    }
    Ok(summary)
}

/// A session between attaching and detaching: the data pipeline on this thread, the control
/// plane on its own.
struct Running {
    ring: AsyncFd<crate::kernel::ring::EventRing>,
    pipeline: Pipeline,
    control: ControlPlane,
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    /// The `-o` file (None: stdout), named in a write error.
    output: Option<PathBuf>,
    /// `--packets`: the packet capture.
    packets: Option<crate::output::packets::PacketCapture>,
    /// What the run selected, for the summary.
    selection: crate::capture::summary::SelectionSummary,
    /// `--export`: told the run is over after the pipeline's last exchange.
    exporter: Option<probectl_export::Exporter>,
    /// The pod names' lookups, for the summary.
    cri_counts: Option<std::sync::Arc<std::sync::Mutex<crate::capture::summary::CriCounts>>>,
    /// Ends the run when notified (the agent's reload).
    stop: Option<std::sync::Arc<tokio::sync::Notify>>,
}

impl Running {
    /// Delivers events until Ctrl-C/SIGTERM, the command's exit (its status is returned), the
    /// traced process's exit, or an output error.
    async fn trace(
        &mut self,
        mut child_status: Option<&mut ChildStatus>,
        pidfd: Option<AsyncFd<std::os::fd::OwnedFd>>,
        watched_pid: Option<u32>,
        exited_already: bool,
    ) -> Result<Option<std::process::ExitStatus>, RunError> {
        if exited_already {
            notice::info(
                Topic::Tracing,
                format!("traced process {} exited", watched_pid.unwrap_or(0)),
            );
            return Ok(None);
        }
        // Records are submitted without waking us until the ring fills up (see
        // ebpf/src/main.rs): drain it on a short timer too, which bounds how late a quiet trace
        // shows its events.
        let mut drain_timer = tokio::time::interval(DRAIN_INTERVAL);
        drain_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = drain_timer.tick() => self.drain(),
                guard = self.ring.readable_mut() => {
                    let mut guard = guard.map_err(|source| RunError::Io { context: "polling the ring buffer", source })?;
                    // Readiness is cleared only when the ring was emptied: what a bounded
                    // round left is taken next time round the loop.
                    if drain(guard.get_inner_mut(), &mut self.pipeline) {
                        guard.clear_ready();
                    }
                }
                status = wait_some(child_status.as_mut()), if child_status.is_some() => {
                    return Ok(status.ok().and_then(Result::ok));
                }
                _ = wait_some(pidfd.as_ref().map(|pidfd| pidfd.readable())), if pidfd.is_some() => {
                    notice::info(Topic::Tracing, format!("traced process {} exited", watched_pid.unwrap_or(0)));
                    return Ok(None);
                }
                _ = self.interrupt.recv() => return Ok(None),
                _ = self.terminate.recv() => return Ok(None),
                _ = wait_some(self.stop.as_ref().map(|stop| stop.notified())), if self.stop.is_some() => return Ok(None),
            }
            self.control.look(self.pipeline.take_lookups());
            self.control.sweep(self.pipeline.take_exited());
            if !self.pipeline.flush(monotonic_ns()) {
                return Ok(None);
            }
        }
    }

    fn drain(&mut self) {
        drain(self.ring.get_mut(), &mut self.pipeline);
    }

    /// Drains the ring until it is empty (at the end: nothing comes any more).
    fn drain_all(&mut self) {
        while !drain(self.ring.get_mut(), &mut self.pipeline) {}
    }

    /// Delivers what is left, prints the summary, detaches.
    fn finish(
        mut self,
        attach_failures: usize,
        command_status: Option<std::process::ExitStatus>,
    ) -> Result<Summary, RunError> {
        // Whatever the kernel wrote before we stopped is still delivered.
        self.drain_all();
        self.control.sweep(self.pipeline.take_exited());
        let report = self.control.report();
        // Records written while the report was made (a connection closed meanwhile).
        self.drain_all();
        let mut kernel = report.kernel;
        kernel.records_oversized = self.ring.get_ref().oversized();
        let end = End {
            open_positions: report.open_positions,
            kernel,
            probes_attached: report.probes_attached,
            attach_failures: attach_failures + report.late_attach_failures,
            swept: report.swept,
            command_code: command_status.and_then(|status| status.code()),
            command_signal: command_status.and_then(|status| status.signal()),
            memory: crate::capture::summary::MemoryUse::of_this_process(),
            // The recorder sets it as it writes the end.
            frames_not_recorded: 0,
            selection: std::mem::take(&mut self.selection),
        };
        self.pipeline.end_recording(&end);
        let mut write_error = self.pipeline.finish(&end.open_positions);
        let mut summary = summarize(&self.pipeline, &end, command_status);
        if let Some(packets) = self.packets.take() {
            match packets.finish() {
                Ok(counts) => summary.packets = Some(counts),
                Err(error) => {
                    write_error.get_or_insert(std::io::Error::new(
                        error.kind(),
                        format!("the packet capture: {error}"),
                    ));
                }
            }
        }
        if let Some(exporter) = self.exporter.take() {
            summary.export = Some(exporter.finish(EXPORT_DEADLINE));
        }
        if let Some(counts) = &self.cri_counts {
            summary.cri = Some(
                counts
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
            );
        }
        // Every probe goes when its last descriptor closes: a child closes them after we
        // exit, so that probectl does not wait for the kernel's detach (see
        // `detach_in_background`).
        crate::kernel::detach::detach_in_background();
        self.control.stop();
        finished(summary, write_error, self.output)
    }
}

/// The end of a run (or a replay): its summary, or the output's error with the summary (a
/// reader that went away, EPIPE, is no error: `probectl ... | head` is fine).
/// `path`: the `-o` file (`None`: stdout, where a closed pipe is no error).
fn finished(
    summary: Summary,
    write_error: Option<std::io::Error>,
    path: Option<PathBuf>,
) -> Result<Summary, RunError> {
    match write_error {
        Some(error) if path.is_some() || error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(RunError::WriteFailed {
                summary: Box::new(summary),
                path,
                source: error,
            })
        }
        _ => Ok(summary),
    }
}

/// How long the end of a run waits for the exporter to send what it holds.
const EXPORT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// The writer of a format, or of decoded exchanges (also handed to `sink`, `--export`).
fn writer_for(
    format: Format,
    decode: Option<(crate::decode::http::Decode, u64)>,
    memory_budget: u64,
    sink: Option<Box<dyn crate::decode::http::ExchangeSink>>,
) -> Result<Box<dyn crate::output::EventWriter>, RunError> {
    Ok(match decode {
        Some((crate::decode::http::Decode::Http(mode), max_body)) => {
            let writer = crate::decode::http::HttpWriter::new(format, max_body)
                .with_mode(mode)
                .with_budget(memory_budget);
            Box::new(match sink {
                Some(sink) => writer.with_sink(sink),
                None => writer,
            })
        }
        None => crate::output::writer_for(format, memory_budget)?,
    })
}

fn lock_cri(cri: &std::sync::Mutex<crate::cri::Cri>) -> std::sync::MutexGuard<'_, crate::cri::Cri> {
    // Poisoned: a panic in a lookup; the cache is still a cache.
    cri.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The container runtime that names pods: the socket given (it must answer), else the first
/// default socket that exists and answers; one that exists and fails is said (not warned), and
/// the run goes on without pod names.
fn open_cri(socket: Option<&Path>) -> Result<Option<crate::cri::Cri>, RunError> {
    match crate::cri::Cri::open(socket) {
        Ok(Some(cri)) => {
            notice::info(
                Topic::Attribution,
                format!("pod names from {}", cri.describe()),
            );
            Ok(Some(cri))
        }
        Ok(None) => Ok(None),
        Err(error) if socket.is_some() => Err(RunError::Cri(error)),
        // Said, not warned: a Docker host's containerd has no CRI service, and its users want
        // no pod names.
        Err(error) => {
            notice::info(
                Topic::Attribution,
                format!("pods are not named: {}", crate::kernel::error_chain(&error)),
            );
            Ok(None)
        }
    }
}

/// A finished pipeline's summary, with what the end of the run said (live or recorded).
fn summarize(
    pipeline: &Pipeline,
    end: &End,
    command_status: Option<std::process::ExitStatus>,
) -> Summary {
    let connections = &pipeline.connections;
    Summary {
        counts: pipeline.counts,
        kernel: end.kernel,
        connections: connections.all().into_iter().cloned().collect(),
        folded: connections.folded,
        ended_by_exit: connections.ended_by_exit,
        out_of_order: connections.out_of_order,
        connections_restarted: connections.restarted,
        probes_attached: end.probes_attached,
        attach_failures: end.attach_failures,
        command_status,
        swept: end.swept,
        memory: end.memory,
        output: pipeline.writer_report(),
        keys_traced: pipeline.keys_traced,
        keys_evicted: connections.keys_evicted,
        handshakes_without_data: connections.handshakes_without_data(),
        packets: None,
        containers: {
            let mut containers: Vec<_> = pipeline
                .containers
                .iter()
                .map(|(id, counts)| (id.clone(), counts.clone()))
                .collect();
            containers.sort_by(|a, b| a.0.cmp(&b.0));
            containers
        },
        containers_other: pipeline.containers_other.clone(),
        selection: end.selection.clone(),
        export: None,
        cri: None,
    }
}

/// Records taken from the ring in one round of the event loop at most: between rounds it
/// handles signals, the command's exit and the control plane's lookups, however busy the
/// traced programs are.
const DRAIN_BATCH: usize = 4096;

/// Takes up to [`DRAIN_BATCH`] records; true when the ring was emptied.
fn drain(ring: &mut crate::kernel::ring::EventRing, pipeline: &mut Pipeline) -> bool {
    for _ in 0..DRAIN_BATCH {
        if !ring.next(|record| pipeline.record(record)) {
            return true;
        }
    }
    false
}
