//! Process-scoped uprobes, for `--pid` and `-- cmd`.
//!
//! A uprobe attached for all processes puts its breakpoint into every process that maps the
//! file, and the pid filter in BPF only decides afterwards: tracing one idle pid made every
//! other libssl user on the host pay the trap (2.2× slower with emulated placement, 18.6× with
//! classic). The kernel installs a uprobe's breakpoint only in the address spaces its consumers'
//! filters accept, and a perf event bound to a task makes a uprobe trace event's filter accept
//! that task's address space (`uprobe_perf_filter` in kernel/trace/trace_uprobe.c; a hit in any
//! other process also takes the breakpoint out of it). So every probe here is:
//! - a tracefs uprobe event (`uprobe_events`), not the uprobe PMU that system-wide probes use:
//!   a PMU event reads its file path from the opener's memory when it is created, and an
//!   inherited copy is created at fork, in the forking (traced) process, where that address
//!   means nothing. A tracefs event is named by its id;
//! - one perf event on every task of the traced processes, with `inherit`: the kernel copies it
//!   into every thread and child process those tasks create, inside fork, before the child
//!   runs, so descendants are covered with no window. These events stay disabled: they only
//!   widen the filter, they never record;
//! - an anchor: one more perf event, bound to probectl's own main thread (which maps none of the
//!   probed files), that carries the BPF program with the attach id as cookie. The kernel runs
//!   the program for every hit the filter lets through; no inherited copy ever holds it.
//!
//! Events are named `probectl_<pid>/...`; the group is removed when the probes go, and groups
//! left by a probectl that was killed are removed by the next one.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::kernel::TRACEFS;
/// Also as `UPROBE_EVENTS_C`, for the detach child.
const UPROBE_EVENTS: &str = "/sys/kernel/tracing/uprobe_events";
/// Processes that exec'd while traced whose direct events are held at once (each holds a
/// descriptor per probe and thread; see `ScopedProbes::rebind`).
pub const REBOUND_PROCESSES: usize = 1024;
/// `ScopedProbes::rebound`'s size at which it is first pruned.
const PRUNE_FIRST: usize = 64;
/// Prefix of the tracefs group of every probectl process.
const GROUP_PREFIX: &str = "probectl_";

#[derive(Debug, thiserror::Error)]
pub enum ScopedError {
    #[error("the file {0:?} cannot be opened to name it to tracefs")]
    UnusablePath(String),
    #[error("creating the tracefs uprobe event {event}")]
    CreateEvent {
        event: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the id of tracefs event {event}")]
    EventId {
        event: String,
        #[source]
        source: std::io::Error,
    },
    #[error("opening a perf event on task {task}")]
    PerfEvent {
        task: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("attaching the BPF program to tracefs event {event}")]
    Link {
        event: String,
        #[source]
        source: std::io::Error,
    },
}

/// The tracefs group of probectl process `pid`.
fn group_of(pid: u32) -> String {
    format!("{GROUP_PREFIX}{pid}")
}

/// The tracefs group of this probectl process.
pub fn group_name() -> String {
    group_of(std::process::id())
}

/// What removes every event of `pid`'s group, as written to `uprobe_events`: one line per
/// event of the group there now (Linux 5.10 refuses the whole-group form, `-:group/`, with
/// EINVAL: an empty event name matches the group only since 5.13). Each line is written on its
/// own (`write_removal`).
fn removal_command_of(pid: u32) -> String {
    let group = group_of(pid);
    let events = std::fs::read_to_string(UPROBE_EVENTS).unwrap_or_default();
    let mut command = String::new();
    for line in events.lines() {
        // "p:probectl_12/p0 /usr/lib/...:0x..."
        let Some((_, rest)) = line.split_once(':') else {
            continue;
        };
        let name = rest.split_whitespace().next().unwrap_or_default();
        if name
            .strip_prefix(&group)
            .is_some_and(|event| event.starts_with('/') && event.len() > 1)
        {
            command.push_str(&format!("-:{name}\n"));
        }
    }
    command
}

/// What removes every event of this process's group.
pub fn group_removal_command() -> String {
    removal_command_of(std::process::id())
}

/// `uprobe_events`, as a C string, for code that may not allocate (a forked child).
pub const UPROBE_EVENTS_C: &std::ffi::CStr = c"/sys/kernel/tracing/uprobe_events";

/// One probe: its tracefs event, the anchor holding the program, and the per-task events.
pub struct ScopedProbe {
    id: u64,
    /// Declared before the anchor: the link goes first. None when the program was set on the
    /// anchor itself (it goes with the anchor).
    _link: Option<OwnedFd>,
    _anchor: OwnedFd,
    tasks: Vec<OwnedFd>,
}

/// Every process-scoped probe of one probectl process.
pub struct ScopedProbes {
    probes: Vec<ScopedProbe>,
    /// The direct events of processes that exec'd while traced, by pid, with the process's
    /// start time (to tell a reused pid); at most [`REBOUND_PROCESSES`]. An entry goes when
    /// its process is swept (one that had connections) or found gone by `prune`.
    rebound: BTreeMap<u32, (u64, Vec<OwnedFd>)>,
    /// `rebound`'s size at which the next `prune` looks for processes that are gone.
    prune_at: usize,
    /// Event names are never reused (a removal may fail while the kernel tears one down).
    next_name: u32,
}

impl ScopedProbes {
    /// Removes what killed probectl processes left in tracefs and lets this process hold a
    /// descriptor per probe and task (the soft limit goes up to the hard one).
    pub fn open() -> ScopedProbes {
        remove_stale_groups();
        raise_descriptor_limit();
        ScopedProbes {
            probes: Vec::new(),
            rebound: BTreeMap::new(),
            prune_at: PRUNE_FIRST,
            next_name: 0,
        }
    }

