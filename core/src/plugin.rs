//! Plugins: what a library needs beyond its spec (telling it apart from look-alikes, reporting
//! its version). Each plugin crate registers itself with `inventory::submit!`; the core finds
//! it by its group's name. A group without a plugin works from its spec alone.

use crate::symbols::ElfFile;

/// What a plugin says of a file its group's spec matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The file is this plugin's library; `version` is shown to the user when known.
    Accept { version: Option<String> },
    /// The file only looks like it (e.g. BoringSSL exports OpenSSL's names): why, and what to
    /// use instead.
    Reject { reason: String },
}

pub trait Plugin: Sync {
    /// The `probes.toml` group this plugin serves.
    fn group(&self) -> &'static str;
    /// Inspects a file the group's spec matched.
    fn inspect(&self, file: &ElfFile) -> Verdict;
}

/// A plugin's entry in the registry.
pub struct PluginRegistration(pub &'static dyn Plugin);

inventory::collect!(PluginRegistration);

/// The registered plugin for `group`, if any.
pub fn plugin_for(group: &str) -> Option<&'static dyn Plugin> {
    inventory::iter::<PluginRegistration>
        .into_iter()
        .map(|registration| registration.0)
        .find(|plugin| plugin.group() == group)
}

/// Printable strings that start with `prefix` followed by a digit (version banners in
/// `.rodata`), at most 64 bytes each, in file order.
pub fn version_strings<'a>(bytes: &'a [u8], prefix: &'a [u8]) -> impl Iterator<Item = String> + 'a {
    let mut start = 0;
    std::iter::from_fn(move || {
        while let Some(position) = find(&bytes[start..], prefix) {
            let at = start + position;
            start = at + 1;
            let tail = &bytes[at..bytes.len().min(at + 64)];
            if !tail.get(prefix.len()).is_some_and(u8::is_ascii_digit) {
                continue;
            }
            let end = tail
                .iter()
                .position(|&b| b == 0 || !(0x20..0x7f).contains(&b))
                .unwrap_or(tail.len());
            if let Ok(text) = std::str::from_utf8(&tail[..end]) {
                return Some(text.to_string());
            }
        }
        None
    })
}

/// Position of `needle` in `haystack` (memchr's SIMD substring search: plugins scan whole
/// executables, 100 MiB for node).
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}
