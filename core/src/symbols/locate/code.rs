//! The x86-64 code analysis behind [`crate::symbols::locate`]: where a string is referenced, which
//! function holds a reference, and what a library's error-reporting call there says.
//!
//! Nothing here trusts a byte pattern. A reference is a decoded instruction that loads the
//! string's address; a function is a direct call target from which control flow, followed
//! instruction by instruction, reaches the reference; the error report is the call that the
//! loaded address reaches as its file argument, with the library and reason codes that the
//! same straight-line code loads into the other argument registers. Anything that cannot be
//! followed that way gives no answer, never a guess.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use iced_x86::{
    Code as Opcode, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory,
    OpAccess, OpKind, Register,
};

use crate::symbols::LoadSegment;

/// How far from a function's entry its code may reach (bytes): bounds every walk.
const MAX_FUNCTION_BYTES: u64 = 256 * 1024;
/// Instructions decoded for one function at most.
const MAX_FUNCTION_INSTRUCTIONS: usize = 65_536;
/// Instructions looked at before a reference (the same straight line) and after it (up to the
/// error call, through unconditional jumps).
const MAX_BACKWARD: usize = 16;
const MAX_FORWARD: usize = 24;

/// The executable code of one ELF file, by virtual address.
pub struct Code<'a> {
    file: &'a [u8],
    segments: Vec<LoadSegment>,
    position_independent: bool,
    /// Every direct call target in executable code and every function start of the unwind
    /// table, sorted: the function entries the file itself proves. Scanned when first needed.
    call_targets: std::cell::OnceCell<Vec<u64>>,
    /// The unwind table's function starts (`ElfFile::unwind_function_starts`): the entries
    /// of code that is only called indirectly (through the GOT, a vtable).
    unwind_starts: Vec<u64>,
}

/// A function found by flow from a proven entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub entry: u64,
    /// One past the last byte of any instruction reached from the entry.
    pub end: u64,
    /// The instructions reached, by address.
    instructions: BTreeMap<u64, Instruction>,
    /// Addresses some branch of the function jumps to.
    branch_targets: BTreeSet<u64>,
}

impl Function {
    /// Whether an instruction of the function starts at `address`.
    pub fn contains(&self, address: u64) -> bool {
        self.instructions.contains_key(&address)
    }

    /// Direct call targets of the function's calls.
    pub fn callees(&self) -> BTreeSet<u64> {
        self.instructions
            .values()
            .filter(|instruction| instruction.flow_control() == FlowControl::Call)
            .filter(|instruction| instruction.op0_kind() == OpKind::NearBranch64)
            .map(Instruction::near_branch_target)
            .collect()
    }
}

/// Pointers a field path follows at most (`ssl->s3->client_random`: one).
pub const FIELD_MAX_POINTERS: usize = 2;

/// A field reached from a struct pointer: load the 8-byte pointer at each offset of `pointers`
/// in turn, then add `offset`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath {
    pub pointers: Vec<i64>,
    pub offset: i64,
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = "arg".to_string();
        for pointer in &self.pointers {
            text = format!("*({text}+{pointer:#x})");
        }
        write!(f, "{text}+{:#x}", self.offset)
    }
}

/// One error report: `(library, reason)` as loaded into the call's argument registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ErrorSite {
    pub library: u64,
    pub reason: u64,
}

/// The System V argument registers of `ERR_put_error(library, unused, reason, file, line)`,
/// the function BoringSSL's and aws-lc's `OPENSSL_PUT_ERROR` expands to.
const LIBRARY_REGISTER: Register = Register::RDI;
const REASON_REGISTER: Register = Register::RDX;
const FILE_REGISTER: Register = Register::RCX;

impl<'a> Code<'a> {
    pub fn new(
        file: &'a [u8],
        segments: Vec<LoadSegment>,
        position_independent: bool,
        unwind_starts: Vec<u64>,
    ) -> Self {
        Code {
            file,
            segments,
            position_independent,
            call_targets: std::cell::OnceCell::new(),
            unwind_starts,
        }
    }

