//! The fallbacks for kernels older than what the fast programs use (Linux 5.8 to 5.16; see
//! core/src/kernel/features.rs, which chooses the mode at load time). The programs of main.rs
//! are generic over a mode (`FAST`, `BOUNDED`, `ADDRESS`), and the object holds one instance per
//! mode that differs, so the fast path of a new kernel is the code it always was:
//!
//! - `FAST` (Linux 5.17+): the attach point is the uprobe's BPF cookie (5.15), and a call of
//!   any size is copied by `bpf_loop` (5.17).
//! - `BOUNDED` (5.15 and 5.16; or forced with `PROBECTL_FALLBACKS`, to test this path on a new
//!   kernel): cookies, but a bounded loop of [`CHUNK_LOOP_BOUND`] chunks (the chunk chain) instead of `bpf_loop`.
//! - `ADDRESS` (5.8 to 5.14): the chunk chain, and no cookies: the attach point is told from
//!   the probed code address (below).
//!
//! Identity without cookies. On a uprobe hit the kernel sets the saved instruction pointer to
//! the probed address before it runs the handlers (`handle_swbp` in kernel/events/uprobes.c:
//! "change it in advance for ->handler() and restart"), and it has just looked up that
//! address's mapping with `find_vma` (`find_active_uprobe`), which leaves the mapping in the
//! task's VMA cache (`task_struct.vmacache`, four slots; Linux 3.15 to 6.0). So the program
//! finds the VMA that holds the address among those four, and from it the mapped file's inode
//! number and the address's file offset: the same (inode, offset) user space attached at.
//! `ATTACH_IDS` maps that to the attach id; user space fills it before it attaches, once per
//! probed address, for every process at once.
//!
//! Why this and not the alternatives the issue weighed:
//! - one program instance per attach point (the id as a load-time constant) needs a load and a
//!   verification of the large programs per attach point (tenths of a second each, seconds in
//!   an emulated guest) and maps shared between loads (pinned in a bpffs);
//! - a (tgid, address) table filled by user space as it learns each process's mappings has a
//!   window: a process that maps the library and calls it before user space has read its maps
//!   loses those calls (counted, but lost), and costs a /proc walk per process on the host.
//!
//! The VMA cache has no window: the mapping is the kernel's own, looked up for this very hit.
//! Its cost is four to six kernel reads and a hash lookup per probe hit (see README, Kernels).
//! A hit whose mapping is not found (which the kernel's code above rules out) is counted
//! (`stat::ADDRESS_UNKNOWN`) and not captured, never guessed.
//!
//! Chunk chain. Without `bpf_loop` a call's chunks are copied by `probectl_chunks`, a program of
//! its own that copies [`CHUNKS_PER_PROGRAM`] chunks with a loop the verifier unrolls (bounded
//! loops: Linux 5.3) and tail-calls itself for the next ones; the data programs tail-call it
//! once they have set up the call's `CHUNK_LOOPS` entry. The kernel allows 32 tail calls in a
//! chain, so a call gets at most [`CHUNK_LOOP_BOUND`] chunks (4 MiB of one buffer). The part of
//! a longer call beyond it is cut, and counted (`stat::CALLS_CUT`, `stat::BYTES_CUT`): the event
//! says how many bytes it lacks. Why not a loop in the data programs themselves: the verifier
//! walks every turn of an unrolled loop in every program that holds it (64 turns took the
//! programs from 160,000 to 470,000 verified instructions on 6.18, and minutes in an emulated
//! 5.10); the chunk program is verified once, with eight turns.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel},
    macros::map,
    maps::{HashMap, ProgramArray},
    programs::ProbeContext,
    EbpfContext,
};
use probectl_common::{capacity, code_kind, stat, AddressOffsets, CodeKey, CHUNK_DATA_MAX};

