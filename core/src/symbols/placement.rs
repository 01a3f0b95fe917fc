//! Probe placement by disassembly: where in a probed function the entry and exit uprobes go.
//!
//! A uprobe is an `int3` the kernel puts over an instruction. When it fires, the kernel runs
//! the BPF program, then has to carry out the instruction it replaced. Most instructions it
//! executes *out of line*: a copy in a per-process page, single-stepped with the trap flag,
//! which costs a second exception (#DB); on a virtual machine both exceptions leave the guest
//! (measured here: ~23 µs a hit). A few instructions it *emulates* instead, from the saved
//! registers, and returns straight to the program (~0.3 µs a hit). A uretprobe always needs a
//! breakpoint on the function's first instruction, so it pays whatever that one costs.
//!
//! The emulated set comes from `arch/x86/kernel/uprobes.c`, `arch_uprobe_analyze_insn()`:
//! `branch_setup_xol_ops()` takes `jmp rel8` (eb), `jmp rel32` (e9), `call rel32` (e8),
//! `jcc rel8` (70-7f), `jcc rel32` (0f 80-8f) and the one-byte `nop` (90), and refuses any of
//! them with a 0x66 prefix; `push_setup_xol_ops()` takes `push %reg` (50-57, and 41 50-57 for
//! %r8-%r15). Both exist unchanged from Linux 5.3 (push emulation) on, so on every kernel with
//! uprobe BPF cookies (5.15, which probectl needs). Linux 6.16 added the other nop forms
//! (`insn_is_nop()`), which are not used here: only exact encodings of the set above, without
//! any prefix, count as emulated ([`is_emulated`]).
//!
//! For each probed function this module looks for:
//! - an **entry point**: an emulated instruction on the straight line from the function's first
//!   instruction (so reached on every path, once), before anything writes a register the spec
//!   reads at entry or memory outside the function's own frame, with the stack pointer's
//!   offset from its value at the function's entry known;
//! - **exit points**: emulated branches or nops from which every path reaches a `ret` (or a
//!   call that never returns, such as `__stack_chk_fail`) without writing `%rax`, memory or
//!   calling anything: the return value, the out-parameters and the buffer the spec reads at
//!   return are final there. Every path from the entry point to a `ret` passes through exactly
//!   one of them, and they share one stack-pointer offset.
//!
//! The function is decoded linearly over its symbol's size; every branch target must be the
//! start of a decoded instruction. An indirect jump, a jump out of the function (a tail call
//! or a jump into a `.cold` part), or anything else not proven sends the function back to the
//! classic placement (entry uprobe + uretprobe), with the reason. A probe never lands inside
//! an instruction: sites are only ever starts of decoded instructions.
//!
//! Thin wrappers such as OpenSSL 3's `SSL_write_ex` (`sub; call internal; test; cmovs; add;
//! ret`) have no emulated instruction after the call, so they stay classic. Placing their exit
//! in the callee (offsets composed) was considered and not done: the callee is shared with
//! `SSL_write` (so its exit would fire for both, told apart only by the stack offset), and the
//! wrapper still rewrites the callee's return value after the call (`cmovs`), so what the
//! callee returns is not what the wrapper returns. Above all, in Debian's OpenSSL 3.0 the callee
//! (`ssl_write_internal`, `ssl_read_internal`) leaves through an indirect tail call
//! (`jmp *%rax` to the method's write or read), so its exits could not be proven either.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::Path;

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess,
    OpKind, Register,
};

use crate::spec::{Abi, LengthRef, Probe};
use crate::symbols::{ElfFile, FileId, FunctionSymbol, Machine, SymbolCache};

/// How probes are placed: `--placement classic|auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlacementMode {
    /// Entry uprobe at the function's start and a uretprobe, for every function.
    Classic,
    /// Emulated entry and exit points where the analysis proves them, classic elsewhere.
    #[default]
    Auto,
}

/// One plain uprobe of an emulated placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    /// Bytes from the function's first instruction.
    pub offset: u64,
    /// Where the uprobe is attached in the file.
    pub file_offset: u64,
    /// The stack pointer at this instruction minus the stack pointer at the function's entry.
    pub stack_offset: i64,
}

/// Where a function's probes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// An entry uprobe at the function's first instruction and a uretprobe.
    Classic { reason: String },
    /// Plain uprobes on emulated instructions: one entry point, one or more exit points (all
    /// at the same stack offset).
    Emulated { entry: Site, exits: Vec<Site> },
    /// A plain uprobe at the function's first instruction and one on every `ret` instruction
    /// (specs with `abi = "go"`: a uretprobe rewrites the return address on the stack, and Go
    /// copies goroutine stacks when they grow, so a Go program would crash on it).
    Returns { exits: Vec<Site> },
    /// The function cannot be probed safely (a Go function whose returns cannot all be
    /// found): the probe is skipped, with the reason.
    Refused { reason: String },
}