    fn call_targets(&self) -> &[u64] {
        self.call_targets.get_or_init(|| self.scan_call_targets())
    }

    /// The file's bytes from virtual address `address` to the end of its segment.
    fn bytes_at(&self, address: u64, executable: bool) -> Option<&'a [u8]> {
        let segment = self.segments.iter().find(|segment| {
            segment.executable == executable
                && address >= segment.address
                && address < segment.address + segment.file_size
        })?;
        let start = usize::try_from(address - segment.address + segment.file_offset).ok()?;
        let end = usize::try_from(segment.file_offset + segment.file_size).ok()?;
        self.file.get(start..end)
    }

    fn executable_segments(&self) -> impl Iterator<Item = (&LoadSegment, &'a [u8])> + '_ {
        self.segments
            .iter()
            .filter(|segment| segment.executable)
            .filter_map(|segment| {
                let start = usize::try_from(segment.file_offset).ok()?;
                let end = start.checked_add(usize::try_from(segment.file_size).ok()?)?;
                Some((segment, self.file.get(start..end)?))
            })
    }

    /// Addresses of the NUL-terminated strings that end with `suffix` (a source path's tail,
    /// such as `ssl/ssl_lib.cc`), wherever a loaded segment holds them.
    pub fn strings_ending_with(&self, suffix: &str) -> Vec<u64> {
        let mut needle = suffix.as_bytes().to_vec();
        needle.push(0);
        let mut found = BTreeSet::new();
        for at in memchr::memmem::find_iter(self.file, &needle) {
            let start = self.file[..at]
                .iter()
                .rposition(|&byte| byte == 0)
                .map_or(0, |nul| nul + 1);
            let offset = start as u64;
            if let Some(segment) = self.segments.iter().find(|segment| {
                offset >= segment.file_offset && offset < segment.file_offset + segment.file_size
            }) {
                found.insert(offset - segment.file_offset + segment.address);
            }
        }
        found.into_iter().collect()
    }

    /// Addresses of the NUL-terminated string `text`, wherever a loaded segment holds it: a
    /// string of its own, or the tail of a longer one (linkers merge a string into another
    /// that ends with it, and code then loads the address of that tail).
    pub fn string_addresses(&self, text: &str) -> Vec<u64> {
        let mut needle = text.as_bytes().to_vec();
        needle.push(0);
        let mut found = BTreeSet::new();
        for at in memchr::memmem::find_iter(self.file, &needle) {
            let offset = at as u64;
            if let Some(segment) = self.segments.iter().find(|segment| {
                !segment.executable
                    && offset >= segment.file_offset
                    && offset < segment.file_offset + segment.file_size
            }) {
                found.insert(offset - segment.file_offset + segment.address);
            }
        }
        found.into_iter().collect()
    }

    /// The target of the first direct call after the instruction at `site`, on the straight
    /// line from it (plain instructions, and direct unconditional jumps followed): `None` when
    /// anything else comes first, or nothing within a few instructions.
    pub fn call_after(&self, site: u64) -> Option<u64> {
        let mut address = self.decode_at(site)?.next_ip();
        for _ in 0..MAX_FORWARD {
            let instruction = self.decode_at(address)?;
            match instruction.flow_control() {
                FlowControl::Call if instruction.op0_kind() == OpKind::NearBranch64 => {
                    return Some(instruction.near_branch_target());
                }
                FlowControl::UnconditionalBranch
                    if instruction.op0_kind() == OpKind::NearBranch64 =>
                {
                    address = instruction.near_branch_target();
                }
                FlowControl::Next => address = instruction.next_ip(),
                _ => return None,
            }
        }
        None
    }

    /// The targets of the direct jumps that leave `function` (tail calls: a jump to another
    /// proven function entry).
    pub fn tail_jumps(&self, function: &Function) -> BTreeSet<u64> {
        function
            .instructions
            .values()
            .filter(|instruction| instruction.flow_control() == FlowControl::UnconditionalBranch)
            .filter(|instruction| instruction.op0_kind() == OpKind::NearBranch64)
            .map(Instruction::near_branch_target)
            .filter(|&target| !function.contains(target) && self.is_call_target(target))
            .collect()
    }

    /// Where the field that `function` (an accessor) copies out lies, from the struct its
    /// argument register `argument` points at: the source (second argument) of the first
    /// direct call it makes (a `memcpy`), as straight-line code computes it from the argument
    /// (`mov 0x30(%rdi),%rax; add $0x30,%rax; mov %rax,%rsi`: through a pointer); or, where the
    /// copy is inlined and nothing is called, the one displacement of every memory operand
    /// based on the argument alone (`lea 0x160(%rdi),%rsi`, `mov 0x160(%rdi),%rdx`), in address
    /// order until the register is written. `None` when neither gives one answer.
    pub fn field_path(&self, function: &Function, argument: Register) -> Option<FieldPath> {
        let mut factory = InstructionInfoFactory::new();
        let mut known: HashMap<Register, FieldPath> = HashMap::new();
        known.insert(argument, FieldPath::default());
        let mut offsets = BTreeSet::new();
        let mut argument_live = true;
        for instruction in function.instructions.values() {
            if instruction.flow_control() == FlowControl::Call {
                if instruction.op0_kind() == OpKind::NearBranch64 {
                    return known.get(&Register::RSI).cloned();
                }
                return None;
            }
            if argument_live {
                for operand in 0..instruction.op_count() {
                    if instruction.op_kind(operand) == OpKind::Memory
                        && instruction.memory_base() == argument
                        && instruction.memory_index() == Register::None
                    {
                        offsets.insert(instruction.memory_displacement64() as i64);
                    }
                }
            }
            let destination = instruction.op0_register().full_register();
            let base = |known: &HashMap<Register, FieldPath>| {
                (instruction.memory_index() == Register::None)
                    .then(|| {
                        known
                            .get(&instruction.memory_base().full_register())
                            .cloned()
                    })
                    .flatten()
            };
            let value = match instruction.code() {
                Opcode::Lea_r64_m => base(&known).map(|mut path| {
                    path.offset += instruction.memory_displacement64() as i64;
                    path
                }),
                Opcode::Mov_r64_rm64 if instruction.op1_kind() == OpKind::Memory => base(&known)
                    .and_then(|path| {
                        (path.pointers.len() < FIELD_MAX_POINTERS).then(|| {
                            let mut pointers = path.pointers;
                            pointers.push(path.offset + instruction.memory_displacement64() as i64);
                            FieldPath {
                                pointers,
                                offset: 0,
                            }
                        })
                    }),
                Opcode::Mov_r64_rm64 | Opcode::Mov_rm64_r64
                    if instruction.op0_kind() == OpKind::Register
                        && instruction.op1_kind() == OpKind::Register =>
                {
                    known
                        .get(&instruction.op1_register().full_register())
                        .cloned()
                }
                Opcode::Add_rm64_imm8 | Opcode::Add_rm64_imm32
                    if instruction.op0_kind() == OpKind::Register =>
                {
                    known.get(&destination).cloned().map(|mut path| {
                        path.offset += instruction.immediate32to64();
                        path
                    })
                }
                _ => None,
            };
            for used in factory.info(instruction).used_registers() {
                if matches!(
                    used.access(),
                    OpAccess::Write
                        | OpAccess::CondWrite
                        | OpAccess::ReadWrite
                        | OpAccess::ReadCondWrite
                ) {
                    let register = used.register().full_register();
                    known.remove(&register);
                    if register == argument {
                        argument_live = false;
                    }
                }
            }
            if let Some(value) = value {
                known.insert(destination, value);
            }
        }
        match offsets.len() {
            1 => offsets.into_iter().next().map(|offset| FieldPath {
                pointers: Vec::new(),
                offset,
            }),
            _ => None,
        }
    }

    /// Direct call targets (`call rel32`) that land at the start of executable code: every
    /// `e8` byte is read as a call, and kept only if its target is in an executable segment.
    /// A stray `e8` inside another instruction yields a random target, which only ever adds
    /// a candidate entry; [`Code::function_containing`] proves an entry by flow before using it.
    fn scan_call_targets(&self) -> Vec<u64> {
        let mut targets = Vec::new();
        for (segment, bytes) in self.executable_segments() {
            let (low, high) = (segment.address, segment.address + segment.file_size);
            for at in memchr::memchr_iter(0xe8, bytes) {
                let Some(rel) = bytes.get(at + 1..at + 5) else {
                    continue;
                };
                let Ok(rel) = <[u8; 4]>::try_from(rel) else {
                    continue;
                };
                let next = segment.address + at as u64 + 5;
                let target = next.wrapping_add_signed(i64::from(i32::from_le_bytes(rel)));
                if target >= low && target < high {
                    targets.push(target);
                }
            }
        }
        targets.extend_from_slice(&self.unwind_starts);
        targets.sort_unstable();
        targets.dedup();
        targets
    }

    /// Whether `address` is the target of some direct call.
    pub fn is_call_target(&self, address: u64) -> bool {
        self.call_targets().binary_search(&address).is_ok()
    }

    /// Instructions that load `target`'s address into a register: `mov r32, imm32` in a
    /// position-dependent executable, `lea r64, [rip + disp32]` in a position-independent one.
    /// Each is decoded and checked, not just matched.
    pub fn references(&self, target: u64) -> Vec<u64> {
        let mut sites = Vec::new();
        for (segment, bytes) in self.executable_segments() {
            let base = segment.address;
            if self.position_independent {
                // 48/4c 8d modrm(00 reg 101) disp32: 7 bytes, disp relative to the next one.
                for at in memchr::memchr_iter(0x8d, bytes) {
                    let Some(start) = at.checked_sub(1) else {
                        continue;
                    };
                    let (Some(&rex), Some(&modrm)) = (bytes.get(start), bytes.get(at + 1)) else {
                        continue;
                    };
                    if rex & 0xfb != 0x48 || modrm & 0xc7 != 0x05 {
                        continue;
                    }
                    let Some(disp) = bytes.get(at + 2..at + 6) else {
                        continue;
                    };
                    let Ok(disp) = <[u8; 4]>::try_from(disp) else {
                        continue;
                    };
                    let next = base + start as u64 + 7;
                    if next.wrapping_add_signed(i64::from(i32::from_le_bytes(disp))) == target {
                        sites.push(base + start as u64);
                    }
                }
            } else if let Ok(immediate) = u32::try_from(target) {
                for at in memchr::memmem::find_iter(bytes, &immediate.to_le_bytes()) {
                    // b8+r imm32, or 41 b8+r for r8d-r15d.
                    for back in [1usize, 2] {
                        let Some(start) = at.checked_sub(back) else {
                            continue;
                        };
                        sites.push(base + start as u64);
                    }
                }
            }
        }
        sites.retain(|&site| self.loads_address(site, target));
        sites.sort_unstable();
        sites.dedup();
        sites
    }

    /// Whether the instruction decoded at `site` loads `target` into a register.
    fn loads_address(&self, site: u64, target: u64) -> bool {
        let Some(instruction) = self.decode_at(site) else {
            return false;
        };
        match instruction.code() {
            Opcode::Mov_r32_imm32 => u64::from(instruction.immediate32()) == target,
            Opcode::Mov_rm32_imm32 => {
                instruction.op0_kind() == OpKind::Register
                    && u64::from(instruction.immediate32()) == target
            }
            Opcode::Lea_r64_m => {
                instruction.is_ip_rel_memory_operand()
                    && instruction.ip_rel_memory_address() == target
            }
            _ => false,
        }
    }

    fn decode_at(&self, address: u64) -> Option<Instruction> {
        let bytes = self.bytes_at(address, true)?;
        let bytes = &bytes[..bytes.len().min(16)];
        let mut decoder = Decoder::with_ip(64, bytes, address, DecoderOptions::NONE);
        let instruction = decoder.decode();
        (!instruction.is_invalid()).then_some(instruction)
    }

    /// The function holding the instruction at `site`: the nearest direct call target at or
    /// below it from which control flow reaches `site` exactly (see [`Code::follow`]).
    /// `None` when that is not proven.
    pub fn function_containing(&self, site: u64) -> Option<Function> {
        let targets = self.call_targets();
        let below = targets.partition_point(|&target| target <= site);
        let entry = *targets.get(below.checked_sub(1)?)?;
        if site - entry >= MAX_FUNCTION_BYTES {
            return None;
        }
        let function = self.follow(entry)?;
        function
            .instructions
            .contains_key(&site)
            .then_some(function)
    }

    /// Decodes the function entered at `entry` by following its control flow: straight on,
    /// both ways at conditional branches, to the target of direct jumps; not into another
    /// call target (a tail call), not through indirect jumps, returns, traps or invalid code.
    /// Fails when two paths disagree on an instruction boundary.
    pub fn follow(&self, entry: u64) -> Option<Function> {
        let limit = entry + MAX_FUNCTION_BYTES;
        let mut instructions: BTreeMap<u64, Instruction> = BTreeMap::new();
        let mut branch_targets = BTreeSet::new();
        let mut work = vec![entry];
        let inside = |address: u64| {
            address >= entry
                && address < limit
                && (address == entry || !self.is_call_target(address))
        };
        while let Some(start) = work.pop() {
            let mut address = start;
            loop {
                if instructions.contains_key(&address) {
                    break;
                }
                // An address inside an instruction already decoded: the paths disagree.
                if let Some((&before, previous)) = instructions.range(..address).next_back() {
                    if before + previous.len() as u64 > address {
                        return None;
                    }
                }
                if instructions.len() >= MAX_FUNCTION_INSTRUCTIONS {
                    return None;
                }
                let instruction = self.decode_at(address)?;
                let next = instruction.next_ip();
                if let Some((&after, _)) = instructions.range(address + 1..).next() {
                    if after < next {
                        return None;
                    }
                }
                instructions.insert(address, instruction);
                match instruction.flow_control() {
                    FlowControl::Next | FlowControl::Call | FlowControl::IndirectCall => {
                        address = next;
                        if !inside(address) {
                            break;
                        }
                    }
                    FlowControl::ConditionalBranch => {
                        let target = instruction.near_branch_target();
                        if inside(target) {
                            branch_targets.insert(target);
                            work.push(target);
                        }
                        address = next;
                        if !inside(address) {
                            break;
                        }
                    }
                    FlowControl::UnconditionalBranch => {
                        if instruction.op0_kind() == OpKind::NearBranch64 {
                            let target = instruction.near_branch_target();
                            if inside(target) {
                                branch_targets.insert(target);
                                work.push(target);
                            }
                        }
                        break;
                    }
                    _ => break,
                }
            }
        }
        let end = instructions
            .iter()
            .next_back()
            .map(|(&address, instruction)| address + instruction.len() as u64)?;
        Some(Function {
            entry,
            end,
            instructions,
            branch_targets,
        })
    }

    /// The error report that the reference at `site` (loading `file`, a source path) feeds:
    /// the library and reason codes in the argument registers at the next call, when the file
    /// is still in the file-argument register there. `None` for any other use of the string.
    pub fn error_site(&self, function: &Function, site: u64, file: u64) -> Option<ErrorSite> {
        // The straight line before the reference: no branch lands inside it.
        let mut start = site;
        for _ in 0..MAX_BACKWARD {
            if function.branch_targets.contains(&start) {
                break;
            }
            let Some((&before, instruction)) = function.instructions.range(..start).next_back()
            else {
                break;
            };
            if before + instruction.len() as u64 != start
                || instruction.flow_control() != FlowControl::Next
            {
                break;
            }
            start = before;
        }
        let mut values = Values::default();
        let mut factory = InstructionInfoFactory::new();
        let mut address = start;
        for _ in 0..MAX_BACKWARD + MAX_FORWARD {
            let instruction = function.instructions.get(&address)?;
            match instruction.flow_control() {
                FlowControl::Call => {
                    let library = *values.registers.get(&LIBRARY_REGISTER)?;
                    let reason = *values.registers.get(&REASON_REGISTER)?;
                    return (values.registers.get(&FILE_REGISTER) == Some(&file))
                        .then_some(ErrorSite { library, reason });
                }
                FlowControl::UnconditionalBranch
                    if instruction.op0_kind() == OpKind::NearBranch64 =>
                {
                    address = instruction.near_branch_target();
                    continue;
                }
                FlowControl::Next => {}
                _ => return None,
            }
            track(&mut values, instruction, &mut factory);
            address = instruction.next_ip();
        }
        None
    }
}

