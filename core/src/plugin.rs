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

/// Finds the first printable string starting with `prefix` followed by a digit (e.g. a
/// version banner in `.rodata`), up to 64 bytes.
pub fn find_version_string(bytes: &[u8], prefix: &[u8]) -> Option<String> {
    let mut start = 0;
    while let Some(position) = find(&bytes[start..], prefix) {
        let at = start + position;
        let tail = &bytes[at..bytes.len().min(at + 64)];
        if tail.get(prefix.len()).is_some_and(u8::is_ascii_digit) {
            let end = tail.iter().position(|&b| b == 0 || !(0x20..0x7f).contains(&b)).unwrap_or(tail.len());
            return std::str::from_utf8(&tail[..end]).ok().map(str::to_string);
        }
        start = at + 1;
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}
