//! probectl's kernel side: ONE uprobe and ONE uretprobe program serve every probe spec of every
//! library (plus one plain uprobe for the exit points of emulated placements, see
//! core/src/plan/placement.rs). What differs per attach point (which register holds the buffer,
//! where the length comes from, ...) is read from `PROBE_SPECS`, indexed by the attach point's
//! BPF cookie.
#![no_std]
#![no_main]
// Atomic adds for the counters: the bpfel target's core has no AtomicU64::fetch_add.
#![allow(internal_features)]
#![feature(core_intrinsics)]
// aya-ebpf's map methods take `impl Borrow<K>`: a reference keeps the key where it already is
// instead of copying it into another stack slot, and 6.1's combined stack limit is spent to the
// byte (see `emit_connection`).
#![allow(clippy::needless_borrows_for_generic_args)]

mod arch;
mod compat;
mod hello;
mod socket;

use core::ffi::c_void;

use compat::{ADDRESS, BOUNDED, FAST};

use aya_ebpf::{
    bindings::{pt_regs, BPF_F_NO_PREALLOC},
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        bpf_loop, bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{bpf_get_current_cgroup_id, bpf_probe_read_user as probe_read_user_raw},
    },
    macros::{map, raw_tracepoint, tracepoint, uprobe, uretprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext, TracePointContext},
    EbpfContext,
};
use probectl_common::{
    abi, capacity, chunk_flags, close_cause, code_kind, connection_flags, direction, length_source,
    record_kind, return_width, secret_flags, select, stat, Chunk, ChunkHeader, CloseRecord,
    ConnectionKey, ConnectionState, ExecRecord, FdKey, GoroutineKey, KernelOffsets, ProbeSpec,
    ProcessRecord, SecretRecord, SecretSpec, ARG_NONE, CHUNK_CLASSES, CHUNK_DATA_MAX,
    MAX_ARGUMENTS, NO_FIELD, SECRET_LABEL_MAX, SECRET_MAX, SECRET_RANDOM_MAX, TLS13_PADDING_SCAN,
    TLS_APPLICATION_DATA, VECTOR_MAX_ENTRIES,
};

/// Capture limit per call, in bytes; set by user space at load time.
#[no_mangle]
static MAX_CAPTURE_BYTES: u64 = CHUNK_DATA_MAX as u64;
/// 1 when only the processes in `TRACED_PIDS` are traced; set by user space at load time.
#[no_mangle]
static FILTER_BY_PID: u8 = 0;
/// 1 when a spec of the run has `abi = "go"`: socket syscalls then look for a Go call of
/// their goroutine waiting for its fd; set by user space at load time.
#[no_mangle]
static TRACES_GO: u8 = 0;
/// What a process that starts a program must match to be traced from then on (`select`
/// bits; 0: nothing is admitted at exec); set by user space at load time. The selection is
/// made here, at exec, once per program, and not on the probes: a process outside it never
/// enters `TRACED_PIDS`, and its calls cost only the trap.
#[no_mangle]
static SELECT_AT_EXEC: u8 = 0;
/// The command name `select::COMM` asks for, NUL-padded; set by user space at load time.
#[no_mangle]
static SELECT_COMM: [u8; 16] = [0; 16];
/// Offsets of `pid` and `clone_flags` in the task_newtask tracepoint record (formats vary
/// between kernels); set by user space from the tracepoint's format file.
#[no_mangle]
static NEWTASK_PID_OFFSET: u32 = 8;
#[no_mangle]
static NEWTASK_FLAGS_OFFSET: u32 = 32;

/// clone(2) flag of a new thread (as opposed to a new process).
const CLONE_THREAD: u64 = 0x10000;
/// mmap(2) protection flag of executable mappings.
const PROT_EXEC: u64 = 4;
/// Unread bytes in the ring buffer from which a record wakes the reader; set by user space.
/// Below it records are submitted without a wakeup: waking the reader for every record costs
/// more than the rest of the probe, and the reader also drains the ring on a short timer.
#[no_mangle]
static WAKEUP_BYTES: u64 = 1 << 20;

/// bpf_ringbuf_query / bpf_ringbuf_submit flags (linux/bpf.h).
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Submit flags for a record: wake the reader only when the ring is filling up.
#[inline(always)]
fn wakeup_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= read_config(&WAKEUP_BYTES) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Kernel struct layout for reading a socket's addresses; set by user space from BTF.
#[no_mangle]
static KERNEL_OFFSETS: KernelOffsets = KernelOffsets {
    valid: 0,
    task_files: 0,
    files_fdt: 0,
    fdtable_fd: 0,
    fdtable_max_fds: 0,
    file_private_data: 0,
    file_inode: 0,
    inode_mode: 0,
    inode_ino: 0,
    socket_type: 0,
    socket_sk: 0,
    sock_family: 0,
    sock_daddr: 0,
    sock_rcv_saddr: 0,
    sock_dport: 0,
    sock_num: 0,
    sock_v6_daddr: 0,
    sock_v6_rcv_saddr: 0,
    task_signal: 0,
    signal_live: 0,
};

/// attach_id (BPF cookie) -> what to read at that attach point.
#[map]
static PROBE_SPECS: Array<ProbeSpec> = Array::with_max_entries(capacity::ATTACH_POINTS, 0);

/// attach_id (BPF cookie) -> what a secret probe reads (`probectl_secret`); the entries of
/// other attach points are unused.
#[map]
static SECRET_SPECS: Array<SecretSpec> = Array::with_max_entries(capacity::ATTACH_POINTS, 0);

/// Processes (tgids) to trace when `FILTER_BY_PID` is set.
#[map]
static TRACED_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(capacity::TRACED_PIDS, 0);

/// The cgroups (v2 ids) whose processes `select::CGROUP` admits at exec: one entry when the
/// run selects none.
#[map]
static SELECTED_CGROUPS: HashMap<u64, u8> =
    HashMap::with_max_entries(capacity::SELECTED_CGROUPS, 0);

/// A traced call between its entry and its return.
#[repr(C)]
#[derive(Clone, Copy)]
struct ActiveCall {
    /// Stack pointer at entry. On x86-64 the return leaves the stack pointer 8 bytes above
    /// it (the return address is popped): that is how a return finds its own entry, also when
    /// traced calls nest (node calls SSL_write from inside SSL_read, in a callback).
    stack_pointer: u64,
    start_ns: u64,
    connection: u64,
    buffer: u64,
    length_pointer: u64,
    /// Entries of the buffer list, for specs whose buffer is a list.
    vector_count: u64,
    /// The fd of the first socket syscall the call made, -1 before any.
    fd: i32,
    /// `FD_MISMATCH`: a later syscall of the call used another fd; `FD_INFERRED`: `fd` was
    /// inferred from the thread's syscalls next to the call (`infer_read_fd`);
    /// `RECORD_TLS13`: the call opens a TLS 1.3 record, whose plaintext ends in its inner
    /// content type and padding. One field, not several: a bigger ActiveCall takes the exit
    /// program over 6.1's combined stack limit.
    fd_flags: u32,
}

/// Bits of `ActiveCall::fd_flags`.
const FD_MISMATCH: u32 = 1;
const FD_INFERRED: u32 = 2;
const RECORD_TLS13: u32 = 4;

const _: () = assert!(core::mem::size_of::<ActiveCall>() == probectl_common::ACTIVE_CALL_SIZE);

/// Traced calls a thread can be inside at once (nested through callbacks).
const MAX_NESTING: usize = 4;

/// The slot of `ThreadCalls::calls` for a computed nesting index, bounded so that every
/// verifier sees it: the volatile read hides the value from LLVM, which would otherwise drop
/// the mask as redundant (the index is known to be below `MAX_NESTING`), and older verifiers
/// (6.1) cannot bound `depth - 1` from `depth != 0` by themselves.
#[inline(always)]
fn nesting_slot(index: usize) -> usize {
    // SAFETY: reads a local that lives for the call.
    unsafe { core::ptr::read_volatile(&index) & (MAX_NESTING - 1) }
}

/// A thread's traced calls in flight, innermost last. One map entry per thread that stays
/// between calls: entering and returning cost one lookup each, no insert or delete.
#[repr(C)]
#[derive(Clone, Copy)]
struct ThreadCalls {
    depth: u32,
    /// 1 + the fd of the thread's last read-family socket syscall made outside traced calls
    /// since its last traced call returned (0: none; so that an all-zero entry, the initial
    /// value, has none): where a read call that makes no syscall of its own got its bytes
    /// from (see `infer_read_fd`).
    read_socket: i32,
    /// The handle of a write call that returned without a known fd, waiting for the thread's
    /// next socket write (0: none; see `infer_write_fd`).
    pending_write: u64,
    /// 1 when write calls of two handles were waiting: the next write cannot tell whose.
    pending_ambiguous: u32,
    _padding: u32,
    calls: [ActiveCall; MAX_NESTING],
}

/// pid_tgid -> the thread's calls in flight. Not an LRU: an evicted entry would lose calls
/// silently. An entry is removed when its thread exits (`probectl_thread_exit`); a full table
/// is counted (`stat::CALLS_NOT_STORED`).
#[map]
static THREADS: HashMap<u64, ThreadCalls> =
    HashMap::with_max_entries(capacity::THREADS, BPF_F_NO_PREALLOC);

