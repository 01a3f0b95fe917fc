//! gRPC over HTTP/2: the service and method from the path, the length-prefixed messages of
//! both bodies, and the status from the `grpc-status`/`grpc-message` trailers.

use super::{Exchange, Part};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageDirection {
    Request,
    Response,
}

impl MessageDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageDirection::Request => "request",
            MessageDirection::Response => "response",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub direction: MessageDirection,
    pub compressed: bool,
    /// The message bytes as kept (all of them unless the body was cut by `--max-body`, by
    /// lost bytes, or by the end of the trace).
    pub data: Vec<u8>,
    /// The length its prefix declared.
    pub len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub service: Option<String>,
    pub method: Option<String>,
    pub status: Option<u32>,
    pub message: Option<String>,
    pub messages: Vec<Message>,
}

/// Whether a part's content type is gRPC (`application/grpc`, `application/grpc+proto`, ...).
fn is_grpc(part: Option<&Part>) -> bool {
    part.and_then(|part| part.header("content-type"))
        .is_some_and(|value| {
            value.len() >= 16 && value[..16].eq_ignore_ascii_case(b"application/grpc")
        })
}

/// The gRPC call an exchange carries, if it is one.
pub fn decode(exchange: &Exchange) -> Option<Call> {
    if !is_grpc(exchange.request.as_ref()) && !is_grpc(exchange.response.as_ref()) {
        return None;
    }
    let (service, method) = match exchange.path.as_deref().and_then(|path| {
        let path = path.strip_prefix('/')?;
        path.rsplit_once('/')
    }) {
        Some((service, method)) => (Some(service.to_string()), Some(method.to_string())),
        None => (None, None),
    };
    let mut messages = Vec::new();
    for (direction, part) in [
        (MessageDirection::Request, &exchange.request),
        (MessageDirection::Response, &exchange.response),
    ] {
        if let Some(part) = part {
            messages.extend(split_messages(&part.body.data, direction));
        }
    }
    // The status is in the trailers, or in the headers of a trailers-only response.
    let field = |name: &str| {
        exchange.response.as_ref().and_then(|response| {
            response
                .trailers
                .iter()
                .chain(response.headers.iter())
                .find(|field| field.is(name))
                .and_then(|field| field.value.clone())
        })
    };
    let status = field("grpc-status")
        .and_then(|value| String::from_utf8(value).ok())
        .and_then(|value| value.trim().parse().ok());
    let message = field("grpc-message").map(|value| percent_decode(&value));
    Some(Call {
        service,
        method,
        status,
        message,
        messages,
    })
}

/// Splits a body into its length-prefixed messages (1 byte compressed flag, 4 bytes length).
/// A message cut short is kept with what there is of it.
fn split_messages(mut body: &[u8], direction: MessageDirection) -> Vec<Message> {
    let mut messages = Vec::new();
    while body.len() >= 5 {
        let compressed = body[0] & 1 != 0;
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
        let available = (body.len() - 5).min(len as usize);
        messages.push(Message {
            direction,
            compressed,
            data: body[5..5 + available].to_vec(),
            len: u64::from(len),
        });
        body = &body[5 + available..];
    }
    messages
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2 spec).
fn percent_decode(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut index = 0;
    while index < value.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (value[index], value.get(index + 1), value.get(index + 2)) {
            (b'%', Some(&high), Some(&low)) if hex(high).is_some() && hex(low).is_some() => {
                out.push((hex(high).unwrap_or(0) * 16 + hex(low).unwrap_or(0)) as u8);
                index += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_split_and_a_cut_one_kept() {
        let body = [
            &[0u8, 0, 0, 0, 3][..],
            b"abc",
            &[1, 0, 0, 0, 0],
            &[0, 0, 0, 0, 9],
            b"xy",
        ]
        .concat();
        let messages = split_messages(&body, MessageDirection::Response);
        assert_eq!(messages.len(), 3);
        assert_eq!(
            (messages[0].data.as_slice(), messages[0].len),
            (&b"abc"[..], 3)
        );
        assert!(messages[1].compressed && messages[1].data.is_empty());
        assert_eq!(
            (messages[2].data.as_slice(), messages[2].len),
            (&b"xy"[..], 9)
        );
    }

    #[test]
    fn grpc_message_is_percent_decoded() {
        assert_eq!(percent_decode(b"not%20found%3A x%"), "not found: x%");
    }
}
