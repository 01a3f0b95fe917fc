//! Symbol resolution with goblin: symbol name -> file offset to attach a uprobe at.
//!
//! `.dynsym` is searched first, then `.symtab` (unstripped binaries); versioned names such as
//! `SSL_read@@OPENSSL_3.0.0` match `SSL_read`. A Go executable's functions not found there
//! (stripped with `-ldflags "-s -w"`) are looked up in its pclntab (`crate::symbols::gosym`). A symbol's virtual address becomes a file offset
//! through the PT_LOAD program header that contains it. Results are cached per (inode, symbol).

pub mod arm64;
pub mod gosym;
pub mod locate;
pub mod placement;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use goblin::container::Ctx;
use goblin::elf::dynamic::{DT_RPATH, DT_RUNPATH};
use goblin::elf::section_header::{SHT_DYNAMIC, SHT_DYNSYM, SHT_SYMTAB};
use goblin::elf::{
    program_header::PT_GNU_EH_FRAME, program_header::PT_LOAD, sym, Elf, ProgramHeader,
    SectionHeader, Symtab,
};
use goblin::strtab::Strtab;
use scroll::Pread;

use crate::spec::Group;
use crate::spec::LocateRule;
use crate::symbols::locate::code::FieldPath;
use crate::symbols::locate::Found;
use crate::symbols::placement::{Placement, PlacementMode};
use crate::targets::FileId;

#[derive(Debug, thiserror::Error)]
pub enum SymbolError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an ELF file we can read: {message}")]
    NotElf { path: PathBuf, message: String },
}

/// The CPU architecture of an ELF file's code: what its probes' placement, the registers of
/// its calling conventions and the analysis of its code depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    X86_64,
    Aarch64,
    /// Another `e_machine` (`EM_NONE` for a header that cannot be read).
    Other(u16),
}

impl Machine {
    /// The architecture this probectl is built for: its BPF programs read that architecture's
    /// registers, so it traces programs of that architecture only.
    pub const fn native() -> Machine {
        if cfg!(target_arch = "aarch64") {
            Machine::Aarch64
        } else if cfg!(target_arch = "x86_64") {
            Machine::X86_64
        } else {
            Machine::Other(goblin::elf::header::EM_NONE)
        }
    }
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Machine::X86_64 => f.write_str("x86-64"),
            Machine::Aarch64 => f.write_str("arm64"),
            Machine::Other(machine) => write!(f, "ELF machine {machine}"),
        }
    }
}

/// An ELF file mapped read-only: goblin only touches the pages it parses, so that probing a
/// 100 MiB executable for a few symbols stays cheap.
pub struct ElfFile {
    path: PathBuf,
    map: memmap2::Mmap,
}

