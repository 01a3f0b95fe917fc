//! Least privilege: the capabilities a run needs, checked before anything is loaded, so that a
//! missing one is named instead of surfacing as "tracefs not found" or an EPERM/EACCES from
//! perf_event_open.
//!
//! What each kind of run needs (measured on Linux 6.18, tested in tests/privileges.rs):
//!
//! | run | capabilities |
//! | --- | --- |
//! | `-- CMD`, or `--pid` of a process of the same user | CAP_BPF, CAP_PERFMON, CAP_DAC_OVERRIDE |
//! | `--pid` of another user's process | + CAP_SYS_PTRACE (its /proc files) |
//! | every process | + CAP_SYS_ADMIN (the kernel refuses the uprobe PMU's events without it) |
//!
//! CAP_DAC_OVERRIDE is for tracefs (`/sys/kernel/tracing`, root's, mode 0700), where the
//! process-scoped uprobes and the tracepoints are created; a process whose effective uid is 0
//! owns it and does not need the capability. tracefs that is not mounted needs CAP_SYS_ADMIN to
//! mount. CAP_SYS_ADMIN also stands for CAP_BPF and CAP_PERFMON, as in the kernel.

use std::os::unix::fs::MetadataExt;

/// Linux capability numbers (linux/capability.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    DacOverride = 1,
    SysPtrace = 19,
    SysAdmin = 21,
    Perfmon = 38,
    Bpf = 39,
}

impl Capability {
    pub fn name(self) -> &'static str {
        match self {
            Capability::DacOverride => "CAP_DAC_OVERRIDE",
            Capability::SysPtrace => "CAP_SYS_PTRACE",
            Capability::SysAdmin => "CAP_SYS_ADMIN",
            Capability::Perfmon => "CAP_PERFMON",
            Capability::Bpf => "CAP_BPF",
        }
    }
}

/// What a run traces, as far as privileges go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// `-- CMD` (the command runs as probectl's user).
    Command,
    /// `--pid N`.
    Process(u32),
    /// Every process on the host.
    AllProcesses,
}

/// This process's credentials, as the checks need them.
#[derive(Debug, Clone, Copy)]
pub struct Credentials {
    /// The effective capability set (`CapEff` of /proc/self/status).
    pub effective: u64,
    pub euid: u32,
    /// Whether tracefs is mounted at /sys/kernel/tracing.
    pub tracefs_mounted: bool,
    /// Whether this process may write tracefs's uprobe_events (when mounted).
    pub tracefs_writable: bool,
}

const TRACEFS: &str = "/sys/kernel/tracing";

impl Credentials {
    pub fn current() -> Credentials {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let effective = status
            .lines()
            .find_map(|line| line.strip_prefix("CapEff:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .unwrap_or(0);
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        // From the mount table, which every user may read (tracefs itself is root's, 0700).
        let tracefs_mounted = std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .any(|line| {
                let mut fields = line.split_whitespace().skip(1);
                fields.next() == Some(TRACEFS) && fields.next() == Some("tracefs")
            });
        Credentials {
            effective,
            euid,
            tracefs_mounted,
            tracefs_writable: tracefs_mounted && writable(&format!("{TRACEFS}/uprobe_events")),
        }
    }

    fn has(&self, capability: Capability) -> bool {
        self.effective & (1u64 << capability as u32) != 0
    }
}

/// Whether the effective credentials may write `path` (faccessat with AT_EACCESS: the
/// effective uid and capabilities, as an open would use them).
fn writable(path: &str) -> bool {
    let Ok(path) = std::ffi::CString::new(path) else {
        return false;
    };
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), libc::W_OK, libc::AT_EACCESS) == 0 }
}

/// The owner of a process (the uid of its /proc directory), if it can be read.
pub fn process_owner(pid: u32) -> Option<u32> {
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|meta| meta.uid())
}

/// What is missing for a run, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not privileged enough to trace {what}: it needs {needed} (missing: {missing}){extra}; run as root, or see \"Requirements\" in the README")]
pub struct Missing {
    pub what: String,
    pub needed: String,
    pub missing: String,
    pub extra: String,
}

