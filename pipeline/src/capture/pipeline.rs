//! The data pipeline: ring buffer records → reassembly → connections → writer → summary
//! counts. It holds no BPF object: tests drive it by replaying recorded records.
//!
//! Owners: the attach table ([`AttachTable`]) says what an attach id is; the kernel stamps every
//! call with its stream offset and [`ConnectionTable`] places it; [`Call::missing`] says what
//! an event lacks, and [`Pipeline::emit`] splits that into over-the-limit and lost.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, RwLock};

use probectl_common::capacity::SECRETS_AWAITING_SOCKET;
use probectl_common::{
    read_record, record_kind, secret_flags, ChunkHeader, CloseRecord, ConnectionRecord, ExecRecord,
    HelloRecord, ProcessRecord, SecretRecord, SECRET_RANDOM_MAX,
};

use crate::capture::connections::{ConnectionTable, StreamRun};
use crate::capture::hellos::Hellos;
use crate::capture::identity::{Identities, Identity, PodNamer, Resolver};
use crate::capture::recording::{End, Recorder};
use crate::capture::selection::{AddressSelection, Verdict};
use crate::capture::{Call, Reassembler};
use crate::output::writer::BackgroundWriter;
use crate::output::{AttachInfo, ConnectionView, Event, EventWriter, SecretEvent};

/// Attach id (the BPF cookie) → what was attached there. The control plane appends entries
/// before it attaches them, so a record never carries an id the table lacks.
#[derive(Debug, Default, Clone)]
pub struct AttachTable {
    inner: Arc<RwLock<Vec<Arc<AttachInfo>>>>,
}

impl AttachTable {
    /// Adds the entries for ids `first_id..`; returns false (and adds nothing) when the ids
    /// do not continue the table.
    pub fn extend(&self, first_id: u32, infos: Vec<AttachInfo>) -> bool {
        let Ok(mut table) = self.inner.write() else {
            return false;
        };
        if table.len() != first_id as usize {
            return false;
        }
        table.extend(infos.into_iter().map(Arc::new));
        true
    }

    /// Copies the entries from `from` on into `into`.
    fn copy_new(&self, into: &mut Vec<Arc<AttachInfo>>) {
        if let Ok(table) = self.inner.read() {
            if table.len() > into.len() {
                into.extend_from_slice(&table[into.len()..]);
            }
        }
    }
}

/// What the pipeline counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PipelineCounts {
    pub events: u64,
    pub bytes_captured: u64,
    /// Bytes over the per-call capture limit.
    pub bytes_truncated: u64,
    /// Records of a kind this version does not know.
    pub unknown_records: u64,
    /// Chunks whose attach id is in no table (never expected).
    pub unknown_attach_ids: u64,
    /// Events written without an fd: their connection's fd was never learnt, not even after
    /// they were held for it (the kernel's count of calls emitted without one includes the
    /// calls whose fd came later).
    pub events_without_fd: u64,
    /// Session secrets the key-log probes saw (`--keylog`), and of those: written to the key
    /// log; not whole (a part unreadable or longer than its field: not written); without a
    /// connection handle to tie them to (Go's `writeKeyLog` has none).
    pub secrets: u64,
    pub secrets_written: u64,
    pub secrets_unusable: u64,
    pub secrets_untied: u64,
    /// The same secret handed over again at once by the same thread (a function re-entered
    /// after its stack grew): not written twice.
    pub secrets_repeated: u64,
    /// Secrets without a client random of their own (stripped BoringSSL) whose connection's
    /// ClientHello was never tied to them: their handle moved no data before the run ended or
    /// before too many others waited ([`SECRETS_AWAITING_SOCKET`]), or its socket's
    /// ClientHello was not seen. Not written to the key log (it needs the random).
    pub secrets_without_client_random: u64,
    /// Secrets without a handle (Go's) tied to a socket by the ClientHello with their random.
    pub secrets_tied_by_client_hello: u64,
    /// ClientHellos seen on sockets (while secrets are traced), and of those forgotten (the
    /// oldest, past `capacity::HELLOS_KEPT`, used or not: a secret that asks for one later
    /// finds none, and is counted as without a client random, or not tied).
    pub client_hellos: u64,
    pub client_hellos_forgotten: u64,
    /// Processes whose identity (cgroup) could not be read: gone before the pipeline met them.
    pub identities_unresolved: u64,
    /// Identities dropped from the full table (their process is looked up again if seen).
    pub identities_evicted: u64,
    /// `--port`/`--host`: events of other connections, copied by the kernel and dropped here
    /// (and their captured bytes); of them, events whose connection's addresses were unknown.
    pub events_not_selected: u64,
    pub bytes_not_selected: u64,
    pub events_address_unknown: u64,
}

/// Events and bytes captured in one container (the summary's per-container counts).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ContainerCounts {
    pub runtime: Option<crate::capture::identity::Runtime>,
    pub pod_uid: Option<String>,
    /// The pod's names, from the container runtime.
    pub pod: Option<crate::capture::identity::PodNames>,
    pub events: u64,
    pub bytes_captured: u64,
    /// Processes of the container met (pids, counted once per identity lookup).
    pub processes: u64,
}

/// A request to the control plane, made by a record: look at process `pid` for TLS code,
/// because it started a new program or mapped a file executable at `ts_ns` (CLOCK_MONOTONIC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup {
    pub pid: u32,
    pub why: LookupCause,
    pub ts_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupCause {
    /// The process started a new program.
    Exec,
    /// The process mapped a file executable.
    Map,
}

/// The data path of a session.
pub struct Pipeline {
    table: AttachTable,
    /// This thread's copy of the attach table, refreshed when an id is past its end.
    attach: Vec<Arc<AttachInfo>>,
    reassembler: Reassembler,
    pub connections: ConnectionTable,
    writer: Box<dyn EventWriter>,
    /// The output, written by its own thread: draining the ring never waits on a file.
    out: BackgroundWriter,
    /// CLOCK_MONOTONIC (BPF timestamps) → wall clock.
    clock_offset: u64,
    max_capture_bytes: u64,
    pub counts: PipelineCounts,
    /// Lookups requested by the records since the last `take_lookups`.
    lookups: Vec<Lookup>,
    /// Processes that exited since the last `take_exited` (bounded by the records of one
    /// drain: the session takes them after each).
    exited: Vec<u32>,
    write_error: Option<std::io::Error>,
    /// Chunk records of connections whose fd is not known yet, held back a moment (see
    /// [`Held`]).
    held: Held,
    /// CLOCK_MONOTONIC at the last flush: the pipeline's only clock, so that a replay of its
    /// recorded ticks releases held calls exactly where the live run did.
    now_ns: u64,
    /// `--record`: every input, as it comes (see [`crate::capture::recording`]).
    recorder: Option<Recorder>,
    /// `--keylog FILE`: where each secret goes as one NSS key-log line, one write(2) each
    /// (the file is in append mode), as it comes: a live Wireshark picks it up at once.
    keylog: Option<std::fs::File>,
    /// Secrets are traced in this run (`--keylog`): connections without any are "keys not
    /// seen" in the summary.
    pub keys_traced: bool,
    /// The last secret record: a function entered again from its first instruction (Go's
    /// stack growth re-runs a function through `runtime.morestack`) hands the same secret
    /// over twice, on the same thread, one right after the other.
    last_secret: Option<SecretRecord>,
    /// The ClientHellos processes sent: ties secrets to sockets.
    hellos: Hellos,
    /// Secrets without a client random, waiting for their handle's socket (its first call
    /// that moves data), by (pid, handle) (at most [`SECRETS_AWAITING_SOCKET`] secrets).
    awaiting_socket: HashMap<(u32, u64), Vec<SecretRecord>>,
    /// The handles of `awaiting_socket` in the order they came, and its secrets' count.
    awaiting_order: VecDeque<(u32, u64)>,
    awaiting_secrets: usize,
    /// `--packets`: where each secret goes as (client random, key-log line), for the packet
    /// capture's Decryption Secrets Blocks.
    packets: Option<std::sync::mpsc::Sender<(String, String)>>,
    /// Who each process is (cgroup, container), learnt once per process.
    identities: Identities,
    /// How a live run reads a process's identity (`None`: a replay, whose recording has them).
    resolver: Option<Resolver>,
    /// Names pods whose runtime answered after their first process was met.
    pod_namer: Option<PodNamer>,
    /// Records since the pod namer was last asked.
    since_pod_namer: u32,
    /// The pod namer awaits answers: it is asked at every record until they came.
    pods_pending: bool,
    /// Per container id: what was captured in it (at most `capacity::CONTAINERS`; the rest in
    /// `containers_other`).
    pub containers: HashMap<String, ContainerCounts>,
    pub containers_other: ContainerCounts,
    /// `--port`/`--host`: the connections whose events are written.
    addresses: Option<AddressSelection>,
}

