//! What to trace within the processes of a run's target: `--container ID|NAME`, `--cgroup PATH`,
//! `--comm NAME` (made in the kernel: see [`KernelSelection`]), and `--port N`, `--host
//! ADDR|NAME` (made by the pipeline on each connection's addresses, [`AddressSelection`]).
//!
//! The process selections are made once per process, never per call: the processes that match
//! now go into the kernel's pid filter at start, and a process that starts a program later is
//! admitted at that exec by the BPF program if its cgroup (v2 id) and its command name match.
//! A process outside the selection never enters the filter: its calls cost the uprobe trap and
//! the filter's lookup, and nothing is copied.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use probectl_pipeline::capture::identity::{read_identity, Identity};

pub use probectl_pipeline::capture::selection::AddressSelection;

/// The selection options of a run, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// `--container`: ids (or a prefix of at least 4 digits) or names.
    pub containers: Vec<String>,
    /// `--cgroup`: cgroup v2 paths (`/system.slice/nginx.service`).
    pub cgroups: Vec<PathBuf>,
    /// `--comm`: the command name (as `/proc/PID/comm` shows it, at most 15 bytes).
    pub comm: Option<String>,
    /// `--port`.
    pub ports: Vec<u16>,
    /// `--host`: addresses or names.
    pub hosts: Vec<String>,
}

impl Selection {
    /// True when the selection restricts processes (made in the kernel).
    pub fn selects_processes(&self) -> bool {
        !self.containers.is_empty() || !self.cgroups.is_empty() || self.comm.is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    #[error(
        "no running container matches --container {0}: give the id (or a prefix of at least 4 \
         digits) or the name of a container that runs now (Podman's or Docker's name, or a CRI \
         runtime's CONTAINER, POD/CONTAINER or NAMESPACE/POD/CONTAINER)"
    )]
    NoContainer(String),
    #[error("--container {given} matches several containers: {ids}")]
    AmbiguousContainer { given: String, ids: String },
    #[error("no cgroup v2 hierarchy is mounted (/proc/self/mountinfo has no cgroup2): --container and --cgroup select by cgroup v2")]
    NoCgroup2,
    #[error("--cgroup {path}: no such cgroup under {root}")]
    NoSuchCgroup { path: String, root: PathBuf },
    #[error(
        "container {id} has no cgroup v2 of its own (its processes are at {cgroup} in the cgroup \
         v2 hierarchy; the runtime uses cgroup v1 only): the kernel cannot select it"
    )]
    NotInCgroup2 { id: String, cgroup: String },
    #[error("--comm {0}: a command name is 1 to 15 bytes (the kernel keeps no more)")]
    BadComm(String),
    #[error("--host {host}: {reason}")]
    BadHost { host: String, reason: String },
}

/// What the kernel selects on: the cgroup ids whose processes are admitted at exec, the command
/// name, and the processes that match now.
#[derive(Debug, Clone, Default)]
pub struct KernelSelection {
    /// Cgroup v2 ids (the inode numbers of the cgroup directories), the selected cgroups and
    /// every cgroup below them that exists at start.
    pub cgroup_ids: BTreeSet<u64>,
    /// `--container`/`--cgroup` was given (`cgroup_ids` then matters even if empty).
    pub by_cgroup: bool,
    /// The `--comm` name, NUL-padded.
    pub comm: Option<[u8; 16]>,
    /// Processes that match now.
    pub pids: Vec<u32>,
    /// What was selected, said when the run starts: container ids and cgroup paths.
    pub described: Vec<String>,
}

pub use probectl_pipeline::capture::identity::cgroup2_root;

/// The cgroup ids of `dir` and every cgroup below it (bounded by the map's capacity).
fn cgroup_ids_below(dir: &Path, into: &mut BTreeSet<u64>) {
    let limit = probectl_common::capacity::SELECTED_CGROUPS as usize;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if into.len() >= limit {
            return;
        }
        let Ok(metadata) = std::fs::metadata(&dir) else {
            continue;
        };
        into.insert(metadata.ino());
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
    }
}

