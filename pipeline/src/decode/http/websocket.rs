//! WebSocket (RFC 6455) after an HTTP/1.1 `101 Switching Protocols` with `Upgrade: websocket`:
//! frames decoded into messages.
//!
//! - Each frame's header is read (FIN, RSV1, opcode, mask, length); masked payloads (every
//!   client frame) are unmasked.
//! - Fragmented messages (a text or binary frame without FIN, then continuation frames) are
//!   reassembled into one message; control frames (close, ping, pong), which may come between
//!   fragments, are messages of their own.
//! - permessage-deflate (RFC 7692), when the 101 accepted it: a message whose first frame has
//!   RSV1 is inflated, each direction with its own sliding window kept from message to message
//!   (context takeover; a peer that resets its context needs nothing more from the decoder).
//! - Memory is bounded: a frame header (14 bytes) and a control payload (125 bytes) per
//!   direction, and each message's data up to `--max-body` (the rest counted); payloads are
//!   unmasked and inflated as they arrive, never held whole.
//! - Lost bytes (a gap, a call not captured whole) leave no way to find the next frame header,
//!   nor, with deflate, the window: that direction is written raw from then on, and says why.

use super::{Origin, Side};

/// Opcodes (RFC 6455, section 5.2).
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

/// Payload bytes of a control frame at most (RFC 6455, section 5.5).
const MAX_CONTROL: u64 = 125;

/// The end of a deflated message, which permessage-deflate leaves out (RFC 7692, 7.2.2).
const DEFLATE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Which end of the WebSocket connection sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    Client,
    Server,
}

impl Sender {
    pub fn as_str(self) -> &'static str {
        match self {
            Sender::Client => "client",
            Sender::Server => "server",
        }
    }
}

/// One message: a data message (all its frames) or a control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub sender: Sender,
    /// The direction of the traced calls that carried it (`write`: the traced process sent it).
    pub(crate) side: Side,
    /// Its opcode: that of its first frame (`CONTINUATION` when its start was not seen).
    pub opcode: u8,
    /// Frames it was made of.
    pub frames: u32,
    /// Its frames were masked (a client's must be).
    pub masked: bool,
    /// RSV1 on its first frame: compressed by permessage-deflate.
    pub compressed: bool,
    /// Payload bytes on the wire, all frames together.
    pub wire_len: u64,
    /// Bytes of the message (after inflating, when compressed).
    pub len: u64,
    /// The message, up to `--max-body` bytes.
    pub data: Vec<u8>,
    pub first_ns: u64,
    pub last_ns: u64,
    pub origin: Origin,
    /// Why the message is not whole (`None`: it is).
    pub incomplete: Option<String>,
    /// Something to know about its data (a compressed message that could not be inflated).
    pub note: Option<String>,
}

