//! Connections as user space sees them: the kernel reports a connection handle's fd and its
//! socket's addresses (`ConnectionRecord`), and the close of that fd (`CloseRecord`); every call
//! carries its handle, fd and stream offset. This module gives each connection a stable id,
//! places every event in its connection's stream, and counts the gaps.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr};

use probectl_common::{connection_flags, family, CloseRecord, ConnectionRecord};

use crate::output::ConnectionView;
use crate::Direction;

/// What is known of one connection.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Stable for the connection's life, unique within a run (from 1).
    pub id: u64,
    pub pid: u32,
    /// The library's connection handle (`SSL*`, ...).
    pub handle: u64,
    pub fd: Option<i32>,
    /// `tcp`, `udp`, `unix`, `socket` (other families) or `file` (not a socket at all).
    pub transport: Option<&'static str>,
    pub local: Option<String>,
    pub remote: Option<String>,
    pub closed: bool,
    /// The handles joined into this connection after its first (`handle`): record-layer key
    /// contexts, one per direction and key (see [`ConnectionTable::on_connection`]).
    pub joined: Vec<u64>,
    /// Per direction (write, read): where the next event should start in the stream.
    next_offset: [u64; 2],
    /// Per direction: bytes the connection moved. The kernel's own count when it is known
    /// (at close, or read from its table at the end), which includes calls lost whole after
    /// the last event; else as far as the events reach.
    pub moved: [u64; 2],
    /// Per direction: bytes captured.
    pub captured: [u64; 2],
    /// The session secrets (`--keylog`) the library handed over for this connection.
    pub keys: Keys,
    /// Who its process is (cgroup, container), as the pipeline knew it at its first event.
    pub identity: Option<std::sync::Arc<crate::capture::identity::Identity>>,
    /// `--port`/`--host` do not select it, and the kernel copied none of its calls from its
    /// socket on (`connection_flags::NOT_SELECTED`): what it moved is not a loss.
    pub not_selected: bool,
}

/// The secrets of one connection, as its library's key-log function saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    /// Secrets seen (lines written to the key log).
    pub secrets: u64,
    /// The client random that names them in the key log (hex), the last one seen.
    pub client_random: Option<String>,
    /// Their labels, in order, the first [`KEYS_LABELS_KEPT`] only.
    pub labels: Vec<String>,
}

/// Labels kept per connection: a TLS 1.3 handshake logs five, a TLS 1.2 one one; more come
/// only with renegotiation, and those are counted, not kept.
pub const KEYS_LABELS_KEPT: usize = 8;

/// Handles with secrets but no connection yet (the handshake comes before the first call that
/// moves data) that are kept at most: past it the oldest handle's secrets are no longer tied
/// to its connection (counted).
pub const KEYS_PENDING_MAX: usize = 4096;

impl Keys {
    fn add(&mut self, label: &str, client_random: &str) {
        self.secrets += 1;
        self.client_random = Some(client_random.to_string());
        if self.labels.len() < KEYS_LABELS_KEPT {
            self.labels.push(label.to_string());
        }
    }
}

impl Connection {
    fn new(id: u64, pid: u32, handle: u64) -> Connection {
        Connection {
            id,
            pid,
            handle,
            fd: None,
            transport: None,
            local: None,
            remote: None,
            closed: false,
            joined: Vec::new(),
            next_offset: [0; 2],
            moved: [0; 2],
            captured: [0; 2],
            keys: Keys::default(),
            identity: None,
            not_selected: false,
        }
    }

    /// Per direction: bytes moved and not captured (calls or chunks lost, bytes over the
    /// capture limit, unreadable buffers); none for a connection left out by `--port`/`--host`.
    pub fn lost(&self) -> [u64; 2] {
        if self.not_selected {
            return [0, 0];
        }
        [
            self.moved[0].saturating_sub(self.captured[0]),
            self.moved[1].saturating_sub(self.captured[1]),
        ]
    }

    /// The kernel's final count of the connection's bytes.
    fn set_kernel_total(&mut self, position: [u64; 2]) {
        for (moved, kernel) in self.moved.iter_mut().zip(position) {
            *moved = (*moved).max(kernel);
        }
    }

