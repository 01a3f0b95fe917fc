//! What a finished session reports on stderr: totals, every loss by cause, and one record per
//! connection.

use std::process::ExitStatus;

use crate::capture::connections::{Connection, Folded};
use crate::capture::pipeline::{ContainerCounts, PipelineCounts};
use crate::{KernelStats, Swept};

/// Connections the summary lists one by one (those with losses are always listed).
const SUMMARY_CONNECTIONS: usize = 20;

/// What a finished session reports.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub counts: PipelineCounts,
    pub kernel: KernelStats,
    /// The connections kept one by one (every open one, the most recent ended ones), with
    /// their byte counts.
    pub connections: Vec<Connection>,
    /// Totals of the ended connections folded out of the table (see `KEPT_ENDED`).
    pub folded: Folded,
    /// Connections ended because their process was gone without closing them.
    pub ended_by_exit: u64,
    /// Events that arrived behind their stream's position.
    pub out_of_order: u64,
    /// Connections whose kernel state restarted without an end (evicted).
    pub connections_restarted: u64,
    pub probes_attached: usize,
    /// Attach points that failed, at start and later (programs started during the run).
    pub attach_failures: usize,
    /// The exit status of the command probectl started, if any.
    pub command_status: Option<ExitStatus>,
    /// Kernel table entries that exited processes left, removed.
    pub swept: Swept,
    /// probectl's own memory at the end of the run (the live run's, in a replay).
    pub memory: MemoryUse,
    /// What the writer counted (`--decode http`, pcapng), for the report.
    pub output: Option<serde_json::Value>,
    /// Secrets were traced (`--keylog`): each connection says its keys, or "keys not seen".
    pub keys_traced: bool,
    /// Handles whose secrets were dropped before their connection began (see
    /// `KEYS_PENDING_MAX`).
    pub keys_evicted: u64,
    /// Handshakes whose handle never moved data: their secrets are tied to no connection.
    pub handshakes_without_data: u64,
    /// `--packets`: what the packet capture wrote and dropped.
    pub packets: Option<crate::output::packets::PacketCounts>,
    /// What was captured per container, by id (sorted), and in the containers past the
    /// table's bound together.
    pub containers: Vec<(String, ContainerCounts)>,
    pub containers_other: ContainerCounts,
    pub selection: SelectionSummary,
    /// `--export`: what became of the spans.
    pub export: Option<ExportCounts>,
    /// Pod names from the container runtime's CRI socket (when one answered).
    pub cri: Option<CriCounts>,
}

/// What the lookups of pod names on the container runtime's CRI socket did: each container
/// met is asked about once, and is named, unknown to the runtime, or failed.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CriCounts {
    /// The socket, and the runtime that answers on it (`containerd v1.6.20`).
    pub socket: String,
    pub runtime: String,
    /// Containers asked about (each once).
    pub containers_asked: u64,
    /// Of those, in a pod the runtime named.
    pub pods_named: u64,
    /// Of those, unknown to the runtime (a container of another runtime on the node).
    pub unknown: u64,
    /// Of those, whose call failed or timed out: their processes carry no pod name.
    pub failed: u64,
    /// Containers met within 30 s of a failure, not asked then (asked when met again after).
    pub not_asked_runtime_failing: u64,
    /// Times the cache of answers was full and started again.
    pub cache_cleared: u64,
}

/// What an exporter did with the exchanges it was given: every one is delivered or dropped
/// by a cause (`offered = delivered + dropped_*`).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ExportCounts {
    /// Where to (`otlp http://...`).
    pub target: String,
    /// Exchanges handed to the exporter.
    pub offered: u64,
    /// Spans the receiver accepted.
    pub delivered: u64,
    /// Dropped because the queue was full (the receiver down or slow).
    pub dropped_queue_full: u64,
    /// Dropped because every attempt to send their batch failed.
    pub dropped_export_failed: u64,
    /// Still queued when the run ended and could not be sent before the deadline.
    pub dropped_at_exit: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// The last error the receiver (or the connection to it) gave.
    pub last_error: Option<String>,
    /// The queue's bound (spans).
    pub queue_capacity: u64,
    /// `--export-payloads`: what became of the payload log records (one per request and per
    /// response seen), counted the same way, apart from the spans.
    pub payloads: Option<PayloadCounts>,
}