impl Message {
    pub fn opcode_name(&self) -> &'static str {
        match self.opcode {
            CONTINUATION => "continuation",
            TEXT => "text",
            BINARY => "binary",
            CLOSE => "close",
            PING => "ping",
            PONG => "pong",
            _ => "reserved",
        }
    }

    /// A close frame's status code and reason, when it has them.
    pub fn close(&self) -> Option<(u16, String)> {
        if self.opcode != CLOSE || self.data.len() < 2 {
            return None;
        }
        let code = u16::from_be_bytes([self.data[0], self.data[1]]);
        Some((code, String::from_utf8_lossy(&self.data[2..]).into_owned()))
    }

    /// Bytes of the message not kept (over `--max-body`).
    pub fn not_kept(&self) -> u64 {
        self.len.saturating_sub(self.data.len() as u64)
    }

    fn new(sender: Sender, side: Side, opcode: u8, ts_ns: u64, origin: &Origin) -> Message {
        Message {
            sender,
            side,
            opcode,
            frames: 0,
            masked: false,
            compressed: false,
            wire_len: 0,
            len: 0,
            data: Vec::new(),
            first_ns: ts_ns,
            last_ns: ts_ns,
            origin: origin.clone(),
            incomplete: None,
            note: None,
        }
    }

    /// Adds message bytes: kept up to `max`, always counted.
    fn push(&mut self, bytes: &[u8], max: u64) {
        self.len += bytes.len() as u64;
        let room = (max as usize).saturating_sub(self.data.len());
        self.data.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

/// A frame whose header was read.
#[derive(Debug)]
struct Frame {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
    /// Payload bytes of it seen so far.
    done: u64,
}

/// One direction of the connection.
struct Stream {
    sender: Sender,
    /// The header of the next frame, as far as it came.
    header: Vec<u8>,
    frame: Option<Frame>,
    /// The data message being reassembled.
    message: Option<Message>,
    /// The control frame being read (it may come between two fragments of `message`).
    control: Option<Message>,
    /// permessage-deflate's inflater of this direction (its window lives across messages).
    inflater: Option<flate2::Decompress>,
    /// Why this direction is written raw from now on.
    lost: Option<&'static str>,
}

impl Stream {
    fn new(sender: Sender, deflate: bool) -> Stream {
        Stream {
            sender,
            header: Vec::with_capacity(14),
            frame: None,
            message: None,
            control: None,
            inflater: deflate.then(|| flate2::Decompress::new(false)),
            lost: None,
        }
    }
}

/// The WebSocket decoder of one connection.
pub struct Decoder {
    streams: [Stream; 2],
    /// permessage-deflate was negotiated.
    pub deflate: bool,
    max_message: u64,
    /// Protocol errors and losses that sent a direction raw (counted in the end-of-run line).
    pub lost_directions: u64,
}

impl Decoder {
    /// `request_side`: the side the upgrade request was sent on (the client's); `deflate`: the
    /// 101 accepted permessage-deflate.
    pub(crate) fn new(request_side: Side, deflate: bool, max_message: u64) -> Decoder {
        let mut streams = [
            Stream::new(Sender::Server, deflate),
            Stream::new(Sender::Server, deflate),
        ];
        streams[request_side.index()].sender = Sender::Client;
        Decoder {
            streams,
            deflate,
            max_message,
            lost_directions: 0,
        }
    }

    /// Whether `side` is decoded (not written raw after a loss).
    pub(crate) fn decodes(&self, side: Side) -> bool {
        self.streams[side.index()].lost.is_none()
    }

    /// Why `side` is written raw, if it is.
    #[cfg(test)]
    pub(crate) fn lost_reason(&self, side: Side) -> Option<&'static str> {
        self.streams[side.index()].lost
    }

    /// Bytes held (for the memory bound's tests).
    pub fn held_bytes(&self) -> usize {
        self.streams
            .iter()
            .map(|stream| {
                stream.header.capacity()
                    + stream.message.as_ref().map_or(0, |m| m.data.capacity())
                    + stream.control.as_ref().map_or(0, |m| m.data.capacity())
            })
            .sum()
    }

    /// Decodes a run of bytes of `side`; whole messages go to `done`.
    pub(crate) fn feed(
        &mut self,
        side: Side,
        mut data: &[u8],
        ts_ns: u64,
        origin: &Origin,
        done: &mut Vec<Message>,
    ) {
        let max = self.max_message;
        let stream = &mut self.streams[side.index()];
        if stream.lost.is_some() {
            return;
        }
        while !data.is_empty() {
            let Some(frame) = stream.frame.as_mut() else {
                // A frame header: 2 bytes, then 0, 2 or 8 of length, then 0 or 4 of mask.
                let wanted = header_len(&stream.header, data);
                let take = wanted.saturating_sub(stream.header.len()).min(data.len());
                stream.header.extend_from_slice(&data[..take]);
                data = &data[take..];
                if stream.header.len() < header_len(&stream.header, &[]) {
                    continue;
                }
                match parse_header(&stream.header) {
                    Ok(frame) => {
                        stream.header.clear();
                        start_frame(stream, side, frame, ts_ns, origin, max, done);
                    }
                    Err(reason) => {
                        self.lost_directions += 1;
                        lose(stream, reason, done);
                        return;
                    }
                }
                continue;
            };
            let take = (frame.len - frame.done).min(data.len() as u64) as usize;
            let mut payload = data[..take].to_vec();
            if let Some(mask) = frame.mask {
                for (at, byte) in payload.iter_mut().enumerate() {
                    *byte ^= mask[((frame.done as usize) + at) % 4];
                }
            }
            frame.done += take as u64;
            data = &data[take..];
            let control = frame.opcode >= CLOSE;
            let frame_ended = frame.done == frame.len;
            let fin = frame.fin;
            if control {
                if let Some(message) = stream.control.as_mut() {
                    // A control frame's payload (a close reason, a ping's data) is a body too:
                    // --max-body bounds it like any message (found by the http1 fuzz target).
                    message.push(&payload, max.min(MAX_CONTROL));
                    message.wire_len += take as u64;
                    message.last_ns = ts_ns;
                }
                if frame_ended {
                    stream.frame = None;
                    done.extend(stream.control.take());
                }
                continue;
            }
            if let Some(message) = stream.message.as_mut() {
                message.wire_len += take as u64;
                message.last_ns = ts_ns;
                if message.compressed && message.note.is_none() {
                    inflate(stream.inflater.as_mut(), message, &payload, max);
                } else {
                    message.push(&payload, max);
                }
            }
            if frame_ended {
                stream.frame = None;
                if fin {
                    if let Some(mut message) = stream.message.take() {
                        if message.compressed && message.note.is_none() {
                            inflate(stream.inflater.as_mut(), &mut message, &DEFLATE_TAIL, max);
                        }
                        done.push(message);
                    }
                }
            }
        }
    }

    /// Bytes of `side` were lost: what it was reassembling ends incomplete, and the direction is
    /// written raw from now on (no frame boundary, nor deflate window, can be found again).
    pub(crate) fn gap(&mut self, side: Side, done: &mut Vec<Message>) {
        let stream = &mut self.streams[side.index()];
        if stream.lost.is_none() {
            self.lost_directions += 1;
            lose(stream, "bytes lost (gap in the capture)", done);
        }
    }

    /// The connection ended (closed, or the trace ended): messages in progress end incomplete.
    pub(crate) fn finish(&mut self, reason: &str, done: &mut Vec<Message>) {
        for stream in &mut self.streams {
            for mut message in [stream.message.take(), stream.control.take()]
                .into_iter()
                .flatten()
            {
                message.incomplete.get_or_insert_with(|| reason.to_string());
                done.push(message);
            }
        }
    }
}

