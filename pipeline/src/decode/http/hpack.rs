//! HPACK (RFC 7541): header block decoding with a dynamic table, one per direction of an HTTP/2
//! connection.
//!
//! Written here rather than taken from a crate: the `hpack` crate is unmaintained
//! (RUSTSEC-2023-0084) and its forks have panicked on crafted input; a decoder also needs what
//! none of them offers: decoding a connection joined mid-stream, where the dynamic table's
//! older entries are unknown. Those references are reported as unknown, never guessed.
//! Checked against every example of RFC 7541 appendix C (tests below).

use std::collections::VecDeque;
use std::sync::OnceLock;

use super::hpack_tables::{HUFFMAN_CODES, STATIC_TABLE};

/// Most bytes of dynamic table the decoder keeps, whatever the peer allows (memory bound).
/// References to entries evicted only because of this cap are reported as unknown.
pub const TABLE_MEMORY_CAP: usize = 64 * 1024;

/// The table size a decoder assumes before any size update: the protocol's initial value.
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// A header field as decoded. A name or value is `None` when it came from a dynamic table
/// entry that is not known (the connection was joined mid-stream, or bytes were lost);
/// `unknown_index` then says which index it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub unknown_index: Option<u64>,
}

impl Field {
    fn known(name: &[u8], value: &[u8]) -> Field {
        Field {
            name: Some(name.to_vec()),
            value: Some(value.to_vec()),
            unknown_index: None,
        }
    }

    /// Whether this is the (known) field `name`.
    pub fn is(&self, name: &str) -> bool {
        self.name.as_deref() == Some(name.as_bytes())
    }
}

/// A decoded header block: the fields kept, and how many were dropped over the size limit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub fields: Vec<Field>,
    pub dropped: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    #[error("header block ends inside a field")]
    Truncated,
    #[error("integer too large")]
    IntegerOverflow,
    #[error("index {0} is not in the tables")]
    BadIndex(u64),
    #[error("invalid Huffman code")]
    BadHuffman,
    #[error("table size update to {0} not at the start of the block")]
    LateSizeUpdate(u64),
}

struct Entry {
    name: Vec<u8>,
    value: Vec<u8>,
}

impl Entry {
    /// RFC 7541 4.1: name + value + 32.
    fn size(&self) -> usize {
        self.name.len() + self.value.len() + 32
    }
}

/// One direction's HPACK decoding context.
pub struct Decoder {
    /// Newest first: index 62 is `entries[0]`.
    entries: VecDeque<Entry>,
    size: usize,
    /// The table size the encoder uses (its last size update, or the default).
    max_size: usize,
    /// Entries older than those held may exist but are not known (joined mid-stream, bytes
    /// lost, or evicted by `TABLE_MEMORY_CAP`): references past the held ones are unknown
    /// rather than errors.
    partial: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder for a connection seen from its start.
    pub fn new() -> Decoder {
        Decoder {
            entries: VecDeque::new(),
            size: 0,
            max_size: DEFAULT_TABLE_SIZE,
            partial: false,
        }
    }

    /// A decoder for a connection joined after its start: the dynamic table is unknown.
    pub fn joined() -> Decoder {
        Decoder {
            partial: true,
            ..Decoder::new()
        }
    }

    /// Whether it has decoded nothing that changed its table (as new or joined).
    pub fn is_pristine(&self) -> bool {
        self.entries.is_empty() && self.size == 0 && self.max_size == DEFAULT_TABLE_SIZE
    }

    /// Bytes were lost: what the table holds can no longer be trusted.
    pub fn lose_sync(&mut self) {
        self.entries.clear();
        self.size = 0;
        self.partial = true;
    }

    /// Whether the dynamic table is fully known.
    pub fn is_synchronised(&self) -> bool {
        !self.partial
    }

    /// The dynamic table's size in bytes (RFC 7541 4.1).
    pub fn table_size(&self) -> usize {
        self.size
    }

