//! OpenSSL: everything probing needs is in probes.toml; this plugin only names the version
//! (from the banner `OpenSSL 3.0.x <date>` the library carries).

use probectl_core::plugin::{find_version_string, Plugin, PluginRegistration, Verdict};
use probectl_core::symbols::ElfFile;

pub struct OpenSsl;

impl Plugin for OpenSsl {
    fn group(&self) -> &'static str {
        "openssl"
    }

    fn inspect(&self, file: &ElfFile) -> Verdict {
        Verdict::Accept {
            version: find_version_string(file.bytes(), b"OpenSSL "),
        }
    }
}

inventory::submit! { PluginRegistration(&OpenSsl) }

/// Linking this crate is what registers the plugin; the binary calls this so that the linker
/// keeps it.
pub fn register() {}