/// (goroutine, tgid) -> the goroutine's traced call in flight (specs with `abi::GO`). Keyed by
/// goroutine, not thread: a goroutine blocked in `Read` resumes on another thread, and Go
/// moves a goroutine's stack when it grows, so neither the thread nor the stack pointer
/// identifies the call at its return. The entry goes at the return; one left by a call that
/// never returned is replaced at the goroutine's next call (counted); those of a process that
/// exited are removed by user space when it hears of the exit. Not an LRU: a full table is
/// counted (`stat::CALLS_NOT_STORED`).
#[map]
static GOROUTINES: HashMap<GoroutineKey, ActiveCall> =
    HashMap::with_max_entries(capacity::GOROUTINES, BPF_F_NO_PREALLOC);

/// (goroutine, tgid) -> the `start_ns` of the goroutine's Go call that has made no socket
/// syscall yet: the goroutine's next socket syscall, on whatever thread, tells that call's fd
/// (a `Read` that finds no data gets EAGAIN before it parks). Keyed by goroutine, not thread:
/// Go may preempt a goroutine between the call's entry and its syscall and run another one
/// that enters a call on the same thread. The entry is consumed by that syscall, or removed
/// at the call's return (a call served from crypto/tls's buffer makes none); those of a
/// process that exited are removed by user space.
#[map]
static GO_PENDING_FDS: HashMap<GoroutineKey, u64> =
    HashMap::with_max_entries(capacity::GO_PENDING_FDS, BPF_F_NO_PREALLOC);

/// (handle, tgid) -> the connection's fd and stream positions. An LRU, because processes that
/// exit without closing leave entries behind; an evicted connection restarts at offset 0,
/// which user space notices and counts.
#[map]
static CONNECTIONS: LruHashMap<ConnectionKey, ConnectionState> =
    LruHashMap::with_max_entries(capacity::CONNECTIONS, 0);

/// Processes (tgids) with an entry in `CONNECTIONS`: the ones whose exit user space is told
/// (`record_kind::EXIT`, from `probectl_thread_exit`), so that their connections end even if
/// they never closed them. An LRU: an evicted process's connections end at probectl's end
/// instead, counted as open.
#[map]
static TGIDS_WITH_CONNECTIONS: LruHashMap<u32, u8> =
    LruHashMap::with_max_entries(capacity::TGIDS_WITH_CONNECTIONS, 0);

/// (tgid, fd) -> connection handle: lets close() end the connection.
#[map]
static SOCKET_FDS: LruHashMap<FdKey, u64> = LruHashMap::with_max_entries(capacity::SOCKET_FDS, 0);

/// pid_tgid -> the state of the thread's chunk loop (see `probectl_return`). Per thread, not
/// per CPU: uprobe programs run with migration disabled but can be preempted, so two loops
/// can interleave on one CPU.
#[map]
pub(crate) static CHUNK_LOOPS: HashMap<u64, ChunkLoop> =
    HashMap::with_max_entries(capacity::CHUNK_LOOPS, BPF_F_NO_PREALLOC);

/// One all-zero `ThreadCalls`: the initial value of new `THREADS` entries.
#[map]
static THREAD_CALLS_ZERO: Array<ThreadCalls> = Array::with_max_entries(1, 0);

/// One all-zero `ChunkLoop`: the initial value of new `CHUNK_LOOPS` entries.
#[map]
static CHUNK_LOOP_ZERO: Array<ChunkLoop> = Array::with_max_entries(1, 0);

/// pid_tgid of threads inside an mmap(2) of an executable file mapping.
#[map]
static MMAP_PENDING: LruHashMap<u64, u8> = LruHashMap::with_max_entries(capacity::MMAP_PENDING, 0);

/// The chunks of every call; user space reassembles them. Size set by user space.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Reserves a record of type `T` in [`EVENTS`]. Every record goes through here so that its size
/// is checked against what user space maps past the ring's end (`RING_RECORD_MAX`, header
/// included) when this crate compiles.
#[inline(always)]
fn reserve<T: 'static>() -> Option<aya_ebpf::maps::ring_buf::RingBufEntry<T>> {
    const {
        assert!(
            core::mem::size_of::<T>() + 8 <= capacity::RING_RECORD_MAX,
            "a ring record longer than RING_RECORD_MAX"
        )
    };
    EVENTS.reserve::<T>(0)
}

/// Per-CPU counters indexed by `probectl_common::stat`.
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

#[inline(always)]
pub(crate) fn count(index: u32, by: u64) {
    if let Some(counter) = STATS.get_ptr_mut(index) {
        // SAFETY: a valid, aligned u64 of this CPU's slot. Another program can preempt this
        // one on the same CPU and update the same slot: the add is atomic (BPF_ATOMIC), so
        // none is lost.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                counter, by,
            )
        };
    }
}

/// True when the current process is to be traced.
#[inline(always)]
fn in_scope(tgid: u32) -> bool {
    // SAFETY: the value is only tested for presence.
    read_config(&FILTER_BY_PID) == 0 || unsafe { TRACED_PIDS.get(&tgid) }.is_some()
}

#[inline(always)]
fn read_config<T: Copy>(value: &T) -> T {
    // SAFETY: the static is a valid T; the volatile read stops the compiler from folding the
    // value user space sets at load time into the default.
    unsafe { core::ptr::read_volatile(value) }
}

/// The attach point's spec and, in the `ADDRESS` mode, its id (see compat.rs; the other modes
/// read the id from the cookie where they need it, so that the fast programs keep nothing more
/// on their stack). `kind` is the program's `code_kind`.
#[inline(always)]
fn spec_for<const MODE: u8>(ctx: &ProbeContext, kind: u64) -> Option<(ProbeSpec, u32)> {
    let id = if MODE == ADDRESS {
        let id = compat::attach_id_at(compat::probed_address(ctx), kind);
        if id == compat::NO_ID {
            return None;
        }
        id
    } else {
        // SAFETY: the context is a valid uprobe context; the helper only reads the link's
        // cookie.
        unsafe { bpf_get_attach_cookie(ctx.as_ptr()) }
    };
    PROBE_SPECS
        .get(id as u32)
        .copied()
        .map(|spec| (spec, id as u32))
}

/// The attach id of the program's attach point: its cookie, or what `spec_for` found (in the
/// fallback modes: asking for the cookie again there costs the exit program a stack slot, over
/// 6.1's combined limit).
#[inline(always)]
fn attach_id_of<const MODE: u8>(ctx: &ProbeContext, found: u32) -> u64 {
    if MODE != FAST {
        u64::from(found)
    } else {
        // SAFETY: the context is a valid uprobe context; the helper only reads the cookie.
        unsafe { bpf_get_attach_cookie(ctx.as_ptr()) }
    }
}

use arch::{argument_registers, Registers};

#[inline(always)]
fn select_arg(registers: &Registers, index: u8) -> u64 {
    match index {
        0 => registers[0],
        1 => registers[1],
        2 => registers[2],
        3 => registers[3],
        4 => registers[4],
        5 => registers[5],
        6 => registers[6],
        7 => registers[7],
        8 => registers[8],
        _ => 0,
    }
}

/// Argument `index` of a call, at its entry: a register, or (C, past the architecture's
/// register arguments) the stack, where the caller left it (`arch::stack_argument`).
/// `entry_sp` is the stack pointer at the function's first instruction.
#[inline(always)]
fn argument(spec: &ProbeSpec, registers: &Registers, entry_sp: u64, index: u8) -> u64 {
    if arch::in_register(spec.abi, index) || index as usize >= MAX_ARGUMENTS {
        return select_arg(registers, index);
    }
    arch::stack_argument(entry_sp, index)
}

/// What a record-layer call's additional data (the record header) says: whether the record
/// is application data, and of which TLS version.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Record {
    /// Not application data (handshake, alert, change cipher spec), or no TLS record at all
    /// (another use of the same AEAD): not captured.
    Other,
    /// TLS 1.0 to 1.2: the header says the type; the plaintext is all data.
    Plain,
    /// TLS 1.3: the header says "application data" for every record; the real type ends the
    /// plaintext, followed by zero padding.
    Tls13,
}

/// Reads and checks the record header a record-layer call authenticates (see
/// `ProbeSpec::record_ad_arg`): 13 bytes (sequence number, type, version, length) up to TLS
/// 1.2, 5 bytes (opaque type 23, legacy version 3.3, length) in TLS 1.3.
#[inline(always)]
fn record_of(spec: &ProbeSpec, registers: &Registers, entry_sp: u64) -> Record {
    let ad = argument(spec, registers, entry_sp, spec.record_ad_arg);
    let ad_length = argument(spec, registers, entry_sp, spec.record_ad_length_arg);
    if ad_length == 13 {
        // SAFETY: bpf_probe_read_user checks the address; a bad one is an error.
        let Ok(header) = (unsafe { bpf_probe_read_user(ad as *const [u8; 13]) }) else {
            return Record::Other;
        };
        if header[8] == TLS_APPLICATION_DATA && header[9] == 3 && header[10] <= 3 {
            return Record::Plain;
        }
    } else if ad_length == 5 {
        // SAFETY: as above.
        let Ok(header) = (unsafe { bpf_probe_read_user(ad as *const [u8; 5]) }) else {
            return Record::Other;
        };
        if header[0] == TLS_APPLICATION_DATA && header[1] == 3 && header[2] == 3 {
            return Record::Tls13;
        }
    }
    Record::Other
}

/// Not application data: what `tls13_content` returns for another record type.
const NOT_DATA: u64 = u64::MAX;
/// Padding beyond the scan: the record's type is unknown.
const UNSCANNED: u64 = u64::MAX - 1;