/// What the exporter did with the payload log records it was given: each is delivered or
/// dropped by a cause (`offered = delivered + dropped_*`).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PayloadCounts {
    /// Log records handed to the exporter (a request or a response each).
    pub offered: u64,
    /// Records the receiver accepted.
    pub delivered: u64,
    /// Dropped because the queue was full (in records, or in bytes: `queue_bytes`).
    pub dropped_queue_full: u64,
    /// Dropped because every attempt to send their batch failed.
    pub dropped_export_failed: u64,
    /// Still queued when the run ended and could not be sent before the deadline.
    pub dropped_at_exit: u64,
    /// Body bytes in the delivered records.
    pub body_bytes_delivered: u64,
    /// The queue's bounds: records, and body bytes.
    pub queue_capacity: u64,
    pub queue_bytes: u64,
}

/// What a run selected: processes (in the kernel) and connections (in the pipeline).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SelectionSummary {
    /// The process selections (`container ID12`, `cgroup PATH`, `command name NAME`).
    pub processes: Vec<String>,
    /// Made in the kernel (the pid filter): other processes' calls are never copied.
    pub in_kernel: bool,
    /// Processes that matched when the run started.
    pub processes_at_start: u64,
    /// The connection selections (`port N`, `host ADDR`).
    pub addresses: Vec<String>,
    /// All of them are matched in the kernel too, when a connection's socket is first seen
    /// (false: more than its filter holds; matched after the copy only).
    pub addresses_in_kernel: bool,
}

/// probectl's memory, from `/proc/self/status` (KiB; 0 where it could not be read).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct MemoryUse {
    /// The peak resident set (VmHWM), the ring buffer's pages included (mapped once).
    pub peak_rss_kib: u64,
    /// The resident anonymous memory (RssAnon): probectl's own heap and stacks.
    pub heap_kib: u64,
}

impl MemoryUse {
    /// This process's memory now.
    pub fn of_this_process() -> MemoryUse {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        MemoryUse {
            peak_rss_kib: field("VmHWM"),
            heap_kib: field("RssAnon"),
        }
    }
}

/// Bumped when a field of [`Summary::to_json`] changes meaning or goes away.
pub const REPORT_FORMAT: u32 = 2;

impl Summary {
    /// Connections `--port`/`--host` left out in the kernel, kept and folded.
    fn connections_not_selected(&self) -> u64 {
        self.connections.iter().filter(|c| c.not_selected).count() as u64 + self.folded.not_selected
    }

