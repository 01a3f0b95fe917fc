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
    /// An argument's value: the call's input, captured when the call is entered (the buffer
    /// and the length are read then, and nothing waits for the return). For functions that
    /// overwrite their input, such as an in-place encryption.
    pub const ENTRY_ARGUMENT: u8 = 2;
}

/// Direction of the data, from the traced process's point of view.
pub mod direction {
    /// Plaintext the process hands to the library to encrypt and send.
    pub const WRITE: u8 = 0;
    /// Plaintext the library decrypted and hands to the process.
    pub const READ: u8 = 1;
}

/// The calling convention of a probed function: which registers hold its arguments and results,
/// and how a call is matched to its return.
pub mod abi {
    /// The C calling convention: System V on x86-64 (arguments in RDI, RSI, RDX, RCX, R8, R9,
    /// the result in RAX), AAPCS64 on arm64 (X0-X7, the result in X0); calls are per thread,
    /// matched by the stack pointer.
    pub const SYSV: u8 = 0;
    /// Go's register ABI (amd64, Go >= 1.17): integer arguments and results in RAX, RBX, RCX,
    /// RDI, RSI, R8, R9, R10, R11; the current goroutine in R14 (arm64, Go >= 1.18: R0-R15, the
    /// goroutine in R28). Calls are per goroutine (a
    /// goroutine blocked in a call may resume on another thread, and its stack may move), and
    /// return where the function's `ret` instructions are probed (never a uretprobe).
    pub const GO: u8 = 1;
}

/// Argument registers a spec may name: nine for Go's ABI, six for System V.
pub const MAX_ARGUMENT_REGISTERS: usize = 9;

/// A tracepoint field offset the running kernel's format file does not have: the program
/// that would read it does nothing (user space says what is not followed).
pub const NO_FIELD: u32 = u32::MAX;

/// Arguments a spec may name at all: System V passes those after the sixth on the stack, where
/// the entry program reads them (`arg6` is the 8 bytes above the return address).
pub const MAX_ARGUMENTS: usize = 16;

/// TLS record types (RFC 8446 `ContentType`): only application data is plaintext a program
/// sent or received; the rest is the protocol's own (handshake, alerts).
pub const TLS_APPLICATION_DATA: u8 = 23;

/// Bytes of zero padding the kernel looks through, from a TLS 1.3 record's end, for its inner
/// content type. Senders seldom pad (OpenSSL, BoringSSL, Go, rustls and NSS do not by default);
/// a record padded further is counted (`stat::RECORDS_UNSCANNED`), not guessed at.
pub const TLS13_PADDING_SCAN: u64 = 64;

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
    /// Argument register holding the number of entries of a buffer list (iovec style), or
    /// [`ARG_NONE`]: `buffer_arg` points at the bytes themselves. Otherwise it points at the
    /// list, whose entries are `vector_entry_size` bytes with a base pointer at
    /// `vector_base_offset` and a length of `vector_length_size` (4 or 8) bytes at
    /// `vector_length_offset` (NSPR's `PR_Writev`, `writev`-like APIs).
    pub vector_count_arg: u8,
    pub vector_entry_size: u8,
    pub vector_base_offset: u8,
    pub vector_length_offset: u8,
    pub vector_length_size: u8,
    /// One of [`abi`].
    pub abi: u8,
    /// For a function that seals or opens one TLS record (an AEAD of the record layer): the
    /// arguments holding its additional data (the record header the AEAD authenticates) and
    /// that data's length, read at entry; [`ARG_NONE`] for a plain plaintext function. The
    /// header tells the record's type and version: only application data is captured, and a
    /// TLS 1.3 record loses its inner content type and padding. A record function's handle
    /// is the key context of one direction (see [`connection_flags::PER_DIRECTION`]).
    pub record_ad_arg: u8,
    pub record_ad_length_arg: u8,
    /// The stack pointer at the entry point minus its value at the function's first
    /// instruction (0 for the classic entry uprobe; e.g. -0x18 after a `sub $0x18,%rsp`). The
    /// entry program keys a call by the function-entry stack pointer, whatever its placement.
    pub entry_stack_offset: i32,
    /// The same offset at the exit points of an emulated placement (`probectl_exit`).
    pub exit_stack_offset: i32,
}