/// The application data of a TLS 1.3 record's plaintext (`TLSInnerPlaintext`: content, the
/// content type, zero padding): its length, or `NOT_DATA`, or `UNSCANNED` (counted). A BPF
/// function of its own: its loop and frame stay out of the calling programs' stack.
#[inline(never)]
fn tls13_content(buffer: u64, length: u64) -> u64 {
    let mut back = 0;
    while back < TLS13_PADDING_SCAN {
        if back >= length {
            // All zeros: no type at all, not a valid record.
            return NOT_DATA;
        }
        let at = buffer + (length - 1 - back);
        // SAFETY: bpf_probe_read_user checks the address; a bad one is an error.
        let Ok(byte) = (unsafe { bpf_probe_read_user(at as *const u8) }) else {
            count(stat::READ_FAULTS, 1);
            return NOT_DATA;
        };
        if byte != 0 {
            return if byte == TLS_APPLICATION_DATA {
                length - 1 - back
            } else {
                NOT_DATA
            };
        }
        back += 1;
    }
    count(stat::RECORDS_UNSCANNED, 1);
    count(stat::BYTES_UNSCANNED, length);
    UNSCANNED
}

/// The spec's call filter (see `ProbeSpec::filter_arg`): follows at most two pointers from an
/// argument and compares a 4-byte value. Unreadable memory fails the filter.
#[inline(always)]
fn filter_passes(spec: &ProbeSpec, registers: &Registers) -> bool {
    let mut address = select_arg(registers, spec.filter_arg);
    let offsets = spec.filter_pointer_offsets;
    for (index, offset) in offsets.iter().enumerate() {
        if index >= spec.filter_pointers as usize {
            break;
        }
        let at = address.wrapping_add(*offset as i64 as u64);
        // SAFETY: bpf_probe_read_user checks the address; a bad one returns an error.
        match unsafe { bpf_probe_read_user(at as *const u64) } {
            Ok(pointer) => address = pointer,
            Err(_) => return false,
        }
    }
    let at = address.wrapping_add(spec.filter_value_offset as i64 as u64);
    // SAFETY: as above.
    match unsafe { bpf_probe_read_user(at as *const u32) } {
        Ok(value) => value == spec.filter_equals,
        Err(_) => false,
    }
}

#[uprobe]
pub fn probectl_entry(ctx: ProbeContext) -> u32 {
    entry::<FAST>(ctx)
}

/// `probectl_entry` for kernels without `bpf_loop` (see compat.rs).
#[uprobe]
pub fn probectl_entry_bounded(ctx: ProbeContext) -> u32 {
    entry::<BOUNDED>(ctx)
}

/// `probectl_entry` for kernels without uprobe cookies (see compat.rs).
#[uprobe]
pub fn probectl_entry_address(ctx: ProbeContext) -> u32 {
    entry::<ADDRESS>(ctx)
}

#[inline(always)]
fn entry<const MODE: u8>(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !in_scope((pid_tgid >> 32) as u32) {
        return 0;
    }
    let Some((spec, id)) = spec_for::<MODE>(&ctx, code_kind::ENTRY) else {
        return 0;
    };
    let probed_sp = arch::stack_pointer(ctx.regs);
    // Keyed by the stack pointer at the function's first instruction, wherever the entry
    // point is (an emulated placement probes a few instructions in, after the prologue).
    let stack_pointer = probed_sp.wrapping_sub(spec.entry_stack_offset as i64 as u64);
    let registers = argument_registers(&ctx, spec.abi);
    if spec.filter_arg != ARG_NONE && !filter_passes(&spec, &registers) {
        return 0;
    }
    if spec.abi == abi::GO {
        let goroutine = arch::goroutine(ctx.regs);
        go_entered(&spec, &registers, pid_tgid, goroutine);
        return 0;
    }
    let record = if spec.record_ad_arg == ARG_NONE {
        Record::Plain
    } else {
        record_of(&spec, &registers, stack_pointer)
    };
    if record == Record::Other {
        return 0;
    }
    let Some(threads) = thread_calls(pid_tgid) else {
        count(stat::CALLS_NOT_STORED, 1);
        return 0;
    };
    // SAFETY: pointer from a successful map lookup, valid for this program run.
    let threads = unsafe { &mut *threads };
    let connection = argument(&spec, &registers, stack_pointer, spec.connection_arg);
    let buffer = argument(&spec, &registers, stack_pointer, spec.buffer_arg);
    if spec.length_source == length_source::ENTRY_ARGUMENT {
        // The call's input, captured now: the call may overwrite it (in-place encryption).
        let mut length = argument(&spec, &registers, stack_pointer, spec.length_arg);
        if record == Record::Tls13 {
            length = tls13_content(buffer, length);
            if length >= UNSCANNED {
                return 0;
            }
        }
        if length == 0 {
            return 0;
        }
        let call = ActiveCall {
            stack_pointer,
            // SAFETY: helper without preconditions.
            start_ns: unsafe { bpf_ktime_get_ns() },
            connection,
            buffer,
            length_pointer: 0,
            vector_count: 0,
            fd: -1,
            fd_flags: 0,
        };
        let cookie = attach_id_of::<MODE>(&ctx, id);
        return emit_call::<MODE>(&ctx, cookie, &spec, &call, pid_tgid, length);
    }
    let length_pointer = if spec.length_source == length_source::OUT_POINTER {
        argument(&spec, &registers, stack_pointer, spec.length_arg)
    } else {
        0
    };
    // Frames at or below our stack pointer cannot be calls we run inside: their return was
    // missed (a longjmp, say). Drop them, counted.
    // Slots are visited with constant indexes, innermost first: older verifiers (6.1) cannot
    // bound a computed index such as `depth - 1` (see `nesting_slot`) inside a loop.
    let mut depth = (threads.depth as usize).min(MAX_NESTING);
    for slot in (0..MAX_NESTING).rev() {
        if depth == slot + 1 && threads.calls[slot].stack_pointer <= stack_pointer {
            depth = slot;
            count(stat::RETURNS_MISSED, 1);
        }
    }
    if depth >= MAX_NESTING {
        count(stat::NESTING_OVERFLOWS, 1);
        threads.depth = depth as u32;
        return 0;
    }
    threads.calls[depth & (MAX_NESTING - 1)] = ActiveCall {
        stack_pointer,
        // SAFETY: helper without preconditions.
        start_ns: unsafe { bpf_ktime_get_ns() },
        connection,
        buffer,
        length_pointer,
        vector_count: if spec.vector_count_arg == ARG_NONE {
            0
        } else {
            argument(&spec, &registers, stack_pointer, spec.vector_count_arg)
        },
        fd: -1,
        fd_flags: (if record == Record::Tls13 {
            RECORD_TLS13
        } else {
            0
        }) | if MODE == FAST {
            0
        } else {
            // The return program's way to the spec (see compat::ID_SHIFT).
            (attach_id_of::<MODE>(&ctx, id) as u32) << compat::ID_SHIFT
        },
    };
    threads.depth = depth as u32 + 1;
    0
}

/// The thread's entry of calls in flight, created (empty) if needed.
#[inline(always)]
fn thread_calls(pid_tgid: u64) -> Option<*mut ThreadCalls> {
    if let Some(threads) = THREADS.get_ptr_mut(&pid_tgid) {
        return Some(threads);
    }
    // The initial value comes from a map, not the stack: a ThreadCalls on the stack takes the
    // entry program over the verifier's combined stack limit on 6.1. All zero is a thread in
    // no call (each slot is written whole when a call enters).
    let empty = THREAD_CALLS_ZERO.get_ptr(0)?;
    // SAFETY: a pointer from a successful map lookup, valid for this program run.
    let _ = THREADS.insert(&pid_tgid, unsafe { &*empty }, 0);
    THREADS.get_ptr_mut(&pid_tgid)
}

/// The entry of a Go call: one call in flight per goroutine (Go's crypto/tls calls do not nest).
#[inline(always)]
fn go_entered(spec: &ProbeSpec, registers: &Registers, pid_tgid: u64, goroutine: u64) {
    let tgid = (pid_tgid >> 32) as u32;
    let key = GoroutineKey {
        goroutine,
        tgid,
        _padding: 0,
    };
    let call = ActiveCall {
        stack_pointer: 0,
        // SAFETY: helper without preconditions.
        start_ns: unsafe { bpf_ktime_get_ns() },
        connection: select_arg(registers, spec.connection_arg),
        buffer: select_arg(registers, spec.buffer_arg),
        length_pointer: 0,
        vector_count: if spec.vector_count_arg == ARG_NONE {
            0
        } else {
            select_arg(registers, spec.vector_count_arg)
        },
        fd: -1,
        fd_flags: 0,
    };
    // SAFETY: the value is copied out at once.
    if let Some(previous) = unsafe { GOROUTINES.get(&key) }.copied() {
        // The same call entered again: a Go function whose stack must grow first calls
        // runtime.morestack, which re-runs it from its first instruction. Anything else is a
        // call that never returned (a panic unwound through it).
        if previous.connection != call.connection || previous.buffer != call.buffer {
            count(stat::RETURNS_MISSED, 1);
        }
    }
    if GOROUTINES.insert(&key, &call, 0).is_err() {
        count(stat::CALLS_NOT_STORED, 1);
        return;
    }
    // Its process's exit is told to user space, which removes what the process left here.
    // SAFETY: the value is only tested for presence.
    if unsafe { TGIDS_WITH_CONNECTIONS.get(&tgid) }.is_none() {
        let _ = TGIDS_WITH_CONNECTIONS.insert(&tgid, &1, 0);
    }
    // A full table only costs the fd (counted as unknown at the return).
    let _ = GO_PENDING_FDS.insert(&key, &call.start_ns, 0);
}

