//! Target discovery: which processes exist (and which descend from which), which files they
//! map, and which library files are installed on the host.
//!
//! A mapped file is identified by what the process really maps, not by its path: the path in
//! `/proc/<pid>/maps` is printed from probectl's point of view and may name another file here
//! (a private mount namespace with a library bind-mounted over the host's), or a file the process
//! itself knows under another name (a chroot). `/proc/<pid>/map_files/<start>-<end>` is a link to
//! the mapped file itself, whatever the namespace: its device and inode are the file's identity,
//! and when no plain path here reaches that inode, the link is the path probes attach through.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Identity of a file on the host, whatever path or mount namespace it is reached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(path: &Path) -> std::io::Result<FileId> {
        Ok(FileId::of_metadata(&std::fs::metadata(path)?))
    }

    pub fn of_metadata(metadata: &std::fs::Metadata) -> FileId {
        FileId {
            dev: metadata.dev(),
            ino: metadata.ino(),
        }
    }
}

/// How probectl reaches a file from its own mount namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Through the path the process sees: it is the same file here.
    SamePath,
    /// Through another plain path (the process is in a chroot: the file is under its root).
    OtherPath,
    /// Only through the process's own link to the mapping (`/proc/<pid>/map_files/...` or
    /// `/proc/<pid>/exe`): the path here is another file (a private mount namespace, a bind
    /// mount) or no file at all (deleted). The link lives only as long as the mapping, so a
    /// file that is going to be probed is held open ([`TargetFile::hold`]).
    ProcessLink,
}

/// A file as a process (or the host) sees it.
#[derive(Debug, Clone)]
pub struct TargetFile {
    /// The path as the process sees it (inside its root directory and mount namespace): what
    /// specs' exact `paths` are compared with, and what is displayed.
    pub path: PathBuf,
    /// A path that reaches the same file (same device and inode) from probectl's namespace.
    pub host_path: PathBuf,
    /// The file's identity: one file is attached once, whatever paths reach it.
    pub id: FileId,
    pub reach: Reach,
    /// The file held open by probectl (see [`TargetFile::hold`]); `host_path` then names it
    /// through `/proc/self/fd/<n>`.
    held: Option<Arc<OwnedFd>>,
}

impl TargetFile {
    /// A file that has the same path for the process and for probectl (host libraries, a
    /// command's files).
    pub fn on_host(path: PathBuf, id: FileId) -> TargetFile {
        TargetFile {
            host_path: path.clone(),
            path,
            id,
            reach: Reach::SamePath,
            held: None,
        }
    }

    /// Keeps a file that is reached only through its process's link reachable for as long as
    /// this value (or a clone) lives, whatever becomes of the process: the process may exit
    /// (or unmap the file) between planning and attaching, and another process that maps the
    /// same file may be the one whose link was kept. The file is opened through the link and
    /// `host_path` becomes `/proc/self/fd/<n>`, a link the uprobe PMU follows to the same
    /// inode (as it follows `/proc/<pid>/map_files/...`). Files with a plain path are left
    /// alone: their path stays valid by itself.
    pub fn hold(&mut self) -> Result<(), DiscoveryError> {
        if self.reach != Reach::ProcessLink || self.held.is_some() {
            return Ok(());
        }
        let read_error = |source| DiscoveryError::Read {
            path: self.host_path.clone(),
            source,
        };
        let file = std::fs::File::open(&self.host_path).map_err(read_error)?;
        let metadata = file.metadata().map_err(read_error)?;
        // A pid recycled since the maps were read could put another file behind the link.
        if FileId::of_metadata(&metadata) != self.id {
            return Err(read_error(std::io::Error::other(
                "the link now leads to another file (the process is gone)",
            )));
        }
        let fd = OwnedFd::from(file);
        self.host_path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        self.held = Some(Arc::new(fd));
        Ok(())
    }

    /// Where the file is for probectl, when `path` does not say it: `None` when the path is
    /// the same file here.
    pub fn host_view(&self) -> Option<String> {
        let (major, minor) = (libc::major(self.id.dev), libc::minor(self.id.dev));
        match self.reach {
            Reach::SamePath => None,
            Reach::OtherPath => Some(format!("on the host: {}", self.host_path.display())),
            Reach::ProcessLink => Some(format!(
                "the process's own file, not the one at this path on the host: device \
                 {major}:{minor}, inode {}",
                self.id.ino
            )),
        }
    }