    /// What output shows of the connection, for an event at `offset`.
    pub fn view(&self, offset: u64) -> ConnectionView<'_> {
        ConnectionView {
            id: self.id,
            handle: self.handle,
            fd: self.fd,
            transport: self.transport,
            local: self.local.as_deref(),
            remote: self.remote.as_deref(),
            offset,
        }
    }

    /// `local -> remote`, or what is known of it.
    pub fn describe(&self) -> String {
        match (&self.local, &self.remote) {
            (Some(local), Some(remote)) => format!("{local} -> {remote}"),
            _ => match (self.fd, self.transport) {
                (Some(fd), Some(transport)) => format!("fd {fd} ({transport})"),
                (Some(fd), None) => format!("fd {fd}"),
                _ => format!("handle {:#x} (fd unknown)", self.handle),
            },
        }
    }
}

fn index(direction: Direction) -> usize {
    match direction {
        Direction::Write => 0,
        Direction::Read => 1,
    }
}

/// An event's bytes as seen by the connection table.
#[derive(Debug, Clone, Copy)]
pub struct StreamRun {
    pub pid: u32,
    pub handle: u64,
    /// The fd the kernel reported with the call (-1: unknown).
    pub fd: i32,
    pub direction: Direction,
    /// Stream position of the event's first byte.
    pub offset: u64,
    /// Stream bytes the event accounts for.
    pub span: u64,
    /// Of those, the bytes captured.
    pub captured: u64,
}

/// Where an event sits in its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub id: u64,
    /// Stream position of the event's first byte.
    pub offset: u64,
    /// Bytes of the stream lost just before this event (calls that never arrived).
    pub gap_before: u64,
}

/// Ended connections kept one by one (for the summary's per-connection lines); older ones fold
/// into [`Folded`], so that a run of weeks over short connections keeps a bounded table.
pub const KEPT_ENDED: usize = 1024;

/// Totals of the ended connections no longer kept one by one.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Folded {
    pub connections: u64,
    /// Per direction (write, read): bytes moved, and of those not captured.
    pub moved: [u64; 2],
    pub lost: [u64; 2],
    /// Of the connections, those with bytes not captured.
    pub lossy: u64,
    /// Of the connections, those `--port`/`--host` left out.
    pub not_selected: u64,
}

#[derive(Default)]
pub struct ConnectionTable {
    /// Ended connections still kept, oldest first.
    ended: VecDeque<u64>,
    /// What the ended connections folded out of the table moved.
    pub folded: Folded,
    /// Connections ended because their process was gone without closing them.
    pub ended_by_exit: u64,
    /// The current connection of each (pid, handle).
    current: HashMap<(u32, u64), u64>,
    connections: HashMap<u64, Connection>,
    next_id: u64,
    /// Events that arrived behind their stream's position (never expected: see README).
    pub out_of_order: u64,
    /// Connections whose kernel state started again from offset 0 without an end (its entry
    /// was evicted from the kernel's table, or its end record was lost): a new connection.
    pub restarted: u64,
    /// Open connections of per-direction handles, by (pid, fd): where the other direction's
    /// handle (and a later key's) joins.
    by_fd: HashMap<(u32, i32), u64>,
    /// A joined handle's streams start where its connection's stood when it joined (a new
    /// key after a TLS 1.3 KeyUpdate counts its bytes from 0 again): per direction, the
    /// offset added to its events, set by its first event in that direction.
    bases: HashMap<(u32, u64), [Option<u64>; 2]>,
    /// Secrets of handles whose connection has not begun yet, by (pid, handle), with the
    /// order they came in (bounded by [`KEYS_PENDING_MAX`]).
    pending_keys: HashMap<(u32, u64), Keys>,
    pending_order: VecDeque<(u32, u64)>,
    /// Handles whose secrets were dropped from `pending_keys` before their connection began.
    pub keys_evicted: u64,
    /// Open connections by (pid, fd), for secrets tied to a socket by its ClientHello (Go's,
    /// which come with no handle); an entry is checked against its connection when used.
    open_by_fd: HashMap<(u32, i32), u64>,
    /// Secrets tied to a socket whose connection has not begun yet, by (pid, fd), with the
    /// order they came in (bounded by [`KEYS_PENDING_MAX`] too).
    pending_socket_keys: HashMap<(u32, i32), Keys>,
    pending_socket_order: VecDeque<(u32, i32)>,
    /// Handshakes whose handle moved no data before it made another handshake (a client that
    /// connects and closes at once, `s_client -reconnect`): their secrets are in the key log,
    /// tied to no connection, for the kernel saw no connection.
    pub keys_without_data: u64,
}