/// How long the calls of a connection without an fd wait for it (ns).
const HOLD_FOR_NS: u64 = 200_000_000;

/// The pod namer is asked at least once in this many records (and when a process is met).
const POD_NAMER_EVERY: u32 = 256;
/// Bytes of chunk records held at most, over all connections: past it the oldest connection's
/// calls go out as they are.
const HOLD_MAX_BYTES: usize = 4 << 20;

/// Calls of connections whose fd is not known when they arrive. A library that buffers (Bun's
/// BoringSSL writes into a corked buffer) makes no socket syscall inside its write call: the
/// kernel learns the connection's fd from the thread's next socket write, just after the
/// call's chunks. Holding them until the connection record comes lets every event of the
/// connection carry its fd and addresses. Per connection the order stays as it was; a
/// connection whose fd never comes is released after [`HOLD_FOR`], unchanged.
#[derive(Default)]
struct Held {
    /// (pid, handle) -> when its first record was held, and its records in arrival order.
    queues: HashMap<(u32, u64), HeldQueue>,
    bytes: usize,
}

/// When a connection's first record was held (the pipeline's clock, ns), and its records in
/// arrival order.
type HeldQueue = (u64, Vec<Vec<u8>>);

impl Held {
    fn take(&mut self, key: (u32, u64)) -> Vec<Vec<u8>> {
        let Some((_, records)) = self.queues.remove(&key) else {
            return Vec::new();
        };
        self.bytes -= records.iter().map(Vec::len).sum::<usize>();
        records
    }

    /// The connections held for `HOLD_FOR_NS` or longer at `now_ns`, oldest first, or every
    /// connection with `all`.
    fn due(&self, now_ns: u64, all: bool) -> Vec<(u32, u64)> {
        let mut due: Vec<(u64, (u32, u64))> = self
            .queues
            .iter()
            .filter(|(_, (since, _))| all || now_ns.saturating_sub(*since) >= HOLD_FOR_NS)
            .map(|(key, (since, _))| (*since, *key))
            .collect();
        due.sort();
        due.into_iter().map(|(_, key)| key).collect()
    }

    fn oldest(&self) -> Option<(u32, u64)> {
        self.queues
            .iter()
            .min_by_key(|(key, (since, _))| (*since, **key))
            .map(|(key, _)| *key)
    }
}

impl Pipeline {
    pub fn new(
        table: AttachTable,
        writer: Box<dyn EventWriter>,
        out: Box<dyn Write + Send>,
        clock_offset: u64,
        max_capture_bytes: u64,
    ) -> std::io::Result<Pipeline> {
        Ok(Pipeline {
            table,
            attach: Vec::new(),
            reassembler: Reassembler::default(),
            connections: ConnectionTable::default(),
            writer,
            out: BackgroundWriter::new(out)?,
            clock_offset,
            max_capture_bytes,
            counts: PipelineCounts::default(),
            lookups: Vec::new(),
            exited: Vec::new(),
            write_error: None,
            held: Held::default(),
            now_ns: 0,
            recorder: None,
            keylog: None,
            keys_traced: false,
            last_secret: None,
            hellos: Hellos::default(),
            awaiting_socket: HashMap::new(),
            awaiting_order: VecDeque::new(),
            awaiting_secrets: 0,
            packets: None,
            identities: Identities::default(),
            resolver: None,
            pod_namer: None,
            since_pod_namer: 0,
            pods_pending: false,
            containers: HashMap::new(),
            containers_other: ContainerCounts::default(),
            addresses: None,
        })
    }

    /// Sends every secret to the packet capture (`--packets`).
    pub fn packets_into(&mut self, secrets: std::sync::mpsc::Sender<(String, String)>) {
        self.packets = Some(secrets);
        self.keys_traced = true;
    }

    /// Writes every secret into `file` as an NSS key-log line (`--keylog`).
    pub fn keylog_into(&mut self, file: std::fs::File) {
        self.keylog = Some(file);
        self.keys_traced = true;
    }

    /// Reads each process's identity with `resolver` when the pipeline first meets it (a
    /// live run; a replay takes them from the recording).
    pub fn resolve_identities_with(&mut self, resolver: Resolver) {
        self.resolver = Some(resolver);
    }

    /// Asks `namer`, now and then, for the pods the container runtime named late (after the
    /// first process of their container was met), and names that container's processes.
    pub fn name_pods_with(&mut self, namer: PodNamer) {
        self.pod_namer = Some(namer);
    }

    /// The pods named late: every process met of their container gets the names.
    fn name_pods(&mut self) {
        let Some(namer) = self.pod_namer.as_mut() else {
            return;
        };
        self.since_pod_namer = 0;
        let (named, pending) = namer();
        self.pods_pending = pending;
        for (id, pod, uid) in named {
            let patched = self.identities.name_pod(&id, &pod, &uid);
            if let Some(recorder) = self.recorder.as_mut() {
                for (pid, identity) in &patched {
                    recorder.process(*pid, Some(identity));
                }
            }
            if let Some(counts) = self.containers.get_mut(&id) {
                counts.pod = Some(pod);
                counts.pod_uid.get_or_insert(uid);
            }
        }
    }

    /// Writes only the events of connections that `selection` selects (`--port`, `--host`).
    pub fn select_addresses(&mut self, selection: AddressSelection) {
        self.addresses = Some(selection);
    }

    /// Sets a process's identity (a replay's process frame).
    pub fn set_identity(&mut self, pid: u32, identity: Option<Identity>) {
        self.adopt(pid, identity);
    }

