//! `--format pcapng`: each connection's plaintext written as a TCP conversation that Wireshark
//! and tshark reassemble and dissect.
//!
//! Every connection becomes Ethernet + IPv4/IPv6 + TCP packets between its real addresses (or
//! placeholders, see [`placeholder_endpoints`]). Per direction, a segment's sequence number is
//! an initial number + 1 + the stream offset of its first byte, so bytes that were not captured
//! (calls lost whole, the uncaptured tail of a call) are a jump in the sequence numbers, which
//! Wireshark reports as "previous segment not captured": they are never filled in. Each packet
//! acknowledges everything the other direction is known to have sent. A handshake (SYN,
//! SYN-ACK, ACK) is synthesized before the first packet and a FIN when the traced end closes
//! its fd. Every packet carries a comment saying where it came from.
//!
//! The pcapng blocks are built by `pcap-file` into a scratch buffer and copied out per event,
//! so a pipe (`| tshark -i -`) gets each packet as soon as the session flushes its output.

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::budget::MemoryBudget;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use etherparse::{PacketBuilder, TcpHeader, TcpOptionElement};
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness};

use crate::output::{ConnectionView, Event, EventWriter, Output};
use crate::Direction;

/// Most payload bytes in one segment: what fits an IPv4 packet (65535 - 20 - 20), under 64 KiB.
/// A larger call is split into several segments.
pub const MAX_SEGMENT_PAYLOAD: usize = 65_495;

/// Window scale announced in both synthesized SYNs: with the largest window it allows ~1 GiB
/// in flight, so Wireshark reports no "window full" where a call moved a lot of data.
const WINDOW_SCALE: u8 = 14;
const WINDOW: u16 = 65_535;

/// Where connections without known IP addresses are placed: the traced end is
/// `198.18.0.1:<1024 + id mod 64511>`, its peer `198.19.0.1:443` (RFC 2544's benchmarking
/// range, never a real peer).
pub const PLACEHOLDER_LOCAL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const PLACEHOLDER_REMOTE: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
pub const PLACEHOLDER_REMOTE_PORT: u16 = 443;

/// The first bytes an HTTP/2 client sends (RFC 9113 section 3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// MAC addresses of the two ends (locally administered): Ethernet needs some.
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

#[derive(Debug, thiserror::Error)]
pub enum PcapngError {
    #[error("writing a pcapng block")]
    Block(#[source] pcap_file::PcapError),
    #[error("building a packet")]
    Packet(#[source] etherparse::err::packet::BuildVecWriteError),
    #[error("setting TCP options")]
    TcpOptions(#[source] etherparse::TcpOptionWriteError),
}

impl From<PcapngError> for io::Error {
    fn from(error: PcapngError) -> io::Error {
        io::Error::other(error)
    }
}

/// TCP flags of a synthesized segment (ACK is set whenever an acknowledgement is given).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub syn: bool,
    pub fin: bool,
    pub psh: bool,
}

/// One TCP segment to synthesize.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    pub from: SocketAddr,
    pub to: SocketAddr,
    /// True when `from` is the end that sent the SYN (picks the MAC addresses).
    pub from_client: bool,
    pub seq: u32,
    pub ack: Option<u32>,
    pub flags: Flags,
    pub payload: &'a [u8],
}

/// Appends the Ethernet frame of `segment` to `packet`: IPv4 when both addresses are IPv4,
/// IPv6 otherwise (an IPv4 address then as `::ffff:a.b.c.d`), checksums computed.
pub fn build_packet(segment: &Segment<'_>, packet: &mut Vec<u8>) -> Result<(), PcapngError> {
    let mut tcp = TcpHeader::new(segment.from.port(), segment.to.port(), segment.seq, WINDOW);
    tcp.syn = segment.flags.syn;
    tcp.fin = segment.flags.fin;
    tcp.psh = segment.flags.psh;
    if let Some(ack) = segment.ack {
        tcp.ack = true;
        tcp.acknowledgment_number = ack;
    }
    if segment.flags.syn {
        tcp.set_options(&[
            TcpOptionElement::MaximumSegmentSize(MAX_SEGMENT_PAYLOAD as u16),
            TcpOptionElement::Noop,
            TcpOptionElement::WindowScale(WINDOW_SCALE),
        ])
        .map_err(PcapngError::TcpOptions)?;
    }
    let (source_mac, destination_mac) = if segment.from_client {
        (CLIENT_MAC, SERVER_MAC)
    } else {
        (SERVER_MAC, CLIENT_MAC)
    };
    let ethernet = PacketBuilder::ethernet2(source_mac, destination_mac);
    let builder = match (segment.from.ip(), segment.to.ip()) {
        (IpAddr::V4(source), IpAddr::V4(destination)) => ethernet
            .ipv4(source.octets(), destination.octets(), 64)
            .tcp_header(tcp),
        (source, destination) => ethernet
            .ipv6(as_v6(source).octets(), as_v6(destination).octets(), 64)
            .tcp_header(tcp),
    };
    builder
        .write_to_vec(packet, segment.payload)
        .map_err(PcapngError::Packet)
}

fn as_v6(address: IpAddr) -> Ipv6Addr {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The endpoints written for a connection whose addresses are not both known IP endpoints
/// (memory-BIO programs such as node, unix sockets): stable for the connection's id.
pub fn placeholder_endpoints(connection_id: u64) -> (SocketAddr, SocketAddr) {
    let port = 1024 + (connection_id % 64_511) as u16;
    (
        SocketAddr::new(IpAddr::V4(PLACEHOLDER_LOCAL), port),
        SocketAddr::new(IpAddr::V4(PLACEHOLDER_REMOTE), PLACEHOLDER_REMOTE_PORT),
    )
}

/// The two directions of a conversation, named from the traced end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Bytes the traced end wrote (local → remote).
    Local = 0,
    /// Bytes the traced end read (remote → local).
    Remote = 1,
}

impl Side {
    fn of(direction: Direction) -> Side {
        match direction {
            Direction::Write => Side::Local,
            Direction::Read => Side::Remote,
        }
    }