impl Placement {
    fn classic(reason: impl Into<String>) -> Placement {
        Placement::Classic {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Placement {
    /// `emulated +0x16/+0x38` (entry/exits, exits separated by commas) or `classic: <reason>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Classic { reason } => write!(f, "classic: {reason}"),
            Placement::Emulated { entry, exits } if exits.is_empty() => {
                write!(f, "emulated +{:#x} (entry only)", entry.offset)
            }
            Placement::Emulated { entry, exits } => {
                let exits: Vec<String> = exits
                    .iter()
                    .map(|exit| format!("+{:#x}", exit.offset))
                    .collect();
                write!(f, "emulated +{:#x}/{}", entry.offset, exits.join(","))
            }
            Placement::Returns { exits } => {
                let exits: Vec<String> = exits
                    .iter()
                    .map(|exit| format!("+{:#x}", exit.offset))
                    .collect();
                write!(f, "entry +0x0, ret {}", exits.join(","))
            }
            Placement::Refused { reason } => write!(f, "not probed: {reason}"),
        }
    }
}

/// The argument registers (0-based) a probe reads when its function is entered.
pub fn entry_arguments(probe: &Probe) -> BTreeSet<u8> {
    let mut arguments = BTreeSet::from([probe.buffer.0]);
    arguments.extend(probe.connection.map(|arg| arg.0));
    if let LengthRef::OutPointer(arg) | LengthRef::Argument(arg) = probe.length {
        arguments.insert(arg);
    }
    if let Some(record) = probe.tls_record {
        arguments.extend([record.ad.0, record.ad_length.0]);
    }
    arguments.extend(probe.vector.map(|vector| vector.count.0));
    arguments.extend(probe.only_if.as_ref().map(|filter| filter.argument.0));
    if let Some(secret) = &probe.secret {
        arguments.extend([
            secret.label.0,
            secret.client_random.argument().0,
            secret.secret.0,
            secret.secret_length.0,
        ]);
        arguments.extend(secret.label_length.map(|arg| arg.0));
        if let crate::spec::LengthOrConstant::Argument(arg) = secret.client_random_length {
            arguments.insert(arg.0);
        }
    }
    arguments
}

/// System V x86-64 integer argument registers.
const ARGUMENT_REGISTERS: [Register; 6] = [
    Register::RDI,
    Register::RSI,
    Register::RDX,
    Register::RCX,
    Register::R8,
    Register::R9,
];

/// Whether the kernel emulates the instruction with these exact bytes (see the module docs).
pub fn is_emulated(bytes: &[u8]) -> bool {
    matches!(
        bytes,
        // jcc rel8, jmp rel8
        [0x70..=0x7f, _] | [0xeb, _]
        // jcc rel32
        | [0x0f, 0x80..=0x8f, _, _, _, _]
        // call rel32, jmp rel32
        | [0xe8 | 0xe9, _, _, _, _]
        // nop
        | [0x90]
        // push %reg, push %r8-%r15
        | [0x50..=0x57]
        | [0x41, 0x50..=0x57]
    )
}

/// Places the probes of `symbol` in `path` for a spec reading `entry_arguments` at entry; with
/// `entry_only`, the entry point alone (a lifecycle probe has no return to catch).
pub fn place(
    path: &Path,
    symbol: &str,
    entry_arguments: &BTreeSet<u8>,
    mode: PlacementMode,
    entry_only: bool,
) -> Placement {
    if mode == PlacementMode::Classic {
        return Placement::classic("--placement classic");
    }
    let elf = match ElfFile::open(path) {
        Ok(elf) => elf,
        Err(error) => return Placement::classic(format!("cannot read the file: {error}")),
    };
    if let Some(reason) = not_analysed(&elf) {
        return Placement::classic(reason);
    }
    let function = match elf.functions(&[symbol]) {
        Ok(mut found) => match found.remove(symbol) {
            Some(function) => function,
            None => return Placement::classic("symbol not found"),
        },
        Err(error) => return Placement::classic(format!("cannot read the file: {error}")),
    };
    place_in(&elf, &function, entry_arguments, entry_only)
}

/// The entry and exit points (or, with `entry_only`, the entry point alone) of `function`.
fn place_in(
    elf: &ElfFile,
    function: &FunctionSymbol,
    entry_arguments: &BTreeSet<u8>,
    entry_only: bool,
) -> Placement {
    if entry_only {
        return place_entry(elf.bytes(), function, entry_arguments);
    }
    place_function(elf.bytes(), function, entry_arguments)
}

/// Places the probes of a function found without a symbol (`crate::symbols::locate`): its bounds come
/// from the analysis (or a pin), its entry is proven; a pin without a size stays classic.
fn place_located(
    path: &Path,
    function: &FunctionSymbol,
    entry_arguments: &BTreeSet<u8>,
    mode: PlacementMode,
    entry_only: bool,
) -> Placement {
    if mode == PlacementMode::Classic {
        return Placement::classic("--placement classic");
    }
    if function.size == 0 {
        return Placement::classic("pinned without a size");
    }
    match ElfFile::open(path) {
        Ok(elf) => match not_analysed(&elf) {
            Some(reason) => Placement::classic(reason),
            None => place_in(&elf, function, entry_arguments, entry_only),
        },
        Err(error) => Placement::classic(format!("cannot read the file: {error}")),
    }
}

/// Why the emulated placement does not apply to the file's code, if it does not: it knows
/// x86-64's emulated instructions only. On arm64 the kernel simulates branches (`B`, `BL`,
/// `B.cond`, `CBZ`, `TBZ`, `BR`, `BLR`, `RET`), `ADR`/`ADRP` and literal loads
/// (arch/arm64/kernel/probes/decode-insn.c), but which of those a function's entry and exits
/// could use, and what a simulated hit costs against a single-stepped one there, is not
/// measured: arm64 code gets the classic placement.
fn not_analysed(elf: &ElfFile) -> Option<String> {
    match elf.machine() {
        Machine::X86_64 => None,
        machine => Some(format!(
            "{machine} code: emulated placement is x86-64's only"
        )),
    }
}

/// The entry-only placement of one function whose code is in `file` (see [`entry_only`]).
fn place_entry(
    file: &[u8],
    function: &FunctionSymbol,
    entry_arguments: &BTreeSet<u8>,
) -> Placement {
    if function.ifunc {
        return Placement::classic("an ifunc resolver, not the function itself");
    }
    if entry_arguments.iter().any(|&arg| arg >= 6) {
        // Read relative to the stack pointer, which the entry-only search does not follow.
        return Placement::classic(
            "reads arguments from the stack: one entry uprobe at its first instruction",
        );
    }
    let start = function.file_offset as usize;
    let code = match start
        .checked_add(function.size as usize)
        .filter(|_| function.in_file && function.size > 0)
        .and_then(|end| file.get(start..end))
    {
        Some(code) => code,
        None => return Placement::classic("the function's code is not all in the file"),
    };
    match entry_only(code, function.address, entry_arguments) {
        Ok(offset) => Placement::Emulated {
            entry: Site {
                offset,
                file_offset: function.file_offset + offset,
                stack_offset: 0,
            },
            exits: Vec::new(),
        },
        Err(reason) => Placement::classic(reason),
    }
}

/// Places the probes of a Go function `symbol` of `path` (see [`place_returns`]).
fn go_placement(path: &Path, symbol: &str) -> Placement {
    let refuse = |reason: String| Placement::Refused { reason };
    let elf = match ElfFile::open(path) {
        Ok(elf) => elf,
        Err(error) => return refuse(format!("cannot read the file: {error}")),
    };
    let machine = elf.machine();
    match elf.functions(&[symbol]) {
        Ok(mut found) => match found.remove(symbol) {
            Some(function) if machine == Machine::Aarch64 => {
                // Where the runtime resumes a function after a recovered panic (arm64.rs).
                let deferreturn = elf
                    .functions(&[DEFERRETURN])
                    .ok()
                    .and_then(|mut found| found.remove(DEFERRETURN))
                    .map(|function| function.address);
                place_returns_arm64(elf.bytes(), &function, deferreturn)
            }
            Some(_) if machine != Machine::X86_64 => refuse(format!(
                "{machine} code: Go's returns are found in x86-64 and arm64 code only"
            )),
            Some(function) => place_returns(elf.bytes(), &function),
            None => refuse("symbol not found".into()),
        },
        Err(error) => refuse(format!("cannot read the file: {error}")),
    }
}

/// Places the probes of one function whose code is in `file` (the whole ELF file's bytes).
pub fn place_function(
    file: &[u8],
    function: &FunctionSymbol,
    entry_arguments: &BTreeSet<u8>,
) -> Placement {
    if function.ifunc {
        return Placement::classic("an ifunc resolver, not the function itself");
    }
    if function.size == 0 {
        return Placement::classic("the symbol has no size");
    }
    let start = function.file_offset as usize;
    let code = match start
        .checked_add(function.size as usize)
        .filter(|_| function.in_file)
        .and_then(|end| file.get(start..end))
    {
        Some(code) => code,
        None => return Placement::classic("the function's code is not all in the file"),
    };
    match analyze(code, function.address, entry_arguments) {
        Ok(Analysis { entry, exits }) => {
            let site = |(offset, stack_offset): (u64, i64)| Site {
                offset,
                file_offset: function.file_offset + offset,
                stack_offset,
            };
            Placement::Emulated {
                entry: site(entry),
                exits: exits.into_iter().map(site).collect(),
            }
        }
        Err(reason) => Placement::classic(reason),
    }
}

/// The entry point alone, for a probe that only runs when the function is entered (a
/// lifecycle function: `[[group.end]]`): the first emulated instruction of the function's
/// straight-line start, before which no register the probe reads is written. Every path from
/// the function start passes through it; a jump back into that start only runs the probe
/// again, which ending a connection twice tolerates. No stack offset is needed.
pub fn entry_only(
    code: &[u8],
    address: u64,
    entry_arguments: &BTreeSet<u8>,
) -> Result<u64, String> {
    let read_mask: u8 = entry_arguments
        .iter()
        .filter(|&&arg| arg < 6)
        .fold(0, |mask, &arg| mask | (1 << arg));
    let mut factory = InstructionInfoFactory::new();
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    while decoder.can_decode() {
        let instruction = decoder.decode();
        let offset = instruction.ip() - address;
        if instruction.is_invalid() {
            return Err(format!("undecodable bytes at +{offset:#x}"));
        }
        let at = offset as usize;
        if is_emulated(&code[at..at + instruction.len()]) {
            return Ok(offset);
        }
        if instruction.flow_control() != FlowControl::Next {
            let mnemonic = format!("{:?}", instruction.mnemonic()).to_lowercase();
            return Err(format!(
                "no emulated instruction before the first {mnemonic} at +{offset:#x}"
            ));
        }
        let overwritten = Effects::of(&mut factory, &instruction).writes_arguments & read_mask;
        if overwritten != 0 {
            return Err(format!(
                "arg{} is overwritten at +{offset:#x} before any emulated instruction",
                overwritten.trailing_zeros()
            ));
        }
    }
    Err("no emulated instruction in the function".into())
}

/// Places a Go function's probes (see [`Placement::Returns`]): its first instruction, and
/// every `ret` instruction found by decoding the function linearly over its size. Any jump out
/// of the function other than a call would be a return path without a `ret`: refused.
pub fn place_returns(file: &[u8], function: &FunctionSymbol) -> Placement {
    let refuse = |reason: String| Placement::Refused { reason };
    if function.size == 0 {
        return refuse("the symbol has no size".into());
    }
    let start = function.file_offset as usize;
    let Some(code) = start
        .checked_add(function.size as usize)
        .filter(|_| function.in_file)
        .and_then(|end| file.get(start..end))
    else {
        return refuse("the function's code is not all in the file".into());
    };
    let instructions = match decode(code, function.address) {
        Ok(instructions) => instructions,
        Err(reason) => return refuse(reason),
    };
    let end = function.address + function.size;
    let mut exits = Vec::new();
    for instruction in &instructions {
        let offset = instruction.ip() - function.address;
        match instruction.flow_control() {
            FlowControl::Return => exits.push(Site {
                offset,
                file_offset: function.file_offset + offset,
                stack_offset: 0,
            }),
            FlowControl::IndirectBranch => {
                return refuse(format!("an indirect jump at +{offset:#x}"));
            }
            FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch => {
                let target = instruction.near_branch_target();
                if target < function.address || target >= end {
                    return refuse(format!("a jump out of the function at +{offset:#x}"));
                }
            }
            _ => {}
        }
    }
    if exits.is_empty() {
        return refuse("no ret instruction".into());
    }
    Placement::Returns { exits }
}

/// The Go runtime's function whose calls are where it resumes a function that recovered from
/// a panic.
const DEFERRETURN: &str = "runtime.deferreturn";

/// [`place_returns`] for arm64 code: the `ret` instructions reached from the function's first
/// instruction (see [`crate::symbols::arm64`]).
pub fn place_returns_arm64(
    file: &[u8],
    function: &FunctionSymbol,
    deferreturn: Option<u64>,
) -> Placement {
    let refuse = |reason: String| Placement::Refused { reason };
    if function.size == 0 {
        return refuse("the symbol has no size".into());
    }
    if !function.address.is_multiple_of(4) {
        return refuse("the function does not start on a 4-byte boundary".into());
    }
    let start = function.file_offset as usize;
    let Some(code) = start
        .checked_add(function.size as usize)
        .filter(|_| function.in_file)
        .and_then(|end| file.get(start..end))
    else {
        return refuse("the function's code is not all in the file".into());
    };
    match crate::symbols::arm64::go_returns(code, function.address, deferreturn) {
        Ok(offsets) => Placement::Returns {
            exits: offsets
                .into_iter()
                .map(|offset| Site {
                    offset,
                    file_offset: function.file_offset + offset,
                    stack_offset: 0,
                })
                .collect(),
        },
        Err(reason) => refuse(reason),
    }
}

/// Entry and exit points as (offset from the function start, stack offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    pub entry: (u64, i64),
    pub exits: Vec<(u64, i64)>,
}

