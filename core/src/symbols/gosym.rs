//! Go executables without a symbol table (`go build -ldflags "-s -w"`, the rule in
//! containers): function addresses from the pclntab, and the Go version from `.go.buildinfo`.
//!
//! The pclntab is the table the Go runtime itself uses for tracebacks, so no Go binary can be
//! without it. Non-PIE binaries keep it in the `.gopclntab` section; PIE binaries put it in
//! `.data.rel.ro`, where it is found by its header (magic, two zero bytes, instruction size
//! quantum, pointer size). The layouts read here are those of the Go runtime's
//! `runtime/symtab.go` (`pcHeader`, `functab`, `_func`) for each magic:
//! - 0xfffffffa (Go 1.16, 1.17): `nfunc, nfiles, funcnameOffset, cuOffset, filetabOffset,
//!   pctabOffset, pclnOffset` after the 8-byte header; the function table holds
//!   (entry PC, func offset) pairs of pointer size; `_func` starts with the entry PC, then the
//!   name offset (int32).
//! - 0xfffffff0 (1.18, 1.19) and 0xfffffff1 (1.20 and later, same layout): `nfunc, nfiles,
//!   textStart, funcnameOffset, ...`; the function table holds (entry offset from textStart,
//!   func offset) pairs of u32; `_func` starts with the entry offset (u32), then the name
//!   offset (int32).
//!
//! In both, the function table has `nfunc + 1` entries: the last one is the end of the text,
//! so each function's size is the next entry's address minus its own.

/// The pclntab magics probectl reads.
pub const MAGIC_GO116: u32 = 0xffff_fffa;
pub const MAGIC_GO118: u32 = 0xffff_fff0;
pub const MAGIC_GO120: u32 = 0xffff_fff1;

/// The `.go.buildinfo` header: 14 bytes of magic, then the pointer size and a flags byte.
const BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";
/// Buildinfo flag: the version and module info are inline varint-prefixed strings (Go 1.18+).
const BUILDINFO_INLINE: u8 = 2;

/// A function found in the pclntab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoFunction {
    pub address: u64,
    pub size: u64,
}

/// A parsed pclntab header.
#[derive(Debug, Clone, Copy)]
pub struct Pclntab<'a> {
    table: &'a [u8],
    magic: u32,
    nfunc: usize,
    text_start: u64,
    funcname_offset: usize,
    functab_offset: usize,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let slice = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(slice.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let slice = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(slice.try_into().ok()?))
}

/// Whether `bytes` starts like a 64-bit little-endian pclntab header of a known version.
pub fn looks_like_pclntab(bytes: &[u8]) -> bool {
    matches!(
        u32_at(bytes, 0),
        Some(MAGIC_GO116 | MAGIC_GO118 | MAGIC_GO120)
    ) && bytes.get(4..8).is_some_and(|header| {
        header[0] == 0 && header[1] == 0 && matches!(header[2], 1 | 2 | 4) && header[3] == 8
    })
}

