//! GnuTLS: everything probing needs is in probes.toml; this plugin only names the version,
//! from the string GnuTLS logs when debugging is enabled ("Enabled GnuTLS 3.7.9 logging...").

use probectl_core::plugin::{version_strings, Plugin, PluginRegistration, Verdict};
use probectl_core::symbols::ElfFile;

pub struct GnuTls;

impl Plugin for GnuTls {
    fn group(&self) -> &'static str {
        "gnutls"
    }

    fn inspect(&self, file: &ElfFile) -> Verdict {
        let version = version_strings(file.bytes(), b"GnuTLS ").find_map(|text| {
            let number = text["GnuTLS ".len()..].split(' ').next()?;
            let dotted = number.split('.').count() >= 2
                && number.split('.').all(|part| part.parse::<u32>().is_ok());
            dotted.then(|| format!("GnuTLS {number}"))
        });
        Verdict::Accept { version }
    }
}

inventory::submit! { PluginRegistration(&GnuTls) }

/// Linking this crate is what registers the plugin; the binary calls this so that the linker
/// keeps it.
pub fn register() {}
