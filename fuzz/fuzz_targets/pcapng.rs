//! `--format pcapng`: whatever events and closes come in, the file is well-formed and says
//! what happened. Checked on every output, independently of the writer:
//! - block framing: a section header block (byte-order magic, version 1.0) first, then an
//!   interface description, then enhanced packet blocks only; every block's length is a
//!   multiple of 4, at least 12, repeated at its end, within the file; captured length =
//!   original length, the data within its block;
//! - every packet is Ethernet + IPv4/IPv6 + TCP with correct IP and TCP checksums and lengths;
//! - the data packets are exactly the events' captured bytes, in order, from the right end
//!   to the right end, each at sequence number ISN + 1 + its stream offset, split at
//!   `MAX_SEGMENT_PAYLOAD` (a model of the writer: endpoints or placeholders, and a
//!   connection whose 4-tuple is already open written once);
//! - the other packets are the 3-packet handshake of each conversation and the 3-packet close
//!   of each conversation closed.
#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use probectl_fuzz::{blocks, packet, Packet};
use probectl_pipeline::output::pcapng::{placeholder_endpoints, PcapngWriter, MAX_SEGMENT_PAYLOAD};
use probectl_pipeline::output::{AttachInfo, ConnectionView, Event, EventWriter};
use probectl_pipeline::Direction;

#[derive(Arbitrary, Debug)]
enum Endpoint {
    V4([u8; 4], u16),
    V6([u8; 16], u16),
    Text(String),
    Unknown,
}

impl Endpoint {
    fn text(&self) -> Option<String> {
        match self {
            Endpoint::V4(ip, port) => Some(SocketAddr::from((*ip, *port)).to_string()),
            Endpoint::V6(ip, port) => Some(SocketAddr::from((*ip, *port)).to_string()),
            Endpoint::Text(text) => Some(text.clone()),
            Endpoint::Unknown => None,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Call {
        conn: u8,
        read: bool,
        lost: u16,
        data: Vec<u8>,
        /// Bytes moved beyond those captured; with `big`, times 4096.
        uncaptured: u16,
        big: bool,
    },
    Close {
        conn: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    endpoints: [(Endpoint, Endpoint); 4],
    ops: Vec<Op>,
}

/// The writer's conversations as the model sees them.
struct Model {
    open_tuples: HashMap<(SocketAddr, SocketAddr), u64>,
    /// id -> Some(local, remote) written, None a mirror.
    slots: HashMap<u64, Option<(SocketAddr, SocketAddr)>>,
    data: Vec<Packet>,
    control_packets: usize,
}

fn as_written(local: SocketAddr, remote: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |address: SocketAddr| match address.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), address.port()),
        IpAddr::V6(_) => address,
    };
    if local.is_ipv4() && remote.is_ipv4() {
        (local, remote)
    } else {
        (v6(local), v6(remote))
    }
}

fn tuple(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

fuzz_target!(|input: Input| {
    let mut writer = PcapngWriter::with_identity("fuzz", "fuzz").unwrap();
    let attach = |direction, function: &str| AttachInfo {
        plugin: "openssl".into(),
        library: PathBuf::from("/usr/lib/libssl.so.3"),
        function: function.into(),
        direction,
    };
    let (read, write) = (
        attach(Direction::Read, "SSL_read"),
        attach(Direction::Write, "SSL_write"),
    );
    let texts: Vec<(Option<String>, Option<String>)> = input
        .endpoints
        .iter()
        .map(|(l, r)| (l.text(), r.text()))
        .collect();
    let mut out = Vec::new();
    let mut generation = [0u64; 4];
    let mut offsets: HashMap<(u64, bool), u64> = HashMap::new();
    let mut model = Model {
        open_tuples: HashMap::new(),
        slots: HashMap::new(),
        data: Vec::new(),
        control_packets: 0,
    };
    let mut ts_ns = 1_700_000_000_000_000_000u64;
    for op in &input.ops {
        ts_ns += 1000;
        match op {
            Op::Call {
                conn,
                read: is_read,
                lost,
                data,
                uncaptured,
                big,
            } => {
                let conn = usize::from(conn % 4);
                let id = 1 + conn as u64 + 4 * generation[conn];
                let (local, remote) = &texts[conn];
                let offset = offsets.entry((id, *is_read)).or_insert(0);
                *offset += u64::from(*lost);
                let uncaptured = u64::from(*uncaptured) * if *big { 4096 } else { 1 };
                let len = data.len() as u64 + uncaptured;
                let event = Event {
                    ts_ns,
                    pid: 1,
                    tid: 2,
                    comm: "fuzz",
                    attach: if *is_read { &read } else { &write },
                    conn: ConnectionView {
                        id,
                        handle: 0x1000 + id,
                        fd: Some(3),
                        transport: Some("tcp"),
                        local: local.as_deref(),
                        remote: remote.as_deref(),
                        offset: *offset,
                    },
                    len,
                    data,
                    truncated: uncaptured,
                    process: None,
                };
                let start = *offset;
                *offset += len;
                writer.event(&event, &mut out).unwrap();
                if len == 0 {
                    continue;
                }
                // The model.
                if !model.slots.contains_key(&id) {
                    let endpoints = local
                        .as_deref()
                        .zip(remote.as_deref())
                        .and_then(|(l, r)| Some((l.parse().ok()?, r.parse().ok()?)))
                        .unwrap_or_else(|| placeholder_endpoints(id));
                    let key = tuple(endpoints.0, endpoints.1);
                    if model.open_tuples.contains_key(&key) {
                        model.slots.insert(id, None);
                    } else {
                        model.open_tuples.insert(key, id);
                        model.slots.insert(id, Some(endpoints));
                        model.control_packets += 3;
                    }
                }
                if let Some(Some((local, remote))) = model.slots.get(&id) {
                    // IPv6 unless both ends are IPv4 (an IPv4 address then v4-mapped).
                    let (local, remote) = &as_written(*local, *remote);
                    let (from, to, isn) = if *is_read {
                        (*remote, *local, 0x2000_0000u32)
                    } else {
                        (*local, *remote, 0x1000_0000u32)
                    };
                    for (index, payload) in data.chunks(MAX_SEGMENT_PAYLOAD).enumerate() {
                        let at = start + (index * MAX_SEGMENT_PAYLOAD) as u64;
                        model.data.push(Packet {
                            from,
                            to,
                            seq: isn.wrapping_add(1).wrapping_add(at as u32),
                            payload: payload.to_vec(),
                        });
                    }
                }
            }
            Op::Close { conn } => {
                let conn = usize::from(conn % 4);
                let id = 1 + conn as u64 + 4 * generation[conn];
                let view = ConnectionView {
                    id,
                    ..ConnectionView::default()
                };
                writer.connection_closed(&view, ts_ns, &mut out).unwrap();
                generation[conn] += 1;
                if let Some(Some((local, remote))) = model.slots.remove(&id) {
                    model.open_tuples.remove(&tuple(local, remote));
                    model.control_packets += 3;
                }
            }
        }
    }
    writer.finish(&mut out).unwrap();
    let packets: Vec<Packet> = blocks(&out).iter().map(|frame| packet(frame)).collect();
    let (data, control): (Vec<Packet>, Vec<Packet>) =
        packets.into_iter().partition(|p| !p.payload.is_empty());
    assert_eq!(data, model.data, "the data packets are the events' bytes");
    assert_eq!(
        control.len(),
        model.control_packets,
        "handshakes and closes"
    );
});