impl ConnectionTable {
    /// A secret for `handle` of `pid`: tied to the handle's current open connection, else kept
    /// for the connection the handle begins next. Returns the connection's id when it is
    /// known now.
    pub fn on_secret(
        &mut self,
        pid: u32,
        handle: u64,
        label: &str,
        client_random: &str,
    ) -> Option<u64> {
        let key = (pid, handle);
        if let Some(connection) = self
            .current
            .get(&key)
            .and_then(|id| self.connections.get_mut(id))
            .filter(|connection| !connection.closed)
        {
            connection.keys.add(label, client_random);
            return Some(connection.id);
        }
        if let Some(pending) = self.pending_keys.get_mut(&key) {
            if pending.client_random.as_deref() != Some(client_random) {
                // The handle (freed and allocated again at the same address) made a new
                // handshake without moving data in the last one.
                *pending = Keys::default();
                self.keys_without_data += 1;
            }
        } else {
            while self.pending_keys.len() >= KEYS_PENDING_MAX {
                let Some(oldest) = self.pending_order.pop_front() else {
                    break;
                };
                if self.pending_keys.remove(&oldest).is_some() {
                    self.keys_evicted += 1;
                }
            }
            self.pending_order.push_back(key);
        }
        self.pending_keys
            .entry(key)
            .or_default()
            .add(label, client_random);
        None
    }

    /// A secret with no handle, tied to the socket (`fd` of `pid`) that sent its ClientHello:
    /// tied to the open connection on that socket, else kept for the connection the socket
    /// begins next. Returns the connection's id when it is known now.
    pub fn on_socket_secret(
        &mut self,
        pid: u32,
        fd: i32,
        label: &str,
        client_random: &str,
    ) -> Option<u64> {
        let key = (pid, fd);
        if let Some(connection) = self
            .open_by_fd
            .get(&key)
            .and_then(|id| self.connections.get_mut(id))
            .filter(|connection| !connection.closed && connection.fd == Some(fd))
        {
            connection.keys.add(label, client_random);
            return Some(connection.id);
        }
        if let Some(pending) = self.pending_socket_keys.get_mut(&key) {
            if pending.client_random.as_deref() != Some(client_random) {
                *pending = Keys::default();
                self.keys_without_data += 1;
            }
        } else {
            while self.pending_socket_keys.len() >= KEYS_PENDING_MAX {
                let Some(oldest) = self.pending_socket_order.pop_front() else {
                    break;
                };
                if self.pending_socket_keys.remove(&oldest).is_some() {
                    self.keys_evicted += 1;
                }
            }
            self.pending_socket_order.push_back(key);
        }
        self.pending_socket_keys
            .entry(key)
            .or_default()
            .add(label, client_random);
        None
    }

    /// The fd of the current open connection of (pid, handle), when known.
    pub fn fd_of(&self, pid: u32, handle: u64) -> Option<i32> {
        self.current
            .get(&(pid, handle))
            .and_then(|id| self.connections.get(id))
            .filter(|connection| !connection.closed)
            .and_then(|connection| connection.fd)
    }

    /// Handshakes whose secrets are tied to no connection: their handle moved no data (those
    /// still waiting at the end of the run, and those a later handshake replaced).
    pub fn handshakes_without_data(&self) -> u64 {
        self.keys_without_data
            + self.pending_keys.len() as u64
            + self.pending_socket_keys.len() as u64
    }