impl ElfFile {
    pub fn open(path: &Path) -> Result<ElfFile, SymbolError> {
        let open_error = |source| SymbolError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_error)?;
        // SAFETY: the mapping is private and read-only; a file changed underneath us while
        // mapped (a library being upgraded in place) could show inconsistent bytes, which
        // goblin treats as a malformed file, not as memory unsafety in our code.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(open_error)?;
        Ok(ElfFile {
            path: path.to_path_buf(),
            map,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's bytes (e.g. for a plugin looking for a version string).
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The file's GNU build id (`.note.gnu.build-id`) in hex: what identifies one build of an
    /// executable across hosts, paths and copies (the key of located functions' cache).
    pub fn build_id(&self) -> Option<String> {
        let lean = LeanElf::parse(&self.map).ok()?;
        let note = lean.section_bytes(".note.gnu.build-id")?;
        let word = |at: usize| -> Option<usize> {
            let bytes: [u8; 4] = note.get(at..at + 4)?.try_into().ok()?;
            usize::try_from(u32::from_le_bytes(bytes)).ok()
        };
        let (name_size, descriptor_size) = (word(0)?, word(4)?);
        let descriptor_start = 12 + name_size.div_ceil(4) * 4;
        let id = note.get(descriptor_start..descriptor_start.checked_add(descriptor_size)?)?;
        (!id.is_empty()).then(|| id.iter().map(|byte| format!("{byte:02x}")).collect())
    }

    /// The PT_LOAD segments as (virtual address, file offset, bytes in the file, executable).
    pub fn load_segments(&self) -> Vec<LoadSegment> {
        LeanElf::parse(&self.map)
            .map(|lean| {
                lean.program_headers
                    .iter()
                    .filter(|header| header.p_type == PT_LOAD)
                    .map(|header| LoadSegment {
                        address: header.p_vaddr,
                        file_offset: header.p_offset,
                        file_size: header.p_filesz,
                        executable: header.p_flags & goblin::elf::program_header::PF_X != 0,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The function starts of the file's unwind table (the `.eh_frame_hdr` search table that
    /// PT_GNU_EH_FRAME points at), sorted: every entry is where the compiler said a function
    /// (or a split-off part of one) begins. Empty when the file has no such table.
    pub fn unwind_function_starts(&self) -> Vec<u64> {
        let Ok(lean) = LeanElf::parse(&self.map) else {
            return Vec::new();
        };
        let Some(header) = lean
            .program_headers
            .iter()
            .find(|header| header.p_type == PT_GNU_EH_FRAME)
        else {
            return Vec::new();
        };
        let (Ok(start), Ok(size)) = (
            usize::try_from(header.p_offset),
            usize::try_from(header.p_filesz),
        ) else {
            return Vec::new();
        };
        let Some(bytes) = start
            .checked_add(size)
            .and_then(|end| self.map.get(start..end))
        else {
            return Vec::new();
        };
        let bases = gimli::BaseAddresses::default().set_eh_frame_hdr(header.p_vaddr);
        let hdr = gimli::EhFrameHdr::new(bytes, gimli::LittleEndian);
        let Ok(parsed) = hdr.parse(&bases, 8) else {
            return Vec::new();
        };
        let Some(table) = parsed.table() else {
            return Vec::new();
        };
        let mut starts = Vec::new();
        let mut entries = table.iter(&bases);
        // A malformed entry ends the table: what was read before it stands.
        while let Ok(Some((location, _fde))) = entries.next() {
            if let gimli::Pointer::Direct(address) = location {
                starts.push(address);
            }
        }
        starts.sort_unstable();
        starts.dedup();
        starts
    }

    /// Whether the file is position independent (ET_DYN: a shared object or a PIE), so that
    /// its code reaches its data by `%rip`-relative addressing rather than absolute addresses.
    pub fn position_independent(&self) -> bool {
        Elf::parse_header(&self.map)
            .is_ok_and(|header| header.e_type == goblin::elf::header::ET_DYN)
    }

    /// The CPU architecture the file's code is for (its ELF header's `e_machine`).
    pub fn machine(&self) -> Machine {
        match Elf::parse_header(&self.map).map(|header| header.e_machine) {
            Ok(goblin::elf::header::EM_X86_64) => Machine::X86_64,
            Ok(goblin::elf::header::EM_AARCH64) => Machine::Aarch64,
            Ok(other) => Machine::Other(other),
            Err(_) => Machine::Other(goblin::elf::header::EM_NONE),
        }
    }

    /// The function at `address` whose code spans `size` bytes, as a symbol would give it.
    pub fn function_at(&self, address: u64, size: u64) -> Option<FunctionSymbol> {
        let lean = LeanElf::parse(&self.map).ok()?;
        let (file_offset, segment_left) = lean.file_offset(address)?;
        Some(FunctionSymbol {
            address,
            size,
            file_offset,
            in_file: size <= segment_left,
            ifunc: false,
        })
    }

    /// The file's RPATH and RUNPATH entries (colon-separated lists, `$ORIGIN` unexpanded).
    pub fn library_search_paths(&self) -> Vec<String> {
        let Ok(lean) = LeanElf::parse(&self.map) else {
            return Vec::new();
        };
        let Some(dynamic) = lean
            .sections
            .iter()
            .find(|section| section.sh_type == SHT_DYNAMIC)
        else {
            return Vec::new();
        };
        let Some(strings) = lean.strtab(dynamic.sh_link as usize) else {
            return Vec::new();
        };
        let start = dynamic.sh_offset as usize;
        let end = start
            .saturating_add(dynamic.sh_size as usize)
            .min(self.map.len());
        let entry_size = if lean.ctx.container.is_big() { 16 } else { 8 };
        let mut paths = Vec::new();
        for entry in self
            .map
            .get(start..end)
            .unwrap_or_default()
            .chunks_exact(entry_size)
        {
            let (tag, value) = if entry_size == 16 {
                let tag: u64 = entry.pread_with(0, lean.ctx.le).unwrap_or(0);
                let value: u64 = entry.pread_with(8, lean.ctx.le).unwrap_or(0);
                (tag, value)
            } else {
                let tag: u32 = entry.pread_with(0, lean.ctx.le).unwrap_or(0);
                let value: u32 = entry.pread_with(4, lean.ctx.le).unwrap_or(0);
                (u64::from(tag), u64::from(value))
            };
            if tag == DT_RPATH || tag == DT_RUNPATH {
                if let Some(path) = strings.get_at(value as usize) {
                    paths.push(path.to_string());
                }
            }
        }
        paths
    }

    /// File offsets of the named function symbols that the file defines.
    pub fn resolve(&self, names: &[&str]) -> Result<HashMap<String, u64>, SymbolError> {
        Ok(self
            .functions(names)?
            .into_iter()
            .map(|(name, function)| (name, function.file_offset))
            .collect())
    }

    /// The named function symbols that the file defines: where they are and how long.
    pub fn functions(
        &self,
        names: &[&str],
    ) -> Result<HashMap<String, FunctionSymbol>, SymbolError> {
        let not_elf = |message: String| SymbolError::NotElf {
            path: self.path.clone(),
            message,
        };
        let lean = LeanElf::parse(&self.map).map_err(|error| not_elf(error.to_string()))?;
        let mut found: HashMap<String, FunctionSymbol> = HashMap::new();
        for table_type in [SHT_DYNSYM, SHT_SYMTAB] {
            if found.len() == names.len() {
                break;
            }
            let Some(table) = lean
                .sections
                .iter()
                .find(|section| section.sh_type == table_type)
            else {
                continue;
            };
            let Some(strings) = lean.strtab(table.sh_link as usize) else {
                continue;
            };
            let entry_size = (table.sh_entsize as usize).max(1);
            let count = table.sh_size as usize / entry_size;
            let symbols = Symtab::parse(&self.map, table.sh_offset as usize, count, lean.ctx)
                .map_err(|error| not_elf(error.to_string()))?;
            for symbol in symbols.iter() {
                let defined_function = symbol.st_value != 0
                    && symbol.st_shndx != 0
                    && matches!(symbol.st_type(), sym::STT_FUNC | sym::STT_GNU_IFUNC);
                if !defined_function {
                    continue;
                }
                let Some(full_name) = strings.get_at(symbol.st_name) else {
                    continue;
                };
                let base_name = full_name.split('@').next().unwrap_or(full_name);
                if found.contains_key(base_name) || !names.contains(&base_name) {
                    continue;
                }
                if let Some((file_offset, segment_left)) = lean.file_offset(symbol.st_value) {
                    found.insert(
                        base_name.to_string(),
                        FunctionSymbol {
                            address: symbol.st_value,
                            size: symbol.st_size,
                            file_offset,
                            in_file: symbol.st_size <= segment_left,
                            ifunc: symbol.st_type() == sym::STT_GNU_IFUNC,
                        },
                    );
                }
            }
        }
        if found.len() < names.len() {
            let missing: Vec<&str> = names
                .iter()
                .copied()
                .filter(|name| !found.contains_key(*name))
                .collect();
            found.extend(lean.go_functions(&missing));
        }
        Ok(found)
    }

    /// The named functions as a Go executable's pclntab has them (empty for other files).
    pub fn go_functions(&self, names: &[&str]) -> HashMap<String, FunctionSymbol> {
        LeanElf::parse(&self.map)
            .map(|lean| lean.go_functions(names))
            .unwrap_or_default()
    }

    /// The Go version a Go executable was built with (`go1.19.8`), from `.go.buildinfo`.
    pub fn go_version(&self) -> Option<String> {
        let lean = LeanElf::parse(&self.map).ok()?;
        let section = lean.section_bytes(".go.buildinfo")?;
        let read_at = |address: u64, length: usize| -> Option<Vec<u8>> {
            let (offset, left) = lean.file_offset(address)?;
            if (length as u64) > left {
                return None;
            }
            let start = usize::try_from(offset).ok()?;
            Some(self.map.get(start..start.checked_add(length)?)?.to_vec())
        };
        crate::symbols::gosym::buildinfo_version(section, &read_at)
    }
}

/// How one probe of a group resolved in one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// The function's file offset (`None`: not found, or not needed).
    pub offset: Option<u64>,
    /// How it was found.
    pub found: Option<Found>,
    /// What proved a located function, or why one was not found or not needed.
    pub note: Option<String>,
    /// Not found, and an `instead_of` probe stands in for it.
    pub stood_in: bool,
    /// An `instead_of` probe whose counterpart is found: not probed.
    pub not_needed: bool,
}

/// A PT_LOAD segment of an ELF file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    pub address: u64,
    pub file_offset: u64,
    pub file_size: u64,
    pub executable: bool,
}

/// A function symbol of an ELF file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionSymbol {
    /// Virtual address (`st_value`): what the code's branch targets are relative to.
    pub address: u64,
    /// Bytes of code (`st_size`; 0 when the symbol does not say).
    pub size: u64,
    /// Where the first byte is in the file: what a uprobe is attached at.
    pub file_offset: u64,
    /// The whole `size` bytes lie in the file part of the symbol's PT_LOAD segment.
    pub in_file: bool,
    /// `STT_GNU_IFUNC`: the address is a resolver that picks the real function at load time.
    pub ifunc: bool,
}

/// Only the parts of an ELF file symbol resolution needs: the headers, the section headers, the
/// program headers. `goblin::elf::Elf::parse` also parses every relocation and note, which
/// takes seconds on a 100 MiB executable such as node.
struct LeanElf<'a> {
    bytes: &'a [u8],
    ctx: Ctx,
    sections: Vec<SectionHeader>,
    program_headers: Vec<ProgramHeader>,
    /// Index of the section holding the section names.
    section_names: usize,
}

impl<'a> LeanElf<'a> {
    fn parse(bytes: &'a [u8]) -> goblin::error::Result<LeanElf<'a>> {
        let header = Elf::parse_header(bytes)?;
        let ctx = Ctx::new(header.container()?, header.endianness()?);
        let sections =
            SectionHeader::parse(bytes, header.e_shoff as usize, header.e_shnum as usize, ctx)?;
        let program_headers =
            ProgramHeader::parse(bytes, header.e_phoff as usize, header.e_phnum as usize, ctx)?;
        Ok(LeanElf {
            bytes,
            ctx,
            sections,
            program_headers,
            section_names: header.e_shstrndx as usize,
        })
    }

    /// The section called `name`.
    fn section(&self, name: &str) -> Option<&SectionHeader> {
        let names = self.strtab(self.section_names)?;
        self.sections
            .iter()
            .find(|section| names.get_at(section.sh_name) == Some(name))
    }

    /// The file bytes of the section called `name`.
    fn section_bytes(&self, name: &str) -> Option<&'a [u8]> {
        let section = self.section(name)?;
        let start = usize::try_from(section.sh_offset).ok()?;
        let end = start.checked_add(usize::try_from(section.sh_size).ok()?)?;
        self.bytes.get(start..end)
    }

    /// The Go pclntab: the `.gopclntab` section (`.data.rel.ro.gopclntab` in PIE builds), or
    /// found by its header in `.data.rel.ro` (linkers that merge the sections). None for files
    /// that are not Go executables.
    fn go_pclntab(&self) -> Option<crate::symbols::gosym::Pclntab<'a>> {
        let text = self.section(".text").map_or(0, |section| section.sh_addr);
        for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
            if let Some(table) = self.section_bytes(name) {
                return crate::symbols::gosym::Pclntab::parse(table, text);
            }
        }
        // Only Go executables have a .go.buildinfo: no scan of other files' data.
        self.section(".go.buildinfo")?;
        let data = self.section_bytes(".data.rel.ro")?;
        let at = crate::symbols::gosym::find_pclntab(data)?;
        crate::symbols::gosym::Pclntab::parse(&data[at..], text)
    }

    /// The named functions of a Go executable's pclntab, as function symbols.
    fn go_functions(&self, names: &[&str]) -> HashMap<String, FunctionSymbol> {
        let Some(pclntab) = self.go_pclntab() else {
            return HashMap::new();
        };
        pclntab
            .functions(names)
            .into_iter()
            .filter_map(|(name, function)| {
                let (file_offset, segment_left) = self.file_offset(function.address)?;
                Some((
                    name,
                    FunctionSymbol {
                        address: function.address,
                        size: function.size,
                        file_offset,
                        in_file: function.size <= segment_left,
                        ifunc: false,
                    },
                ))
            })
            .collect()
    }

    /// The string table in section `index`.
    fn strtab(&self, index: usize) -> Option<Strtab<'a>> {
        let section = self.sections.get(index)?;
        Strtab::parse(
            self.bytes,
            section.sh_offset as usize,
            section.sh_size as usize,
            0,
        )
        .ok()
    }

