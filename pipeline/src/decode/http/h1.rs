//! HTTP/1.x: heads parsed with `httparse`; bodies by Content-Length, chunked (de-chunked,
//! trailers kept) or delimited by the connection's close; keep-alive and pipelining (responses
//! answer requests in order); interim `1xx` responses; HEAD/204/304 without a body; `Upgrade`
//! and CONNECT tunnels (after which the connection is shown raw).

use std::collections::VecDeque;

use super::{Exchange, Field, Input, Limits, Origin, Part, Side, Version};

/// Largest message head kept while waiting for its end (memory bound).
const HEAD_CAP: usize = 64 * 1024;
/// Largest chunk-size line.
const CHUNK_LINE_CAP: usize = 1024;
/// Largest trailer section.
const TRAILERS_CAP: usize = 64 * 1024;
/// Most requests waiting for their response (pipelining); more are ended as incomplete.
const PENDING_CAP: usize = 256;
/// Most header fields in one head.
const MAX_HEADERS: usize = 256;

/// Methods recognised from a request line cut by the end of a call.
const KNOWN_METHODS: [&[u8]; 9] = [
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
];

/// What the first line of a stream says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Request,
    Response,
}

/// Whether `data` starts with an HTTP/1.x request line or status line.
pub fn detect(data: &[u8]) -> Option<Role> {
    message_start(data, Role::Request)
        .then_some(Role::Request)
        .or_else(|| message_start(data, Role::Response).then_some(Role::Response))
}

/// Whether `data` starts with a whole chunk of a chunked body, the proof that a connection
/// joined in the middle of one is at a chunk boundary: a chunk-size line (hex digits, perhaps
/// extensions), then that many bytes and CRLF, all in `data`; or the last chunk, `0` and an
/// empty line.
pub fn chunk_start(data: &[u8]) -> bool {
    let Some(line_end) = memchr::memchr(b'\n', &data[..data.len().min(CHUNK_LINE_CAP)]) else {
        return false;
    };
    let line = &data[..line_end];
    let Some(line) = line.strip_suffix(b"\r") else {
        return false;
    };
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return false;
    }
    let Some(size) = parse_chunk_size(line) else {
        return false;
    };
    let start = line_end + 1;
    if size == 0 {
        return data[start..].starts_with(b"\r\n");
    }
    let Ok(size) = usize::try_from(size) else {
        return false;
    };
    start
        .checked_add(size)
        .and_then(|end| data.get(end..end + 2))
        == Some(b"\r\n".as_slice())
}

/// Where a request or status line starts right after an empty line in `data` (the end of a
/// head, or of a chunked body's trailers), and its role: a boundary that can be proven in the
/// middle of a call.
pub fn message_after_blank_line(data: &[u8]) -> Option<(usize, Role)> {
    let mut from = 0;
    while let Some(found) = memchr::memmem::find(&data[from..], b"\r\n\r\n") {
        let at = from + found + 4;
        if let Some(role) = detect(&data[at..]) {
            // A whole line: a cut one is not proof enough here.
            if memchr::memchr(b'\n', &data[at..]).is_some() {
                return Some((at, role));
            }
        }
        from = from + found + 2;
    }
    None
}

