//! What the running kernel offers probectl's BPF programs, probed once at start (before the
//! object is loaded), and the programs chosen from it: a kernel that lacks something the fast
//! programs use gets the fallback programs, named in the run's first lines with what they
//! cost; a kernel that lacks what no fallback replaces gets one clear line naming it and the
//! Linux version that has it, instead of a verifier log.
//!
//! Required: BPF ring buffers (5.8). With a fallback (see ebpf/src/compat.rs):
//! - BPF cookies on uprobes (5.15: one program serves every attach point and reads its spec
//!   through the cookie). Without them the attach point is told from the probed code address,
//!   through the kernel's per-task VMA cache (Linux 3.15 to 6.0), whose offsets come from the
//!   kernel's BTF: so a kernel without cookies needs BTF;
//! - `bpf_loop` (5.17: calls of any size are copied in chunks). Without it a chain of tail calls
//!   copies [`CHUNK_LOOP_BOUND`] chunks of a call at most; the rest is cut, counted.
//!
//! Optional: kernel BTF (`/sys/kernel/btf/vmlinux`), which gives the socket offsets for
//! connection addresses; without it connections have no addresses, and `Tracer::load` says so.
//!
//! `PROBECTL_FALLBACKS=bounded` (or `address`) forces a fallback on a kernel that has the
//! feature, so that the fallback programs are tested on new kernels too (tests/kernels.rs).

use aya::maps::MapType;
use aya::programs::ProgramType;
use aya::sys::{is_helper_supported, is_map_supported, BpfHelper};
use probectl_common::capacity::CHUNK_LOOP_BOUND;
use probectl_common::CHUNK_DATA_MAX;

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
pub const MINIMUM_KERNEL: (u32, u32) = RING_BUFFER.since;

/// The environment variable that forces a fallback (`bounded`, `address`).
pub const FORCE_VARIABLE: &str = "PROBECTL_FALLBACKS";

/// Which instance of the BPF programs a run loads (ebpf/src/compat.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Cookies and `bpf_loop`.
    Fast,
    /// Cookies, and the bounded chunk loop.
    Bounded,
    /// The bounded chunk loop, and the attach point from the code address.
    Address,
}