/// A socket syscall of a goroutine with a Go call waiting for its fd: that call's fd. The
/// goroutine is the one in R14 of the user registers saved at the syscall (Go's syscall paths
/// do not touch R14); a syscall of another goroutine, or of a thread that is not Go's (R14 is
/// then anything), finds no pending call.
///
/// `regs` is the syscall's saved user registers, sys_enter's first argument: the same
/// `task_pt_regs(current)` that `bpf_task_pt_regs` (Linux 5.15) would give, on every kernel.
#[inline(always)]
fn go_syscall_fd(pid_tgid: u64, fd: i32, regs: *const pt_regs) {
    if read_config(&TRACES_GO) == 0 {
        return;
    }
    // SAFETY: bpf_probe_read_kernel checks the address.
    let goroutine = unsafe {
        bpf_probe_read_kernel((regs as u64 + arch::GOROUTINE_OFFSET as u64) as *const u64)
    };
    let Ok(goroutine) = goroutine else {
        return;
    };
    let key = GoroutineKey {
        goroutine,
        tgid: (pid_tgid >> 32) as u32,
        _padding: 0,
    };
    // SAFETY: the value is copied out at once.
    let Some(start_ns) = (unsafe { GO_PENDING_FDS.get(&key) }).copied() else {
        return;
    };
    let _ = GO_PENDING_FDS.remove(&key);
    let Some(call) = GOROUTINES.get_ptr_mut(&key) else {
        return;
    };
    // SAFETY: pointer from a successful map lookup, valid for this program run.
    let call = unsafe { &mut *call };
    if call.start_ns == start_ns && call.fd < 0 {
        call.fd = fd;
    }
}

#[uretprobe]
pub fn probectl_return(ctx: RetProbeContext) -> u32 {
    let (sp, rax) = (arch::stack_pointer(ctx.regs), arch::return_value(ctx.regs));
    // SAFETY: the context is a valid uprobe context; the helper only reads the link's cookie.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    // The entry stack pointer, less what the return popped (x86-64's return address).
    call_returned::<FAST>(&ctx, cookie, sp.wrapping_sub(arch::RETURN_POPS), rax)
}

/// `probectl_return` for the fallback modes (see compat.rs): the spec's id comes from the
/// call's entry, for both (a uretprobe has no probed address of its own).
#[uretprobe]
pub fn probectl_return_bounded(ctx: RetProbeContext) -> u32 {
    let (sp, rax) = (arch::stack_pointer(ctx.regs), arch::return_value(ctx.regs));
    call_returned::<BOUNDED>(&ctx, 0, sp.wrapping_sub(arch::RETURN_POPS), rax)
}

/// A plain uprobe on an exit point of an emulated placement (see core/src/plan/placement.rs): an
/// instruction after which the return value is final, at a known stack offset.
#[uprobe]
pub fn probectl_exit(ctx: ProbeContext) -> u32 {
    exit::<FAST>(ctx)
}

/// `probectl_exit` for kernels without `bpf_loop` (see compat.rs).
#[uprobe]
pub fn probectl_exit_bounded(ctx: ProbeContext) -> u32 {
    exit::<BOUNDED>(ctx)
}

/// `probectl_exit` for kernels without uprobe cookies (see compat.rs).
#[uprobe]
pub fn probectl_exit_address(ctx: ProbeContext) -> u32 {
    exit::<ADDRESS>(ctx)
}

#[inline(always)]
fn exit<const MODE: u8>(ctx: ProbeContext) -> u32 {
    let (sp, rax) = (arch::stack_pointer(ctx.regs), arch::return_value(ctx.regs));
    let Some((spec, id)) = spec_for::<MODE>(&ctx, code_kind::EXIT) else {
        return 0;
    };
    let cookie = attach_id_of::<MODE>(&ctx, id);
    let pid_tgid = bpf_get_current_pid_tgid();
    // One emit_call site per program: each inlined copy adds to the verifier's work and stack.
    let call = if spec.abi == abi::GO {
        // A `ret` of a Go function: the call is the goroutine's (R14 on x86-64, R28 on arm64),
        // whatever the thread or the stack pointer now.
        go_call_returned(pid_tgid, arch::goroutine(ctx.regs))
    } else {
        thread_call_returned(
            pid_tgid,
            sp.wrapping_sub(spec.exit_stack_offset as i64 as u64),
        )
    };
    let Some(call) = call else {
        return 0;
    };
    let call_len = call_length(&spec, &call, rax);
    if call_len == 0 {
        return 0;
    }
    emit_call::<MODE>(&ctx, cookie, &spec, &call, pid_tgid, call_len)
}

/// Takes the goroutine's Go call in flight, if any.
#[inline(always)]
fn go_call_returned(pid_tgid: u64, goroutine: u64) -> Option<ActiveCall> {
    let key = GoroutineKey {
        goroutine,
        tgid: (pid_tgid >> 32) as u32,
        _padding: 0,
    };
    // SAFETY: the value is copied out at once.
    let call = (unsafe { GOROUTINES.get(&key) }).copied()?;
    let _ = GOROUTINES.remove(&key);
    // A call served without a syscall leaves its pending fd behind.
    let _ = GO_PENDING_FDS.remove(&key);
    Some(call)
}

/// The return logic both return programs share: finds the call entered with stack pointer
/// `entry_sp` (the function-entry value), reads its length and emits its chunks. `rax` is the
/// return value register.
#[inline(always)]
fn call_returned<const MODE: u8>(
    ctx: &RetProbeContext,
    cookie: u64,
    entry_sp: u64,
    rax: u64,
) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(call) = thread_call_returned(pid_tgid, entry_sp) else {
        return 0;
    };
    let cookie = if MODE == FAST {
        cookie
    } else {
        u64::from(call.fd_flags >> compat::ID_SHIFT)
    };
    let Some(spec) = PROBE_SPECS.get(cookie as u32).copied() else {
        return 0;
    };
    let call_len = call_length(&spec, &call, rax);
    if call_len == 0 {
        // Nothing moved, or a record of the protocol's own: the thread's fresh socket read
        // stays for the call that hands out its data.
        return 0;
    }
    let mut call = call;
    let fresh_read_fd = take_read_fd(pid_tgid);
    if call.fd < 0 && spec.direction == direction::READ {
        infer_read_fd(pid_tgid, &mut call, fresh_read_fd);
    }
    emit_call::<MODE>(ctx, cookie, &spec, &call, pid_tgid, call_len)
}

/// The bytes of plaintext a returned call moved: from its return value or its length
/// out-pointer, less a TLS 1.3 record's type and padding. 0 when it moved none (an error, a
/// record that is no application data, a length that cannot be read: counted).
#[inline(always)]
fn call_length(spec: &ProbeSpec, call: &ActiveCall, rax: u64) -> u64 {
    let ret = if spec.return_width == return_width::INT32 {
        rax as u32 as i32 as i64
    } else {
        rax as i64
    };
    if ret <= 0 {
        return 0;
    }
    let call_len = if spec.length_source == length_source::OUT_POINTER {
        // SAFETY: bpf_probe_read_user checks the address; a bad one returns an error.
        match unsafe { bpf_probe_read_user(call.length_pointer as *const u64) } {
            Ok(len) => len,
            Err(_) => {
                count(stat::LENGTH_FAULTS, 1);
                return 0;
            }
        }
    } else {
        ret as u64
    };
    if call.fd_flags & RECORD_TLS13 != 0 && call_len != 0 {
        let content = tls13_content(call.buffer, call_len);
        return if content >= UNSCANNED { 0 } else { content };
    }
    call_len
}

/// Takes the thread's fresh read fd (see `ThreadCalls::read_socket`): a traced call's return ends
/// its freshness.
#[inline(always)]
fn take_read_fd(pid_tgid: u64) -> i32 {
    let Some(threads) = THREADS.get_ptr_mut(pid_tgid) else {
        return -1;
    };
    // SAFETY: pointer from a successful map lookup, valid for this program run.
    let threads = unsafe { &mut *threads };
    let fd = threads.read_socket - 1;
    threads.read_socket = 0;
    fd
}

/// A read call that made no socket syscall, of a handle without a known fd: its bytes came
/// from a buffer the library filled earlier, and the thread's last socket read since its last
/// traced call (`fresh_read_fd`) is what filled it (an event loop reads a socket, then hands
/// its bytes to that connection's library).
#[inline(always)]
fn infer_read_fd(pid_tgid: u64, call: &mut ActiveCall, fresh_read_fd: i32) {
    if fresh_read_fd < 0 {
        return;
    }
    let key = ConnectionKey {
        connection: call.connection,
        tgid: (pid_tgid >> 32) as u32,
        _padding: 0,
    };
    // SAFETY: the value is copied out at once.
    if let Some(state) = unsafe { CONNECTIONS.get(&key) } {
        if state.fd >= 0 {
            return;
        }
    }
    // A socket: only those are kept in `read_socket` (see `neighbouring_syscall`).
    call.fd = fresh_read_fd;
    call.fd_flags |= FD_INFERRED;
}

/// A write call of a handle still without an fd once it returned: the library buffered the
/// bytes, and the thread's next socket write sends them. Remembered until then; a second
/// handle waiting at the same time makes the next write ambiguous.
#[inline(always)]
fn await_write_fd(pid_tgid: u64, connection: u64) {
    let Some(threads) = THREADS.get_ptr_mut(pid_tgid) else {
        return;
    };
    // SAFETY: pointer from a successful map lookup, valid for this program run.
    let threads = unsafe { &mut *threads };
    if threads.pending_write == 0 || threads.pending_write == connection {
        threads.pending_write = connection;
    } else {
        threads.pending_ambiguous = 1;
    }
}

