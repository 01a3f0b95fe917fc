//! Loading the (one) BPF object, configuring it, and attaching its two generic programs at every
//! planned attach point, with the attach id as BPF cookie.

pub mod btf;
pub mod detach;
pub mod features;
pub mod ring;
pub mod scoped;

use std::os::fd::AsFd;
use std::path::PathBuf;

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use aya::programs::raw_trace_point::RawTracePointLinkId;
use aya::programs::trace_point::TracePointLinkId;
use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope};
use aya::programs::{RawTracePoint, TracePoint, UProbe};
use aya::{Ebpf, EbpfLoader};
use probectl_common::capacity;
use probectl_common::{
    stat, ConnectionKey, ConnectionState, FdKey, GoroutineKey, ProbeSpec, SecretSpec,
    ACTIVE_CALL_SIZE,
};
use ring::EventRing;

use std::collections::BTreeSet;

use crate::kernel::features::Mode;
use crate::kernel::scoped::ScopedProbes;
use crate::plan::Plan;
use crate::spec::Role;
use crate::symbols::placement::Placement;
use crate::targets::FileId;

/// The BPF programs built from `ebpf/` by build.rs.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probectl"));

const SYS_ENTER_PROGRAM: &str = "probectl_sys_enter";
/// The raw `sys_exit` tracepoint's program: ClientHellos a process reads (`--keylog`,
/// `--packets` only).
const SYS_EXIT_PROGRAM: &str = "probectl_sys_exit";
/// The chunk program of the fallback modes (tail-called, never attached).
const CHUNKS_PROGRAM: &str = "probectl_chunks";
const NEWTASK_PROGRAM: &str = "probectl_newtask";
const THREAD_EXIT_PROGRAM: &str = "probectl_thread_exit";
const EXEC_PROGRAM: &str = "probectl_exec";
const MMAP_ENTER_PROGRAM: &str = "probectl_mmap_enter";
const MMAP_EXIT_PROGRAM: &str = "probectl_mmap_exit";

/// The uprobe programs of one mode (`features::Mode`, ebpf/src/compat.rs): the object holds an
/// instance of each per mode that differs.
#[derive(Debug, Clone, Copy)]
struct UprobePrograms {
    entry: &'static str,
    ret: &'static str,
    exit: &'static str,
    end: &'static str,
    secret: &'static str,
}

impl UprobePrograms {
    fn of(mode: Mode) -> UprobePrograms {
        match mode {
            Mode::Fast => UprobePrograms {
                entry: "probectl_entry",
                ret: "probectl_return",
                exit: "probectl_exit",
                end: "probectl_end",
                secret: "probectl_secret",
            },
            Mode::Bounded => UprobePrograms {
                entry: "probectl_entry_bounded",
                ret: "probectl_return_bounded",
                exit: "probectl_exit_bounded",
                end: "probectl_end",
                secret: "probectl_secret",
            },
            Mode::Address => UprobePrograms {
                entry: "probectl_entry_address",
                ret: "probectl_return_bounded",
                exit: "probectl_exit_address",
                end: "probectl_end_address",
                secret: "probectl_secret_address",
            },
        }
    }

    /// (program, file offset) of every uprobe of an attach point: `offset` is the function's
    /// first instruction in the file. The entry comes last: a call whose entry is seen must
    /// find its return probes in place, or a call made while the attach is under way would be
    /// counted as a missed return (a return whose entry was not seen is ignored), and a child
    /// forked meanwhile would inherit an entry without its returns (scoped.rs).
    fn uprobes_of(
        &self,
        placement: &Placement,
        role: Role,
        entry_only: bool,
        offset: u64,
    ) -> Vec<(&'static str, u64)> {
        let mut uprobes: Vec<(&'static str, u64)> = match (placement, role) {
            // A lifecycle function is only entered: its entry point, wherever it is.
            (Placement::Classic { .. }, Role::End) => vec![(self.end, offset)],
            (Placement::Emulated { entry, .. }, Role::End) => {
                vec![(self.end, entry.file_offset)]
            }
            // A call captured at entry: nothing waits for its return.
            (Placement::Classic { .. } | Placement::Returns { .. }, Role::Data) if entry_only => {
                vec![(self.entry, offset)]
            }
            (Placement::Emulated { entry, .. }, Role::Data) if entry_only => {
                vec![(self.entry, entry.file_offset)]
            }
            (Placement::Classic { .. }, Role::Data) => {
                vec![(self.entry, offset), (self.ret, offset)]
            }
            (Placement::Emulated { entry, exits }, Role::Data) => {
                std::iter::once((self.entry, entry.file_offset))
                    .chain(exits.iter().map(|exit| (self.exit, exit.file_offset)))
                    .collect()
            }
            (Placement::Returns { .. }, Role::End) => vec![(self.end, offset)],
            // A key-log function: its entry's arguments are all it takes.
            (Placement::Classic { .. } | Placement::Returns { .. }, Role::Secret) => {
                vec![(self.secret, offset)]
            }
            (Placement::Emulated { entry, .. }, Role::Secret) => {
                vec![(self.secret, entry.file_offset)]
            }
            // Entry at the first instruction, the exit program on every `ret`.
            (Placement::Returns { exits }, Role::Data) => std::iter::once((self.entry, offset))
                .chain(exits.iter().map(|exit| (self.exit, exit.file_offset)))
                .collect(),
            // Planning skips these; nothing is attached.
            (Placement::Refused { .. }, _) => Vec::new(),
        };
        uprobes.sort_by_key(|&(name, _)| name == self.entry);
        uprobes
    }

    fn all(&self) -> [&'static str; 5] {
        [self.entry, self.ret, self.exit, self.end, self.secret]
    }