/// The fast programs: cookies and `bpf_loop`.
pub const FAST: u8 = 0;
/// Cookies, and the bounded chunk loop.
pub const BOUNDED: u8 = 1;
/// The bounded chunk loop, and the attach point from the code address.
pub const ADDRESS: u8 = 2;

pub use probectl_common::capacity::CHUNK_LOOP_BOUND;

/// Chunks one run of `probectl_chunks` copies.
pub const CHUNKS_PER_PROGRAM: u32 = 8;
/// Tail calls the kernel allows in a chain (`MAX_TAIL_CALL_CNT`: 32 up to Linux 5.x, 33 since).
const TAIL_CALLS: u32 = 32;
const _: () = assert!(CHUNKS_PER_PROGRAM * TAIL_CALLS == CHUNK_LOOP_BOUND);

/// The chunk program (`probectl_chunks`), at index 0; set by user space after the load.
#[map]
static CHUNK_PROGRAMS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Where the attach id of a call sits in `ActiveCall::fd_flags` in the fallback modes: the
/// return program finds its call by stack pointer, and its spec through the call (a
/// uretprobe's instruction pointer is the caller's return address, not the probed one).
pub const ID_SHIFT: u32 = 16;

/// Bytes of one buffer the chunk chain copies at most.
pub const BOUNDED_BYTES: u64 = CHUNK_LOOP_BOUND as u64 * CHUNK_DATA_MAX as u64;

/// Struct offsets for the address lookup; set by user space from the kernel's BTF.
#[no_mangle]
static ADDRESS_OFFSETS: AddressOffsets = AddressOffsets {
    task_vmacache_vmas: 0,
    vma_start: 0,
    vma_end: 0,
    vma_pgoff: 0,
    vma_file: 0,
    file_inode: 0,
    inode_ino: 0,
    _padding: 0,
};

/// (inode, file offset | kind) -> attach id, for kernels without uprobe cookies. Filled by user
/// space before it attaches; entries stay for the run (a bound: `capacity::CODE_ADDRESSES`).
#[map]
static ATTACH_IDS: HashMap<CodeKey, u32> =
    HashMap::with_max_entries(capacity::CODE_ADDRESSES, BPF_F_NO_PREALLOC);

/// `VMACACHE_SIZE` (include/linux/vmacache.h).
const VMA_CACHE_SLOTS: u64 = 4;
/// The page size of x86-64 and of Debian's arm64 kernels (`vm_pgoff` counts pages).
const PAGE_SHIFT: u64 = 12;
/// What [`attach_id_at`] returns when it finds none.
pub const NO_ID: u64 = u64::MAX;

/// The probed address of a uprobe hit (see the module's comment).
#[inline(always)]
pub fn probed_address(ctx: &ProbeContext) -> u64 {
    crate::arch::instruction_pointer(ctx.regs)
}

/// Reads a u64 of kernel memory, 0 when unreadable.
#[inline(always)]
fn kernel_u64(at: u64) -> u64 {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an error.
    unsafe { bpf_probe_read_kernel(at as *const u64) }.unwrap_or(0)
}