fn names(capabilities: &[Capability]) -> String {
    let names: Vec<&str> = capabilities.iter().map(|cap| cap.name()).collect();
    match names.as_slice() {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// Checks the capabilities a run of `reach` needs against `credentials`.
pub fn check(reach: Reach, credentials: &Credentials) -> Result<(), Missing> {
    use Capability::*;
    let mut needed = vec![Bpf, Perfmon, DacOverride];
    let mut missing = Vec::new();
    let mut extra = String::new();
    let admin = credentials.has(SysAdmin);
    if !credentials.has(Bpf) && !admin {
        missing.push(Bpf);
    }
    if !credentials.has(Perfmon) && !admin {
        missing.push(Perfmon);
    }
    let tracefs_ok = if credentials.tracefs_mounted {
        credentials.tracefs_writable
    } else {
        credentials.euid == 0
    };
    if !tracefs_ok && !credentials.has(DacOverride) {
        missing.push(DacOverride);
    }
    let what = match reach {
        Reach::Command => "a command".to_string(),
        Reach::Process(pid) => match process_owner(pid) {
            Some(owner) if owner != credentials.euid => {
                needed.push(SysPtrace);
                if !credentials.has(SysPtrace) {
                    missing.push(SysPtrace);
                }
                format!("process {pid} of another user (uid {owner})")
            }
            _ => format!("process {pid}"),
        },
        Reach::AllProcesses => {
            needed.push(SysAdmin);
            if !admin {
                missing.push(SysAdmin);
            }
            "every process".to_string()
        }
    };
    if !credentials.tracefs_mounted && !admin {
        if !needed.contains(&SysAdmin) {
            needed.push(SysAdmin);
        }
        if !missing.contains(&SysAdmin) {
            missing.push(SysAdmin);
        }
        extra = format!(
            "; tracefs is not mounted at {TRACEFS}, and mounting it needs CAP_SYS_ADMIN: mount it \
             as root first (mount -t tracefs tracefs {TRACEFS})"
        );
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Missing {
        what,
        needed: names(&needed),
        missing: names(&missing),
        extra,
    })
}

/// `check --pid N` reads the process's /proc files: another user's need CAP_SYS_PTRACE.
pub fn check_readable(pid: u32, credentials: &Credentials) -> Result<(), String> {
    match process_owner(pid) {
        Some(owner) if owner != credentials.euid && !credentials.has(Capability::SysPtrace) => {
            Err(format!(
                "not privileged enough to look at process {pid} of another user (uid {owner}): \
                 reading its /proc files needs CAP_SYS_PTRACE (missing: CAP_SYS_PTRACE)"
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[Capability]) -> u64 {
        list.iter().fold(0, |set, cap| set | 1u64 << *cap as u32)
    }

    fn nobody(list: &[Capability]) -> Credentials {
        Credentials {
            effective: caps(list),
            euid: 65534,
            tracefs_mounted: true,
            tracefs_writable: list.contains(&Capability::DacOverride),
        }
    }

    use Capability::*;

    #[test]
    fn a_command_needs_bpf_perfmon_and_dac_override() {
        assert_eq!(
            check(Reach::Command, &nobody(&[Bpf, Perfmon, DacOverride])),
            Ok(())
        );
        let error = check(Reach::Command, &nobody(&[Bpf, Perfmon])).expect_err("refused");
        assert_eq!(error.missing, "CAP_DAC_OVERRIDE");
        assert_eq!(error.needed, "CAP_BPF, CAP_PERFMON and CAP_DAC_OVERRIDE");
        let error = check(Reach::Command, &nobody(&[Perfmon, DacOverride])).expect_err("refused");
        assert_eq!(error.missing, "CAP_BPF");
    }

    #[test]
    fn every_process_needs_sys_admin() {
        let error =
            check(Reach::AllProcesses, &nobody(&[Bpf, Perfmon, DacOverride])).expect_err("refused");
        assert_eq!(error.missing, "CAP_SYS_ADMIN");
        assert_eq!(
            check(
                Reach::AllProcesses,
                &nobody(&[Bpf, Perfmon, DacOverride, SysAdmin])
            ),
            Ok(())
        );
    }

    #[test]
    fn sys_admin_stands_for_bpf_and_perfmon() {
        assert_eq!(
            check(Reach::Command, &nobody(&[SysAdmin, DacOverride])),
            Ok(())
        );
    }

    #[test]
    fn root_owns_tracefs() {
        let root = Credentials {
            effective: caps(&[Bpf, Perfmon]),
            euid: 0,
            tracefs_mounted: true,
            tracefs_writable: true,
        };
        assert_eq!(check(Reach::Command, &root), Ok(()));
    }

    #[test]
    fn unmounted_tracefs_needs_sys_admin_to_mount() {
        let credentials = Credentials {
            tracefs_mounted: false,
            tracefs_writable: false,
            ..nobody(&[Bpf, Perfmon, DacOverride])
        };
        let error = check(Reach::Command, &credentials).expect_err("refused");
        assert_eq!(error.missing, "CAP_SYS_ADMIN");
        assert!(error.to_string().contains("mount -t tracefs"), "{error}");
    }
}