    /// Turns a virtual address into a file offset through the PT_LOAD segment containing it;
    /// also returns how many bytes of that segment's file part are left from there.
    fn file_offset(&self, address: u64) -> Option<(u64, u64)> {
        self.program_headers
            .iter()
            .filter(|header| header.p_type == PT_LOAD)
            .find(|header| address >= header.p_vaddr && address < header.p_vaddr + header.p_filesz)
            .map(|header| {
                (
                    address - header.p_vaddr + header.p_offset,
                    header.p_vaddr + header.p_filesz - address,
                )
            })
    }
}

/// Resolution results per (file, symbol), so that a library mapped by many processes, or seen
/// under several paths, is parsed once.
///
/// It also keeps the probe placement mode and the placements found (`crate::symbols::placement`): they
/// are per (file, symbol) too, and planning asks for them wherever it resolves symbols.
#[derive(Default)]
pub struct SymbolCache {
    resolved: HashMap<(FileId, String), Option<u64>>,
    /// Functions looked for without a symbol (`crate::symbols::locate`), per (file, symbol).
    pub(crate) located: HashMap<(FileId, String), crate::symbols::locate::Outcome>,
    /// Where located functions are cached per build id (`None`: not cached).
    pub(crate) locate_cache: Option<PathBuf>,
    /// Field offsets read from accessor functions, per (file, accessor and argument).
    pub(crate) fields: HashMap<(FileId, String), Result<(FieldPath, String), String>>,
    pub(crate) placement_mode: PlacementMode,
    /// (file, symbol, argument registers read at entry) -> placement.
    pub(crate) placements: HashMap<(FileId, String, Vec<u8>, bool), Placement>,
}