impl<'a> Pclntab<'a> {
    /// Parses the header at the start of `table`. `text_section` is the `.text` section's
    /// address, used when the header's text start is 0 in the file (a PIE's is filled in by a
    /// relocation at load time).
    pub fn parse(table: &'a [u8], text_section: u64) -> Option<Pclntab<'a>> {
        if !looks_like_pclntab(table) {
            return None;
        }
        let magic = u32_at(table, 0)?;
        let word = |index: usize| u64_at(table, 8 + 8 * index);
        let nfunc = usize::try_from(word(0)?).ok()?;
        let (text_start, funcname_offset, functab_offset) = if magic == MAGIC_GO116 {
            (0, word(2)?, word(6)?)
        } else {
            let text_start = word(2)?;
            let text_start = if text_start == 0 {
                text_section
            } else {
                text_start
            };
            (text_start, word(3)?, word(7)?)
        };
        Some(Pclntab {
            table,
            magic,
            nfunc,
            text_start,
            funcname_offset: usize::try_from(funcname_offset).ok()?,
            functab_offset: usize::try_from(functab_offset).ok()?,
        })
    }

    /// (entry address, offset of the `_func` from the function table) of entry `index`.
    fn entry(&self, index: usize) -> Option<(u64, usize)> {
        if self.magic == MAGIC_GO116 {
            let at = self.functab_offset.checked_add(index.checked_mul(16)?)?;
            Some((
                u64_at(self.table, at)?,
                usize::try_from(u64_at(self.table, at + 8)?).ok()?,
            ))
        } else {
            let at = self.functab_offset.checked_add(index.checked_mul(8)?)?;
            Some((
                self.text_start
                    .checked_add(u64::from(u32_at(self.table, at)?))?,
                u32_at(self.table, at + 4)? as usize,
            ))
        }
    }

    /// The name of the function whose `_func` is at `func_offset` from the function table.
    fn name(&self, func_offset: usize) -> Option<&'a [u8]> {
        let func = self.functab_offset.checked_add(func_offset)?;
        let name_field = if self.magic == MAGIC_GO116 { 8 } else { 4 };
        let name_offset = u32_at(self.table, func.checked_add(name_field)?)? as i32;
        let start = self
            .funcname_offset
            .checked_add(usize::try_from(name_offset).ok()?)?;
        let rest = self.table.get(start..)?;
        let end = rest.iter().position(|&byte| byte == 0)?;
        Some(&rest[..end])
    }

    /// The functions named in `names` (exact Go symbol names, e.g.
    /// `crypto/tls.(*Conn).Write`), with their addresses and sizes.
    pub fn functions(&self, names: &[&str]) -> Vec<(String, GoFunction)> {
        let mut found = Vec::new();
        for index in 0..self.nfunc {
            let (Some((address, func_offset)), Some((next, _))) =
                (self.entry(index), self.entry(index + 1))
            else {
                break;
            };
            let Some(name) = self.name(func_offset) else {
                continue;
            };
            if let Some(wanted) = names.iter().find(|wanted| wanted.as_bytes() == name) {
                found.push((
                    (*wanted).to_string(),
                    GoFunction {
                        address,
                        size: next.saturating_sub(address),
                    },
                ));
                if found.len() == names.len() {
                    break;
                }
            }
        }
        found
    }
}

/// Finds a pclntab inside `data` (the bytes of `.data.rel.ro`, for PIE builds): the first
/// 8-aligned position with a plausible header.
pub fn find_pclntab(data: &[u8]) -> Option<usize> {
    (0..data.len().saturating_sub(64))
        .step_by(8)
        .find(|&at| looks_like_pclntab(&data[at..]))
}

/// The Go version in a `.go.buildinfo` section's bytes (e.g. `go1.19.8`). `read_at` reads
/// `length` bytes at a virtual address (older builds point at the version string).
pub fn buildinfo_version(
    section: &[u8],
    read_at: &dyn Fn(u64, usize) -> Option<Vec<u8>>,
) -> Option<String> {
    if !section.starts_with(BUILDINFO_MAGIC) {
        return None;
    }
    let pointer_size = *section.get(14)? as usize;
    let flags = *section.get(15)?;
    let text = if flags & BUILDINFO_INLINE != 0 {
        // Go 1.18+: uvarint length, then the bytes, from offset 32.
        let mut length: u64 = 0;
        let mut shift = 0;
        let mut at = 32;
        loop {
            let byte = *section.get(at)?;
            at += 1;
            length |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return None;
            }
        }
        section
            .get(at..at.checked_add(usize::try_from(length).ok()?)?)?
            .to_vec()
    } else {
        // Before 1.18: a pointer to a Go string header (data pointer, length).
        if pointer_size != 8 || flags & 1 != 0 {
            return None;
        }
        let header_address = u64_at(section, 16)?;
        let header = read_at(header_address, 16)?;
        let data = u64_at(&header, 0)?;
        let length = usize::try_from(u64_at(&header, 8)?).ok()?;
        if length > 64 {
            return None;
        }
        read_at(data, length)?
    };
    let version = String::from_utf8(text).ok()?;
    version.starts_with("go").then_some(version)
}