    /// The path, followed by where the file is on the host when that differs.
    pub fn describe(&self) -> String {
        match self.host_view() {
            None => self.path.display().to_string(),
            Some(view) => format!("{} ({view})", self.path.display()),
        }
    }
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

/// The parent process of `pid` (field 4 of `/proc/<pid>/stat`, after the parenthesised comm,
/// which may itself contain parentheses and spaces).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

/// A process of a tree and how deep below the tree's root it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeMember {
    pub pid: u32,
    /// 0 for the root, 1 for its children, ...
    pub depth: usize,
}

/// `root` and every process descending from it that exists now: the root first, then
/// depth-first, children in pid order. Built from every process's parent, so it needs no
/// `CONFIG_PROC_CHILDREN`. A process that exits meanwhile is simply left out.
pub fn process_tree(root: u32) -> Vec<TreeMember> {
    let mut children: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    for pid in all_pids() {
        if let Some(parent) = parent_of(pid) {
            children.entry(parent).or_default().insert(pid);
        }
    }
    let mut tree = Vec::new();
    let mut stack = vec![TreeMember {
        pid: root,
        depth: 0,
    }];
    let mut seen = BTreeSet::new();
    while let Some(member) = stack.pop() {
        // A pid recycled while we read /proc could make a cycle: visit each pid once.
        if !seen.insert(member.pid) {
            continue;
        }
        tree.push(member);
        if let Some(kids) = children.get(&member.pid) {
            stack.extend(kids.iter().rev().map(|&pid| TreeMember {
                pid,
                depth: member.depth + 1,
            }));
        }
    }
    tree
}

/// The process's root directory as probectl sees it, when it is not probectl's own (a
/// chroot). Paths in its maps then start with it.
fn chroot_of(pid: u32) -> Option<PathBuf> {
    let root = std::fs::read_link(format!("/proc/{pid}/root")).ok()?;
    (root != Path::new("/") && root.is_absolute()).then_some(root)
}

/// The path as the process sees it: maps and the exe link print paths from probectl's root,
/// so a chrooted process's files start with its root directory.
fn as_process_sees(path: &Path, chroot: Option<&Path>) -> PathBuf {
    match chroot.and_then(|root| path.strip_prefix(root).ok()) {
        Some(inside) => Path::new("/").join(inside),
        None => path.to_path_buf(),
    }
}

/// Identifies the file behind `link` (a `/proc/<pid>` link to a mapping) and finds how to
/// reach it: through `path_here` (the path as probectl sees it) when that is the same file,
/// since a plain path stays valid after the process exits (a late attach); otherwise through
/// the link. `None` if the link cannot be followed (the process is gone, or probectl lacks
/// CAP_SYS_ADMIN, which map_files needs); the caller then falls back to the path.
fn identify(link: PathBuf, path_here: &Path, chroot: Option<&Path>) -> Option<TargetFile> {
    let metadata = std::fs::metadata(&link).ok()?;
    // Libraries and executables are regular files (not device nodes such as /dev/zero).
    if !metadata.is_file() {
        return None;
    }
    let id = FileId::of_metadata(&metadata);
    let path = as_process_sees(path_here, chroot);
    let (host_path, reach) = if FileId::of(path_here).ok() == Some(id) {
        let reach = if path == path_here {
            Reach::SamePath
        } else {
            Reach::OtherPath
        };
        (path_here.to_path_buf(), reach)
    } else {
        (link, Reach::ProcessLink)
    };
    Some(TargetFile {
        path,
        host_path,
        id,
        reach,
        held: None,
    })
}

/// Without the process's links (no privilege for map_files): the file at the path as
/// probectl sees it, if there is one.
fn by_path(path_here: &Path, chroot: Option<&Path>) -> Option<TargetFile> {
    let metadata = std::fs::metadata(path_here).ok()?;
    if !metadata.is_file() {
        return None;
    }
    let id = FileId::of_metadata(&metadata);
    let path = as_process_sees(path_here, chroot);
    let reach = if path == path_here {
        Reach::SamePath
    } else {
        Reach::OtherPath
    };
    Some(TargetFile {
        path,
        host_path: path_here.to_path_buf(),
        id,
        reach,
        held: None,
    })
}

