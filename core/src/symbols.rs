//! Symbol resolution with goblin: symbol name -> file offset to attach a uprobe at.
//!
//! `.dynsym` is searched first, then `.symtab` (unstripped binaries); versioned names such as
//! `SSL_read@@OPENSSL_3.0.0` match `SSL_read`. A symbol's virtual address becomes a file offset
//! through the PT_LOAD program header that contains it. Results are cached per (inode, symbol).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use goblin::elf::{program_header::PT_LOAD, sym, Elf};

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

/// Identity of a file on the host, whatever path or mount namespace it is reached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(path: &Path) -> std::io::Result<FileId> {
        let metadata = std::fs::metadata(path)?;
        Ok(FileId {
            dev: metadata.dev(),
            ino: metadata.ino(),
        })
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

    /// The file's RPATH and RUNPATH entries (colon-separated lists, `$ORIGIN` unexpanded).
    pub fn library_search_paths(&self) -> Vec<String> {
        match Elf::parse(&self.map) {
            Ok(elf) => elf
                .rpaths
                .iter()
                .chain(elf.runpaths.iter())
                .map(|path| path.to_string())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// File offsets of the named function symbols that the file defines.
    pub fn resolve(&self, names: &[&str]) -> Result<HashMap<String, u64>, SymbolError> {
        let elf = Elf::parse(&self.map).map_err(|error| SymbolError::NotElf {
            path: self.path.clone(),
            message: error.to_string(),
        })?;
        let mut found: HashMap<String, u64> = HashMap::new();
        let tables = [(&elf.dynsyms, &elf.dynstrtab), (&elf.syms, &elf.strtab)];
        for (symbols, strings) in tables {
            if found.len() == names.len() {
                break;
            }
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
                if let Some(offset) = file_offset(&elf, symbol.st_value) {
                    found.insert(base_name.to_string(), offset);
                }
            }
        }
        Ok(found)
    }
}

/// Turns a virtual address into a file offset through the PT_LOAD segment containing it.
fn file_offset(elf: &Elf, address: u64) -> Option<u64> {
    elf.program_headers
        .iter()
        .filter(|header| header.p_type == PT_LOAD)
        .find(|header| address >= header.p_vaddr && address < header.p_vaddr + header.p_filesz)
        .map(|header| address - header.p_vaddr + header.p_offset)
}

/// Resolution results per (file, symbol), so that a library mapped by many processes, or seen
/// under several paths, is parsed once.
#[derive(Default)]
pub struct SymbolCache {
    resolved: HashMap<(FileId, String), Option<u64>>,
}

impl SymbolCache {
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