    fn other(self) -> Side {
        match self {
            Side::Local => Side::Remote,
            Side::Remote => Side::Local,
        }
    }
}

/// One connection being written as a TCP conversation.
struct Conversation {
    local: SocketAddr,
    remote: SocketAddr,
    /// Whether the traced end is the one that sent the synthesized SYN.
    local_is_client: bool,
    /// Initial sequence number per side (the SYN's); data byte at offset N is `isn + 1 + N`.
    isn: [u32; 2],
    /// Per side: the end of the furthest stream span seen (captured or not), which the other
    /// side acknowledges: the peer did receive those bytes even where we did not.
    sent: [u64; 2],
}

impl Conversation {
    fn endpoint(&self, side: Side) -> SocketAddr {
        match side {
            Side::Local => self.local,
            Side::Remote => self.remote,
        }
    }

    fn is_client(&self, side: Side) -> bool {
        (side == Side::Local) == self.local_is_client
    }

    fn seq(&self, side: Side, offset: u64) -> u32 {
        self.isn[side as usize]
            .wrapping_add(1)
            .wrapping_add(offset as u32)
    }

    /// The acknowledgement `side` gives: everything the other side sent.
    fn ack(&self, side: Side) -> u32 {
        let other = side.other();
        self.seq(other, self.sent[other as usize])
    }

    fn segment<'a>(&self, side: Side, seq: u32, flags: Flags, payload: &'a [u8]) -> Segment<'a> {
        Segment {
            from: self.endpoint(side),
            to: self.endpoint(side.other()),
            from_client: self.is_client(side),
            seq,
            ack: Some(self.ack(side)),
            flags,
            payload,
        }
    }
}

/// What became of a connection id.
enum Slot {
    Written(Conversation),
    /// The same TCP connection seen from its other end (both ends traced on this host), already
    /// being written under another id: its events are counted, not written twice.
    Mirror,
}

/// What one connection's state costs against the memory budget: its slot, its 4-tuple's entry,
/// the ids' queue and the hash tables' control bytes and slack.
const SLOT_BYTES: u64 = (std::mem::size_of::<(u64, Slot)>()
    + std::mem::size_of::<((SocketAddr, SocketAddr), u64)>()
    + std::mem::size_of::<u64>()
    + 32) as u64;

