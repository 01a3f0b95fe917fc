//! Event decoding: ring buffer chunks back into one event per TLS call.
//!
//! The BPF side cuts a call into chunks at increasing offsets, all written by one program run
//! on one CPU, so a call's chunks arrive in order; a thread's calls are sequential. A call that
//! fits one chunk (the common case) is passed on straight from ring buffer memory, without a
//! copy. A chunk that never arrived (ring buffer full) splits the call: the bytes before the gap
//! form one event whose span covers the gap (counted as not captured), the bytes after it the
//! next event, each at its true position.

pub mod connections;
pub mod hellos;
pub mod identity;
pub mod pipeline;
pub mod recording;
pub mod selection;
pub mod summary;

use std::collections::HashMap;

use probectl_common::{chunk_flags, ChunkHeader};

/// A run of one call's bytes as reassembled: the header of its call, where it starts in the
/// call, how many bytes of the call it accounts for, and the captured prefix of those.
pub struct Call<'a> {
    pub header: &'a ChunkHeader,
    /// Offset of `data[0]` within the call.
    pub start: u64,
    /// Bytes of the call this event accounts for, from `start` (data plus what is missing).
    pub span: u64,
    pub data: &'a [u8],
}

impl Call<'_> {
    /// Bytes of the span not in `data` (over the capture limit, lost, or unreadable).
    pub fn missing(&self) -> u64 {
        self.span.saturating_sub(self.data.len() as u64)
    }
}

struct Pending {
    header: ChunkHeader,
    start: u64,
    data: Vec<u8>,
}

impl Pending {
    /// What is pending as a run of `span` bytes of its call: never more data than the span
    /// (chunks of one call that disagree on its length are malformed records).
    fn run(&self, span: u64) -> Call<'_> {
        let kept = self
            .data
            .len()
            .min(usize::try_from(span).unwrap_or(usize::MAX));
        Call {
            header: &self.header,
            start: self.start,
            span,
            data: &self.data[..kept],
        }
    }
}

/// Reassembles chunks into calls, keyed by thread.
#[derive(Default)]
pub struct Reassembler {
    pending: HashMap<u32, Pending>,
}