    /// Learns the identity of the process a record is about, before the record is recorded
    /// (so that a replay has it when it needs it): at exec (a pid may be reused, and the
    /// process is surely alive) and at its first record otherwise.
    fn learn(&mut self, record: &[u8]) {
        self.since_pod_namer += 1;
        if self.pods_pending || self.since_pod_namer >= POD_NAMER_EVERY {
            self.name_pods();
        }
        let Some(resolver) = self.resolver.as_mut() else {
            return;
        };
        // (pid, the kernel's cgroup id at exec, whether to look again).
        let (pid, cgroup_id, fresh) = match read_record::<u32>(record) {
            Some(record_kind::CHUNK) => match read_record::<ChunkHeader>(record) {
                Some(header) => (header.pid, 0, false),
                None => return,
            },
            Some(record_kind::CONNECTION) => match read_record::<ConnectionRecord>(record) {
                Some(connection) => (connection.pid, 0, false),
                None => return,
            },
            Some(record_kind::EXEC) => match read_record::<ExecRecord>(record) {
                Some(exec) => (exec.pid, exec.cgroup_id, true),
                // A recording of an older probectl: its exec records have no cgroup id.
                None => match read_record::<ProcessRecord>(record) {
                    Some(process) => (process.pid, 0, true),
                    None => return,
                },
            },
            Some(record_kind::MAP) => match read_record::<ProcessRecord>(record) {
                Some(process) => (process.pid, 0, false),
                None => return,
            },
            _ => return,
        };
        if !fresh && self.identities.contains(pid) {
            return;
        }
        let identity = resolver(pid, cgroup_id);
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.process(pid, identity.as_ref());
        }
        self.adopt(pid, identity);
        // After the adoption: a late answer for this process's container names it too.
        self.name_pods();
    }

    /// Keeps a process's identity, counted per container.
    fn adopt(&mut self, pid: u32, identity: Option<Identity>) {
        if identity.is_none() {
            self.counts.identities_unresolved += 1;
        }
        if let Some(identity) = identity.as_ref() {
            if let Some(id) = identity.container.as_deref() {
                let known = self.containers.len();
                let counts = if self.containers.contains_key(id)
                    || known < probectl_common::capacity::CONTAINERS
                {
                    self.containers.entry(id.to_string()).or_default()
                } else {
                    &mut self.containers_other
                };
                counts.processes += 1;
                counts.runtime = identity.runtime;
                counts.pod_uid.clone_from(&identity.pod_uid);
                counts.pod.clone_from(&identity.pod);
            }
        }
        self.identities.insert(pid, identity.map(Arc::new));
        self.counts.identities_evicted = self.identities.evicted;
    }

    /// Records every input from now on into `recorder` (`--record`).
    pub fn record_into(&mut self, recorder: Recorder) {
        self.recorder = Some(recorder);
    }

    /// Dispatches one ring buffer record.
    pub fn record(&mut self, record: &[u8]) {
        self.learn(record);
        if let Some(recorder) = self.recorder.as_mut() {
            // The table's new entries first: every id a record carries was in the table
            // before the record was written (the control plane adds, then attaches), so a
            // replay knows it when it needs it.
            let known = self.attach.len();
            self.table.copy_new(&mut self.attach);
            if self.attach.len() > known {
                recorder.attach(known as u32, &self.attach[known..]);
            }
            recorder.record(record);
        }
        match read_record::<u32>(record) {
            Some(record_kind::CHUNK) => {
                if let Some(header) = read_record::<ChunkHeader>(record) {
                    let key = (header.pid, header.connection);
                    if self.held.queues.contains_key(&key) && header.fd >= 0 {
                        // The fd came some other way: what waited goes first.
                        self.release(key);
                    } else if header.fd < 0
                        && (self.held.queues.contains_key(&key)
                            || !self.connections.fd_known(header.pid, header.connection))
                    {
                        self.hold(key, record);
                        return;
                    }
                }
                self.chunk(record);
            }
            Some(record_kind::CONNECTION) => {
                if let Some(connection) = read_record::<ConnectionRecord>(record) {
                    self.connections.on_connection(&connection);
                    self.socket_known(connection.pid, connection.connection, connection.fd);
                    self.release((connection.pid, connection.connection));
                }
            }
            Some(record_kind::HELLO) => {
                if let Some(hello) = read_record::<HelloRecord>(record) {
                    self.counts.client_hellos += 1;
                    self.hellos.add(&hello);
                    self.counts.client_hellos_forgotten = self.hellos.forgotten;
                }
            }
            Some(kind @ (record_kind::EXEC | record_kind::MAP)) => {
                if let Some(process) = read_record::<ProcessRecord>(record) {
                    self.lookups.push(Lookup {
                        pid: process.pid,
                        why: if kind == record_kind::EXEC {
                            LookupCause::Exec
                        } else {
                            LookupCause::Map
                        },
                        ts_ns: process.ts_ns,
                    });
                }
            }
            Some(record_kind::EXIT) => {
                if let Some(process) = read_record::<ProcessRecord>(record) {
                    let held: Vec<(u32, u64)> = self
                        .held
                        .queues
                        .keys()
                        .filter(|(pid, _)| *pid == process.pid)
                        .copied()
                        .collect();
                    for key in held {
                        self.release(key);
                    }
                    self.exited.push(process.pid);
                    self.identities.remove(process.pid);
                    self.hellos.remove_process(process.pid);
                    for id in self.connections.on_process_exit(process.pid) {
                        self.closed(id, process.ts_ns);
                    }
                    self.connections.fold_ended();
                }
            }
            Some(record_kind::CLOSE) => {
                if let Some(close) = read_record::<CloseRecord>(record) {
                    self.release((close.pid, close.connection));
                    if let Some(id) = self.connections.on_close(&close) {
                        self.closed(id, close.ts_ns);
                    }
                    self.connections.fold_ended();
                }
            }
            Some(record_kind::SECRET) => {
                if let Some(secret) = read_record::<SecretRecord>(record) {
                    self.secret(&secret);
                }
            }
            _ => self.counts.unknown_records += 1,
        }
    }

    /// A session secret: one key-log line, tied to its connection.
    fn secret(&mut self, record: &SecretRecord) {
        self.keys_traced = true;
        let again = self.last_secret.as_ref().is_some_and(|last| {
            (last.pid, last.tid, last.connection, last.attach_id)
                == (record.pid, record.tid, record.connection, record.attach_id)
                && (&last.label, last.label_len, &last.random, last.random_len)
                    == (
                        &record.label,
                        record.label_len,
                        &record.random,
                        record.random_len,
                    )
                && (&last.secret, last.secret_len) == (&record.secret, record.secret_len)
        });
        self.last_secret = Some(*record);
        if again {
            self.counts.secrets_repeated += 1;
            return;
        }
        if record.flags & secret_flags::RANDOM_FROM_HELLO != 0 {
            // Its random is its connection's ClientHello's: known once the handle's socket
            // is (now, or at the handle's first call that moves data).
            match self.connections.fd_of(record.pid, record.connection) {
                Some(fd) => self.secret_of_socket(*record, fd),
                None => {
                    while self.awaiting_secrets >= SECRETS_AWAITING_SOCKET {
                        let Some(oldest) = self.awaiting_order.pop_front() else {
                            break;
                        };
                        let dropped = self.awaiting_socket.remove(&oldest).unwrap_or_default();
                        self.awaiting_secrets -= dropped.len();
                        self.counts.secrets += dropped.len() as u64;
                        self.counts.secrets_without_client_random += dropped.len() as u64;
                    }
                    let key = (record.pid, record.connection);
                    let waiting = self.awaiting_socket.entry(key).or_default();
                    if waiting.is_empty() {
                        self.awaiting_order.push_back(key);
                    }
                    waiting.push(*record);
                    self.awaiting_secrets += 1;
                }
            }
            return;
        }
        self.secret_line(record, None);
    }

    /// The socket of `handle` of `pid` is `fd`: the secrets that waited for it take the
    /// random of its ClientHello.
    fn socket_known(&mut self, pid: u32, handle: u64, fd: i32) {
        let Some(ready) = self.awaiting_socket.remove(&(pid, handle)) else {
            return;
        };
        self.awaiting_order.retain(|key| *key != (pid, handle));
        self.awaiting_secrets -= ready.len();
        for secret in ready {
            self.secret_of_socket(secret, fd);
        }
    }

    /// A secret without a client random whose handle's socket is `fd`.
    fn secret_of_socket(&mut self, mut record: SecretRecord, fd: i32) {
        match self.hellos.random_of(record.pid, fd, record.ts_ns) {
            Some(random) => {
                record.random = random;
                record.random_len = random.len() as u32;
                self.secret_line(&record, Some(fd));
            }
            None => {
                self.counts.secrets += 1;
                self.counts.secrets_without_client_random += 1;
            }
        }
    }

    /// Secrets that still wait for their handle's socket at the end: their handle moved no
    /// data (counted).
    fn end_secrets(&mut self) {
        let left = self.awaiting_secrets as u64;
        self.awaiting_socket.clear();
        self.awaiting_order.clear();
        self.awaiting_secrets = 0;
        self.counts.secrets += left;
        self.counts.secrets_without_client_random += left;
    }

    /// A whole secret record: its key-log line, tied to its connection (`socket`: the fd its
    /// random was taken from, when it was).
    fn secret_line(&mut self, record: &SecretRecord, socket: Option<i32>) {
        self.counts.secrets += 1;
        if record.flags & (secret_flags::READ_FAULT | secret_flags::TOO_LONG) != 0
            || record.label_len == 0
            || record.random_len == 0
            || record.secret_len == 0
        {
            self.counts.secrets_unusable += 1;
            return;
        }
        fn part(bytes: &[u8], len: u32) -> &[u8] {
            &bytes[..(len as usize).min(bytes.len())]
        }
        let label_bytes = part(&record.label, record.label_len);
        // A label is the library's own constant: printable ASCII, or not a label at all.
        if !label_bytes.iter().all(|byte| byte.is_ascii_graphic()) {
            self.counts.secrets_unusable += 1;
            return;
        }
        let label = String::from_utf8_lossy(label_bytes).into_owned();
        let client_random = hex(part(&record.random, record.random_len));
        let line = format!(
            "{label} {client_random} {}\n",
            hex(part(&record.secret, record.secret_len))
        );
        if let Some(file) = self.keylog.as_mut() {
            if self.write_error.is_none() {
                // One write per line: the file is in append mode, so a reader never sees half
                // a line and other writers' lines never land inside one.
                match file.write_all(line.as_bytes()) {
                    Ok(()) => self.counts.secrets_written += 1,
                    Err(error) => {
                        self.write_error = Some(std::io::Error::new(
                            error.kind(),
                            format!("the key log: {error}"),
                        ))
                    }
                }
            }
        }
        if let Some(packets) = &self.packets {
            // A capture that ended has nothing more to write.
            let _ = packets.send((client_random.clone(), line.clone()));
        }
        let mut socket = socket;
        let connection = if record.connection == 0 {
            self.counts.secrets_untied += 1;
            // No handle: the socket that sent the ClientHello with its random ties it.
            let random =
                <[u8; SECRET_RANDOM_MAX]>::try_from(part(&record.random, record.random_len));
            match random
                .ok()
                .and_then(|random| self.hellos.socket_of(&random))
            {
                Some((pid, fd)) if pid == record.pid => {
                    self.counts.secrets_tied_by_client_hello += 1;
                    socket = Some(fd);
                    self.connections
                        .on_socket_secret(pid, fd, &label, &client_random)
                }
                _ => None,
            }
        } else {
            self.connections
                .on_secret(record.pid, record.connection, &label, &client_random)
        };
        let function = self
            .attach_info(record.attach_id)
            .map(|attach| attach.function.clone())
            .unwrap_or_default();
        let event = SecretEvent {
            ts_ns: record.ts_ns.saturating_add(self.clock_offset),
            pid: record.pid,
            tid: record.tid,
            function: &function,
            label: &label,
            client_random: &client_random,
            handle: record.connection,
            connection,
            fd: socket,
        };
        if self.write_error.is_none() {
            if let Err(error) = self.writer.secret(&event, &mut self.out) {
                self.write_error = Some(error);
            }
        }
    }

    fn chunk(&mut self, record: &[u8]) {
        let mut reassembler = std::mem::take(&mut self.reassembler);
        reassembler.push(record, &mut |call| self.emit(call));
        self.reassembler = reassembler;
    }

    fn hold(&mut self, key: (u32, u64), record: &[u8]) {
        while self.held.bytes + record.len() > HOLD_MAX_BYTES {
            match self.held.oldest() {
                Some(oldest) => self.release(oldest),
                None => break,
            }
        }
        self.held
            .queues
            .entry(key)
            .or_insert_with(|| (self.now_ns, Vec::new()))
            .1
            .push(record.to_vec());
        self.held.bytes += record.len();
    }

    /// Delivers the held records of `key`, in their order.
    fn release(&mut self, key: (u32, u64)) {
        for record in self.held.take(key) {
            self.chunk(&record);
        }
    }

    /// Delivers what waited too long for its fd (or everything, with `all`).
    fn release_due(&mut self, all: bool) {
        for key in self.held.due(self.now_ns, all) {
            self.release(key);
        }
    }

    /// The lookups the records asked for since the last call.
    pub fn take_lookups(&mut self) -> Vec<Lookup> {
        std::mem::take(&mut self.lookups)
    }

    /// The processes that exited since the last call (what they left in the kernel's tables
    /// is to be swept).
    pub fn take_exited(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.exited)
    }

    fn attach_info(&mut self, id: u32) -> Option<&Arc<AttachInfo>> {
        if id as usize >= self.attach.len() {
            self.table.copy_new(&mut self.attach);
        }
        self.attach.get(id as usize)
    }

    fn emit(&mut self, call: Call<'_>) {
        let header = call.header;
        let max_capture_bytes = self.max_capture_bytes;
        // An Arc: the writer borrows self mutably below, and this clone costs no allocation.
        let Some(attach) = self.attach_info(header.attach_id).cloned() else {
            self.counts.unknown_attach_ids += 1;
            return;
        };
        let comm_len = header
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(header.comm.len());
        let comm = std::str::from_utf8(&header.comm[..comm_len]).unwrap_or("?");
        // Bytes over the capture limit are counted once, by the run that ends the call.
        let over_limit = if call.start + call.span == header.call_len {
            header
                .call_len
                .saturating_sub(max_capture_bytes.max(call.start))
        } else {
            0
        };
        let placement = self.connections.place(&StreamRun {
            pid: header.pid,
            handle: header.connection,
            fd: header.fd,
            direction: attach.direction,
            offset: header.stream_offset.saturating_add(call.start),
            span: call.span,
            captured: call.data.len() as u64,
        });
        let identity = self.identities.get(header.pid).cloned();
        if identity.is_some() {
            self.connections.note_identity(placement.id, &identity);
        }
        let conn = match self.connections.get(placement.id) {
            Some(connection) => connection.view(placement.offset),
            None => ConnectionView {
                id: placement.id,
                handle: header.connection,
                offset: placement.offset,
                ..ConnectionView::default()
            },
        };
        if let Some(selection) = &self.addresses {
            match selection.verdict(conn.local, conn.remote) {
                Verdict::Selected => {}
                verdict => {
                    if verdict == Verdict::Unknown {
                        self.counts.events_address_unknown += 1;
                    }
                    self.counts.events_not_selected += 1;
                    self.counts.bytes_not_selected += call.data.len() as u64;
                    return;
                }
            }
        }
        self.counts.events += 1;
        self.counts.bytes_captured += call.data.len() as u64;
        self.counts.bytes_truncated = self.counts.bytes_truncated.saturating_add(over_limit);
        if conn.fd.is_none() {
            self.counts.events_without_fd += 1;
        }
        if let Some(id) = identity.as_ref().and_then(|i| i.container.as_deref()) {
            let counts = match self.containers.get_mut(id) {
                Some(counts) => counts,
                None => &mut self.containers_other,
            };
            counts.events += 1;
            counts.bytes_captured += call.data.len() as u64;
        }
        let event = Event {
            ts_ns: header.call_end_ns.saturating_add(self.clock_offset),
            pid: header.pid,
            tid: header.tid,
            comm,
            attach: &attach,
            conn,
            len: call.span,
            data: call.data,
            truncated: call.missing(),
            process: identity.as_ref(),
        };
        if self.write_error.is_none() {
            if let Err(error) = self.writer.event(&event, &mut self.out) {
                self.write_error = Some(error);
            }
        }
    }

    /// What the writer counted, for the report.
    pub fn writer_report(&self) -> Option<serde_json::Value> {
        self.writer.report()
    }

    /// Tells the writer that connection `id` ended.
    fn closed(&mut self, id: u64, ts_ns: u64) {
        let Some(connection) = self.connections.get(id) else {
            return;
        };
        let view = connection.view(0);
        if self.write_error.is_none() {
            if let Err(error) = self.writer.connection_closed(
                &view,
                ts_ns.saturating_add(self.clock_offset),
                &mut self.out,
            ) {
                self.write_error = Some(error);
            }
        }
    }

    /// Flushes the output at `now_ns` (CLOCK_MONOTONIC, the BPF timestamps' clock): calls
    /// held for their fd since `HOLD_FOR_NS` go out. False once writing the output or the
    /// recording failed (the session should stop).
    pub fn flush(&mut self, now_ns: u64) -> bool {
        self.now_ns = self.now_ns.max(now_ns);
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.tick(now_ns);
        }
        self.release_due(false);
        if self.write_error.is_none() {
            if let Err(error) = self.out.flush() {
                self.write_error = Some(error);
            }
        }
        if self.write_error.is_none() {
            if let Some(error) = self.recorder.as_mut().and_then(Recorder::flush) {
                self.write_error = Some(recording_error(error));
            }
        }
        self.write_error.is_none()
    }

    /// Ends the recording, if there is one, with what the summary needs beyond the pipeline.
    /// Call before [`Pipeline::finish`] with the same open positions.
    pub fn end_recording(&mut self, end: &End) {
        if let Some(error) = self
            .recorder
            .as_mut()
            .and_then(|recorder| recorder.end(end))
        {
            self.write_error.get_or_insert(recording_error(error));
        }
    }

    /// Delivers the calls still waiting for chunks, lets the writer finish, and takes in the
    /// kernel's byte counts of the connections still open ((pid, handle) → (write, read)).
    /// Returns the first write error, if any.
    pub fn finish(&mut self, open_positions: &[((u32, u64), [u64; 2])]) -> Option<std::io::Error> {
        self.release_due(true);
        self.end_secrets();
        let mut reassembler = std::mem::take(&mut self.reassembler);
        reassembler.flush(&mut |call| self.emit(call));
        for (key, position) in open_positions {
            self.connections.on_kernel_position(*key, *position);
        }
        if self.write_error.is_none() {
            if let Err(error) = self.writer.finish(&mut self.out) {
                self.write_error = Some(error);
            }
        }
        // Waits until the output thread has written everything.
        if let Err(error) = self.out.finish() {
            self.write_error.get_or_insert(error);
        }
        self.write_error.take()
    }
}