/// Unordered pair of endpoints: a TCP connection whichever end it is seen from.
fn tuple_key(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// Writes events as pcapng (see the module documentation).
pub struct PcapngWriter {
    /// Blocks are built here, then copied to the output.
    blocks: PcapNgWriter<Vec<u8>>,
    slots: HashMap<u64, Slot>,
    /// The connection id written for each open TCP 4-tuple.
    open_tuples: HashMap<(SocketAddr, SocketAddr), u64>,
    /// Scratch buffer for one packet.
    packet: Vec<u8>,
    /// Server ports of connections that started with the HTTP/2 client preface.
    http2_ports: BTreeSet<u16>,
    placeholder_connections: u64,
    mirror_connections: u64,
    mirror_bytes: u64,
    /// The state of all open connections, against `--memory-budget`.
    budget: MemoryBudget,
    /// Connection ids in the order their slots were made (ids of closed ones are dropped
    /// lazily): the oldest conversation is the one ended when the budget is full.
    order: VecDeque<u64>,
    evicted: u64,
}

impl PcapngWriter {
    pub fn new() -> Result<PcapngWriter, PcapngError> {
        let host = read_trimmed("/proc/sys/kernel/hostname");
        let os = format!(
            "{} {}",
            read_trimmed("/proc/sys/kernel/ostype"),
            read_trimmed("/proc/sys/kernel/osrelease")
        );
        Self::with_identity(&host, &os)
    }

    /// A writer whose section header names `host` and `os` (fixed in tests).
    pub fn with_identity(host: &str, os: &str) -> Result<PcapngWriter, PcapngError> {
        let section = SectionHeaderBlock {
            endianness: Endianness::native(),
            options: vec![
                SectionHeaderOption::Comment(
                    format!(
                        "TLS plaintext captured by probectl on {host}, written as synthesized TCP \
                         conversations (handshakes and FINs are synthesized; sequence jumps are \
                         bytes not captured)"
                    )
                    .into(),
                ),
                SectionHeaderOption::Hardware(host.to_string().into()),
                SectionHeaderOption::OS(os.to_string().into()),
                SectionHeaderOption::UserApplication(
                    format!("probectl {}", env!("CARGO_PKG_VERSION")).into(),
                ),
            ],
            ..Default::default()
        };
        let mut blocks =
            PcapNgWriter::with_section_header(Vec::new(), section).map_err(PcapngError::Block)?;
        blocks
            .write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: 0,
                options: vec![
                    InterfaceDescriptionOption::IfName("probectl".into()),
                    InterfaceDescriptionOption::IfDescription(
                        "TLS plaintext from eBPF uprobes, as synthesized TCP".into(),
                    ),
                    // Timestamps in nanoseconds, as the events have them.
                    InterfaceDescriptionOption::IfTsResol(9),
                ],
            })
            .map_err(PcapngError::Block)?;
        Ok(PcapngWriter {
            blocks,
            slots: HashMap::new(),
            open_tuples: HashMap::new(),
            packet: Vec::with_capacity(MAX_SEGMENT_PAYLOAD + 128),
            http2_ports: BTreeSet::new(),
            placeholder_connections: 0,
            mirror_connections: 0,
            mirror_bytes: 0,
            budget: MemoryBudget::default(),
            order: VecDeque::new(),
            evicted: 0,
        })
    }

    /// With a memory budget of `limit` bytes for all connections' state (`--memory-budget`).
    pub fn with_budget(mut self, limit: u64) -> PcapngWriter {
        self.budget = MemoryBudget::new(limit);
        self
    }

    /// Makes room for one more connection's state, ending the oldest conversations (FINs
    /// written, counted) while the budget is full.
    fn make_room(&mut self, ts_ns: u64) -> Result<(), PcapngError> {
        while !self.budget.fits(SLOT_BYTES) {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            let Some(slot) = self.slots.remove(&oldest) else {
                continue;
            };
            self.budget.update(SLOT_BYTES, 0);
            self.evicted += 1;
            if let Slot::Written(conversation) = slot {
                self.end_conversation(
                    oldest,
                    &conversation,
                    ts_ns,
                    "conversation ended here: the memory budget (--memory-budget) is full; \
                     its later bytes start a new conversation",
                )?;
            }
        }
        // Ids of connections closed meanwhile, dropped once they outnumber the open ones.
        if self.order.len() > 2 * self.slots.len() + 64 {
            let slots = &self.slots;
            self.order.retain(|id| slots.contains_key(id));
        }
        Ok(())
    }

    /// A slot for connection `id`, within the budget.
    fn insert_slot(&mut self, id: u64, slot: Slot) {
        self.slots.insert(id, slot);
        self.order.push_back(id);
        self.budget.update(0, SLOT_BYTES);
    }

    /// Server ports of the connections that spoke HTTP/2.
    pub fn http2_ports(&self) -> &BTreeSet<u16> {
        &self.http2_ports
    }

    /// The tshark/Wireshark options that dissect the HTTP/2 written, if any was.
    pub fn http2_options(&self) -> Option<String> {
        if self.http2_ports.is_empty() {
            return None;
        }
        let options: Vec<String> = self
            .http2_ports
            .iter()
            .map(|port| format!("-d tcp.port=={port},http2"))
            .collect();
        Some(options.join(" "))
    }

    /// Messages for stderr at the end of the run.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(options) = self.http2_options() {
            let ports: Vec<String> = self.http2_ports.iter().map(u16::to_string).collect();
            notes.push(format!(
                "pcapng: HTTP/2 was written on TCP port {}; tshark dissects it only when told: \
                 tshark {options} (Wireshark: Analyze > Decode As..., TCP port, HTTP2)",
                ports.join(", ")
            ));
        }
        if self.placeholder_connections > 0 {
            let (local, remote) = placeholder_endpoints(0);
            notes.push(format!(
                "pcapng: {} connections had no known IP addresses and were written between \
                 placeholders {}:<1024 + connection id mod 64511> and {remote}",
                self.placeholder_connections,
                local.ip(),
            ));
        }
        if self.evicted > 0 {
            notes.push(format!(
                "pcapng: {} conversations were ended early (FINs written) because the state of \
                 all open connections reached --memory-budget ({} bytes); their later bytes \
                 started new conversations",
                self.evicted,
                self.budget.limit()
            ));
        }
        if self.mirror_connections > 0 {
            notes.push(format!(
                "pcapng: {} connections were traced at both ends; each was written once, from \
                 the end seen first ({} bytes of the other end's view not written again)",
                self.mirror_connections, self.mirror_bytes
            ));
        }
        notes
    }

    /// Copies the blocks built so far to `out` (the section header the first time).
    fn drain(&mut self, out: &mut dyn Output) -> io::Result<()> {
        let buffer = self.blocks.get_mut();
        let result = out.write_all(buffer);
        buffer.clear();
        result
    }

    /// Builds `segment` into an enhanced packet block with `comment`.
    fn write_segment(
        &mut self,
        segment: &Segment<'_>,
        ts_ns: u64,
        comment: String,
    ) -> Result<(), PcapngError> {
        self.packet.clear();
        build_packet(segment, &mut self.packet)?;
        self.blocks
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: Duration::from_nanos(ts_ns),
                original_len: self.packet.len() as u32,
                data: self.packet.as_slice().into(),
                options: vec![EnhancedPacketOption::Comment(comment.into())],
            })
            .map_err(PcapngError::Block)?;
        Ok(())
    }

    /// The conversation of `event`'s connection, started (handshake written) if it is new;
    /// `None` for a connection already written from its other end.
    fn conversation_for(&mut self, event: &Event<'_>) -> Result<Option<u64>, PcapngError> {
        let id = event.conn.id;
        match self.slots.get(&id) {
            Some(Slot::Written(_)) => return Ok(Some(id)),
            Some(Slot::Mirror) => return Ok(None),
            None => {}
        }
        let endpoints = event
            .conn
            .local
            .zip(event.conn.remote)
            .and_then(|(local, remote)| Some((local.parse().ok()?, remote.parse().ok()?)));
        let (local, remote) = match endpoints {
            Some(endpoints) => endpoints,
            None => {
                self.placeholder_connections += 1;
                placeholder_endpoints(id)
            }
        };
        let key = tuple_key(local, remote);
        self.make_room(event.ts_ns)?;
        if self.open_tuples.contains_key(&key) {
            self.mirror_connections += 1;
            self.insert_slot(id, Slot::Mirror);
            return Ok(None);
        }
        self.open_tuples.insert(key, id);
        let conversation = Conversation {
            local,
            remote,
            local_is_client: traced_end_is_client(local, remote, event.attach.direction),
            // Fixed per side so that captures are reproducible; different per side so that the
            // raw numbers of the two directions are not confused.
            isn: [0x1000_0000, 0x2000_0000],
            sent: [0, 0],
        };
        let client = if conversation.local_is_client {
            Side::Local
        } else {
            Side::Remote
        };
        let server = client.other();
        let note = |name: &str| {
            format!("probectl: synthesized {name} (conn#{id}; the real handshake was not captured)")
        };
        let handshake = [
            (client, None, "SYN"),
            (
                server,
                Some(conversation.isn[client as usize].wrapping_add(1)),
                "SYN-ACK",
            ),
        ];
        for (side, ack, name) in handshake {
            let segment = Segment {
                from: conversation.endpoint(side),
                to: conversation.endpoint(side.other()),
                from_client: side == client,
                seq: conversation.isn[side as usize],
                ack,
                flags: Flags {
                    syn: true,
                    ..Flags::default()
                },
                payload: &[],
            };
            self.write_segment(&segment, event.ts_ns, note(name))?;
        }
        let ack = conversation.segment(client, conversation.seq(client, 0), Flags::default(), &[]);
        self.write_segment(&ack, event.ts_ns, note("ACK"))?;
        self.insert_slot(id, Slot::Written(conversation));
        Ok(Some(id))
    }

    fn write_event(&mut self, event: &Event<'_>) -> Result<(), PcapngError> {
        if event.len == 0 {
            return Ok(());
        }
        let Some(id) = self.conversation_for(event)? else {
            self.mirror_bytes += event.data.len() as u64;
            return Ok(());
        };
        let Some(Slot::Written(conversation)) = self.slots.get_mut(&id) else {
            return Ok(());
        };
        let side = Side::of(event.attach.direction);
        let offset = event.conn.offset;
        let end = offset.saturating_add(event.len);
        let sent = &mut conversation.sent[side as usize];
        *sent = (*sent).max(end);
        let mut http2_hint = String::new();
        if offset == 0 && event.data.starts_with(HTTP2_PREFACE) {
            let server_port = conversation.endpoint(side.other()).port();
            self.http2_ports.insert(server_port);
            http2_hint =
                format!("; HTTP/2: dissect with -d tcp.port=={server_port},http2 (Decode As)");
        }
        let segments = event.data.len().div_ceil(MAX_SEGMENT_PAYLOAD);
        let mut built = Vec::with_capacity(segments);
        for (index, payload) in event.data.chunks(MAX_SEGMENT_PAYLOAD).enumerate() {
            let seq = conversation.seq(side, offset + (index * MAX_SEGMENT_PAYLOAD) as u64);
            let flags = Flags {
                psh: index + 1 == segments,
                ..Flags::default()
            };
            built.push(conversation.segment(side, seq, flags, payload));
        }
        let mut comment = format!(
            "{}[{}/{}] {} {} {} {} {} bytes conn#{} @{}",
            event.comm,
            event.pid,
            event.tid,
            event.attach.plugin,
            event.attach.library.display(),
            event.attach.function,
            event.attach.direction.as_str(),
            event.len,
            id,
            offset,
        );
        if let Some(process) = event.process {
            // The full id and the cgroup: a packet comment has room, and a filter on it
            // (`frame.comment contains "..."`) wants the whole id.
            if let Some(container) = process.container.as_deref() {
                comment.push_str(&format!(" container={container}"));
            }
            if let Some(pod) = process.pod_uid.as_deref() {
                comment.push_str(&format!(" pod={pod}"));
            }
            if let Some(pod) = process.pod.as_ref() {
                comment.push_str(&format!(" pod_name={}", pod.path()));
            }
            comment.push_str(&format!(" cgroup={}", process.cgroup));
        }
        if event.truncated > 0 {
            comment.push_str(&format!(
                " ({} bytes not captured: a sequence jump)",
                event.truncated
            ));
        }
        comment.push_str(&http2_hint);
        for (index, segment) in built.iter().enumerate() {
            let comment = if segments > 1 {
                format!("{comment} (segment {} of {segments})", index + 1)
            } else {
                comment.clone()
            };
            self.write_segment(segment, event.ts_ns, comment)?;
        }
        Ok(())
    }

    fn write_close(&mut self, conn: &ConnectionView<'_>, ts_ns: u64) -> Result<(), PcapngError> {
        let Some(slot) = self.slots.remove(&conn.id) else {
            return Ok(());
        };
        self.budget.update(SLOT_BYTES, 0);
        let Slot::Written(conversation) = slot else {
            return Ok(());
        };
        self.end_conversation(
            conn.id,
            &conversation,
            ts_ns,
            "the traced end closed its fd",
        )
    }

    /// Writes the FINs that end `conversation` (the first one's comment says why) and frees
    /// its 4-tuple.
    fn end_conversation(
        &mut self,
        id: u64,
        conversation: &Conversation,
        ts_ns: u64,
        why: &str,
    ) -> Result<(), PcapngError> {
        self.open_tuples
            .remove(&tuple_key(conversation.local, conversation.remote));
        // The traced end's FIN; then the peer's FIN and the last ACK, synthesized so that
        // Wireshark sees both streams end (an HTTP/1.0 body that runs to the close is only
        // complete then).
        let fin = Flags {
            fin: true,
            ..Flags::default()
        };
        let local_end = conversation.seq(Side::Local, conversation.sent[Side::Local as usize]);
        let remote_end = conversation.seq(Side::Remote, conversation.sent[Side::Remote as usize]);
        let closing = [
            (Side::Local, local_end, remote_end, fin, why),
            (
                Side::Remote,
                remote_end,
                local_end.wrapping_add(1),
                fin,
                "synthesized FIN of the peer",
            ),
            (
                Side::Local,
                local_end.wrapping_add(1),
                remote_end.wrapping_add(1),
                Flags::default(),
                "synthesized last ACK",
            ),
        ];
        for (side, seq, ack, flags, note) in closing {
            let segment = Segment {
                ack: Some(ack),
                ..conversation.segment(side, seq, flags, &[])
            };
            self.write_segment(&segment, ts_ns, format!("probectl: {note} (conn#{id})"))?;
        }
        Ok(())
    }
}