/// The direction becomes raw for `reason`; its message in progress ends incomplete.
fn lose(stream: &mut Stream, reason: &'static str, done: &mut Vec<Message>) {
    for mut message in [stream.message.take(), stream.control.take()]
        .into_iter()
        .flatten()
    {
        message.incomplete.get_or_insert_with(|| reason.to_string());
        done.push(message);
    }
    stream.frame = None;
    stream.header.clear();
    stream.lost = Some(reason);
}

/// Begins a frame whose header was read: a control message, a new data message, or the next
/// fragment of the current one.
fn start_frame(
    stream: &mut Stream,
    side: Side,
    frame: Frame,
    ts_ns: u64,
    origin: &Origin,
    max: u64,
    done: &mut Vec<Message>,
) {
    let masked = frame.mask.is_some();
    let compressed = frame.opcode & 0x40 != 0;
    let opcode = frame.opcode & 0x0f;
    let frame = Frame { opcode, ..frame };
    if opcode >= CLOSE {
        let mut message = Message::new(stream.sender, side, opcode, ts_ns, origin);
        message.frames = 1;
        message.masked = masked;
        stream.control = Some(message);
    } else {
        if opcode != CONTINUATION {
            // A new message while one is open: the open one never got its last fragment.
            if let Some(mut open) = stream.message.take() {
                open.incomplete = Some("a new message began before its last fragment".into());
                done.push(open);
            }
        }
        let message = stream.message.get_or_insert_with(|| {
            let mut message = Message::new(stream.sender, side, opcode, ts_ns, origin);
            if opcode == CONTINUATION {
                // Joined in the middle of a fragmented message.
                message.incomplete = Some("its first fragment was not seen".into());
            }
            message.masked = masked;
            message.compressed = compressed;
            message
        });
        message.frames += 1;
        if message.compressed && stream.inflater.is_none() && message.note.is_none() {
            message.note = Some(
                "compressed (RSV1) but permessage-deflate was not negotiated: shown as sent".into(),
            );
        }
    }
    let empty = frame.len == 0;
    let fin = frame.fin;
    stream.frame = Some(frame);
    if empty {
        // Nothing to wait for: the frame ends here.
        stream.frame = None;
        if opcode >= CLOSE {
            done.extend(stream.control.take());
        } else if fin {
            if let Some(mut message) = stream.message.take() {
                if message.compressed && message.note.is_none() {
                    inflate(stream.inflater.as_mut(), &mut message, &DEFLATE_TAIL, max);
                }
                done.push(message);
            }
        }
    }
}

