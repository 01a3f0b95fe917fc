//! probectl's data path: ring buffer records → calls → connections → output (text, JSON,
//! pcapng) or decoded protocols → summary. It holds no BPF object and no async runtime (no aya,
//! no tokio): the compiler keeps it working without BPF, so that tests, `probectl replay` and
//! fuzzing drive all of it from byte records. `probectl-core` loads the programs, feeds this
//! crate and re-exports its modules.
//!
//! The modules, each using only those above it:
//!
//! - [`notice`]: what the core has to say while it works, handed to the program's sink (the
//!   core never prints);
//! - [`budget`]: the one byte budget the writers hold connections' state in;
//! - [`output`]: events rendered and written (text, JSON, pcapng);
//! - [`capture`]: ring buffer records reassembled into calls, placed in connections, handed to
//!   the output, counted in the summary; recordings of them (`--record`);
//! - [`decode`]: protocols read out of the plaintext (`--decode http`).

pub mod notice;

pub mod budget;

pub mod output;

pub mod capture;

pub mod decode;

/// For the fuzz targets (`fuzz/`) only.
#[doc(hidden)]
pub mod fuzzing;

use serde::{Deserialize, Serialize};

/// Which way plaintext moves through a probed function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Read,
    Write,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Read => "read",
            Direction::Write => "write",
        }
    }
}

/// Counters the BPF programs keep (summed over CPUs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct KernelStats {
    pub chunks_lost: u64,
    pub bytes_lost: u64,
    pub read_faults: u64,
    pub length_faults: u64,
    pub fd_mismatches: u64,
    pub fd_unknown: u64,
    pub fd_inferred: u64,
    pub fd_ambiguous: u64,
    pub records_lost: u64,
    /// Records whose header announced more than `RING_RECORD_MAX` bytes: skipped unread.
    pub records_oversized: u64,
    pub nesting_overflows: u64,
    pub calls_not_stored: u64,
    pub returns_missed: u64,
    pub loops_not_stored: u64,
    pub filter_full: u64,
    pub records_unscanned: u64,
    pub bytes_unscanned: u64,
    /// Secret records (`--keylog`) that found the ring buffer full.
    pub secrets_lost: u64,
    /// Processes the kernel admitted at exec into a run's selection (`--container`, ...).
    pub selected_at_exec: u64,
    /// Calls (and bytes) cut by the bounded chunk loop of a kernel without `bpf_loop`.
    pub calls_cut: u64,
    pub bytes_cut: u64,
    /// Probe hits whose attach point was not found by address (a kernel without cookies).
    pub address_unknown: u64,
    /// Calls (and bytes) of connections `--port`/`--host` do not select, not copied.
    pub calls_not_selected: u64,
    pub bytes_not_selected: u64,
    /// Counters that could not be read: the losses they count are unknown, not zero.
    pub counters_unreadable: u64,
}

/// Entries removed from the kernel's tables because their process exited.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Swept {
    /// Go calls in flight that never returned.
    pub goroutines: u64,
    /// Connection states and the fds of connections.
    pub connections: u64,
    pub socket_fds: u64,
    /// Exited processes whose pid another process held already when their entries were to
    /// go: left to the tables' bounds (the LRUs evict them; the new process's exit sweeps
    /// them), for the new process's own entries have the same pid.
    pub pids_reused: u64,
}

impl std::ops::AddAssign for Swept {
    fn add_assign(&mut self, other: Swept) {
        self.goroutines += other.goroutines;
        self.connections += other.connections;
        self.socket_fds += other.socket_fds;
        self.pids_reused += other.pids_reused;
    }
}
