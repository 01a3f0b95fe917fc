//! Reading what an fd is, from the kernel's own structures: task -> files -> fdtable -> file
//! -> socket -> sock. The member offsets come from user space (read from the kernel's BTF), so
//! this works on any kernel with BTF, without kprobes and without races against close().

use aya_ebpf::helpers::{bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel};
use probectl_common::{
    capacity, family, record_kind, AddressFilter, ConnectionRecord, KernelOffsets,
};

/// `--port`/`--host` as the kernel applies them; set by user space at load time (nothing to
/// match: every connection is copied).
#[no_mangle]
static ADDRESS_FILTER: AddressFilter = AddressFilter {
    ports: [0; capacity::FILTER_PORTS],
    hosts: [[0; 2]; capacity::FILTER_HOSTS],
    port_count: 0,
    host_count: 0,
};

/// S_IFMT and S_IFSOCK from linux/stat.h.
const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;

/// Reads a `T` at `base + offset` in kernel memory (0 on failure).
#[inline(always)]
fn read<T: Copy + Default>(base: u64, offset: u32) -> T {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one yields an error, not a fault.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }.unwrap_or_default()
}

/// One offset of the user-set `KernelOffsets`: read volatile, so that the compiler does not
/// fold in the static's load-time placeholder.
#[inline(always)]
fn offset(field: &u32) -> u32 {
    // SAFETY: a valid reference to a u32.
    unsafe { core::ptr::read_volatile(field) }
}

/// Whether `fd` of the current process is a socket (false when the kernel offsets are
/// unknown: nothing is inferred then). A BPF subprogram, like `emit_connection`.
#[inline(never)]
pub fn is_socket(o: &KernelOffsets, fd: i32) -> bool {
    if fd < 0 || offset(&o.valid) != 1 {
        return false;
    }
    // Field by field, not through `KernelOffsetsView::read`: this runs from the syscall hook,
    // and a copy of every offset would weigh on its stack.
    // SAFETY: helper without preconditions; the task pointer is only read through
    // bpf_probe_read_kernel.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, offset(&o.task_files));
    let fdtable: u64 = read(files, offset(&o.files_fdt));
    let max_fds: u32 = read(fdtable, offset(&o.fdtable_max_fds));
    if fd as u32 >= max_fds {
        return false;
    }
    let fd_array: u64 = read(fdtable, offset(&o.fdtable_fd));
    let file: u64 = read(fd_array, fd as u32 * 8);
    if file == 0 {
        return false;
    }
    let inode: u64 = read(file, offset(&o.file_inode));
    let mode: u16 = read(inode, offset(&o.inode_mode));
    mode & S_IFMT == S_IFSOCK
}

/// The second argument of [`emit_connection`].
#[inline(always)]
pub fn fd_and_flags(fd: i32, flags: u32) -> u64 {
    ((flags as u64) << 32) | fd as u32 as u64
}

