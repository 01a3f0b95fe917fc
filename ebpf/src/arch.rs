//! What differs between the CPU architectures the BPF programs are built for (`bpf_target_arch`,
//! set by aya-build from the target probectl is built for, or by ebpf/build.rs from the host or
//! `AYA_BPF_TARGET_ARCH` when the crate is linted alone): which saved registers hold the
//! arguments of each calling convention, the stack pointer, the return value and Go's
//! goroutine, where stack arguments are, what a return does to the stack pointer, and the
//! syscall numbers. Everything else in the programs is the same on every architecture.
//!
//! Every register is read at a constant offset into the probe's context: the verifier
//! rejects a context load at a computed offset.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_probe_read_kernel, bpf_probe_read_user},
    programs::ProbeContext,
};
use probectl_common::{abi, MAX_ARGUMENT_REGISTERS};

/// The argument registers of a call, in argument order (see [`argument_registers`]).
pub type Registers = [u64; MAX_ARGUMENT_REGISTERS];

#[cfg(bpf_target_arch = "x86_64")]
mod imp {
    use aya_ebpf::bindings::pt_regs;
    use probectl_common::abi;

    use super::Registers;

    /// System V x86-64 passes six integer arguments in registers, the rest on the stack.
    pub const C_REGISTER_ARGUMENTS: u8 = 6;

    /// The stack address of C argument `index` (at least [`C_REGISTER_ARGUMENTS`]) at the
    /// function's first instruction: above the return address the call pushed.
    #[inline(always)]
    pub fn stack_argument(entry_sp: u64, index: u8) -> u64 {
        entry_sp.wrapping_add(8 * (index as u64 - 5))
    }

    /// What a return adds to the stack pointer: `ret` pops the return address.
    pub const RETURN_POPS: u64 = 8;

    /// Offset in the kernel's `struct pt_regs` of the register that holds Go's current
    /// goroutine (R14, Go's ABIInternal on amd64).
    pub const GOROUTINE_OFFSET: usize = core::mem::offset_of!(pt_regs, r14);

    /// Offsets in the kernel's `struct pt_regs` of a syscall's first three arguments (%rdi,
    /// %rsi, %rdx).
    pub const SYSCALL_ARG_OFFSETS: [usize; 3] = [
        core::mem::offset_of!(pt_regs, rdi),
        core::mem::offset_of!(pt_regs, rsi),
        core::mem::offset_of!(pt_regs, rdx),
    ];

    /// The argument registers of the calling convention: System V (RDI, RSI, RDX, RCX, R8,
    /// R9; the rest 0) or Go's register ABI (RAX, RBX, RCX, RDI, RSI, R8, R9, R10, R11).
    #[inline(always)]
    pub fn argument_registers(regs: *const pt_regs, calling_convention: u8) -> Registers {
        // SAFETY: `regs` is the probe's context (the probed thread's saved registers); each
        // read is a constant offset into it, which the verifier allows.
        unsafe {
            if calling_convention == abi::GO {
                [
                    core::ptr::read_volatile(&raw const (*regs).rax),
                    core::ptr::read_volatile(&raw const (*regs).rbx),
                    core::ptr::read_volatile(&raw const (*regs).rcx),
                    core::ptr::read_volatile(&raw const (*regs).rdi),
                    core::ptr::read_volatile(&raw const (*regs).rsi),
                    core::ptr::read_volatile(&raw const (*regs).r8),
                    core::ptr::read_volatile(&raw const (*regs).r9),
                    core::ptr::read_volatile(&raw const (*regs).r10),
                    core::ptr::read_volatile(&raw const (*regs).r11),
                ]
            } else {
                [
                    core::ptr::read_volatile(&raw const (*regs).rdi),
                    core::ptr::read_volatile(&raw const (*regs).rsi),
                    core::ptr::read_volatile(&raw const (*regs).rdx),
                    core::ptr::read_volatile(&raw const (*regs).rcx),
                    core::ptr::read_volatile(&raw const (*regs).r8),
                    core::ptr::read_volatile(&raw const (*regs).r9),
                    0,
                    0,
                    0,
                ]
            }
        }
    }

    /// The stack pointer.
    #[inline(always)]
    pub fn stack_pointer(regs: *const pt_regs) -> u64 {
        // SAFETY: `regs` is the probe's context; a constant offset into it.
        unsafe { (*regs).rsp }
    }