/// The stack pointer (and frame pointer) relative to the stack pointer at the function entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stack {
    sp: Option<i64>,
    bp: Option<i64>,
}

impl Stack {
    fn join(self, other: Stack) -> Stack {
        Stack {
            sp: self.sp.filter(|_| self.sp == other.sp),
            bp: self.bp.filter(|_| self.bp == other.bp),
        }
    }
}

/// What one decoded instruction does to control flow.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    successors: Vec<usize>,
    is_return: bool,
    is_call: bool,
    /// A branch (conditional or not) inside the function.
    is_branch: bool,
}

/// Decodes `code` (a function at `address`) and finds its entry and exit points.
pub fn analyze(
    code: &[u8],
    address: u64,
    entry_arguments: &BTreeSet<u8>,
) -> Result<Analysis, String> {
    let instructions = decode(code, address)?;
    let offset_of = |index: usize| instructions[index].ip() - address;
    let index_of: HashMap<u64, usize> = instructions
        .iter()
        .enumerate()
        .map(|(index, instruction)| (instruction.ip(), index))
        .collect();
    let nodes = control_flow(&instructions, &index_of, address, code.len() as u64)?;
    let mut factory = InstructionInfoFactory::new();
    let mut effects = Vec::with_capacity(instructions.len());
    for instruction in &instructions {
        effects.push(Effects::of(&mut factory, instruction));
    }
    let stacks = stack_offsets(&instructions, &nodes, &effects);
    let emulated: Vec<bool> = instructions
        .iter()
        .map(|instruction| {
            let at = (instruction.ip() - address) as usize;
            is_emulated(&code[at..at + instruction.len()])
        })
        .collect();

    // Every return must leave the stack as it was found: proof the offsets are right.
    for (index, node) in nodes.iter().enumerate() {
        if node.is_return && stacks[index].is_some_and(|stack| stack.sp != Some(0)) {
            return Err(format!(
                "stack depth unknown at the ret at +{:#x}",
                offset_of(index)
            ));
        }
    }

    let entry = find_entry(
        &instructions,
        &nodes,
        &effects,
        &stacks,
        &emulated,
        entry_arguments,
    )
    .map_err(|(index, why)| format!("{why} at +{:#x}", offset_of(index)))?;
    let entry_stack = stacks[entry]
        .and_then(|stack| stack.sp)
        .ok_or_else(|| "stack depth unknown at the entry point".to_string())?;

    let exits = find_exits(&nodes, &effects, &stacks, &emulated, entry)?;
    let exit_stack = stacks[exits[0]].and_then(|stack| stack.sp);
    if exits
        .iter()
        .any(|&exit| stacks[exit].and_then(|stack| stack.sp) != exit_stack)
    {
        return Err("exit points at different stack depths".into());
    }
    let exit_stack =
        exit_stack.ok_or_else(|| "stack depth unknown at an exit point".to_string())?;
    Ok(Analysis {
        entry: (offset_of(entry), entry_stack),
        exits: exits
            .into_iter()
            .map(|exit| (offset_of(exit), exit_stack))
            .collect(),
    })
}

