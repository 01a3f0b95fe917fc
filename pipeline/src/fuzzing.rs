//! What the fuzz targets of `fuzz/` need beyond the public API: not a stable interface, hidden
//! from the documentation. Everything else they drive through the public types
//! ([`crate::capture::pipeline::Pipeline`], [`crate::decode::http::HttpWriter`],
//! [`crate::output::pcapng::PcapngWriter`]; the spec parser is probectl-core's `SpecFile`).

/// RFC 7541's static table and Huffman code, for the HPACK target's encoder: it encodes
/// what it decoded and checks that the decoder reads the same fields back.
pub use crate::decode::http::hpack_tables::{HUFFMAN_CODES, STATIC_TABLE};