/// A socket syscall outside traced calls, on a thread that makes traced calls: a read is
/// remembered for the next read call; a write sends what a waiting write call buffered.
#[inline(always)]
fn neighbouring_syscall(pid_tgid: u64, threads: &mut ThreadCalls, fd: i32, read: bool) {
    if read {
        // Only sockets: an eventfd or a file read between the socket read and the library's
        // call must not hide it.
        if socket::is_socket(&KERNEL_OFFSETS, fd) {
            threads.read_socket = fd + 1;
        }
        return;
    }
    let connection = threads.pending_write;
    if connection == 0 {
        return;
    }
    if !socket::is_socket(&KERNEL_OFFSETS, fd) {
        // A log line, a pipe: not what the library sends with.
        return;
    }
    threads.pending_write = 0;
    if threads.pending_ambiguous != 0 {
        threads.pending_ambiguous = 0;
        count(stat::FD_AMBIGUOUS, 1);
        return;
    }
    let tgid = (pid_tgid >> 32) as u32;
    let key = ConnectionKey {
        connection,
        tgid,
        _padding: 0,
    };
    let Some(state) = CONNECTIONS.get_ptr_mut(&key) else {
        return;
    };
    // SAFETY: pointer from a successful map lookup, valid for this program run.
    let state = unsafe { &mut *state };
    if state.fd >= 0 {
        return;
    }
    state.fd = fd;
    let _ = SOCKET_FDS.insert(&FdKey { tgid, fd }, &connection, 0);
    let flags = state.flags & !connection_flags::NOT_SELECTED;
    state.flags =
        flags | socket::emit_connection(tgid, socket::fd_and_flags(fd, flags), connection);
    count(stat::FD_INFERRED, 1);
}

/// Takes the thread's call entered with stack pointer `entry_sp` off its stack of calls in
/// flight (and any abandoned above it), if there is one.
#[inline(always)]
fn thread_call_returned(pid_tgid: u64, entry_sp: u64) -> Option<ActiveCall> {
    let threads = THREADS.get_ptr_mut(pid_tgid)?;
    // SAFETY: pointer from a successful map lookup, valid for this program run.
    let threads = unsafe { &mut *threads };
    // Find our frame, innermost first; it and anything above it are done.
    // Constant slot indexes, as in the entry probe.
    let live = (threads.depth as usize).min(MAX_NESTING);
    let mut depth = 0;
    let mut found = None;
    for slot in (0..MAX_NESTING).rev() {
        if found.is_none() && slot < live && threads.calls[slot].stack_pointer == entry_sp {
            found = Some(threads.calls[slot]);
            depth = slot;
        }
    }
    let call = found?;
    // Frames above ours never returned (they were entered after us and left without a return).
    let abandoned = (threads.depth as usize).min(MAX_NESTING) - depth - 1;
    if abandoned > 0 {
        count(stat::RETURNS_MISSED, abandoned as u64);
    }
    threads.depth = depth as u32;
    Some(call)
}

/// Emits the chunks of a call that moved `call_len` bytes (> 0).
#[inline(always)]
fn emit_call<const MODE: u8>(
    ctx: &impl EbpfContext,
    cookie: u64,
    spec: &ProbeSpec,
    call: &ActiveCall,
    pid_tgid: u64,
    call_len: u64,
) -> u32 {
    let capture_len = if call_len < read_config(&MAX_CAPTURE_BYTES) {
        call_len
    } else {
        read_config(&MAX_CAPTURE_BYTES)
    };
    let capture_len = if MODE == FAST || spec.vector_count_arg != ARG_NONE {
        capture_len
    } else {
        compat::bounded_capture(capture_len)
    };

    let tgid = (pid_tgid >> 32) as u32;
    let handle_flags = if spec.record_ad_arg == ARG_NONE {
        0
    } else {
        connection_flags::PER_DIRECTION
    };
    let (fd, stream_offset) =
        track_connection::<MODE>(tgid, call, spec.direction, call_len, handle_flags);
    if MODE != ADDRESS && stream_offset == NOT_SELECTED {
        // Not copied; its stream offsets moved on above, as for a copied call.
        return not_selected_call(call_len);
    }
    let mut flags = 0;
    if call.fd_flags & FD_MISMATCH != 0 {
        flags |= chunk_flags::FD_MISMATCH;
        count(stat::FD_MISMATCHES, 1);
    }
    if fd < 0 {
        count(stat::FD_UNKNOWN, 1);
        if spec.direction == direction::WRITE && spec.abi != abi::GO {
            await_write_fd(pid_tgid, call.connection);
        }
    }
    let mut header = ChunkHeader {
        kind: record_kind::CHUNK,
        flags,
        call_start_ns: call.start_ns,
        // SAFETY: helper without preconditions.
        call_end_ns: unsafe { bpf_ktime_get_ns() },
        connection: call.connection,
        call_len,
        offset: 0,
        stream_offset,
        pid: tgid,
        tid: pid_tgid as u32,
        attach_id: cookie as u32,
        data_len: 0,
        fd,
        _padding: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    if spec.vector_count_arg == ARG_NONE && capture_len <= CHUNK_DATA_MAX as u64 {
        // The common case, one buffer and one chunk: no loop.
        emit_sized_chunk(&mut header, call.buffer, capture_len, capture_len);
        return 0;
    }
    // The loop's state lives in a per-thread map entry, not on the stack: the verifier checks
    // a bpf_loop body until its state converges, and map memory is not tracked value by value.
    let Some(state) = loop_state(pid_tgid) else {
        count(stat::LOOPS_NOT_STORED, 1);
        count(
            stat::CHUNKS_LOST,
            capture_len.div_ceil(CHUNK_DATA_MAX as u64),
        );
        count(stat::BYTES_LOST, capture_len);
        return 0;
    };
    // SAFETY: the thread's own entry: only this program run (this thread) uses it, until it
    // is removed below.
    let state = unsafe { &mut *state };
    state.header = header;
    state.capture_len = capture_len;
    state.emitted = 0;
    state.segment = call.buffer;
    state.segment_left = capture_len;
    state.vector = 0;
    state.vector_left = 0;
    state.vector_entry_size = spec.vector_entry_size as u64;
    state.vector_base_offset = spec.vector_base_offset as u64;
    state.vector_length_offset = spec.vector_length_offset as u64;
    state.vector_length_size = spec.vector_length_size as u64;
    state.flags = flags;
    let mut iterations = capture_len.div_ceil(CHUNK_DATA_MAX as u64);
    if spec.vector_count_arg != ARG_NONE {
        // The bytes are in a list of buffers: start from its first entry. Each entry takes one
        // iteration to load and may end in one short chunk.
        let entries = if call.vector_count < VECTOR_MAX_ENTRIES {
            call.vector_count
        } else {
            VECTOR_MAX_ENTRIES
        };
        state.vector = call.buffer;
        state.vector_left = entries;
        state.segment = 0;
        state.segment_left = 0;
        iterations += 2 * entries;
    }
    if MODE == FAST {
        // bpf_loop: the verifier checks the body once (to convergence), whatever the number
        // of chunks.
        // SAFETY: the callback is a static BPF function with the helper's signature; it takes
        // no context.
        unsafe {
            bpf_loop(
                iterations as u32,
                emit_next_chunk as *mut c_void,
                core::ptr::null_mut(),
                0,
            );
        }
    } else {
        // The chunk program takes it from here (and removes the entry).
        compat::next_chunks(ctx, pid_tgid);
        return 0;
    }
    let _ = CHUNK_LOOPS.remove(&pid_tgid);
    0
}

/// Counts a call `--port`/`--host` leave out. A BPF subprogram: its counter keys stay out of
/// the return probe's frame.
#[inline(never)]
fn not_selected_call(call_len: u64) -> u32 {
    count(stat::CALLS_NOT_SELECTED, 1);
    count(stat::BYTES_NOT_SELECTED, call_len);
    0
}

/// The calling thread's chunk loop entry, created if needed.
#[inline(always)]
fn loop_state(pid_tgid: u64) -> Option<*mut ChunkLoop> {
    if let Some(state) = CHUNK_LOOPS.get_ptr_mut(&pid_tgid) {
        return Some(state);
    }
    // The initial value comes from a map, not the stack: a ChunkLoop on the stack takes the
    // return program over the verifier's combined stack limit on 6.12.
    let empty = CHUNK_LOOP_ZERO.get_ptr(0)?;
    // SAFETY: a pointer from a successful map lookup, valid for this program run.
    let _ = CHUNK_LOOPS.insert(&pid_tgid, unsafe { &*empty }, 0);
    CHUNK_LOOPS.get_ptr_mut(&pid_tgid)
}

/// The chunk program of the fallback modes (see compat.rs): never attached, only tail-called
/// by the data programs and by itself.
#[uprobe]
pub fn probectl_chunks(ctx: ProbeContext) -> u32 {
    compat::chunk_round(&ctx);
    0
}

/// What the chunk loop's body needs: the call, how far it got, and the buffer it reads.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ChunkLoop {
    header: ChunkHeader,
    pub(crate) capture_len: u64,
    /// Bytes of the call covered so far.
    pub(crate) emitted: u64,
    /// The current buffer: address of its next byte and bytes left in it.
    segment: u64,
    segment_left: u64,
    /// For a list of buffers: address of the next entry, entries left, and the entry layout.
    vector: u64,
    vector_left: u64,
    vector_entry_size: u64,
    vector_base_offset: u64,
    vector_length_offset: u64,
    vector_length_size: u64,
    /// Flags every chunk of the call carries.
    flags: u32,
}

