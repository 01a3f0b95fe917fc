//! Live output of exchanges (`--decode http`, the default): each head is written when it is
//! complete, each piece of a body as it arrives (Server-Sent Events split into their events),
//! and the exchange's own record when it ends. `--decode http=exchange` writes only that last
//! record, when the exchange is over.
//!
//! The decoders keep building whole exchanges as before; after each call, the writer looks at
//! the exchanges in progress and writes what is new in them since it last looked. Its state is
//! per exchange in progress and bounded: two flags, two counts, and an SSE event being
//! assembled of at most [`MAX_SSE_EVENT`] bytes.

use super::Part;

/// An SSE event longer than this without its blank line is written as it is, unsplit.
pub const MAX_SSE_EVENT: usize = 64 * 1024;

/// Live output or one record per exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Heads and body pieces as they arrive, then the exchange's record (the default).
    Live,
    /// One record per exchange, when it is over.
    Exchange,
}

/// Which part of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Request = 0,
    Response = 1,
}

impl Which {
    pub fn as_str(self) -> &'static str {
        match self {
            Which::Request => "request",
            Which::Response => "response",
        }
    }
}

/// What has been written of one exchange in progress.
#[derive(Debug, Default)]
pub struct State {
    /// The exchange's id in this run.
    pub id: u64,
    /// Its head was written, per part.
    pub head: [bool; 2],
    /// Body bytes kept (`Body::data`) already taken into pieces, per part.
    pub written: [usize; 2],
    /// Where the next piece starts in the body, per part.
    pub next_offset: [u64; 2],
    /// Pieces written, per part.
    pub pieces: [u64; 2],
    /// The SSE event being assembled (response only).
    pub sse: Vec<u8>,
}

/// One SSE event's fields (`event:`, `data:` lines joined by `\n`, `id:`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
}

/// A part is an event stream (`Content-Type: text/event-stream`).
pub fn is_event_stream(part: &Part) -> bool {
    part.header("content-type").is_some_and(|value| {
        String::from_utf8_lossy(value)
            .trim()
            .to_ascii_lowercase()
            .starts_with("text/event-stream")
    })
}

/// Takes the complete events out of `buffer` (each with its terminating blank line); the rest
/// stays. With `all`, the rest is an event too (the stream ended).
pub fn split_events(buffer: &mut Vec<u8>, all: bool) -> Vec<Vec<u8>> {
    let mut events = Vec::new();
    while let Some(end) = event_end(buffer) {
        let rest = buffer.split_off(end);
        events.push(std::mem::replace(buffer, rest));
    }
    if (all || buffer.len() > MAX_SSE_EVENT) && !buffer.is_empty() {
        events.push(std::mem::take(buffer));
    }
    events
}

/// Where the first event of `bytes` ends: after its blank line (`\n\n`, `\r\n\r\n`, `\r\r`, or
/// mixed line ends).
fn event_end(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    let mut line_start = 0;
    while at < bytes.len() {
        let end = match bytes[at] {
            b'\n' => at + 1,
            b'\r' if bytes.get(at + 1) == Some(&b'\n') => at + 2,
            // A lone \r at the very end may be the first half of \r\n: wait for more.
            b'\r' if at + 1 == bytes.len() => return None,
            b'\r' => at + 1,
            _ => {
                at += 1;
                continue;
            }
        };
        if at == line_start {
            // An empty line: the event ends here (a blank line alone is no event, but it is
            // still where the next one starts).
            return Some(end);
        }
        line_start = end;
        at = end;
    }
    None
}

/// The fields of one event's text.
pub fn parse_event(bytes: &[u8]) -> SseEvent {
    let text = String::from_utf8_lossy(bytes);
    let mut event = SseEvent::default();
    let mut data: Vec<&str> = Vec::new();
    for line in text.split(['\n', '\r']) {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "event" => event.event = Some(value.to_string()),
            "data" => data.push(value),
            "id" => event.id = Some(value.to_string()),
            _ => {}
        }
    }
    event.data = data.join("\n");
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_at_blank_lines_in_any_pieces() {
        let stream = b"data: one\n\nevent: tick\ndata: two\ndata: lines\nid: 7\n\n: comment\r\ndata: three\r\n\r\ndata: four";
        for step in [1, 2, 5, 1000] {
            let mut buffer = Vec::new();
            let mut events = Vec::new();
            for piece in stream.chunks(step) {
                buffer.extend_from_slice(piece);
                events.extend(split_events(&mut buffer, false));
            }
            events.extend(split_events(&mut buffer, true));
            assert_eq!(
                events.concat(),
                stream,
                "step {step}: nothing lost or added"
            );
            let parsed: Vec<SseEvent> = events.iter().map(|e| parse_event(e)).collect();
            assert_eq!(parsed.len(), 4, "step {step}");
            assert_eq!(parsed[0].data, "one");
            assert_eq!(parsed[1].event.as_deref(), Some("tick"));
            assert_eq!(parsed[1].data, "two\nlines");
            assert_eq!(parsed[1].id.as_deref(), Some("7"));
            assert_eq!(parsed[2].data, "three");
            assert_eq!(parsed[3].data, "four");
        }
    }

    #[test]
    fn an_event_without_its_end_is_written_past_the_bound() {
        let mut buffer = vec![b'x'; MAX_SSE_EVENT + 1];
        let events = split_events(&mut buffer, false);
        assert_eq!(events.len(), 1);
        assert!(buffer.is_empty());
    }
}
