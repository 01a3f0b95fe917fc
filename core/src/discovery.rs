//! Target discovery: which processes exist, which files they map, and which library files are
//! installed on the host. Paths are resolved inside each process's mount namespace through
//! `/proc/<pid>/root/...`, so a process in a container or chroot is traced with its own files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::symbols::FileId;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("no process with pid {pid} (nothing in /proc/{pid})")]
    NoSuchProcess { pid: u32 },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A file as a process (or the host) sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetFile {
    /// The path inside the process's mount namespace (what `/proc/<pid>/maps` shows).
    pub path: PathBuf,
    /// A path that reaches the same file from probectl's namespace.
    pub host_path: PathBuf,
    pub id: FileId,
}

pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The process's `comm`, or "?" if it is gone.
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|text| text.trim_end().to_string())
        .unwrap_or_else(|_| "?".to_string())
}

/// Every pid in /proc.
pub fn all_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids
}

/// A path that reaches `path` as process `pid` sees it. When the process shares our root
/// directory the path is used as is: it stays valid after the process exits (a late attach,
/// a process that is gone by then). Otherwise (a container, a chroot) through its root.
fn in_namespace(pid: u32, path: &Path) -> PathBuf {
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    if FileId::of(&root).ok() == FileId::of(Path::new("/")).ok() {
        return path.to_path_buf();
    }
    let relative = path.strip_prefix("/").unwrap_or(path);
    root.join(relative)
}

/// The regular files a process maps (libraries, its executable), each once.
pub fn mapped_files(pid: u32) -> Result<Vec<TargetFile>, DiscoveryError> {
    let maps_path = PathBuf::from(format!("/proc/{pid}/maps"));
    let text = std::fs::read_to_string(&maps_path).map_err(|source| {
        if process_exists(pid) {
            DiscoveryError::Read {
                path: maps_path.clone(),
                source,
            }
        } else {
            DiscoveryError::NoSuchProcess { pid }
        }
    })?;
    let mut files: BTreeMap<PathBuf, ()> = BTreeMap::new();
    for line in text.lines() {
        // address perms offset dev inode pathname
        let mut fields = line
            .splitn(6, char::is_whitespace)
            .filter(|field| !field.is_empty());
        let inode = fields.nth(4);
        let Some(path) = line.find(" /").map(|index| line[index + 1..].trim()) else {
            continue;
        };
        if inode == Some("0") || path.ends_with(" (deleted)") {
            continue;
        }
        files.insert(PathBuf::from(path), ());
    }
    Ok(files
        .into_keys()
        .filter_map(|path| {
            let host_path = in_namespace(pid, &path);
            let id = FileId::of(&host_path).ok()?;
            Some(TargetFile {
                path,
                host_path,
                id,
            })
        })
        .collect())
}

/// The process's executable.
pub fn executable(pid: u32) -> Result<TargetFile, DiscoveryError> {
    let link = PathBuf::from(format!("/proc/{pid}/exe"));
    let path = std::fs::read_link(&link).map_err(|source| {
        if process_exists(pid) {
            DiscoveryError::Read {
                path: link.clone(),
                source,
            }
        } else {
            DiscoveryError::NoSuchProcess { pid }
        }
    })?;
    let host_path = in_namespace(pid, &path);
    // A deleted or unreachable executable is still reachable through the magic link.
    let host_path = if host_path.exists() { host_path } else { link };
    let id = FileId::of(&host_path).map_err(|source| DiscoveryError::Read {
        path: host_path.clone(),
        source,
    })?;
    Ok(TargetFile {
        path,
        host_path,
        id,
    })
}

/// The host's library directories, searched for library files that processes may load later
/// (system-wide tracing, `-- command`).
const LIBRARY_DIRS: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
];

/// Files in the host's library directories (and their direct subdirectories, e.g.
/// `x86_64-linux-gnu/android/`) whose name satisfies `wanted`; each file once.
pub fn host_libraries(wanted: &dyn Fn(&str) -> bool) -> Vec<TargetFile> {
    let mut found: BTreeMap<FileId, TargetFile> = BTreeMap::new();
    for directory in LIBRARY_DIRS {
        scan_directory(Path::new(directory), 1, wanted, &mut found);
    }
    found.into_values().collect()
}

/// Files directly in `directories` whose name satisfies `wanted`; each file once.
pub fn libraries_in(directories: &[PathBuf], wanted: &dyn Fn(&str) -> bool) -> Vec<TargetFile> {
    let mut found: BTreeMap<FileId, TargetFile> = BTreeMap::new();
    for directory in directories {
        scan_directory(directory, 0, wanted, &mut found);
    }
    found.into_values().collect()
}

fn scan_directory(
    directory: &Path,
    depth_left: u32,
    wanted: &dyn Fn(&str) -> bool,
    found: &mut BTreeMap<FileId, TargetFile>,
) {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if depth_left > 0 {
                scan_directory(&path, depth_left - 1, wanted, found);
            }
            continue;
        }
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        // Symlinks (libssl.so -> libssl.so.3) count once, through the file's identity.
        if !wanted(name) || !path.is_file() {
            continue;
        }
        if let Ok(id) = FileId::of(&path) {
            found.entry(id).or_insert_with(|| {
                // Name the file by its real path, not by whichever link was met first.
                let path = std::fs::canonicalize(&path).unwrap_or(path);
                TargetFile {
                    host_path: path.clone(),
                    path,
                    id,
                }
            });
        }
    }
}