fn decode(code: &[u8], address: u64) -> Result<Vec<Instruction>, String> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut instructions = Vec::new();
    while decoder.can_decode() {
        let instruction = decoder.decode();
        if instruction.is_invalid() {
            return Err(format!(
                "undecodable bytes at +{:#x}",
                instruction.ip() - address
            ));
        }
        instructions.push(instruction);
    }
    Ok(instructions)
}

fn control_flow(
    instructions: &[Instruction],
    index_of: &HashMap<u64, usize>,
    address: u64,
    size: u64,
) -> Result<Vec<Node>, String> {
    let end = address + size;
    let mut nodes = Vec::with_capacity(instructions.len());
    for (index, instruction) in instructions.iter().enumerate() {
        let at = instruction.ip() - address;
        let next = (index + 1 < instructions.len()).then_some(index + 1);
        let fall_through =
            || next.ok_or_else(|| format!("falls off the function's end at +{at:#x}"));
        let target = || -> Result<usize, String> {
            if !matches!(
                instruction.op0_kind(),
                OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
            ) {
                return Err(format!("far branch at +{at:#x}"));
            }
            let target = instruction.near_branch_target();
            if target == address {
                return Err(format!("jump back to the function's start at +{at:#x}"));
            }
            if target < address || target >= end {
                return Err(format!(
                    "jump out of the function (tail call or cold part) at +{at:#x}"
                ));
            }
            index_of
                .get(&target)
                .copied()
                .ok_or_else(|| format!("branch at +{at:#x} into the middle of an instruction"))
        };
        let mut node = Node {
            successors: Vec::new(),
            is_return: false,
            is_call: false,
            is_branch: false,
        };
        match instruction.flow_control() {
            FlowControl::Next => node.successors.push(fall_through()?),
            FlowControl::UnconditionalBranch => {
                node.is_branch = true;
                node.successors.push(target()?);
            }
            FlowControl::ConditionalBranch => {
                node.is_branch = true;
                node.successors.push(target()?);
                node.successors.push(fall_through()?);
            }
            FlowControl::IndirectBranch => return Err(format!("indirect jump at +{at:#x}")),
            // A call at the very end never returns (`__stack_chk_fail`, `abort`): no successor.
            FlowControl::Call | FlowControl::IndirectCall => {
                node.is_call = true;
                node.successors.extend(next);
            }
            FlowControl::Return => {
                if instruction.mnemonic() != Mnemonic::Ret {
                    return Err(format!("{:?} at +{at:#x}", instruction.mnemonic()));
                }
                node.is_return = true;
            }
            // Software interrupts and system calls come back; ud2 and the like do not.
            FlowControl::Interrupt => node.successors.extend(next),
            FlowControl::Exception => {}
            FlowControl::XbeginXabortXend => {
                return Err(format!("transactional memory instruction at +{at:#x}"))
            }
        }
        nodes.push(node);
    }
    Ok(nodes)
}