/// What the run loads: the programs' mode, and the lines that say what the kernel lacks and
/// what the fallbacks cost (the run's first lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub mode: Mode,
    pub notices: Vec<String>,
}

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
    #[error("{FORCE_VARIABLE}={value}: {reason}")]
    Forced { value: String, reason: String },
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
    /// The per-task VMA cache in the kernel's BTF (`task_struct.vmacache`, Linux 3.15 to 6.0):
    /// what tells attach points apart without cookies.
    pub vma_cache: bool,
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
            vma_cache: crate::kernel::btf::running_address_offsets().is_ok(),
        })
    }

    /// Whether attach points can be told apart without cookies (see ebpf/src/compat.rs).
    fn address_identity(&self) -> bool {
        self.btf && self.vma_cache
    }

    /// The required features this kernel lacks, with no fallback, oldest first.
    pub fn missing(&self) -> Vec<Requirement> {
        [
            (self.ring_buffer, RING_BUFFER),
            (
                self.uprobe_cookies || self.address_identity(),
                UPROBE_COOKIES,
            ),
        ]
        .into_iter()
        .filter(|(present, _)| !present)
        .map(|(_, requirement)| requirement)
        .collect()
    }

    /// The programs for this kernel, and what the run says of them; `forced` is the value of
    /// [`FORCE_VARIABLE`], if set. Fails as `require` does, or for a fallback that cannot be
    /// forced here.
    pub fn select(&self, forced: Option<&str>) -> Result<Selection, FeatureError> {
        self.require()?;
        let mut mode = match (self.uprobe_cookies, self.bpf_loop) {
            (true, true) => Mode::Fast,
            (true, false) => Mode::Bounded,
            (false, _) => Mode::Address,
        };
        let forced_error = |value: &str, reason: &str| FeatureError::Forced {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        match forced {
            None | Some("") => {}
            Some("bounded") if mode == Mode::Fast => mode = Mode::Bounded,
            Some("bounded") => {}
            Some("address") if self.address_identity() => mode = Mode::Address,
            Some("address") => {
                return Err(forced_error(
                    "address",
                    "this kernel has no per-task VMA cache in its BTF (Linux 6.1 removed it)",
                ))
            }
            Some(other) => return Err(forced_error(other, "expected bounded or address")),
        }
        let release = &self.release;
        let mut notices = Vec::new();
        let lacks = |requirement: Requirement, present: bool| {
            if present {
                format!(
                    "{FORCE_VARIABLE} makes this kernel (Linux {release}) do without {} (Linux {}.{}+)",
                    requirement.name, requirement.since.0, requirement.since.1
                )
            } else {
                format!(
                    "this kernel (Linux {release}) lacks {} (Linux {}.{}+)",
                    requirement.name, requirement.since.0, requirement.since.1
                )
            }
        };
        if mode == Mode::Address {
            notices.push(format!(
                "{}: attach points are told apart by their code address instead (the kernel's \
                 VMA cache, a few kernel reads per call); a call whose address is not found is \
                 counted, not captured",
                lacks(UPROBE_COOKIES, self.uprobe_cookies)
            ));
        }
        if mode != Mode::Fast {
            notices.push(format!(
                "{}: a chain of tail calls copies a call instead, {} MiB of one buffer at most \
                 ({} chunks); the rest of a longer call is cut, counted",
                lacks(BPF_LOOP, self.bpf_loop),
                u64::from(CHUNK_LOOP_BOUND) * CHUNK_DATA_MAX as u64 / (1024 * 1024),
                CHUNK_LOOP_BOUND
            ));
        }
        Ok(Selection { mode, notices })
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

/// What `probectl check` says of the running kernel: the fallbacks a run would load, or why a
/// run would be refused (nothing when the kernel cannot be probed, e.g. without privileges:
/// the run says it then).
pub fn check_notices() -> Vec<String> {
    let Ok(features) = KernelFeatures::probe() else {
        return Vec::new();
    };
    match features.select(std::env::var(FORCE_VARIABLE).ok().as_deref()) {
        Ok(selection) => selection.notices,
        Err(error) => vec![error.to_string()],
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
            vma_cache: true,
        }
    }

    fn debian_6_1() -> KernelFeatures {
        KernelFeatures {
            release: "6.1.0-57-cloud-amd64".into(),
            uprobe_cookies: true,
            bpf_loop: true,
            vma_cache: false,
            ..debian_5_10()
        }
    }

    #[test]
    fn release_versions_are_parsed() {
        assert_eq!(release_version("5.10.0-43-cloud-amd64"), Some((5, 10)));
        assert_eq!(release_version("6.12.117+deb12-cloud-amd64"), Some((6, 12)));
        assert_eq!(release_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(release_version("unknown"), None);
    }

    /// What each kernel of the matrix loads, and the lines the run starts with.
    #[test]
    fn the_programs_follow_the_kernel_and_say_what_they_cost() {
        let selection = debian_5_10().select(None).expect("5.10 is supported");
        assert_eq!(selection.mode, Mode::Address);
        insta::assert_snapshot!(selection.notices.join("\n"), @r"
        this kernel (Linux 5.10.0-43-cloud-amd64) lacks BPF cookies on uprobes (Linux 5.15+): attach points are told apart by their code address instead (the kernel's VMA cache, a few kernel reads per call); a call whose address is not found is counted, not captured
        this kernel (Linux 5.10.0-43-cloud-amd64) lacks bpf_loop (Linux 5.17+): a chain of tail calls copies a call instead, 4 MiB of one buffer at most (256 chunks); the rest of a longer call is cut, counted
        ");
        let ubuntu_5_15 = KernelFeatures {
            release: "5.15.0-91-generic".into(),
            uprobe_cookies: true,
            ..debian_5_10()
        };
        let selection = ubuntu_5_15.select(None).expect("5.15 is supported");
        assert_eq!(selection.mode, Mode::Bounded);
        insta::assert_snapshot!(selection.notices.join("\n"), @"this kernel (Linux 5.15.0-91-generic) lacks bpf_loop (Linux 5.17+): a chain of tail calls copies a call instead, 4 MiB of one buffer at most (256 chunks); the rest of a longer call is cut, counted");
        let selection = debian_6_1().select(None).expect("6.1 is supported");
        assert_eq!(selection.mode, Mode::Fast);
        assert!(selection.notices.is_empty());
    }

    #[test]
    fn a_fallback_can_be_forced_where_the_kernel_allows_it() {
        let selection = debian_6_1().select(Some("bounded")).expect("forced");
        assert_eq!(selection.mode, Mode::Bounded);
        insta::assert_snapshot!(selection.notices.join("\n"), @"PROBECTL_FALLBACKS makes this kernel (Linux 6.1.0-57-cloud-amd64) do without bpf_loop (Linux 5.17+): a chain of tail calls copies a call instead, 4 MiB of one buffer at most (256 chunks); the rest of a longer call is cut, counted");
        let features = KernelFeatures {
            vma_cache: true,
            ..debian_6_1()
        };
        assert_eq!(
            features.select(Some("address")).expect("forced").mode,
            Mode::Address
        );
        insta::assert_snapshot!(debian_6_1().select(Some("address")).expect_err("no VMA cache").to_string(), @"PROBECTL_FALLBACKS=address: this kernel has no per-task VMA cache in its BTF (Linux 6.1 removed it)");
        insta::assert_snapshot!(debian_6_1().select(Some("fast")).expect_err("unknown").to_string(), @"PROBECTL_FALLBACKS=fast: expected bounded or address");
    }

    #[test]
    fn a_kernel_without_cookies_or_btf_is_refused_in_one_line() {
        let features = KernelFeatures {
            btf: false,
            ..debian_5_10()
        };
        let error = features.select(None).expect_err("refused");
        insta::assert_snapshot!(error.to_string(), @"this kernel (Linux 5.10.0-43-cloud-amd64) lacks BPF cookies on uprobes (Linux 5.15+): probectl needs Linux 5.15 or newer");
    }

    #[test]
    fn a_kernel_without_ring_buffers_is_refused() {
        let features = KernelFeatures {
            release: "5.4.0".into(),
            ring_buffer: false,
            ..debian_5_10()
        };
        insta::assert_snapshot!(features.require().expect_err("refused").to_string(), @"this kernel (Linux 5.4.0) lacks BPF ring buffers (Linux 5.8+): probectl needs Linux 5.8 or newer");
    }

    #[test]
    fn a_kernel_with_every_feature_is_accepted_with_or_without_btf() {
        let features = KernelFeatures {
            btf: false,
            ..debian_6_1()
        };
        assert!(features.missing().is_empty());
        assert!(features.require().is_ok());
        assert_eq!(features.select(None).expect("fast").mode, Mode::Fast);
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
        // Every kernel of the matrix (5.10 on) is supported, with the programs its features
        // choose; a kernel without cookies has the VMA cache (it went in 6.1, after cookies).
        if version >= MINIMUM_KERNEL {
            let selection = features.select(None).expect("supported");
            eprintln!("programs: {:?}; {:?}", selection.mode, selection.notices);
            assert_eq!(
                selection.mode == Mode::Fast,
                features.uprobe_cookies && features.bpf_loop
            );
        }
        assert_eq!(features.vma_cache, version < (6, 1));
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