/// A file deleted (or replaced, as by a package upgrade) since it was mapped is printed as
/// "<path> (deleted)": the path without the mark, and whether it was there. Such a file is
/// still reached through the process's link.
fn without_deleted_mark(printed: &str) -> (PathBuf, bool) {
    match printed.strip_suffix(" (deleted)") {
        Some(path) => (PathBuf::from(path), true),
        None => (PathBuf::from(printed), false),
    }
}

/// When the process's link cannot be followed: the file at the path, unless the mapped file
/// was deleted (the path then names another file, or none).
fn fall_back_to_path(path_here: &Path, deleted: bool, chroot: Option<&Path>) -> Option<TargetFile> {
    if deleted {
        return None;
    }
    by_path(path_here, chroot)
}

/// One file-backed mapping line of `/proc/<pid>/maps`: its address range and path.
fn parse_maps_line(line: &str) -> Option<(&str, &str)> {
    // address perms offset dev inode pathname
    let mut fields = line
        .splitn(6, char::is_whitespace)
        .filter(|field| !field.is_empty());
    let range = fields.next()?;
    let inode = fields.nth(3)?;
    let path = line.find(" /").map(|index| line[index + 1..].trim())?;
    (inode != "0").then_some((range, path))
}

/// The regular files a process maps (libraries, its executable), each once, identified by
/// the mapping itself (see the module's documentation).
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
    let chroot = chroot_of(pid);
    // One mapping per path is enough to identify a file (a library has several).
    let mut ranges: BTreeMap<&str, &str> = BTreeMap::new();
    for (range, path) in text.lines().filter_map(parse_maps_line) {
        // Shared memory has names too, marked deleted: not files on disk.
        let shared_memory = ["/dev/zero (deleted)", "/SYSV", "/memfd:"]
            .iter()
            .any(|prefix| path.starts_with(prefix));
        if !shared_memory {
            ranges.entry(path).or_insert(range);
        }
    }
    let mut files: BTreeMap<FileId, TargetFile> = BTreeMap::new();
    for (path, range) in ranges {
        let (path_here, deleted) = without_deleted_mark(path);
        let link = PathBuf::from(format!("/proc/{pid}/map_files/{range}"));
        let file = identify(link, &path_here, chroot.as_deref())
            .or_else(|| fall_back_to_path(&path_here, deleted, chroot.as_deref()));
        if let Some(file) = file {
            files.entry(file.id).or_insert(file);
        }
    }
    let mut files: Vec<TargetFile> = files.into_values().collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// The process's executable.