/// The attach id of the probe of `kind` (`code_kind`) at code address `address` of the
/// current task, or [`NO_ID`] (counted). A BPF function of its own: its frame is not added to
/// the calling program's for the rest of that program.
#[inline(never)]
pub fn attach_id_at(address: u64, kind: u64) -> u64 {
    let offsets = &ADDRESS_OFFSETS;
    // SAFETY: valid references to u32 fields of a static; read volatile so that the
    // load-time values user space sets are seen.
    let (vmas, vma_start, vma_end, vma_pgoff, vma_file, file_inode, inode_ino) = unsafe {
        (
            core::ptr::read_volatile(&offsets.task_vmacache_vmas),
            core::ptr::read_volatile(&offsets.vma_start),
            core::ptr::read_volatile(&offsets.vma_end),
            core::ptr::read_volatile(&offsets.vma_pgoff),
            core::ptr::read_volatile(&offsets.vma_file),
            core::ptr::read_volatile(&offsets.file_inode),
            core::ptr::read_volatile(&offsets.inode_ino),
        )
    };
    // SAFETY: helper without preconditions; the task is only read through
    // bpf_probe_read_kernel.
    let task = unsafe { bpf_get_current_task() };
    let mut found = 0;
    let mut start = 0;
    for slot in 0..VMA_CACHE_SLOTS {
        let vma = kernel_u64(task + u64::from(vmas) + 8 * slot);
        if vma == 0 {
            continue;
        }
        let first = kernel_u64(vma + u64::from(vma_start));
        if first <= address && address < kernel_u64(vma + u64::from(vma_end)) {
            found = vma;
            start = first;
            break;
        }
    }
    if found == 0 {
        crate::count(stat::ADDRESS_UNKNOWN, 1);
        return NO_ID;
    }
    let file = kernel_u64(found + u64::from(vma_file));
    let inode = if file == 0 {
        0
    } else {
        kernel_u64(file + u64::from(file_inode))
    };
    if inode == 0 {
        crate::count(stat::ADDRESS_UNKNOWN, 1);
        return NO_ID;
    }
    let key = CodeKey {
        inode: kernel_u64(inode + u64::from(inode_ino)),
        file_offset: (address - start + (kernel_u64(found + u64::from(vma_pgoff)) << PAGE_SHIFT))
            | (kind << code_kind::SHIFT),
    };
    // SAFETY: the value is copied out at once.
    match unsafe { ATTACH_IDS.get(&key) } {
        Some(id) => u64::from(*id),
        None => {
            crate::count(stat::ADDRESS_UNKNOWN, 1);
            NO_ID
        }
    }
}

/// The bytes of a single-buffer call the chunk chain copies: all of `capture_len` up to
/// [`BOUNDED_BYTES`]; the rest is cut, counted. The chunks then end with the last one copied
/// (flagged last), and the event tells the bytes it lacks.
#[inline(always)]
pub fn bounded_capture(capture_len: u64) -> u64 {
    if capture_len <= BOUNDED_BYTES {
        return capture_len;
    }
    crate::count(stat::CALLS_CUT, 1);
    crate::count(stat::BYTES_CUT, capture_len - BOUNDED_BYTES);
    BOUNDED_BYTES
}

/// Hands the call set up in the thread's `CHUNK_LOOPS` entry to the chunk program (a tail
/// call: it does not come back). If it does come back, the chain's limit is reached (or the
/// chunk program is missing): the call's bytes not copied yet are cut, counted, and the entry
/// goes.
#[inline(always)]
pub fn next_chunks<C: EbpfContext>(ctx: &C, pid_tgid: u64) {
    // SAFETY: `ctx` is the running program's context; the map is the program array above.
    unsafe { CHUNK_PROGRAMS.tail_call(ctx, 0) };
    if let Some(state) = crate::CHUNK_LOOPS.get_ptr(&pid_tgid) {
        // SAFETY: the thread's own entry, valid for this program run.
        let (emitted, capture_len) = unsafe { ((*state).emitted, (*state).capture_len) };
        if emitted < capture_len {
            crate::count(stat::CALLS_CUT, 1);
            crate::count(stat::BYTES_CUT, capture_len - emitted);
        }
    }
    let _ = crate::CHUNK_LOOPS.remove(&pid_tgid);
}

/// One run of the chunk program: up to [`CHUNKS_PER_PROGRAM`] turns of the chunk loop's body
/// (`emit_next_chunk`), then the next run, until the call is covered.
#[inline(always)]
pub fn chunk_round(ctx: &ProbeContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    for index in 0..CHUNKS_PER_PROGRAM {
        if crate::emit_next_chunk(u64::from(index), core::ptr::null_mut()) != 0 {
            let _ = crate::CHUNK_LOOPS.remove(&pid_tgid);
            return;
        }
    }
    next_chunks(ctx, pid_tgid);
}
