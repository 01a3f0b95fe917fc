//! rustls: its spec (probes.toml) probes aws-lc's record AEAD, which more than rustls calls.
//! This plugin accepts only files that carry rustls with the aws-lc-rs provider, and names
//! both versions, from the crate paths every Rust build keeps. Anything else that carries
//! aws-lc (its own libssl, a program sealing its own data) is left alone: its TLS, if any, is
//! another group's, and its records are not rustls'.

use probectl_core::plugin::{Plugin, PluginRegistration, Verdict};
use probectl_core::symbols::locate::rust_tls;
use probectl_core::symbols::ElfFile;

pub struct Rustls;

impl Plugin for Rustls {
    fn group(&self) -> &'static str {
        "rustls"
    }

    fn inspect(&self, file: &ElfFile) -> Verdict {
        match rust_tls(file.bytes()) {
            Some(tls) if tls.rustls.is_some() && tls.aws_lc => Verdict::Accept {
                version: Some(tls.to_string()),
            },
            Some(tls) if tls.rustls.is_some() => Verdict::Reject {
                reason: format!(
                    "it carries {tls}: only rustls on aws-lc-rs is traced (ring reports no \
                     errors to locate its functions by)"
                ),
            },
            _ => Verdict::Reject {
                reason: "it carries no rustls (the crate path of rustls' sources is not in it)"
                    .to_string(),
            },
        }
    }
}

inventory::submit! { PluginRegistration(&Rustls) }

/// Linking this crate is what registers the plugin; the binary calls this so that the linker
/// keeps it.
pub fn register() {}
