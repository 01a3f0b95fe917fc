//! `--packets FILE`: the real packets of the traced TLS connections, as they went on the wire,
//! in a pcapng file that Wireshark decrypts by itself: each connection's session secrets go in
//! a Decryption Secrets Block (type 0x0A, TLS key log) before its first packet.
//!
//! The packets come from an AF_PACKET socket (every interface, loopback included) with a
//! classic BPF filter that keeps TCP only; no tc, no kprobes. A connection is known to be
//! traced by its client random: the secret probes give it with every secret (`--keylog`), and
//! the connection's ClientHello carries it. The handshake is on the wire before the library
//! logs a secret, and before probectl learns the connection's socket (at its first data call):
//! so every TCP packet waits [`HOLD_NS`] in a bounded queue, and goes out, behind the
//! secrets of its connection, if by then its connection's ClientHello named a random that
//! has secrets; else it is dropped (counted: not a traced connection). Packets the socket
//! dropped (`PACKET_STATISTICS`) are counted too.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::SectionHeaderBlock;
use pcap_file::pcapng::blocks::unknown::UnknownBlock;
use pcap_file::pcapng::{Block, PcapNgWriter};
use pcap_file::{DataLink, Endianness};

/// How long a packet waits for its connection's secrets (ns).
pub const HOLD_NS: u64 = 1_000_000_000;
/// Bytes of packets waiting at most: past it the oldest go out (or are dropped) early.
pub const HOLD_MAX_BYTES: usize = 64 << 20;
/// Connections whose ClientHello random is remembered at most (the oldest are forgotten).
pub const FLOWS_MAX: usize = 65_536;
/// Bytes of one packet at most (loopback's GSO packets are up to 64 KiB).
const SNAPLEN: usize = 256 * 1024;
/// Decryption Secrets Block (pcapng), and its secrets type for a TLS key log.
const DSB_TYPE: u32 = 0x0000_000A;
const TLS_KEY_LOG: u32 = 0x544c_534b;
/// `PACKET_STATISTICS` (linux/if_packet.h) and the loopback hardware type.
const PACKET_STATISTICS: libc::c_int = 6;
const ARPHRD_LOOPBACK: u16 = 772;
const PACKET_OUTGOING: u8 = 4;

/// What the packet capture counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PacketCounts {
    /// Packets written, and of those the secrets blocks.
    pub packets_written: u64,
    pub secrets_blocks: u64,
    /// TCP packets of connections that were not traced (no secret named their random).
    pub packets_untraced: u64,
    /// Packets the socket dropped (its buffer was full), from PACKET_STATISTICS.
    pub packets_dropped_by_socket: u64,
    /// Packets that waited while the queue was full and were decided early.
    pub packets_decided_early: u64,
}

/// A running capture: its thread, the way to stop it, and where secrets are sent to it.
pub struct PacketCapture {
    thread: Option<std::thread::JoinHandle<io::Result<PacketCounts>>>,
    stop: Arc<AtomicBool>,
    secrets: Sender<(String, String)>,
}

impl PacketCapture {
    /// Opens the socket (so that an error comes before tracing starts) and starts the thread
    /// that writes the pcapng into `out`.
    pub fn start(out: Box<dyn Write + Send>) -> io::Result<PacketCapture> {
        let socket = open_socket()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (sender, receiver) = std::sync::mpsc::channel();
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("probectl-packets".into())
            .spawn(move || capture(socket, out, receiver, &stopping))?;
        Ok(PacketCapture {
            thread: Some(thread),
            stop,
            secrets: sender,
        })
    }

    /// Where the pipeline sends each secret: (client random in hex, its key-log line).
    pub fn secrets(&self) -> Sender<(String, String)> {
        self.secrets.clone()
    }

    /// Writes what waits (with the secrets known by now) and ends the capture.
    pub fn finish(mut self) -> io::Result<PacketCounts> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the packet capture thread panicked")),
            None => Ok(PacketCounts::default()),
        }
    }
}

