//! Who a traced process is: its cgroup and, where it runs in one, its container (and the
//! Kubernetes pod around it), read once per process from `/proc/PID/cgroup` and parsed from
//! the cgroup path that the container runtimes and systemd name after what they run.
//!
//! The pipeline keeps one [`Identity`] per process ([`Identities`]): it learns it when a
//! process first shows up (its program started, or its first record came), so an event costs
//! a table lookup, never a file read. Replays take the identities from the recording.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Processes whose identity the pipeline keeps at once. Entries go when their process exits;
/// past this many the oldest goes (counted), and a process seen again is looked up again.
pub const IDENTITIES_MAX: usize = probectl_common::capacity::PROCESS_IDENTITIES;

/// The runtime that made a container, as its cgroup path names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Docker,
    Containerd,
    #[serde(rename = "cri-o")]
    CriO,
    Podman,
    /// A container id in a Kubernetes pod's cgroup (cgroupfs driver), which does not name
    /// the runtime.
    Kubernetes,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Kubernetes => "kubernetes",
        }
    }
}

/// A process's place: its cgroup, and what that cgroup says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The cgroup v2 path (`0::` of `/proc/PID/cgroup`; on a hybrid host without one, the
    /// path of the hierarchy that names the container, else systemd's).
    pub cgroup: String,
    /// The container's full id (64 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// The Kubernetes pod's uid (from `kubepods` paths).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The pod's name, namespace and the container's name within it, as the node's container
    /// runtime says (over CRI), when its socket is reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodNames>,
    /// The systemd unit (`nginx.service`, `session-3.scope`) the process runs in, when it is
    /// in no container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// The names of a container's pod, from the container runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodNames {
    pub name: String,
    pub namespace: String,
    /// The container's name within the pod (none for the pod's sandbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

impl PodNames {
    /// `NAMESPACE/NAME`, and `/CONTAINER` for a container of the pod (as `kubectl` names
    /// them).
    pub fn path(&self) -> String {
        match &self.container {
            Some(container) => format!("{}/{}/{}", self.namespace, self.name, container),
            None => format!("{}/{}", self.namespace, self.name),
        }
    }
}

impl Identity {
    /// The first 12 digits of the container id, as runtimes print it.
    pub fn short_container(&self) -> Option<&str> {
        self.container.as_deref().map(|id| &id[..id.len().min(12)])
    }
}

