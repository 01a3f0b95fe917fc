//! What the running kernel offers probectl's BPF programs, probed once at start (before the
//! object is loaded), so that a kernel that lacks something gets one clear line naming what it
//! lacks and the Linux version that has it, instead of a verifier log.
//!
//! Required: BPF ring buffers (5.8), BPF cookies on uprobes (5.15: one program serves every
//! attach point and reads its spec through the cookie) and `bpf_loop` (5.17: calls of any size
//! are copied in chunks). Optional: kernel BTF (`/sys/kernel/btf/vmlinux`), which gives the
//! socket offsets for connection addresses; without it connections have no addresses, and
//! `Tracer::load` says so.

use aya::maps::MapType;
use aya::programs::ProgramType;
use aya::sys::{is_helper_supported, is_map_supported, BpfHelper};

/// A kernel feature probectl's BPF programs need, and the first Linux release that has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    pub name: &'static str,
    pub since: (u32, u32),
}

pub const RING_BUFFER: Requirement = Requirement {
    name: "BPF ring buffers",
    since: (5, 8),
};
pub const UPROBE_COOKIES: Requirement = Requirement {
    name: "BPF cookies on uprobes",
    since: (5, 15),
};
pub const BPF_LOOP: Requirement = Requirement {
    name: "bpf_loop",
    since: (5, 17),
};

/// The oldest Linux release with every required feature.
pub const MINIMUM_KERNEL: (u32, u32) = BPF_LOOP.since;

#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("probing the kernel for {what}: {source}")]
    Probe {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "this kernel (Linux {release}) lacks {missing}: probectl needs Linux {}.{} or newer",
        minimum.0,
        minimum.1
    )]
    Unsupported {
        release: String,
        missing: String,
        minimum: (u32, u32),
    },
}

/// What the running kernel has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFeatures {
    /// `uname -r`.
    pub release: String,
    pub ring_buffer: bool,
    pub uprobe_cookies: bool,
    pub bpf_loop: bool,
    /// Kernel BTF at `/sys/kernel/btf/vmlinux` (optional: socket addresses need it).
    pub btf: bool,
}

impl KernelFeatures {
    /// Probes the running kernel: creates a ring buffer map and loads two tiny kprobe-type
    /// programs (the type of uprobe programs) that call the helpers, as libbpf's probes do.
    /// Needs the privileges of loading BPF programs.
    pub fn probe() -> Result<KernelFeatures, FeatureError> {
        let helper = |what: &'static str, helper: BpfHelper| {
            is_helper_supported(ProgramType::KProbe, helper).map_err(|error| FeatureError::Probe {
                what,
                source: Box::new(error),
            })
        };
        Ok(KernelFeatures {
            release: kernel_release(),
            ring_buffer: is_map_supported(MapType::RingBuf).map_err(|error| {
                FeatureError::Probe {
                    what: RING_BUFFER.name,
                    source: Box::new(error),
                }
            })?,
            uprobe_cookies: helper(UPROBE_COOKIES.name, BpfHelper::BPF_FUNC_get_attach_cookie)?,
            bpf_loop: helper(BPF_LOOP.name, BpfHelper::BPF_FUNC_loop)?,
            btf: std::path::Path::new(crate::kernel::btf::VMLINUX_BTF).exists(),
        })
    }

    /// The required features this kernel lacks, oldest first.
    pub fn missing(&self) -> Vec<Requirement> {
        [
            (self.ring_buffer, RING_BUFFER),
            (self.uprobe_cookies, UPROBE_COOKIES),
            (self.bpf_loop, BPF_LOOP),
        ]
        .into_iter()
        .filter(|(present, _)| !present)
        .map(|(_, requirement)| requirement)
        .collect()
    }

    /// Fails with one line naming what is missing, unless the kernel has every required feature.
    pub fn require(&self) -> Result<(), FeatureError> {
        let missing = self.missing();
        let Some(newest) = missing.iter().map(|requirement| requirement.since).max() else {
            return Ok(());
        };
        let names: Vec<String> = missing
            .iter()
            .map(|requirement| {
                format!(
                    "{} (Linux {}.{}+)",
                    requirement.name, requirement.since.0, requirement.since.1
                )
            })
            .collect();
        Err(FeatureError::Unsupported {
            release: self.release.clone(),
            missing: join_words(&names),
            // A kernel can miss a feature its version should have (a distribution's
            // configuration): it still needs at least the minimum.
            minimum: newest.max(MINIMUM_KERNEL),
        })
    }
}