/// Whether `data` starts like a message of `role`: `METHOD SP target SP HTTP/1.x` (the method a
/// token of letters) or `HTTP/1.x SP 3DIGIT`. A line not finished in `data` counts when what is
/// there fits.
fn message_start(data: &[u8], role: Role) -> bool {
    let line_end = memchr::memchr(b'\n', data).unwrap_or(data.len());
    let line = &data[..line_end.min(8192)];
    match role {
        Role::Response => {
            line.len() >= 12
                && (line.starts_with(b"HTTP/1.1 ") || line.starts_with(b"HTTP/1.0 "))
                && line[9..12].iter().all(u8::is_ascii_digit)
        }
        Role::Request => {
            let Some(space) = memchr::memchr(b' ', line) else {
                return false;
            };
            let method = &line[..space];
            if method.is_empty()
                || method.len() > 20
                || !method.iter().all(|b| b.is_ascii_uppercase() || *b == b'-')
            {
                return false;
            }
            let rest = &line[space + 1..];
            let Some(second) = memchr::memchr(b' ', rest) else {
                // A line cut by the end of the call: a well-known method will do.
                return line_end == data.len()
                    && KNOWN_METHODS.contains(&method)
                    && rest
                        .first()
                        .is_none_or(|&b| b == b'/' || b == b'*' || b.is_ascii_alphanumeric());
            };
            let version = rest[second + 1..]
                .strip_suffix(b"\r")
                .unwrap_or(&rest[second + 1..]);
            second > 0 && (version == b"HTTP/1.1" || version == b"HTTP/1.0")
        }
    }
}

#[derive(Debug)]
enum BodyState {
    Length(u64),
    Chunked(Chunk),
    /// Until the connection closes.
    UntilClose,
}

#[derive(Debug)]
enum Chunk {
    /// Reading a chunk-size line (kept in `line`).
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Reading the trailer section (kept in `line`).
    Trailers,
}

#[derive(Debug)]
enum State {
    Head,
    Body(BodyState),
    /// Looking for the start of the next message after lost or unparsable bytes.
    Resync,
}

/// One direction's parser.
struct Stream {
    role: Role,
    state: State,
    /// The head being collected, or a chunk-size / trailer line.
    buffer: Vec<u8>,
    /// Sequence number of the exchange this direction is filling.
    current: Option<u64>,
}

impl Stream {
    fn new(role: Role) -> Stream {
        Stream {
            role,
            state: State::Head,
            buffer: Vec::new(),
            current: None,
        }
    }

    fn at_boundary(&self) -> bool {
        matches!(self.state, State::Head) && self.buffer.is_empty()
    }

    fn reset(&mut self, state: State) {
        self.state = state;
        self.buffer.clear();
        self.current = None;
    }
}

struct Pending {
    seq: u64,
    exchange: Exchange,
    request_done: bool,
    response_done: bool,
    /// A request whose response was not seen yet (when `false`, the response side has begun).
    awaiting_response: bool,
}

/// The HTTP/1 decoder of one connection.
pub struct Decoder {
    request_side: Side,
    streams: [Stream; 2],
    pending: VecDeque<Pending>,
    next_seq: u64,
    pub(crate) limits: Limits,
    skipped: u64,
}

impl Decoder {
    pub(crate) fn new(request_side: Side, limits: Limits) -> Decoder {
        let mut streams = [Stream::new(Role::Request), Stream::new(Role::Request)];
        streams[request_side.other().index()] = Stream::new(Role::Response);
        Decoder {
            request_side,
            streams,
            pending: VecDeque::new(),
            next_seq: 0,
            limits,
            skipped: 0,
        }
    }

    /// A decoder for a connection joined in the middle of a chunked body on `side` (see
    /// [`chunk_start`]): its exchange's heads were not seen, the rest of its body is decoded.
    pub(crate) fn joined_in_chunked_body(
        side: Side,
        request_side: Side,
        limits: Limits,
        origin: &Origin,
        ts_ns: u64,
    ) -> Decoder {
        let mut decoder = Decoder::new(request_side, limits);
        let mut exchange = Exchange::new(Version::Http11, origin.clone());
        exchange.key = 0;
        exchange.mark_incomplete(
            "joined mid-stream: the heads and the start of the body were not seen",
        );
        let part = Some(Part::started(ts_ns));
        let request = side == request_side;
        if request {
            exchange.request = part;
        } else {
            exchange.response = part;
        }
        decoder.pending.push_back(Pending {
            seq: 0,
            exchange,
            request_done: !request,
            response_done: false,
            awaiting_response: request,
        });
        decoder.next_seq = 1;
        let stream = &mut decoder.streams[side.index()];
        stream.state = State::Body(BodyState::Chunked(Chunk::Size));
        stream.current = Some(0);
        decoder
    }