    fn create(&mut self, pid: u32, handle: u64) -> &mut Connection {
        self.next_id += 1;
        let id = self.next_id;
        // The handle's previous connection (if any) is over: it folds like an ended one, for
        // every handle joined to it; the handle's offsets start afresh.
        if let Some(previous) = self.current.insert((pid, handle), id) {
            self.forget_handles(previous);
            self.ended.push_back(previous);
        }
        self.bases.remove(&(pid, handle));
        let keys = self.pending_keys.remove(&(pid, handle));
        if keys.is_some() {
            self.pending_order
                .retain(|pending| *pending != (pid, handle));
        }
        let connection = self
            .connections
            .entry(id)
            .or_insert_with(|| Connection::new(id, pid, handle));
        if let Some(keys) = keys {
            connection.keys = keys;
        }
        connection
    }

    /// Whether the current connection of (pid, handle) has a known fd.
    pub fn fd_known(&self, pid: u32, handle: u64) -> bool {
        self.current
            .get(&(pid, handle))
            .and_then(|id| self.connections.get(id))
            .is_some_and(|connection| connection.fd.is_some())
    }

    /// The kernel saw `record.connection` on `record.fd`. A per-direction handle (the key
    /// context of a record layer: one for sending, one for receiving, and new ones after a
    /// key update) joins the open connection its fd already has, if any: one TLS connection
    /// is one connection, whatever its library's handles.
    pub fn on_connection(&mut self, record: &ConnectionRecord) {
        let key = (record.pid, record.connection);
        let per_direction = record.flags & connection_flags::PER_DIRECTION != 0;
        if per_direction && self.join(record) {
            return;
        }
        // A connection seen before its fd was known gets its fd now; anything else is new.
        let learning = self.current.get(&key).copied().filter(|id| {
            self.connections
                .get(id)
                .is_some_and(|connection| connection.fd.is_none() && !connection.closed)
        });
        let connection = match learning.and_then(|id| self.connections.get_mut(&id)) {
            Some(connection) => connection,
            None => self.create(record.pid, record.connection),
        };
        connection.fd = Some(record.fd);
        connection.not_selected = record.flags & connection_flags::NOT_SELECTED != 0;
        let (transport, local, remote) = describe_socket(record);
        connection.transport = transport;
        connection.local = local;
        connection.remote = remote;
        let id = connection.id;
        let socket = (record.pid, record.fd);
        if let Some(keys) = self.pending_socket_keys.remove(&socket) {
            self.pending_socket_order
                .retain(|pending| *pending != socket);
            if let Some(connection) = self.connections.get_mut(&id) {
                if connection.keys.secrets == 0 {
                    connection.keys = keys;
                }
            }
        }
        self.open_by_fd.insert(socket, id);
        if per_direction {
            self.by_fd.insert(socket, id);
        }
    }

    /// Joins a per-direction handle to the open connection on its fd; false when there is
    /// none to join (or the handle already has events of its own elsewhere).
    fn join(&mut self, record: &ConnectionRecord) -> bool {
        let key = (record.pid, record.connection);
        let Some(&id) = self.by_fd.get(&(record.pid, record.fd)) else {
            return false;
        };
        if self
            .connections
            .get(&id)
            .is_none_or(|connection| connection.closed)
        {
            self.by_fd.remove(&(record.pid, record.fd));
            return false;
        }
        match self.current.get(&key).copied() {
            Some(current) if current == id => return true,
            Some(current) => {
                // Seen before its fd: joinable only while it has no events of its own.
                let empty = self.connections.get(&current).is_some_and(|connection| {
                    connection.fd.is_none() && connection.moved == [0, 0]
                });
                if !empty {
                    return false;
                }
                self.connections.remove(&current);
            }
            None => {}
        }
        self.current.insert(key, id);
        self.bases.insert(key, [None; 2]);
        if let Some(connection) = self.connections.get_mut(&id) {
            connection.joined.push(record.connection);
        }
        true
    }

    /// Where a handle's stream offsets start in its connection's, per direction: 0 for the
    /// handle a connection began with.
    fn base(&mut self, key: (u32, u64), direction: usize, next_offset: u64) -> u64 {
        match self.bases.get_mut(&key) {
            None => 0,
            Some(bases) => *bases[direction].get_or_insert(next_offset),
        }
    }