    /// The instruction pointer (at a uprobe hit: the probed address).
    #[inline(always)]
    pub fn instruction_pointer(regs: *const pt_regs) -> u64 {
        // SAFETY: `regs` is the probe's context; a constant offset into it.
        unsafe { (*regs).rip }
    }

    /// The return value register (RAX, for both conventions).
    #[inline(always)]
    pub fn return_value(regs: *const pt_regs) -> u64 {
        // SAFETY: `regs` is the probe's context; a constant offset into it.
        unsafe { (*regs).rax }
    }

    /// Go's current goroutine (R14).
    #[inline(always)]
    pub fn goroutine(regs: *const pt_regs) -> u64 {
        // SAFETY: `regs` is the probe's context; a constant offset into it.
        unsafe { (*regs).r14 }
    }

    /// x86-64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl): the socket I/O calls
    /// whose first argument is the fd, and close.
    pub mod syscall_nr {
        pub const READ: u64 = 0;
        pub const WRITE: u64 = 1;
        pub const CLOSE: u64 = 3;
        pub const READV: u64 = 19;
        pub const WRITEV: u64 = 20;
        pub const SENDTO: u64 = 44;
        pub const RECVFROM: u64 = 45;
        pub const SENDMSG: u64 = 46;
        pub const RECVMSG: u64 = 47;
    }
}

#[cfg(bpf_target_arch = "aarch64")]
mod imp {
    use aya_ebpf::bindings::pt_regs;
    use probectl_common::abi;

    use super::Registers;

    /// The start of the kernel's arm64 `struct pt_regs` (arch/arm64/include/asm/ptrace.h: a
    /// union with `struct user_pt_regs`), which is also what a uprobe program's context is
    /// (`bpf_user_pt_regs_t`). aya-ebpf's arm64 bindings leave `pt_regs` opaque, so its
    /// layout is written here; it is part of the kernel's user ABI.
    #[repr(C)]
    pub struct UserPtRegs {
        pub regs: [u64; 31],
        pub sp: u64,
        pub pc: u64,
        pub pstate: u64,
    }

    /// AAPCS64 passes eight integer arguments in X0-X7, the rest on the stack.
    pub const C_REGISTER_ARGUMENTS: u8 = 8;

    /// The stack address of C argument `index` (at least [`C_REGISTER_ARGUMENTS`]) at the
    /// function's first instruction: at the stack pointer (the return address is in LR, not
    /// on the stack), 8 bytes each.
    #[inline(always)]
    pub fn stack_argument(entry_sp: u64, index: u8) -> u64 {
        entry_sp.wrapping_add(8 * (index as u64 - 8))
    }

    /// What a return adds to the stack pointer: nothing (`ret` branches to LR).
    pub const RETURN_POPS: u64 = 0;

    /// Offset in the kernel's `struct pt_regs` of the register that holds Go's current
    /// goroutine (R28, Go's ABIInternal on arm64).
    pub const GOROUTINE_OFFSET: usize = 28 * 8;

    /// Offsets in the kernel's `struct pt_regs` of a syscall's first three arguments (X0-X2;
    /// at `sys_enter` X0 still holds the argument, the return value replaces it later).
    pub const SYSCALL_ARG_OFFSETS: [usize; 3] = [0, 8, 16];

    #[inline(always)]
    fn user(regs: *const pt_regs) -> *const UserPtRegs {
        regs.cast()
    }

    /// The argument registers of the calling convention: AAPCS64 (X0-X7; the ninth 0) or Go's
    /// register ABI on arm64 (R0-R15 for integers; the first nine are all a spec may name).
    #[inline(always)]
    pub fn argument_registers(regs: *const pt_regs, calling_convention: u8) -> Registers {
        let regs = user(regs);
        // SAFETY: `regs` is the probe's context (the probed thread's saved registers, laid out
        // as `UserPtRegs`); each read is a constant offset into it, which the verifier allows.
        unsafe {
            let eighth = if calling_convention == abi::GO {
                core::ptr::read_volatile(&raw const (*regs).regs[8])
            } else {
                0
            };
            [
                core::ptr::read_volatile(&raw const (*regs).regs[0]),
                core::ptr::read_volatile(&raw const (*regs).regs[1]),
                core::ptr::read_volatile(&raw const (*regs).regs[2]),
                core::ptr::read_volatile(&raw const (*regs).regs[3]),
                core::ptr::read_volatile(&raw const (*regs).regs[4]),
                core::ptr::read_volatile(&raw const (*regs).regs[5]),
                core::ptr::read_volatile(&raw const (*regs).regs[6]),
                core::ptr::read_volatile(&raw const (*regs).regs[7]),
                eighth,
            ]
        }
    }

