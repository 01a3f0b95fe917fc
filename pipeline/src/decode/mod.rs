//! Decoding: the captured plaintext read as the protocols it carries (`--decode http`: HTTP/1,
//! HTTP/2 and gRPC), from events in stream order.

pub mod http;
