//! The control plane: owns the loaded BPF object (`Tracer`) and does everything slow —
//! planning, ELF parsing, attaching — on its own thread, so the event loop that reads the ring
//! buffer never stalls behind it. The data pipeline asks it to look at processes (a program
//! started, a file mapped executable); it tells the pipeline what new attach ids are through
//! the shared [`AttachTable`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::capture::pipeline::{AttachTable, Lookup, LookupCause};
use crate::kernel::{Attached, BpfError, KernelStats, Swept, Tracer};
use crate::output::AttachInfo;
use crate::plan::{plan, Plan, Scope};
use crate::spec::Group;
use crate::symbols::SymbolCache;

/// What the control plane reports at the end of a run.
#[derive(Debug, Default, Clone)]
pub struct ControlReport {
    pub kernel: KernelStats,
    /// The kernel's byte counts of connections still open, by (pid, handle).
    pub open_positions: Vec<((u32, u64), [u64; 2])>,
    pub probes_attached: usize,
    /// Attach points that failed after start (programs started during the run).
    pub late_attach_failures: usize,
    /// Files attached after start.
    pub late_files: usize,
    /// Kernel table entries of exited processes, removed.
    pub swept: Swept,
}

enum Request {
    Look(Vec<Lookup>),
    /// Processes that exited: what they left in the kernel's tables goes.
    Sweep(Vec<u32>),
    Report(mpsc::Sender<ControlReport>),
}

/// The handle the session keeps; dropping it (or `stop`) ends the thread and detaches every
/// probe.
pub struct ControlPlane {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

/// Registers the attach points `attached` gave ids to in `table`, in id order.
pub fn register_ids(table: &AttachTable, plan: &Plan, first_id: u32, probes: &[usize]) {
    let infos = probes
        .iter()
        .map(|&index| {
            let probe = &plan.probes[index];
            let file = plan.file_of(probe);
            AttachInfo {
                plugin: file.group.clone(),
                library: file.file.path.clone(),
                function: probe.probe.symbol.clone(),
                direction: probe.probe.direction,
            }
        })
        .collect();
    // Ids come from one Tracer in order: they always continue the table.
    let continued = table.extend(first_id, infos);
    debug_assert!(continued, "attach ids must continue the attach table");
}

/// Attaches `plan` with its ids registered in `table` first.
pub fn attach_plan(
    tracer: &mut Tracer,
    table: &AttachTable,
    plan: &Plan,
) -> Result<Attached, BpfError> {
    tracer.attach(plan, &mut |first_id, probes| {
        register_ids(table, plan, first_id, probes)
    })
}

impl ControlPlane {
    /// Starts the control thread; it owns `tracer` from now on.
    pub fn start(
        tracer: Tracer,
        groups: Vec<Group>,
        cache: SymbolCache,
        table: AttachTable,
    ) -> ControlPlane {
        let (requests, inbox) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("probectl-control".into())
            .spawn(move || {
                let mut worker = Worker {
                    tracer,
                    groups,
                    cache,
                    table,
                    late_attach_failures: 0,
                    late_files: 0,
                    rebind_failure_said: false,
                    swept: Swept::default(),
                };
                worker.serve(&inbox);
            })
            .ok();
        ControlPlane {
            requests: Some(requests),
            thread,
        }
    }

    /// Asks for processes to be looked at; returns at once.
    pub fn look(&self, lookups: Vec<Lookup>) {
        if lookups.is_empty() {
            return;
        }
        if let Some(requests) = &self.requests {
            let _ = requests.send(Request::Look(lookups));
        }
    }

    /// Asks for what exited processes left in the kernel's tables to be removed; returns at
    /// once.
    pub fn sweep(&self, pids: Vec<u32>) {
        if pids.is_empty() {
            return;
        }
        if let Some(requests) = &self.requests {
            let _ = requests.send(Request::Sweep(pids));
        }
    }

    /// The counters and connection totals, after the lookups asked for before.
    pub fn report(&self) -> ControlReport {
        let (reply, answer) = mpsc::channel();
        let sent = self
            .requests
            .as_ref()
            .is_some_and(|requests| requests.send(Request::Report(reply)).is_ok());
        if !sent {
            return ControlReport::default();
        }
        answer.recv().unwrap_or_default()
    }

    /// Ends the thread, which detaches every probe.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shut_down();
    }
}