    /// The exchanges in progress, oldest first (for live output).
    pub(crate) fn in_progress(&mut self) -> impl Iterator<Item = &mut Exchange> {
        self.pending.iter_mut().map(|pending| &mut pending.exchange)
    }

    /// The side requests are sent on (the client's).
    pub(crate) fn request_side(&self) -> Side {
        self.request_side
    }

    /// Bytes held: buffers and the exchanges waiting.
    pub fn held_bytes(&self) -> usize {
        self.streams
            .iter()
            .map(|s| s.buffer.capacity())
            .sum::<usize>()
            + self
                .pending
                .iter()
                .map(|p| p.exchange.held_bytes())
                .sum::<usize>()
    }

    /// Bytes of bodies held (of the exchanges waiting).
    pub fn body_bytes(&self) -> u64 {
        self.pending.iter().map(|p| p.exchange.body_bytes()).sum()
    }

    /// Bytes skipped while resynchronising since the last call.
    pub fn take_skipped(&mut self) -> u64 {
        std::mem::take(&mut self.skipped)
    }

    /// Decodes one run of bytes of `input.side`. Returns the position in it where the
    /// connection switched to another protocol (an accepted `Upgrade` or CONNECT), if it did.
    pub(crate) fn feed(&mut self, input: &Input<'_>, done: &mut Vec<Exchange>) -> Option<usize> {
        let side = input.side.index();
        let mut data = input.data;
        let mut position = 0;
        while !data.is_empty() {
            let before = data.len();
            let step = match self.streams[side].role {
                Role::Request => self.request_step(input, data, done),
                Role::Response => self.response_step(input, data),
            };
            let consumed = match step {
                Step::Consumed(n) => n,
                Step::Upgraded(n) => {
                    self.emit_ready(done);
                    return Some(position + n);
                }
            };
            data = &data[consumed.min(before)..];
            position += consumed;
            self.emit_ready(done);
        }
        None
    }

    /// Bytes of `side` were lost: everything in progress ends as incomplete, and both
    /// directions resynchronise on the next message they recognise.
    pub(crate) fn gap(&mut self, side: Side, done: &mut Vec<Exchange>) {
        self.end_all("bytes lost (gap in the capture)", done);
        self.streams[side.index()].reset(State::Resync);
        let other = &mut self.streams[side.other().index()];
        if !other.at_boundary() {
            other.reset(State::Resync);
        } else {
            other.current = None;
        }
    }

    /// The connection was closed at `ts_ns`: a body delimited by the close is complete.
    pub(crate) fn closed(&mut self, ts_ns: u64, done: &mut Vec<Exchange>) {
        let response = self.request_side.other().index();
        if let State::Body(BodyState::UntilClose) = self.streams[response].state {
            if let Some(pending) = self.current_mut(response) {
                pending.response_done = true;
                if let Some(part) = pending.exchange.response.as_mut() {
                    part.complete = true;
                    part.last_ns = part.last_ns.max(ts_ns);
                }
            }
            self.streams[response].reset(State::Head);
        }
        self.emit_ready(done);
        self.end_all("connection closed first", done);
    }

    /// The decoder is done (trace over, or protocol switched): what is left is incomplete.
    pub(crate) fn finish(&mut self, reason: &str, done: &mut Vec<Exchange>) {
        self.emit_ready(done);
        self.end_all(reason, done);
    }

    fn end_all(&mut self, reason: &str, done: &mut Vec<Exchange>) {
        for mut pending in self.pending.drain(..) {
            if !(pending.request_done && pending.response_done) {
                pending.exchange.mark_incomplete(reason);
            }
            done.push(pending.exchange);
        }
        for stream in &mut self.streams {
            stream.current = None;
        }
    }