    /// Decodes one complete header block (HEADERS/PUSH_PROMISE plus CONTINUATIONs).
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<Field>, HpackError> {
        self.decode_limited(block, usize::MAX)
            .map(|decoded| decoded.fields)
    }

    /// Decodes a header block, keeping fields while their decoded size (RFC 7541 4.1 sizes,
    /// as SETTINGS_MAX_HEADER_LIST_SIZE counts them) stays within `limit`. The whole block is
    /// always decoded: the dynamic table must follow it.
    pub fn decode_limited(
        &mut self,
        mut block: &[u8],
        limit: usize,
    ) -> Result<Decoded, HpackError> {
        let mut decoded = Decoded::default();
        let mut size = 0usize;
        let mut keep = |field: Field, decoded: &mut Decoded| {
            let field_size = 32
                + field.name.as_ref().map_or(0, Vec::len)
                + field.value.as_ref().map_or(0, Vec::len);
            size = size.saturating_add(field_size);
            if size <= limit {
                decoded.fields.push(field);
            } else {
                decoded.dropped += 1;
            }
        };
        let mut at_start = true;
        while let Some(&first) = block.first() {
            if first & 0x80 != 0 {
                // Indexed field.
                let index = read_integer(&mut block, 7)?;
                if decoded.dropped > 0 {
                    // Already over the limit: only check the index, copy nothing (a block of
                    // one-byte references to large entries would otherwise cost much).
                    self.lookup(index, false)?;
                    decoded.dropped += 1;
                } else {
                    keep(self.lookup(index, true)?, &mut decoded);
                }
            } else if first & 0xe0 == 0x20 {
                let size = read_integer(&mut block, 5)?;
                if !at_start {
                    return Err(HpackError::LateSizeUpdate(size));
                }
                self.set_max_size(size);
                continue;
            } else {
                // Literal: with incremental indexing (01), without (0000), never indexed (0001).
                let (prefix, indexing) = if first & 0xc0 == 0x40 {
                    (6, true)
                } else {
                    (4, false)
                };
                let name_index = read_integer(&mut block, prefix)?;
                let name = if name_index == 0 {
                    Some(read_string(&mut block)?)
                } else {
                    let field = self.lookup(name_index, false)?;
                    field.name
                };
                let value = read_string(&mut block)?;
                if indexing {
                    match &name {
                        Some(name) => self.insert(name.clone(), value.clone()),
                        // An entry of unknown size: from here on the table is not known.
                        None => self.lose_sync(),
                    }
                }
                keep(
                    Field {
                        unknown_index: name.is_none().then_some(name_index),
                        name,
                        value: Some(value),
                    },
                    &mut decoded,
                );
            }
            at_start = false;
        }
        Ok(decoded)
    }

    fn set_max_size(&mut self, size: u64) {
        self.max_size = usize::try_from(size).unwrap_or(usize::MAX);
        if self.max_size == 0 {
            // Everything is evicted, known or not: the table is known again.
            self.partial = false;
        }
        self.evict(0);
    }

    /// Makes room for `incoming` bytes under both the encoder's size and the memory cap.
    fn evict(&mut self, incoming: usize) {
        if self.size + incoming > self.max_size {
            // Unknown entries are older than every known one and evicted first: once the
            // known entries alone overflow the table, nothing unknown is left.
            self.partial = false;
        }
        while self.size + incoming > self.max_size {
            match self.entries.pop_back() {
                Some(entry) => self.size -= entry.size(),
                None => break,
            }
        }
        while self.size + incoming > TABLE_MEMORY_CAP {
            match self.entries.pop_back() {
                Some(entry) => {
                    // Still in the peer's table, but no longer held here.
                    self.size -= entry.size();
                    self.partial = true;
                }
                None => break,
            }
        }
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let entry = Entry { name, value };
        let size = entry.size();
        self.evict(size);
        if size > self.max_size {
            // RFC 7541 4.4: an entry larger than the table empties it and is not added.
            return;
        }
        if size > TABLE_MEMORY_CAP {
            // In the peer's table, too large to hold here.
            self.partial = true;
            return;
        }
        self.size += size;
        self.entries.push_front(entry);
    }