/// Container names → ids, from the runtimes' own files (no socket is asked): Podman's
/// `containers.json` and Docker's `config.v2.json` files.
fn container_names() -> Vec<(String, String)> {
    let mut names = Vec::new();
    let podman = [
        "/var/lib/containers/storage/overlay-containers/containers.json",
        "/var/lib/containers/storage/vfs-containers/containers.json",
    ];
    for file in podman {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let Ok(serde_json::Value::Array(containers)) = serde_json::from_str(&text) else {
            continue;
        };
        for container in containers {
            let Some(id) = container["id"].as_str() else {
                continue;
            };
            for name in container["names"].as_array().into_iter().flatten() {
                if let Some(name) = name.as_str() {
                    names.push((name.to_string(), id.to_string()));
                }
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/var/lib/docker/containers") {
        for entry in entries.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path().join("config.v2.json")) else {
                continue;
            };
            let Ok(config) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            if let (Some(id), Some(name)) = (config["ID"].as_str(), config["Name"].as_str()) {
                names.push((name.trim_start_matches('/').to_string(), id.to_string()));
            }
        }
    }
    names
}

/// The identities of the processes running now.
fn running() -> Vec<(u32, Identity)> {
    crate::targets::all_pids()
        .into_iter()
        .filter_map(|pid| Some((pid, read_identity(pid)?)))
        .collect()
}

/// Resolves the process selections against the processes running now; `within`: the pids of
/// the run's target (`--pid`'s tree), `None` for every process.
pub fn resolve(
    selection: &Selection,
    within: Option<&[u32]>,
    cri: Option<&crate::cri::Cri>,
) -> Result<KernelSelection, SelectionError> {
    let mut resolved = KernelSelection::default();
    if let Some(comm) = &selection.comm {
        if comm.is_empty() || comm.len() > 15 {
            return Err(SelectionError::BadComm(comm.clone()));
        }
        let mut padded = [0u8; 16];
        padded[..comm.len()].copy_from_slice(comm.as_bytes());
        resolved.comm = Some(padded);
    }
    let processes = running();
    let mut cgroup_paths: Vec<String> = Vec::new();
    for given in &selection.containers {
        let by_id = |id: &str| given.len() >= 4 && id.starts_with(given.as_str());
        let mut ids: BTreeSet<&str> = processes
            .iter()
            .filter_map(|(_, identity)| identity.container.as_deref())
            .filter(|id| by_id(id))
            .collect();
        let mut names = container_names();
        if let Some(cri) = cri {
            // The runtime failing leaves the names of the runtimes' files.
            names.extend(cri.container_names().unwrap_or_default());
        }
        if ids.is_empty() {
            let running_ids: BTreeSet<&str> = processes
                .iter()
                .filter_map(|(_, identity)| identity.container.as_deref())
                .collect();
            ids = names
                .iter()
                .filter(|(name, _)| name == given)
                .filter_map(|(_, id)| running_ids.get(id.as_str()).copied())
                .collect();
        }
        let id = match ids.len() {
            0 => return Err(SelectionError::NoContainer(given.clone())),
            1 => ids.into_iter().next().unwrap_or_default().to_string(),
            _ => {
                return Err(SelectionError::AmbiguousContainer {
                    given: given.clone(),
                    ids: ids.into_iter().collect::<Vec<_>>().join(", "),
                })
            }
        };
        // The container's cgroup: the path up to the component that names it (its processes
        // may sit in cgroups below it).
        let cgroup = processes
            .iter()
            .find(|(_, identity)| identity.container.as_deref() == Some(id.as_str()))
            .map(|(_, identity)| identity.cgroup.clone())
            .unwrap_or_default();
        let top = container_cgroup(&cgroup, &id).ok_or_else(|| SelectionError::NotInCgroup2 {
            id: id.clone(),
            cgroup: cgroup.clone(),
        })?;
        resolved.described.push(format!("container {}", &id[..12]));
        cgroup_paths.push(top);
    }
    for path in &selection.cgroups {
        let text = path.to_string_lossy();
        let text = if text.starts_with('/') {
            text.into_owned()
        } else {
            format!("/{text}")
        };
        resolved.described.push(format!("cgroup {text}"));
        cgroup_paths.push(text);
    }
    if !cgroup_paths.is_empty() {
        resolved.by_cgroup = true;
        let root = cgroup2_root().ok_or(SelectionError::NoCgroup2)?;
        for path in &cgroup_paths {
            let dir = root.join(path.trim_start_matches('/'));
            if !dir.is_dir() {
                return Err(SelectionError::NoSuchCgroup {
                    path: path.clone(),
                    root,
                });
            }
            cgroup_ids_below(&dir, &mut resolved.cgroup_ids);
        }
    }
    if let Some(comm) = &selection.comm {
        resolved.described.push(format!("command name {comm}"));
    }
    resolved.pids = processes
        .iter()
        .filter(|(pid, _)| within.is_none_or(|pids| pids.contains(pid)))
        .filter(|(_, identity)| {
            cgroup_paths.is_empty()
                || cgroup_paths
                    .iter()
                    .any(|path| under(&identity.cgroup, path))
        })
        .filter(|(pid, _)| {
            selection
                .comm
                .as_ref()
                .is_none_or(|comm| crate::targets::comm(*pid) == *comm)
        })
        .map(|(pid, _)| *pid)
        .collect();
    Ok(resolved)
}