    /// Emits, in order, the exchanges whose request and response are both complete.
    fn emit_ready(&mut self, done: &mut Vec<Exchange>) {
        while self
            .pending
            .front()
            .is_some_and(|p| p.request_done && p.response_done)
        {
            if let Some(pending) = self.pending.pop_front() {
                for stream in &mut self.streams {
                    if stream.current == Some(pending.seq) {
                        stream.current = None;
                    }
                }
                done.push(pending.exchange);
            }
        }
    }

    fn current_mut(&mut self, side: usize) -> Option<&mut Pending> {
        let seq = self.streams[side].current?;
        self.pending.iter_mut().find(|p| p.seq == seq)
    }

    fn request_step(&mut self, input: &Input<'_>, data: &[u8], done: &mut Vec<Exchange>) -> Step {
        let side = input.side.index();
        match &mut self.streams[side].state {
            State::Resync => self.resync(side, data),
            State::Head => {
                let Some((consumed, head)) = self.collect_head(side, data) else {
                    return Step::Consumed(data.len());
                };
                let head = match head {
                    Ok(head) => head,
                    Err(()) => return Step::Consumed(consumed),
                };
                if self.pending.len() >= PENDING_CAP {
                    if let Some(mut oldest) = self.pending.pop_front() {
                        oldest
                            .exchange
                            .mark_incomplete("too many requests waiting for a response");
                        done.push(oldest.exchange);
                    }
                }
                let mut exchange = Exchange::new(head.version, input.origin.clone());
                exchange.method = head.method.clone();
                exchange.path = head.path;
                exchange.authority = header_text(&head.headers, "host");
                let body = request_body(&head.headers);
                let mut part = Part::started(input.ts_ns);
                part.headers = head.headers;
                part.complete = body.is_none();
                exchange.request = Some(part);
                let seq = self.next_seq;
                self.next_seq += 1;
                exchange.key = seq;
                self.pending.push_back(Pending {
                    seq,
                    exchange,
                    request_done: body.is_none(),
                    response_done: false,
                    awaiting_response: true,
                });
                let stream = &mut self.streams[side];
                match body {
                    Some(body) => {
                        stream.current = Some(seq);
                        stream.state = State::Body(body);
                    }
                    None => stream.current = None,
                }
                Step::Consumed(consumed)
            }
            State::Body(_) => self.body_step(input, data),
        }
    }

    fn response_step(&mut self, input: &Input<'_>, data: &[u8]) -> Step {
        let side = input.side.index();
        match &mut self.streams[side].state {
            State::Resync => self.resync(side, data),
            State::Head => {
                let Some((consumed, head)) = self.collect_head(side, data) else {
                    return Step::Consumed(data.len());
                };
                let head = match head {
                    Ok(head) => head,
                    Err(()) => return Step::Consumed(consumed),
                };
                let status = head.status.unwrap_or(0);
                // The request this answers: the oldest one without a response.
                let seq = match self.pending.iter().find(|p| p.awaiting_response) {
                    Some(pending) => pending.seq,
                    None => {
                        // Its request was not seen (joined mid-stream, or lost).
                        let seq = self.next_seq;
                        self.next_seq += 1;
                        let mut exchange = Exchange::new(head.version, input.origin.clone());
                        exchange.key = seq;
                        exchange.mark_incomplete("request not seen");
                        self.pending.push_back(Pending {
                            seq,
                            exchange,
                            request_done: true,
                            response_done: false,
                            awaiting_response: true,
                        });
                        seq
                    }
                };
                let Some(pending) = self.pending.iter_mut().find(|p| p.seq == seq) else {
                    return Step::Consumed(consumed);
                };
                if (100..200).contains(&status) && status != 101 {
                    // Interim: the final response follows.
                    pending.exchange.interim.push(status);
                    return Step::Consumed(consumed);
                }
                pending.awaiting_response = false;
                let method = pending.exchange.method.clone();
                let exchange = &mut pending.exchange;
                exchange.status = Some(status);
                exchange.reason = head.reason;
                exchange.response_version = Some(head.version);
                let upgraded = status == 101
                    || (method.as_deref() == Some("CONNECT") && (200..300).contains(&status));
                let body = if upgraded {
                    None
                } else {
                    response_body(method.as_deref(), status, &head.headers)
                };
                let mut part = Part::started(input.ts_ns);
                part.headers = head.headers;
                part.complete = body.is_none();
                exchange.response = Some(part);
                pending.response_done = body.is_none();
                let stream = &mut self.streams[side];
                if upgraded {
                    stream.reset(State::Head);
                    return Step::Upgraded(consumed);
                }
                match body {
                    Some(body) => {
                        stream.current = Some(seq);
                        stream.state = State::Body(body);
                    }
                    None => stream.current = None,
                }
                Step::Consumed(consumed)
            }
            State::Body(_) => self.body_step(input, data),
        }
    }