/// "a", "a and b", "a, b and c".
fn join_words(words: &[String]) -> String {
    match words {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// The running kernel's release string (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// (major, minor) of a release string such as `5.10.0-43-cloud-amd64`.
pub fn release_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian_5_10() -> KernelFeatures {
        KernelFeatures {
            release: "5.10.0-43-cloud-amd64".into(),
            ring_buffer: true,
            uprobe_cookies: false,
            bpf_loop: false,
            btf: true,
        }
    }

    #[test]
    fn release_versions_are_parsed() {
        assert_eq!(release_version("5.10.0-43-cloud-amd64"), Some((5, 10)));
        assert_eq!(release_version("6.12.117+deb12-cloud-amd64"), Some((6, 12)));
        assert_eq!(release_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(release_version("unknown"), None);
    }

    #[test]
    fn a_kernel_without_cookies_and_bpf_loop_is_refused_in_one_line() {
        let error = debian_5_10().require().expect_err("refused");
        insta::assert_snapshot!(error.to_string(), @"this kernel (Linux 5.10.0-43-cloud-amd64) lacks BPF cookies on uprobes (Linux 5.15+) and bpf_loop (Linux 5.17+): probectl needs Linux 5.17 or newer");
    }

    #[test]
    fn a_kernel_without_ring_buffers_names_all_three() {
        let features = KernelFeatures {
            release: "5.4.0".into(),
            ring_buffer: false,
            ..debian_5_10()
        };
        insta::assert_snapshot!(features.require().expect_err("refused").to_string(), @"this kernel (Linux 5.4.0) lacks BPF ring buffers (Linux 5.8+), BPF cookies on uprobes (Linux 5.15+) and bpf_loop (Linux 5.17+): probectl needs Linux 5.17 or newer");
    }

    #[test]
    fn a_kernel_with_every_feature_is_accepted_with_or_without_btf() {
        let features = KernelFeatures {
            uprobe_cookies: true,
            bpf_loop: true,
            btf: false,
            ..debian_5_10()
        };
        assert!(features.missing().is_empty());
        assert!(features.require().is_ok());
    }

    /// Probes the kernel this runs on (the host, or each kernel of `scripts/kernels`): a
    /// feature is found on every kernel at least as new as the release that brought it.
    #[test]
    fn the_running_kernel_has_what_its_version_promises() {
        let features = KernelFeatures::probe().expect("probe (run as root)");
        let version = release_version(&features.release).expect("release");
        eprintln!("features of {version:?}: {features:?}");
        for (present, requirement) in [
            (features.ring_buffer, RING_BUFFER),
            (features.uprobe_cookies, UPROBE_COOKIES),
            (features.bpf_loop, BPF_LOOP),
        ] {
            if version >= requirement.since {
                assert!(
                    present,
                    "{} missing on {}",
                    requirement.name, features.release
                );
            }
        }
        assert_eq!(features.require().is_ok(), features.missing().is_empty());
    }

    /// The helper probe can say no: helper 0 (`BPF_FUNC_unspec`) exists on no kernel, while
    /// `bpf_get_current_pid_tgid` exists on all.
    #[test]
    fn the_helper_probe_tells_a_missing_helper_from_a_present_one() {
        assert!(
            !is_helper_supported(ProgramType::KProbe, BpfHelper::BPF_FUNC_unspec).expect("probe")
        );
        assert!(is_helper_supported(
            ProgramType::KProbe,
            BpfHelper::BPF_FUNC_get_current_pid_tgid
        )
        .expect("probe"));
    }
}