/// The socket: every interface, TCP only (classic BPF), a large buffer, a short timeout.
fn open_socket() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let protocol = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor socket(2) just returned, owned by nobody else.
    let socket = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // Ethernet (every interface here, loopback included, gives an Ethernet header): IPv4 with
    // protocol 6, or IPv6 with next header 6.
    let mut filter = [
        libc::sock_filter {
            code: 0x28,
            jt: 0,
            jf: 0,
            k: 12,
        }, // ldh [12]
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 2,
            k: 0x0800,
        }, // jeq IPv4
        libc::sock_filter {
            code: 0x30,
            jt: 0,
            jf: 0,
            k: 23,
        }, // ldb [23]
        libc::sock_filter {
            code: 0x15,
            jt: 3,
            jf: 4,
            k: 6,
        }, // jeq TCP: accept, else drop
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 3,
            k: 0x86dd,
        }, // jeq IPv6
        libc::sock_filter {
            code: 0x30,
            jt: 0,
            jf: 0,
            k: 20,
        }, // ldb [20]
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: 6,
        }, // jeq TCP
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: SNAPLEN as u32,
        }, // accept
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0,
        }, // drop
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    let set = |level, name, value: *const libc::c_void, size: usize| {
        use std::os::fd::AsRawFd;
        // SAFETY: setsockopt on our socket with a value of `size` bytes that lives for the call.
        let result = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                value,
                size as libc::socklen_t,
            )
        };
        if result < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    set(
        libc::SOL_SOCKET,
        libc::SO_ATTACH_FILTER,
        (&raw const program).cast(),
        std::mem::size_of::<libc::sock_fprog>(),
    )?;
    let buffer: libc::c_int = 64 << 20;
    // Without CAP_NET_ADMIN the kernel caps it at rmem_max: no error, a smaller buffer.
    let _ = set(
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        (&raw const buffer).cast(),
        std::mem::size_of::<libc::c_int>(),
    );
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 50_000,
    };
    set(
        libc::SOL_SOCKET,
        libc::SO_RCVTIMEO,
        (&raw const timeout).cast(),
        std::mem::size_of::<libc::timeval>(),
    )?;
    Ok(socket)
}

/// One packet waiting for its connection's secrets.
struct Held {
    at_ns: u64,
    interface: u32,
    flow: FlowKey,
    data: Vec<u8>,
}

type FlowKey = ([u8; 16], u16, [u8; 16], u16);

/// The capture thread.
fn capture(
    socket: std::os::fd::OwnedFd,
    out: Box<dyn Write + Send>,
    secrets: Receiver<(String, String)>,
    stop: &AtomicBool,
) -> io::Result<PacketCounts> {
    use std::os::fd::AsRawFd;
    let mut writer = PcapNgWriter::with_section_header(
        out,
        SectionHeaderBlock {
            endianness: Endianness::native(),
            ..SectionHeaderBlock::default()
        },
    )
    .map_err(io::Error::other)?;
    let mut counts = PacketCounts::default();
    // Interface index -> the pcapng interface id of its description block.
    let mut interfaces: HashMap<u32, u32> = HashMap::new();
    // The client random (hex) each connection's ClientHello named.
    let mut randoms: HashMap<FlowKey, String> = HashMap::new();
    let mut random_order: VecDeque<FlowKey> = VecDeque::new();
    // Key-log lines per client random, and how many of them are written.
    let mut keys: HashMap<String, (Vec<String>, usize)> = HashMap::new();
    let mut held: VecDeque<Held> = VecDeque::new();
    let mut held_bytes = 0usize;
    let mut buffer = vec![0u8; SNAPLEN];
    let clock_offset = realtime_minus_monotonic();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        // SAFETY: an all-zero sockaddr_ll is a valid value to be filled.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut address_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: recvfrom into our buffer of its length and our address of its size.
        let received = unsafe {
            libc::recvfrom(
                socket.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                libc::MSG_TRUNC,
                (&raw mut address).cast(),
                &mut address_len,
            )
        };
        let now = monotonic_ns();
        if received > 0 {
            let length = (received as usize).min(buffer.len());
            // Loopback shows each packet twice, as sent and as received: the second is kept.
            let duplicate =
                address.sll_hatype == ARPHRD_LOOPBACK && address.sll_pkttype == PACKET_OUTGOING;
            if !duplicate {
                if let Some((flow, payload)) = parse(&buffer[..length]) {
                    if let Some(random) = client_hello_random(payload) {
                        if randoms.insert(flow, random).is_none() {
                            random_order.push_back(flow);
                            while random_order.len() > FLOWS_MAX {
                                if let Some(oldest) = random_order.pop_front() {
                                    randoms.remove(&oldest);
                                }
                            }
                        }
                    }
                    held_bytes += length;
                    held.push_back(Held {
                        at_ns: now,
                        interface: address.sll_ifindex as u32,
                        flow,
                        data: buffer[..length].to_vec(),
                    });
                }
            }
        }
        while let Ok((random, line)) = secrets.try_recv() {
            keys.entry(random).or_default().0.push(line);
        }
        // Packets whose wait is over (all of them at the end) go out or are dropped.
        while let Some(first) = held.front() {
            let due = stopping || now.saturating_sub(first.at_ns) >= HOLD_NS;
            let full = held_bytes > HOLD_MAX_BYTES;
            if !due && !full {
                break;
            }
            let Some(packet) = held.pop_front() else {
                break;
            };
            held_bytes -= packet.data.len();
            if !due {
                counts.packets_decided_early += 1;
            }
            let known = randoms
                .get(&packet.flow)
                .and_then(|random| keys.get_mut(random));
            let Some((lines, written)) = known else {
                counts.packets_untraced += 1;
                continue;
            };
            if *written < lines.len() {
                write_secrets(&mut writer, &lines[*written..])?;
                *written = lines.len();
                counts.secrets_blocks += 1;
            }
            let next_id = interfaces.len() as u32;
            let id = *interfaces
                .entry(packet.interface)
                .or_insert_with(|| next_id);
            if id == next_id {
                writer
                    .write_pcapng_block(InterfaceDescriptionBlock {
                        linktype: DataLink::ETHERNET,
                        snaplen: SNAPLEN as u32,
                        // Nanoseconds, as the timestamps are written.
                        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
                    })
                    .map_err(io::Error::other)?;
            }
            writer
                .write_pcapng_block(EnhancedPacketBlock {
                    interface_id: id,
                    timestamp: Duration::from_nanos(packet.at_ns.saturating_add(clock_offset)),
                    original_len: packet.data.len() as u32,
                    data: packet.data.as_slice().into(),
                    options: vec![],
                })
                .map_err(io::Error::other)?;
            counts.packets_written += 1;
        }
        if stopping {
            break;
        }
    }
    counts.packets_dropped_by_socket = socket_drops(socket.as_raw_fd());
    writer.get_mut().flush()?;
    Ok(counts)
}