    /// Forgets every handle of an ended connection, so that none of them reaches it again.
    fn forget_handles(&mut self, id: u64) {
        let Some(connection) = self.connections.get(&id) else {
            return;
        };
        let pid = connection.pid;
        let handles: Vec<u64> = std::iter::once(connection.handle)
            .chain(connection.joined.iter().copied())
            .collect();
        for handle in handles {
            if self.current.get(&(pid, handle)) == Some(&id) {
                self.current.remove(&(pid, handle));
            }
            self.bases.remove(&(pid, handle));
        }
        self.by_fd.retain(|_, open| *open != id);
    }

    /// The connection ended (its fd was closed, or its handle ended); the kernel's final
    /// counts come with it. Returns the id of the connection it ended.
    pub fn on_close(&mut self, record: &CloseRecord) -> Option<u64> {
        let key = (record.pid, record.connection);
        let id = *self.current.get(&key)?;
        let bases = self.bases.get(&key).copied().unwrap_or([Some(0); 2]);
        self.forget_handles(id);
        let connection = self.connections.get_mut(&id)?;
        connection.closed = true;
        if let Some(fd) = connection.fd {
            if self.open_by_fd.get(&(record.pid, fd)) == Some(&id) {
                self.open_by_fd.remove(&(record.pid, fd));
            }
        }
        // A joined handle's kernel counts start at its base; a direction it never moved
        // bytes in tells nothing.
        let mut position = [0; 2];
        for (direction, moved) in record.position.iter().enumerate() {
            if let Some(base) = bases[direction] {
                position[direction] = base + moved;
            }
        }
        connection.set_kernel_total(position);
        self.ended(id);
        Some(id)
    }

    /// Process `pid` is gone: its connections still open end (it may never have closed them:
    /// it crashed, or exited with them open). Returns their ids.
    pub fn on_process_exit(&mut self, pid: u32) -> Vec<u64> {
        let mut keys: Vec<(u32, u64)> = self
            .current
            .keys()
            .filter(|(owner, _)| *owner == pid)
            .copied()
            .collect();
        keys.sort_unstable();
        self.open_by_fd.retain(|(owner, _), _| *owner != pid);
        let mut ids = Vec::new();
        for key in keys {
            let Some(id) = self.current.get(&key).copied() else {
                continue;
            };
            self.forget_handles(id);
            self.current.remove(&key);
            if let Some(connection) = self.connections.get_mut(&id) {
                if connection.closed {
                    continue;
                }
                connection.closed = true;
                self.ended_by_exit += 1;
                ids.push(id);
                self.ended.push_back(id);
            }
        }
        ids
    }

    /// Folds the oldest ended connections beyond [`KEPT_ENDED`] into [`Folded`]. Called after
    /// the writer was told of an end (it may still look the connection up until then).
    pub fn fold_ended(&mut self) {
        while self.ended.len() > KEPT_ENDED {
            let Some(id) = self.ended.pop_front() else {
                break;
            };
            let Some(connection) = self.connections.remove(&id) else {
                continue;
            };
            let lost = connection.lost();
            self.folded.connections += 1;
            for (direction, lost) in lost.iter().enumerate() {
                self.folded.moved[direction] += connection.moved[direction];
                self.folded.lost[direction] += lost;
            }
            if lost != [0, 0] {
                self.folded.lossy += 1;
            }
            if connection.not_selected {
                self.folded.not_selected += 1;
            }
        }
        // No fd keeps pointing at a connection that is gone (a restarted one is never closed).
        let connections = &self.connections;
        self.by_fd.retain(|_, id| connections.contains_key(id));
    }

    fn ended(&mut self, id: u64) {
        self.ended.push_back(id);
    }

    /// Every connection seen: the ones kept one by one and the folded ones.
    pub fn total(&self) -> u64 {
        self.connections.len() as u64 + self.folded.connections
    }

    /// The kernel's count of a connection still open at the end, by (pid, handle).
    pub fn on_kernel_position(&mut self, key: (u32, u64), position: [u64; 2]) {
        let bases = self.bases.get(&key).copied().unwrap_or([Some(0); 2]);
        if let Some(connection) = self
            .current
            .get(&key)
            .and_then(|id| self.connections.get_mut(id))
        {
            let mut rebased = [0; 2];
            for (direction, moved) in position.iter().enumerate() {
                if let Some(base) = bases[direction] {
                    rebased[direction] = base + moved;
                }
            }
            connection.set_kernel_total(rebased);
        }
    }