    /// Probes made so far; `cover` takes ranges of these indexes.
    pub fn len(&self) -> usize {
        self.probes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.probes.is_empty()
    }

    /// Makes a probe at `offset` of `path` (a uretprobe if `retprobe`) running `program` with
    /// `cookie`, and binds it to `tasks`. It fires in no process until it covers a task.
    /// Without a cookie (a kernel older than 5.15, which has neither cookies nor perf links),
    /// the program is set on the anchor with `PERF_EVENT_IOC_SET_BPF`.
    pub fn attach(
        &mut self,
        program: BorrowedFd<'_>,
        path: &Path,
        offset: u64,
        retprobe: bool,
        cookie: Option<u64>,
        tasks: &[u32],
    ) -> Result<usize, ScopedError> {
        // tracefs splits its commands at whitespace: such a path is given through a descriptor
        // held while the event is made (the kernel resolves it to the inode then).
        let mut held = None;
        let mut path_text = path.to_string_lossy().into_owned();
        if path_text.chars().any(char::is_whitespace) {
            let file = std::fs::File::open(path)
                .map_err(|_| ScopedError::UnusablePath(path_text.clone()))?;
            path_text = format!("/proc/self/fd/{}", file.as_raw_fd());
            held = Some(file);
        }
        let name = format!("p{}", self.next_name);
        self.next_name += 1;
        let event = format!("{}/{name}", group_name());
        let kind = if retprobe { 'r' } else { 'p' };
        write_uprobe_events(&format!("{kind}:{event} {path_text}:{offset:#x}\n")).map_err(
            |source| ScopedError::CreateEvent {
                event: event.clone(),
                source,
            },
        )?;
        drop(held);
        let created = (|| {
            let id_path = format!("{TRACEFS}/events/{event}/id");
            let id = std::fs::read_to_string(&id_path)
                .and_then(|text| {
                    text.trim().parse::<u64>().map_err(|error| {
                        std::io::Error::new(std::io::ErrorKind::InvalidData, error)
                    })
                })
                .map_err(|source| ScopedError::EventId {
                    event: event.clone(),
                    source,
                })?;
            let own = std::process::id();
            let anchor = open_tracepoint_event(id, own, Binding::Anchor)
                .map_err(|source| ScopedError::PerfEvent { task: own, source })?;
            let link = match cookie {
                Some(cookie) => link_program(program, anchor.as_fd(), cookie).map(Some),
                None => set_program(program, anchor.as_fd()).map(|()| None),
            }
            .map_err(|source| ScopedError::Link {
                event: event.clone(),
                source,
            })?;
            Ok(ScopedProbe {
                id,
                _link: link,
                _anchor: anchor,
                tasks: Vec::new(),
            })
        })();
        let probe = match created {
            Ok(probe) => probe,
            Err(error) => {
                let _ = write_uprobe_events(&format!("-:{event}\n"));
                return Err(error);
            }
        };
        self.probes.push(probe);
        let index = self.probes.len() - 1;
        if let Err(error) = self.cover(index..index + 1, tasks) {
            // Not half made: the caller may attach the point another way.
            drop(self.probes.pop());
            let _ = write_uprobe_events(&format!("-:{event}\n"));
            return Err(error);
        }
        Ok(index)
    }

    /// Binds the probes `range` to `tasks` as well. A task that is gone is skipped.
    pub fn cover(
        &mut self,
        range: std::ops::Range<usize>,
        tasks: &[u32],
    ) -> Result<(), ScopedError> {
        for probe in self.probes.get_mut(range).unwrap_or_default() {
            for &task in tasks {
                match open_tracepoint_event(probe.id, task, Binding::Covering) {
                    Ok(fd) => probe.tasks.push(fd),
                    Err(error) if error.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(source) => return Err(ScopedError::PerfEvent { task, source }),
                }
            }
        }
        Ok(())
    }

