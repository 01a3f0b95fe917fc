//! ClientHellos on the wire: while secrets are traced (`WATCH_HELLOS`), a socket write of a
//! process in scope whose first buffer begins with a TLS handshake record holding a
//! ClientHello is reported with its fd and its 32-byte random ([`HelloRecord`]). User space
//! ties secrets to sockets by that random: Go's `writeKeyLog` gives a client random and no
//! connection, stripped BoringSSL's `ssl_log_secret` a connection and no client random.
//! A client's ClientHello is seen as it is written; a server's as it is read: the read
//! family's buffer is noted at `sys_enter` (`HELLO_READS`) and looked at when the syscall
//! returns (`probectl_sys_exit`, attached only while ClientHellos are watched).

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, raw_tracepoint},
    maps::LruHashMap,
    programs::RawTracePointContext,
};
use probectl_common::{capacity, record_kind, stat, HelloRecord, SECRET_RANDOM_MAX};

/// 1 when secrets are traced (`--keylog`, `--packets`); set by user space at load time.
#[no_mangle]
static WATCH_HELLOS: u8 = 0;

/// The start of a TLS record holding a ClientHello: record header (type 22 = handshake,
/// version 3.x, length), then the handshake header (type 1 = ClientHello, length) and the
/// legacy version; the random follows.
const HELLO_HEADER: usize = 11;
/// Bytes a ClientHello record holds at least: the header and the random.
const HELLO_MIN: u64 = (HELLO_HEADER + SECRET_RANDOM_MAX) as u64;

/// `struct iovec` and the offset of `msg_iov` in `struct user_msghdr` (x86-64).
#[repr(C)]
#[derive(Clone, Copy)]
struct IoVec {
    base: u64,
    len: u64,
}
const MSGHDR_IOV: u64 = 16;

/// A socket read in flight: its fd and the start of its (first) buffer.
#[repr(C)]
#[derive(Clone, Copy)]
struct PendingRead {
    buffer: u64,
    fd: i32,
    _padding: u32,
}

/// pid_tgid -> the thread's read-family syscall in flight (while ClientHellos are watched):
/// its return tells how many bytes the buffer got. An LRU: a thread that exits inside a read
/// leaves its entry behind.
#[map]
static HELLO_READS: LruHashMap<u64, PendingRead> =
    LruHashMap::with_max_entries(capacity::THREADS, 0);

/// Whether the run watches ClientHellos.
#[inline(always)]
pub fn watching() -> bool {
    crate::read_config(&WATCH_HELLOS) != 0
}

/// A socket write (`write`, `writev`, `sendto`, `sendmsg`) of `fd`: if its first buffer is a
/// ClientHello, reports it; a read of the same families is noted, to be looked at when it
/// returns. A subprogram of its own: the syscall hook's stack stays as it is.
#[inline(never)]
pub fn socket_io(pid_tgid: u64, fd: i32, id: u64, regs: *const pt_regs) {
    // `regs` is the syscall's saved user registers (the architecture's argument registers).
    let (Some(second), Some(third)) = (
        crate::arch::syscall_argument::<1>(regs),
        crate::arch::syscall_argument::<2>(regs),
    ) else {
        return;
    };
    let (buffer, length) = match id {
        crate::syscall_nr::WRITE
        | crate::syscall_nr::SENDTO
        | crate::syscall_nr::READ
        | crate::syscall_nr::RECVFROM => (second, third),
        crate::syscall_nr::WRITEV | crate::syscall_nr::READV => match first_iovec(second) {
            Some(iovec) => iovec,
            None => return,
        },
        crate::syscall_nr::SENDMSG | crate::syscall_nr::RECVMSG => {
            // SAFETY: bpf_probe_read_user checks the address.
            let Ok(iov) = (unsafe { bpf_probe_read_user((second + MSGHDR_IOV) as *const u64) })
            else {
                return;
            };
            match first_iovec(iov) {
                Some(iovec) => iovec,
                None => return,
            }
        }
        _ => return,
    };
    if length < HELLO_MIN {
        return;
    }
    if matches!(
        id,
        crate::syscall_nr::READ
            | crate::syscall_nr::READV
            | crate::syscall_nr::RECVFROM
            | crate::syscall_nr::RECVMSG
    ) {
        // Read at the return, when the buffer holds what came.
        let read = PendingRead {
            buffer,
            fd,
            _padding: 0,
        };
        let _ = HELLO_READS.insert(&pid_tgid, &read, 0);
        return;
    }
    emit_if_hello(pid_tgid, fd, buffer);
}

/// The raw `sys_exit` tracepoint, attached only while ClientHellos are watched: a socket read
/// noted at its entry is looked at now that its buffer is filled.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn probectl_sys_exit(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out at once.
    let Some(read) = (unsafe { HELLO_READS.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = HELLO_READS.remove(&pid_tgid);
    // sys_exit's TP_PROTO: (struct pt_regs *regs, long ret).
    let returned: i64 = ctx.arg(1);
    if returned >= HELLO_MIN as i64 {
        emit_if_hello(pid_tgid, read.fd, read.buffer);
    }
    0
}

/// Reports the ClientHello at `buffer` (user memory, at least [`HELLO_MIN`] bytes), if it
/// is one.
#[inline(always)]
fn emit_if_hello(pid_tgid: u64, fd: i32, buffer: u64) {
    // SAFETY: bpf_probe_read_user checks the address.
    let Ok(header) = (unsafe { bpf_probe_read_user(buffer as *const [u8; HELLO_HEADER]) }) else {
        return;
    };
    if header[0] != 22 || header[1] != 3 || header[5] != 1 {
        return;
    }
    let Some(mut entry) = crate::reserve::<HelloRecord>() else {
        crate::count(stat::RECORDS_LOST, 1);
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points at a reserved, writable record of size_of::<HelloRecord>()
    // bytes; the helper checks the user address.
    let read = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            (&raw mut (*record).random).cast(),
            SECRET_RANDOM_MAX as u32,
            (buffer + HELLO_HEADER as u64) as *const core::ffi::c_void,
        )
    };
    if read != 0 {
        entry.discard(0);
        return;
    }
    // SAFETY: as above.
    unsafe {
        (&raw mut (*record).kind).write(record_kind::HELLO);
        (&raw mut (*record).pid).write((pid_tgid >> 32) as u32);
        (&raw mut (*record).tid).write(pid_tgid as u32);
        (&raw mut (*record).fd).write(fd);
        (&raw mut (*record).ts_ns).write(bpf_ktime_get_ns());
    }
    entry.submit(crate::wakeup_flags());
}

/// The first buffer of an iovec array (user memory).
#[inline(always)]
fn first_iovec(address: u64) -> Option<(u64, u64)> {
    // SAFETY: bpf_probe_read_user checks the address.
    let iovec = unsafe { bpf_probe_read_user(address as *const IoVec) }.ok()?;
    Some((iovec.base, iovec.len))
}