    /// Places an event in its connection's stream.
    pub fn place(&mut self, run: &StreamRun) -> Placement {
        let StreamRun {
            pid,
            handle,
            fd,
            direction,
            offset,
            span,
            captured,
        } = *run;
        let direction = index(direction);
        let key = (pid, handle);
        let offset = if self.bases.contains_key(&key) {
            let next = self
                .current
                .get(&key)
                .and_then(|id| self.connections.get(id))
                .map_or(0, |connection| connection.next_offset[direction]);
            offset.saturating_add(self.base(key, direction, next))
        } else {
            offset
        };
        // A stream that starts again from 0 is a new connection whose start the kernel did
        // not tell (its state was evicted, or the end record lost).
        let restarted = self.current.get(&(pid, handle)).is_some_and(|id| {
            offset == 0
                && self
                    .connections
                    .get(id)
                    .is_some_and(|connection| connection.next_offset[direction] > 0)
        });
        if restarted {
            self.restarted += 1;
            if let Some(previous) = self.current.remove(&(pid, handle)) {
                self.ended.push_back(previous);
            }
        }
        let id = match self.current.get(&(pid, handle)) {
            Some(id) => *id,
            None => {
                let connection = self.create(pid, handle);
                if fd >= 0 {
                    connection.fd = Some(fd);
                }
                connection.id
            }
        };
        let Some(connection) = self.connections.get_mut(&id) else {
            return Placement {
                id,
                offset,
                gap_before: 0,
            };
        };
        let expected = connection.next_offset[direction];
        let gap_before = offset.saturating_sub(expected);
        if offset < expected {
            self.out_of_order += 1;
        }
        connection.next_offset[direction] =
            connection.next_offset[direction].max(offset.saturating_add(span));
        connection.moved[direction] = connection.moved[direction].max(offset.saturating_add(span));
        connection.captured[direction] += captured;
        Placement {
            id,
            offset,
            gap_before,
        }
    }

    pub fn get(&self, id: u64) -> Option<&Connection> {
        self.connections.get(&id)
    }

    /// Notes who the connection's process is, unless it is known already.
    pub fn note_identity(
        &mut self,
        id: u64,
        identity: &Option<std::sync::Arc<crate::capture::identity::Identity>>,
    ) {
        if let Some(connection) = self.connections.get_mut(&id) {
            if connection.identity.is_none() {
                connection.identity.clone_from(identity);
            }
        }
    }

    /// Every connection, by id.
    pub fn all(&self) -> Vec<&Connection> {
        let mut all: Vec<&Connection> = self.connections.values().collect();
        all.sort_by_key(|connection| connection.id);
        all
    }
}

fn describe_socket(
    record: &ConnectionRecord,
) -> (Option<&'static str>, Option<String>, Option<String>) {
    const SOCK_STREAM: u16 = 1;
    const SOCK_DGRAM: u16 = 2;
    let ip_transport = match record.socket_type {
        SOCK_STREAM => "tcp",
        SOCK_DGRAM => "udp",
        _ => "socket",
    };
    match record.family {
        family::INET => {
            let ip = |bytes: &[u8; 16]| Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]);
            (
                Some(ip_transport),
                Some(format!("{}:{}", ip(&record.local_addr), record.local_port)),
                Some(format!(
                    "{}:{}",
                    ip(&record.remote_addr),
                    record.remote_port
                )),
            )
        }
        family::INET6 => (
            Some(ip_transport),
            Some(ipv6_address(record.local_addr, record.local_port)),
            Some(ipv6_address(record.remote_addr, record.remote_port)),
        ),
        family::UNIX => {
            // The socket's own name (its bound path, else its inode); the peer's is not read.
            let name = unix_socket_path(record.pid, record.inode).map_or_else(
                || format!("unix:inode={}", record.inode),
                |path| format!("unix:{path}"),
            );
            (Some("unix"), Some(name), None)
        }
        0 if record.inode != 0 => (Some("file"), None, None),
        _ => (None, None, None),
    }
}