impl SymbolCache {
    /// A cache that places probes in `mode` (`SymbolCache::default()`: `Auto`).
    pub fn with_placement(mode: PlacementMode) -> SymbolCache {
        SymbolCache {
            placement_mode: mode,
            locate_cache: crate::symbols::locate::cache::default_dir(),
            ..SymbolCache::default()
        }
    }

    /// Resolves every probe of `group` in a file: by symbol, else by the probe's `locate` rule
    /// or a pin; then a probe with `instead_of` is kept only where its counterpart is missing.
    pub fn resolve_group(
        &mut self,
        id: FileId,
        path: &Path,
        group: &Group,
    ) -> Result<Vec<Resolution>, SymbolError> {
        let names: Vec<&str> = group
            .probes
            .iter()
            .map(|probe| probe.symbol.as_str())
            .collect();
        let offsets = self.resolve(id, path, &names)?;
        let wanted: Vec<(&str, Option<&LocateRule>)> = group
            .probes
            .iter()
            .zip(&offsets)
            .filter(|(probe, offset)| {
                offset.is_none()
                    && (probe.locate.is_some()
                        || group.pins.iter().any(|pin| pin.symbol == probe.symbol))
                    && !self.located.contains_key(&(id, probe.symbol.clone()))
            })
            .map(|(probe, _)| (probe.symbol.as_str(), probe.locate.as_ref()))
            .collect();
        if !wanted.is_empty() {
            let elf = ElfFile::open(path)?;
            let outcomes = crate::symbols::locate::locate(
                &elf,
                &wanted,
                &group.pins,
                self.locate_cache.as_deref(),
            );
            for (symbol, outcome) in outcomes {
                self.located.insert((id, symbol), outcome);
            }
        }
        let mut resolved: Vec<Resolution> = group
            .probes
            .iter()
            .zip(offsets)
            .map(|(probe, offset)| match offset {
                Some(offset) => Resolution {
                    offset: Some(offset),
                    found: Some(Found::Symbol),
                    ..Resolution::default()
                },
                None => match self.located.get(&(id, probe.symbol.clone())) {
                    Some(Ok(located)) => Resolution {
                        offset: Some(located.function.file_offset),
                        found: Some(located.found),
                        note: Some(located.evidence.clone()),
                        ..Resolution::default()
                    },
                    Some(Err(why)) => Resolution {
                        offset: None,
                        note: Some(why.clone()),
                        ..Resolution::default()
                    },
                    None => Resolution::default(),
                },
            })
            .collect();
        for (index, probe) in group.probes.iter().enumerate() {
            let Some(other) = &probe.instead_of else {
                continue;
            };
            let Some(counterpart) = group.probes.iter().position(|p| &p.symbol == other) else {
                continue;
            };
            if resolved[counterpart].offset.is_some() {
                resolved[index] = Resolution {
                    note: Some(format!("not needed: {other} is found")),
                    not_needed: true,
                    ..Resolution::default()
                };
            } else if resolved[index].offset.is_some() {
                let note = resolved[counterpart].note.take();
                resolved[counterpart].note = Some(format!(
                    "{}{} stands in for it",
                    note.map(|note| format!("{note}; ")).unwrap_or_default(),
                    probe.symbol
                ));
                resolved[counterpart].stood_in = true;
            }
        }
        Ok(resolved)
    }