/// True for a 64-digit lowercase hex string (a container id).
fn is_container_id(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The container a path component names, if it names one: `docker-<id>.scope`,
/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`, `libpod-<id>`, or a
/// bare id (whose runtime comes from the components before it). The runtimes' monitors
/// (`crio-conmon-<id>`, `libpod-conmon-<id>`) are not the container.
fn container_of(component: &str, parents: &[&str]) -> Option<(String, Runtime)> {
    let stem = component.strip_suffix(".scope").unwrap_or(component);
    const PREFIXES: [(&str, Runtime); 5] = [
        ("docker-", Runtime::Docker),
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("libpod-", Runtime::Podman),
        ("nerdctl-", Runtime::Containerd),
    ];
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = stem.strip_prefix(prefix) {
            return is_container_id(id).then(|| (id.to_string(), runtime));
        }
    }
    if !is_container_id(stem) {
        return None;
    }
    let runtime = parents
        .iter()
        .rev()
        .find_map(|parent| match *parent {
            "docker" => Some(Runtime::Docker),
            "libpod_parent" => Some(Runtime::Podman),
            "crio" => Some(Runtime::CriO),
            p if p.starts_with("kubepods") => Some(Runtime::Kubernetes),
            // containerd's own namespaces (`/default/<id>`, `/k8s.io/<id>`).
            "default" | "k8s.io" | "moby" => Some(Runtime::Containerd),
            _ => None,
        })
        .unwrap_or(Runtime::Containerd);
    Some((stem.to_string(), runtime))
}

/// The pod uid a component names: `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid>.slice`
/// (systemd, where the uid's dashes are underscores).
fn pod_of(component: &str) -> Option<String> {
    let stem = component.strip_suffix(".slice").unwrap_or(component);
    let uid = if let Some(rest) = stem.strip_prefix("kubepods-") {
        rest.rsplit_once("pod")?.1
    } else {
        stem.strip_prefix("pod")?
    };
    let uid = uid.replace('_', "-");
    let valid = uid.len() == 36
        && uid
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    valid.then_some(uid)
}

/// What a cgroup path says about the processes in it.
pub fn from_cgroup_path(path: &str) -> Identity {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let mut identity = Identity {
        cgroup: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
        ..Identity::default()
    };
    for (index, component) in components.iter().enumerate() {
        if identity.pod_uid.is_none()
            && components[..index]
                .iter()
                .any(|c| c.starts_with("kubepods"))
        {
            identity.pod_uid = pod_of(component);
        }
        if identity.container.is_none() {
            if let Some((id, runtime)) = container_of(component, &components[..index]) {
                identity.container = Some(id);
                identity.runtime = Some(runtime);
            }
        }
    }
    if identity.container.is_none() {
        identity.unit = components
            .iter()
            .rev()
            .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
            .map(|c| c.to_string());
    }
    identity
}

/// The identity `/proc/PID/cgroup`'s text gives: the cgroup v2 line's (`0::PATH`), unless a
/// v1 hierarchy (a hybrid host) names a container the v2 path does not.
pub fn from_proc_cgroup(text: &str) -> Option<Identity> {
    let mut unified = None;
    let mut systemd = None;
    let mut with_container = None;
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            unified = Some(from_cgroup_path(path));
        } else {
            let identity = from_cgroup_path(path);
            if controllers == "name=systemd" {
                systemd = Some(identity.clone());
            }
            if identity.container.is_some() && with_container.is_none() {
                with_container = Some(identity);
            }
        }
    }
    match unified {
        Some(identity) if identity.container.is_some() || identity.cgroup != "/" => Some(identity),
        unified => with_container.or(systemd).or(unified),
    }
}

/// Reads a live process's identity; `None` when it is gone (or `/proc` says nothing).
pub fn read_identity(pid: u32) -> Option<Identity> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    from_proc_cgroup(&text)
}

/// The pods a container runtime named since it was last asked: (container id, names, pod
/// uid), and whether answers are still awaited.
pub type PodNamer = Box<dyn FnMut() -> (Vec<(String, PodNames, String)>, bool) + Send>;

/// Looks up a process's identity from its pid and, at exec, its cgroup v2 id (0: not known)
/// (live: [`LiveResolver`]; replay: nothing, the recording has them).
pub type Resolver = Box<dyn FnMut(u32, u64) -> Option<Identity> + Send>;

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on
/// a hybrid host).
pub fn cgroup2_root() -> Option<std::path::PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        let (before, after) = line.split_once(" - ")?;
        if after.split(' ').next()? != "cgroup2" {
            return None;
        }
        Some(std::path::PathBuf::from(before.split(' ').nth(4)?))
    })
}

/// Cgroup directories remembered by id at most (a walk of the hierarchy stops there).
const CGROUPS_MAX: usize = 65536;
/// A walk of the hierarchy at most this often (a miss of a cgroup created since the last).
const WALK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The live resolver: `/proc/PID/cgroup`, else (the process is gone already) the path of the
/// cgroup whose id the kernel gave at exec, found by walking the cgroup v2 hierarchy (a
/// cgroup's id is its directory's inode number).
#[derive(Default)]
pub struct LiveResolver {
    by_id: HashMap<u64, String>,
    last_walk: Option<std::time::Instant>,
}

impl LiveResolver {
    pub fn resolve(&mut self, pid: u32, cgroup_id: u64) -> Option<Identity> {
        if let Some(identity) = read_identity(pid) {
            return Some(identity);
        }
        if cgroup_id == 0 {
            return None;
        }
        if !self.by_id.contains_key(&cgroup_id)
            && self
                .last_walk
                .is_none_or(|last| last.elapsed() >= WALK_EVERY)
        {
            self.walk();
        }
        self.by_id
            .get(&cgroup_id)
            .map(|path| from_cgroup_path(path))
    }

    fn walk(&mut self) {
        use std::os::unix::fs::MetadataExt;
        self.last_walk = Some(std::time::Instant::now());
        let Some(root) = cgroup2_root() else {
            return;
        };
        self.by_id.clear();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            if self.by_id.len() >= CGROUPS_MAX {
                return;
            }
            let Ok(metadata) = std::fs::metadata(&dir) else {
                continue;
            };
            let path = dir
                .strip_prefix(&root)
                .map(|rest| format!("/{}", rest.display()))
                .unwrap_or_else(|_| "/".into());
            self.by_id.insert(metadata.ino(), path);
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(entry.path());
                    }
                }
            }
        }
    }
}

/// The identities of the processes the pipeline has met, by pid.
#[derive(Default)]
pub struct Identities {
    /// `None`: the process's identity could not be read (it is not read again).
    by_pid: HashMap<u32, (u64, Option<Arc<Identity>>)>,
    /// Insertion counter: the oldest entry goes first when the table is full.
    serial: u64,
    /// Entries removed because the table was full.
    pub evicted: u64,
}

impl Identities {
    pub fn get(&self, pid: u32) -> Option<&Arc<Identity>> {
        self.by_pid
            .get(&pid)
            .and_then(|(_, identity)| identity.as_ref())
    }

    pub fn contains(&self, pid: u32) -> bool {
        self.by_pid.contains_key(&pid)
    }

    pub fn insert(&mut self, pid: u32, identity: Option<Arc<Identity>>) {
        if self.by_pid.len() >= IDENTITIES_MAX && !self.by_pid.contains_key(&pid) {
            if let Some(oldest) = self
                .by_pid
                .iter()
                .min_by_key(|(_, (serial, _))| *serial)
                .map(|(pid, _)| *pid)
            {
                self.by_pid.remove(&oldest);
                self.evicted += 1;
            }
        }
        self.serial += 1;
        self.by_pid.insert(pid, (self.serial, identity));
    }

    /// Names the pod of every process of container `id` that has no pod names yet; returns
    /// those processes with their new identity.
    pub fn name_pod(&mut self, id: &str, pod: &PodNames, uid: &str) -> Vec<(u32, Identity)> {
        let mut patched = Vec::new();
        for (pid, (_, identity)) in self.by_pid.iter_mut() {
            let Some(known) = identity.as_ref() else {
                continue;
            };
            if known.container.as_deref() != Some(id) || known.pod.is_some() {
                continue;
            }
            let mut named = Identity::clone(known);
            named.pod = Some(pod.clone());
            named.pod_uid.get_or_insert_with(|| uid.to_string());
            patched.push((*pid, named.clone()));
            *identity = Some(Arc::new(named));
        }
        patched
    }

    pub fn remove(&mut self, pid: u32) {
        self.by_pid.remove(&pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";
    const POD: &str = "0f6e3a4b-1c2d-4e5f-8a9b-0c1d2e3f4a5b";

    #[test]
    fn a_pod_named_late_names_the_processes_of_its_container_only() {
        let mut identities = Identities::default();
        let path = format!("/kubepods/besteffort/pod{POD}/{ID}");
        let other = format!("/kubepods/besteffort/pod{POD}/{}", "a".repeat(64));
        identities.insert(1, Some(Arc::new(from_cgroup_path(&path))));
        identities.insert(2, Some(Arc::new(from_cgroup_path(&path))));
        identities.insert(3, Some(Arc::new(from_cgroup_path(&other))));
        identities.insert(4, None);
        let pod = PodNames {
            name: "checkout-7d9f".into(),
            namespace: "shop".into(),
            container: Some("client".into()),
        };
        let mut patched: Vec<u32> = identities
            .name_pod(ID, &pod, POD)
            .into_iter()
            .map(|(pid, identity)| {
                assert_eq!(identity.pod.as_ref(), Some(&pod));
                pid
            })
            .collect();
        patched.sort();
        assert_eq!(patched, [1, 2]);
        for pid in [1, 2] {
            let identity = identities.get(pid).expect("identity");
            assert_eq!(identity.pod.as_ref(), Some(&pod));
            assert_eq!(
                identity.pod.as_ref().map(PodNames::path).as_deref(),
                Some("shop/checkout-7d9f/client")
            );
        }
        assert_eq!(identities.get(3).and_then(|i| i.pod.as_ref()), None);
        // Named already: not again.
        assert!(identities.name_pod(ID, &pod, POD).is_empty());
    }

    fn check(path: &str, runtime: Option<Runtime>, pod: Option<&str>) {
        let identity = from_cgroup_path(path);
        assert_eq!(identity.cgroup, path);
        assert_eq!(identity.runtime, runtime, "{path}");
        assert_eq!(identity.container.as_deref(), runtime.map(|_| ID), "{path}");
        assert_eq!(identity.pod_uid.as_deref(), pod, "{path}");
    }

    #[test]
    fn docker_paths() {
        check(&format!("/docker/{ID}"), Some(Runtime::Docker), None);
        check(
            &format!("/system.slice/docker-{ID}.scope"),
            Some(Runtime::Docker),
            None,
        );
    }

    #[test]
    fn podman_paths() {
        check(
            &format!("/libpod_parent/libpod-{ID}"),
            Some(Runtime::Podman),
            None,
        );
        check(
            &format!("/machine.slice/libpod-{ID}.scope"),
            Some(Runtime::Podman),
            None,
        );
        // With systemd's split cgroups, the container's processes are in a child.
        check(
            &format!("/machine.slice/libpod-{ID}.scope/container"),
            Some(Runtime::Podman),
            None,
        );
        check(
            &format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
            Some(Runtime::Podman),
            None,
        );
        // conmon, the container's monitor, is not in the container.
        let conmon = from_cgroup_path(&format!("/machine.slice/libpod-conmon-{ID}.scope"));
        assert_eq!(conmon.container, None);
        assert_eq!(
            conmon.unit.as_deref(),
            Some(&*format!("libpod-conmon-{ID}.scope"))
        );
    }

    #[test]
    fn kubernetes_paths() {
        let systemd_pod = POD.replace('-', "_");
        // containerd, systemd driver.
        check(
            &format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{systemd_pod}.slice/cri-containerd-{ID}.scope"
            ),
            Some(Runtime::Containerd),
            Some(POD),
        );
        // CRI-O, systemd driver; a guaranteed pod has no QoS slice.
        check(
            &format!("/kubepods.slice/kubepods-pod{systemd_pod}.slice/crio-{ID}.scope"),
            Some(Runtime::CriO),
            Some(POD),
        );
        check(
            &format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{systemd_pod}.slice/crio-{ID}.scope/container"
            ),
            Some(Runtime::CriO),
            Some(POD),
        );
        // cgroupfs driver: the pod's directory and a bare id.
        check(
            &format!("/kubepods/burstable/pod{POD}/{ID}"),
            Some(Runtime::Kubernetes),
            Some(POD),
        );
        // The pod's sandbox-level cgroup itself: a pod, no container.
        check(&format!("/kubepods/besteffort/pod{POD}"), None, Some(POD));
        let conmon = from_cgroup_path(&format!(
            "/kubepods.slice/kubepods-pod{systemd_pod}.slice/crio-conmon-{ID}.scope"
        ));
        assert_eq!(conmon.container, None);
    }

    #[test]
    fn containerd_namespaces() {
        check(&format!("/default/{ID}"), Some(Runtime::Containerd), None);
        check(
            &format!("/system.slice/nerdctl-{ID}.scope"),
            Some(Runtime::Containerd),
            None,
        );
    }

    #[test]
    fn systemd_units_and_the_root() {
        let unit = from_cgroup_path("/system.slice/nginx.service");
        assert_eq!(unit.unit.as_deref(), Some("nginx.service"));
        assert_eq!(unit.container, None);
        let session = from_cgroup_path("/user.slice/user-1000.slice/session-3.scope");
        assert_eq!(session.unit.as_deref(), Some("session-3.scope"));
        let root = from_cgroup_path("/");
        assert_eq!(
            root,
            Identity {
                cgroup: "/".into(),
                ..Identity::default()
            }
        );
        // Not ids: too short, upper case.
        assert_eq!(
            from_cgroup_path(&format!("/docker/{}", &ID[1..])).container,
            None
        );
        assert_eq!(
            from_cgroup_path(&format!("/docker/{}", ID.to_uppercase())).container,
            None
        );
    }

    #[test]
    fn proc_cgroup_files() {
        // cgroup v2 only.
        let v2 = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(
            from_proc_cgroup(&v2).and_then(|i| i.container).as_deref(),
            Some(ID)
        );
        // A hybrid host (this project's machines): v1 controllers and cgroup2 beside them.
        let hybrid = format!(
            "9:name=systemd:/libpod_parent/libpod-{ID}\n4:memory:/libpod_parent/libpod-{ID}\n0::/libpod_parent/libpod-{ID}\n"
        );
        let identity = from_proc_cgroup(&hybrid).expect("an identity");
        assert_eq!(identity.runtime, Some(Runtime::Podman));
        assert_eq!(identity.cgroup, format!("/libpod_parent/libpod-{ID}"));
        // Hybrid, with the runtime using only the v1 hierarchies.
        let v1_only = format!("9:name=systemd:/docker/{ID}\n4:memory:/docker/{ID}\n0::/\n");
        assert_eq!(
            from_proc_cgroup(&v1_only)
                .and_then(|i| i.container)
                .as_deref(),
            Some(ID)
        );
        // A host process of a hybrid host: systemd's path, else the root.
        let host = "9:name=systemd:/system.slice/ssh.service\n4:memory:/\n0::/\n";
        assert_eq!(
            from_proc_cgroup(host).and_then(|i| i.unit).as_deref(),
            Some("ssh.service")
        );
        assert_eq!(
            from_proc_cgroup("0::/\n").map(|i| i.cgroup).as_deref(),
            Some("/")
        );
        assert_eq!(from_proc_cgroup(""), None);
    }

    #[test]
    fn a_gone_process_is_found_by_its_cgroup_id() {
        use std::os::unix::fs::MetadataExt;
        // This test's own cgroup, by its id, for a pid that is no process.
        let root = cgroup2_root().expect("cgroup2 mounted");
        let own = read_identity(std::process::id()).expect("own identity");
        let dir = root.join(own.cgroup.trim_start_matches('/'));
        let id = std::fs::metadata(&dir).expect("own cgroup").ino();
        let mut resolver = LiveResolver::default();
        let found = resolver.resolve(u32::MAX, id).expect("found by id");
        assert_eq!(found.cgroup, own.cgroup);
        assert_eq!(resolver.resolve(u32::MAX, 0), None);
    }

    #[test]
    fn a_full_table_drops_its_oldest_entry() {
        let mut table = Identities::default();
        for pid in 0..IDENTITIES_MAX as u32 + 1 {
            table.insert(pid, Some(Arc::new(Identity::default())));
        }
        assert_eq!(table.evicted, 1);
        assert!(!table.contains(0));
        assert!(table.contains(IDENTITIES_MAX as u32));
    }
}