/// Emits a [`ConnectionRecord`] for `fd` of the current process, and returns
/// `connection_flags::NOT_SELECTED` when its addresses are known and `ADDRESS_FILTER` does not
/// select them (its calls are then not copied), else 0. A function of its own (a BPF
/// subprogram): its stack frame is not added to the return probe's.
#[inline(never)]
pub fn emit_connection(tgid: u32, fd_and_flags: u64, connection: u64) -> u32 {
    // The fd (low half) and the handle's flags (high half) come in one argument: each
    // argument is kept in a register or on the stack across the ring buffer reservation, and
    // 6.1's combined stack limit has no room for one more slot.
    let fd = fd_and_flags as u32 as i32;
    let flags = (fd_and_flags >> 32) as u32;
    // The offsets are the global's, not a parameter, for the same reason.
    let offsets = &crate::KERNEL_OFFSETS;
    let Some(mut entry) = crate::reserve::<ConnectionRecord>() else {
        crate::count(probectl_common::stat::RECORDS_LOST, 1);
        // Not told to user space: copied, so that what it drops is counted there.
        return 0;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points at a reserved, writable ConnectionRecord in the ring buffer, 8-byte
    // aligned (as the ring gives every record) and a whole number of words long (its size is
    // checked in common); it is zeroed first so that no byte reaches user space uninitialised.
    // Word by word, volatile: `write_bytes` becomes a call of memset, a BPF subprogram whose
    // frame (32 bytes, the least) would push the return probe's calls together past the
    // kernel's 512.
    let record = unsafe {
        let words = record as *mut u64;
        for i in 0..core::mem::size_of::<ConnectionRecord>() / 8 {
            core::ptr::write_volatile(words.add(i), 0);
        }
        &mut *record
    };
    record.kind = record_kind::CONNECTION;
    record.pid = tgid;
    record.fd = fd;
    record.connection = connection;
    record.flags = flags;
    // SAFETY: helper without preconditions.
    record.ts_ns = unsafe { bpf_ktime_get_ns() };
    if offset(&offsets.valid) == 1 {
        describe_socket(offsets, fd, record);
    }
    // Decided from the record alone (a socket not described has family 0: selected), and no
    // value of it is held across describe_socket: one more live register there costs a stack
    // slot, and 6.1's limit for the return probe's calls together has none to spare.
    let not_selected = if selected(record) {
        0
    } else {
        probectl_common::connection_flags::NOT_SELECTED
    };
    record.flags |= not_selected;
    entry.submit(crate::wakeup_flags());
    not_selected
}

/// Whether `ADDRESS_FILTER` selects the connection `record` describes: either end's port is a
/// selected one, and either end's address is a selected one (each when any is given). A record
/// without inet addresses is selected: user space, which knows it has none, decides.
#[inline(always)]
fn selected(record: &ConnectionRecord) -> bool {
    let filter = &ADDRESS_FILTER;
    // SAFETY: valid references to fields of a static; volatile so that the load-time values
    // user space sets are seen.
    let (port_count, host_count) = unsafe {
        (
            core::ptr::read_volatile(&filter.port_count),
            core::ptr::read_volatile(&filter.host_count),
        )
    };
    if port_count == 0 && host_count == 0 {
        return true;
    }
    if record.family != family::INET && record.family != family::INET6 {
        return true;
    }
    if port_count != 0 {
        let mut found = false;
        for i in 0..capacity::FILTER_PORTS {
            if i as u32 >= port_count {
                break;
            }
            // SAFETY: as above.
            let port = unsafe { core::ptr::read_volatile(&filter.ports[i]) };
            if port == record.local_port || port == record.remote_port {
                found = true;
                break;
            }
        }
        if !found {
            return false;
        }
    }
    if host_count != 0 {
        // The record's addresses are read in place, as words, at each comparison (not held
        // across the loop, for the same reason).
        let local = record.local_addr.as_ptr() as *const u64;
        let remote = record.remote_addr.as_ptr() as *const u64;
        let mut found = false;
        for i in 0..capacity::FILTER_HOSTS {
            if i as u32 >= host_count {
                break;
            }
            // SAFETY: as above.
            let host = unsafe { core::ptr::read_volatile(&filter.hosts[i]) };
            // SAFETY: `local` and `remote` point at 16 bytes of the record, which the ring
            // buffer reserved 8-byte aligned; both fields are at 8-byte offsets in it
            // (`ConnectionRecord` is repr(C), its size checked in common).
            let matches = unsafe {
                (core::ptr::read_volatile(local) == host[0]
                    && core::ptr::read_volatile(local.add(1)) == host[1])
                    || (core::ptr::read_volatile(remote) == host[0]
                        && core::ptr::read_volatile(remote.add(1)) == host[1])
            };
            if matches {
                found = true;
                break;
            }
        }
        if !found {
            return false;
        }
    }
    true
}

#[inline(always)]
fn describe_socket(o: &KernelOffsets, fd: i32, record: &mut ConnectionRecord) {
    let offsets = KernelOffsetsView(o);
    // SAFETY: helper without preconditions; the task pointer is only read through
    // bpf_probe_read_kernel.
    let task = unsafe { bpf_get_current_task() };
    let offsets = offsets.read();
    let files: u64 = read(task, offsets.task_files);
    let fdtable: u64 = read(files, offsets.files_fdt);
    let max_fds: u32 = read(fdtable, offsets.fdtable_max_fds);
    if fd < 0 || fd as u32 >= max_fds {
        return;
    }
    let fd_array: u64 = read(fdtable, offsets.fdtable_fd);
    let file: u64 = read(fd_array, fd as u32 * 8);
    let inode: u64 = read(file, offsets.file_inode);
    record.inode = read(inode, offsets.inode_ino);
    let mode: u16 = read(inode, offsets.inode_mode);
    if mode & S_IFMT != S_IFSOCK {
        return;
    }
    let socket: u64 = read(file, offsets.file_private_data);
    record.socket_type = read(socket, offsets.socket_type);
    let sock: u64 = read(socket, offsets.socket_sk);
    record.family = read(sock, offsets.sock_family);
    match record.family {
        family::INET => {
            let remote: [u8; 4] = read(sock, offsets.sock_daddr);
            let local: [u8; 4] = read(sock, offsets.sock_rcv_saddr);
            record.remote_addr[..4].copy_from_slice(&remote);
            record.local_addr[..4].copy_from_slice(&local);
        }
        family::INET6 => {
            record.remote_addr = read(sock, offsets.sock_v6_daddr);
            record.local_addr = read(sock, offsets.sock_v6_rcv_saddr);
        }
        _ => return,
    }
    record.remote_port = u16::from_be(read(sock, offsets.sock_dport));
    record.local_port = read(sock, offsets.sock_num);
}

/// Reads the offsets this module needs, each volatile (see [`offset`]).
struct KernelOffsetsView<'a>(&'a KernelOffsets);

struct Offsets {
    task_files: u32,
    files_fdt: u32,
    fdtable_fd: u32,
    fdtable_max_fds: u32,
    file_private_data: u32,
    file_inode: u32,
    inode_mode: u32,
    inode_ino: u32,
    socket_type: u32,
    socket_sk: u32,
    sock_family: u32,
    sock_daddr: u32,
    sock_rcv_saddr: u32,
    sock_dport: u32,
    sock_num: u32,
    sock_v6_daddr: u32,
    sock_v6_rcv_saddr: u32,
}

impl KernelOffsetsView<'_> {
    #[inline(always)]
    fn read(&self) -> Offsets {
        let o = self.0;
        Offsets {
            task_files: offset(&o.task_files),
            files_fdt: offset(&o.files_fdt),
            fdtable_fd: offset(&o.fdtable_fd),
            fdtable_max_fds: offset(&o.fdtable_max_fds),
            file_private_data: offset(&o.file_private_data),
            file_inode: offset(&o.file_inode),
            inode_mode: offset(&o.inode_mode),
            inode_ino: offset(&o.inode_ino),
            socket_type: offset(&o.socket_type),
            socket_sk: offset(&o.socket_sk),
            sock_family: offset(&o.sock_family),
            sock_daddr: offset(&o.sock_daddr),
            sock_rcv_saddr: offset(&o.sock_rcv_saddr),
            sock_dport: offset(&o.sock_dport),
            sock_num: offset(&o.sock_num),
            sock_v6_daddr: offset(&o.sock_v6_daddr),
            sock_v6_rcv_saddr: offset(&o.sock_v6_rcv_saddr),
        }
    }
}