    /// The `code_kind` of a program's probes in `ATTACH_IDS`; None for the return program
    /// (a uretprobe's spec comes from its call's entry).
    fn code_kind(&self, name: &str) -> Option<u64> {
        use probectl_common::code_kind;
        if name == self.entry {
            Some(code_kind::ENTRY)
        } else if name == self.exit {
            Some(code_kind::EXIT)
        } else if name == self.end {
            Some(code_kind::END)
        } else if name == self.secret {
            Some(code_kind::SECRET)
        } else {
            None
        }
    }
}

/// Where tracefs is (mounted there if it is not).
pub(crate) const TRACEFS: &str = "/sys/kernel/tracing";
/// Capacity of the attach table (`PROBE_SPECS`).
pub const MAX_ATTACH_POINTS: usize = probectl_common::capacity::ATTACH_POINTS as usize;

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error(
        "not privileged enough to load BPF programs (missing: {missing}): run as root, or see \
         \"Requirements\" in the README for the capabilities"
    )]
    NotPrivileged { missing: String },
    #[error("loading the BPF programs failed: {0}")]
    Load(String),
    #[error("BPF map {name}: {message}")]
    Map { name: &'static str, message: String },
    #[error("too many attach points ({count}); at most {MAX_ATTACH_POINTS}")]
    TooManyAttachPoints { count: usize },
    #[error("updating the traced process list: {0}")]
    PidFilter(String),
    #[error(transparent)]
    Kernel(#[from] crate::kernel::features::FeatureError),
}

/// Linux capability numbers (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Fails with a clear error unless this process may load BPF programs and uprobes.
pub fn check_privileges() -> Result<(), BpfError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(cap, _)| !has(*cap))
        .map(|(_, name)| name)
        .collect();
    Err(BpfError::NotPrivileged {
        missing: missing.join(", "),
    })
}

/// Rounds of binding process-scoped probes to tasks created while they were attached: each
/// round covers the tasks the previous one found new (see `Tracer::cover_new_tasks`).
const COVER_ROUNDS: usize = 16;

pub struct LoadOptions {
    /// Bytes captured per call at most; the rest is counted as truncated.
    pub max_capture_bytes: u64,
    /// Ring buffer size (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Trace only the pids added with `Tracer::trace_pid`.
    pub filter_by_pid: bool,
    /// A group of the run traces Go (`abi = "go"`): the Go tables are sized for it, else
    /// they get one entry.
    pub go: bool,
    /// With `filter_by_pid`: attach process-scoped uprobes (`--pid`, `-- CMD`). A selection
    /// that admits processes at exec (`--container` system-wide) needs probes in every process
    /// instead: a process it admits later descends from no traced one.
    pub scoped: bool,
    /// Admit processes at exec by cgroup and command name (`crate::selection`).
    pub select_at_exec: Option<crate::selection::KernelSelection>,
    /// `--port`/`--host`: the connections whose calls are copied (all when empty; ignored by
    /// the address programs, see [`Tracer::filters_addresses`]).
    pub address_filter: probectl_common::AddressFilter,
    /// Report the TLS ClientHellos processes in scope write to sockets (`HelloRecord`): with
    /// secret probes (`--keylog`, `--packets`), to tie secrets to sockets.
    pub watch_hellos: bool,
}

/// An attach point that could not be attached.
#[derive(Debug, Clone)]
pub struct AttachFailure {
    pub path: PathBuf,
    pub symbol: String,
    pub message: String,
}

