//! probectl's generic core: nothing here knows about a particular TLS library. Libraries are
//! described by `probes.toml` specs; plugins add what a spec cannot express.

pub mod bpf;
pub mod btf;
pub mod connections;
pub mod control;
pub mod discovery;
pub mod events;
pub mod features;
pub mod gosym;
pub mod http;
pub mod inspect;
pub mod locate;
pub mod output;
pub mod pcapng;
pub mod pipeline;
pub mod placement;
pub mod plan;
pub mod plugin;
pub mod process;
pub mod scoped;
pub mod session;
pub mod spec;
pub mod summary;
pub mod symbols;
pub mod terminal;
pub mod writer;
