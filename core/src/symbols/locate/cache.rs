//! The cache of located functions: one JSON file per build id, so that a second run on the
//! same executable (any copy, any path, any host) skips the analysis.
//!
//! An entry is keyed by the symbol and a hash of its rule, so an edited rule is analysed anew.
//! The file carries a checksum of its entries: a truncated, edited or otherwise corrupt file is
//! recognised, reported by [`Entry::damage`], and replaced by fresh results. Files are 0600 in
//! a 0700 directory: they say which programs a host traced.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spec::LocateRule;

/// Bumped when the file's layout or the analysis's meaning changes.
const FORMAT: u32 = 1;

/// The default directory: `$PROBECTL_CACHE_DIR`, else `$XDG_CACHE_HOME/probectl/locate`, else
/// `$HOME/.cache/probectl/locate`.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PROBECTL_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("probectl").join("locate"))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    address: Option<u64>,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    evidence: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    format: u32,
    build_id: String,
    entries: BTreeMap<String, Stored>,
    checksum: String,
}

/// The cache file of one build.
#[derive(Debug)]
pub struct Entry {
    path: PathBuf,
    build_id: String,
    entries: BTreeMap<String, Stored>,
    changed: bool,
    damage: Option<String>,
}

/// A cached result: (address, size, evidence), or why the function was not found.
pub type Cached = Result<(u64, u64, String), String>;

impl Entry {
    /// Reads the cache file of `build_id` in `dir`; a missing file is an empty entry, and an
    /// unreadable or corrupt one too, with [`Entry::damage`] saying what was wrong.
    pub fn load(dir: &Path, build_id: &str) -> Entry {
        let path = dir.join(format!("{build_id}.json"));
        let mut entry = Entry {
            path,
            build_id: build_id.to_string(),
            entries: BTreeMap::new(),
            changed: false,
            damage: None,
        };
        let text = match fs::read(&entry.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return entry,
            Err(error) => {
                entry.damage = Some(format!("cannot read {}: {error}", entry.path.display()));
                return entry;
            }
        };
        match serde_json::from_slice::<CacheFile>(&text) {
            Ok(file) if file.format != FORMAT => {
                entry.damage = Some(format!(
                    "format {} (this probectl writes {FORMAT})",
                    file.format
                ));
            }
            Ok(file) if file.build_id != build_id => {
                entry.damage = Some(format!("it names build {}", file.build_id));
            }
            Ok(file) if checksum(&file.entries) != file.checksum => {
                entry.damage = Some("its checksum does not match its entries".to_string());
            }
            Ok(file) => entry.entries = file.entries,
            Err(error) => entry.damage = Some(format!("not a cache file: {error}")),
        }
        if entry.damage.is_some() {
            // Rewritten with fresh results on save.
            entry.changed = true;
        }
        entry
    }

    /// What was wrong with the file read, if anything (it is then replaced).
    pub fn damage(&self) -> Option<&str> {
        self.damage.as_deref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cached result for `symbol` under `rule`, if any.
    pub fn get(&self, symbol: &str, rule: &LocateRule) -> Option<Cached> {
        let stored = self.entries.get(&key(symbol, rule))?;
        Some(match (&stored.address, &stored.error) {
            (Some(address), None) => Ok((*address, stored.size, stored.evidence.clone())),
            (None, Some(error)) => Err(error.clone()),
            // Neither or both: not something `put` writes.
            _ => return None,
        })
    }

    pub fn put(
        &mut self,
        symbol: &str,
        rule: &LocateRule,
        result: Result<(u64, u64, String), &String>,
    ) {
        let stored = match result {
            Ok((address, size, evidence)) => Stored {
                address: Some(address),
                size,
                evidence,
                error: None,
            },
            Err(error) => Stored {
                address: None,
                size: 0,
                evidence: String::new(),
                error: Some(error.clone()),
            },
        };
        self.entries.insert(key(symbol, rule), stored);
        self.changed = true;
    }

    /// Writes the file if anything changed: a new file beside it, then renamed over it, so a
    /// reader never sees half a file.
    pub fn save(self) -> std::io::Result<()> {
        if !self.changed {
            return Ok(());
        }
        let Some(dir) = self.path.parent() else {
            return Ok(());
        };
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        let file = CacheFile {
            format: FORMAT,
            checksum: checksum(&self.entries),
            build_id: self.build_id,
            entries: self.entries,
        };
        let text = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        let temporary = self
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        out.write_all(&text)?;
        out.sync_all()?;
        fs::rename(&temporary, &self.path)
    }
}

fn key(symbol: &str, rule: &LocateRule) -> String {
    let rule = serde_json::to_string(rule).unwrap_or_default();
    format!("{symbol} {:016x}", fnv1a(rule.as_bytes()))
}

fn checksum(entries: &BTreeMap<String, Stored>) -> String {
    let text = serde_json::to_string(entries).unwrap_or_default();
    format!("{:016x}", fnv1a(text.as_bytes()))
}

/// FNV-1a, 64 bits: stable across Rust releases (unlike `DefaultHasher`), and enough to tell
/// a damaged file from an intact one (not an integrity check against an attacker: the cache
/// directory is the user's own).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> LocateRule {
        LocateRule {
            source: "ssl/ssl_lib.cc".into(),
            library: 16,
            errors: vec![66, 226],
            exact: false,
            calls: None,
            inlines_another: false,
            string: None,
            follow: Vec::new(),
        }
    }

    #[test]
    fn results_survive_a_round_trip_and_damage_is_recognised() {
        let dir = std::env::temp_dir().join(format!("probectl-cache-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut entry = Entry::load(&dir, "abcd");
        assert_eq!(entry.damage(), None);
        assert_eq!(entry.get("SSL_write", &rule()), None);
        entry.put("SSL_write", &rule(), Ok((0x1000, 64, "because".into())));
        entry.put("SSL_peek", &rule(), Err(&"not found".to_string()));
        let path = entry.path().to_path_buf();
        entry.save().expect("save");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let again = Entry::load(&dir, "abcd");
        assert_eq!(again.damage(), None);
        assert_eq!(
            again.get("SSL_write", &rule()),
            Some(Ok((0x1000, 64, "because".to_string())))
        );
        assert_eq!(
            again.get("SSL_peek", &rule()),
            Some(Err("not found".to_string()))
        );
        // Another rule for the same symbol is another entry.
        let mut other = rule();
        other.exact = true;
        assert_eq!(again.get("SSL_write", &other), None);

        // An address edited in place no longer matches the checksum.
        let text = fs::read_to_string(&path).expect("read");
        fs::write(&path, text.replace("4096", "4097")).expect("write");
        let damaged = Entry::load(&dir, "abcd");
        assert!(damaged.damage().is_some_and(|why| why.contains("checksum")));
        assert_eq!(damaged.get("SSL_write", &rule()), None);

        // Half a file is not a cache file.
        fs::write(&path, &text[..text.len() / 2]).expect("write");
        assert!(Entry::load(&dir, "abcd")
            .damage()
            .is_some_and(|why| why.starts_with("not a cache file")));
        let _ = fs::remove_dir_all(&dir);
    }
}