/// Makes sure tracefs is mounted (tracepoints are attached by their tracefs id); a fresh
/// machine may not have it.
fn ensure_tracefs() -> Result<(), String> {
    if std::path::Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    let source = c"tracefs";
    let target = c"/sys/kernel/tracing";
    // SAFETY: all pointers are valid NUL-terminated strings; no mount data is passed.
    let result = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            source.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if result != 0 {
        return Err(format!(
            "mounting tracefs at {TRACEFS}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Offset of `field` in this kernel's record of tracepoint `event` (e.g. "task/task_newtask").
fn tracepoint_field_offset(event: &str, field: &str) -> Option<u32> {
    let format = std::fs::read_to_string(format!("{TRACEFS}/events/{event}/format")).ok()?;
    let needle = format!(" {field};");
    let line = format.lines().find(|line| line.contains(&needle))?;
    line.split(';')
        .find_map(|part| part.trim().strip_prefix("offset:"))
        .and_then(|offset| offset.parse().ok())
}

/// What one `Tracer::attach` did.
#[derive(Debug, Default)]
pub struct Attached {
    pub failures: Vec<AttachFailure>,
    /// Uprobes that had to be attached for all processes, though the run is scoped to some
    /// (see scoped.rs), with why.
    pub unscoped: Vec<String>,
    /// The attach id of `probes[0]`; the others follow.
    pub first_id: u32,
    /// Indexes into the plan's probes that got attach ids (attached or failed), in id order.
    pub probes: Vec<usize>,
    /// Indexes into the plan's files that were new.
    pub files: Vec<usize>,
}

pub use probectl_pipeline::{KernelStats, Swept};

/// The loaded programs and the maps user space talks to. Dropping it detaches every probe.
pub struct Tracer {
    ebpf: Ebpf,
    traced_pids: HashMap<MapData, u32, u8>,
    stats: PerCpuArray<MapData, u64>,
    /// The kernel's connection table: its byte counts are the truth for open connections.
    connections: HashMap<MapData, ConnectionKey, ConnectionState>,
    /// Go calls in flight and socket fds of connections: swept of exited processes.
    goroutines: HashMap<MapData, GoroutineKey, [u8; ACTIVE_CALL_SIZE]>,
    /// Go calls waiting for their fd (goroutine → call start).
    go_pending_fds: HashMap<MapData, GoroutineKey, u64>,
    socket_fds: HashMap<MapData, FdKey, u64>,
    events: Option<EventRing>,
    attached: usize,
    next_attach_id: u32,
    attached_files: BTreeSet<FileId>,
    /// What connection attribution could not set up (it degrades, it does not stop tracing).
    pub attribution_problems: Vec<String>,
    /// Every link attached, so that dropping the tracer can detach them all at once (see
    /// `detach_in_parallel`).
    links: Vec<AttachedLink>,
    /// With a pid filter, uprobes are process-scoped (no breakpoint in other processes).
    scoped: Option<ScopedProbes>,
    /// The programs chosen for this kernel (features.rs) and what the run says of them.
    mode: Mode,
    programs: UprobePrograms,
    pub kernel_notices: Vec<String>,
    /// Without cookies: the probed addresses given to the kernel so far (`ATTACH_IDS`), to
    /// refuse a second probe at an address the kernel could not tell from the first.
    code_addresses: std::collections::BTreeMap<probectl_common::CodeKey, u32>,
}

/// One attached link: its program and its id there.
enum AttachedLink {
    UProbe(&'static str, UProbeLinkId),
    TracePoint(&'static str, TracePointLinkId),
    RawTracePoint(&'static str, RawTracePointLinkId),
}

fn map_error(name: &'static str) -> impl Fn(aya::maps::MapError) -> BpfError {
    move |error| BpfError::Map {
        name,
        message: error.to_string(),
    }
}

impl Tracer {
    pub fn load(options: &LoadOptions) -> Result<Tracer, BpfError> {
        check_privileges()?;
        // Before the object: a kernel that lacks a feature gets one line, not a verifier log.
        let forced = std::env::var(crate::kernel::features::FORCE_VARIABLE).ok();
        let kernel = crate::kernel::features::KernelFeatures::probe()?.select(forced.as_deref())?;
        let programs = UprobePrograms::of(kernel.mode);
        let address_offsets = if kernel.mode == Mode::Address {
            crate::kernel::btf::running_address_offsets()
                .map_err(|error| BpfError::Load(error_chain(&error)))?
        } else {
            probectl_common::AddressOffsets::default()
        };
        let mut attribution_problems = Vec::new();
        let filter = u8::from(options.filter_by_pid);
        let offsets = crate::kernel::btf::running_kernel_offsets().unwrap_or_else(|error| {
            attribution_problems.push(format!("no socket addresses: {error}"));
            probectl_common::KernelOffsets::default()
        });
        if let Err(problem) = ensure_tracefs() {
            attribution_problems.push(problem);
        }
        // A field the format file lacks is never read at a guessed offset: the BPF program
        // skips the tracepoint (probectl_common::NO_FIELD), and the problem is told.
        let mut field_offset = |event: &str, field: &str| {
            tracepoint_field_offset(event, field).unwrap_or_else(|| {
                attribution_problems.push(format!(
                    "children are not followed: no field {field} in the format of {event}"
                ));
                probectl_common::NO_FIELD
            })
        };
        let newtask_pid = field_offset("task/task_newtask", "pid");
        let newtask_flags = field_offset("task/task_newtask", "clone_flags");
        // Wake the reader when an eighth of the ring is filled; it drains on a timer anyway.
        let wakeup_bytes = u64::from(options.ring_bytes / 8);
        let selection = options.select_at_exec.as_ref();
        let select_bits: u8 = selection.map_or(0, |selection| {
            let mut bits = 0;
            if selection.by_cgroup {
                bits |= probectl_common::select::CGROUP;
            }
            if selection.comm.is_some() {
                bits |= probectl_common::select::COMM;
            }
            bits
        });
        let select_comm: [u8; 16] = selection.and_then(|s| s.comm).unwrap_or([0; 16]);
        // The address programs (no cookies: Linux before 5.15) copy every connection's calls:
        // their return probe has no stack left for the filter's verdict (ebpf/src/main.rs,
        // `track_connection`), so the pipeline alone selects.
        let address_filter = if kernel.mode == Mode::Address {
            probectl_common::AddressFilter::default()
        } else {
            options.address_filter
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("MAX_CAPTURE_BYTES", &options.max_capture_bytes, true)
            .override_global("FILTER_BY_PID", &filter, true)
            .override_global("TRACES_GO", &u8::from(options.go), true)
            .override_global("KERNEL_OFFSETS", &offsets, true)
            .override_global("NEWTASK_PID_OFFSET", &newtask_pid, true)
            .override_global("NEWTASK_FLAGS_OFFSET", &newtask_flags, true)
            .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
            .override_global("SELECT_AT_EXEC", &select_bits, true)
            .override_global("SELECT_COMM", &select_comm, true)
            .override_global("ADDRESS_FILTER", &address_filter, true)
            .override_global("WATCH_HELLOS", &u8::from(options.watch_hellos), true)
            .override_global("ADDRESS_OFFSETS", &address_offsets, true)
            .map_max_entries(
                "ATTACH_IDS",
                if kernel.mode == Mode::Address {
                    capacity::CODE_ADDRESSES
                } else {
                    1
                },
            )
            .map_max_entries(
                "SELECTED_CGROUPS",
                if select_bits & probectl_common::select::CGROUP != 0 {
                    capacity::SELECTED_CGROUPS
                } else {
                    1
                },
            )
            .map_max_entries("EVENTS", options.ring_bytes)
            // Sized from the run's scope: tables the run never uses take one entry (the
            // preallocated ones take their memory at load).
            .map_max_entries(
                "TRACED_PIDS",
                if options.filter_by_pid {
                    capacity::TRACED_PIDS
                } else {
                    1
                },
            )
            .map_max_entries(
                "HELLO_READS",
                if options.watch_hellos {
                    capacity::THREADS
                } else {
                    1
                },
            )
            .map_max_entries(
                "GOROUTINES",
                if options.go { capacity::GOROUTINES } else { 1 },
            )
            .map_max_entries(
                "GO_PENDING_FDS",
                if options.go {
                    capacity::GO_PENDING_FDS
                } else {
                    1
                },
            )
            .load(BPF_OBJECT)
            .map_err(|error| load_error(&error))?;
        // The verifier takes most of a start (tenths of a second for each of the three large
        // uprobe programs): they are verified side by side, one thread each.
        let uprobe_names = programs.all();
        let mut uprobes: Vec<(&str, &mut UProbe)> = Vec::new();
        for (name, program) in ebpf.programs_mut() {
            if let Some(&name) = uprobe_names.iter().find(|wanted| **wanted == name) {
                let program: &mut UProbe =
                    program
                        .try_into()
                        .map_err(|error: aya::programs::ProgramError| {
                            BpfError::Load(error.to_string())
                        })?;
                uprobes.push((name, program));
            }
        }
        if let Some(name) = uprobe_names
            .iter()
            .find(|name| !uprobes.iter().any(|(found, _)| found == *name))
        {
            return Err(BpfError::Load(format!(
                "program {name} missing from the object"
            )));
        }
        std::thread::scope(|scope| {
            let loads: Vec<_> = uprobes
                .into_iter()
                .map(|(_, program)| scope.spawn(move || program.load()))
                .collect();
            loads.into_iter().try_for_each(|load| match load.join() {
                Ok(result) => result.map_err(|error| load_error(&error)),
                Err(_) => Err(BpfError::Load("a program's load panicked".to_string())),
            })
        })?;
        if kernel.mode != Mode::Fast {
            // The chunk program the fallback modes tail-call (ebpf/src/compat.rs).
            let program: &mut UProbe = ebpf
                .program_mut(CHUNKS_PROGRAM)
                .ok_or_else(|| {
                    BpfError::Load(format!("program {CHUNKS_PROGRAM} missing from the object"))
                })?
                .try_into()
                .map_err(|error: aya::programs::ProgramError| BpfError::Load(error.to_string()))?;
            program.load().map_err(|error| load_error(&error))?;
            let fd = program
                .fd()
                .map_err(|error| BpfError::Load(error_chain(&error)))?
                .try_clone()
                .map_err(|error| BpfError::Load(error_chain(&error)))?;
            let map = ebpf.map_mut("CHUNK_PROGRAMS").ok_or(BpfError::Map {
                name: "CHUNK_PROGRAMS",
                message: "missing from the object".into(),
            })?;
            let mut programs: aya::maps::ProgramArray<&mut MapData> =
                aya::maps::ProgramArray::try_from(map).map_err(map_error("CHUNK_PROGRAMS"))?;
            programs
                .set(0, &fd, 0)
                .map_err(map_error("CHUNK_PROGRAMS"))?;
        }
        // The selected cgroups are in their table before the exec tracepoint runs.
        if let Some(selection) = selection.filter(|s| s.by_cgroup) {
            let map = ebpf.map_mut("SELECTED_CGROUPS").ok_or(BpfError::Map {
                name: "SELECTED_CGROUPS",
                message: "missing from the object".into(),
            })?;
            let mut cgroups: HashMap<&mut MapData, u64, u8> =
                HashMap::try_from(map).map_err(map_error("SELECTED_CGROUPS"))?;
            for id in &selection.cgroup_ids {
                cgroups
                    .insert(id, 1, 0)
                    .map_err(map_error("SELECTED_CGROUPS"))?;
            }
        }
        let tracepoints: Vec<(&str, &str, String)> = [
            (NEWTASK_PROGRAM, "task", "task_newtask".to_string()),
            (
                THREAD_EXIT_PROGRAM,
                "sched",
                "sched_process_exit".to_string(),
            ),
            (EXEC_PROGRAM, "sched", "sched_process_exec".to_string()),
            (MMAP_ENTER_PROGRAM, "syscalls", "sys_enter_mmap".to_string()),
            (MMAP_EXIT_PROGRAM, "syscalls", "sys_exit_mmap".to_string()),
        ]
        .into();
        for name in [
            NEWTASK_PROGRAM,
            THREAD_EXIT_PROGRAM,
            EXEC_PROGRAM,
            MMAP_ENTER_PROGRAM,
            MMAP_EXIT_PROGRAM,
        ] {
            let program: &mut TracePoint = ebpf
                .program_mut(name)
                .ok_or_else(|| BpfError::Load(format!("program {name} missing from the object")))?
                .try_into()
                .map_err(|error: aya::programs::ProgramError| BpfError::Load(error.to_string()))?;
            program.load().map_err(|error| load_error(&error))?;
        }
        let mut links = Vec::new();
        // The socket I/O syscalls (fd attribution) and close, on the raw sys_enter tracepoint
        // (see probectl_sys_enter for why not the syscalls/sys_enter_* ones).
        let sys_enter: &mut RawTracePoint = ebpf
            .program_mut(SYS_ENTER_PROGRAM)
            .ok_or_else(|| {
                BpfError::Load(format!(
                    "program {SYS_ENTER_PROGRAM} missing from the object"
                ))
            })?
            .try_into()
            .map_err(|error: aya::programs::ProgramError| BpfError::Load(error.to_string()))?;
        sys_enter.load().map_err(|error| load_error(&error))?;
        match sys_enter.attach("sys_enter") {
            Ok(link) => links.push(AttachedLink::RawTracePoint(SYS_ENTER_PROGRAM, link)),
            Err(error) => attribution_problems
                .push(format!("raw tracepoint sys_enter: {}", error_chain(&error))),
        }
        if options.watch_hellos {
            // Every syscall's return on the host runs it (one map lookup that misses for
            // all but the reads noted at their entry): only while secrets are traced.
            let sys_exit: &mut RawTracePoint = ebpf
                .program_mut(SYS_EXIT_PROGRAM)
                .ok_or_else(|| {
                    BpfError::Load(format!(
                        "program {SYS_EXIT_PROGRAM} missing from the object"
                    ))
                })?
                .try_into()
                .map_err(|error: aya::programs::ProgramError| BpfError::Load(error.to_string()))?;
            sys_exit.load().map_err(|error| load_error(&error))?;
            match sys_exit.attach("sys_exit") {
                Ok(link) => links.push(AttachedLink::RawTracePoint(SYS_EXIT_PROGRAM, link)),
                Err(error) => attribution_problems
                    .push(format!("raw tracepoint sys_exit: {}", error_chain(&error))),
            }
        }
        for (program, category, name) in &tracepoints {
            let attached = ebpf
                .program_mut(program)
                .and_then(|program| <&mut TracePoint>::try_from(program).ok())
                .map(|program| program.attach(category, name));
            match attached {
                Some(Ok(link)) => links.push(AttachedLink::TracePoint(program, link)),
                Some(Err(error)) => attribution_problems.push(format!(
                    "tracepoint {category}/{name}: {}",
                    error_chain(&error)
                )),
                None => {}
            }
        }
        let mut take = |name: &'static str| {
            ebpf.take_map(name).ok_or(BpfError::Map {
                name,
                message: "missing from the object".into(),
            })
        };
        let traced_pids =
            HashMap::try_from(take("TRACED_PIDS")?).map_err(map_error("TRACED_PIDS"))?;
        let stats = PerCpuArray::try_from(take("STATS")?).map_err(map_error("STATS"))?;
        let events = match take("EVENTS")? {
            Map::RingBuf(data) => {
                EventRing::new(data, options.ring_bytes).map_err(|error| BpfError::Map {
                    name: "EVENTS",
                    message: error_chain(&error),
                })?
            }
            _ => {
                return Err(BpfError::Map {
                    name: "EVENTS",
                    message: "not a ring buffer".into(),
                });
            }
        };
        let connections =
            HashMap::try_from(take("CONNECTIONS")?).map_err(map_error("CONNECTIONS"))?;
        let goroutines = HashMap::try_from(take("GOROUTINES")?).map_err(map_error("GOROUTINES"))?;
        let go_pending_fds =
            HashMap::try_from(take("GO_PENDING_FDS")?).map_err(map_error("GO_PENDING_FDS"))?;
        let socket_fds = HashMap::try_from(take("SOCKET_FDS")?).map_err(map_error("SOCKET_FDS"))?;
        Ok(Tracer {
            ebpf,
            traced_pids,
            stats,
            connections,
            goroutines,
            go_pending_fds,
            socket_fds,
            events: Some(events),
            attached: 0,
            next_attach_id: 0,
            attached_files: BTreeSet::new(),
            attribution_problems,
            links,
            scoped: (options.filter_by_pid && options.scoped).then(ScopedProbes::open),
            mode: kernel.mode,
            programs,
            kernel_notices: kernel.notices,
            code_addresses: std::collections::BTreeMap::new(),
        })
    }

    /// The threads of every traced process (with a pid filter).
    fn traced_tasks(&self) -> BTreeSet<u32> {
        crate::kernel::scoped::tasks_of(self.traced_pids.keys().filter_map(Result::ok))
    }

    /// Adds a process to the kernel-side pid filter.
    pub fn trace_pid(&mut self, pid: u32) -> Result<(), BpfError> {
        self.traced_pids
            .insert(pid, 1, 0)
            .map_err(|error| BpfError::PidFilter(error.to_string()))
    }

    /// Attaches the entry and return programs at every attach point of the plan whose file is
    /// not attached yet (a file is attached once, whoever maps it). Attach ids continue from
    /// the previous call; `on_ids(first_id, probes)` is told which plan probes get them before
    /// any is attached, so that no event can carry an id its reader does not know. Points that
    /// fail are reported, not fatal.
    pub fn attach(
        &mut self,
        plan: &Plan,
        on_ids: &mut dyn FnMut(u32, &[usize]),
    ) -> Result<Attached, BpfError> {
        let first_id = self.next_attach_id;
        let new_files: BTreeSet<usize> = (0..plan.files.len())
            .filter(|&index| !self.attached_files.contains(&plan.files[index].file.id))
            .collect();
        let probes: Vec<usize> = (0..plan.probes.len())
            .filter(|&index| new_files.contains(&plan.probes[index].file_index))
            .collect();
        if first_id as usize + probes.len() > MAX_ATTACH_POINTS {
            return Err(BpfError::TooManyAttachPoints {
                count: first_id as usize + probes.len(),
            });
        }
        {
            let map = self.ebpf.map_mut("PROBE_SPECS").ok_or(BpfError::Map {
                name: "PROBE_SPECS",
                message: "missing from the object".into(),
            })?;
            let mut specs: Array<&mut MapData, ProbeSpec> =
                Array::try_from(map).map_err(map_error("PROBE_SPECS"))?;
            for (offset, &index) in probes.iter().enumerate() {
                let planned = &plan.probes[index];
                let mut spec = planned.probe.bpf_spec();
                if let Placement::Emulated { entry, exits } = &planned.placement {
                    // placement.rs proves the offsets small (a function's frame) and the
                    // exits' offsets equal.
                    spec.entry_stack_offset = entry.stack_offset as i32;
                    spec.exit_stack_offset =
                        exits.first().map_or(0, |exit| exit.stack_offset as i32);
                }
                specs
                    .set(first_id + offset as u32, spec, 0)
                    .map_err(map_error("PROBE_SPECS"))?;
            }
        }
        let secrets: Vec<(u32, SecretSpec)> = probes
            .iter()
            .enumerate()
            .filter_map(|(offset, &index)| {
                let planned = &plan.probes[index];
                let secret = planned.probe.secret.as_ref()?;
                let field = planned.random_field.as_ref().map(|(source, _)| source);
                Some((
                    first_id + offset as u32,
                    secret.bpf_spec(planned.probe.abi, planned.probe.connection, field),
                ))
            })
            .collect();
        if !secrets.is_empty() {
            let map = self.ebpf.map_mut("SECRET_SPECS").ok_or(BpfError::Map {
                name: "SECRET_SPECS",
                message: "missing from the object".into(),
            })?;
            let mut specs: Array<&mut MapData, SecretSpec> =
                Array::try_from(map).map_err(map_error("SECRET_SPECS"))?;
            for (id, spec) in secrets {
                specs.set(id, spec, 0).map_err(map_error("SECRET_SPECS"))?;
            }
        }
        on_ids(first_id, &probes);
        // Process-scoped probes are bound to every task traced now; later children inherit
        // them (see scoped.rs).
        // (Most calls come from a lookup that finds nothing new: no /proc walk for those.)
        let mut covered = if self.scoped.is_some() && !probes.is_empty() {
            self.traced_tasks()
        } else {
            BTreeSet::new()
        };
        let first_scoped = self.scoped.as_ref().map_or(0, ScopedProbes::len);
        let tasks: Vec<u32> = covered.iter().copied().collect();
        let mut failures = Vec::new();
        let mut unscoped = Vec::new();
        let mut attached_files = BTreeSet::new();
        let programs = self.programs;
        let cookies = self.mode != Mode::Address;
        for (offset, &index) in probes.iter().enumerate() {
            let planned = &plan.probes[index];
            let attach_id = first_id + offset as u32;
            let file = plan.file_of(planned);
            let mut result = Ok(());
            let uprobes = programs.uprobes_of(
                &planned.placement,
                planned.probe.role,
                planned.probe.entry_only(),
                planned.offset,
            );
            if !cookies {
                // Without cookies the programs find the attach id by address: every address is
                // in the kernel's table before its probe can fire.
                if let Err(message) =
                    self.register_addresses(&file.file.host_path, &uprobes, attach_id)
                {
                    failures.push(AttachFailure {
                        path: file.file.path.clone(),
                        symbol: planned.probe.symbol.clone(),
                        message,
                    });
                    continue;
                }
            }
            for (name, file_offset) in uprobes {
                let Some(program) = self.ebpf.program_mut(name) else {
                    continue;
                };
                let program: &mut UProbe = match program.try_into() {
                    Ok(program) => program,
                    Err(error) => {
                        result = Err(format!("{error}"));
                        break;
                    }
                };
                if let Some(scoped) = &mut self.scoped {
                    let made = program
                        .fd()
                        .map_err(|error| error_chain(&error))
                        .and_then(|fd| {
                            scoped
                                .attach(
                                    fd.as_fd(),
                                    &file.file.host_path,
                                    file_offset,
                                    name == programs.ret,
                                    cookies.then_some(u64::from(attach_id)),
                                    &tasks,
                                )
                                .map_err(|error| error_chain(&error))
                        });
                    match made {
                        Ok(_) => continue,
                        // Traced anyway, for all processes (the BPF filter keeps the scope of
                        // what is captured); said so.
                        Err(message) => unscoped.push(format!(
                            "{} at {:#x} in {}: {message}",
                            planned.probe.symbol,
                            file_offset,
                            file.file.path.display()
                        )),
                    }
                }
                let point = UProbeAttachPoint {
                    location: UProbeAttachLocation::AbsoluteOffset(file_offset),
                    cookie: cookies.then_some(u64::from(attach_id)),
                };
                match program.attach(point, &file.file.host_path, UProbeScope::AllProcesses) {
                    Ok(link) => self.links.push(AttachedLink::UProbe(name, link)),
                    Err(error) => {
                        result = Err(error_chain(&error));
                        break;
                    }
                }
            }
            match result {
                Ok(()) => {
                    self.attached += 1;
                    attached_files.insert(file.file.id);
                }
                Err(message) => failures.push(AttachFailure {
                    path: file.file.path.clone(),
                    symbol: planned.probe.symbol.clone(),
                    message,
                }),
            }
        }
        self.cover_new_tasks(first_scoped, &mut covered, &mut failures);
        self.next_attach_id = first_id + probes.len() as u32;
        // A file none of whose points attached may be tried again (through another process).
        self.attached_files.extend(attached_files);
        Ok(Attached {
            failures,
            unscoped,
            first_id,
            probes,
            files: new_files.into_iter().collect(),
        })
    }

    /// Puts the attach id of every probed address of an attach point (but the uretprobe's) into
    /// `ATTACH_IDS`, keyed as the address programs see it (ebpf/src/compat.rs): the file's inode
    /// number and the file offset, with the program's kind. Refuses an address another attach
    /// point has for the same kind of program: without cookies the two could not be told apart.
    fn register_addresses(
        &mut self,
        path: &std::path::Path,
        uprobes: &[(&'static str, u64)],
        attach_id: u32,
    ) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(path)
            .map_err(|error| format!("reading the inode of the file: {error}"))?
            .ino();
        let keys: Vec<probectl_common::CodeKey> = uprobes
            .iter()
            .filter_map(|(name, file_offset)| {
                let kind = self.programs.code_kind(name)?;
                Some(probectl_common::CodeKey {
                    inode,
                    file_offset: file_offset | (kind << probectl_common::code_kind::SHIFT),
                })
            })
            .collect();
        if let Some(taken) = keys
            .iter()
            .find_map(|key| self.code_addresses.get(key).filter(|id| **id != attach_id))
        {
            return Err(format!(
                "attach point {taken} probes the same address, and this kernel has no uprobe \
                 cookies to tell the two apart"
            ));
        }
        let map = self
            .ebpf
            .map_mut("ATTACH_IDS")
            .ok_or("BPF map ATTACH_IDS is missing")?;
        let mut table: HashMap<&mut MapData, probectl_common::CodeKey, u32> =
            HashMap::try_from(map).map_err(|error| format!("BPF map ATTACH_IDS: {error}"))?;
        for key in keys {
            table
                .insert(key, attach_id, 0)
                .map_err(|error| format!("BPF map ATTACH_IDS (full?): {error}"))?;
            self.code_addresses.insert(key, attach_id);
        }
        Ok(())
    }

    /// Binds the scoped probes made from `first` on to tasks that appeared while they were
    /// made: a child forked by a thread before that thread was covered inherited only the probes
    /// bound by then. Ends when a look finds no new task (a task created after its creator was
    /// covered inherited every probe). A program that forks faster than the probes are bound
    /// for [`COVER_ROUNDS`] rounds is told as a failure, with the tasks left partly covered.
    fn cover_new_tasks(
        &mut self,
        first: usize,
        covered: &mut BTreeSet<u32>,
        failures: &mut Vec<AttachFailure>,
    ) {
        let Some(end) = self.scoped.as_ref().map(ScopedProbes::len) else {
            return;
        };
        if end == first {
            return;
        }
        for _ in 0..COVER_ROUNDS {
            let new: Vec<u32> = self.traced_tasks().difference(covered).copied().collect();
            if new.is_empty() {
                return;
            }
            covered.extend(&new);
            if let Some(Err(error)) = self
                .scoped
                .as_mut()
                .map(|scoped| scoped.cover(first..end, &new))
            {
                failures.push(AttachFailure {
                    path: PathBuf::from("(traced processes)"),
                    symbol: "new tasks".into(),
                    message: error_chain(&error),
                });
                return;
            }
        }
        let left = self.traced_tasks().difference(covered).count();
        if left > 0 {
            failures.push(AttachFailure {
                path: PathBuf::from("(traced processes)"),
                symbol: "new tasks".into(),
                message: format!(
                    "{left} tasks were created faster than the probes could be bound to them \
                     ({COVER_ROUNDS} rounds); they may lack some of the probes"
                ),
            });
        }
    }

    /// Binds the process-scoped probes to `pid`, which has just exec'd, with events only
    /// probectl frees (see `ScopedProbes::rebind`). None without process scope; Some(false)
    /// when the table of such processes is full.
    pub fn rebind_after_exec(&mut self, pid: u32) -> Result<Option<bool>, String> {
        match self.scoped.as_mut() {
            Some(scoped) if !scoped.is_empty() => scoped
                .rebind(pid)
                .map(Some)
                .map_err(|error| error_chain(&error)),
            _ => Ok(None),
        }
    }

    /// Attach points whose both programs are attached.
    pub fn attached(&self) -> usize {
        self.attached
    }

    /// The ring buffer of chunks (taken once, by the event loop).
    pub fn take_events(&mut self) -> Option<EventRing> {
        self.events.take()
    }

    /// Whether the kernel applies `LoadOptions::address_filter` (not with the address
    /// programs: the pipeline alone selects there).
    pub fn filters_addresses(&self) -> bool {
        self.mode != Mode::Address
    }

    pub fn kernel_stats(&self) -> KernelStats {
        let unreadable = std::cell::Cell::new(0);
        let read = |index: u32| -> u64 {
            match self.stats.get(&index, 0) {
                Ok(values) => values.iter().sum(),
                Err(_) => {
                    // Not a zero: counted, so that the summary says its losses are unknown.
                    unreadable.set(unreadable.get() + 1);
                    0
                }
            }
        };
        let mut stats = KernelStats {
            chunks_lost: read(stat::CHUNKS_LOST),
            bytes_lost: read(stat::BYTES_LOST),
            read_faults: read(stat::READ_FAULTS),
            length_faults: read(stat::LENGTH_FAULTS),
            fd_mismatches: read(stat::FD_MISMATCHES),
            fd_unknown: read(stat::FD_UNKNOWN),
            fd_inferred: read(stat::FD_INFERRED),
            fd_ambiguous: read(stat::FD_AMBIGUOUS),
            records_lost: read(stat::RECORDS_LOST),
            nesting_overflows: read(stat::NESTING_OVERFLOWS),
            calls_not_stored: read(stat::CALLS_NOT_STORED),
            returns_missed: read(stat::RETURNS_MISSED),
            loops_not_stored: read(stat::LOOPS_NOT_STORED),
            filter_full: read(stat::FILTER_FULL),
            records_unscanned: read(stat::RECORDS_UNSCANNED),
            bytes_unscanned: read(stat::BYTES_UNSCANNED),
            secrets_lost: read(stat::SECRETS_LOST),
            selected_at_exec: read(stat::SELECTED_AT_EXEC),
            calls_cut: read(stat::CALLS_CUT),
            bytes_cut: read(stat::BYTES_CUT),
            address_unknown: read(stat::ADDRESS_UNKNOWN),
            calls_not_selected: read(stat::CALLS_NOT_SELECTED),
            bytes_not_selected: read(stat::BYTES_NOT_SELECTED),
            counters_unreadable: 0,
            // Counted by the reader of the ring (the event loop), not by the kernel.
            records_oversized: 0,
        };
        stats.counters_unreadable = unreadable.get();
        stats
    }

    /// Removes what processes that exited left in the kernel's tables: Go calls that will
    /// never return, connection state and fds (the last two are LRUs, whose evictions nobody
    /// counts: a dead process's entries must not push out a live one's).
    pub fn sweep(&mut self, tgids: &BTreeSet<u32>) -> Swept {
        let mut swept = Swept::default();
        // A pid that a new process holds already: its entries and the dead one's share the
        // pid, and the new one's must stay (the exit is told after the fact). The dead process
        // itself may still be there as a zombie, not yet reaped.
        let tgids: BTreeSet<u32> = tgids
            .iter()
            .copied()
            .filter(|tgid| {
                let reused = process_state(*tgid).is_some_and(|state| !matches!(state, 'Z' | 'X'));
                swept.pids_reused += u64::from(reused);
                !reused
            })
            .collect();
        if let Some(scoped) = self.scoped.as_mut() {
            scoped.forget(&tgids);
        }
        if tgids.is_empty() {
            return swept;
        }
        // Keys first, removals after: removing during a walk of a hash map restarts it.
        let goroutines: Vec<GoroutineKey> = self
            .goroutines
            .keys()
            .filter_map(Result::ok)
            .filter(|key| tgids.contains(&key.tgid))
            .collect();
        for key in goroutines {
            if self.goroutines.remove(&key).is_ok() {
                swept.goroutines += 1;
            }
        }
        // The fd notes of those calls (a call blocked before its first syscall has one): the
        // same calls, not counted twice.
        let pending: Vec<GoroutineKey> = self
            .go_pending_fds
            .keys()
            .filter_map(Result::ok)
            .filter(|key| tgids.contains(&key.tgid))
            .collect();
        for key in pending {
            let _ = self.go_pending_fds.remove(&key);
        }
        let connections: Vec<ConnectionKey> = self
            .connections
            .keys()
            .filter_map(Result::ok)
            .filter(|key| tgids.contains(&key.tgid))
            .collect();
        for key in connections {
            if self.connections.remove(&key).is_ok() {
                swept.connections += 1;
            }
        }
        let fds: Vec<FdKey> = self
            .socket_fds
            .keys()
            .filter_map(Result::ok)
            .filter(|key| tgids.contains(&key.tgid))
            .collect();
        for key in fds {
            if self.socket_fds.remove(&key).is_ok() {
                swept.socket_fds += 1;
            }
        }
        swept
    }

    /// The kernel's byte counts (write, read) of every connection it still holds, by
    /// (pid, handle).
    pub fn connection_positions(&self) -> Vec<((u32, u64), [u64; 2])> {
        self.connections
            .iter()
            .filter_map(Result::ok)
            .map(|(key, state)| ((key.tgid, key.connection), state.position))
            .collect()
    }
}

/// Links closed at once at most: one thread each.
const DETACH_THREADS: usize = 128;

impl Drop for Tracer {
    /// Detaches every probe before the programs and maps go. Closing one uprobe or tracepoint
    /// link makes the kernel wait for an RCU grace period (uprobe_unregister_sync /
    /// tracepoint_synchronize_unregister: ~100 ms each on this VM), so aya's one-by-one drop
    /// took ~1.9 s for 19 links; closed from parallel threads, the waits overlap.
    fn drop(&mut self) {
        let mut taken: Vec<Box<dyn Send>> = Vec::with_capacity(self.links.len());
        for link in self.links.drain(..) {
            match link {
                AttachedLink::UProbe(name, id) => {
                    let program = self
                        .ebpf
                        .program_mut(name)
                        .and_then(|program| <&mut UProbe>::try_from(program).ok());
                    if let Some(Ok(link)) = program.map(|program| program.take_link(id)) {
                        taken.push(Box::new(link));
                    }
                }
                AttachedLink::RawTracePoint(name, id) => {
                    let program = self
                        .ebpf
                        .program_mut(name)
                        .and_then(|program| <&mut RawTracePoint>::try_from(program).ok());
                    if let Some(Ok(link)) = program.map(|program| program.take_link(id)) {
                        taken.push(Box::new(link));
                    }
                }
                AttachedLink::TracePoint(name, id) => {
                    let program = self
                        .ebpf
                        .program_mut(name)
                        .and_then(|program| <&mut TracePoint>::try_from(program).ok());
                    if let Some(Ok(link)) = program.map(|program| program.take_link(id)) {
                        taken.push(Box::new(link));
                    }
                }
            }
        }
        if let Some(scoped) = &mut self.scoped {
            taken.extend(
                scoped
                    .take_probes()
                    .into_iter()
                    .map(|probe| Box::new(probe) as Box<dyn Send>),
            );
        }
        detach_in_parallel(taken);
        // Their tracefs events go once no descriptor holds them (see `ScopedProbes`' drop).
        drop(self.scoped.take());
        // The programs and maps are dropped after this, with no link left to wait for.
    }
}

/// Drops `links` (each detaches on drop) from up to `DETACH_THREADS` threads at once, and
/// returns when all are detached. A thread that cannot be started leaves its share to be
/// dropped here, one by one: slower, never skipped.
fn detach_in_parallel(links: Vec<Box<dyn Send>>) {
    let threads = links.len().min(DETACH_THREADS);
    if threads <= 1 {
        return drop(links);
    }
    let mut shares: Vec<Vec<Box<dyn Send>>> = (0..threads).map(|_| Vec::new()).collect();
    for (index, link) in links.into_iter().enumerate() {
        shares[index % threads].push(link);
    }
    std::thread::scope(|scope| {
        for share in shares {
            // A small stack: the thread only closes descriptors. If spawning fails, the
            // closure (and with it the share) is dropped right here, which detaches it.
            let _ = std::thread::Builder::new()
                .name("probectl-detach".into())
                .stack_size(64 * 1024)
                .spawn_scoped(scope, move || drop(share));
        }
    });
}

/// An error and its causes, on one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn load_error(error: &dyn std::error::Error) -> BpfError {
    let text = error_chain(error);
    if text.contains("Operation not permitted") || text.contains("EPERM") {
        return BpfError::NotPrivileged {
            missing: "the kernel refused (EPERM)".into(),
        };
    }
    BpfError::Load(text)
}

/// The state letter of process `pid` (`R`, `S`, `Z`, ...), if it exists.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": the comm may hold anything; the state follows its last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbols::placement::Site;

    /// Every data placement of every mode puts its entry uprobe last, after all of its return
    /// probes (see `UprobePrograms::uprobes_of`).
    #[test]
    fn a_call_entry_is_attached_after_its_returns() {
        let site = |file_offset| Site {
            offset: file_offset - 0x1000,
            file_offset,
            stack_offset: 0,
        };
        let placements = [
            Placement::Classic {
                reason: String::new(),
            },
            Placement::Emulated {
                entry: site(0x1004),
                exits: vec![site(0x1010), site(0x1020)],
            },
            Placement::Returns {
                exits: vec![site(0x1030), site(0x1040)],
            },
        ];
        for mode in [Mode::Fast, Mode::Bounded, Mode::Address] {
            let programs = UprobePrograms::of(mode);
            for placement in &placements {
                let uprobes = programs.uprobes_of(placement, Role::Data, false, 0x1000);
                assert!(uprobes.len() >= 2, "{placement:?}: {uprobes:?}");
                let (last, returns) = uprobes.split_last().expect("uprobes");
                assert_eq!(last.0, programs.entry, "{placement:?}: {uprobes:?}");
                assert!(
                    returns.iter().all(|(name, _)| *name != programs.entry),
                    "{uprobes:?}"
                );
            }
        }
    }
}