    /// The offset of the field that `accessor`, a function of the file at `path`, reads from
    /// the struct its System V argument `argument` points at (see
    /// [`crate::symbols::locate::field_offset`]), with the evidence; or why not.
    pub fn field_offset(
        &mut self,
        id: FileId,
        path: &Path,
        accessor: &str,
        argument: u8,
    ) -> Result<(FieldPath, String), String> {
        let key = (id, format!("field of {accessor} arg{argument}"));
        if let Some(known) = self.fields.get(&key) {
            return known.clone();
        }
        const REGISTERS: [iced_x86::Register; 6] = [
            iced_x86::Register::RDI,
            iced_x86::Register::RSI,
            iced_x86::Register::RDX,
            iced_x86::Register::RCX,
            iced_x86::Register::R8,
            iced_x86::Register::R9,
        ];
        let outcome = (|| {
            let register = *REGISTERS
                .get(usize::from(argument))
                .ok_or_else(|| format!("arg{argument} is not a register argument"))?;
            let elf = ElfFile::open(path).map_err(|error| error.to_string())?;
            if elf.machine() != Machine::X86_64 {
                return Err(format!(
                    "{} code: field offsets are read from x86-64 code only",
                    elf.machine()
                ));
            }
            let functions = elf
                .functions(&[accessor])
                .map_err(|error| error.to_string())?;
            let function = functions
                .get(accessor)
                .ok_or_else(|| format!("the file does not define {accessor}"))?;
            let path = crate::symbols::locate::field_path(&elf, function.address, register)
                .ok_or_else(|| {
                    format!("{accessor} does not copy one field of its arg{argument}")
                })?;
            let text = path
                .to_string()
                .replacen("arg", &format!("arg{argument}"), 1);
            Ok((path, format!("the field {accessor} copies: {text}")))
        })();
        self.fields.insert(key, outcome.clone());
        outcome
    }