/// Per attach point configuration of a secret probe (`[[group.secret]]`): the value type of
/// the `SECRET_SPECS` array, indexed by the attach point's BPF cookie. The function is a
/// library's key-log funnel (OpenSSL's `nss_keylog_int`, Go's `(*Config).writeKeyLog`): its
/// arguments hold a label, the connection's client random and a secret, which the program
/// copies into a [`SecretRecord`] when the function is entered. A table of its own, not
/// fields of [`ProbeSpec`]: the data programs copy their spec onto a stack that is full on 6.1.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SecretSpec {
    /// One of [`abi`].
    pub abi: u8,
    /// Argument register of the connection handle, or [`ARG_NONE`].
    pub connection_arg: u8,
    /// Argument register of the label: a NUL-terminated string, or with `label_length_arg`
    /// a pointer and a length (Go's `string`).
    pub label_arg: u8,
    pub label_length_arg: u8,
    /// Argument register of the client random's base address; the random is at that
    /// address plus `random_offset` (0, or the field's offset in the handle's struct, as the
    /// library's own accessor reads it).
    pub random_arg: u8,
    /// Argument register of the random's length, or [`ARG_NONE`]: `random_length` bytes.
    pub random_length_arg: u8,
    pub random_length: u8,
    /// Argument registers of the secret and its length.
    pub secret_arg: u8,
    pub secret_length_arg: u8,
    /// How many of `random_pointer_offsets` are followed before `random_offset` is added:
    /// from the argument's value, load the 8-byte pointer at each offset in turn
    /// (`ssl->s3->client_random` in BoringSSL: one).
    pub random_pointers: u8,
    /// 1: the function gives no client random (a stripped executable without the accessor
    /// to read its field from): the record carries none, flagged
    /// [`secret_flags::RANDOM_FROM_HELLO`], and user space takes it from the ClientHello that
    /// the connection's socket sent ([`HelloRecord`]).
    pub random_from_hello: u8,
    pub _padding: [u8; 1],
    pub random_pointer_offsets: [i32; SECRET_RANDOM_MAX_POINTERS],
    pub random_offset: i32,
}

/// Pointers a secret probe follows at most to its client random.
pub const SECRET_RANDOM_MAX_POINTERS: usize = 2;

/// Bytes of a secret record's label, client random and secret at most. Labels of the NSS
/// key-log format are at most 31 characters; randoms are 32 bytes (8 for `RSA` lines); TLS
/// secrets are at most 48 bytes (SHA-384): a longer one is not written, and counted.
pub const SECRET_LABEL_MAX: usize = 64;
pub const SECRET_RANDOM_MAX: usize = 32;
pub const SECRET_MAX: usize = 64;

/// Flags of a [`SecretRecord`].
pub mod secret_flags {
    /// A part (label, random or secret) could not be read from the process's memory.
    pub const READ_FAULT: u32 = 1;
    /// A part was longer than its field: the record is not a whole key-log line.
    pub const TOO_LONG: u32 = 2;
    /// The record has no client random: it is the one of the ClientHello its connection's
    /// socket sent (see [`SecretSpec::random_from_hello`]).
    pub const RANDOM_FROM_HELLO: u32 = 4;
}

/// A TLS ClientHello a process in scope wrote to a socket (`write`, `sendto`, `writev`,
/// `sendmsg`: the first buffer begins with a handshake record whose first message is a
/// ClientHello), seen by the `sys_enter` tracepoint while secrets are traced: it names the
/// socket of a client random, which ties a secret to its connection when its function gives
/// no connection handle (Go) or no client random (stripped BoringSSL).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "records",
    derive(
        zerocopy::FromBytes,
        zerocopy::IntoBytes,
        zerocopy::KnownLayout,
        zerocopy::Immutable
    )
)]
pub struct HelloRecord {
    /// [`record_kind::HELLO`].
    pub kind: u32,
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    pub ts_ns: u64,
    /// The ClientHello's 32-byte random (bytes 11 to 43 of its record).
    pub random: [u8; SECRET_RANDOM_MAX],
}