pub fn executable(pid: u32) -> Result<TargetFile, DiscoveryError> {
    let link = PathBuf::from(format!("/proc/{pid}/exe"));
    let read_error = |source| {
        if process_exists(pid) {
            DiscoveryError::Read {
                path: link.clone(),
                source,
            }
        } else {
            DiscoveryError::NoSuchProcess { pid }
        }
    };
    let printed = std::fs::read_link(&link).map_err(read_error)?;
    let (path_here, deleted) = without_deleted_mark(&printed.to_string_lossy());
    let chroot = chroot_of(pid);
    match identify(link.clone(), &path_here, chroot.as_deref()) {
        Some(file) => Ok(file),
        None => fall_back_to_path(&path_here, deleted, chroot.as_deref()).ok_or_else(|| {
            read_error(std::io::Error::other(format!(
                "{} is not reachable from here",
                path_here.display()
            )))
        }),
    }
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
                TargetFile::on_host(path, id)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_give_the_range_and_path_of_file_mappings_only() {
        let line = "7f1c2a000000-7f1c2a020000 r-xp 00020000 fe:00 5849141                    /usr/lib/x86_64-linux-gnu/libssl.so.3";
        assert_eq!(
            parse_maps_line(line),
            Some((
                "7f1c2a000000-7f1c2a020000",
                "/usr/lib/x86_64-linux-gnu/libssl.so.3"
            ))
        );
        let spaced =
            "7f1c2a000000-7f1c2a020000 r--p 00000000 fe:00 12 /opt/my app/lib x.so (deleted)";
        assert_eq!(
            parse_maps_line(spaced).map(|(_, path)| path),
            Some("/opt/my app/lib x.so (deleted)")
        );
        assert_eq!(
            without_deleted_mark("/opt/my app/lib x.so (deleted)"),
            (PathBuf::from("/opt/my app/lib x.so"), true)
        );
        let anonymous =
            "7ffd1c000000-7ffd1c021000 rw-p 00000000 00:00 0                          [stack]";
        assert_eq!(parse_maps_line(anonymous), None);
    }

    #[test]
    fn a_chrooted_path_is_shown_as_the_process_sees_it() {
        let root = Path::new("/srv/jail");
        assert_eq!(
            as_process_sees(Path::new("/srv/jail/usr/lib/libssl.so.3"), Some(root)),
            PathBuf::from("/usr/lib/libssl.so.3")
        );
        // A path outside the root (a file mapped before chroot()) is left as it is.
        assert_eq!(
            as_process_sees(Path::new("/usr/lib/libc.so.6"), Some(root)),
            PathBuf::from("/usr/lib/libc.so.6")
        );
        assert_eq!(
            as_process_sees(Path::new("/usr/lib/libc.so.6"), None),
            PathBuf::from("/usr/lib/libc.so.6")
        );
    }

    #[test]
    fn the_tree_holds_the_descendants_depth_first() {
        // sh -> (sh -> sleep), sleep: a grandchild and a child.
        let mut shell = std::process::Command::new("/bin/sh")
            .args(["-c", "sh -c 'sleep 30 & wait' & sleep 30 & wait"])
            .spawn()
            .expect("sh");
        let root = shell.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let tree = loop {
            let tree = process_tree(root);
            if tree.len() == 4 {
                break tree;
            }
            assert!(std::time::Instant::now() < deadline, "tree: {tree:?}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(
            tree[0],
            TreeMember {
                pid: root,
                depth: 0
            }
        );
        let depths: Vec<usize> = tree.iter().map(|member| member.depth).collect();
        assert!(
            depths == [0, 1, 2, 1] || depths == [0, 1, 1, 2],
            "depth-first: {tree:?}"
        );
        for member in &tree[1..] {
            let parent = parent_of(member.pid).expect("parent");
            assert!(tree
                .iter()
                .any(|m| m.pid == parent && m.depth + 1 == member.depth));
        }
        let pids: Vec<u32> = tree.iter().map(|member| member.pid).collect();
        for pid in pids.iter().rev() {
            // SAFETY: kill(2) on processes this test started.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        let _ = shell.wait();
    }

    #[test]
    fn own_files_are_identified_through_the_mapping_and_reached_by_their_path() {
        let files = mapped_files(std::process::id()).expect("own maps");
        let executable = executable(std::process::id()).expect("own exe");
        assert!(files.iter().any(|file| file.id == executable.id));
        for file in &files {
            // Nothing here is in another namespace: every file is reached by its own path,
            // and that path is the file the process maps.
            assert_eq!(file.reach, Reach::SamePath, "{file:?}");
            assert_eq!(file.host_path, file.path);
            assert_eq!(FileId::of(&file.path).ok(), Some(file.id));
            assert_eq!(file.host_view(), None);
        }
    }

    #[test]
    fn a_held_file_stays_reachable_through_probectls_own_descriptor() {
        let own = executable(std::process::id()).expect("own exe");
        let mut file = TargetFile {
            reach: Reach::ProcessLink,
            host_path: PathBuf::from(format!("/proc/{}/exe", std::process::id())),
            ..own
        };
        file.hold().expect("hold");
        assert!(file.host_path.starts_with("/proc/self/fd/"), "{file:?}");
        assert_eq!(FileId::of(&file.host_path).ok(), Some(file.id));
        assert!(file
            .host_view()
            .is_some_and(|view| view.contains(&format!("inode {}", file.id.ino))));
    }
}