/// What an instruction writes, as far as placement cares.
#[derive(Debug, Clone, Copy, Default)]
struct Effects {
    /// Bit n: argument register n (any part of it) is written.
    writes_arguments: u8,
    writes_rax: bool,
    writes_rsp: bool,
    writes_rbp: bool,
    /// Memory is written other than through %rsp (the function's own frame, or pushes).
    writes_memory_outside_stack: bool,
    /// Memory is written at all.
    writes_memory: bool,
}

impl Effects {
    fn of(factory: &mut InstructionInfoFactory, instruction: &Instruction) -> Effects {
        let info = factory.info(instruction);
        let mut effects = Effects::default();
        for used in info.used_registers() {
            let written = matches!(
                used.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            );
            if !written {
                continue;
            }
            let full = used.register().full_register();
            if let Some(index) = ARGUMENT_REGISTERS.iter().position(|&arg| arg == full) {
                effects.writes_arguments |= 1 << index;
            }
            effects.writes_rax |= full == Register::RAX;
            effects.writes_rsp |= full == Register::RSP;
            effects.writes_rbp |= full == Register::RBP;
        }
        for memory in info.used_memory() {
            let written = matches!(
                memory.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            );
            if written {
                effects.writes_memory = true;
                if memory.base() != Register::RSP {
                    effects.writes_memory_outside_stack = true;
                }
            }
        }
        effects
    }
}

/// The stack at the start of each instruction reachable from the function's start (`None`:
/// not reached).
fn stack_offsets(
    instructions: &[Instruction],
    nodes: &[Node],
    effects: &[Effects],
) -> Vec<Option<Stack>> {
    let mut stacks: Vec<Option<Stack>> = vec![None; instructions.len()];
    if instructions.is_empty() {
        return stacks;
    }
    stacks[0] = Some(Stack {
        sp: Some(0),
        bp: None,
    });
    let mut work = vec![0usize];
    while let Some(index) = work.pop() {
        let Some(stack) = stacks[index] else {
            continue;
        };
        let after = step(&instructions[index], &nodes[index], &effects[index], stack);
        for &successor in &nodes[index].successors {
            let joined = match stacks[successor] {
                None => after,
                Some(known) => known.join(after),
            };
            if stacks[successor] != Some(joined) {
                stacks[successor] = Some(joined);
                work.push(successor);
            }
        }
    }
    stacks
}

/// The stack after one instruction (for a call: after the callee returned).
fn step(instruction: &Instruction, node: &Node, effects: &Effects, stack: Stack) -> Stack {
    let register = |operand: u32| {
        (instruction.op_kind(operand) == OpKind::Register).then(|| instruction.op_register(operand))
    };
    let immediate = || match instruction.op1_kind() {
        OpKind::Immediate8
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate32to64 => Some(instruction.immediate(1) as i64),
        _ => None,
    };
    let mut next = stack;
    let mnemonic = instruction.mnemonic();
    next.sp = if node.is_call {
        // The callee pops its return address: the stack is where it was.
        stack.sp
    } else if mnemonic == Mnemonic::Leave {
        stack.bp.map(|bp| bp + 8)
    } else if register(0) == Some(Register::RSP) {
        match (mnemonic, register(1), immediate()) {
            (Mnemonic::Sub, None, Some(value)) => stack.sp.map(|sp| sp - value),
            (Mnemonic::Add, None, Some(value)) => stack.sp.map(|sp| sp + value),
            (Mnemonic::Mov, Some(Register::RBP), _) => stack.bp,
            (Mnemonic::Lea, _, _)
                if instruction.memory_index() == Register::None
                    && instruction.memory_base() == Register::RSP =>
            {
                stack
                    .sp
                    .map(|sp| sp + instruction.memory_displacement64() as i64)
            }
            _ => None,
        }
    } else if matches!(mnemonic, Mnemonic::Push | Mnemonic::Pop) {
        let increment = i64::from(instruction.stack_pointer_increment());
        stack.sp.map(|sp| sp + increment)
    } else if effects.writes_rsp {
        None
    } else {
        stack.sp
    };
    next.bp = if mnemonic == Mnemonic::Mov
        && register(0) == Some(Register::RBP)
        && register(1) == Some(Register::RSP)
    {
        stack.sp
    } else if effects.writes_rbp {
        None
    } else {
        stack.bp
    };
    next
}

