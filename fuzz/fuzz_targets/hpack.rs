//! HPACK (RFC 7541). Two parts per input (format: see `Input`):
//! - raw header blocks decoded in sequence twice, by a decoder without a limit and one with a
//!   header list limit: both return the same result, the limited one keeps a prefix of the
//!   fields and counts the rest, its kept fields fit the limit, and both tables stay the same
//!   size, under the memory cap;
//! - header lists encoded by the library's encoder (every representation, Huffman or not,
//!   table size updates, names and fields from the static and dynamic tables) and decoded by
//!   a new decoder: the same fields come back, and the decoder's table has the size of the
//!   encoder's model of it (eviction agrees).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use probectl_fuzz::{known, Encoder, Representation};
use probectl_pipeline::decode::http::hpack::{Decoder, TABLE_MEMORY_CAP};

/// The input: `[joined: u8][limit: u16 BE][blocks: u8]`, that many raw header blocks
/// `[length: u16 BE][block]` (the seeds are hpack-test-case stories), and the rest read by
/// `arbitrary` as the header lists to encode.
struct Input {
    joined: bool,
    limit: u16,
    raw: Vec<Vec<u8>>,
    lists: Vec<List>,
}

impl Input {
    fn parse(data: &[u8]) -> Option<Input> {
        let (head, mut rest) = (data.get(..4)?, &data[4..]);
        let mut raw = Vec::new();
        for _ in 0..head[3] {
            if rest.len() < 2 {
                break;
            }
            let length = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
            raw.push(rest[2..2 + length].to_vec());
            rest = &rest[2 + length..];
        }
        let lists = Vec::<List>::arbitrary_take_rest(Unstructured::new(rest)).ok()?;
        Some(Input {
            joined: head[0] & 1 != 0,
            limit: u16::from_be_bytes([head[1], head[2]]),
            raw,
            lists,
        })
    }
}

#[derive(Arbitrary, Debug)]
struct List {
    size_update: Option<u16>,
    fields: Vec<FieldSpec>,
}

#[derive(Arbitrary, Debug)]
struct FieldSpec {
    /// Name from the static table (index mod 61), else `name`.
    static_name: Option<u8>,
    /// A field encoded before in this input, again (an indexed reference when kept).
    again: Option<u8>,
    name: Vec<u8>,
    value: Vec<u8>,
    representation: u8,
    huffman: bool,
}

fn field_size(field: &probectl_pipeline::decode::http::Field) -> usize {
    32 + field.name.as_ref().map_or(0, Vec::len) + field.value.as_ref().map_or(0, Vec::len)
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    // Raw blocks: limited and unlimited decoders agree.
    let new = |joined: bool| {
        if joined {
            Decoder::joined()
        } else {
            Decoder::new()
        }
    };
    let (mut whole, mut limited) = (new(input.joined), new(input.joined));
    let limit = usize::from(input.limit);
    for block in &input.raw {
        let all = whole.decode(block);
        let some = limited.decode_limited(block, limit);
        match (&all, &some) {
            (Ok(all), Ok(some)) => {
                assert_eq!(some.fields.len() + some.dropped, all.len());
                assert_eq!(&all[..some.fields.len()], &some.fields[..]);
                assert!(some.fields.iter().map(field_size).sum::<usize>() <= limit);
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            _ => panic!("limited and unlimited decoding disagree: {all:?} / {some:?}"),
        }
        assert_eq!(whole.table_size(), limited.table_size());
        assert_eq!(whole.is_synchronised(), limited.is_synchronised());
        assert!(whole.table_size() <= TABLE_MEMORY_CAP);
    }

    // Encoded lists: round trip through a new decoder.
    let statics = probectl_pipeline::fuzzing::STATIC_TABLE;
    let mut encoder = Encoder::default();
    let mut decoder = Decoder::new();
    let mut seen: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for list in &input.lists {
        let mut block = Vec::new();
        if let Some(size) = list.size_update {
            encoder.size_update(&mut block, usize::from(size));
        }
        let mut expected = Vec::new();
        for spec in &list.fields {
            let (name, value) = match (spec.again, spec.static_name) {
                (Some(again), _) if !seen.is_empty() => {
                    seen[usize::from(again) % seen.len()].clone()
                }
                (_, Some(index)) => (
                    statics[usize::from(index) % statics.len()]
                        .0
                        .as_bytes()
                        .to_vec(),
                    spec.value.clone(),
                ),
                _ => (spec.name.clone(), spec.value.clone()),
            };
            let representation = match spec.representation % 4 {
                0 => Representation::Indexed,
                1 => Representation::Incremental,
                2 => Representation::WithoutIndexing,
                _ => Representation::NeverIndexed,
            };
            encoder.field(&mut block, &name, &value, representation, spec.huffman);
            expected.push(known(&name, &value));
            seen.push((name, value));
        }
        let decoded = decoder.decode(&block).expect("an encoded block decodes");
        assert_eq!(decoded, expected);
        assert_eq!(decoder.table_size(), encoder.table_size());
        assert!(decoder.is_synchronised());
    }
});