/// Lower-case hex of `bytes`, as the NSS key-log format writes them.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// A recording's write error, named as such (the output's own errors are not).
fn recording_error(error: std::io::Error) -> std::io::Error {
    std::io::Error::new(error.kind(), format!("the recording: {error}"))
}

#[cfg(test)]
mod tests {
    //! Replays of recorded ring buffer records through the whole data path, without BPF.
    use std::sync::Mutex;

    use probectl_common::{chunk_flags, close_cause, family, ChunkHeader};

    use super::*;
    use crate::output::{Format, Renderer};
    use crate::Direction;

    /// An output that tests can read after the pipeline wrote to it.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn bytes_of<T: zerocopy::IntoBytes + zerocopy::Immutable>(value: &T) -> Vec<u8> {
        probectl_common::record_bytes(value).to_vec()
    }

    /// A chunk of a call of thread `tid` on handle `handle`.
    #[allow(clippy::too_many_arguments)]
    fn chunk(
        attach_id: u32,
        tid: u32,
        handle: u64,
        start_ns: u64,
        call_len: u64,
        offset: u64,
        stream_offset: u64,
        data: &[u8],
        last: bool,
    ) -> Vec<u8> {
        let header = ChunkHeader {
            kind: record_kind::CHUNK,
            flags: if last { chunk_flags::LAST } else { 0 },
            call_start_ns: start_ns,
            call_end_ns: start_ns + 1,
            connection: handle,
            call_len,
            offset,
            stream_offset,
            pid: 100,
            tid,
            attach_id,
            data_len: data.len() as u32,
            fd: 5,
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
            ..ChunkHeader::default()
        };
        let mut record = bytes_of(&header);
        record.extend_from_slice(data);
        record
    }

    fn connection(handle: u64, local_port: u16) -> Vec<u8> {
        bytes_of(&ConnectionRecord {
            kind: record_kind::CONNECTION,
            pid: 100,
            fd: 5,
            family: family::INET,
            socket_type: 1,
            connection: handle,
            local_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            local_port,
            remote_port: 443,
            ..ConnectionRecord::default()
        })
    }

    fn close(handle: u64, cause: u32, position: [u64; 2]) -> Vec<u8> {
        bytes_of(&CloseRecord {
            kind: record_kind::CLOSE,
            pid: 100,
            fd: if cause == close_cause::FD_CLOSED {
                5
            } else {
                -1
            },
            cause,
            connection: handle,
            position,
            ..CloseRecord::default()
        })
    }

    /// A secret record of handle `handle`, thread `tid`: label, 32-byte random, 48-byte secret.
    fn secret(handle: u64, tid: u32, label: &str, random: u8, secret: u8) -> Vec<u8> {
        let mut record = probectl_common::SecretRecord {
            kind: record_kind::SECRET,
            flags: 0,
            pid: 100,
            tid,
            ts_ns: 7,
            connection: handle,
            attach_id: 0,
            label_len: label.len() as u32,
            random_len: 32,
            secret_len: 48,
            label: [0; probectl_common::SECRET_LABEL_MAX],
            random: [random; probectl_common::SECRET_RANDOM_MAX],
            secret: [0; probectl_common::SECRET_MAX],
        };
        record.label[..label.len()].copy_from_slice(label.as_bytes());
        record.secret[..48].fill(secret);
        bytes_of(&record)
    }

    #[test]
    fn secrets_become_key_log_lines_tied_to_their_connection() {
        let (mut pipeline, out) = pipeline();
        let path = std::env::temp_dir().join(format!("probectl-keylog-{}", std::process::id()));
        let file = std::fs::File::create(&path).expect("key log");
        pipeline.keylog_into(file);
        // The handshake of handle 0xa, before its first call: kept for its connection.
        pipeline.record(&secret(
            0xa,
            1,
            "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
            0x11,
            0x21,
        ));
        // The same record again at once (a function re-entered): written once.
        pipeline.record(&secret(
            0xa,
            1,
            "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
            0x11,
            0x21,
        ));
        pipeline.record(&secret(0xa, 1, "CLIENT_TRAFFIC_SECRET_0", 0x11, 0x22));
        // Handle 0xb: a handshake that moves no data, then another one on the same handle.
        pipeline.record(&secret(0xb, 2, "CLIENT_RANDOM", 0x33, 0x41));
        pipeline.record(&secret(0xb, 2, "CLIENT_RANDOM", 0x34, 0x42));
        // A secret whose label could not be read: not a line.
        let mut broken = secret(0xa, 1, "X", 0x11, 0x23);
        broken[4] = probectl_common::secret_flags::READ_FAULT as u8;
        pipeline.record(&broken);
        pipeline.record(&connection(0xa, 40000));
        pipeline.record(&chunk(0, 1, 0xa, 10, 2, 0, 0, b"hi", true));
        assert!(pipeline.flush(1));
        assert!(pipeline.finish(&[]).is_none());
        let log = std::fs::read_to_string(&path).expect("key log");
        let _ = std::fs::remove_file(&path);
        let hex = |byte: u8, count: usize| format!("{byte:02x}").repeat(count);
        assert_eq!(
            log,
            format!(
                "CLIENT_HANDSHAKE_TRAFFIC_SECRET {} {}\nCLIENT_TRAFFIC_SECRET_0 {} {}\n\
                 CLIENT_RANDOM {} {}\nCLIENT_RANDOM {} {}\n",
                hex(0x11, 32),
                hex(0x21, 48),
                hex(0x11, 32),
                hex(0x22, 48),
                hex(0x33, 32),
                hex(0x41, 48),
                hex(0x34, 32),
                hex(0x42, 48)
            )
        );
        let counts = pipeline.counts;
        assert_eq!(
            (
                counts.secrets,
                counts.secrets_written,
                counts.secrets_repeated,
                counts.secrets_unusable
            ),
            (5, 4, 1, 1)
        );
        let connection = pipeline.connections.get(1).expect("conn#1");
        assert_eq!(connection.handle, 0xa);
        assert_eq!(connection.keys.secrets, 2);
        assert_eq!(connection.keys.client_random, Some(hex(0x11, 32)));
        assert_eq!(
            connection.keys.labels,
            ["CLIENT_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_TRAFFIC_SECRET_0"]
        );
        // 0xb's two handshakes moved no data.
        assert_eq!(pipeline.connections.handshakes_without_data(), 2);
        // The output shows each secret's label and random, never the secret.
        let output = String::from_utf8(out.0.lock().expect("lock").clone()).expect("UTF-8");
        assert!(
            output.contains("\"label\":\"CLIENT_TRAFFIC_SECRET_0\""),
            "{output}"
        );
        assert!(!output.contains(&hex(0x22, 48)), "{output}");
    }

    fn hello(fd: i32, ts_ns: u64, random: u8) -> Vec<u8> {
        bytes_of(&HelloRecord {
            kind: record_kind::HELLO,
            pid: 100,
            tid: 1,
            fd,
            ts_ns,
            random: [random; SECRET_RANDOM_MAX],
        })
    }

    #[test]
    fn secrets_without_a_random_take_their_sockets_client_hello_and_go_secrets_their_socket() {
        let (mut pipeline, out) = pipeline();
        let path = std::env::temp_dir().join(format!("probectl-hello-{}", std::process::id()));
        let file = std::fs::File::create(&path).expect("key log");
        pipeline.keylog_into(file);
        let from_hello = |handle: u64, label: &str, secret_byte: u8| {
            let mut record = secret(handle, 1, label, 0, secret_byte);
            let flags = probectl_common::secret_flags::RANDOM_FROM_HELLO;
            record[4..8].copy_from_slice(&flags.to_le_bytes());
            // random_len (after kind, flags, pid, tid, ts_ns, connection, attach_id, label_len).
            record[40..44].copy_from_slice(&0u32.to_le_bytes());
            record
        };
        // fd 5 sent a ClientHello at 3, an earlier connection's on the same fd at 1.
        pipeline.record(&hello(5, 1, 0x01));
        pipeline.record(&hello(5, 3, 0x55));
        // Handle 0xa's secret (at 7) waits for its socket; handle 0xc's never gets one.
        pipeline.record(&from_hello(0xa, "CLIENT_RANDOM", 0x61));
        pipeline.record(&from_hello(0xc, "CLIENT_RANDOM", 0x62));
        assert!(std::fs::read_to_string(&path).expect("log").is_empty());
        pipeline.record(&connection(0xa, 40000));
        // A Go secret: no handle, its random names fd 6's ClientHello; its connection comes
        // after it (handle 0xd on fd 6).
        pipeline.record(&hello(6, 4, 0x66));
        pipeline.record(&secret(0, 2, "CLIENT_RANDOM", 0x66, 0x63));
        let mut go_connection = connection(0xd, 40001);
        go_connection[8..12].copy_from_slice(&6i32.to_le_bytes());
        pipeline.record(&go_connection);
        assert!(pipeline.flush(1));
        assert!(pipeline.finish(&[]).is_none());
        let log = std::fs::read_to_string(&path).expect("key log");
        let _ = std::fs::remove_file(&path);
        let hex = |byte: u8, count: usize| format!("{byte:02x}").repeat(count);
        assert_eq!(
            log,
            format!(
                "CLIENT_RANDOM {} {}\nCLIENT_RANDOM {} {}\n",
                hex(0x55, 32),
                hex(0x61, 48),
                hex(0x66, 32),
                hex(0x63, 48)
            )
        );
        let counts = pipeline.counts;
        assert_eq!(
            (
                counts.secrets,
                counts.secrets_written,
                counts.secrets_without_client_random,
                counts.secrets_tied_by_client_hello,
                counts.client_hellos
            ),
            (3, 2, 1, 1, 3)
        );
        let of = |handle: u64| {
            pipeline
                .connections
                .all()
                .into_iter()
                .find(|connection| connection.handle == handle)
                .map(|connection| connection.keys.client_random.clone())
        };
        assert_eq!(of(0xa), Some(Some(hex(0x55, 32))));
        assert_eq!(of(0xd), Some(Some(hex(0x66, 32))));
        let output = String::from_utf8(out.0.lock().expect("lock").clone()).expect("UTF-8");
        assert!(output.contains("\"fd\":6"), "{output}");
    }

    fn pipeline() -> (Pipeline, Shared) {
        let table = AttachTable::default();
        let info = |function: &str, direction| AttachInfo {
            plugin: "openssl".into(),
            library: "/usr/lib/libssl.so.3".into(),
            function: function.into(),
            direction,
        };
        assert!(table.extend(
            0,
            vec![
                info("SSL_write", Direction::Write),
                info("SSL_read", Direction::Read)
            ]
        ));
        let out = Shared::default();
        let pipeline = Pipeline::new(
            table,
            Box::new(Renderer::new(Format::Json)),
            Box::new(out.clone()),
            0,
            1 << 20,
        )
        .expect("pipeline");
        (pipeline, out)
    }

    /// (conn id, direction, offset, data length, truncated) of every JSON line.
    fn lines(out: &Shared) -> Vec<(u64, String, u64, u64, u64)> {
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        text.lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).expect("json");
                (
                    value["conn"]["id"].as_u64().expect("id"),
                    value["direction"].as_str().expect("direction").to_string(),
                    value["conn"]["offset"].as_u64().expect("offset"),
                    value["len"].as_u64().expect("len"),
                    value["truncated"].as_u64().expect("truncated"),
                )
            })
            .collect()
    }

    /// `record` (a chunk) as the kernel sends it for a call whose fd it does not know.
    fn without_fd(record: Vec<u8>) -> Vec<u8> {
        let mut header = read_record::<ChunkHeader>(&record).expect("header");
        header.fd = -1;
        let mut patched = bytes_of(&header);
        patched.extend_from_slice(&record[patched.len()..]);
        patched
    }

    /// (conn id, direction, fd) of every JSON line.
    fn fds(out: &Shared) -> Vec<(u64, String, Option<i64>)> {
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        text.lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).expect("json");
                (
                    value["conn"]["id"].as_u64().expect("id"),
                    value["direction"].as_str().expect("direction").to_string(),
                    value["conn"]["fd"].as_i64(),
                )
            })
            .collect()
    }

    #[test]
    fn per_direction_handles_on_one_fd_are_one_connection_in_the_output() {
        let (mut pipeline, out) = pipeline();
        let per_direction = |handle: u64| {
            let mut record = connection(handle, 40000);
            let mut parsed = read_record::<ConnectionRecord>(&record).expect("record");
            parsed.flags = probectl_common::connection_flags::PER_DIRECTION;
            record = bytes_of(&parsed);
            record
        };
        // A record layer: the sending key context's first record waits for its fd (the next
        // socket write), the receiving context comes with the fd of the socket read before it.
        pipeline.record(&without_fd(chunk(0, 7, 0xa, 10, 3, 0, 0, b"GET", true)));
        pipeline.record(&per_direction(0xa));
        pipeline.record(&per_direction(0xb));
        pipeline.record(&chunk(1, 7, 0xb, 20, 2, 0, 0, b"OK", true));
        pipeline.record(&chunk(0, 7, 0xa, 30, 4, 0, 3, b" /x\n", true));
        // The fd's close comes for the handle the kernel saw last on it; it ends the one
        // connection.
        pipeline.record(&close(0xb, close_cause::FD_CLOSED, [0, 2]));
        assert!(pipeline.finish(&[]).is_none());
        assert_eq!(
            lines(&out),
            vec![
                (1, "write".into(), 0, 3, 0),
                (1, "read".into(), 0, 2, 0),
                (1, "write".into(), 3, 4, 0),
            ]
        );
    }

    #[test]
    fn a_call_without_an_fd_waits_for_its_connections_fd() {
        let (mut pipeline, out) = pipeline();
        // A buffering library: the write call makes no syscall, its fd comes after it (the
        // thread's next socket write); another connection's call passes meanwhile.
        pipeline.record(&without_fd(chunk(0, 7, 0xabc, 10, 3, 0, 0, b"GET", true)));
        pipeline.record(&chunk(1, 8, 0xdef, 15, 2, 0, 0, b"hi", true));
        assert!(pipeline.flush(0));
        pipeline.record(&connection(0xabc, 40000));
        pipeline.record(&chunk(1, 7, 0xabc, 20, 2, 0, 0, b"OK", true));
        // A connection whose fd never comes goes out unchanged at the end.
        pipeline.record(&without_fd(chunk(0, 9, 0x123, 30, 4, 0, 0, b"POST", true)));
        assert!(pipeline.finish(&[]).is_none());
        assert_eq!(
            fds(&out),
            vec![
                (1, "read".into(), Some(5)),
                (2, "write".into(), Some(5)),
                (2, "read".into(), Some(5)),
                (3, "write".into(), None)
            ]
        );
        let held = pipeline.connections.get(2).expect("conn 2");
        assert_eq!(held.local.as_deref(), Some("127.0.0.1:40000"));
        assert_eq!(held.moved, [3, 2]);
    }

    #[test]
    fn held_calls_go_out_by_the_pipeline_clock_alone() {
        let (mut pipeline, out) = pipeline();
        // The first flush sets the clock; the call is held from then.
        assert!(pipeline.flush(1_000_000_000));
        pipeline.record(&without_fd(chunk(0, 9, 0x123, 30, 4, 0, 0, b"POST", true)));
        // 199 ms later: still held (however long the test itself took).
        assert!(pipeline.flush(1_199_000_000));
        assert_eq!(pipeline.counts.events, 0, "held for its fd");
        // A clock that goes back (a replayed tick out of order) does not release it either.
        assert!(pipeline.flush(5));
        assert_eq!(pipeline.counts.events, 0, "held for its fd");
        // 200 ms after it was held: out, without an fd.
        assert!(pipeline.flush(1_200_000_000));
        assert_eq!(pipeline.counts.events, 1, "released");
        assert!(pipeline.finish(&[]).is_none());
        assert_eq!(fds(&out), vec![(1, "write".into(), None)]);
    }

    fn exited(pid: u32) -> Vec<u8> {
        bytes_of(&ProcessRecord {
            kind: record_kind::EXIT,
            pid,
            ts_ns: 99,
        })
    }

    #[test]
    fn a_process_gone_without_closing_ends_its_connections() {
        let (mut pipeline, _out) = pipeline();
        pipeline.record(&chunk(0, 7, 0xabc, 10, 3, 0, 0, b"GET", true));
        pipeline.record(&chunk(0, 7, 0xdef, 20, 4, 0, 0, b"POST", true));
        // Another process's exit changes nothing here.
        pipeline.record(&exited(101));
        assert!(pipeline.connections.all().iter().all(|c| !c.closed));
        pipeline.record(&exited(100));
        let all = pipeline.connections.all();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|c| c.closed), "{all:?}");
        assert_eq!(pipeline.connections.ended_by_exit, 2);
        // The handle used again (a pid reused) is a new connection.
        pipeline.record(&chunk(0, 7, 0xabc, 30, 2, 0, 0, b"OK", true));
        assert_eq!(pipeline.connections.total(), 3);
        assert!(pipeline.finish(&[]).is_none());
    }

    #[test]
    fn ended_connections_fold_into_totals_beyond_the_kept_ones() {
        use crate::capture::connections::KEPT_ENDED;
        let (mut pipeline, _out) = pipeline();
        let many = KEPT_ENDED as u64 + 500;
        for handle in 1..=many {
            pipeline.record(&chunk(0, 7, handle, handle * 10, 5, 0, 0, b"hello", true));
            // The first connection wrote 5 bytes more than were captured (a call lost whole):
            // its loss stays in the totals once it is folded.
            let written = if handle == 1 { 10 } else { 5 };
            pipeline.record(&close(handle, close_cause::HANDLE_ENDED, [written, 0]));
        }
        let table = &pipeline.connections;
        assert_eq!(table.all().len(), KEPT_ENDED);
        assert_eq!(table.total(), many);
        assert_eq!(table.folded.connections, 500);
        assert_eq!(table.folded.moved, [500 * 5 + 5, 0]);
        assert_eq!(table.folded.lost, [5, 0]);
        assert_eq!(table.folded.lossy, 1);
        // The kept ones are the most recent.
        assert_eq!(table.all()[0].id, 501);
        assert!(pipeline.finish(&[]).is_none());
    }

    #[test]
    fn a_handle_ended_by_its_lifecycle_function_starts_a_new_connection() {
        let (mut pipeline, out) = pipeline();
        // Memory-BIO server: no fd, the same SSL* for two connections in a row.
        for record in [
            chunk(1, 7, 0xabc, 10, 3, 0, 0, b"GET", true),
            chunk(0, 7, 0xabc, 20, 2, 0, 0, b"OK", true),
            close(0xabc, close_cause::HANDLE_ENDED, [2, 3]),
            chunk(1, 7, 0xabc, 30, 4, 0, 0, b"POST", true),
        ] {
            pipeline.record(&record);
        }
        assert!(pipeline.finish(&[((100, 0xabc), [0, 4])]).is_none());
        assert_eq!(
            lines(&out),
            vec![
                (1, "read".into(), 0, 3, 0),
                (1, "write".into(), 0, 2, 0),
                (2, "read".into(), 0, 4, 0)
            ]
        );
        let first = pipeline.connections.get(1).expect("conn 1");
        assert!(first.closed);
        assert_eq!(first.moved, [2, 3]);
        let second = pipeline.connections.get(2).expect("conn 2");
        assert!(!second.closed);
        assert_eq!(second.moved, [0, 4]);
    }

    #[test]
    fn calls_lost_at_the_end_of_a_connection_count_from_the_kernel_totals() {
        let (mut pipeline, _out) = pipeline();
        pipeline.record(&connection(0xabc, 40000));
        pipeline.record(&chunk(1, 7, 0xabc, 10, 100, 0, 0, &[b'x'; 100], true));
        // The next 2 calls (250 bytes) never arrived; the close says the stream had 350.
        pipeline.record(&close(0xabc, close_cause::FD_CLOSED, [0, 350]));
        assert!(pipeline.finish(&[]).is_none());
        let connection = pipeline.connections.get(1).expect("conn");
        assert_eq!(connection.moved, [0, 350]);
        assert_eq!(connection.captured, [0, 100]);
        assert_eq!(connection.lost(), [0, 250]);
    }

    #[test]
    fn a_chunk_lost_inside_a_call_splits_it_at_its_true_offsets() {
        let (mut pipeline, out) = pipeline();
        pipeline.record(&connection(0xabc, 40000));
        let size = probectl_common::CHUNK_DATA_MAX as u64;
        let data = vec![b'y'; size as usize];
        // A 3-chunk call whose middle chunk found the ring full.
        pipeline.record(&chunk(1, 7, 0xabc, 10, 3 * size, 0, 50, &data, false));
        pipeline.record(&chunk(1, 7, 0xabc, 10, 3 * size, 2 * size, 50, &data, true));
        assert!(pipeline.finish(&[]).is_none());
        assert_eq!(
            lines(&out),
            vec![
                (1, "read".into(), 50, 2 * size, size),
                (1, "read".into(), 50 + 2 * size, size, 0)
            ]
        );
        let connection = pipeline.connections.get(1).expect("conn");
        // The gap before offset 50 (calls lost whole) and the lost chunk.
        assert_eq!(connection.lost(), [0, 50 + size]);
    }

    #[test]
    fn kernel_state_restarting_at_zero_is_a_new_connection_and_counted() {
        let (mut pipeline, out) = pipeline();
        pipeline.record(&chunk(0, 7, 0xabc, 10, 10, 0, 0, b"0123456789", true));
        // The kernel's entry was evicted: the same handle's stream restarts at 0.
        pipeline.record(&chunk(0, 7, 0xabc, 20, 5, 0, 0, b"abcde", true));
        assert!(pipeline.finish(&[]).is_none());
        assert_eq!(
            lines(&out),
            vec![(1, "write".into(), 0, 10, 0), (2, "write".into(), 0, 5, 0)]
        );
        assert_eq!(pipeline.connections.restarted, 1);
        assert_eq!(pipeline.connections.out_of_order, 0);
    }

    #[test]
    fn times_past_the_end_of_the_range_saturate() {
        // Found by the replay fuzz target: a recording's clock base plus a record's time
        // overflowed.
        let out = Shared::default();
        let table = AttachTable::default();
        let write = AttachInfo {
            plugin: "openssl".into(),
            library: "/usr/lib/libssl.so.3".into(),
            function: "SSL_write".into(),
            direction: Direction::Write,
        };
        assert!(table.extend(0, vec![write]));
        let mut pipeline = Pipeline::new(
            table,
            Box::new(Renderer::new(Format::Json)),
            Box::new(out.clone()),
            u64::MAX - 5,
            1 << 20,
        )
        .expect("pipeline");
        pipeline.record(&chunk(0, 7, 0xabc, 10, 2, 0, 0, b"hi", true));
        pipeline.record(&close(0xabc, close_cause::HANDLE_ENDED, [2, 0]));
        assert!(pipeline.finish(&[]).is_none());
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one line");
        assert_eq!(line["ts_ns"].as_u64(), Some(u64::MAX));
    }

    #[test]
    fn stream_offsets_at_the_end_of_the_range_saturate() {
        // Malformed records (found by the pipeline fuzz target): stream offsets near u64::MAX
        // overflowed the placement.
        let (mut pipeline, out) = pipeline();
        pipeline.record(&chunk(0, 7, 0xabc, 10, 5, 0, u64::MAX - 1, b"hello", true));
        pipeline.record(&chunk(0, 7, 0xabc, 20, 2, 0, u64::MAX, b"hi", true));
        assert!(pipeline.finish(&[]).is_none());
        assert_eq!(
            lines(&out),
            vec![
                (1, "write".into(), u64::MAX - 1, 5, 0),
                (1, "write".into(), u64::MAX, 2, 0)
            ]
        );
        assert_eq!(
            pipeline.connections.get(1).expect("conn").moved,
            [u64::MAX, 0]
        );
        // Call lengths near u64::MAX: the count of bytes over the limit saturates.
        let (mut long_calls, _out) = self::pipeline();
        long_calls.record(&chunk(0, 7, 0xabc, 10, u64::MAX, 0, 0, b"a", true));
        long_calls.record(&chunk(0, 7, 0xdef, 20, u64::MAX, 0, 0, b"b", true));
        assert!(long_calls.finish(&[]).is_none());
        assert_eq!(long_calls.counts.bytes_truncated, u64::MAX);
    }

    #[test]
    fn exec_and_map_records_ask_the_control_plane_to_look() {
        let (mut pipeline, _out) = pipeline();
        for (kind, pid) in [(record_kind::EXEC, 7), (record_kind::MAP, 8)] {
            pipeline.record(&bytes_of(&ProcessRecord {
                kind,
                pid,
                ts_ns: 99,
            }));
        }
        let lookup = |pid, why| Lookup {
            pid,
            why,
            ts_ns: 99,
        };
        assert_eq!(
            pipeline.take_lookups(),
            vec![lookup(7, LookupCause::Exec), lookup(8, LookupCause::Map)]
        );
        assert!(pipeline.take_lookups().is_empty());
    }

    #[test]
    fn an_attach_id_added_after_the_pipeline_started_is_found() {
        let (mut pipeline, out) = pipeline();
        assert!(pipeline.table.extend(
            2,
            vec![AttachInfo {
                plugin: "gnutls".into(),
                library: "/usr/lib/libgnutls.so.30".into(),
                function: "gnutls_record_send".into(),
                direction: Direction::Write,
            }]
        ));
        // Ids must continue the table.
        assert!(!pipeline.table.extend(5, Vec::new()));
        pipeline.record(&chunk(2, 7, 0xdef, 10, 2, 0, 0, b"hi", true));
        pipeline.record(&chunk(9, 7, 0xdef, 20, 2, 0, 2, b"hi", true));
        assert!(pipeline.finish(&[]).is_none());
        assert_eq!(lines(&out), vec![(1, "write".into(), 0, 2, 0)]);
        assert_eq!(pipeline.counts.unknown_attach_ids, 1);
    }
}
