//! BoringSSL: its spec (probes.toml) matches the same file names and `SSL_*` symbols as
//! OpenSSL's, so this plugin decides which files really are BoringSSL. The openssl plugin uses
//! the same test to turn BoringSSL away.

use probectl_core::plugin::{contains, Plugin, PluginRegistration, Verdict};
use probectl_core::symbols::ElfFile;

/// Functions that BoringSSL's libssl defines and OpenSSL's does not (API BoringSSL added after
/// the fork). Any one of them is enough.
pub const BORINGSSL_ONLY_FUNCTIONS: &[&str] = &[
    "SSL_CTX_set_custom_verify",
    "SSL_set_renegotiate_mode",
    "SSL_CTX_set_grease_enabled",
    "SSL_get_curve_id",
    "SSL_CTX_set_select_certificate_cb",
];

/// What BoringSSL's `OpenSSL_version()` returns, NUL-terminated in `.rodata`: found in an
/// executable that links BoringSSL statically even when its symbol table is stripped.
const BORINGSSL_NAME: &[u8] = b"\0BoringSSL\0";

/// The tail of the path of BoringSSL's `ssl_lib.cc` as its error reports pass it (`__FILE__`):
/// `../../vendor/boringssl/ssl/ssl_lib.cc` in Bun, `../../third_party/boringssl/src/ssl/...`
/// in Chromium. It stays in executables whose symbols are stripped.
const BORINGSSL_SOURCE: &[u8] = b"/ssl/ssl_lib.cc\0";

/// Whether a NUL-terminated path ending in `BORINGSSL_SOURCE` names a boringssl directory.
fn carries_boringssl_source(bytes: &[u8]) -> bool {
    memchr::memmem::find_iter(bytes, BORINGSSL_SOURCE).any(|at| {
        let start = bytes[..at]
            .iter()
            .rposition(|&byte| byte == 0)
            .map_or(0, |nul| nul + 1);
        bytes[start..at]
            .windows(b"boringssl".len())
            .any(|window| window == b"boringssl")
    })
}

/// Why `file` is BoringSSL (`None`: it is not), in words for the user.
pub fn boringssl_evidence(file: &ElfFile) -> Option<String> {
    if let Ok(found) = file.resolve(BORINGSSL_ONLY_FUNCTIONS) {
        // The first in list order, so that the message is the same on every run.
        if let Some(name) = BORINGSSL_ONLY_FUNCTIONS
            .iter()
            .find(|name| found.contains_key(**name))
        {
            return Some(format!("it defines {name}, which only BoringSSL has"));
        }
    }
    if contains(file.bytes(), BORINGSSL_NAME) {
        return Some("it carries BoringSSL's name string".to_string());
    }
    carries_boringssl_source(file.bytes())
        .then(|| "it carries the source path of BoringSSL's ssl/ssl_lib.cc".to_string())
}

/// OpenSSL 1.1.1 and later define the `_ex` forms; BoringSSL (of Debian 12) does not.
fn looks_like_openssl(file: &ElfFile) -> bool {
    file.resolve(&["SSL_read_ex"])
        .is_ok_and(|found| !found.is_empty())
        || contains(file.bytes(), b"OpenSSL 1.")
        || contains(file.bytes(), b"OpenSSL 3.")
}

pub struct BoringSsl;

impl Plugin for BoringSsl {
    fn group(&self) -> &'static str {
        "boringssl"
    }

    fn inspect(&self, file: &ElfFile) -> Verdict {
        if boringssl_evidence(file).is_some() {
            // BoringSSL has no release numbers: the name is all there is to report.
            return Verdict::Accept {
                version: Some("BoringSSL".to_string()),
            };
        }
        let reason = if looks_like_openssl(file) {
            "this is OpenSSL, not BoringSSL (it defines none of BoringSSL's own functions, such as \
             SSL_CTX_set_custom_verify): use `probectl run openssl`"
        } else {
            "not BoringSSL: it defines none of BoringSSL's own functions, such as \
             SSL_CTX_set_custom_verify"
        };
        Verdict::Reject {
            reason: reason.to_string(),
        }
    }
}

inventory::submit! { PluginRegistration(&BoringSsl) }

/// Linking this crate is what registers the plugin; the binary calls this so that the linker
/// keeps it.
pub fn register() {}