    /// Offsets of `names` in the file at `path` (None: not defined there).
    pub fn resolve(
        &mut self,
        id: FileId,
        path: &Path,
        names: &[&str],
    ) -> Result<Vec<Option<u64>>, SymbolError> {
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|name| !self.resolved.contains_key(&(id, (*name).to_string())))
            .collect();
        if !missing.is_empty() {
            let found = ElfFile::open(path)?.resolve(&missing)?;
            for name in missing {
                self.resolved
                    .insert((id, name.to_string()), found.get(name).copied());
            }
        }
        Ok(names
            .iter()
            .map(|name| {
                self.resolved
                    .get(&(id, (*name).to_string()))
                    .copied()
                    .flatten()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";

    /// `nm -D` addresses of defined symbols, by name without version.
    fn nm_addresses(path: &str) -> HashMap<String, u64> {
        let output = Command::new("nm")
            .args(["-D", "--defined-only", path])
            .output()
            .expect("nm");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let address = u64::from_str_radix(fields.next()?, 16).ok()?;
                let _kind = fields.next()?;
                let name = fields.next()?.split('@').next()?.to_string();
                Some((name, address))
            })
            .collect()
    }

    /// (vaddr, offset, filesz) of the PT_LOAD headers, as `readelf -lW` prints them.
    fn readelf_loads(path: &str) -> Vec<(u64, u64, u64)> {
        let output = Command::new("readelf")
            .args(["-lW", path])
            .output()
            .expect("readelf");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.trim_start().starts_with("LOAD"))
            .map(|line| {
                let fields: Vec<u64> = line
                    .split_whitespace()
                    .skip(1)
                    .take(4)
                    .map(|field| {
                        u64::from_str_radix(field.trim_start_matches("0x"), 16).expect("hex")
                    })
                    .collect();
                (fields[1], fields[0], fields[3])
            })
            .collect()
    }

