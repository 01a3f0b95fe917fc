//! OpenSSL: everything probing needs is in probes.toml; this plugin turns away BoringSSL (same
//! file names, same `SSL_*` symbols) and names the version, from the banner
//! `OpenSSL 3.0.x <date>`. A static build carries it in the executable; a shared libssl has it
//! in the libcrypto next to it.

use std::path::Path;

use probectl_boringssl::boringssl_evidence;
use probectl_core::plugin::{version_strings, Plugin, PluginRegistration, Verdict};
use probectl_core::symbols::ElfFile;

pub struct OpenSsl;

impl Plugin for OpenSsl {
    fn group(&self) -> &'static str {
        "openssl"
    }

    fn inspect(&self, file: &ElfFile) -> Verdict {
        if let Some(evidence) = boringssl_evidence(file) {
            return Verdict::Reject {
                reason: format!(
                    "this is BoringSSL, not OpenSSL ({evidence}): use `probectl run boringssl`"
                ),
            };
        }
        let version = release_banner(file.bytes()).or_else(|| {
            let libcrypto = sibling_libcrypto(file.path())?;
            release_banner(ElfFile::open(&libcrypto).ok()?.bytes())
        });
        Verdict::Accept { version }
    }
}

/// The release banner, `OpenSSL 3.0.19 27 Jan 2026`: three dotted numbers, then a date (other
/// strings start with "OpenSSL 3.0" too, e.g. "OpenSSL 3.0 legacy provider").
fn release_banner(bytes: &[u8]) -> Option<String> {
    version_strings(bytes, b"OpenSSL ").find(|text| {
        let number = text["OpenSSL ".len()..].split(' ').next().unwrap_or("");
        number.split('.').count() == 3 && text.split(' ').count() >= 5
    })
}

/// `.../libssl.so.3` -> `.../libcrypto.so.3`.
fn sibling_libcrypto(libssl: &Path) -> Option<std::path::PathBuf> {
    let name = libssl.file_name()?.to_str()?;
    let suffix = name.strip_prefix("libssl")?;
    Some(libssl.with_file_name(format!("libcrypto{suffix}")))
}

inventory::submit! { PluginRegistration(&OpenSsl) }

/// Linking this crate is what registers the plugin; the binary calls this so that the linker
/// keeps it.
pub fn register() {}