/// Body of the chunk loop: loads the next buffer of a list when the current one is used up,
/// else emits the next chunk. Returns 1 (stop) when the call is covered.
pub(crate) extern "C" fn emit_next_chunk(_index: u64, _context: *mut c_void) -> i64 {
    let Some(state) = CHUNK_LOOPS.get_ptr_mut(&bpf_get_current_pid_tgid()) else {
        return 1;
    };
    // SAFETY: the calling thread's own entry, used by this program run only.
    let state = unsafe { &mut *state };
    if state.emitted >= state.capture_len {
        return 1;
    }
    if state.segment_left == 0 {
        return load_next_segment(state);
    }
    let call_left = state.capture_len - state.emitted;
    let available = if state.segment_left < call_left {
        state.segment_left
    } else {
        call_left
    };
    state.header.offset = state.emitted;
    state.header.flags = state.flags;
    let sent = emit_sized_chunk(&mut state.header, state.segment, available, call_left);
    state.emitted += sent;
    state.segment += sent;
    state.segment_left -= sent;
    0
}

/// Emits the next chunk (see `emit_chunk`) in the smallest reservation class that fits it.
#[inline(always)]
fn emit_sized_chunk(header: &mut ChunkHeader, source: u64, available: u64, call_left: u64) -> u64 {
    if available > CHUNK_CLASSES[2] as u64 {
        emit_chunk::<{ CHUNK_CLASSES[3] }>(header, source, available, call_left)
    } else if available > CHUNK_CLASSES[1] as u64 {
        emit_chunk::<{ CHUNK_CLASSES[2] }>(header, source, available, call_left)
    } else if available > CHUNK_CLASSES[0] as u64 {
        emit_chunk::<{ CHUNK_CLASSES[1] }>(header, source, available, call_left)
    } else {
        emit_chunk::<{ CHUNK_CLASSES[0] }>(header, source, available, call_left)
    }
}

/// Reads the next (base, length) entry of a buffer list into the loop state.
#[inline(always)]
fn load_next_segment(state: &mut ChunkLoop) -> i64 {
    if state.vector_left == 0 {
        return 1;
    }
    let entry = state.vector;
    // SAFETY: bpf_probe_read_user checks the address; a bad one is an error, not a fault.
    let base = unsafe { bpf_probe_read_user((entry + state.vector_base_offset) as *const u64) };
    let length_at = entry + state.vector_length_offset;
    let length = if state.vector_length_size == 4 {
        // SAFETY: as above.
        unsafe { bpf_probe_read_user(length_at as *const u32) }.map(u64::from)
    } else {
        // SAFETY: as above.
        unsafe { bpf_probe_read_user(length_at as *const u64) }
    };
    let (Ok(base), Ok(length)) = (base, length) else {
        count(stat::READ_FAULTS, 1);
        return 1;
    };
    state.vector += state.vector_entry_size;
    state.vector_left -= 1;
    state.segment = base;
    state.segment_left = length;
    0
}

/// Emits one chunk of up to `N` of the `available` bytes at `source`, as the call's bytes from
/// `header.offset`; returns how many bytes it covered. A chunk that finds the ring buffer full
/// is counted as lost, not retried: it still counts as covered.
#[inline(always)]
fn emit_chunk<const N: usize>(
    header: &mut ChunkHeader,
    source: u64,
    available: u64,
    call_left: u64,
) -> u64 {
    let data_len = if available < N as u64 {
        available
    } else {
        N as u64
    };
    let last = data_len == call_left;
    let Some(mut entry) = reserve::<Chunk<N>>() else {
        count(stat::CHUNKS_LOST, 1);
        count(stat::BYTES_LOST, data_len);
        return data_len;
    };
    let chunk = entry.as_mut_ptr();
    header.data_len = data_len as u32;
    if last {
        header.flags |= chunk_flags::LAST;
    }
    // Mask keeps the size provably within the reserved area for the verifier (N is a power of 2,
    // and data_len <= N). The volatile read keeps LLVM from dropping the mask where it can prove
    // it redundant: the 6.1 verifier could not (it lost the bound through a stack slot).
    // SAFETY: reads a local that lives for the call.
    let size = unsafe { core::ptr::read_volatile(&(data_len as u32)) } & ((N as u32 * 2) - 1);
    let size = if size > N as u32 { N as u32 } else { size };
    // SAFETY: `chunk` points at a reserved, writable ring buffer record of size_of::<Chunk<N>>()
    // bytes; the read is bounded by N and the helper checks the user address.
    let read =
        unsafe { probe_read_user_raw((&raw mut (*chunk).data).cast(), size, source as *const _) };
    if read != 0 {
        header.flags |= chunk_flags::READ_FAULT;
        header.data_len = 0;
        count(stat::READ_FAULTS, 1);
    }
    // SAFETY: the record is reserved and large enough for the header.
    unsafe { (&raw mut (*chunk).header).write(*header) };
    entry.submit(wakeup_flags());
    data_len
}

/// Updates what the kernel side knows of the call's connection handle; returns the call's fd
/// (-1 if unknown) and the stream offset of its first byte, or [`NOT_SELECTED`] for it when
/// `--port`/`--host` leave its connection out (see `socket::emit_connection`).
#[inline(always)]
fn track_connection<const MODE: u8>(
    tgid: u32,
    call: &ActiveCall,
    direction: u8,
    call_len: u64,
    handle_flags: u32,
) -> (i32, u64) {
    let key = ConnectionKey {
        connection: call.connection,
        tgid,
        _padding: 0,
    };
    let state = match CONNECTIONS.get_ptr_mut(&key) {
        Some(state) => state,
        None => {
            let fresh = ConnectionState {
                fd: -1,
                flags: handle_flags,
                position: [0; 2],
            };
            let _ = CONNECTIONS.insert(&key, &fresh, 0);
            let _ = TGIDS_WITH_CONNECTIONS.insert(&tgid, &1, 0);
            match CONNECTIONS.get_ptr_mut(&key) {
                Some(state) => state,
                None => return (call.fd, 0),
            }
        }
    };
    // SAFETY: pointer from a successful map lookup; the value stays valid for this program run.
    let state = unsafe { &mut *state };
    let mut fd = call.fd;
    if fd >= 0 && fd != state.fd {
        if state.fd >= 0 {
            // The handle moved to another socket: a new connection, with new streams.
            state.position = [0; 2];
        }
        if call.fd_flags & FD_INFERRED != 0 {
            count(stat::FD_INFERRED, 1);
        }
        state.fd = fd;
        let _ = SOCKET_FDS.insert(&FdKey { tgid, fd }, &call.connection, 0);
        // The filter's verdict is the new socket's: the flag is set afresh.
        if MODE == ADDRESS {
            // No address filter on these kernels (user space leaves it empty): the return
            // probe's frame there has no slot for the verdict (5.10's limit for the probe's
            // calls together); the pipeline selects after the copy.
            socket::emit_connection(tgid, socket::fd_and_flags(fd, state.flags), call.connection);
        } else {
            let flags = state.flags & !connection_flags::NOT_SELECTED;
            state.flags = flags
                | socket::emit_connection(tgid, socket::fd_and_flags(fd, flags), call.connection);
        }
    } else if fd < 0 {
        fd = state.fd;
    }
    let index = (direction & 1) as usize;
    let stream_offset = state.position[index];
    state.position[index] = stream_offset + call_len;
    if MODE != ADDRESS && state.flags & connection_flags::NOT_SELECTED != 0 {
        return (fd, NOT_SELECTED);
    }
    (fd, stream_offset)
}

/// `track_connection`'s stream offset for a call `--port`/`--host` leave out (no stream
/// reaches it): a value, not one more returned flag, to keep the return probe's frame (6.1's
/// limit for the probe's calls together has no slot to spare).
const NOT_SELECTED: u64 = u64::MAX;

use arch::syscall_nr;