    #[test]
    fn offsets_agree_with_nm_and_program_headers() {
        let names = ["SSL_write", "SSL_read", "SSL_write_ex", "SSL_read_ex"];
        let resolved = ElfFile::open(Path::new(LIBSSL))
            .expect("libssl")
            .resolve(&names)
            .expect("resolve");
        let addresses = nm_addresses(LIBSSL);
        let loads = readelf_loads(LIBSSL);
        assert!(!loads.is_empty());
        for name in names {
            let address = addresses[name];
            let (vaddr, offset, _) = *loads
                .iter()
                .find(|(vaddr, _, size)| address >= *vaddr && address < vaddr + size)
                .expect("a PT_LOAD holds the symbol");
            assert_eq!(resolved[name], address - vaddr + offset, "{name}");
        }
    }

    #[test]
    fn absent_symbols_are_not_resolved_and_results_are_cached() {
        let path = Path::new(LIBSSL);
        let id = FileId::of(path).expect("stat");
        let mut cache = SymbolCache::default();
        let first = cache
            .resolve(id, path, &["SSL_write", "no_such_symbol"])
            .expect("resolve");
        assert!(first[0].is_some());
        assert_eq!(first[1], None);
        // A second lookup is answered from the cache, even through a path that no longer works.
        let again = cache
            .resolve(
                id,
                Path::new("/nonexistent"),
                &["SSL_write", "no_such_symbol"],
            )
            .expect("cached");
        assert_eq!(again, first);
    }

    #[test]
    fn a_non_elf_file_is_a_clear_error() {
        let error = ElfFile::open(Path::new("/etc/hostname"))
            .expect("open")
            .resolve(&["x"])
            .expect_err("not ELF");
        assert!(error.to_string().contains("is not an ELF file"), "{error}");
    }
}