/// A session secret, as the library handed it to its key-log function.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "records",
    derive(
        zerocopy::FromBytes,
        zerocopy::IntoBytes,
        zerocopy::KnownLayout,
        zerocopy::Immutable
    )
)]
pub struct SecretRecord {
    /// [`record_kind::SECRET`].
    pub kind: u32,
    /// [`secret_flags`].
    pub flags: u32,
    pub pid: u32,
    pub tid: u32,
    pub ts_ns: u64,
    /// The library's connection handle, 0 if the spec names none.
    pub connection: u64,
    pub attach_id: u32,
    /// Valid bytes of `label`, `random` and `secret`.
    pub label_len: u32,
    pub random_len: u32,
    pub secret_len: u32,
    pub label: [u8; SECRET_LABEL_MAX],
    pub random: [u8; SECRET_RANDOM_MAX],
    pub secret: [u8; SECRET_MAX],
}

/// Entries of a buffer list that are followed at most.
pub const VECTOR_MAX_ENTRIES: u64 = 1024;

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
    /// The call made socket syscalls on two different fds: `fd` is the first one.
    pub const FD_MISMATCH: u32 = 4;
}

/// What a ring buffer record is: its first `u32`.
pub mod record_kind {
    /// A [`ChunkHeader`] and data.
    pub const CHUNK: u32 = 1;
    /// A [`ConnectionRecord`]: a connection handle was seen on a (new) fd.
    pub const CONNECTION: u32 = 2;
    /// A [`CloseRecord`]: a process closed the fd of a known connection.
    pub const CLOSE: u32 = 3;
    /// A [`ProcessRecord`]: a process in scope started a new program.
    pub const EXEC: u32 = 4;
    /// A [`ProcessRecord`]: a process in scope mapped a file executable (`dlopen`, a late
    /// library load): user space looks for TLS code in it at once.
    pub const MAP: u32 = 5;
    /// A [`ProcessRecord`]: a process that had connections exited (its leader thread did): its
    /// connections still open end, whether or not it closed them.
    pub const EXIT: u32 = 6;
    /// A [`SecretRecord`]: a TLS library handed a session secret to its key-log function.
    pub const SECRET: u32 = 7;
    /// A [`HelloRecord`]: a process in scope sent a TLS ClientHello on a socket.
    pub const HELLO: u32 = 8;
}

/// What a process must match, when it starts a program, to be traced (`SELECT_AT_EXEC`).
pub mod select {
    /// Its cgroup is in `SELECTED_CGROUPS`.
    pub const CGROUP: u8 = 1;
    /// Its new command name is `SELECT_COMM`.
    pub const COMM: u8 = 2;
}

/// `--port`/`--host` as the BPF side applies them (the `ADDRESS_FILTER` global): when a
/// connection's socket is first seen, its addresses are matched, and the calls of a connection
/// that does not match are not copied (counted in `stat::CALLS_NOT_SELECTED`). Conservative:
/// a connection whose addresses are not known is copied, and user space decides.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddressFilter {
    /// Either end's port must be one of the first `port_count` (0: any port).
    pub ports: [u16; capacity::FILTER_PORTS],
    /// Either end's address must be one of the first `host_count` (0: any address): its 16
    /// bytes as `ConnectionRecord` holds them (IPv4 in the first 4, the rest zero; IPv6 in
    /// all), read as two native-endian u64 (so that the BPF side compares two words).
    pub hosts: [[u64; 2]; capacity::FILTER_HOSTS],
    pub port_count: u32,
    pub host_count: u32,
}