    /// The stack pointer.
    #[inline(always)]
    pub fn stack_pointer(regs: *const pt_regs) -> u64 {
        // SAFETY: `regs` is the probe's context; a constant offset into it.
        unsafe { (*user(regs)).sp }
    }

    /// The instruction pointer (at a uprobe hit: the probed address).
    #[inline(always)]
    pub fn instruction_pointer(regs: *const pt_regs) -> u64 {
        // SAFETY: `regs` is the probe's context; a constant offset into it.
        unsafe { (*user(regs)).pc }
    }

    /// The return value register (X0, for both conventions).
    #[inline(always)]
    pub fn return_value(regs: *const pt_regs) -> u64 {
        // SAFETY: `regs` is the probe's context; a constant offset into it.
        unsafe { (*user(regs)).regs[0] }
    }

    /// Go's current goroutine (R28).
    #[inline(always)]
    pub fn goroutine(regs: *const pt_regs) -> u64 {
        // SAFETY: `regs` is the probe's context; a constant offset into it.
        unsafe { (*user(regs)).regs[28] }
    }

    /// arm64 syscall numbers (the generic table, include/uapi/asm-generic/unistd.h): the
    /// socket I/O calls whose first argument is the fd, and close.
    pub mod syscall_nr {
        pub const READ: u64 = 63;
        pub const WRITE: u64 = 64;
        pub const CLOSE: u64 = 57;
        pub const READV: u64 = 65;
        pub const WRITEV: u64 = 66;
        pub const SENDTO: u64 = 206;
        pub const RECVFROM: u64 = 207;
        pub const SENDMSG: u64 = 211;
        pub const RECVMSG: u64 = 212;
    }
}

pub use imp::{
    goroutine, instruction_pointer, return_value, stack_pointer, syscall_nr, C_REGISTER_ARGUMENTS,
    GOROUTINE_OFFSET, RETURN_POPS,
};

/// The argument registers of the spec's ABI, in argument order, read at constant context
/// offsets: a register chosen at run time is then selected among values, not addressed.
#[inline(always)]
pub fn argument_registers(ctx: &ProbeContext, calling_convention: u8) -> Registers {
    imp::argument_registers(ctx.regs, calling_convention)
}

/// Argument `index` of a C call at its entry, past the register arguments: on the stack,
/// where the caller left it. `entry_sp` is the stack pointer at the function's first
/// instruction. An unreadable stack reads as 0.
#[inline(always)]
pub fn stack_argument(entry_sp: u64, index: u8) -> u64 {
    let at = imp::stack_argument(entry_sp, index);
    // SAFETY: bpf_probe_read_user checks the address.
    unsafe { bpf_probe_read_user(at as *const u64) }.unwrap_or(0)
}

/// The first argument of a syscall, from the user registers the `sys_enter` tracepoint
/// passes (a kernel pointer).
#[inline(always)]
pub fn syscall_first_argument(regs: *const pt_regs) -> Option<u64> {
    syscall_argument::<0>(regs)
}

/// Argument `N` (0-2) of a syscall, from the user registers the `sys_enter` tracepoint passes
/// (a kernel pointer).
#[inline(always)]
pub fn syscall_argument<const N: usize>(regs: *const pt_regs) -> Option<u64> {
    // SAFETY: bpf_probe_read_kernel checks the address.
    unsafe {
        bpf_probe_read_kernel(
            (regs as *const u8).wrapping_add(imp::SYSCALL_ARG_OFFSETS[N]) as *const u64,
        )
    }
    .ok()
}

/// Whether the calling convention passes argument `index` in a register.
#[inline(always)]
pub fn in_register(calling_convention: u8, index: u8) -> bool {
    calling_convention == abi::GO || index < C_REGISTER_ARGUMENTS
}