/// Inflates `input` (compressed payload) into `message`, keeping up to `max` bytes.
fn inflate(
    inflater: Option<&mut flate2::Decompress>,
    message: &mut Message,
    input: &[u8],
    max: u64,
) {
    let Some(inflater) = inflater else {
        message.push(input, max);
        return;
    };
    let mut rest = input;
    let mut out = [0u8; 16 * 1024];
    loop {
        let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
        match inflater.decompress(rest, &mut out, flate2::FlushDecompress::Sync) {
            Ok(_) => {
                let used = (inflater.total_in() - before_in) as usize;
                let made = (inflater.total_out() - before_out) as usize;
                message.push(&out[..made], max);
                rest = &rest[used.min(rest.len())..];
                if made == 0 && (rest.is_empty() || used == 0) {
                    return;
                }
            }
            Err(error) => {
                message.note = Some(format!("does not inflate: {error}"));
                return;
            }
        }
    }
}

/// How long the frame header starting with `have` (then `more`) is, as far as can be told: 2
/// until its second byte is known.
fn header_len(have: &[u8], more: &[u8]) -> usize {
    let second = have.get(1).or_else(|| more.get(1 - have.len().min(1)));
    let Some(&second) = second else {
        return 2;
    };
    let length = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + length + mask
}

