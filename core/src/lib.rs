//! probectl's generic core: nothing here knows about a particular TLS library. Libraries are
//! described by `probes.toml` specs; plugins add what a spec cannot express.
//!
//! The modules are the stages of a trace, in the order data flows through them; each uses
//! only the stages before it (and `output`'s types for what it hands on):
//!
//! - [`spec`]: the declarative probe specs and the plugins that tell libraries apart;
//! - [`discovery`]: processes, their process trees and the files they map;
//! - [`symbols`]: functions in ELF files, by symbol, Go's pclntab, or located by analysis;
//! - [`plan`]: which file, function and offset gets which probe, placed by disassembly
//!   (`list` and `check` report it);
//! - [`load`]: the kernel's features, the BPF object loaded, configured and attached;
//! - [`events`]: ring buffer records reassembled into calls, placed in connections, counted;
//! - [`output`]: events rendered and written (text, JSON, pcapng);
//! - [`decode`]: protocols read out of the plaintext (`--decode http`);
//! - [`session`]: a whole trace, from specs to summary, and the processes it starts and watches.

pub mod spec;

pub mod discovery;

pub mod symbols;

pub mod plan;

pub mod load;

pub mod events;

pub mod output;

pub mod decode;

pub mod session;