/// Flags of a connection handle (`ConnectionState::flags`, `ConnectionRecord::flags`).
pub mod connection_flags {
    /// The handle carries one direction of a connection (a record-layer key context): user
    /// space joins the handles seen on one fd into one connection.
    pub const PER_DIRECTION: u32 = 1;
    /// The kernel's `AddressFilter` does not select the connection's addresses, so its calls
    /// from here on are not copied (not a loss: left out on purpose). Set in
    /// `ConnectionState::flags` and in the connection's `ConnectionRecord`.
    pub const NOT_SELECTED: u32 = 2;
}

/// Why a connection ended (`CloseRecord::cause`).
pub mod close_cause {
    /// The process closed the connection's fd.
    pub const FD_CLOSED: u32 = 0;
    /// The library's lifecycle function for the handle ran (`SSL_free`, `gnutls_deinit`, ...):
    /// the handle's next use is a new connection, even without any fd.
    pub const HANDLE_ENDED: u32 = 1;
}

/// Entries of the BPF maps: one definition for the programs (their maps) and for user space
/// (which checks against them, and sizes some maps from the run's scope at load).
pub mod capacity {
    /// Attach points (BPF cookies) of one run: `PROBE_SPECS`.
    pub const ATTACH_POINTS: u32 = 4096;
    /// Processes in a pid-filtered run's scope: `TRACED_PIDS`.
    pub const TRACED_PIDS: u32 = 16384;
    /// Threads with calls in flight: `THREADS` (allocated as used).
    pub const THREADS: u32 = 65536;
    /// Go calls in flight (allocated as used): a Go server holds one per goroutine blocked in
    /// `Read`, so one per idle connection, which can be many more than threads.
    pub const GOROUTINES: u32 = 262_144;
    /// Go calls waiting for their fd (allocated as used).
    pub const GO_PENDING_FDS: u32 = 65536;
    /// Connections, their fds, and the processes that have any (LRUs).
    pub const CONNECTIONS: u32 = 65536;
    pub const SOCKET_FDS: u32 = 65536;
    pub const TGIDS_WITH_CONNECTIONS: u32 = 16384;
    /// Calls whose chunks are being written (allocated as used).
    pub const CHUNK_LOOPS: u32 = 4096;
    /// Threads inside an mmap(2) of an executable mapping (an LRU).
    pub const MMAP_PENDING: u32 = 4096;
    /// The longest record the BPF programs reserve in the events ring, its 8-byte header
    /// included: user space maps this much of the ring's second copy (see core's
    /// `kernel::ring`), and the BPF side checks every record type against it when it compiles.
    pub const RING_RECORD_MAX: usize = 20 * 1024;
    /// Cgroups a run selects (`--container`, `--cgroup`): `SELECTED_CGROUPS`, one entry when
    /// none is selected.
    pub const SELECTED_CGROUPS: u32 = 1024;
    /// User space: processes whose identity (cgroup, container) the pipeline keeps at once.
    pub const PROCESS_IDENTITIES: usize = 16384;
    /// User space: containers the summary counts one by one.
    pub const CONTAINERS: usize = 4096;
    /// User space: ClientHellos kept (their socket and random), the oldest forgotten first
    /// (counted): a secret whose connection's ClientHello was forgotten is not tied by it.
    pub const HELLOS_KEPT: usize = 65536;
    /// User space: ClientHellos kept per socket (a socket carries one handshake, or a few
    /// when its fd is reused while an older secret still waits).
    pub const HELLOS_PER_SOCKET: usize = 4;
    /// User space: secrets without a client random (stripped BoringSSL) waiting for their
    /// handle's socket (its first call that moves data); past it the oldest is dropped,
    /// counted.
    pub const SECRETS_AWAITING_SOCKET: usize = 4096;
    /// Probed code addresses (file and offset, per program kind) a run attaches on a kernel
    /// without uprobe cookies: `ATTACH_IDS` (allocated as used). An attach point has an entry
    /// and up to a few exits.
    pub const CODE_ADDRESSES: u32 = 16384;
    /// Chunks the chunk chain (kernels without `bpf_loop`; ebpf/src/compat.rs) copies of one
    /// call at most: `CHUNK_LOOP_BOUND` × `CHUNK_DATA_MAX` bytes (4 MiB) of a single buffer;
    /// the rest is cut, counted (`stat::BYTES_CUT`).
    pub const CHUNK_LOOP_BOUND: u32 = 256;
    /// `--port` values the BPF side matches connections with (`AddressFilter`); a run with
    /// more matches its ports in user space only.
    pub const FILTER_PORTS: usize = 16;
    /// Addresses the BPF side matches connections with (`AddressFilter`): each `--host`
    /// address takes one, an IPv4 one two (also as IPv4-mapped IPv6); a run with more matches
    /// its hosts in user space only.
    pub const FILTER_HOSTS: usize = 16;
}