impl Reassembler {
    /// Feeds one chunk record; calls `emit` for every run of a call it completes.
    pub fn push(&mut self, record: &[u8], emit: &mut dyn FnMut(Call<'_>)) {
        let Some((header, data)) = ChunkHeader::read_from(record) else {
            return;
        };
        // A chunk carries at most what its call moved from the chunk's offset on: bytes past
        // that (a malformed record, as a damaged recording may hold) are not the call's.
        let room = header.call_len.saturating_sub(header.offset);
        let data = &data[..data.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
        let last = header.flags & chunk_flags::LAST != 0;
        let readable = header.flags & chunk_flags::READ_FAULT == 0;
        // A new call on a thread means its previous call will get no more chunks.
        if let Some(previous) = self.pending.get(&header.tid) {
            if previous.header.call_start_ns != header.call_start_ns {
                self.flush_thread(header.tid, emit);
            }
        }
        if last && header.offset == 0 && !self.pending.contains_key(&header.tid) {
            return emit(Call {
                header: &header,
                start: 0,
                span: header.call_len,
                data,
            });
        }
        let gap = self.pending.get(&header.tid).is_some_and(|pending| {
            header.offset != pending.start + pending.data.len() as u64 || !readable
        });
        if gap {
            if let Some(pending) = self.pending.remove(&header.tid) {
                // Deliver what came before the gap, its span reaching up to this chunk.
                emit(
                    pending.run(
                        header
                            .offset
                            .min(pending.header.call_len)
                            .saturating_sub(pending.start),
                    ),
                );
            }
        }
        let pending = self.pending.entry(header.tid).or_insert_with(|| Pending {
            header,
            start: header.offset,
            data: Vec::with_capacity(room.min(1 << 26) as usize),
        });
        if readable {
            pending.data.extend_from_slice(data);
        }
        if last {
            self.flush_thread(header.tid, emit);
        }
    }

    fn flush_thread(&mut self, tid: u32, emit: &mut dyn FnMut(Call<'_>)) {
        if let Some(pending) = self.pending.remove(&tid) {
            emit(pending.run(pending.header.call_len.saturating_sub(pending.start)));
        }
    }

    /// Delivers every call still waiting for chunks (at shutdown).
    pub fn flush(&mut self, emit: &mut dyn FnMut(Call<'_>)) {
        let tids: Vec<u32> = self.pending.keys().copied().collect();
        for tid in tids {
            self.flush_thread(tid, emit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        tid: u32,
        start: u64,
        call_len: u64,
        offset: u64,
        data: &[u8],
        last: bool,
    ) -> Vec<u8> {
        let header = ChunkHeader {
            kind: probectl_common::record_kind::CHUNK,
            call_start_ns: start,
            call_len,
            offset,
            tid,
            pid: tid,
            data_len: data.len() as u32,
            flags: if last { chunk_flags::LAST } else { 0 },
            ..ChunkHeader::default()
        };
        let mut out = probectl_common::record_bytes(&header).to_vec();
        out.extend_from_slice(data);
        out
    }

    /// (tid, start, data, missing) of every emitted run.
    fn run(records: &[Vec<u8>]) -> Vec<(u32, u64, Vec<u8>, u64)> {
        let mut reassembler = Reassembler::default();
        let mut calls = Vec::new();
        let mut emit = |call: Call<'_>| {
            calls.push((
                call.header.tid,
                call.start,
                call.data.to_vec(),
                call.missing(),
            ))
        };
        for record in records {
            reassembler.push(record, &mut emit);
        }
        reassembler.flush(&mut emit);
        calls
    }

    #[test]
    fn interleaved_threads_are_reassembled() {
        let calls = run(&[
            record(1, 10, 6, 0, b"abc", false),
            record(2, 11, 2, 0, b"xy", true),
            record(1, 10, 6, 3, b"def", true),
        ]);
        assert_eq!(
            calls,
            vec![(2, 0, b"xy".to_vec(), 0), (1, 0, b"abcdef".to_vec(), 0)]
        );
    }

    #[test]
    fn a_lost_chunk_splits_the_call_at_its_true_positions() {
        let calls = run(&[
            record(1, 10, 9, 0, b"abc", false),
            record(1, 10, 9, 6, b"ghi", true),
            record(1, 20, 2, 0, b"zz", true),
        ]);
        assert_eq!(
            calls,
            vec![
                (1, 0, b"abc".to_vec(), 3),
                (1, 6, b"ghi".to_vec(), 0),
                (1, 0, b"zz".to_vec(), 0)
            ]
        );
    }

    #[test]
    fn a_lost_last_chunk_is_flushed_by_the_next_call() {
        let calls = run(&[
            record(1, 10, 6, 0, b"abc", false),
            record(1, 20, 1, 0, b"q", true),
        ]);
        assert_eq!(
            calls,
            vec![(1, 0, b"abc".to_vec(), 3), (1, 0, b"q".to_vec(), 0)]
        );
    }

    #[test]
    fn a_chunk_never_carries_more_than_its_call_moved() {
        // Malformed records (found by the pipeline fuzz target): data past the call's length,
        // and a chunk whose offset is past it.
        let calls = run(&[
            record(1, 10, 2, 0, b"hello", true),
            record(2, 20, 3, 5, b"xy", false),
            record(2, 20, 3, 9, b"z", true),
        ]);
        assert_eq!(
            calls,
            vec![
                (1, 0, b"he".to_vec(), 0),
                (2, 5, Vec::new(), 0),
                (2, 9, Vec::new(), 0)
            ]
        );
    }

    #[test]
    fn chunks_that_disagree_on_the_call_length_keep_the_first() {
        // Found by the pipeline fuzz target: a later chunk of the call said it was longer, and
        // its data went past the span of the run.
        let calls = run(&[
            record(1, 10, 4, 0, b"ab", false),
            record(1, 10, 100, 2, b"cdefgh", true),
        ]);
        assert_eq!(calls, vec![(1, 0, b"abcd".to_vec(), 0)]);
    }

    #[test]
    fn truncated_call_reports_missing_bytes() {
        let calls = run(&[record(1, 10, 100, 0, b"abc", true)]);
        assert_eq!(calls, vec![(1, 0, b"abc".to_vec(), 97)]);
    }
}