/// Guesses which end opened the connection: a port below 1024 against one above is the
/// server's; otherwise the end that sent the first bytes seen is the client.
fn traced_end_is_client(local: SocketAddr, remote: SocketAddr, first: Direction) -> bool {
    match (local.port() < 1024, remote.port() < 1024) {
        (true, false) => false,
        (false, true) => true,
        _ => first == Direction::Write,
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

impl EventWriter for PcapngWriter {
    fn event(&mut self, event: &Event<'_>, out: &mut dyn Output) -> io::Result<()> {
        self.write_event(event)?;
        self.drain(out)
    }

    fn connection_closed(
        &mut self,
        conn: &ConnectionView<'_>,
        ts_ns: u64,
        out: &mut dyn Output,
    ) -> io::Result<()> {
        self.write_close(conn, ts_ns)?;
        self.drain(out)
    }

    fn report(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "pcapng": {
                "connections_without_addresses": self.placeholder_connections,
                "connections_traced_at_both_ends": self.mirror_connections,
                "bytes_of_the_other_end_not_written": self.mirror_bytes,
                "conversations_ended_for_the_memory_budget": self.evicted,
            },
            "memory_budget": {
                "limit": self.budget.limit(),
                "peak": self.budget.peak(),
            },
        }))
    }

    fn finish(&mut self, out: &mut dyn Output) -> io::Result<()> {
        for note in self.notes() {
            crate::notice::info(crate::notice::Topic::Output, note);
        }
        self.drain(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::AttachInfo;
    use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
    use pcap_file::pcapng::{Block, PcapNgReader};

    /// One packet of a written capture, decoded by etherparse, its checksums verified.
    #[derive(Debug)]
    struct Decoded {
        ts_ns: u128,
        from: SocketAddr,
        to: SocketAddr,
        tcp: TcpHeader,
        payload: Vec<u8>,
        comment: String,
    }

    /// Decodes one Ethernet frame and checks its IP and TCP checksums.
    fn decode(frame: &[u8]) -> (SocketAddr, SocketAddr, TcpHeader, Vec<u8>) {
        let headers = PacketHeaders::from_ethernet_slice(frame).expect("an Ethernet frame");
        let Some(TransportHeader::Tcp(tcp)) = headers.transport else {
            panic!("TCP: {headers:?}");
        };
        let payload = headers.payload.slice().to_vec();
        let (from, to, checksum) = match headers.net.expect("IP") {
            NetHeaders::Ipv4(ip, _) => {
                assert_eq!(
                    ip.header_checksum,
                    ip.calc_header_checksum(),
                    "IPv4 checksum"
                );
                assert_eq!(
                    usize::from(ip.total_len),
                    frame.len() - 14,
                    "IPv4 total length"
                );
                (
                    IpAddr::from(ip.source),
                    IpAddr::from(ip.destination),
                    tcp.calc_checksum_ipv4(&ip, &payload).expect("checksum"),
                )
            }
            NetHeaders::Ipv6(ip, _) => (
                IpAddr::from(ip.source),
                IpAddr::from(ip.destination),
                tcp.calc_checksum_ipv6(&ip, &payload).expect("checksum"),
            ),
            other => panic!("IP: {other:?}"),
        };
        assert_eq!(tcp.checksum, checksum, "TCP checksum");
        (
            SocketAddr::new(from, tcp.source_port),
            SocketAddr::new(to, tcp.destination_port),
            tcp,
            payload,
        )
    }

    fn read_capture(bytes: &[u8]) -> (Vec<String>, Vec<Decoded>) {
        let mut reader = PcapNgReader::new(bytes).expect("a pcapng section");
        let mut header = Vec::new();
        for option in &reader.section().options {
            header.push(format!("{option:?}"));
        }
        let mut packets = Vec::new();
        while let Some(block) = reader.next_block() {
            match block.expect("a block") {
                Block::InterfaceDescription(interface) => {
                    header.push(format!("{:?} {:?}", interface.linktype, interface.options))
                }
                Block::EnhancedPacket(packet) => {
                    assert_eq!(packet.original_len as usize, packet.data.len());
                    let (from, to, tcp, payload) = decode(&packet.data);
                    let comment = packet
                        .options
                        .iter()
                        .find_map(|option| match option {
                            EnhancedPacketOption::Comment(comment) => Some(comment.to_string()),
                            _ => None,
                        })
                        .expect("every packet has a comment");
                    packets.push(Decoded {
                        ts_ns: packet.timestamp.as_nanos(),
                        from,
                        to,
                        tcp,
                        payload: payload.to_vec(),
                        comment,
                    });
                }
                other => panic!("unexpected block {other:?}"),
            }
        }
        (header, packets)
    }

    /// One line per packet, as a reader of the capture would summarise it.
    fn describe(packets: &[Decoded]) -> String {
        packets
            .iter()
            .map(|p| {
                let mut flags = Vec::new();
                for (set, name) in [
                    (p.tcp.syn, "SYN"),
                    (p.tcp.fin, "FIN"),
                    (p.tcp.psh, "PSH"),
                    (p.tcp.ack, "ACK"),
                ] {
                    if set {
                        flags.push(name);
                    }
                }
                format!(
                    "{} {} -> {} [{}] seq={} ack={} len={} | {}\n",
                    p.ts_ns,
                    p.from,
                    p.to,
                    flags.join(","),
                    p.tcp.sequence_number,
                    p.tcp.acknowledgment_number,
                    p.payload.len(),
                    p.comment
                )
            })
            .collect()
    }

    fn attach(direction: Direction) -> AttachInfo {
        AttachInfo {
            plugin: "openssl".into(),
            library: "/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
            function: match direction {
                Direction::Write => "SSL_write".into(),
                Direction::Read => "SSL_read".into(),
            },
            direction,
        }
    }

    struct Call<'a> {
        ts_ns: u64,
        id: u64,
        local: Option<&'a str>,
        remote: Option<&'a str>,
        direction: Direction,
        offset: u64,
        len: u64,
        data: &'a [u8],
    }

    fn call<'a>(
        id: u64,
        endpoints: (Option<&'a str>, Option<&'a str>),
        direction: Direction,
        offset: u64,
        data: &'a [u8],
    ) -> Call<'a> {
        Call {
            ts_ns: 1_732_480_496_000_000_000 + offset,
            id,
            local: endpoints.0,
            remote: endpoints.1,
            direction,
            offset,
            len: data.len() as u64,
            data,
        }
    }

    fn feed(writer: &mut PcapngWriter, calls: &[Call<'_>], out: &mut Vec<u8>) {
        for call in calls {
            let attach = attach(call.direction);
            let event = Event {
                ts_ns: call.ts_ns,
                pid: 4242,
                tid: 4243,
                comm: "curl",
                attach: &attach,
                conn: ConnectionView {
                    id: call.id,
                    handle: 0x55d0_1234_5678,
                    fd: Some(5),
                    transport: Some("tcp"),
                    local: call.local,
                    remote: call.remote,
                    offset: call.offset,
                },
                len: call.len,
                data: call.data,
                truncated: call.len - call.data.len() as u64,
                process: None,
            };
            writer.event(&event, out).expect("event");
        }
    }

    fn close(writer: &mut PcapngWriter, id: u64, out: &mut Vec<u8>) {
        let view = ConnectionView {
            id,
            ..ConnectionView::default()
        };
        writer
            .connection_closed(&view, 1_732_480_497_000_000_000, out)
            .expect("close");
    }

    fn writer() -> PcapngWriter {
        PcapngWriter::with_identity("testhost", "Linux 6.18").expect("writer")
    }

    const V4: (Option<&str>, Option<&str>) = (Some("127.0.0.1:41234"), Some("127.0.0.1:8443"));

    #[test]
    fn a_connection_becomes_a_tcp_conversation() {
        let request = b"GET /file HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let response: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut writer = writer();
        let mut out = Vec::new();
        feed(
            &mut writer,
            &[
                call(7, V4, Direction::Write, 0, request),
                call(7, V4, Direction::Read, 0, &response),
            ],
            &mut out,
        );
        close(&mut writer, 7, &mut out);
        let (header, packets) = read_capture(&out);
        // The streams reassemble from the packets: data at isn + 1 + offset, per direction.
        let mut client_stream = Vec::new();
        let mut server_stream = Vec::new();
        // (The ACKs of the handshake and of the FINs sit one past the SYN or FIN.)
        for packet in packets
            .iter()
            .filter(|p| !p.payload.is_empty() || p.tcp.fin)
        {
            assert!(packet.payload.len() <= MAX_SEGMENT_PAYLOAD);
            if packet.from.port() == 41234 {
                assert_eq!(
                    packet.tcp.sequence_number as usize,
                    0x1000_0001 + client_stream.len()
                );
                client_stream.extend_from_slice(&packet.payload);
            } else {
                assert_eq!(
                    packet.tcp.sequence_number as usize,
                    0x2000_0001 + server_stream.len()
                );
                server_stream.extend_from_slice(&packet.payload);
            }
        }
        assert_eq!(client_stream, request);
        assert_eq!(server_stream, response);
        let listing = format!("{}\n{}", header.join("\n"), describe(&packets));
        insta::assert_snapshot!(listing.replace(env!("CARGO_PKG_VERSION"), "[version]"));
    }

    #[test]
    fn lost_bytes_are_a_sequence_jump() {
        let mut writer = writer();
        let mut out = Vec::new();
        let captured_prefix = b"head";
        feed(
            &mut writer,
            &[
                call(1, V4, Direction::Write, 0, b"GET / HTTP/1.1\r\n\r\n"),
                // A call of 1000 bytes of which only 4 were captured...
                Call {
                    len: 1000,
                    ..call(1, V4, Direction::Read, 0, captured_prefix)
                },
                // ...then calls lost whole: the next event starts at 5000.
                call(1, V4, Direction::Read, 5000, b"tail"),
            ],
            &mut out,
        );
        let (_, packets) = read_capture(&out);
        let reads: Vec<&Decoded> = packets
            .iter()
            .filter(|p| p.from.port() == 8443 && !p.payload.is_empty())
            .collect();
        assert_eq!(reads.len(), 2);
        assert_eq!(reads[0].payload, b"head");
        assert_eq!(reads[0].tcp.sequence_number, 0x2000_0001);
        assert!(reads[0].comment.contains("996 bytes not captured"));
        assert_eq!(reads[1].payload, b"tail");
        assert_eq!(reads[1].tcp.sequence_number, 0x2000_0001 + 5000);
        // No byte was made up: the captured bytes are all there is.
        let total: usize = packets.iter().map(|p| p.payload.len()).sum();
        assert_eq!(total, 18 + 4 + 4);
    }

    #[test]
    fn acks_follow_what_the_other_side_sent() {
        let mut writer = writer();
        let mut out = Vec::new();
        feed(
            &mut writer,
            &[
                call(1, V4, Direction::Write, 0, b"one"),
                call(1, V4, Direction::Read, 0, b"reply"),
                call(1, V4, Direction::Write, 3, b"two"),
            ],
            &mut out,
        );
        let (_, packets) = read_capture(&out);
        let data: Vec<(u32, u32)> = packets
            .iter()
            .filter(|p| !p.payload.is_empty())
            .map(|p| (p.tcp.sequence_number, p.tcp.acknowledgment_number))
            .collect();
        assert_eq!(
            data,
            [
                (0x1000_0001, 0x2000_0001),
                (0x2000_0001, 0x1000_0001 + 3),
                (0x1000_0001 + 3, 0x2000_0001 + 5),
            ]
        );
    }

    #[test]
    fn ipv6_and_placeholder_endpoints() {
        let mut writer = writer();
        let mut out = Vec::new();
        feed(
            &mut writer,
            &[
                call(
                    1,
                    (Some("[::1]:50000"), Some("[::1]:8443")),
                    Direction::Write,
                    0,
                    b"v6",
                ),
                call(2, (None, None), Direction::Write, 0, b"memory bio"),
                call(
                    3,
                    (Some("unix:/run/x.sock"), None),
                    Direction::Read,
                    0,
                    b"unix",
                ),
            ],
            &mut out,
        );
        let (_, packets) = read_capture(&out);
        let endpoints: Vec<String> = packets
            .iter()
            .filter(|p| !p.payload.is_empty())
            .map(|p| format!("{} -> {}", p.from, p.to))
            .collect();
        assert_eq!(
            endpoints,
            [
                "[::1]:50000 -> [::1]:8443",
                "198.18.0.1:1026 -> 198.19.0.1:443",
                "198.19.0.1:443 -> 198.18.0.1:1027",
            ]
        );
        assert!(writer
            .notes()
            .iter()
            .any(|n| n.contains("2 connections had no known IP")));
    }

    #[test]
    fn http2_gets_its_decode_as_option() {
        let mut writer = writer();
        let mut out = Vec::new();
        let mut preface = HTTP2_PREFACE.to_vec();
        preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        feed(
            &mut writer,
            &[call(1, V4, Direction::Write, 0, &preface)],
            &mut out,
        );
        // The server's view of another connection: the preface arrives (is read).
        feed(
            &mut writer,
            &[call(
                2,
                (Some("127.0.0.1:9443"), Some("127.0.0.1:50001")),
                Direction::Read,
                0,
                &preface,
            )],
            &mut out,
        );
        assert_eq!(
            writer.http2_options().as_deref(),
            Some("-d tcp.port==8443,http2 -d tcp.port==9443,http2")
        );
        let (_, packets) = read_capture(&out);
        assert!(packets
            .iter()
            .any(|p| p.comment.contains("-d tcp.port==8443,http2")));
    }

    #[test]
    fn the_oldest_conversation_ends_when_the_memory_budget_is_full() {
        // Room for two connections' state: the third ends the first one (FINs, counted), and
        // the first one's later bytes start a conversation of their own again.
        let mut writer = writer().with_budget(2 * SLOT_BYTES);
        let mut out = Vec::new();
        let ends = [
            (Some("127.0.0.1:40001"), Some("127.0.0.1:8443")),
            (Some("127.0.0.1:40002"), Some("127.0.0.1:8443")),
            (Some("127.0.0.1:40003"), Some("127.0.0.1:8443")),
        ];
        let first: Vec<Call<'_>> = (0..3)
            .map(|index| call(index as u64 + 1, ends[index], Direction::Write, 0, b"hello"))
            .collect();
        feed(&mut writer, &first, &mut out);
        feed(
            &mut writer,
            &[call(1, ends[0], Direction::Write, 5, b"again")],
            &mut out,
        );
        let (_, packets) = read_capture(&out);
        let port_40001: Vec<&Decoded> = packets
            .iter()
            .filter(|p| p.from.port() == 40001 || p.to.port() == 40001)
            .collect();
        let syns = port_40001
            .iter()
            .filter(|p| p.tcp.syn && !p.tcp.ack)
            .count();
        let fins = port_40001.iter().filter(|p| p.tcp.fin).count();
        assert_eq!((syns, fins), (2, 2), "{port_40001:#?}");
        assert!(port_40001.iter().any(|p| p
            .comment
            .contains("the memory budget (--memory-budget) is full")));
        // The second conversation of the first connection carries its bytes at their offset.
        let last = port_40001.last().expect("packets");
        assert_eq!(last.payload, b"again");
        assert_eq!(last.tcp.sequence_number, 0x1000_0000 + 1 + 5);
        assert!(writer.budget.peak() <= 2 * SLOT_BYTES);
        let report = writer.report().expect("a report");
        // The third connection ended the first; the first's return ended the second.
        assert_eq!(
            report["pcapng"]["conversations_ended_for_the_memory_budget"],
            2
        );
        assert!(writer
            .notes()
            .iter()
            .any(|n| n.contains("2 conversations were ended early")));
    }

    #[test]
    fn a_connection_traced_at_both_ends_is_written_once() {
        let mut writer = writer();
        let mut out = Vec::new();
        let mirrored = (Some("127.0.0.1:8443"), Some("127.0.0.1:41234"));
        feed(
            &mut writer,
            &[
                call(1, V4, Direction::Write, 0, b"request"),
                call(2, mirrored, Direction::Read, 0, b"request"),
            ],
            &mut out,
        );
        let (_, packets) = read_capture(&out);
        assert_eq!(packets.iter().filter(|p| !p.payload.is_empty()).count(), 1);
        assert!(writer
            .notes()
            .iter()
            .any(|n| n.contains("1 connections were traced at both ends")));
        // Once the first is closed, the 4-tuple may start a new conversation.
        close(&mut writer, 1, &mut out);
        feed(
            &mut writer,
            &[call(3, V4, Direction::Write, 0, b"again")],
            &mut out,
        );
        let (_, packets) = read_capture(&out);
        assert_eq!(packets.iter().filter(|p| p.payload == b"again").count(), 1);
    }

    #[test]
    fn an_empty_run_is_a_valid_capture() {
        let mut writer = writer();
        let mut out = Vec::new();
        writer.finish(&mut out).expect("finish");
        let (header, packets) = read_capture(&out);
        assert!(packets.is_empty());
        assert!(header.iter().any(|h| h.contains("probectl")));
    }
}
