//! probectl's kernel side: ONE uprobe and ONE uretprobe program serve every probe spec of every
//! library. What differs per attach point (which register holds the buffer, where the length
//! comes from, ...) is read from `PROBE_SPECS`, indexed by the attach point's BPF cookie.
#![no_std]
#![no_main]

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        bpf_loop, bpf_probe_read_user, generated::bpf_probe_read_user as probe_read_user_raw,
    },
    macros::{map, uprobe, uretprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, RetProbeContext},
    EbpfContext,
};
use probectl_common::{
    chunk_flags, length_source, return_width, stat, Chunk, ChunkHeader, ProbeSpec, ARG_NONE,
    CHUNK_CLASSES, CHUNK_DATA_MAX,
};

/// Capture limit per call, in bytes; set by user space at load time.
#[no_mangle]
static MAX_CAPTURE_BYTES: u64 = CHUNK_DATA_MAX as u64;
/// 1 when only the processes in `TRACED_PIDS` are traced; set by user space at load time.
#[no_mangle]
static FILTER_BY_PID: u8 = 0;

/// attach_id (BPF cookie) -> what to read at that attach point.
#[map]
static PROBE_SPECS: Array<ProbeSpec> = Array::with_max_entries(4096, 0);

/// Processes (tgids) to trace when `FILTER_BY_PID` is set.
#[map]
static TRACED_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// Identifies a call in flight: the thread and its stack pointer at entry. On x86-64 the
/// return leaves the stack pointer 8 bytes above the entry's (the return address is popped), so
/// the return finds its own entry even when traced calls nest (node calls SSL_write from inside
/// SSL_read, in a callback).
#[repr(C)]
#[derive(Clone, Copy)]
struct CallKey {
    pid_tgid: u64,
    stack_pointer: u64,
}

/// A traced call between its entry and its return.
#[repr(C)]
#[derive(Clone, Copy)]
struct ActiveCall {
    start_ns: u64,
    connection: u64,
    buffer: u64,
    length_pointer: u64,
}

/// Entries whose return never comes (a thread killed mid-call) age out of the LRU.
#[map]
static ACTIVE_CALLS: LruHashMap<CallKey, ActiveCall> = LruHashMap::with_max_entries(65536, 0);

/// The chunks of every call; user space reassembles them. Size set by user space.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Per-CPU counters indexed by `probectl_common::stat`.
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

#[inline(always)]
fn count(index: u32, by: u64) {
    if let Some(counter) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot: no other program runs on this CPU while we update it.
        unsafe { *counter += by };
    }
}

#[inline(always)]
fn read_config<T: Copy>(value: &T) -> T {
    // SAFETY: the static is a valid T; the volatile read stops the compiler from folding the
    // value user space sets at load time into the default.
    unsafe { core::ptr::read_volatile(value) }
}

#[inline(always)]
fn spec_for(ctx: &impl EbpfContext) -> Option<ProbeSpec> {
    // SAFETY: the context is a valid uprobe context; the helper only reads the link's cookie.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    PROBE_SPECS.get(cookie as u32).copied()
}

/// The six integer argument registers (System V x86-64), read at constant context offsets:
/// the verifier rejects a context load at a computed offset, so a register chosen at run time
/// is selected among values, not addressed.
#[inline(always)]
fn argument_registers(ctx: &ProbeContext) -> [u64; 6] {
    let regs = ctx.regs;
    // SAFETY: ctx.regs points at the probed thread's saved registers; each read is a constant
    // offset into the context, which the verifier allows.
    unsafe {
        [
            core::ptr::read_volatile(&raw const (*regs).rdi),
            core::ptr::read_volatile(&raw const (*regs).rsi),
            core::ptr::read_volatile(&raw const (*regs).rdx),
            core::ptr::read_volatile(&raw const (*regs).rcx),
            core::ptr::read_volatile(&raw const (*regs).r8),
            core::ptr::read_volatile(&raw const (*regs).r9),
        ]
    }
}

#[inline(always)]
fn select_arg(registers: &[u64; 6], index: u8) -> u64 {
    match index {
        0 => registers[0],
        1 => registers[1],
        2 => registers[2],
        3 => registers[3],
        4 => registers[4],
        5 => registers[5],
        _ => 0,
    }
}

/// The spec's call filter (see `ProbeSpec::filter_arg`): follows at most two pointers from an
/// argument and compares a 4-byte value. Unreadable memory fails the filter.
#[inline(always)]
fn filter_passes(spec: &ProbeSpec, registers: &[u64; 6]) -> bool {
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
    let pid_tgid = bpf_get_current_pid_tgid();
    if read_config(&FILTER_BY_PID) != 0 {
        let tgid = (pid_tgid >> 32) as u32;
        // SAFETY: the value is only tested for presence.
        if unsafe { TRACED_PIDS.get(&tgid) }.is_none() {
            return 0;
        }
    }
    let Some(spec) = spec_for(&ctx) else {
        return 0;
    };
    // SAFETY: ctx.regs points at the probed thread's saved registers.
    let key = CallKey {
        pid_tgid,
        stack_pointer: unsafe { (*ctx.regs).rsp },
    };
    let registers = argument_registers(&ctx);
    if spec.filter_arg != ARG_NONE && !filter_passes(&spec, &registers) {
        return 0;
    }
    let length_pointer = if spec.length_source == length_source::OUT_POINTER {
        select_arg(&registers, spec.length_arg)
    } else {
        0
    };
    let call = ActiveCall {
        // SAFETY: helper without preconditions.
        start_ns: unsafe { bpf_ktime_get_ns() },
        connection: select_arg(&registers, spec.connection_arg),
        buffer: select_arg(&registers, spec.buffer_arg),
        length_pointer,
    };
    let _ = ACTIVE_CALLS.insert(key, call, 0);
    0
}