/// Header of a chunk record: one chunk of one TLS call's plaintext. The data follows the
/// header directly (`data_len` bytes valid).
///
/// A call of `call_len` bytes arrives as chunks at `offset` 0, `CHUNK_DATA_MAX`, ... until the
/// capture limit; (`tid`, `call_start_ns`) identifies the call they belong to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "records",
    derive(
        zerocopy::FromBytes,
        zerocopy::IntoBytes,
        zerocopy::KnownLayout,
        zerocopy::Immutable
    )
)]
pub struct ChunkHeader {
    /// [`record_kind::CHUNK`].
    pub kind: u32,
    /// [`chunk_flags`].
    pub flags: u32,
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
    /// Position of the call's first byte in its connection's stream, in its direction:
    /// the kernel counts every call, so a call lost whole shows as a gap.
    pub stream_offset: u64,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The BPF cookie of the attach point: index into user space's attach table.
    pub attach_id: u32,
    /// Bytes of data following this header.
    pub data_len: u32,
    /// The socket fd the call used (learnt from its syscalls, or remembered for the
    /// connection handle), -1 if unknown.
    pub fd: i32,
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

/// Address families as the kernel numbers them.
pub mod family {
    pub const UNIX: u16 = 1;
    pub const INET: u16 = 2;
    pub const INET6: u16 = 10;
}

/// A connection handle seen on a new fd: what that fd is, read from the kernel's socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "records",
    derive(
        zerocopy::FromBytes,
        zerocopy::IntoBytes,
        zerocopy::KnownLayout,
        zerocopy::Immutable
    )
)]
pub struct ConnectionRecord {
    /// [`record_kind::CONNECTION`].
    pub kind: u32,
    pub pid: u32,
    pub fd: i32,
    /// [`family`], or 0 when the fd is not a socket (or the kernel layout is unknown).
    pub family: u16,
    /// `SOCK_STREAM`, `SOCK_DGRAM`, ... (0 when unknown).
    pub socket_type: u16,
    /// The library's connection handle.
    pub connection: u64,
    /// The fd's inode number (names a unix socket in /proc/net/unix).
    pub inode: u64,
    pub ts_ns: u64,
    /// IPv4 in the first 4 bytes, or IPv6; network byte order.
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    /// Host byte order.
    pub local_port: u16,
    pub remote_port: u16,
    /// [`connection_flags`] of the handle.
    pub flags: u32,
}

/// A connection ended: its fd was closed, or the library's lifecycle function ran for its
/// handle. Carries the kernel's final byte counts: the truth for the connection's totals,
/// also when its last calls were lost.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "records",
    derive(
        zerocopy::FromBytes,
        zerocopy::IntoBytes,
        zerocopy::KnownLayout,
        zerocopy::Immutable
    )
)]
pub struct CloseRecord {
    /// [`record_kind::CLOSE`].
    pub kind: u32,
    pub pid: u32,
    /// The connection's fd, -1 if none was known.
    pub fd: i32,
    /// One of [`close_cause`].
    pub cause: u32,
    pub connection: u64,
    pub ts_ns: u64,
    /// Bytes the connection moved, per direction (write, read), as the kernel counted them.
    pub position: [u64; 2],
}

