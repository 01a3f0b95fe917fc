//! The one definition of everything probectl's BPF programs and its user space exchange.
//!
//! Every struct is `#[repr(C)]` with explicit padding fields so that its layout is the same
//! for the `bpfel` target and the host, and compile-time asserts pin the sizes.
#![no_std]

/// No argument register: the spec does not name one (e.g. no connection handle).
pub const ARG_NONE: u8 = 0xff;

/// Where the number of bytes a call really moved comes from.
pub mod length_source {
    /// The (positive) return value.
    pub const RETURN: u8 = 0;
    /// A `size_t*` out-argument, valid when the call returns a positive value (OpenSSL `_ex`).
    pub const OUT_POINTER: u8 = 1;
}

/// Direction of the data, from the traced process's point of view.
pub mod direction {
    /// Plaintext the process hands to the library to encrypt and send.
    pub const WRITE: u8 = 0;
    /// Plaintext the library decrypted and hands to the process.
    pub const READ: u8 = 1;
}

/// What a spec's return value is: decides how the return register is sign-extended.
pub mod return_width {
    /// `int`: only the low 32 bits of the register are defined.
    pub const INT32: u8 = 0;
    /// `ssize_t`/`long`: all 64 bits.
    pub const INT64: u8 = 1;
}

/// Per attach point configuration: the value type of the `PROBE_SPECS` array,
/// indexed by the BPF cookie of the attach point.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeSpec {
    /// Argument register (0-based) holding the connection handle, or [`ARG_NONE`].
    pub connection_arg: u8,
    /// Argument register holding the plaintext buffer pointer.
    pub buffer_arg: u8,
    /// One of [`length_source`].
    pub length_source: u8,
    /// Argument register of the length out-pointer for [`length_source::OUT_POINTER`].
    pub length_arg: u8,
    /// One of [`direction`].
    pub direction: u8,
    /// One of [`return_width`].
    pub return_width: u8,
    /// Argument register a call filter starts from, or [`ARG_NONE`]: every call is captured.
    /// Otherwise a call is captured only when the 4-byte value found by starting from this
    /// register, loading a pointer at each of the first `filter_pointers` offsets of
    /// `filter_pointer_offsets` in turn, then reading at `filter_value_offset`, equals
    /// `filter_equals` (NSPR: `fd->methods->file_type == PR_DESC_LAYERED`).
    pub filter_arg: u8,
    /// How many of `filter_pointer_offsets` are used (at most [`FILTER_MAX_POINTERS`]).
    pub filter_pointers: u8,
    pub filter_pointer_offsets: [i32; FILTER_MAX_POINTERS],
    pub filter_value_offset: i32,
    pub filter_equals: u32,
}

/// Pointers a call filter may follow.
pub const FILTER_MAX_POINTERS: usize = 2;

/// Size of the data area of the largest chunk. Every call is cut into chunks of at most this
/// many bytes; a TLS record's plaintext maximum, so a typical call is one chunk.
pub const CHUNK_DATA_MAX: usize = 16 * 1024;

/// The data capacities a chunk can be reserved with in the ring buffer. The BPF verifier only
/// accepts constant reservation sizes, so a short last chunk takes the smallest class that fits
/// instead of a whole [`CHUNK_DATA_MAX`].
pub const CHUNK_CLASSES: [usize; 4] = [256, 1024, 4096, CHUNK_DATA_MAX];

/// Chunk flags.
pub mod chunk_flags {
    /// The last chunk the BPF side emits for this call.
    pub const LAST: u32 = 1;
    /// Reading the buffer from user memory failed: the chunk carries no data.
    pub const READ_FAULT: u32 = 2;
}

/// Header of every ring buffer record: one chunk of one TLS call's plaintext.
/// The data follows the header directly (`data_len` bytes valid).
///
/// A call of `call_len` bytes arrives as chunks at `offset` 0, `CHUNK_DATA_MAX`, ... until the
/// capture limit; (`tid`, `call_start_ns`) identifies the call they belong to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkHeader {
    /// CLOCK_MONOTONIC time the call was entered.
    pub call_start_ns: u64,
    /// CLOCK_MONOTONIC time the call returned.
    pub call_end_ns: u64,
    /// Value of the connection-handle argument (e.g. `SSL*`), 0 if the spec names none.
    pub connection: u64,
    /// Bytes the call really moved (may exceed what is captured).
    pub call_len: u64,
    /// Position of this chunk's data within the call.
    pub offset: u64,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The BPF cookie of the attach point: index into user space's attach table.
    pub attach_id: u32,
    /// Bytes of data following this header.
    pub data_len: u32,
    /// [`chunk_flags`].
    pub flags: u32,
    pub _padding: u32,
    /// The thread's `comm` at return.
    pub comm: [u8; 16],
}

/// A chunk as reserved in the ring buffer: header plus a data area of one of [`CHUNK_CLASSES`].
#[repr(C)]
pub struct Chunk<const N: usize> {
    pub header: ChunkHeader,
    pub data: [u8; N],
}

/// Indexes of the per-CPU counters in the `STATS` array.
pub mod stat {
    /// Chunks that found the ring buffer full.
    pub const CHUNKS_LOST: u32 = 0;
    /// Bytes those chunks would have carried.
    pub const BYTES_LOST: u32 = 1;
    /// Chunks whose buffer could not be read from the process's memory.
    pub const READ_FAULTS: u32 = 2;
    /// Calls whose length out-pointer could not be read.
    pub const LENGTH_FAULTS: u32 = 3;
    /// Number of counters.
    pub const COUNT: u32 = 4;
}

const _: () = assert!(core::mem::size_of::<ProbeSpec>() == 24);
const _: () = assert!(core::mem::size_of::<ChunkHeader>() == 80);
const _: () = assert!(core::mem::size_of::<Chunk<256>>() == 80 + 256);

/// `ChunkHeader` is plain old data: any bytes are a valid value.
#[cfg(feature = "user")]
impl ChunkHeader {
    /// Reads a header from the start of a ring buffer record, if the record is long enough.
    pub fn read_from(record: &[u8]) -> Option<(ChunkHeader, &[u8])> {
        if record.len() < core::mem::size_of::<ChunkHeader>() {
            return None;
        }
        // SAFETY: the record holds at least size_of::<ChunkHeader>() bytes, the type is
        // repr(C) plain old data without invalid bit patterns, and read_unaligned makes no
        // alignment assumption about the ring buffer's memory.
        let header = unsafe { core::ptr::read_unaligned(record.as_ptr().cast::<ChunkHeader>()) };
        let rest = &record[core::mem::size_of::<ChunkHeader>()..];
        let data_len = (header.data_len as usize).min(rest.len());
        Some((header, &rest[..data_len]))
    }
}

// SAFETY: ProbeSpec is repr(C), has explicit padding and only integer fields: every bit
// pattern is valid and there are no uninitialised bytes.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ProbeSpec {}