/// A Decryption Secrets Block with these key-log lines.
fn write_secrets<W: Write>(writer: &mut PcapNgWriter<W>, lines: &[String]) -> io::Result<()> {
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
    }
    let mut body = Vec::with_capacity(8 + text.len() + 3);
    body.extend_from_slice(&TLS_KEY_LOG.to_ne_bytes());
    body.extend_from_slice(&(text.len() as u32).to_ne_bytes());
    body.extend_from_slice(text.as_bytes());
    while body.len() % 4 != 0 {
        body.push(0);
    }
    let block = UnknownBlock::new(DSB_TYPE, (body.len() + 12) as u32, &body);
    writer
        .write_block(&Block::Unknown(block))
        .map_err(io::Error::other)?;
    Ok(())
}

/// The connection (addresses and ports, the lower end first) and the TCP payload of an
/// Ethernet frame, if it is TCP over IPv4 or IPv6.
fn parse(frame: &[u8]) -> Option<(FlowKey, &[u8])> {
    let packet = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
    let (source, destination) = match packet.net? {
        etherparse::NetSlice::Ipv4(ip) => {
            let mut source = [0u8; 16];
            let mut destination = [0u8; 16];
            source[..4].copy_from_slice(&ip.header().source());
            destination[..4].copy_from_slice(&ip.header().destination());
            (source, destination)
        }
        etherparse::NetSlice::Ipv6(ip) => (ip.header().source(), ip.header().destination()),
        _ => return None,
    };
    let etherparse::TransportSlice::Tcp(tcp) = packet.transport? else {
        return None;
    };
    let a = (source, tcp.source_port());
    let b = (destination, tcp.destination_port());
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    Some(((low.0, low.1, high.0, high.1), tcp.payload()))
}

/// The client random of a ClientHello at the start of a TCP payload (a handshake record,
/// type 1): 32 bytes after the record header (5), the handshake header (4) and the version (2).
fn client_hello_random(payload: &[u8]) -> Option<String> {
    if payload.len() < 43 || payload[0] != 0x16 || payload[1] != 3 || payload[5] != 1 {
        return None;
    }
    let mut text = String::with_capacity(64);
    for byte in &payload[11..43] {
        use std::fmt::Write as _;
        let _ = write!(text, "{byte:02x}");
    }
    Some(text)
}

/// The packets the socket dropped since it was opened.
fn socket_drops(fd: libc::c_int) -> u64 {
    let mut stats = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut size = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: getsockopt into a tpacket_stats of its size.
    let result = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            PACKET_STATISTICS,
            (&raw mut stats).cast(),
            &mut size,
        )
    };
    if result < 0 {
        return 0;
    }
    u64::from(stats.tp_drops)
}

fn clock(clock: libc::clockid_t) -> u64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: time is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(clock, &mut time) };
    time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64
}

fn monotonic_ns() -> u64 {
    clock(libc::CLOCK_MONOTONIC)
}

fn realtime_minus_monotonic() -> u64 {
    clock(libc::CLOCK_REALTIME).saturating_sub(monotonic_ns())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_hello_names_its_random() {
        let mut payload = vec![0x16, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3];
        payload.extend(0u8..32);
        payload.extend([0u8; 10]);
        let random = client_hello_random(&payload).expect("a ClientHello");
        assert_eq!(random.len(), 64);
        assert!(random.starts_with("000102"));
        payload[5] = 2; // a ServerHello
        assert_eq!(client_hello_random(&payload), None);
    }
}