/// A process in scope started a program ([`record_kind::EXEC`]) or mapped a file executable
/// ([`record_kind::MAP`]): user space looks for TLS code in it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "records",
    derive(
        zerocopy::FromBytes,
        zerocopy::IntoBytes,
        zerocopy::KnownLayout,
        zerocopy::Immutable
    )
)]
pub struct ProcessRecord {
    pub kind: u32,
    pub pid: u32,
    pub ts_ns: u64,
}

/// An exec's record ([`record_kind::EXEC`]): a [`ProcessRecord`] followed by the process's
/// cgroup v2 id, so that user space knows its cgroup (and container) even when the process is
/// gone before it could read `/proc/PID/cgroup` (a short-lived curl). Readers of a plain
/// `ProcessRecord` read its prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "records",
    derive(
        zerocopy::FromBytes,
        zerocopy::IntoBytes,
        zerocopy::KnownLayout,
        zerocopy::Immutable
    )
)]
pub struct ExecRecord {
    pub kind: u32,
    pub pid: u32,
    pub ts_ns: u64,
    pub cgroup_id: u64,
}

/// A goroutine of a process: the key of the kernel's table of Go calls in flight. User space
/// removes the entries of processes that exited (their calls never return).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoroutineKey {
    /// The goroutine's `g` (R14 in Go's register ABI).
    pub goroutine: u64,
    pub tgid: u32,
    pub _padding: u32,
}

/// Bytes of a call in flight as the kernel keeps it (the value of its tables of calls): user
/// space only removes entries, and needs the size to name the map's type.
pub const ACTIVE_CALL_SIZE: usize = 56;

/// The key of the kernel's table of socket fds that belong to connections.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdKey {
    pub tgid: u32,
    pub fd: i32,
}

/// A connection handle in a process: the key of the kernel's connection table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionKey {
    pub connection: u64,
    pub tgid: u32,
    pub _padding: u32,
}

/// What the kernel side remembers of a connection handle.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionState {
    /// The socket fd, -1 until a call's syscall showed it. Calls served from the library's
    /// buffer (no syscall) use this.
    pub fd: i32,
    /// [`connection_flags`].
    pub flags: u32,
    /// Bytes moved so far, per direction: the stream offset of the next call.
    pub position: [u64; 2],
}

/// Byte offsets of the kernel struct members the BPF side follows from a task to a socket's
/// addresses (task->files->fdt->fd[fd]->private_data->sk). User space reads them from the
/// kernel's BTF at load time: this is CO-RE done by hand, as aya's BPF side has no relocations.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// 1 when every offset below was found.
    pub valid: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    pub fdtable_max_fds: u32,
    pub file_private_data: u32,
    pub file_inode: u32,
    pub inode_mode: u32,
    pub inode_ino: u32,
    pub socket_type: u32,
    pub socket_sk: u32,
    pub sock_family: u32,
    pub sock_daddr: u32,
    pub sock_rcv_saddr: u32,
    pub sock_dport: u32,
    pub sock_num: u32,
    pub sock_v6_daddr: u32,
    pub sock_v6_rcv_saddr: u32,
    /// `task_struct.signal` and `signal_struct.live` (threads not yet exiting): whether an
    /// exiting thread is its process's last.
    pub task_signal: u32,
    pub signal_live: u32,
}

/// A probed code address as a kernel without uprobe cookies lets a program see it: the key of
/// `ATTACH_IDS` (see `ebpf/src/compat.rs`), whose value is the attach id. `file_offset`
/// carries the program kind ([`code_kind`]) in its top byte: an entry and a lifecycle probe
/// may share an address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct CodeKey {
    /// The inode number of the mapped file (`inode.i_ino`, `st_ino`).
    pub inode: u64,
    /// The file offset of the probed instruction, with the kind in bits 56..64.
    pub file_offset: u64,
}

/// The program kinds of [`CodeKey`].
pub mod code_kind {
    pub const ENTRY: u64 = 1;
    pub const EXIT: u64 = 2;
    pub const END: u64 = 3;
    pub const SECRET: u64 = 4;
    /// Where the kind sits in `CodeKey::file_offset`.
    pub const SHIFT: u32 = 56;
}