    /// The summary as one JSON object (`--report FILE`): what tests and scripts read, instead
    /// of the prose on stderr. Counts are numbers; every cause of loss has its own field.
    pub fn to_json(&self) -> serde_json::Value {
        let k = &self.kernel;
        let connection = |c: &Connection| {
            let lost = c.lost();
            serde_json::json!({
                "id": c.id,
                "pid": c.pid,
                "handle": format!("{:#x}", c.handle),
                "fd": c.fd,
                "transport": c.transport,
                "local": c.local,
                "remote": c.remote,
                "written": c.moved[0],
                "read": c.moved[1],
                "not_captured_written": lost[0],
                "not_captured_read": lost[1],
                "closed": c.closed,
                "not_selected": c.not_selected,
                "keys": self.keys_traced.then(|| if c.keys.secrets == 0 {
                    serde_json::json!("not seen")
                } else {
                    serde_json::json!({
                        "secrets": c.keys.secrets,
                        "client_random": c.keys.client_random,
                        "labels": c.keys.labels,
                    })
                }),
                "cgroup": c.identity.as_ref().map(|i| i.cgroup.as_str()),
                "container": c.identity.as_ref().and_then(|i| i.container.as_deref()),
            })
        };
        let container = |id: Option<&str>, c: &ContainerCounts| {
            serde_json::json!({
                "id": id,
                "runtime": c.runtime.map(|r| r.as_str()),
                "pod_uid": c.pod_uid,
                "pod": c.pod,
                "processes": c.processes,
                "events": c.events,
                "bytes_captured": c.bytes_captured,
            })
        };
        let closed =
            self.connections.iter().filter(|c| c.closed).count() as u64 + self.folded.connections;
        serde_json::json!({
            "format": REPORT_FORMAT,
            "events": self.counts.events,
            "bytes_captured": self.counts.bytes_captured,
            "bytes_truncated": self.counts.bytes_truncated,
            "probes": {
                "attached": self.probes_attached,
                "failed": self.attach_failures,
            },
            "losses": {
                "chunks_ring_full": k.chunks_lost,
                "bytes_ring_full": k.bytes_lost,
                "calls_chunk_loop_table_full": k.loops_not_stored,
                "calls_cut_bounded_loop": k.calls_cut,
                "bytes_cut_bounded_loop": k.bytes_cut,
                "calls_address_unknown": k.address_unknown,
                "buffers_unreadable": k.read_faults,
                "lengths_unreadable": k.length_faults,
                "calls_not_stored": k.calls_not_stored,
                "calls_nesting_overflow": k.nesting_overflows,
                "returns_missed": k.returns_missed,
                "records_ring_full": k.records_lost,
                "records_oversized": k.records_oversized,
                "processes_pid_filter_full": k.filter_full,
                "tls13_records_padding_unscanned": k.records_unscanned,
                "tls13_bytes_padding_unscanned": k.bytes_unscanned,
                "kernel_counters_unreadable": k.counters_unreadable,
                "events_out_of_order": self.out_of_order,
                "connections_restarted": self.connections_restarted,
                "unknown_records": self.counts.unknown_records,
                "unknown_attach_ids": self.counts.unknown_attach_ids,
            },
            "loss_messages": self.losses(),
            "fds": {
                "events_without_fd": self.counts.events_without_fd,
                "calls_emitted_without_fd": k.fd_unknown,
                "calls_on_two_fds": k.fd_mismatches,
                "connections_inferred": k.fd_inferred,
                "waiting_writes_ambiguous": k.fd_ambiguous,
            },
            "connections": {
                "total": self.connections.len() as u64 + self.folded.connections,
                "closed": closed,
                "ended_with_their_process": self.ended_by_exit,
                "not_selected": self.connections_not_selected(),
                "folded": {
                    "connections": self.folded.connections,
                    "written": self.folded.moved[0],
                    "read": self.folded.moved[1],
                    "not_captured_written": self.folded.lost[0],
                    "not_captured_read": self.folded.lost[1],
                    "with_losses": self.folded.lossy,
                    "not_selected": self.folded.not_selected,
                },
                "kept": self.connections.iter().map(connection).collect::<Vec<_>>(),
            },
            "keylog": self.keys_traced.then(|| serde_json::json!({
                "secrets": self.counts.secrets,
                "written": self.counts.secrets_written,
                "unusable": self.counts.secrets_unusable,
                "without_handle": self.counts.secrets_untied,
                "tied_by_client_hello": self.counts.secrets_tied_by_client_hello,
                "without_client_random": self.counts.secrets_without_client_random,
                "client_hellos": self.counts.client_hellos,
                "client_hellos_forgotten": self.counts.client_hellos_forgotten,
                "repeated_entries_skipped": self.counts.secrets_repeated,
                "lost_ring_full": self.kernel.secrets_lost,
                "handles_evicted_before_their_connection": self.keys_evicted,
                "handshakes_without_data": self.handshakes_without_data,
                "connections_keys_not_seen": self.connections.iter().filter(|c| c.keys.secrets == 0).count(),
            })),
            "packets": self.packets,
            "command_exit_code": self.command_status.and_then(|status| status.code()),
            "kernel_entries_of_exited_processes_removed": {
                "go_calls": self.swept.goroutines,
                "connections": self.swept.connections,
                "socket_fds": self.swept.socket_fds,
                "not_removed_pid_reused": self.swept.pids_reused,
            },
            "memory": {
                "peak_rss_kib": self.memory.peak_rss_kib,
                "heap_kib": self.memory.heap_kib,
            },
            "output": self.output,
            "processes": {
                "identities_unresolved": self.counts.identities_unresolved,
                "identities_evicted": self.counts.identities_evicted,
            },
            "containers": self
                .containers
                .iter()
                .map(|(id, counts)| container(Some(id), counts))
                .collect::<Vec<_>>(),
            "containers_not_listed": container(None, &self.containers_other),
            "export": self.export,
            "cri": self.cri,
            "selection": {
                "processes": self.selection.processes,
                "in_kernel": self.selection.in_kernel,
                "processes_at_start": self.selection.processes_at_start,
                "processes_admitted_at_exec": k.selected_at_exec,
                "addresses": self.selection.addresses,
                "addresses_in_kernel": self.selection.addresses_in_kernel,
                "calls_not_selected_in_kernel": k.calls_not_selected,
                "bytes_not_selected_in_kernel": k.bytes_not_selected,
                "events_not_selected": self.counts.events_not_selected,
                "bytes_not_selected": self.counts.bytes_not_selected,
                "events_address_unknown": self.counts.events_address_unknown,
            },
        })
    }

