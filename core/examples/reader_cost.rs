//! What the reader costs per GB of plaintext, without BPF: recorded-style ring buffer records
//! (16 KiB SSL_write calls of random bytes on one connection) replayed through the whole data
//! pipeline (reassembly, connections, rendering, the writer thread) into a file, per format.
//! CPU is the process's own (reader and writer thread, user + system), so the kernel's cost of
//! writing the output counts, as it does in a real run.
//!
//! Each format is rendered to /dev/null (the reader's own cost) and written to a file in
//! DIRECTORY (plus the kernel's cost of the file), best of three.
//!
//! `cargo run --release -p probectl-core --example reader_cost [-- DIRECTORY [MB]]`
//! (default: /dev/shm, else the temporary directory; 256 MB of plaintext).

use std::path::{Path, PathBuf};

use probectl_common::{record_kind, ChunkHeader, CHUNK_DATA_MAX};
use probectl_core::capture::pipeline::{AttachTable, Pipeline};
use probectl_core::output::{open_output, writer_for, AttachInfo, Format, OutputFile};
use probectl_core::spec::Direction;

/// The process's CPU time (all threads), in seconds.
fn process_cpu_seconds() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; CLOCK_PROCESS_CPUTIME_ID exists
    // on every Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
}

/// A chunk record as the kernel side writes it: the header, then the bytes.
fn record(attach_id: u32, tid: u32, handle: u64, stream_offset: u64, data: &[u8]) -> Vec<u8> {
    let header = ChunkHeader {
        kind: record_kind::CHUNK,
        flags: probectl_common::chunk_flags::LAST,
        call_start_ns: stream_offset + 1,
        call_end_ns: stream_offset + 2,
        connection: handle,
        call_len: data.len() as u64,
        offset: 0,
        stream_offset,
        pid: 100,
        tid,
        attach_id,
        data_len: data.len() as u32,
        fd: 5,
        comm: *b"bench\0\0\0\0\0\0\0\0\0\0\0",
        ..ChunkHeader::default()
    };
    let mut bytes = probectl_common::record_bytes(&header).to_vec();
    bytes.extend_from_slice(data);
    bytes
}

/// One replay of `records` through a pipeline writing `format` to `path`: (CPU seconds, bytes
/// written).
fn replay(records: &[Vec<u8>], format: Format, path: &Path) -> (f64, u64) {
    let table = AttachTable::default();
    let info = |function: &str, direction| AttachInfo {
        plugin: "openssl".into(),
        library: "/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
        function: function.into(),
        direction,
    };
    table.extend(
        0,
        vec![
            info("SSL_write", Direction::Write),
            info("SSL_read", Direction::Read),
        ],
    );
    // The bench names the same file on every run: overwritten, as --force does.
    let out = OutputFile::prepare(path, true).and_then(|file| open_output(Some(file)));
    let (Ok(writer), Ok(out)) = (
        writer_for(format, probectl_core::budget::DEFAULT_MEMORY_BUDGET),
        out,
    ) else {
        eprintln!("cannot open {}", path.display());
        std::process::exit(1);
    };
    let Ok(mut pipeline) = Pipeline::new(table, writer, out, 0, u64::MAX) else {
        eprintln!("cannot start the pipeline");
        std::process::exit(1);
    };
    let cpu = process_cpu_seconds();
    for (call, record) in records.iter().enumerate() {
        pipeline.record(record);
        // The event loop flushes after each drain of the ring.
        if call % 64 == 63 {
            pipeline.flush(call as u64);
        }
    }
    // Waits for the writer thread: its writes count.
    let error = pipeline.finish(&[]);
    let cpu = process_cpu_seconds() - cpu;
    if let Some(error) = error {
        eprintln!("writing {}: {error}", path.display());
        std::process::exit(1);
    }
    let written = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    (cpu, written)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let directory = args.next().map(PathBuf::from).unwrap_or_else(|| {
        let shm = PathBuf::from("/dev/shm");
        if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        }
    });
    let megabytes: u64 = args.next().and_then(|m| m.parse().ok()).unwrap_or(256);
    // Random bytes (xorshift): the worst case for text, the same as any data for hex and JSON.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let data: Vec<u8> = (0..CHUNK_DATA_MAX * 16)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let calls = megabytes * 1_000_000 / CHUNK_DATA_MAX as u64;
    let gigabytes = (calls * CHUNK_DATA_MAX as u64) as f64 / 1e9;
    // Built before any clock starts, stream offsets advancing like a real connection's: the
    // reader finds its records in the ring buffer, ready-made (and as cold).
    let records: Vec<Vec<u8>> = (0..calls)
        .map(|call| {
            let at = (call % 16) as usize * CHUNK_DATA_MAX;
            let offset = call * CHUNK_DATA_MAX as u64;
            record(0, 1, 0x1000, offset, &data[at..at + CHUNK_DATA_MAX])
        })
        .collect();
    let file = directory.join(format!("probectl-reader-cost-{}", std::process::id()));
    println!(
        "| format | output bytes per input byte | CPU per GB, to /dev/null | CPU per GB, to a file in {} |",
        directory.display()
    );
    println!("|---|---:|---:|---:|");
    for (name, format) in [
        ("text", Format::Text),
        ("hex", Format::Hex),
        ("json", Format::Json),
    ] {
        // Best of three each: what the code costs, not what else the machine did.
        let best = |path: &Path| {
            (0..3)
                .map(|_| {
                    let run = replay(&records, format, path);
                    let _ = std::fs::remove_file(&file);
                    run
                })
                .fold((f64::MAX, 0), |(cpu, _), (c, w)| (cpu.min(c), w))
        };
        let (rendering, _) = best(Path::new("/dev/null"));
        let (writing, written) = best(&file);
        println!(
            "| {name} | {:.2} | {:.2} s | {:.2} s |",
            written as f64 / (gigabytes * 1e9),
            rendering / gigabytes,
            writing / gigabytes
        );
    }
}
