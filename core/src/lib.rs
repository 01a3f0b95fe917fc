//! probectl's generic core: nothing here knows about a particular TLS library. Libraries are
//! described by `probes.toml` specs; plugins add what a spec cannot express.
//!
//! The modules are the stages of a trace, listed so that each uses only modules above it:
//!
//! - [`spec`]: the declarative probe specs (groups, probes, locate rules, pins);
//! - [`targets`]: processes, their process trees and the files they map;
//! - [`selection`]: `--container`, `--cgroup`, `--comm`, `--port`, `--host` resolved against
//!   the processes running now;
//! - [`cri`]: pod names, namespaces and container names from the node's container runtime;
//! - [`symbols`]: functions in ELF files (by symbol, Go's pclntab, or located by analysis) and
//!   where in them probes can go (placement by disassembly);
//! - [`plugin`]: what a library needs beyond its spec (telling it apart, its version);
//! - [`plan`]: which file, function and offset gets which probe (`list` and `check` report it);
//! - [`kernel`]: the kernel's features, the BPF object loaded, configured, attached and detached;
//! - [`output`], [`capture`], [`decode`] and [`notice`]: the data path from ring buffer
//!   records to what is printed, the crate `probectl-pipeline` (no aya, no tokio), re-exported;
//! - [`session`]: a whole trace, from specs to summary, and the processes it starts and watches;
//!   a replay of a recording.

pub mod spec;

pub mod targets;

pub mod selection;

pub mod cri;

pub mod symbols;

pub mod plugin;

pub mod plan;

pub mod kernel;

// The data path, a crate of its own without aya or tokio (see probectl-pipeline).
pub use probectl_pipeline::{budget, capture, decode, notice, output};

pub mod session;

/// For the fuzz targets (`fuzz/`) only.
#[doc(hidden)]
pub use probectl_pipeline::fuzzing;