/// The first emulated instruction on the straight line from the function start, if nothing
/// before it spoils what the entry program reads. Errors name the instruction index.
fn find_entry(
    instructions: &[Instruction],
    nodes: &[Node],
    effects: &[Effects],
    stacks: &[Option<Stack>],
    emulated: &[bool],
    entry_arguments: &BTreeSet<u8>,
) -> Result<usize, (usize, String)> {
    let targets: BTreeSet<usize> = nodes
        .iter()
        .filter(|node| node.is_branch)
        .flat_map(|node| node.successors.first().copied())
        .collect();
    let read_mask: u8 = entry_arguments
        .iter()
        .filter(|&&arg| arg < 6)
        .fold(0, |mask, &arg| mask | (1 << arg));
    for index in 0..instructions.len() {
        if index > 0 && targets.contains(&index) {
            return Err((
                index,
                "a branch comes back before an emulated instruction".into(),
            ));
        }
        if emulated[index] {
            if stacks[index].and_then(|stack| stack.sp).is_none() {
                return Err((index, "stack depth unknown".into()));
            }
            return Ok(index);
        }
        let node = &nodes[index];
        if node.is_return || node.is_call || node.is_branch || node.successors.len() != 1 {
            let mnemonic = format!("{:?}", instructions[index].mnemonic()).to_lowercase();
            return Err((
                index,
                format!("no emulated instruction before the first {mnemonic}"),
            ));
        }
        let overwritten = effects[index].writes_arguments & read_mask;
        if overwritten != 0 {
            let arg = overwritten.trailing_zeros();
            return Err((
                index,
                format!("arg{arg} is overwritten before an emulated instruction"),
            ));
        }
        if effects[index].writes_memory_outside_stack {
            return Err((
                index,
                "memory is written before an emulated instruction".into(),
            ));
        }
    }
    Err((0, "no emulated instruction".into()))
}