/// The raw `sys_enter` tracepoint: every syscall of every process on the host comes here, so
/// it leaves at once unless the syscall is one of the few it wants. A raw tracepoint instead
/// of the `syscalls/sys_enter_*` ones: for those the kernel builds a perf record of the
/// arguments before the program runs, for every read and write on the host, traced or not.
/// (What remains for other processes, the kernel's slow syscall path and this program's
/// dispatch and pid lookup, is measured by `scripts/bench --only tax`.)
/// (A 32-bit process's syscalls come with i386 numbers: they may be taken for others here,
/// harmlessly, since no probe ever runs in a 32-bit process, so it has no call or connection.)
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn probectl_sys_enter(ctx: RawTracePointContext) -> i32 {
    // sys_enter's TP_PROTO: (struct pt_regs *regs, long id).
    let id: u64 = ctx.arg(1);
    let close = id == syscall_nr::CLOSE;
    let socket_io = matches!(
        id,
        syscall_nr::READ
            | syscall_nr::WRITE
            | syscall_nr::READV
            | syscall_nr::WRITEV
            | syscall_nr::SENDTO
            | syscall_nr::RECVFROM
            | syscall_nr::SENDMSG
            | syscall_nr::RECVMSG
    );
    if !close && !socket_io {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    // With a pid filter, the other processes leave after one lookup.
    if !in_scope((pid_tgid >> 32) as u32) {
        return 0;
    }
    let regs: *const pt_regs = ctx.arg(0);
    // `regs` is the syscall's saved user registers (the tracepoint's first argument).
    let Some(fd) = arch::syscall_first_argument(regs) else {
        return 0;
    };
    if close {
        fd_closed(pid_tgid, fd as i32);
    } else {
        let read = matches!(
            id,
            syscall_nr::READ | syscall_nr::READV | syscall_nr::RECVFROM | syscall_nr::RECVMSG
        );
        syscall_fd(pid_tgid, fd as i32, read, regs);
        if hello::watching() {
            hello::socket_io(pid_tgid, fd as i32, id, regs);
        }
    }
    0
}

/// A socket I/O syscall made inside a traced TLS call tells the call's fd.
#[inline(always)]
fn syscall_fd(pid_tgid: u64, fd: i32, read: bool, regs: *const pt_regs) {
    let Some(threads) = THREADS.get_ptr_mut(pid_tgid) else {
        go_syscall_fd(pid_tgid, fd, regs);
        return;
    };
    // SAFETY: pointer from a successful map lookup, valid for this program run.
    let threads = unsafe { &mut *threads };
    let depth = threads.depth as usize;
    if depth == 0 {
        neighbouring_syscall(pid_tgid, threads, fd, read);
        go_syscall_fd(pid_tgid, fd, regs);
        return;
    }
    if depth > MAX_NESTING {
        go_syscall_fd(pid_tgid, fd, regs);
        return;
    }
    // The innermost call in flight is the one making this syscall.
    let call = &mut threads.calls[nesting_slot(depth - 1)];
    if call.fd < 0 {
        call.fd = fd;
    } else if call.fd != fd {
        call.fd_flags |= FD_MISMATCH;
    }
}

/// close(2): closing the fd of a known connection ends it.
#[inline(always)]
fn fd_closed(pid_tgid: u64, fd: i32) {
    let tgid = (pid_tgid >> 32) as u32;
    let key = FdKey { tgid, fd };
    // SAFETY: the value is copied out at once.
    let Some(connection) = (unsafe { SOCKET_FDS.get(&key) }).copied() else {
        return;
    };
    let _ = SOCKET_FDS.remove(&key);
    end_connection(tgid, connection, Some(fd), close_cause::FD_CLOSED);
}

/// Ends the kernel's record of a connection handle and tells user space, with the final byte
/// counts. With `fd`, only when the handle is still on that fd (a reused handle may have moved
/// on to a new socket).
#[inline(always)]
fn end_connection(tgid: u32, connection: u64, fd: Option<i32>, cause: u32) {
    let key = ConnectionKey {
        connection,
        tgid,
        _padding: 0,
    };
    // SAFETY: the value is copied out at once.
    let Some(state) = (unsafe { CONNECTIONS.get(&key) }).copied() else {
        return;
    };
    if fd.is_some_and(|fd| fd != state.fd) {
        return;
    }
    let _ = CONNECTIONS.remove(&key);
    if fd.is_none() && state.fd >= 0 {
        let _ = SOCKET_FDS.remove(&FdKey { tgid, fd: state.fd });
    }
    if let Some(mut entry) = reserve::<CloseRecord>() {
        entry.write(CloseRecord {
            kind: record_kind::CLOSE,
            pid: tgid,
            fd: state.fd,
            cause,
            connection,
            // SAFETY: helper without preconditions.
            ts_ns: unsafe { bpf_ktime_get_ns() },
            position: state.position,
        });
        entry.submit(wakeup_flags());
    } else {
        count(stat::RECORDS_LOST, 1);
    }
}

/// Attached at the entry of a group's lifecycle functions (`SSL_free`, `SSL_clear`,
/// `gnutls_deinit`, ...): the handle's connection ends, so a handle reused at the same address
/// starts a new connection, also when no fd was ever seen (memory BIOs).
#[uprobe]
pub fn probectl_end(ctx: ProbeContext) -> u32 {
    end::<FAST>(ctx)
}

/// `probectl_end` for kernels without uprobe cookies (see compat.rs).
#[uprobe]
pub fn probectl_end_address(ctx: ProbeContext) -> u32 {
    end::<ADDRESS>(ctx)
}

#[inline(always)]
fn end<const MODE: u8>(ctx: ProbeContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !in_scope(tgid) {
        return 0;
    }
    let Some((spec, _)) = spec_for::<MODE>(&ctx, code_kind::END) else {
        return 0;
    };
    let registers = argument_registers(&ctx, spec.abi);
    if spec.filter_arg != ARG_NONE && !filter_passes(&spec, &registers) {
        return 0;
    }
    let entry_sp =
        arch::stack_pointer(ctx.regs).wrapping_sub(spec.entry_stack_offset as i64 as u64);
    let connection = argument(&spec, &registers, entry_sp, spec.connection_arg);
    end_connection(tgid, connection, None, close_cause::HANDLE_ENDED);
    0
}

/// Attached at the entry of a library's key-log function (`[[group.secret]]`: OpenSSL's
/// `nss_keylog_int`, Go's `(*Config).writeKeyLog`): copies the label, the client random and
/// the secret its arguments hold into a [`SecretRecord`], straight into the ring buffer (no
/// stack copy). A program of its own, so that the data programs' stack stays as it is.
#[uprobe]
pub fn probectl_secret(ctx: ProbeContext) -> u32 {
    secret::<FAST>(ctx)
}

/// `probectl_secret` for kernels without uprobe cookies (see compat.rs).
#[uprobe]
pub fn probectl_secret_address(ctx: ProbeContext) -> u32 {
    secret::<ADDRESS>(ctx)
}

#[inline(always)]
fn secret<const MODE: u8>(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !in_scope((pid_tgid >> 32) as u32) {
        return 0;
    }
    let cookie = if MODE == ADDRESS {
        let id = compat::attach_id_at(compat::probed_address(&ctx), code_kind::SECRET);
        if id == compat::NO_ID {
            return 0;
        }
        id
    } else {
        // SAFETY: the context is a valid uprobe context; the helper only reads the link's
        // cookie.
        unsafe { bpf_get_attach_cookie(ctx.as_ptr()) }
    };
    let Some(spec) = SECRET_SPECS.get(cookie as u32).copied() else {
        return 0;
    };
    let registers = argument_registers(&ctx, spec.abi);
    let Some(mut entry) = reserve::<SecretRecord>() else {
        count(stat::SECRETS_LOST, 1);
        return 0;
    };
    let record = entry.as_mut_ptr();
    let mut flags = 0;
    let label = select_arg(&registers, spec.label_arg);
    // SAFETY: `record` points at a reserved, writable ring buffer record of
    // size_of::<SecretRecord>() bytes; every write below stays inside it (sizes masked to the
    // fields' lengths) and the helpers check the user addresses.
    unsafe {
        let label_len = if spec.label_length_arg == ARG_NONE {
            // A C string: the helper stops at its NUL (counted in its result).
            let read = aya_ebpf::helpers::generated::bpf_probe_read_user_str(
                (&raw mut (*record).label).cast(),
                SECRET_LABEL_MAX as u32,
                label as *const c_void,
            );
            if read <= 0 {
                flags |= secret_flags::READ_FAULT;
                0
            } else {
                let with_nul = read as u64;
                // A label that filled the field has no room for its NUL: it was longer.
                if with_nul >= SECRET_LABEL_MAX as u64 {
                    flags |= secret_flags::TOO_LONG;
                }
                with_nul - 1
            }
        } else {
            let length = select_arg(&registers, spec.label_length_arg);
            flags |=
                read_part::<SECRET_LABEL_MAX>((&raw mut (*record).label).cast(), label, length);
            length
        };
        let mut random = select_arg(&registers, spec.random_arg);
        for (index, offset) in spec.random_pointer_offsets.iter().enumerate() {
            if index >= spec.random_pointers as usize {
                break;
            }
            let at = random.wrapping_add(*offset as i64 as u64);
            // bpf_probe_read_user checks the address; a bad one is an error.
            match bpf_probe_read_user(at as *const u64) {
                Ok(pointer) => random = pointer,
                Err(_) => {
                    flags |= secret_flags::READ_FAULT;
                    random = 0;
                    break;
                }
            }
        }
        let random = random.wrapping_add(spec.random_offset as i64 as u64);
        let random_len = if spec.random_length_arg == ARG_NONE {
            u64::from(spec.random_length)
        } else {
            select_arg(&registers, spec.random_length_arg)
        };
        flags |=
            read_part::<SECRET_RANDOM_MAX>((&raw mut (*record).random).cast(), random, random_len);
        let secret = select_arg(&registers, spec.secret_arg);
        let secret_len = select_arg(&registers, spec.secret_length_arg);
        flags |= read_part::<SECRET_MAX>((&raw mut (*record).secret).cast(), secret, secret_len);
        if spec.random_from_hello != 0 {
            flags |= secret_flags::RANDOM_FROM_HELLO;
        }
        (&raw mut (*record).kind).write(record_kind::SECRET);
        (&raw mut (*record).flags).write(flags);
        (&raw mut (*record).pid).write((pid_tgid >> 32) as u32);
        (&raw mut (*record).tid).write(pid_tgid as u32);
        (&raw mut (*record).ts_ns).write(bpf_ktime_get_ns());
        (&raw mut (*record).connection).write(if spec.connection_arg == ARG_NONE {
            0
        } else {
            select_arg(&registers, spec.connection_arg)
        });
        (&raw mut (*record).attach_id).write(cookie as u32);
        (&raw mut (*record).label_len).write(label_len.min(SECRET_LABEL_MAX as u64) as u32);
        (&raw mut (*record).random_len).write(random_len.min(SECRET_RANDOM_MAX as u64) as u32);
        (&raw mut (*record).secret_len).write(secret_len.min(SECRET_MAX as u64) as u32);
    }
    entry.submit(BPF_RB_FORCE_WAKEUP);
    0
}

/// Reads `length` bytes from user address `source` into a field of `N` bytes (a power of
/// two) of a reserved record; returns the [`secret_flags`] of what went wrong.
///
/// # Safety
/// `field` must point at `N` writable bytes.
#[inline(always)]
unsafe fn read_part<const N: usize>(field: *mut c_void, source: u64, length: u64) -> u32 {
    let mut flags = 0;
    let wanted = if length > N as u64 {
        flags |= secret_flags::TOO_LONG;
        N as u64
    } else {
        length
    };
    // The mask keeps the size provably within the field for every verifier (see emit_chunk).
    // SAFETY: reads a local that lives for the call.
    let size = unsafe { core::ptr::read_volatile(&(wanted as u32)) } & ((N as u32 * 2) - 1);
    let size = if size > N as u32 { N as u32 } else { size };
    if size > 0 {
        // SAFETY: `field` has N writable bytes (the caller's contract) and size <= N; the
        // helper checks the user address.
        if unsafe { probe_read_user_raw(field, size, source as *const _) } != 0 {
            flags |= secret_flags::READ_FAULT;
        }
    }
    flags
}

/// Attached to sched_process_exec: a process in scope started a program, which may bring TLS
/// code probectl has not attached yet (a statically linked executable, say).
#[tracepoint]
pub fn probectl_exec(_ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if in_scope(tgid) {
        emit_exec_record(tgid);
    } else if selected_at_exec() {
        if TRACED_PIDS.insert(&tgid, &1, 0).is_err() {
            count(stat::FILTER_FULL, 1);
            return 0;
        }
        count(stat::SELECTED_AT_EXEC, 1);
        emit_exec_record(tgid);
    }
    0
}

/// The exec's record, with the process's cgroup v2 id (see `ExecRecord`).
#[inline(always)]
fn emit_exec_record(tgid: u32) {
    if let Some(mut entry) = reserve::<ExecRecord>() {
        entry.write(ExecRecord {
            kind: record_kind::EXEC,
            pid: tgid,
            // SAFETY: helper without preconditions.
            ts_ns: unsafe { bpf_ktime_get_ns() },
            // SAFETY: helper without preconditions.
            cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        });
        entry.submit(wakeup_flags());
    } else {
        count(stat::RECORDS_LOST, 1);
    }
}

/// True when the current process, which just started a program, matches the run's
/// selection (`SELECT_AT_EXEC`): its cgroup and its new command name.
#[inline(always)]
fn selected_at_exec() -> bool {
    let selection = read_config(&SELECT_AT_EXEC);
    if selection == 0 {
        return false;
    }
    if selection & select::CGROUP != 0 {
        // SAFETY: helper without preconditions.
        let cgroup = unsafe { bpf_get_current_cgroup_id() };
        // SAFETY: the value is only tested for presence.
        if unsafe { SELECTED_CGROUPS.get(&cgroup) }.is_none() {
            return false;
        }
    }
    if selection & select::COMM != 0 {
        let Ok(comm) = bpf_get_current_comm() else {
            return false;
        };
        if comm != read_config(&SELECT_COMM) {
            return false;
        }
    }
    true
}

#[inline(always)]
fn emit_process_record(kind: u32, tgid: u32, flags: u64) {
    if let Some(mut entry) = reserve::<ProcessRecord>() {
        entry.write(ProcessRecord {
            kind,
            pid: tgid,
            // SAFETY: helper without preconditions.
            ts_ns: unsafe { bpf_ktime_get_ns() },
        });
        entry.submit(flags);
    } else {
        count(stat::RECORDS_LOST, 1);
    }
}

/// Offset of the third syscall argument (`prot` of mmap) and of the fifth (`fd`).
const SYSCALL_ARG2: usize = 32;
const SYSCALL_ARG4: usize = 48;
/// Offset of the return value in a `syscalls/sys_exit_*` record.
const SYSCALL_RET: usize = 16;

/// Attached to sys_enter_mmap: notes threads of processes in scope that map a file executable.
#[tracepoint]
pub fn probectl_mmap_enter(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: sys_enter_mmap's record has prot and fd as its third and fifth arguments.
    let (Ok(prot), Ok(fd)) = (unsafe {
        (
            ctx.read_at::<u64>(SYSCALL_ARG2),
            ctx.read_at::<u64>(SYSCALL_ARG4),
        )
    }) else {
        return 0;
    };
    if prot & PROT_EXEC == 0 || (fd as i32) < 0 || !in_scope((pid_tgid >> 32) as u32) {
        return 0;
    }
    let _ = MMAP_PENDING.insert(&pid_tgid, &1, 0);
    0
}

/// Attached to sys_exit_mmap: an executable file mapping now exists; user space is woken at
/// once to attach any TLS code in it (a library loaded with dlopen).
#[tracepoint]
pub fn probectl_mmap_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is only tested for presence.
    if unsafe { MMAP_PENDING.get(&pid_tgid) }.is_none() {
        return 0;
    }
    let _ = MMAP_PENDING.remove(&pid_tgid);
    // SAFETY: sys_exit_* records hold the return value at this offset.
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(SYSCALL_RET) }) else {
        return 0;
    };
    if ret < 0 && ret > -4096 {
        return 0;
    }
    emit_process_record(
        record_kind::MAP,
        (pid_tgid >> 32) as u32,
        BPF_RB_FORCE_WAKEUP,
    );
    0
}