    /// Binds every probe to the tasks of `pid`, which has just exec'd, with events that are
    /// not inherited. Why: the kernel's filter accepts a process while a perf event bound to
    /// one of its tasks exists, and inherited events do not stay with their task. Between
    /// processes cloned from the same parent, perf swaps whole contexts at a context switch
    /// (its "context switch optimization"), so a process that exits can free a sibling's
    /// events; when they were the sibling's last, the kernel takes the breakpoints out of it,
    /// and an exec after that maps the file without them. (That is our reading of what about
    /// one headless Chromium run in ten showed: its network service had no breakpoints and
    /// traced nothing. No kernel tracing was at hand to see it happen.) A direct event is
    /// freed only when probectl closes it, so the process stays accepted; if the filter did
    /// not accept it, opening one makes the kernel put the breakpoints in; and it gives the
    /// process a perf context of its own, which is never swapped. False when
    /// [`REBOUND_PROCESSES`] processes are held already.
    pub fn rebind(&mut self, pid: u32) -> Result<bool, ScopedError> {
        if self.rebound.len() >= self.prune_at {
            self.prune();
        }
        if self.rebound.len() >= REBOUND_PROCESSES && !self.rebound.contains_key(&pid) {
            return Ok(false);
        }
        let Some(start) = start_time(pid) else {
            // Gone already: it holds nothing.
            self.rebound.remove(&pid);
            return Ok(true);
        };
        let tasks = tasks_of([pid]);
        let mut events = Vec::with_capacity(self.probes.len() * tasks.len());
        for probe in &self.probes {
            for &task in &tasks {
                match open_tracepoint_event(probe.id, task, Binding::Direct) {
                    Ok(fd) => events.push(fd),
                    Err(error) if error.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(source) => return Err(ScopedError::PerfEvent { task, source }),
                }
            }
        }
        // An earlier exec's events go after the new ones are open: closing them first could
        // leave the process unaccepted for a moment, and the kernel would take the
        // breakpoints out.
        if events.is_empty() {
            self.rebound.remove(&pid);
        } else {
            self.rebound.insert(pid, (start, events));
        }
        Ok(true)
    }

    /// Drops the entries of processes that are gone (most exit with no connection, so no
    /// sweep names them), and sets the next size to look at: twice what is left, so that the
    /// looks cost a constant per rebind.
    fn prune(&mut self) {
        self.rebound
            .retain(|pid, (start, _)| start_time(*pid) == Some(*start));
        self.prune_at = (self.rebound.len() * 2).clamp(PRUNE_FIRST, REBOUND_PROCESSES);
    }

    /// Drops the direct events of processes that exited.
    pub fn forget(&mut self, pids: &BTreeSet<u32>) {
        self.rebound.retain(|pid, _| !pids.contains(pid));
    }

    /// Takes the probes out (to be closed elsewhere, e.g. in parallel); `remove_events` then
    /// removes their tracefs events. The direct events go with the first probe: a tracefs
    /// event cannot be removed while a descriptor of it is open.
    pub fn take_probes(&mut self) -> Vec<ScopedProbe> {
        let rebound = std::mem::take(&mut self.rebound);
        if let Some(first) = self.probes.first_mut() {
            first
                .tasks
                .extend(rebound.into_values().flat_map(|(_, events)| events));
        }
        std::mem::take(&mut self.probes)
    }

    /// Removes this process's tracefs events. It fails while a descriptor of one is open (a
    /// background child that closes them removes them itself).
    pub fn remove_events(&self) {
        let _ = write_uprobe_events(&group_removal_command());
    }
}

impl Drop for ScopedProbes {
    /// Closes the probes and removes their tracefs events. When a detach child holds the
    /// descriptors, it removes the events after it closes them: trying here would fail, and
    /// could first wait behind another tracer's teardown, which holds the kernel's event mutex
    /// through RCU grace periods.
    fn drop(&mut self) {
        drop(self.take_probes());
        if !super::detach::detach_child_started() {
            self.remove_events();
        }
    }
}

/// When process `pid` started (clock ticks after boot, `/proc/PID/stat`'s 22nd field): with
/// the pid, it names one process. None when there is no such process, or it is a zombie.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": the comm may hold anything; the fields follow its last ')'.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    // The state was field 3; the start time is field 22.
    fields.nth(18)?.parse().ok()
}

/// The threads of every process in `tgids` that exist now.
pub fn tasks_of(tgids: impl IntoIterator<Item = u32>) -> BTreeSet<u32> {
    let mut tasks = BTreeSet::new();
    for tgid in tgids {
        let Ok(entries) = std::fs::read_dir(format!("/proc/{tgid}/task")) else {
            continue;
        };
        tasks.extend(
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok()),
        );
    }
    tasks
}

