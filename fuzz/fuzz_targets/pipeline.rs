//! The data path from ring buffer records, without BPF: reassembly, connections, the writer
//! (`Pipeline::record`, then `finish`), as the pipeline tests drive it. The input is a
//! recording: one options byte, then records `[length: u16 BE][record bytes]`, each what the
//! ring buffer delivers (chunk, connection, close, exec/map/exit records, or anything).
//! Options: bits 0-1 the writer (JSON, text, `--decode http` JSON, pcapng), bit 2 a capture
//! limit of 64 bytes (else 1 MiB), bit 3 a flush after every record.
//! Checks: no panic, no write error; never more bytes captured than the chunks carried;
//! JSON: one line per event counted, each with its data + truncated = len, and per connection
//! and direction in stream order unless the table counted the run as out of order; text is
//! UTF-8; `--decode http` output as the http targets check it; pcapng well-formed (as the
//! pcapng target checks it). `PROBECTL_FUZZ_SHOW=1` prints the counts and the output.
#![no_main]

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use probectl_common::{record_kind, ChunkHeader};
use probectl_core::capture::pipeline::{AttachTable, Pipeline};
use probectl_core::decode::http::HttpWriter;
use probectl_core::output::pcapng::PcapngWriter;
use probectl_core::output::{AttachInfo, EventWriter, Format, Renderer};
use probectl_core::spec::Direction;
use probectl_fuzz::{b64, blocks, check_http_output, packet};

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&options, mut rest)) = data.split_first() else {
        return;
    };
    let table = AttachTable::default();
    let info = |function: &str, direction| AttachInfo {
        plugin: "openssl".into(),
        library: "/usr/lib/libssl.so.3".into(),
        function: function.into(),
        direction,
    };
    assert!(table.extend(
        0,
        vec![
            info("SSL_write", Direction::Write),
            info("SSL_read", Direction::Read)
        ]
    ));
    let writer: Box<dyn EventWriter> = match options & 3 {
        0 => Box::new(Renderer::new(Format::Json)),
        1 => Box::new(Renderer::new(Format::Text)),
        2 => Box::new(HttpWriter::new(Format::Json, 4096).quiet()),
        _ => Box::new(PcapngWriter::with_identity("fuzz", "fuzz").unwrap()),
    };
    let max_capture = if options & 4 != 0 { 64 } else { 1 << 20 };
    let out = Shared::default();
    let mut pipeline = Pipeline::new(table, writer, Box::new(out.clone()), 0, max_capture).unwrap();
    let header_size = std::mem::size_of::<ChunkHeader>();
    let mut chunk_bytes = 0u64;
    // The pipeline's clock (its flushes' times): 50 ms a record, so that calls held for their
    // fd are also released by time.
    let mut clock = 0u64;
    while rest.len() >= 2 {
        let length = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let record = &rest[2..2 + length];
        rest = &rest[2 + length..];
        if record.len() >= 4
            && u32::from_le_bytes(record[..4].try_into().unwrap()) == record_kind::CHUNK
        {
            chunk_bytes += record.len().saturating_sub(header_size) as u64;
        }
        pipeline.record(record);
        if options & 8 != 0 {
            clock += 50_000_000;
            assert!(pipeline.flush(clock), "no write error");
        }
        let _ = pipeline.take_lookups();
        let _ = pipeline.take_exited();
    }
    assert!(pipeline.finish(&[]).is_none(), "no write error");
    let counts = pipeline.counts;
    assert!(
        counts.bytes_captured <= chunk_bytes,
        "{} bytes captured of {chunk_bytes} in chunks",
        counts.bytes_captured
    );
    let out = out.0.lock().unwrap().clone();
    if std::env::var_os("PROBECTL_FUZZ_SHOW").is_some() {
        eprintln!("{counts:?}\n{}", String::from_utf8_lossy(&out));
    }
    match options & 3 {
        0 => {
            let text = std::str::from_utf8(&out).expect("JSON is UTF-8");
            let mut next: HashMap<(u64, String), u64> = HashMap::new();
            let mut behind = 0u64;
            let mut lines = 0u64;
            for line in text.lines() {
                lines += 1;
                let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
                let len = value["len"].as_u64().expect("len");
                let kept = b64(&value["data_b64"]).len() as u64;
                assert_eq!(kept + value["truncated"].as_u64().expect("truncated"), len);
                let key = (
                    value["conn"]["id"].as_u64().expect("id"),
                    value["direction"].as_str().expect("direction").to_string(),
                );
                let offset = value["conn"]["offset"].as_u64().expect("offset");
                let expected = next.entry(key).or_insert(0);
                if offset < *expected {
                    behind += 1;
                }
                *expected = (*expected).max(offset.saturating_add(len));
            }
            assert_eq!(lines, counts.events, "one line per event");
            assert!(
                behind <= pipeline.connections.out_of_order,
                "{behind} events behind their stream, {} counted",
                pipeline.connections.out_of_order
            );
        }
        1 => {
            std::str::from_utf8(&out).expect("text is UTF-8");
        }
        2 => {
            check_http_output(&out, Format::Json, 4096);
        }
        _ => {
            for frame in blocks(&out) {
                packet(&frame);
            }
        }
    }
});