    /// Skips to the next line start where a message of this direction's role begins.
    fn resync(&mut self, side: usize, data: &[u8]) -> Step {
        let role = self.streams[side].role;
        let mut at = 0;
        loop {
            if message_start(&data[at..], role) {
                self.skipped += at as u64;
                self.streams[side].reset(State::Head);
                return Step::Consumed(at);
            }
            match memchr::memchr(b'\n', &data[at..]) {
                Some(newline) => at += newline + 1,
                None => {
                    self.skipped += data.len() as u64;
                    return Step::Consumed(data.len());
                }
            }
        }
    }

    /// Collects a head. `None`: all of `data` was taken and the head is not complete yet.
    /// Otherwise how much of `data` the head used, and the head or `Err` when it is not
    /// HTTP (the stream then resynchronises).
    fn collect_head(&mut self, side: usize, data: &[u8]) -> Option<(usize, Result<Head, ()>)> {
        let role = self.streams[side].role;
        let stream = &mut self.streams[side];
        let before = stream.buffer.len();
        let take = data.len().min(HEAD_CAP + 1 - before.min(HEAD_CAP));
        stream.buffer.extend_from_slice(&data[..take]);
        match parse_head(&stream.buffer, role) {
            Ok(Some((length, head))) => {
                stream.buffer.clear();
                Some((length.saturating_sub(before), Ok(head)))
            }
            Ok(None) if stream.buffer.len() <= HEAD_CAP => None,
            _ => {
                // Not HTTP after all, or a head beyond the cap.
                self.skipped += stream.buffer.len() as u64;
                stream.reset(State::Resync);
                Some((take, Err(())))
            }
        }
    }