    /// The field at `index` (static table first, then dynamic). `whole` says the value is
    /// needed too (an indexed field) rather than only the name.
    fn lookup(&self, index: u64, whole: bool) -> Result<Field, HpackError> {
        if index == 0 {
            return Err(HpackError::BadIndex(0));
        }
        if let Some((name, value)) = usize::try_from(index - 1)
            .ok()
            .and_then(|i| STATIC_TABLE.get(i))
        {
            return Ok(Field::known(
                name.as_bytes(),
                if whole { value.as_bytes() } else { b"" },
            ));
        }
        let dynamic = usize::try_from(index - 1 - STATIC_TABLE.len() as u64).unwrap_or(usize::MAX);
        match self.entries.get(dynamic) {
            Some(entry) => Ok(Field::known(
                &entry.name,
                if whole { &entry.value } else { b"" },
            )),
            None if self.partial => Ok(Field {
                name: None,
                value: None,
                unknown_index: Some(index),
            }),
            None => Err(HpackError::BadIndex(index)),
        }
    }
}

/// RFC 7541 5.1: an integer with an N-bit prefix.
fn read_integer(input: &mut &[u8], prefix_bits: u8) -> Result<u64, HpackError> {
    let (&first, mut rest) = input.split_first().ok_or(HpackError::Truncated)?;
    let max_prefix = (1u64 << prefix_bits) - 1;
    let mut value = u64::from(first) & max_prefix;
    if value == max_prefix {
        let mut shift = 0u32;
        loop {
            let (&byte, tail) = rest.split_first().ok_or(HpackError::Truncated)?;
            rest = tail;
            if shift > 56 {
                return Err(HpackError::IntegerOverflow);
            }
            value = value
                .checked_add(u64::from(byte & 0x7f) << shift)
                .ok_or(HpackError::IntegerOverflow)?;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
    }
    *input = rest;
    Ok(value)
}

/// RFC 7541 5.2: a string literal, Huffman-coded or not.
fn read_string(input: &mut &[u8]) -> Result<Vec<u8>, HpackError> {
    let huffman = input.first().ok_or(HpackError::Truncated)? & 0x80 != 0;
    let length = read_integer(input, 7)?;
    let length = usize::try_from(length).map_err(|_| HpackError::Truncated)?;
    if length > input.len() {
        return Err(HpackError::Truncated);
    }
    let (raw, rest) = input.split_at(length);
    *input = rest;
    if huffman {
        huffman_decode(raw)
    } else {
        Ok(raw.to_vec())
    }
}

/// A binary tree of the Huffman code: node `i` has children `tree[i][bit]`; a child is either
/// another node (`< LEAF`) or a symbol (`LEAF + symbol`).
const LEAF: u16 = 0x8000;
const NO_CHILD: u16 = u16::MAX;

fn huffman_tree() -> &'static Vec<[u16; 2]> {
    static TREE: OnceLock<Vec<[u16; 2]>> = OnceLock::new();
    TREE.get_or_init(|| {
        let mut tree = vec![[NO_CHILD; 2]];
        for (symbol, &(code, bits)) in HUFFMAN_CODES.iter().enumerate() {
            let mut node = 0usize;
            for position in (0..bits).rev() {
                let bit = ((code >> position) & 1) as usize;
                if position == 0 {
                    tree[node][bit] = LEAF + symbol as u16;
                } else {
                    if tree[node][bit] == NO_CHILD {
                        tree.push([NO_CHILD; 2]);
                        tree[node][bit] = (tree.len() - 1) as u16;
                    }
                    node = tree[node][bit] as usize;
                }
            }
        }
        tree
    })
}