/// Byte offsets the address fallback follows from the current task to the mapping of the
/// probed instruction (task->vmacache.vmas[i]->vm_file->f_inode->i_ino), read from the
/// kernel's BTF at load time (Linux 4.x-6.0 have the per-task VMA cache; see
/// `ebpf/src/compat.rs`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddressOffsets {
    /// `task_struct.vmacache` plus `vmacache.vmas`: the cache's four VMA pointers.
    pub task_vmacache_vmas: u32,
    pub vma_start: u32,
    pub vma_end: u32,
    pub vma_pgoff: u32,
    pub vma_file: u32,
    pub file_inode: u32,
    pub inode_ino: u32,
    pub _padding: u32,
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
    /// Calls that made socket syscalls on two different fds.
    pub const FD_MISMATCHES: u32 = 4;
    /// Calls whose data was captured but whose fd could not be learnt.
    pub const FD_UNKNOWN: u32 = 5;
    /// Connection and close records that found the ring buffer full.
    pub const RECORDS_LOST: u32 = 6;
    /// Calls not traced because their thread was already inside too many traced calls.
    pub const NESTING_OVERFLOWS: u32 = 7;
    /// Calls not traced because the table of threads (or, for Go, goroutines) in traced calls
    /// was full.
    pub const CALLS_NOT_STORED: u32 = 8;
    /// Calls whose entry was recorded but whose return was never seen (the thread left the
    /// function another way: longjmp, an exception, a thread cancelled).
    pub const RETURNS_MISSED: u32 = 9;
    /// Multi-chunk calls not captured because the table of chunk loops was full (their
    /// chunks and bytes are counted as lost too).
    pub const LOOPS_NOT_STORED: u32 = 10;
    /// New processes of traced processes not traced because the pid filter was full.
    pub const FILTER_FULL: u32 = 11;
    /// Connections whose fd was learnt from the socket syscalls their thread made next to the
    /// library's calls, not during one (libraries that buffer: Bun's BoringSSL writes into a
    /// corked buffer and reads from one filled before the call).
    pub const FD_INFERRED: u32 = 12;
    /// Calls of a connection without an fd whose thread's next socket write could have been
    /// another connection's: no fd was inferred from it.
    pub const FD_AMBIGUOUS: u32 = 13;
    /// TLS 1.3 records (of record-layer probes) whose padding went on beyond
    /// [`TLS13_PADDING_SCAN`](crate::TLS13_PADDING_SCAN) bytes: their type is unknown and
    /// their bytes are not captured (counted in `BYTES_UNSCANNED`).
    pub const RECORDS_UNSCANNED: u32 = 14;
    pub const BYTES_UNSCANNED: u32 = 15;
    /// Secret records that found the ring buffer full.
    pub const SECRETS_LOST: u32 = 16;
    /// Processes admitted into `TRACED_PIDS` at exec by the run's selection (`select`).
    pub const SELECTED_AT_EXEC: u32 = 17;
    /// Calls (and their bytes) longer than the bounded chunk loop copies, on a kernel without
    /// `bpf_loop` (`capacity::CHUNK_LOOP_BOUND` chunks): the rest of each is cut.
    pub const CALLS_CUT: u32 = 18;
    pub const BYTES_CUT: u32 = 19;
    /// Probe hits whose attach point could not be told from the code address, on a kernel
    /// without uprobe cookies (see `ebpf/src/compat.rs`): the call is not captured.
    pub const ADDRESS_UNKNOWN: u32 = 20;
    /// Calls (and their bytes) of connections whose addresses `--port`/`--host` do not
    /// select (`AddressFilter`): not copied.
    pub const CALLS_NOT_SELECTED: u32 = 21;
    pub const BYTES_NOT_SELECTED: u32 = 22;
    /// Number of counters.
    pub const COUNT: u32 = 23;
}