#[uretprobe]
pub fn probectl_return(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: ctx.regs points at the thread's registers after the return.
    let return_sp = unsafe { (*ctx.regs).rsp };
    let key = CallKey {
        pid_tgid,
        stack_pointer: return_sp.wrapping_sub(8),
    };
    let Some(call_ptr) = ACTIVE_CALLS.get_ptr(key) else {
        return 0;
    };
    // SAFETY: pointer from a successful map lookup; copied out before the entry is removed.
    let call = unsafe { *call_ptr };
    let _ = ACTIVE_CALLS.remove(key);
    let Some(spec) = spec_for(&ctx) else {
        return 0;
    };
    let raw: u64 = ctx.ret::<u64>();
    let ret = if spec.return_width == return_width::INT32 {
        raw as u32 as i32 as i64
    } else {
        raw as i64
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
    if call_len == 0 {
        return 0;
    }
    let capture_len = if call_len < read_config(&MAX_CAPTURE_BYTES) {
        call_len
    } else {
        read_config(&MAX_CAPTURE_BYTES)
    };

    let header = ChunkHeader {
        call_start_ns: call.start_ns,
        // SAFETY: helper without preconditions.
        call_end_ns: unsafe { bpf_ktime_get_ns() },
        connection: call.connection,
        call_len,
        offset: 0,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        // SAFETY: the context is a valid uprobe context.
        attach_id: unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } as u32,
        data_len: 0,
        flags: 0,
        _padding: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };

    let mut state = ChunkLoop {
        header,
        buffer: call.buffer,
        capture_len,
    };
    let chunks = capture_len.div_ceil(CHUNK_DATA_MAX as u64) as u32;
    // bpf_loop: the verifier checks the body once, whatever the number of chunks.
    // SAFETY: the callback is a static BPF function with the helper's signature, and the context
    // pointer is to a stack value that outlives the call.
    unsafe {
        bpf_loop(
            chunks,
            emit_chunk_at as *mut c_void,
            (&raw mut state).cast(),
            0,
        );
    }
    0
}

/// What the chunk loop's body needs.
#[repr(C)]
struct ChunkLoop {
    header: ChunkHeader,
    buffer: u64,
    capture_len: u64,
}

/// Body of the chunk loop: emits chunk `index` of the call.
extern "C" fn emit_chunk_at(index: u64, context: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer to the caller's ChunkLoop.
    let state = unsafe { &mut *context.cast::<ChunkLoop>() };
    let offset = index * CHUNK_DATA_MAX as u64;
    if offset >= state.capture_len {
        return 1;
    }
    let remaining = state.capture_len - offset;
    state.header.offset = offset;
    let (header, buffer) = (&mut state.header, state.buffer);
    // A short last chunk takes the smallest reservation class that fits it.
    if remaining > CHUNK_CLASSES[2] as u64 {
        emit_chunk::<{ CHUNK_CLASSES[3] }>(header, buffer, remaining);
    } else if remaining > CHUNK_CLASSES[1] as u64 {
        emit_chunk::<{ CHUNK_CLASSES[2] }>(header, buffer, remaining);
    } else if remaining > CHUNK_CLASSES[0] as u64 {
        emit_chunk::<{ CHUNK_CLASSES[1] }>(header, buffer, remaining);
    } else {
        emit_chunk::<{ CHUNK_CLASSES[0] }>(header, buffer, remaining);
    }
    0
}

/// Emits one chunk of up to `N` bytes starting at `header.offset`. A chunk that finds the
/// ring buffer full is counted as lost, not retried.
#[inline(always)]
fn emit_chunk<const N: usize>(header: &mut ChunkHeader, buffer: u64, remaining: u64) {
    let data_len = if remaining < N as u64 {
        remaining
    } else {
        N as u64
    };
    let last = data_len == remaining;
    let Some(mut entry) = EVENTS.reserve::<Chunk<N>>(0) else {
        count(stat::CHUNKS_LOST, 1);
        count(stat::BYTES_LOST, data_len);
        return;
    };
    let chunk = entry.as_mut_ptr();
    header.data_len = data_len as u32;
    header.flags = if last { chunk_flags::LAST } else { 0 };
    // Mask keeps the size provably within the reserved area for the verifier (N is a power of 2,
    // and data_len <= N).
    let size = (data_len as u32) & ((N as u32 * 2) - 1);
    let size = if size > N as u32 { N as u32 } else { size };
    // SAFETY: `chunk` points at a reserved, writable ring buffer record of size_of::<Chunk<N>>()
    // bytes; the read is bounded by N and the helper checks the user address.
    let read = unsafe {
        probe_read_user_raw(
            (&raw mut (*chunk).data).cast(),
            size,
            (buffer + header.offset) as *const _,
        )
    };
    if read != 0 {
        header.flags |= chunk_flags::READ_FAULT;
        header.data_len = 0;
        count(stat::READ_FAULTS, 1);
    }
    // SAFETY: the record is reserved and large enough for the header.
    unsafe { (&raw mut (*chunk).header).write(*header) };
    entry.submit(0);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