/// What the straight-line code before an error report is known to have loaded: registers, and
/// the values it pushed (size-optimised code loads small constants with `push imm8; pop reg`).
#[derive(Default)]
struct Values {
    registers: HashMap<Register, u64>,
    /// The values pushed since the line began, innermost last (`None`: not a known constant).
    pushed: Vec<Option<u64>>,
}

/// Updates the known register values for one instruction: constants loaded (directly or
/// through a push and a pop), addresses taken, registers copied; any other write forgets the
/// register.
fn track(values: &mut Values, instruction: &Instruction, factory: &mut InstructionInfoFactory) {
    let destination = instruction.op0_register().full_register();
    let known = match instruction.code() {
        Opcode::Pushq_imm8 | Opcode::Pushq_imm32 => {
            values
                .pushed
                .push(Some(instruction.immediate32to64() as u64));
            return;
        }
        Opcode::Push_r64 => {
            let value = values.registers.get(&destination).copied();
            values.pushed.push(value);
            return;
        }
        Opcode::Pop_r64 => values.pushed.pop().flatten(),
        Opcode::Mov_r32_imm32 => Some(u64::from(instruction.immediate32())),
        Opcode::Mov_rm32_imm32 if instruction.op0_kind() == OpKind::Register => {
            Some(u64::from(instruction.immediate32()))
        }
        Opcode::Mov_r64_imm64 => Some(instruction.immediate64()),
        Opcode::Mov_rm64_imm32 if instruction.op0_kind() == OpKind::Register => {
            Some(instruction.immediate32to64() as u64)
        }
        Opcode::Lea_r64_m if instruction.is_ip_rel_memory_operand() => {
            Some(instruction.ip_rel_memory_address())
        }
        Opcode::Xor_r32_rm32 | Opcode::Xor_r64_rm64
            if instruction.op1_kind() == OpKind::Register
                && instruction.op0_register() == instruction.op1_register() =>
        {
            Some(0)
        }
        Opcode::Mov_r64_rm64 | Opcode::Mov_rm64_r64
            if instruction.op0_kind() == OpKind::Register
                && instruction.op1_kind() == OpKind::Register =>
        {
            values
                .registers
                .get(&instruction.op1_register().full_register())
                .copied()
        }
        _ => None,
    };
    let info = factory.info(instruction);
    for used in info.used_registers() {
        if matches!(
            used.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        ) {
            values.registers.remove(&used.register().full_register());
        }
    }
    if let Some(value) = known {
        values.registers.insert(destination, value);
    }
}