fn write_uprobe_events(command: &str) -> std::io::Result<()> {
    let mut result = Ok(());
    // One write per line: the kernel stops a write at its first failing command.
    for line in command.split_inclusive('\n') {
        let written = std::fs::OpenOptions::new()
            .append(true)
            .open(UPROBE_EVENTS)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        if written.is_err() {
            result = written;
        }
    }
    result
}

/// Removes the groups of probectl processes that no longer run (killed before they could).
fn remove_stale_groups() {
    let Ok(events) = std::fs::read_to_string(UPROBE_EVENTS) else {
        return;
    };
    let own = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
    let stale: BTreeSet<u32> = events
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(':')?;
            let (group, _) = rest.split_once('/')?;
            group.strip_prefix(GROUP_PREFIX)?.parse::<u32>().ok()
        })
        // A pid that runs another program now is stale too; one that runs our program is
        // left alone (its events are in use anyway, and the kernel would refuse).
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).map_or(true, |comm| comm != own)
        })
        .collect();
    for pid in stale {
        // Busy while a background child still holds them: it removes them itself.
        let _ = write_uprobe_events(&removal_command_of(pid));
    }
}

fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: limit is a valid rlimit for the kernel to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0
        && limit.rlim_cur < limit.rlim_max
    {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: limit is a valid rlimit; raising the soft limit to the hard one is allowed.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    }
}

/// `struct perf_event_attr` up to `config1` (PERF_ATTR_SIZE_VER0, which every kernel accepts).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_DISABLED: u64 = 1 << 0;
const PERF_FLAG_INHERIT: u64 = 1 << 1;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// What a perf event of a probe is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Binding {
    /// Carries the program (probectl's own thread): enabled, not inherited.
    Anchor,
    /// Widens the filter to a task and, through inheritance, its descendants: disabled.
    Covering,
    /// Widens the filter to one process that exec'd, for as long as probectl holds it:
    /// disabled and not inherited (see `ScopedProbes::rebind`).
    Direct,
}

/// A perf event of tracepoint `id` bound to `task` (any CPU).
fn open_tracepoint_event(id: u64, task: u32, binding: Binding) -> std::io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        kind: PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: id,
        sample_period: 1,
        flags: match binding {
            Binding::Anchor => 0,
            Binding::Covering => PERF_FLAG_DISABLED | PERF_FLAG_INHERIT,
            Binding::Direct => PERF_FLAG_DISABLED,
        },
        ..PerfEventAttr::default()
    };
    // SAFETY: attr is a valid perf_event_attr of the size it states; the kernel only reads it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            task as libc::pid_t,
            -1 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `PERF_EVENT_IOC_SET_BPF` (`_IOW('$', 8, __u32)`).
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;

/// Sets `program` on the perf event `event` (the attach of kernels without perf links): it
/// stays until the event is closed.
fn set_program(program: BorrowedFd<'_>, event: BorrowedFd<'_>) -> std::io::Result<()> {
    // SAFETY: the ioctl takes the program's descriptor by value; both descriptors are open.
    let result = unsafe {
        libc::ioctl(
            event.as_raw_fd(),
            PERF_EVENT_IOC_SET_BPF as _,
            program.as_raw_fd(),
        )
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `union bpf_attr`'s `link_create` for a perf event, padded with zeros (the kernel checks
/// that the bytes it does not know are zero).
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    bpf_cookie: u64,
    padding: [u64; 4],
}

const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PERF_EVENT: u32 = 41;

/// Attaches `program` to the perf event `event` with `cookie`, as a BPF link.
fn link_program(
    program: BorrowedFd<'_>,
    event: BorrowedFd<'_>,
    cookie: u64,
) -> std::io::Result<OwnedFd> {
    let attr = LinkCreateAttr {
        prog_fd: program.as_raw_fd() as u32,
        target_fd: event.as_raw_fd() as u32,
        attach_type: BPF_PERF_EVENT,
        bpf_cookie: cookie,
        ..LinkCreateAttr::default()
    };
    // SAFETY: attr is a valid, zero-padded bpf_attr prefix of the size passed; the kernel only
    // reads it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            &attr as *const LinkCreateAttr,
            std::mem::size_of::<LinkCreateAttr>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns (it is close-on-exec
    // by default for BPF links).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start time is `/proc/PID/stat`'s 22nd field (this test binary's comm has no
    /// space, so a plain split finds it too), and a pid with no process has none.
    #[test]
    fn start_time_is_the_22nd_field_of_stat() {
        let pid = std::process::id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let field: u64 = stat
            .split_whitespace()
            .nth(21)
            .and_then(|field| field.parse().ok())
            .expect("field 22");
        assert_eq!(start_time(pid), Some(field));
        assert_eq!(start_time(u32::MAX), None);
    }
}