/// Attached to task_newtask: new processes (not threads) of traced processes are traced too.
#[tracepoint]
pub fn probectl_newtask(ctx: TracePointContext) -> u32 {
    if read_config(&FILTER_BY_PID) == 0 {
        return 0;
    }
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the value is only tested for presence.
    if unsafe { TRACED_PIDS.get(&parent) }.is_none() {
        return 0;
    }
    let (pid_offset, flags_offset) = (
        read_config(&NEWTASK_PID_OFFSET),
        read_config(&NEWTASK_FLAGS_OFFSET),
    );
    if pid_offset == NO_FIELD || flags_offset == NO_FIELD {
        // The format file lacks a field: never read at a guessed offset.
        return 0;
    }
    // SAFETY: the offsets come from this kernel's format file for the tracepoint.
    let (Ok(child), Ok(flags)) = (unsafe {
        (
            ctx.read_at::<u32>(pid_offset as usize),
            ctx.read_at::<u64>(flags_offset as usize),
        )
    }) else {
        return 0;
    };
    if flags & CLONE_THREAD != 0 {
        // A thread follows its process (the filter holds tgids).
        return 0;
    }
    if TRACED_PIDS.insert(&child, &1, 0).is_err() {
        count(stat::FILTER_FULL, 1);
    }
    0
}

/// Attached to sched_process_exit (every thread's exit): the thread's call table entry goes,
/// and the process's own entries when it is the last thread.
///
/// A process ends here, in do_exit, when its last thread exits: before its parent can reap
/// it, so before a command probectl waits for can end, and before its pid can be given to
/// another process (sched_process_free comes an RCU grace period after the reaping, when a
/// new process may already hold the pid: the pid filter must not lose that one).
#[tracepoint]
pub fn probectl_thread_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let _ = THREADS.remove(&pid_tgid);
    let tgid = (pid_tgid >> 32) as u32;
    if !process_ends(pid_tgid) {
        return 0;
    }
    if read_config(&FILTER_BY_PID) != 0 {
        let _ = TRACED_PIDS.remove(&tgid);
    }
    // SAFETY: the value is only tested for presence.
    if unsafe { TGIDS_WITH_CONNECTIONS.get(&tgid) }.is_some() {
        let _ = TGIDS_WITH_CONNECTIONS.remove(&tgid);
        emit_process_record(record_kind::EXIT, tgid, wakeup_flags());
    }
    0
}

/// Whether the exiting current thread is its process's last: `signal->live`, which do_exit
/// decrements before this tracepoint, is 0. (Two last threads exiting at once may both see 0:
/// the removals above are idempotent, and an EXIT record is sent by whichever removes the
/// process's entry first.) Without the kernel's offsets, the leader's exit stands for the
/// process's.
#[inline(always)]
fn process_ends(pid_tgid: u64) -> bool {
    let offsets = &KERNEL_OFFSETS;
    // SAFETY: valid references to u32 fields of a static; read volatile so that the
    // load-time values user space sets are seen.
    let (valid, task_signal, signal_live) = unsafe {
        (
            core::ptr::read_volatile(&offsets.valid),
            core::ptr::read_volatile(&offsets.task_signal),
            core::ptr::read_volatile(&offsets.signal_live),
        )
    };
    if valid != 1 {
        return pid_tgid as u32 == (pid_tgid >> 32) as u32;
    }
    // SAFETY: helper without preconditions; the pointers are only read through
    // bpf_probe_read_kernel, which checks them.
    unsafe {
        let task = aya_ebpf::helpers::bpf_get_current_task();
        let Ok(signal) = bpf_probe_read_kernel((task + u64::from(task_signal)) as *const u64)
        else {
            return false;
        };
        let Ok(live) = bpf_probe_read_kernel((signal + u64::from(signal_live)) as *const i32)
        else {
            return false;
        };
        live == 0
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