/// `[ipv6]:port`, or `ipv4:port` for an IPv4-mapped address (a dual-stack socket talking IPv4).
fn ipv6_address(address: [u8; 16], port: u16) -> String {
    let address = Ipv6Addr::from(address);
    match address.to_ipv4_mapped() {
        Some(ipv4) => format!("{ipv4}:{port}"),
        None => format!("[{address}]:{port}"),
    }
}

/// The path a unix socket is bound to, from the process's /proc/net/unix (by inode).
fn unix_socket_path(pid: u32, inode: u64) -> Option<String> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(6)?.parse::<u64>().ok()? == inode)
            .then(|| fields.get(7).map(|path| path.to_string()))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        pid: u32,
        handle: u64,
        fd: i32,
        local_port: u16,
        remote_port: u16,
    ) -> ConnectionRecord {
        ConnectionRecord {
            pid,
            fd,
            connection: handle,
            family: family::INET,
            socket_type: 1,
            local_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_addr: [127, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            local_port,
            remote_port,
            ..ConnectionRecord::default()
        }
    }

    #[test]
    fn a_handle_keeps_its_id_until_close_and_gets_a_new_one_after() {
        let mut table = ConnectionTable::default();
        table.on_connection(&record(7, 0xabc, 5, 40000, 443));
        let first = table.place(&StreamRun {
            pid: 7,
            handle: 0xabc,
            fd: 5,
            direction: Direction::Write,
            offset: 0,
            span: 10,
            captured: 10,
        });
        let second = table.place(&StreamRun {
            pid: 7,
            handle: 0xabc,
            fd: 5,
            direction: Direction::Write,
            offset: 10,
            span: 5,
            captured: 5,
        });
        assert_eq!((first.id, second.id), (1, 1));
        assert_eq!(
            table.get(1).map(Connection::describe).as_deref(),
            Some("127.0.0.1:40000 -> 127.0.0.2:443")
        );
        table.on_close(&CloseRecord {
            pid: 7,
            fd: 5,
            connection: 0xabc,
            ..CloseRecord::default()
        });
        assert!(table.get(1).is_some_and(|c| c.closed));
        // The same SSL* address reused by the next connection.
        table.on_connection(&record(7, 0xabc, 6, 40001, 443));
        assert_eq!(
            table
                .place(&StreamRun {
                    pid: 7,
                    handle: 0xabc,
                    fd: 6,
                    direction: Direction::Read,
                    offset: 0,
                    span: 3,
                    captured: 3
                })
                .id,
            2
        );
    }

    #[test]
    fn ipv6_addresses_are_bracketed_and_mapped_ipv4_is_plain() {
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(ipv6_address(mapped, 443), "127.0.0.1:443");
        assert_eq!(
            ipv6_address(Ipv6Addr::LOCALHOST.octets(), 8443),
            "[::1]:8443"
        );
    }

    #[test]
    fn calls_lost_whole_show_as_gaps() {
        let mut table = ConnectionTable::default();
        table.place(&StreamRun {
            pid: 1,
            handle: 1,
            fd: 3,
            direction: Direction::Read,
            offset: 0,
            span: 100,
            captured: 100,
        });
        let after_gap = table.place(&StreamRun {
            pid: 1,
            handle: 1,
            fd: 3,
            direction: Direction::Read,
            offset: 250,
            span: 50,
            captured: 20,
        });
        assert_eq!(after_gap.gap_before, 150);
        let connection = table.get(after_gap.id).expect("connection");
        assert_eq!(
            (
                connection.moved[1],
                connection.captured[1],
                connection.lost()[1]
            ),
            (300, 120, 180)
        );
    }

    #[test]
    fn a_connection_learnt_late_keeps_its_id() {
        let mut table = ConnectionTable::default();
        let before = table.place(&StreamRun {
            pid: 1,
            handle: 9,
            fd: -1,
            direction: Direction::Write,
            offset: 0,
            span: 10,
            captured: 10,
        });
        table.on_connection(&record(1, 9, 4, 1, 2));
        let after = table.place(&StreamRun {
            pid: 1,
            handle: 9,
            fd: 4,
            direction: Direction::Write,
            offset: 10,
            span: 10,
            captured: 10,
        });
        assert_eq!(before.id, after.id);
        assert_eq!(table.get(after.id).and_then(|c| c.fd), Some(4));
    }

    fn run(handle: u64, direction: Direction, offset: u64, span: u64) -> StreamRun {
        StreamRun {
            pid: 7,
            handle,
            fd: 5,
            direction,
            offset,
            span,
            captured: span,
        }
    }

    fn per_direction(handle: u64, fd: i32) -> ConnectionRecord {
        ConnectionRecord {
            flags: connection_flags::PER_DIRECTION,
            ..record(7, handle, fd, 40000, 443)
        }
    }

    #[test]
    fn per_direction_handles_on_one_fd_are_one_connection() {
        let mut table = ConnectionTable::default();
        // The sending key context, then the receiving one, on fd 5.
        table.on_connection(&per_direction(0xa, 5));
        let sent = table.place(&run(0xa, Direction::Write, 0, 100));
        table.on_connection(&per_direction(0xb, 5));
        let received = table.place(&run(0xb, Direction::Read, 0, 300));
        assert_eq!((sent.id, received.id), (1, 1));
        assert_eq!(table.total(), 1);
        // A key update: a new sending context, whose stream starts at 0 again, continues
        // the connection's.
        table.on_connection(&per_direction(0xc, 5));
        let updated = table.place(&run(0xc, Direction::Write, 0, 50));
        assert_eq!(
            updated,
            Placement {
                id: 1,
                offset: 100,
                gap_before: 0
            }
        );
        // The fd's close comes for one handle and ends the connection, with the kernel's
        // count of that handle placed after the bytes before it.
        let ended = table.on_close(&CloseRecord {
            pid: 7,
            fd: 5,
            connection: 0xc,
            position: [60, 0],
            ..CloseRecord::default()
        });
        assert_eq!(ended, Some(1));
        let connection = table.get(1).expect("kept");
        assert!(connection.closed);
        assert_eq!(connection.moved, [160, 300]);
        assert_eq!(connection.lost(), [10, 0]);
        // The other handles' later ends find nothing, and the process's exit ends nothing
        // more.
        let late = CloseRecord {
            pid: 7,
            fd: 5,
            connection: 0xb,
            cause: probectl_common::close_cause::HANDLE_ENDED,
            ..CloseRecord::default()
        };
        assert_eq!(table.on_close(&late), None);
        assert!(table.on_process_exit(7).is_empty());
        // The next connection on the same fd, with new contexts, is a new connection.
        table.on_connection(&per_direction(0xd, 5));
        assert_eq!(table.place(&run(0xd, Direction::Write, 0, 10)).id, 2);
    }

    #[test]
    fn a_joined_handle_that_moves_to_another_fd_starts_afresh() {
        let mut table = ConnectionTable::default();
        table.on_connection(&per_direction(0xa, 5));
        table.place(&run(0xa, Direction::Write, 0, 100));
        table.on_connection(&per_direction(0xb, 5));
        table.place(&run(0xb, Direction::Write, 0, 40));
        // 0xb on fd 6, where nothing is open: a connection of its own, whose offsets are its
        // own again (no base left from its join), and the one it left ends for all handles.
        table.on_connection(&per_direction(0xb, 6));
        let moved = table.place(&StreamRun {
            fd: 6,
            ..run(0xb, Direction::Write, 0, 10)
        });
        assert_eq!(
            moved,
            Placement {
                id: 2,
                offset: 0,
                gap_before: 0
            }
        );
        assert_eq!(table.place(&run(0xa, Direction::Write, 100, 1)).id, 3);
    }

    #[test]
    fn handles_of_other_libraries_on_one_fd_stay_apart() {
        let mut table = ConnectionTable::default();
        table.on_connection(&record(7, 0xa, 5, 40000, 443));
        table.on_connection(&record(7, 0xb, 5, 40000, 443));
        let first = table.place(&run(0xa, Direction::Write, 0, 1));
        let second = table.place(&run(0xb, Direction::Write, 0, 1));
        assert_ne!(first.id, second.id);
    }
}