/// A whole frame header: its frame, or why it cannot be a frame header.
fn parse_header(header: &[u8]) -> Result<Frame, &'static str> {
    let (first, second) = (header[0], header[1]);
    let fin = first & 0x80 != 0;
    let rsv1 = first & 0x40 != 0;
    let opcode = first & 0x0f;
    if first & 0x30 != 0 {
        return Err("a frame with RSV2 or RSV3 set (no extension negotiated them)");
    }
    if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
        return Err("a frame with a reserved opcode");
    }
    let mut at = 2;
    let len = match second & 0x7f {
        126 => {
            at += 2;
            u64::from(u16::from_be_bytes([header[2], header[3]]))
        }
        127 => {
            at += 8;
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&header[2..10]);
            u64::from_be_bytes(bytes)
        }
        short => u64::from(short),
    };
    if len >> 63 != 0 {
        return Err("a frame length with its top bit set");
    }
    if opcode >= CLOSE && (!fin || len > MAX_CONTROL) {
        return Err("a control frame that is fragmented or longer than 125 bytes");
    }
    if rsv1 && (opcode >= CLOSE || opcode == CONTINUATION) {
        return Err("RSV1 on a control or continuation frame");
    }
    let mask = (second & 0x80 != 0).then(|| {
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&header[at..at + 4]);
        mask
    });
    Ok(Frame {
        fin,
        // RSV1 travels in the opcode's bit 0x40 until `start_frame` reads it.
        opcode: opcode | if rsv1 { 0x40 } else { 0 },
        mask,
        len,
        done: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as a peer would send it.
    fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut bytes = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
        let mask_bit = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            len @ 0..=125 => bytes.push(mask_bit | len as u8),
            len @ 126..=0xffff => {
                bytes.push(mask_bit | 126);
                bytes.extend((len as u16).to_be_bytes());
            }
            len => {
                bytes.push(mask_bit | 127);
                bytes.extend((len as u64).to_be_bytes());
            }
        }
        match mask {
            Some(mask) => {
                bytes.extend(mask);
                bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            }
            None => bytes.extend(payload),
        }
        bytes
    }

    /// Feeds `bytes` in pieces of `step` bytes (every split point of headers and payloads).
    fn decode(decoder: &mut Decoder, side: Side, bytes: &[u8], step: usize) -> Vec<Message> {
        let mut done = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            decoder.feed(side, piece, 1, &Origin::default(), &mut done);
        }
        done
    }

    const MASK: [u8; 4] = [0x3a, 0x76, 0x57, 0x32];

    #[test]
    fn masked_and_unmasked_text_in_any_split() {
        let mut stream = frame(true, false, TEXT, b"hello", Some(MASK));
        stream.extend(frame(true, false, BINARY, &[0, 1, 2, 255], Some(MASK)));
        let long: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        stream.extend(frame(true, false, BINARY, &long, Some(MASK)));
        for step in [1, 2, 3, 7, 1000, usize::MAX] {
            let mut decoder = Decoder::new(Side::Write, false, 1 << 20);
            let messages = decode(&mut decoder, Side::Write, &stream, step);
            assert_eq!(messages.len(), 3, "step {step}");
            assert_eq!(messages[0].data, b"hello");
            assert_eq!(messages[0].opcode_name(), "text");
            assert!(messages[0].masked);
            assert_eq!(messages[0].sender, Sender::Client);
            assert_eq!(messages[1].data, [0, 1, 2, 255]);
            assert_eq!(messages[2].data, long);
            assert_eq!(messages[2].len, 70_000);
            assert!(messages.iter().all(|m| m.incomplete.is_none()));
        }
        // The server's side, unmasked.
        let mut decoder = Decoder::new(Side::Write, false, 1 << 20);
        let messages = decode(
            &mut decoder,
            Side::Read,
            &frame(true, false, TEXT, b"hi there", None),
            3,
        );
        assert_eq!(messages[0].data, b"hi there");
        assert!(!messages[0].masked);
        assert_eq!(messages[0].sender, Sender::Server);
    }

    #[test]
    fn fragments_are_reassembled_around_a_control_frame() {
        let mut stream = frame(false, false, TEXT, b"frag", Some(MASK));
        stream.extend(frame(true, false, PING, b"are you there", Some(MASK)));
        stream.extend(frame(false, false, CONTINUATION, b"ment", Some(MASK)));
        stream.extend(frame(true, false, CONTINUATION, b"ed", Some(MASK)));
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.extend(b"bye");
        stream.extend(frame(true, false, CLOSE, &close, Some(MASK)));
        for step in [1, 5, usize::MAX] {
            let mut decoder = Decoder::new(Side::Write, false, 1 << 20);
            let messages = decode(&mut decoder, Side::Write, &stream, step);
            let names: Vec<&str> = messages.iter().map(Message::opcode_name).collect();
            assert_eq!(names, ["ping", "text", "close"], "step {step}");
            assert_eq!(messages[0].data, b"are you there");
            assert_eq!(messages[1].data, b"fragmented");
            assert_eq!(messages[1].frames, 3);
            assert_eq!(messages[2].close(), Some((1000, "bye".to_string())));
        }
    }

    /// permessage-deflate as a peer does it: one raw deflate stream per direction, each
    /// message flushed with a sync flush and its 4-byte tail cut off.
    fn deflated(messages: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut compressor = flate2::Compress::new(flate2::Compression::default(), false);
        messages
            .iter()
            .map(|message| {
                let mut out = Vec::with_capacity(message.len() + 64);
                compressor
                    .compress_vec(message, &mut out, flate2::FlushCompress::Sync)
                    .expect("deflate");
                assert!(out.ends_with(&DEFLATE_TAIL));
                out.truncate(out.len() - 4);
                out
            })
            .collect()
    }

    #[test]
    fn permessage_deflate_with_context_takeover_and_fragments() {
        let texts: [&[u8]; 3] = [
            b"a repeated line, a repeated line",
            b"a repeated line again",
            b"",
        ];
        let payloads = deflated(&texts);
        let mut stream = Vec::new();
        stream.extend(frame(true, true, TEXT, &payloads[0], None));
        // The second message in two fragments: RSV1 only on the first.
        let (first, second) = payloads[1].split_at(payloads[1].len() / 2);
        stream.extend(frame(false, true, TEXT, first, None));
        stream.extend(frame(true, false, CONTINUATION, second, None));
        stream.extend(frame(true, true, TEXT, &payloads[2], None));
        for step in [1, 4, usize::MAX] {
            let mut decoder = Decoder::new(Side::Write, true, 1 << 20);
            let messages = decode(&mut decoder, Side::Read, &stream, step);
            assert_eq!(messages.len(), 3, "step {step}");
            for (message, text) in messages.iter().zip(texts) {
                assert!(message.compressed);
                assert_eq!(message.note, None);
                assert_eq!(message.data, text, "step {step}");
            }
            assert_eq!(messages[1].frames, 2);
            assert!(
                messages[1].wire_len < texts[1].len() as u64,
                "the window was used"
            );
        }
    }

    #[test]
    fn limits_gaps_and_bad_frames() {
        // Over the limit: counted, kept up to it.
        let mut decoder = Decoder::new(Side::Write, false, 10);
        let messages = decode(
            &mut decoder,
            Side::Read,
            &frame(true, false, BINARY, &[7; 100], None),
            usize::MAX,
        );
        assert_eq!(messages[0].data, [7; 10]);
        assert_eq!(messages[0].len, 100);
        assert_eq!(messages[0].not_kept(), 90);
        // A gap: the message in progress ends incomplete, the direction goes raw.
        let mut decoder = Decoder::new(Side::Write, false, 1 << 20);
        let mut done = Vec::new();
        let bytes = frame(true, false, TEXT, b"cut short", None);
        decoder.feed(Side::Read, &bytes[..6], 1, &Origin::default(), &mut done);
        decoder.gap(Side::Read, &mut done);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].data, b"cut ");
        assert!(done[0].incomplete.is_some());
        assert!(!decoder.decodes(Side::Read));
        assert!(decoder.decodes(Side::Write));
        // Not a frame: the direction goes raw and says why.
        let mut decoder = Decoder::new(Side::Write, false, 1 << 20);
        let messages = decode(&mut decoder, Side::Read, b"\x83\x00garbage", usize::MAX);
        assert!(messages.is_empty());
        assert_eq!(
            decoder.lost_reason(Side::Read),
            Some("a frame with a reserved opcode")
        );
        // RSV1 without permessage-deflate: shown as sent, with a note.
        let mut decoder = Decoder::new(Side::Write, false, 1 << 20);
        let messages = decode(
            &mut decoder,
            Side::Read,
            &frame(true, true, TEXT, b"xyz", None),
            usize::MAX,
        );
        assert_eq!(messages[0].data, b"xyz");
        assert!(messages[0].note.is_some());
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Random bytes in random pieces, both directions, with and without deflate: no panic,
        /// and what is held stays within the bound (headers, control payloads, one message per
        /// direction up to the limit).
        #[test]
        fn random_frames_do_not_panic_and_stay_bounded(
            pieces in prop::collection::vec(
                (any::<bool>(), prop::collection::vec(any::<u8>(), 0..200)),
                1..20,
            ),
            deflate in any::<bool>(),
        ) {
            let mut decoder = Decoder::new(Side::Write, deflate, 64);
            let mut done = Vec::new();
            for (read, bytes) in &pieces {
                let side = if *read { Side::Read } else { Side::Write };
                decoder.feed(side, bytes, 1, &Origin::default(), &mut done);
                prop_assert!(decoder.held_bytes() <= 2 * (64 + 128 + 14) + 256);
            }
            decoder.finish("trace ended first", &mut done);
            for message in &done {
                prop_assert!(message.data.len() <= 64);
            }
        }
    }
}