/// True when cgroup `path` is `top` or below it.
fn under(path: &str, top: &str) -> bool {
    let top = top.trim_end_matches('/');
    top.is_empty()
        || path == top
        || path
            .strip_prefix(top)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The cgroup v2 path of the container `id`, from the path of one of its processes: up to the
/// component that names it. `None` when that path does not name it (a v1-only runtime).
fn container_cgroup(process_cgroup: &str, id: &str) -> Option<String> {
    let mut top = String::new();
    for component in process_cgroup.split('/').filter(|c| !c.is_empty()) {
        top.push('/');
        top.push_str(component);
        if component.contains(id) {
            return Some(top);
        }
    }
    None
}

/// `--port`/`--host` as the BPF side matches them when a connection's socket is first seen
/// (`probectl_common::AddressFilter`), and whether they fit it. When either kind has more
/// values than the filter holds, the filter is empty and the pipeline alone selects (the
/// kernel then copies every connection's calls, as without it). An IPv4 host takes two
/// entries: the address, and the same as IPv4-mapped IPv6 (a dual-stack socket's), as the
/// pipeline matches either.
pub fn kernel_address_filter(
    selection: &AddressSelection,
) -> (probectl_common::AddressFilter, bool) {
    use probectl_common::capacity::{FILTER_HOSTS, FILTER_PORTS};
    // One rule for the summary to state: past either capacity the kernel copies all.
    let too_many = (probectl_common::AddressFilter::default(), false);
    if selection.ports.len() > FILTER_PORTS {
        return too_many;
    }
    let mut hosts: Vec<[u8; 16]> = Vec::new();
    for host in &selection.hosts {
        match host {
            IpAddr::V4(v4) => {
                let mut bytes = [0; 16];
                bytes[..4].copy_from_slice(&v4.octets());
                hosts.push(bytes);
                hosts.push(v4.to_ipv6_mapped().octets());
            }
            IpAddr::V6(v6) => hosts.push(v6.octets()),
        }
    }
    hosts.sort_unstable();
    hosts.dedup();
    if hosts.len() > FILTER_HOSTS {
        return too_many;
    }
    let mut filter = probectl_common::AddressFilter::default();
    for (slot, port) in filter.ports.iter_mut().zip(&selection.ports) {
        *slot = *port;
    }
    filter.port_count = selection.ports.len() as u32;
    for (slot, bytes) in filter.hosts.iter_mut().zip(&hosts) {
        let (low, high) = bytes.split_at(8);
        let word = |half: &[u8]| u64::from_ne_bytes(half.try_into().unwrap_or_default());
        *slot = [word(low), word(high)];
    }
    filter.host_count = hosts.len() as u32;
    (filter, true)
}

/// Resolves `--port`/`--host` into what the pipeline matches connections with.
pub fn addresses(selection: &Selection) -> Result<Option<AddressSelection>, SelectionError> {
    if selection.ports.is_empty() && selection.hosts.is_empty() {
        return Ok(None);
    }
    let mut hosts: Vec<IpAddr> = Vec::new();
    for host in &selection.hosts {
        if let Ok(address) = host.parse::<IpAddr>() {
            hosts.push(address);
            continue;
        }
        use std::net::ToSocketAddrs;
        let found: Vec<IpAddr> = (host.as_str(), 0)
            .to_socket_addrs()
            .map_err(|error| SelectionError::BadHost {
                host: host.clone(),
                reason: error.to_string(),
            })?
            .map(|address| address.ip())
            .collect();
        if found.is_empty() {
            return Err(SelectionError::BadHost {
                host: host.clone(),
                reason: "the name has no address".into(),
            });
        }
        hosts.extend(found);
    }
    Ok(Some(AddressSelection {
        ports: selection.ports.clone(),
        hosts,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_filter_holds_ipv4_hosts_twice_and_is_empty_past_its_capacity() {
        let selection = AddressSelection {
            ports: vec![443, 8443],
            hosts: vec!["10.0.0.7".parse().expect("ip"), "::1".parse().expect("ip")],
        };
        let (filter, whole) = kernel_address_filter(&selection);
        assert!(whole);
        assert_eq!(&filter.ports[..2], &[443, 8443]);
        assert_eq!(filter.port_count, 2);
        assert_eq!(filter.host_count, 3);
        let bytes = |words: [u64; 2]| {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&words[0].to_ne_bytes());
            bytes[8..].copy_from_slice(&words[1].to_ne_bytes());
            bytes
        };
        let held: Vec<[u8; 16]> = filter.hosts[..3].iter().copied().map(bytes).collect();
        let v4 = [10, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mapped = std::net::Ipv4Addr::new(10, 0, 0, 7)
            .to_ipv6_mapped()
            .octets();
        let loopback = std::net::Ipv6Addr::LOCALHOST.octets();
        for address in [v4, mapped, loopback] {
            assert!(held.contains(&address), "{address:?} in {held:?}");
        }
        // Too many ports: the kernel matches nothing, the pipeline all.
        let many = AddressSelection {
            ports: (1..=17).collect(),
            hosts: vec!["10.0.0.7".parse().expect("ip")],
        };
        let (filter, whole) = kernel_address_filter(&many);
        assert!(!whole);
        assert_eq!((filter.port_count, filter.host_count), (0, 0));
    }

    #[test]
    fn a_container_cgroup_is_cut_at_the_component_naming_it() {
        let id = "4a718e097634ba89cc588ae0e8d61c5ff4c6b67642e5adcb555b5ce2263eae9a";
        assert_eq!(
            container_cgroup(&format!("/machine.slice/libpod-{id}.scope/container"), id).as_deref(),
            Some(&*format!("/machine.slice/libpod-{id}.scope"))
        );
        assert_eq!(container_cgroup("/", id), None);
        assert!(under("/a/b", "/a"));
        assert!(under("/a", "/a/"));
        assert!(!under("/ab", "/a"));
        assert!(under("/anything", "/"));
    }

    #[test]
    fn the_cgroup2_mount_is_found() {
        // Every machine that runs the tests mounts cgroup2 (at /sys/fs/cgroup or, hybrid,
        // /sys/fs/cgroup/unified).
        let root = cgroup2_root().expect("cgroup2 mounted");
        assert!(root.join("cgroup.procs").exists(), "{}", root.display());
    }
}
