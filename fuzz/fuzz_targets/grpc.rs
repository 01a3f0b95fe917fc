//! gRPC (length-prefixed messages, status and message trailers, service and method). Two
//! parts per input:
//! - arbitrary bodies: the messages found never take more than the body, every message but
//!   the last of a body is whole, and fewer than 5 bytes are left over;
//! - a call built from messages, a status, a percent-encoded message and a path, its response
//!   body cut anywhere (as `--max-body` cuts it): the same messages come back (the cut one
//!   with what there is of it), the same status, message, service and method. A content
//!   type other than gRPC is no gRPC call.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use probectl_core::decode::http::grpc::{self, Message, MessageDirection};
use probectl_core::decode::http::{Body, Exchange, Origin, Part, Version};
use probectl_fuzz::known;

#[derive(Arbitrary, Debug)]
struct Input {
    raw_request: Vec<u8>,
    raw_response: Vec<u8>,
    messages: Vec<(bool, bool, Vec<u8>)>,
    status: Option<u32>,
    status_in_headers: bool,
    text: Vec<u8>,
    service: String,
    method: String,
    cut: Option<u16>,
    content_type: u8,
}

fn part(content_type: &[u8], body: Vec<u8>) -> Part {
    let mut kept = Body::default();
    kept.len = body.len() as u64;
    kept.data = body;
    Part {
        headers: vec![known(b"content-type", content_type)],
        body: kept,
        ..Part::default()
    }
}

fn exchange(request: Part, response: Part, path: Option<String>) -> Exchange {
    let mut exchange = Exchange::new(Version::Http2, Origin::default());
    exchange.method = Some("POST".into());
    exchange.path = path;
    exchange.status = Some(200);
    exchange.request = Some(request);
    exchange.response = Some(response);
    exchange.stream_id = Some(1);
    exchange
}

fn check_split(body: &[u8], messages: &[&Message]) {
    let used: usize = messages.iter().map(|m| 5 + m.data.len()).sum();
    assert!(used <= body.len());
    assert!(body.len() - used < 5, "a whole prefix is left over");
    if let Some((_, whole)) = messages.split_last() {
        for message in whole {
            assert_eq!(
                message.data.len() as u64,
                message.len,
                "a message before the last is whole"
            );
        }
    }
}

fn percent_encode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || byte == b' ' {
            out.push(byte);
        } else {
            out.extend_from_slice(format!("%{byte:02X}").as_bytes());
        }
    }
    out
}

fuzz_target!(|input: Input| {
    // Arbitrary bodies.
    let raw = exchange(
        part(b"application/grpc", input.raw_request.clone()),
        part(b"application/grpc+proto", input.raw_response.clone()),
        None,
    );
    let call = grpc::decode(&raw).expect("a gRPC content type is a gRPC call");
    for (direction, body) in [
        (MessageDirection::Request, &input.raw_request),
        (MessageDirection::Response, &input.raw_response),
    ] {
        let mine: Vec<&Message> = call
            .messages
            .iter()
            .filter(|m| m.direction == direction)
            .collect();
        check_split(body, &mine);
    }

    // A call built from its parts.
    let mut bodies = [Vec::new(), Vec::new()];
    let mut expected = [Vec::new(), Vec::new()];
    for (response, compressed, data) in &input.messages {
        let body = &mut bodies[usize::from(*response)];
        body.push(u8::from(*compressed));
        body.extend_from_slice(&(data.len() as u32).to_be_bytes());
        body.extend_from_slice(data);
        expected[usize::from(*response)].push(Message {
            direction: if *response {
                MessageDirection::Response
            } else {
                MessageDirection::Request
            },
            compressed: *compressed,
            data: data.clone(),
            len: data.len() as u64,
        });
    }
    if let Some(cut) = input.cut {
        // The response body kept up to `cut` bytes: messages after it are gone, the one it
        // falls in keeps what there is (when its 5-byte prefix is whole).
        let cut = usize::from(cut).min(bodies[1].len());
        bodies[1].truncate(cut);
        let mut at = 0;
        expected[1].retain_mut(|message| {
            if at + 5 > cut {
                return false;
            }
            let available = (cut - at - 5).min(message.data.len());
            message.data.truncate(available);
            at += 5 + available;
            true
        });
    }
    let method = input.method.replace('/', "");
    let path = format!("/{}/{}", input.service, method);
    let mut response = part(b"application/grpc", bodies[1].clone());
    let mut fields = Vec::new();
    if let Some(status) = input.status {
        fields.push(known(b"grpc-status", status.to_string().as_bytes()));
    }
    fields.push(known(b"grpc-message", &percent_encode(&input.text)));
    if input.status_in_headers {
        response.headers.extend(fields);
    } else {
        response.trailers = fields;
    }
    let content_type: &[u8] = match input.content_type % 3 {
        0 => b"application/grpc",
        1 => b"application/grpc+proto",
        _ => b"application/json",
    };
    let built = exchange(
        part(content_type, bodies[0].clone()),
        response.clone(),
        Some(path),
    );
    let call = grpc::decode(&built).expect("the response's content type is gRPC");
    let messages: Vec<Message> = expected.concat();
    assert_eq!(call.messages, messages);
    assert_eq!(call.status, input.status);
    assert_eq!(
        call.message.as_deref(),
        Some(&*String::from_utf8_lossy(&input.text))
    );
    assert_eq!(call.service.as_deref(), Some(input.service.as_str()));
    assert_eq!(call.method.as_deref(), Some(method.as_str()));

    // Neither side gRPC: no call.
    response.headers[0] = known(b"content-type", b"application/json");
    let plain = exchange(part(b"text/plain", bodies[0].clone()), response, None);
    assert!(grpc::decode(&plain).is_none());
});