/// The (major, minor) of a version such as `go1.19.8` or `go1.21rc2`.
pub fn version_number(version: &str) -> Option<(u32, u32)> {
    let rest = version.strip_prefix("go")?;
    let mut parts = rest.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor_text = parts.next()?;
    let digits: String = minor_text
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, digits.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pclntab of `magic`'s layout with functions "a" at 0x1000 (0x40 bytes) and "bb" at
    /// 0x1040 (0x20 bytes), text ending at 0x1060, text starting at 0x1000.
    fn synthetic_pclntab(magic: u32) -> Vec<u8> {
        let old = magic == MAGIC_GO116;
        let words = if old { 7 } else { 8 };
        let header_len = 8 + 8 * words;
        let names: &[u8] = b"a\0bb\0";
        let funcname_offset = header_len;
        let functab_offset = funcname_offset + names.len();
        let entry_size = if old { 16 } else { 8 };
        let funcs_at = 3 * entry_size; // two functions and the end entry
        let func_size = if old { 12 } else { 8 };
        let mut table = Vec::new();
        table.extend(magic.to_le_bytes());
        table.extend([0, 0, 1, 8]);
        let mut header_words = vec![2u64, 0];
        if !old {
            header_words.push(0x1000);
        }
        header_words.extend([funcname_offset as u64, 0, 0, 0, functab_offset as u64]);
        for word in header_words {
            table.extend(word.to_le_bytes());
        }
        table.extend(names);
        let entries = [
            (0x1000u64, funcs_at),
            (0x1040, funcs_at + func_size),
            (0x1060, 0),
        ];
        for (address, func) in entries {
            if old {
                table.extend(address.to_le_bytes());
                table.extend((func as u64).to_le_bytes());
            } else {
                table.extend(((address - 0x1000) as u32).to_le_bytes());
                table.extend((func as u32).to_le_bytes());
            }
        }
        for (address, name_offset) in [(0x1000u64, 0u32), (0x1040, 2)] {
            if old {
                table.extend(address.to_le_bytes());
            } else {
                table.extend(((address - 0x1000) as u32).to_le_bytes());
            }
            table.extend(name_offset.to_le_bytes());
        }
        table.resize(table.len() + 64, 0);
        table
    }

    #[test]
    fn pclntabs_of_every_known_layout_are_read() {
        for magic in [MAGIC_GO116, MAGIC_GO118, MAGIC_GO120] {
            let table = synthetic_pclntab(magic);
            let pclntab = Pclntab::parse(&table, 0).expect("a pclntab");
            let mut found = pclntab.functions(&["bb", "a", "absent"]);
            found.sort_by(|x, y| x.0.cmp(&y.0));
            assert_eq!(
                found,
                [
                    (
                        "a".to_string(),
                        GoFunction {
                            address: 0x1000,
                            size: 0x40
                        }
                    ),
                    (
                        "bb".to_string(),
                        GoFunction {
                            address: 0x1040,
                            size: 0x20
                        }
                    ),
                ],
                "magic {magic:#x}"
            );
            // Found by its header inside other data, as in a PIE's .data.rel.ro.
            let mut data = vec![0xab; 24];
            data.extend(&table);
            assert_eq!(find_pclntab(&data), Some(24));
        }
        assert!(Pclntab::parse(b"\xfb\xff\xff\xff\0\0\x01\x08", 0).is_none());
    }

    #[test]
    fn versions_are_read_as_numbers() {
        assert_eq!(version_number("go1.19.8"), Some((1, 19)));
        assert_eq!(version_number("go1.21rc2"), Some((1, 21)));
        assert_eq!(
            version_number("go1.23.1 X:nocoverageredesign"),
            Some((1, 23))
        );
        assert_eq!(version_number("devel"), None);
    }

    #[test]
    fn an_inline_buildinfo_version_is_read() {
        let mut section = BUILDINFO_MAGIC.to_vec();
        section.extend([8, BUILDINFO_INLINE]);
        section.resize(32, 0);
        section.push(8);
        section.extend(b"go1.19.8");
        let no_memory = |_: u64, _: usize| None;
        assert_eq!(
            buildinfo_version(&section, &no_memory).as_deref(),
            Some("go1.19.8")
        );
        assert_eq!(buildinfo_version(b"not buildinfo", &no_memory), None);
    }
}
