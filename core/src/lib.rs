//! probectl's generic core: nothing here knows about a particular TLS library. Libraries are
//! described by `probes.toml` specs; plugins add what a spec cannot express.

pub mod bpf;
pub mod btf;
pub mod connections;
pub mod discovery;
pub mod events;
pub mod features;
pub mod inspect;
pub mod output;
pub mod plan;
pub mod plugin;
pub mod process;
pub mod session;
pub mod spec;
pub mod summary;
pub mod symbols;