const _: () = assert!(core::mem::size_of::<ProbeSpec>() == 40);
const _: () = assert!(core::mem::size_of::<AddressFilter>() == 32 + 256 + 8);
// The BPF side reads a ConnectionRecord's addresses as u64 words (`socket::selected`).
const _: () = assert!(core::mem::offset_of!(ConnectionRecord, local_addr) % 8 == 0);
const _: () = assert!(core::mem::offset_of!(ConnectionRecord, remote_addr) % 8 == 0);
const _: () = assert!(core::mem::size_of::<ConnectionState>() == 24);
const _: () = assert!(core::mem::size_of::<ChunkHeader>() == 96);
const _: () = assert!(core::mem::size_of::<SecretSpec>() == 24);
const _: () = assert!(core::mem::size_of::<SecretRecord>() == 208);
const _: () = assert!(core::mem::size_of::<HelloRecord>() == 56);
const _: () = assert!(core::mem::size_of::<Chunk<256>>() == 96 + 256);
const _: () = assert!(core::mem::size_of::<ConnectionRecord>() == 80);
const _: () = assert!(core::mem::size_of::<CloseRecord>() == 48);
const _: () = assert!(core::mem::size_of::<ProcessRecord>() == 16);
const _: () = assert!(core::mem::size_of::<ExecRecord>() == 24);
const _: () = assert!(core::mem::size_of::<ConnectionKey>() == 16);
const _: () = assert!(core::mem::size_of::<GoroutineKey>() == 16);
const _: () = assert!(core::mem::size_of::<FdKey>() == 8);
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 80);
const _: () = assert!(core::mem::size_of::<CodeKey>() == 16);
const _: () = assert!(core::mem::size_of::<AddressOffsets>() == 32);

/// Reads a record from the start of `bytes`, if it is long enough. The ring buffer gives no
/// alignment: the record is copied out.
#[cfg(feature = "records")]
pub fn read_record<T: zerocopy::FromBytes>(bytes: &[u8]) -> Option<T> {
    T::read_from_prefix(bytes).ok().map(|(record, _)| record)
}

/// The bytes of a record as the kernel side writes it into the ring buffer: the inverse of
/// [`read_record`], for replays of the data path (tests, examples).
#[cfg(feature = "records")]
pub fn record_bytes<T: zerocopy::IntoBytes + zerocopy::Immutable>(value: &T) -> &[u8] {
    value.as_bytes()
}

#[cfg(feature = "records")]
impl ChunkHeader {
    /// Reads a chunk header and its data from a ring buffer record.
    pub fn read_from(record: &[u8]) -> Option<(ChunkHeader, &[u8])> {
        let header: ChunkHeader = read_record(record)?;
        let rest = &record[core::mem::size_of::<ChunkHeader>()..];
        let data_len = (header.data_len as usize).min(rest.len());
        Some((header, &rest[..data_len]))
    }
}

// SAFETY: ProbeSpec is repr(C), has explicit padding and only integer fields: every bit
// pattern is valid and there are no uninitialised bytes.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ProbeSpec {}
// SAFETY: SecretSpec is repr(C), has explicit padding and only integer fields.
#[cfg(feature = "user")]
unsafe impl aya::Pod for SecretSpec {}
// SAFETY: KernelOffsets is repr(C) and made of u32 fields only.
#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelOffsets {}
// SAFETY: repr(C), integer fields and explicit padding only.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ConnectionKey {}
// SAFETY: repr(C), integer fields and explicit padding only.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ConnectionState {}
// SAFETY: repr(C), integer fields and explicit padding only.
#[cfg(feature = "user")]
unsafe impl aya::Pod for GoroutineKey {}
// SAFETY: repr(C), two 4-byte integers.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FdKey {}
// SAFETY: repr(C), two 8-byte integers.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CodeKey {}
// SAFETY: repr(C), u32 fields only.
#[cfg(feature = "user")]
unsafe impl aya::Pod for AddressOffsets {}
// SAFETY: repr(C), only integers and arrays of them, no padding (size checked above).
#[cfg(feature = "user")]
unsafe impl aya::Pod for AddressFilter {}