/// Decodes a Huffman-coded string (RFC 7541 5.2, appendix B): the padding must be the most
/// significant bits of EOS (all ones) and shorter than a byte; EOS itself is an error.
fn huffman_decode(input: &[u8]) -> Result<Vec<u8>, HpackError> {
    let tree = huffman_tree();
    let mut out = Vec::with_capacity(input.len() * 8 / 5);
    let mut node = 0usize;
    // Bits read since the last symbol, and whether they were all ones.
    let mut pending_bits = 0u32;
    let mut pending_all_ones = true;
    for &byte in input {
        for position in (0..8).rev() {
            let bit = ((byte >> position) & 1) as usize;
            let child = tree[node][bit];
            pending_bits += 1;
            pending_all_ones &= bit == 1;
            if child == NO_CHILD {
                return Err(HpackError::BadHuffman);
            }
            if child & LEAF != 0 {
                let symbol = child - LEAF;
                if symbol == 256 {
                    return Err(HpackError::BadHuffman);
                }
                out.push(symbol as u8);
                node = 0;
                pending_bits = 0;
                pending_all_ones = true;
            } else {
                node = child as usize;
            }
        }
    }
    if pending_bits > 7 || !pending_all_ones {
        return Err(HpackError::BadHuffman);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| {
                u8::from_str_radix(std::str::from_utf8(pair).expect("ascii"), 16).expect("hex")
            })
            .collect()
    }

    fn fields(decoded: &[Field]) -> Vec<(String, String)> {
        decoded
            .iter()
            .map(|field| {
                (
                    String::from_utf8(field.name.clone().expect("known name")).expect("utf-8"),
                    String::from_utf8(field.value.clone().expect("known value")).expect("utf-8"),
                )
            })
            .collect()
    }

    fn table(decoder: &Decoder) -> Vec<(String, String)> {
        decoder
            .entries
            .iter()
            .map(|entry| {
                (
                    String::from_utf8(entry.name.clone()).expect("utf-8"),
                    String::from_utf8(entry.value.clone()).expect("utf-8"),
                )
            })
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// One block of an RFC 7541 appendix C example: its bytes, the fields it decodes to, the
    /// dynamic table after it (newest first) and the table's size.
    struct Step {
        block: &'static str,
        fields: &'static [(&'static str, &'static str)],
        table: &'static [(&'static str, &'static str)],
        size: usize,
    }

    fn run(max_size: usize, steps: &[Step]) {
        let mut decoder = Decoder::new();
        decoder.max_size = max_size;
        for step in steps {
            let decoded = decoder.decode(&hex(step.block)).expect(step.block);
            assert_eq!(fields(&decoded), pairs(step.fields), "{}", step.block);
            assert_eq!(table(&decoder), pairs(step.table), "{}", step.block);
            assert_eq!(decoder.table_size(), step.size, "{}", step.block);
        }
    }

    #[test]
    fn c_2_1_literal_with_indexing() {
        run(
            4096,
            &[Step {
                block: "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
                fields: &[("custom-key", "custom-header")],
                table: &[("custom-key", "custom-header")],
                size: 55,
            }],
        );
    }

    #[test]
    fn c_2_2_literal_without_indexing() {
        run(
            4096,
            &[Step {
                block: "040c 2f73 616d 706c 652f 7061 7468",
                fields: &[(":path", "/sample/path")],
                table: &[],
                size: 0,
            }],
        );
    }

    #[test]
    fn c_2_3_literal_never_indexed() {
        run(
            4096,
            &[Step {
                block: "1008 7061 7373 776f 7264 0673 6563 7265 74",
                fields: &[("password", "secret")],
                table: &[],
                size: 0,
            }],
        );
    }

    #[test]
    fn c_2_4_indexed() {
        run(
            4096,
            &[Step {
                block: "82",
                fields: &[(":method", "GET")],
                table: &[],
                size: 0,
            }],
        );
    }

    const REQUEST_1: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ];
    const REQUEST_2: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
        ("cache-control", "no-cache"),
    ];
    const REQUEST_3: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ];
    const TABLE_1: &[(&str, &str)] = &[(":authority", "www.example.com")];
    const TABLE_2: &[(&str, &str)] = &[
        ("cache-control", "no-cache"),
        (":authority", "www.example.com"),
    ];
    const TABLE_3: &[(&str, &str)] = &[
        ("custom-key", "custom-value"),
        ("cache-control", "no-cache"),
        (":authority", "www.example.com"),
    ];

    #[test]
    fn c_3_requests_without_huffman() {
        run(
            4096,
            &[
                Step {
                    block: "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                    fields: REQUEST_1,
                    table: TABLE_1,
                    size: 57,
                },
                Step {
                    block: "8286 84be 5808 6e6f 2d63 6163 6865",
                    fields: REQUEST_2,
                    table: TABLE_2,
                    size: 110,
                },
                Step {
                    block:
                        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
                    fields: REQUEST_3,
                    table: TABLE_3,
                    size: 164,
                },
            ],
        );
    }

    #[test]
    fn c_4_requests_with_huffman() {
        run(
            4096,
            &[
                Step {
                    block: "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                    fields: REQUEST_1,
                    table: TABLE_1,
                    size: 57,
                },
                Step {
                    block: "8286 84be 5886 a8eb 1064 9cbf",
                    fields: REQUEST_2,
                    table: TABLE_2,
                    size: 110,
                },
                Step {
                    block: "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
                    fields: REQUEST_3,
                    table: TABLE_3,
                    size: 164,
                },
            ],
        );
    }

    const RESPONSE_1: &[(&str, &str)] = &[
        (":status", "302"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    ];
    const RESPONSE_2: &[(&str, &str)] = &[
        (":status", "307"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    ];
    const RESPONSE_3: &[(&str, &str)] = &[
        (":status", "200"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
        ("location", "https://www.example.com"),
        ("content-encoding", "gzip"),
        (
            "set-cookie",
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
        ),
    ];
    const RESPONSE_TABLE_1: &[(&str, &str)] = &[
        ("location", "https://www.example.com"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("cache-control", "private"),
        (":status", "302"),
    ];
    const RESPONSE_TABLE_2: &[(&str, &str)] = &[
        (":status", "307"),
        ("location", "https://www.example.com"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("cache-control", "private"),
    ];
    const RESPONSE_TABLE_3: &[(&str, &str)] = &[
        (
            "set-cookie",
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
        ),
        ("content-encoding", "gzip"),
        ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
    ];

    #[test]
    fn c_5_responses_without_huffman_evicting_at_256() {
        run(
            256,
            &[
                Step {
                    block: "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 \
                            3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 \
                            7777 2e65 7861 6d70 6c65 2e63 6f6d",
                    fields: RESPONSE_1,
                    table: RESPONSE_TABLE_1,
                    size: 222,
                },
                Step {
                    block: "4803 3330 37c1 c0bf",
                    fields: RESPONSE_2,
                    table: RESPONSE_TABLE_2,
                    size: 222,
                },
                Step {
                    block: "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 \
                            3220 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a \
                            584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 \
                            3630 303b 2076 6572 7369 6f6e 3d31",
                    fields: RESPONSE_3,
                    table: RESPONSE_TABLE_3,
                    size: 215,
                },
            ],
        );
    }

    #[test]
    fn c_6_responses_with_huffman_evicting_at_256() {
        run(
            256,
            &[
                Step {
                    block: "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 \
                            66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
                    fields: RESPONSE_1,
                    table: RESPONSE_TABLE_1,
                    size: 222,
                },
                Step {
                    block: "4883 640e ffc1 c0bf",
                    fields: RESPONSE_2,
                    table: RESPONSE_TABLE_2,
                    size: 222,
                },
                Step {
                    block: "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a \
                            839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 \
                            72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
                    fields: RESPONSE_3,
                    table: RESPONSE_TABLE_3,
                    size: 215,
                },
            ],
        );
    }

    #[test]
    fn joined_mid_stream_marks_unknown_dynamic_references() {
        let mut decoder = Decoder::joined();
        // :method GET (static 2), dynamic 62 (unknown), literal with indexing of a new
        // "x-new: 1" (name literal), then dynamic 62 again: now the new entry.
        let block = hex("82 be 40 05 782d 6e65 77 01 31 be bf");
        let decoded = decoder.decode(&block).expect("decodes");
        assert_eq!(decoded[0], Field::known(b":method", b"GET"));
        assert_eq!(
            decoded[1],
            Field {
                name: None,
                value: None,
                unknown_index: Some(62)
            }
        );
        assert_eq!(decoded[2], Field::known(b"x-new", b"1"));
        assert_eq!(decoded[3], Field::known(b"x-new", b"1"));
        assert_eq!(decoded[4].unknown_index, Some(63));
        assert!(!decoder.is_synchronised());
    }

    #[test]
    fn a_complete_decoder_rejects_unknown_indices() {
        assert_eq!(
            Decoder::new().decode(&[0xbe]),
            Err(HpackError::BadIndex(62))
        );
    }

    #[test]
    fn a_block_past_the_limit_keeps_the_table_in_sync() {
        let mut decoder = Decoder::new();
        // C.3.1 with a limit that keeps 2 fields (sizes 42 and 43): the 4th field still
        // enters the table.
        let decoded = decoder
            .decode_limited(
                &hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"),
                90,
            )
            .expect("decodes");
        assert_eq!((decoded.fields.len(), decoded.dropped), (2, 2));
        assert_eq!(table(&decoder), pairs(TABLE_1));
    }

    #[test]
    fn huffman_padding_rules() {
        // "a" is 00011 (5 bits): padded with ones it decodes, padded with zeros it does not.
        assert_eq!(huffman_decode(&[0b0001_1111]), Ok(b"a".to_vec()));
        assert_eq!(huffman_decode(&[0b0001_1000]), Err(HpackError::BadHuffman));
        // A whole byte of padding is too much.
        assert_eq!(
            huffman_decode(&[0b0001_1111, 0xff]),
            Err(HpackError::BadHuffman)
        );
    }

    /// The public hpack-test-case corpus (`testdata/hpack-test-case`, see its README): each
    /// story's header blocks, decoded in order by one decoder, give the story's header lists,
    /// and the table never exceeds the size the story's settings allow.
    #[test]
    fn hpack_test_case_stories() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/decode/http/testdata/hpack-test-case");
        let sorted = |dir: &std::path::Path| {
            let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
                .expect("testdata")
                .map(|entry| entry.expect("entry").path())
                .collect();
            paths.sort();
            paths
        };
        let (mut encoders, mut stories, mut blocks) = (0, 0, 0);
        for encoder in sorted(&root).into_iter().filter(|path| path.is_dir()) {
            encoders += 1;
            for story in sorted(&encoder) {
                let text = std::fs::read_to_string(&story).expect("story");
                let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
                let mut decoder = Decoder::new();
                let mut setting = DEFAULT_TABLE_SIZE as u64;
                for case in json["cases"].as_array().expect("cases") {
                    let at = format!("{} case {}", story.display(), case["seqno"]);
                    if let Some(size) = case["header_table_size"].as_u64() {
                        setting = size;
                    }
                    let wire = hex(case["wire"].as_str().expect("wire"));
                    let decoded = decoder
                        .decode(&wire)
                        .unwrap_or_else(|error| panic!("{at}: {error}"));
                    let expected: Vec<(String, String)> = case["headers"]
                        .as_array()
                        .expect("headers")
                        .iter()
                        .flat_map(|field| field.as_object().expect("one field").iter())
                        .map(|(name, value)| {
                            (name.clone(), value.as_str().expect("value").to_string())
                        })
                        .collect();
                    assert_eq!(fields(&decoded), expected, "{at}");
                    assert!(decoder.table_size() as u64 <= setting, "{at}");
                    blocks += 1;
                }
                stories += 1;
            }
        }
        // All of the vendored subset was read.
        assert_eq!((encoders, stories, blocks), (14, 60, 482));
    }
}
