//! The events ring buffer, read from user space with its data area mapped once.
//!
//! The kernel lets a reader map a `BPF_MAP_TYPE_RINGBUF`'s data pages twice in a row, so that a
//! record that wraps around the end reads as one slice (kernel/bpf/ringbuf.c), and inserts every
//! page of that mapping at mmap time. A reader that maps the whole second copy (aya's `RingBuf`,
//! libbpf) therefore shows twice the ring in its RSS from the start: 128 MiB for a 64 MiB ring.
//! Only a record's tail can ever be read through the second copy, and no record is longer than
//! [`RING_RECORD_MAX`], so this reader maps the data area once plus that much of the second copy.
//! A record announcing more than that is skipped without being read, and counted.
//!
//! The protocol is the kernel's (Documentation/bpf/ringbuf.rst): the consumer position lives in
//! the first page (read-write), the producer position in the second (read-only), then the data;
//! every record starts with an 8-byte header (length with the busy and discard bits, page offset)
//! and takes its length plus the header, rounded up to 8 bytes.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{fence, AtomicU32, AtomicUsize, Ordering};

use aya::maps::MapData;
use memmap2::{MmapOptions, MmapRaw};
use probectl_common::capacity::RING_RECORD_MAX;

/// linux/bpf.h: `BPF_RINGBUF_BUSY_BIT`, `BPF_RINGBUF_DISCARD_BIT`, `BPF_RINGBUF_HDR_SZ`.
const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HEADER_BYTES: usize = 8;

/// Why the ring could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("the ring buffer's size {0} is not a power of two of at least one page")]
    Size(u32),
    #[error("mapping the ring buffer's {what}")]
    Map {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The reader's side of the `EVENTS` ring buffer.
pub struct EventRing {
    map: MapData,
    /// The consumer page: the position up to which records were read (written by us).
    consumer: MmapRaw,
    /// The producer page, the data area, and the first [`RING_RECORD_MAX`] bytes of it again.
    producer: MmapRaw,
    page: usize,
    mask: usize,
    /// Where reading goes on; equal to the published consumer position between records.
    position: usize,
    /// The producer position last read; re-read only when `position` catches up with it.
    producer_cache: usize,
    /// Since the last full fence: records were consumed, so the producer may need to see that.
    needs_fence: bool,
    /// Records skipped because their header announced more than [`RING_RECORD_MAX`].
    oversized: u64,
}

impl EventRing {
    pub fn new(map: MapData, byte_size: u32) -> Result<Self, RingError> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let size = byte_size as usize;
        if !byte_size.is_power_of_two() || size < page {
            return Err(RingError::Size(byte_size));
        }
        // The second copy only as far as a record can reach past the end, in whole pages.
        let tail = RING_RECORD_MAX.next_multiple_of(page).min(size);
        let fd = map.fd().as_fd().as_raw_fd();
        let consumer =
            MmapOptions::new()
                .len(page)
                .map_raw(fd)
                .map_err(|source| RingError::Map {
                    what: "consumer page",
                    source,
                })?;
        let producer = MmapOptions::new()
            .offset(page as u64)
            .len(page + size + tail)
            .map_raw_read_only(fd)
            .map_err(|source| RingError::Map {
                what: "producer page and data",
                source,
            })?;
        let mut ring = Self {
            map,
            consumer,
            producer,
            page,
            mask: size - 1,
            position: 0,
            producer_cache: 0,
            needs_fence: false,
            oversized: 0,
        };
        ring.position = ring.consumer_pos().load(Ordering::Acquire);
        ring.producer_cache = ring.producer_pos().load(Ordering::Acquire);
        Ok(ring)
    }

    fn consumer_pos(&self) -> &AtomicUsize {
        // SAFETY: the consumer page is mapped shared, read-write, page-aligned and at least a
        // page long; the kernel keeps the consumer position in its first word and only reads it.
        unsafe { &*self.consumer.as_ptr().cast::<AtomicUsize>() }
    }

    fn producer_pos(&self) -> &AtomicUsize {
        // SAFETY: the producer mapping starts with the producer page (page-aligned); the kernel
        // writes the producer position to its first word with release ordering.
        unsafe { &*self.producer.as_ptr().cast::<AtomicUsize>() }
    }

    /// Records skipped because their header announced more than a record can hold.
    pub fn oversized(&self) -> u64 {
        self.oversized
    }

    /// Hands the next committed record to `read` and releases its space; false when there is
    /// none (the ring is empty or the next record is still being written).
    pub fn next(&mut self, mut read: impl FnMut(&[u8])) -> bool {
        loop {
            if self.position == self.producer_cache {
                if self.needs_fence {
                    // Either this sees a new record, or its producer sees the consumer
                    // position stored before and wakes the reader (as libbpf and aya do).
                    fence(Ordering::SeqCst);
                    self.needs_fence = false;
                }
                self.producer_cache = self.producer_pos().load(Ordering::Acquire);
                if self.position == self.producer_cache {
                    return false;
                }
            }
            let offset = self.position & self.mask;
            let data = self.page;
            // SAFETY: `offset` < ring size, so the 4 aligned bytes of the header (records are
            // 8-aligned) lie in the first copy of the data area, which is mapped. The kernel
            // commits a record by an xchg of this word; the acquire load pairs with it so the
            // record's bytes are visible once the busy bit is clear.
            let header = unsafe {
                &*self
                    .producer
                    .as_ptr()
                    .add(data + offset)
                    .cast::<AtomicU32>()
            }
            .load(Ordering::Acquire);
            if header & BUSY_BIT != 0 {
                return false;
            }
            let len = (header & !(BUSY_BIT | DISCARD_BIT)) as usize;
            let discarded = header & DISCARD_BIT != 0;
            if !discarded {
                if HEADER_BYTES + len <= RING_RECORD_MAX {
                    // SAFETY: the record starts in the first copy and ends at most
                    // RING_RECORD_MAX bytes after its start, so within the data area plus the
                    // mapped part of the second copy; the kernel does not reuse those bytes
                    // until the consumer position passes them, which happens below.
                    let bytes = unsafe {
                        std::slice::from_raw_parts(
                            self.producer.as_ptr().add(data + offset + HEADER_BYTES),
                            len,
                        )
                    };
                    read(bytes);
                } else {
                    self.oversized += 1;
                }
            }
            self.position += (HEADER_BYTES + len).next_multiple_of(8);
            // Release: our reads of the record happen before the kernel may reuse its space.
            self.consumer_pos().store(self.position, Ordering::Release);
            self.needs_fence = true;
            if !discarded {
                return true;
            }
        }
    }
}

impl AsFd for EventRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.map.fd().as_fd()
    }
}

impl AsRawFd for EventRing {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}