/// Exit points: the last emulated branch or nop on each return path after which nothing
/// writes %rax or memory or calls anything; every path from `entry` to a `ret` must pass
/// exactly one.
fn find_exits(
    nodes: &[Node],
    effects: &[Effects],
    stacks: &[Option<Stack>],
    emulated: &[bool],
    entry: usize,
) -> Result<Vec<usize>, String> {
    let count = nodes.len();
    // `done[i]`: every path from i reaches a ret (or a call that never returns, or a trap)
    // through instructions that keep the return value and memory as they are. Least fixed
    // point: loops never qualify.
    let mut done = vec![false; count];
    loop {
        let mut changed = false;
        for index in (0..count).rev() {
            if done[index] {
                continue;
            }
            let node = &nodes[index];
            // A ret; or no successor at all (a call that never returns, ud2): no return.
            let holds = node.is_return
                || node.successors.is_empty()
                || (!node.is_call
                    && !effects[index].writes_rax
                    && !effects[index].writes_memory
                    && node.successors.iter().all(|&successor| done[successor]));
            if holds {
                done[index] = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    if done[entry] {
        return Err("returns without a branch after the entry point".into());
    }
    let reachable = |from: usize| -> Vec<bool> {
        let mut seen = vec![false; count];
        let mut work: Vec<usize> = nodes[from].successors.clone();
        while let Some(index) = work.pop() {
            if !std::mem::replace(&mut seen[index], true) {
                work.extend(nodes[index].successors.iter().copied());
            }
        }
        seen
    };
    let from_entry = reachable(entry);
    let candidates: Vec<usize> = (0..count)
        .filter(|&index| {
            done[index]
                && emulated[index]
                && !nodes[index].is_call
                && !nodes[index].successors.is_empty()
                && from_entry[index]
                && stacks[index].is_some_and(|stack| stack.sp.is_some())
        })
        .collect();
    let exits: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&candidate| {
            let after = reachable(candidate);
            !candidates
                .iter()
                .any(|&other| other != candidate && after[other])
        })
        .collect();
    if exits.is_empty() {
        return Err(
            "no emulated instruction on the return path once the return value is set".into(),
        );
    }
    // Every path from the entry point to a ret must cross an exit point.
    let mut seen = vec![false; count];
    let mut work = vec![entry];
    while let Some(index) = work.pop() {
        if std::mem::replace(&mut seen[index], true) || exits.contains(&index) {
            continue;
        }
        if nodes[index].is_return {
            return Err("a return path misses every exit point".into());
        }
        work.extend(nodes[index].successors.iter().copied());
    }
    Ok(exits)
}

impl SymbolCache {
    /// Placement of `probe`'s function in the file, with this cache's placement mode;
    /// computed once per (file, symbol, registers read at entry).
    pub fn placement(&mut self, id: FileId, path: &Path, probe: &Probe) -> Placement {
        let arguments = entry_arguments(probe);
        let entry_only = probe.entry_only();
        let key = (
            id,
            probe.symbol.clone(),
            arguments.iter().copied().collect(),
            entry_only,
        );
        if let Some(known) = self.placements.get(&key) {
            return known.clone();
        }
        let located = match self.located.get(&(id, probe.symbol.clone())) {
            Some(Ok(located)) => Some(located.function),
            _ => None,
        };
        let placement = if let Some(function) = located {
            place_located(path, &function, &arguments, self.placement_mode, entry_only)
        } else if probe.abi == Abi::Go {
            // Whatever the placement mode: a uretprobe is never safe in Go.
            go_placement(path, &probe.symbol)
        } else {
            place(
                path,
                &probe.symbol,
                &arguments,
                self.placement_mode,
                entry_only,
            )
        };
        self.placements.insert(key, placement.clone());
        placement
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SpecFile;
    use std::fmt::Write as _;
    use std::process::Command;

    /// The real Debian files, with the built-in group that probes each.
    const FILES: &[(&str, &str)] = &[
        ("openssl", "/usr/lib/x86_64-linux-gnu/libssl.so.3"),
        ("openssl", "/usr/bin/node"),
        ("boringssl", "/usr/lib/x86_64-linux-gnu/android/libssl.so.0"),
        ("gnutls", "/usr/lib/x86_64-linux-gnu/libgnutls.so.30"),
        ("nss", "/usr/lib/x86_64-linux-gnu/libnspr4.so"),
    ];

    /// `objdump -d` of one function: (offset from its start, mnemonic) per instruction.
    fn objdump(path: &str, function: &FunctionSymbol) -> Vec<(u64, String)> {
        objdump_with("objdump", path, function)
    }

    /// [`objdump`] with another architecture's objdump.
    fn objdump_with(objdump: &str, path: &str, function: &FunctionSymbol) -> Vec<(u64, String)> {
        let output = Command::new(objdump)
            .args([
                "-d",
                "--no-show-raw-insn",
                &format!("--start-address={:#x}", function.address),
                &format!("--stop-address={:#x}", function.address + function.size),
                path,
            ])
            .output()
            .expect("objdump");
        assert!(output.status.success(), "objdump {path}");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                let (address, rest) = line.trim_start().split_once(":\t")?;
                let address = u64::from_str_radix(address.trim(), 16).ok()?;
                let mnemonic = rest.split_whitespace().next()?.to_string();
                Some((address - function.address, mnemonic))
            })
            .collect()
    }

    /// tests/peers/guest_peer.go built by Debian's Go for arm64: Go's returns are the `ret`
    /// instructions binutils' arm64 disassembler finds in each probed function; C placement
    /// stays classic there.
    #[test]
    fn go_returns_in_an_arm64_executable() {
        let dir = std::env::temp_dir().join(format!("probectl-arm64-go-{}", std::process::id()));
        let program = crate::symbols::arm64::build_go_peer(&dir);
        let path = program.to_str().expect("path");
        let elf = ElfFile::open(&program).expect("elf");
        assert_eq!(elf.machine(), Machine::Aarch64);
        for symbol in [
            "crypto/tls.(*Conn).Write",
            "crypto/tls.(*Conn).Read",
            "crypto/tls.(*Conn).Close",
            "crypto/tls.(*Config).writeKeyLog",
        ] {
            let function = elf
                .functions(&[symbol])
                .expect("symbols")
                .remove(symbol)
                .expect("symbol");
            let rets: Vec<u64> = objdump_with("aarch64-linux-gnu-objdump", path, &function)
                .into_iter()
                .filter(|(_, mnemonic)| mnemonic == "ret")
                .map(|(offset, _)| offset)
                .collect();
            assert!(!rets.is_empty(), "{symbol}: objdump finds no ret");
            match go_placement(&program, symbol) {
                Placement::Returns { exits } => {
                    let offsets: Vec<u64> = exits.iter().map(|exit| exit.offset).collect();
                    assert_eq!(offsets, rets, "{symbol}");
                    for exit in &exits {
                        assert_eq!(exit.file_offset, function.file_offset + exit.offset);
                    }
                }
                other => panic!("{symbol}: {other}"),
            }
            assert_eq!(
                place(
                    &program,
                    symbol,
                    &BTreeSet::from([0]),
                    PlacementMode::Auto,
                    false
                ),
                Placement::classic("arm64 code: emulated placement is x86-64's only")
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn placements_of_the_real_libraries() {
        let specs = SpecFile::load(None).expect("built-in specs");
        let mut table = String::new();
        let mut emulated = 0;
        for (group, path) in FILES {
            let group = specs.group(group).expect("group");
            let elf = ElfFile::open(Path::new(path)).expect("file");
            let names: Vec<&str> = group.probes.iter().map(|p| p.symbol.as_str()).collect();
            let functions = elf.functions(&names).expect("symbols");
            let _ = writeln!(table, "{path}");
            for probe in &group.probes {
                let Some(function) = functions.get(&probe.symbol) else {
                    let _ = writeln!(table, "  {}: not defined", probe.symbol);
                    continue;
                };
                let placement = if probe.entry_only() {
                    place_entry(elf.bytes(), function, &entry_arguments(probe))
                } else {
                    place_function(elf.bytes(), function, &entry_arguments(probe))
                };
                let _ = writeln!(table, "  {}: {placement}", probe.symbol);
                // Every instruction boundary the decoder found is one objdump found.
                let listing = objdump(path, function);
                let start = function.file_offset as usize;
                let code = &elf.bytes()[start..start + function.size as usize];
                let ours: Vec<u64> = decode(code, function.address)
                    .expect("decodes")
                    .iter()
                    .map(|instruction| instruction.ip() - function.address)
                    .collect();
                let theirs: Vec<u64> = listing.iter().map(|(offset, _)| *offset).collect();
                assert_eq!(ours, theirs, "{path} {}", probe.symbol);
                let Placement::Emulated { entry, exits } = &placement else {
                    continue;
                };
                emulated += 1;
                for site in std::iter::once(entry).chain(exits) {
                    assert_eq!(site.file_offset, function.file_offset + site.offset);
                    let mnemonic = listing
                        .iter()
                        .find(|(offset, _)| *offset == site.offset)
                        .map(|(_, mnemonic)| mnemonic.as_str())
                        .unwrap_or_else(|| {
                            panic!(
                                "{path} {}+{:#x}: not an instruction start",
                                probe.symbol, site.offset
                            )
                        });
                    let emulated_kind = mnemonic.starts_with('j')
                        || mnemonic.starts_with("call")
                        || mnemonic.starts_with("push")
                        || mnemonic == "nop";
                    assert!(
                        emulated_kind,
                        "{path} {}+{:#x}: {mnemonic}",
                        probe.symbol, site.offset
                    );
                    assert!(site.stack_offset <= 0 && site.stack_offset > -4096);
                }
            }
        }
        // OpenSSL 3's SSL_write/SSL_read at least.
        assert!(emulated >= 2, "{table}");
        insta::assert_snapshot!(table);
    }

    /// Hand-assembled functions: (bytes, what is expected).
    fn analyze_bytes(code: &[u8], arguments: &[u8]) -> Result<Analysis, String> {
        analyze(code, 0x1000, &arguments.iter().copied().collect())
    }

    #[test]
    fn two_return_paths_meet_at_a_nop_after_the_return_value_is_set() {
        let code = [
            0x48, 0x83, 0xec, 0x08, // +0x0  sub $0x8,%rsp
            0x85, 0xff, // +0x4  test %edi,%edi
            0x74, 0x07, // +0x6  je +0xf
            0xb8, 0x01, 0x00, 0x00, 0x00, // +0x8  mov $1,%eax
            0xeb, 0x05, // +0xd  jmp +0x14
            0xb8, 0x02, 0x00, 0x00, 0x00, // +0xf  mov $2,%eax
            0x90, // +0x14 nop
            0x48, 0x83, 0xc4, 0x08, // +0x15 add $0x8,%rsp
            0xc3, // +0x19 ret
        ];
        assert_eq!(
            analyze_bytes(&code, &[0, 1]),
            Ok(Analysis {
                entry: (0x6, -8),
                exits: vec![(0x14, -8)],
            })
        );
    }

    #[test]
    fn what_is_not_proven_stays_classic() {
        let cases: &[(&str, &[u8], &str)] = &[
            (
                "argument overwritten",
                &[
                    0x48, 0x83, 0xec, 0x08, 0x31, 0xf6, 0x85, 0xd2, 0x78, 0x00, 0x48, 0x83, 0xc4,
                    0x08, 0xc3,
                ],
                "arg1 is overwritten before an emulated instruction at +0x4",
            ),
            (
                "tail call",
                &[
                    0x48, 0x83, 0xec, 0x08, 0x48, 0x83, 0xc4, 0x08, 0xe9, 0x00, 0x00, 0x00, 0x00,
                ],
                "jump out of the function (tail call or cold part) at +0x8",
            ),
            (
                "branch into an instruction",
                &[0x85, 0xff, 0x74, 0x01, 0xb8, 0x01, 0x00, 0x00, 0x00, 0xc3],
                "branch at +0x2 into the middle of an instruction",
            ),
            (
                "indirect jump",
                &[0x48, 0x89, 0xf8, 0xff, 0xe0],
                "indirect jump at +0x3",
            ),
            (
                "return value set after the last branch",
                &[0x85, 0xff, 0x74, 0x00, 0x89, 0xf8, 0xc3],
                "no emulated instruction on the return path once the return value is set",
            ),
            (
                "stack realigned",
                &[0x48, 0x83, 0xe4, 0xf0, 0x85, 0xff, 0x74, 0x00, 0xc3],
                "stack depth unknown at the ret at +0x8",
            ),
        ];
        for (what, code, reason) in cases {
            assert_eq!(
                analyze_bytes(code, &[0, 1, 2]),
                Err(reason.to_string()),
                "{what}"
            );
        }
    }

    #[test]
    fn the_emulated_set_is_the_kernels() {
        for emulated in [
            &[0x74, 0x05][..],
            &[0x0f, 0x85, 1, 0, 0, 0],
            &[0xeb, 0x10],
            &[0xe9, 1, 0, 0, 0],
            &[0xe8, 1, 0, 0, 0],
            &[0x90],
            &[0x55],
            &[0x41, 0x57],
        ] {
            assert!(is_emulated(emulated), "{emulated:x?}");
        }
        for stepped in [
            &[0x48, 0x83, 0xec, 0x18][..], // sub $0x18,%rsp
            &[0x66, 0x90],                 // xchg %ax,%ax: the 0x66 prefix is refused
            &[0x0f, 0x1f, 0x00],           // nopl: emulated only from Linux 6.16
            &[0xff, 0xe0],                 // jmp *%rax
            &[0xc3],                       // ret
            &[0x48, 0x50],                 // push with REX.W: only 0x41 is taken
        ] {
            assert!(!is_emulated(stepped), "{stepped:x?}");
        }
    }

    #[test]
    fn entry_only_stops_before_an_argument_is_overwritten() {
        let arg0 = BTreeSet::from([0]);
        // test %rdi,%rdi; je +0x10: the je.
        assert_eq!(
            entry_only(&[0x48, 0x85, 0xff, 0x74, 0x10], 0x1000, &arg0),
            Ok(3)
        );
        // push %rbp first: at the function start.
        assert_eq!(entry_only(&[0x55, 0xc3], 0x1000, &arg0), Ok(0));
        // mov %rax,%rdi overwrites arg0 before the push.
        assert!(entry_only(&[0x48, 0x89, 0xc7, 0x55], 0x1000, &arg0).is_err());
        // An indirect jump first (NSPR's PR_Close): no place.
        assert!(entry_only(&[0xff, 0x20], 0x1000, &arg0).is_err());
    }

    #[test]
    fn classic_mode_places_nothing() {
        let placement = place(
            Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3"),
            "SSL_write",
            &BTreeSet::from([0, 1]),
            PlacementMode::Classic,
            false,
        );
        assert_eq!(placement.to_string(), "classic: --placement classic");
    }
}