    fn body_step(&mut self, input: &Input<'_>, data: &[u8]) -> Step {
        let side = input.side.index();
        let limits = self.limits;
        let held: u64 = self.pending.iter().map(|p| p.exchange.body_bytes()).sum();
        let request = side == self.request_side.index();
        let seq = self.streams[side].current;
        let stream = &mut self.streams[side];
        let State::Body(body_state) = &mut stream.state else {
            return Step::Consumed(0);
        };
        let mut body_bytes: &[u8] = &[];
        let mut trailers = None;
        let mut finished = false;
        let consumed = match body_state {
            BodyState::Length(remaining) => {
                let take = data
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                body_bytes = &data[..take];
                *remaining -= take as u64;
                finished = *remaining == 0;
                take
            }
            BodyState::UntilClose => {
                body_bytes = data;
                data.len()
            }
            BodyState::Chunked(chunk) => match chunk {
                Chunk::Size => match take_line(&mut stream.buffer, data, CHUNK_LINE_CAP) {
                    Line::Partial(n) => n,
                    Line::TooLong => {
                        stream.reset(State::Resync);
                        return self.body_failed(side, "malformed chunked body");
                    }
                    Line::Complete(n) => {
                        let size = parse_chunk_size(&stream.buffer);
                        stream.buffer.clear();
                        match size {
                            Some(0) => *chunk = Chunk::Trailers,
                            Some(size) => *chunk = Chunk::Data(size),
                            None => {
                                stream.reset(State::Resync);
                                return self.body_failed(side, "malformed chunked body");
                            }
                        }
                        n
                    }
                },
                Chunk::Data(remaining) => {
                    let take = data
                        .len()
                        .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    body_bytes = &data[..take];
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        *chunk = Chunk::DataEnd;
                    }
                    take
                }
                Chunk::DataEnd => match take_line(&mut stream.buffer, data, CHUNK_LINE_CAP) {
                    Line::Partial(n) => n,
                    Line::TooLong => {
                        stream.reset(State::Resync);
                        return self.body_failed(side, "malformed chunked body");
                    }
                    Line::Complete(n) => {
                        let empty = stream.buffer.trim_ascii().is_empty();
                        stream.buffer.clear();
                        if !empty {
                            stream.reset(State::Resync);
                            return self.body_failed(side, "malformed chunked body");
                        }
                        *chunk = Chunk::Size;
                        n
                    }
                },
                Chunk::Trailers => {
                    // Lines up to an empty one; kept whole in the buffer.
                    let mut at = 0;
                    loop {
                        match take_line(&mut stream.buffer, &data[at..], TRAILERS_CAP) {
                            Line::Partial(n) => break at + n,
                            Line::TooLong => {
                                stream.reset(State::Resync);
                                return self.body_failed(side, "malformed chunked trailers");
                            }
                            Line::Complete(n) => {
                                at += n;
                                if stream.buffer.ends_with(b"\r\n\r\n")
                                    || stream.buffer.ends_with(b"\n\n")
                                    || stream.buffer == b"\r\n"
                                    || stream.buffer == b"\n"
                                {
                                    trailers = Some(parse_trailers(&stream.buffer));
                                    stream.buffer.clear();
                                    finished = true;
                                    break at;
                                }
                            }
                        }
                    }
                }
            },
        };
        if finished {
            stream.state = State::Head;
            stream.current = None;
        }
        if let Some(pending) = seq.and_then(|seq| self.pending.iter_mut().find(|p| p.seq == seq)) {
            let part = if request {
                pending.exchange.request.as_mut()
            } else {
                pending.exchange.response.as_mut()
            };
            if let Some(part) = part {
                part.body.push(body_bytes, limits, held);
                part.last_ns = input.ts_ns;
                if let Some(trailers) = trailers {
                    part.trailers = trailers;
                }
                if finished {
                    part.complete = true;
                }
            }
            if finished {
                if request {
                    pending.request_done = true;
                } else {
                    pending.response_done = true;
                }
            }
        }
        Step::Consumed(consumed)
    }

    /// A body could not be parsed: its exchange is incomplete; nothing of `data` is consumed
    /// (the stream resynchronises on it).
    fn body_failed(&mut self, side: usize, reason: &str) -> Step {
        if let Some(seq) = self.streams[side].current.take() {
            if let Some(pending) = self.pending.iter_mut().find(|p| p.seq == seq) {
                pending.exchange.mark_incomplete(reason);
                pending.request_done = true;
                pending.response_done = true;
                pending.awaiting_response = false;
            }
        }
        Step::Consumed(0)
    }
}

enum Step {
    Consumed(usize),
    Upgraded(usize),
}

enum Line {
    /// All of the input was taken; the line goes on.
    Partial(usize),
    /// The line ended after this many bytes of the input.
    Complete(usize),
    TooLong,
}

/// Appends `data` up to and including the next `\n` to `buffer`.
fn take_line(buffer: &mut Vec<u8>, data: &[u8], cap: usize) -> Line {
    match memchr::memchr(b'\n', data) {
        Some(end) if buffer.len() + end < cap => {
            buffer.extend_from_slice(&data[..=end]);
            Line::Complete(end + 1)
        }
        None if buffer.len() + data.len() < cap => {
            buffer.extend_from_slice(data);
            Line::Partial(data.len())
        }
        _ => Line::TooLong,
    }
}

fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let size = text.split(';').next()?.trim();
    if size.is_empty() || size.len() > 15 {
        return None;
    }
    u64::from_str_radix(size, 16).ok()
}

fn parse_trailers(section: &[u8]) -> Vec<Field> {
    section
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = memchr::memchr(b':', line)?;
            Some(Field {
                name: Some(line[..colon].to_vec()),
                value: Some(line[colon + 1..].trim_ascii().to_vec()),
                unknown_index: None,
            })
        })
        .collect()
}

struct Head {
    version: Version,
    method: Option<String>,
    path: Option<String>,
    status: Option<u16>,
    reason: Option<String>,
    headers: Vec<Field>,
}

/// Parses a complete head at the start of `buffer`: `Ok(None)` while incomplete, `Err` when
/// it is not HTTP.
fn parse_head(buffer: &[u8], role: Role) -> Result<Option<(usize, Head)>, httparse::Error> {
    let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    let fields = |headers: &[httparse::Header<'_>]| -> Vec<Field> {
        headers
            .iter()
            .map(|header| Field {
                name: Some(header.name.as_bytes().to_vec()),
                value: Some(header.value.to_vec()),
                unknown_index: None,
            })
            .collect()
    };
    let version = |minor: Option<u8>| {
        if minor == Some(0) {
            Version::Http10
        } else {
            Version::Http11
        }
    };
    match role {
        Role::Request => {
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(buffer)? {
                httparse::Status::Partial => Ok(None),
                httparse::Status::Complete(length) => Ok(Some((
                    length,
                    Head {
                        version: version(request.version),
                        method: request.method.map(str::to_string),
                        path: request.path.map(str::to_string),
                        status: None,
                        reason: None,
                        headers: fields(request.headers),
                    },
                ))),
            }
        }
        Role::Response => {
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(buffer)? {
                httparse::Status::Partial => Ok(None),
                httparse::Status::Complete(length) => Ok(Some((
                    length,
                    Head {
                        version: version(response.version),
                        method: None,
                        path: None,
                        status: response.code,
                        reason: response.reason.map(str::to_string),
                        headers: fields(response.headers),
                    },
                ))),
            }
        }
    }
}

fn header_text(headers: &[Field], name: &str) -> Option<String> {
    header_value(headers, name).map(|value| String::from_utf8_lossy(value).into_owned())
}

fn header_value<'a>(headers: &'a [Field], name: &str) -> Option<&'a [u8]> {
    headers.iter().find_map(|field| {
        field
            .name
            .as_deref()
            .filter(|n| n.eq_ignore_ascii_case(name.as_bytes()))
            .and(field.value.as_deref())
    })
}

fn is_chunked(headers: &[Field]) -> bool {
    headers
        .iter()
        .filter(|field| {
            field
                .name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(b"transfer-encoding"))
        })
        .filter_map(|field| field.value.as_deref())
        .flat_map(|value| value.split(|&b| b == b','))
        .next_back()
        .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

fn content_length(headers: &[Field]) -> Option<u64> {
    std::str::from_utf8(header_value(headers, "content-length")?)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How a request's body is delimited; `None`: it has none.
fn request_body(headers: &[Field]) -> Option<BodyState> {
    if is_chunked(headers) {
        return Some(BodyState::Chunked(Chunk::Size));
    }
    match content_length(headers) {
        Some(0) | None => None,
        Some(length) => Some(BodyState::Length(length)),
    }
}

/// How a response's body is delimited (RFC 9112 6.3); `None`: it has none.
fn response_body(method: Option<&str>, status: u16, headers: &[Field]) -> Option<BodyState> {
    if method == Some("HEAD") || (100..200).contains(&status) || status == 204 || status == 304 {
        return None;
    }
    if is_chunked(headers) {
        return Some(BodyState::Chunked(Chunk::Size));
    }
    match content_length(headers) {
        Some(0) => None,
        Some(length) => Some(BodyState::Length(length)),
        None => Some(BodyState::UntilClose),
    }
}