struct Worker {
    tracer: Tracer,
    groups: Vec<Group>,
    cache: SymbolCache,
    table: AttachTable,
    late_attach_failures: usize,
    late_files: usize,
    /// A failed rebind after an exec was said (once).
    rebind_failure_said: bool,
    /// What exited processes left in the kernel's tables, removed.
    swept: Swept,
}

impl Worker {
    fn serve(&mut self, inbox: &mpsc::Receiver<Request>) {
        while let Ok(request) = inbox.recv() {
            match request {
                Request::Look(lookups) => {
                    // Coalesce what queued up meanwhile: one look per process (its earliest
                    // cause, for the latency report).
                    let mut pids: BTreeMap<u32, Lookup> = BTreeMap::new();
                    let mut add = |lookups: Vec<Lookup>| {
                        for lookup in lookups {
                            pids.entry(lookup.pid).or_insert(lookup);
                        }
                    };
                    add(lookups);
                    let mut deferred = Vec::new();
                    while let Ok(next) = inbox.try_recv() {
                        match next {
                            Request::Look(more) => add(more),
                            other => deferred.push(other),
                        }
                    }
                    for lookup in pids.into_values() {
                        self.attach_new_files(&lookup);
                    }
                    for request in deferred {
                        self.serve_one(request);
                    }
                }
                other => self.serve_one(other),
            }
        }
    }

    /// A request other than a lookup, in its turn.
    fn serve_one(&mut self, request: Request) {
        match request {
            Request::Look(lookups) => {
                for lookup in lookups {
                    self.attach_new_files(&lookup);
                }
            }
            Request::Sweep(pids) => {
                let pids: BTreeSet<u32> = pids.into_iter().collect();
                self.swept += self.tracer.sweep(&pids);
            }
            Request::Report(reply) => {
                let _ = reply.send(self.report());
            }
        }
    }

    fn report(&self) -> ControlReport {
        ControlReport {
            swept: self.swept,
            kernel: self.tracer.kernel_stats(),
            open_positions: self.tracer.connection_positions(),
            probes_attached: self.tracer.attached(),
            late_attach_failures: self.late_attach_failures,
            late_files: self.late_files,
        }
    }

    /// Binds the process-scoped probes to `pid`, which has just exec'd, before anything else
    /// is looked at (see `ScopedProbes::rebind`). A failure, or a full table, is said once and
    /// counted as a failed attach.
    fn rebind(&mut self, pid: u32) {
        let failure = match self.tracer.rebind_after_exec(pid) {
            Ok(Some(false)) => Some(format!(
                "pid {pid}: {} processes that exec'd hold probes already; its probes rest on \
                 inherited events alone",
                crate::kernel::scoped::REBOUND_PROCESSES
            )),
            Ok(_) => None,
            Err(error) => Some(format!(
                "binding the probes to pid {pid} after its exec: {error}"
            )),
        };
        if let Some(message) = failure {
            self.late_attach_failures += 1;
            if !self.rebind_failure_said {
                self.rebind_failure_said = true;
                crate::notice::warning(crate::notice::Topic::Attach, message);
            }
        }
    }

    /// Attaches the files of `pid` that are not attached yet (a program started after
    /// probectl, a library loaded with dlopen). A process with nothing to trace is no error.
    /// Says how long after the exec or mmap the probes were in place: calls the process made
    /// in that window are not captured.
    fn attach_new_files(&mut self, lookup: &Lookup) {
        let pid = lookup.pid;
        if lookup.why == LookupCause::Exec {
            self.rebind(pid);
        }
        let groups: Vec<&Group> = self.groups.iter().collect();
        let Ok(plan) = plan(&groups, &Scope::Process(pid), &mut self.cache) else {
            return;
        };
        let attached = match attach_plan(&mut self.tracer, &self.table, &plan) {
            Ok(attached) => attached,
            Err(error) => {
                crate::notice::warning(
                    crate::notice::Topic::Attach,
                    format!("attaching to new files of pid {pid} failed: {error}"),
                );
                self.late_attach_failures += 1;
                return;
            }
        };
        if attached.files.is_empty() {
            return;
        }
        self.late_files += attached.files.len();
        self.late_attach_failures += attached.failures.len();
        let cause = match lookup.why {
            LookupCause::Exec => "its exec",
            LookupCause::Map => "the mapping",
        };
        let delay_ms = super::monotonic_ns().saturating_sub(lookup.ts_ns) as f64 / 1e6;
        crate::session::report_plan(
            &plan,
            &attached,
            &format!(" (new in pid {pid}, attached {delay_ms:.1} ms after {cause})"),
            false,
        );
    }
}