    /// Every cause of loss with its count, those that happened only.
    pub fn losses(&self) -> Vec<String> {
        let kernel = &self.kernel;
        let mut losses = Vec::new();
        let mut add = |count: u64, text: String| {
            if count > 0 {
                losses.push(text);
            }
        };
        add(
            kernel.chunks_lost,
            format!(
                "{} chunks ({} bytes) found the ring buffer full (or the chunk-loop table full: {} calls)",
                kernel.chunks_lost, kernel.bytes_lost, kernel.loops_not_stored
            ),
        );
        add(
            kernel.calls_cut,
            format!(
                "{} calls cut ({} bytes): longer than this kernel's bounded chunk loop copies \
                 (no bpf_loop, Linux 5.17+)",
                kernel.calls_cut, kernel.bytes_cut
            ),
        );
        add(
            kernel.address_unknown,
            format!(
                "{} calls not traced: their probe was not found by code address (no uprobe \
                 cookies, Linux 5.15+)",
                kernel.address_unknown
            ),
        );
        add(
            kernel.read_faults,
            format!("{} buffers could not be read", kernel.read_faults),
        );
        add(
            kernel.length_faults,
            format!("{} call lengths could not be read", kernel.length_faults),
        );
        add(
            kernel.calls_not_stored,
            format!(
                "{} calls not traced: the in-flight call table was full",
                kernel.calls_not_stored
            ),
        );
        add(
            kernel.nesting_overflows,
            format!(
                "{} calls not traced: nested too deep",
                kernel.nesting_overflows
            ),
        );
        add(
            kernel.returns_missed,
            format!(
                "{} calls whose return was never seen (longjmp, exception, cancelled thread)",
                kernel.returns_missed
            ),
        );
        add(
            kernel.records_lost,
            format!(
                "{} connection/close/process records found the ring buffer full",
                kernel.records_lost
            ),
        );
        add(
            kernel.records_oversized,
            format!(
                "{} records longer than any record the BPF programs write were skipped unread",
                kernel.records_oversized
            ),
        );
        add(
            kernel.secrets_lost,
            format!(
                "{} session secrets found the ring buffer full (not in the key log)",
                kernel.secrets_lost
            ),
        );
        add(
            self.counts.secrets_unusable,
            format!(
                "{} session secrets not whole (unreadable, or longer than a key-log line takes): not in the key log",
                self.counts.secrets_unusable
            ),
        );
        add(
            kernel.counters_unreadable,
            format!(
                "{} of the kernel's counters could not be read: the losses they count are unknown",
                kernel.counters_unreadable
            ),
        );
        add(
            kernel.records_unscanned,
            format!(
                "{} TLS 1.3 records ({} bytes) not captured: padded beyond {} bytes, type unknown",
                kernel.records_unscanned,
                kernel.bytes_unscanned,
                probectl_common::TLS13_PADDING_SCAN
            ),
        );
        add(
            kernel.filter_full,
            format!(
                "{} new processes not traced: the pid filter was full",
                kernel.filter_full
            ),
        );
        add(
            self.connections_restarted,
            format!(
                "{} connections restarted (kernel connection state evicted)",
                self.connections_restarted
            ),
        );
        add(
            self.out_of_order,
            format!("{} events out of order", self.out_of_order),
        );
        add(
            self.counts.unknown_records,
            format!("{} unknown records", self.counts.unknown_records),
        );
        add(
            self.counts.unknown_attach_ids,
            format!(
                "{} events of unknown attach points",
                self.counts.unknown_attach_ids
            ),
        );
        losses
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "probectl: {} events, {} bytes captured, {} bytes truncated (over --max-bytes), \
             {} chunks lost ({} bytes), {} probes attached, {} failed to attach",
            self.counts.events,
            self.counts.bytes_captured,
            self.counts.bytes_truncated,
            self.kernel.chunks_lost,
            self.kernel.bytes_lost,
            self.probes_attached,
            self.attach_failures,
        )?;
        let losses = self.losses();
        if losses.is_empty() {
            write!(f, "\nprobectl: losses: none")?;
        } else {
            write!(f, "\nprobectl: losses: {}", losses.join("; "))?;
        }
        let closed =
            self.connections.iter().filter(|c| c.closed).count() as u64 + self.folded.connections;
        let not_selected = self.connections_not_selected();
        let not_selected = if not_selected > 0 {
            format!("; {not_selected} of them not selected by --port/--host, not copied")
        } else {
            String::new()
        };
        write!(
            f,
            "\nprobectl: {} connections ({closed} closed{not_selected}), {} events without a known fd, {} calls on two fds",
            self.connections.len() as u64 + self.folded.connections,
            self.counts.events_without_fd,
            self.kernel.fd_mismatches,
        )?;
        if self.kernel.fd_inferred > 0 || self.kernel.fd_ambiguous > 0 {
            // Libraries that buffer (Bun's BoringSSL) make no socket syscall inside their
            // calls: the fd comes from the thread's socket calls next to them.
            write!(
                f,
                "\nprobectl: fds inferred from the socket syscalls next to the library's calls: \
                 {} connection handles (their earlier calls waited for it); {} waiting writes \
                 left without one (two connections waited)",
                self.kernel.fd_inferred, self.kernel.fd_ambiguous,
            )?;
        }
        // Every connection with a loss, and the first few of the others: one record each.
        let mut listed = 0;
        for connection in &self.connections {
            if connection.not_selected {
                continue;
            }
            let lost = connection.lost();
            let lossy = lost != [0, 0];
            if !lossy && listed >= SUMMARY_CONNECTIONS {
                continue;
            }
            listed += 1;
            let container = connection
                .identity
                .as_ref()
                .and_then(|i| i.short_container())
                .map(|id| format!(", container {id}"))
                .unwrap_or_default();
            write!(
                f,
                "\nprobectl: conn#{} {} (pid {}{container}): {} bytes written, {} read",
                connection.id,
                connection.describe(),
                connection.pid,
                connection.moved[0],
                connection.moved[1],
            )?;
            if lossy {
                write!(
                    f,
                    ", not captured {} bytes written, {} bytes read",
                    lost[0], lost[1]
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
            if self.keys_traced {
                match connection.keys.secrets {
                    0 => write!(f, ", keys not seen")?,
                    1 => write!(f, ", keys: 1 secret")?,
                    count => write!(f, ", keys: {count} secrets")?,
                }
            }
        }
        // The connections --port/--host left out are told in the count above, not here.
        let listable = self.connections.iter().filter(|c| !c.not_selected).count();
        if listed < listable {
            write!(
                f,
                "\nprobectl: ... and {} more connections",
                listable - listed
            )?;
        }
        if self.keys_traced {
            write!(
                f,
                "\nprobectl: keys: {} secrets seen, {} written to the key log, {} without a connection handle, {} handshakes that moved no data",
                self.counts.secrets,
                self.counts.secrets_written,
                self.counts.secrets_untied,
                self.handshakes_without_data,
            )?;
            if self.counts.secrets_without_client_random > 0 {
                write!(
                    f,
                    " ({} secrets not written: no client random, their connection's ClientHello not tied to them)",
                    self.counts.secrets_without_client_random
                )?;
            }
            if self.keys_evicted > 0 {
                write!(
                    f,
                    " ({} handles' secrets not tied to a connection: too many handshakes without one)",
                    self.keys_evicted
                )?;
            }
        }
        if let Some(packets) = &self.packets {
            write!(
                f,
                "\nprobectl: packets: {} written with {} secrets blocks, {} dropped by the capture socket, {} of untraced connections left out",
                packets.packets_written,
                packets.secrets_blocks,
                packets.packets_dropped_by_socket,
                packets.packets_untraced,
            )?;
        }
        if let Some(cri) = &self.cri {
            write!(
                f,
                "\nprobectl: pod names from {} at {}: {} containers asked, {} in a pod it named, {} unknown to it, {} failed, {} not asked (the runtime had just failed)",
                cri.runtime,
                cri.socket,
                cri.containers_asked,
                cri.pods_named,
                cri.unknown,
                cri.failed,
                cri.not_asked_runtime_failing,
            )?;
        }
        if !self.selection.processes.is_empty() {
            write!(
                f,
                "\nprobectl: selected in the kernel: {}: {} processes at start, {} admitted when they started a program; other processes' calls were not copied",
                self.selection.processes.join(", "),
                self.selection.processes_at_start,
                self.kernel.selected_at_exec,
            )?;
        }
        if !self.selection.addresses.is_empty() {
            write!(
                f,
                "\nprobectl: selected connections: {}: ",
                self.selection.addresses.join(", "),
            )?;
            if self.selection.addresses_in_kernel {
                write!(
                    f,
                    "{} calls ({} bytes) of other connections not copied; ",
                    self.kernel.calls_not_selected, self.kernel.bytes_not_selected,
                )?;
            } else {
                write!(
                    f,
                    "matched after the copy only (more than the kernel's filter holds, {} ports and {} addresses with an IPv4 one taking two, or a kernel without uprobe cookies); ",
                    probectl_common::capacity::FILTER_PORTS,
                    probectl_common::capacity::FILTER_HOSTS,
                )?;
            }
            write!(
                f,
                "{} events ({} bytes) dropped after the copy (calls before the socket was known), {} with addresses unknown",
                self.counts.events_not_selected,
                self.counts.bytes_not_selected,
                self.counts.events_address_unknown,
            )?;
        }
        if let Some(export) = &self.export {
            write!(
                f,
                "\nprobectl: export to {}: {} spans offered, {} delivered; dropped: {} queue full, {} export failed, {} at exit; {} retries",
                export.target,
                export.offered,
                export.delivered,
                export.dropped_queue_full,
                export.dropped_export_failed,
                export.dropped_at_exit,
                export.retries,
            )?;
            if let Some(error) = &export.last_error {
                write!(f, " (last error: {error})")?;
            }
            if let Some(payloads) = &export.payloads {
                write!(
                    f,
                    "\nprobectl: export to {}: {} payload records offered, {} delivered ({} body bytes); dropped: {} queue full, {} export failed, {} at exit",
                    export.target,
                    payloads.offered,
                    payloads.delivered,
                    payloads.body_bytes_delivered,
                    payloads.dropped_queue_full,
                    payloads.dropped_export_failed,
                    payloads.dropped_at_exit,
                )?;
            }
        }
        for (id, counts) in &self.containers {
            write!(
                f,
                "\nprobectl: container {} ({}): {} processes, {} events, {} bytes captured",
                &id[..id.len().min(12)],
                counts.runtime.map_or("?", |r| r.as_str()),
                counts.processes,
                counts.events,
                counts.bytes_captured,
            )?;
        }
        if self.containers_other.processes > 0 {
            write!(
                f,
                "\nprobectl: {} more containers' processes (past the table of {}): {} events, {} bytes captured",
                self.containers_other.processes,
                probectl_common::capacity::CONTAINERS,
                self.containers_other.events,
                self.containers_other.bytes_captured,
            )?;
        }
        if self.ended_by_exit > 0 {
            write!(
                f,
                "\nprobectl: {} connections ended with their process (it exited without closing them)",
                self.ended_by_exit
            )?;
        }
        if self.folded.connections > 0 {
            // Only the most recent ended connections are kept one by one: the rest are totals.
            write!(
                f,
                "\nprobectl: {} earlier ended connections as totals: {} bytes written, {} read; \
                 not captured {} bytes written, {} read ({} connections with losses)",
                self.folded.connections,
                self.folded.moved[0],
                self.folded.moved[1],
                self.folded.lost[0],
                self.folded.lost[1],
                self.folded.lossy,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_that_cannot_be_read_are_a_loss_of_their_own_not_a_zero() {
        let mut summary = Summary::default();
        assert!(summary.losses().is_empty());
        summary.kernel.counters_unreadable = 3;
        assert_eq!(
            summary.losses(),
            ["3 of the kernel's counters could not be read: the losses they count are unknown"]
        );
        assert_eq!(summary.to_json()["losses"]["kernel_counters_unreadable"], 3);
    }
}
