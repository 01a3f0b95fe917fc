//! Go: everything probing needs is in probes.toml (`abi = "go"`); this plugin names the Go
//! version (from `.go.buildinfo`) and refuses executables built by a Go without the register
//! ABI on their architecture (before 1.17 on amd64 and 1.18 on arm64, arguments were passed on
//! the stack, which the go group's spec does not describe).

use probectl_core::plugin::{Plugin, PluginRegistration, Verdict};
use probectl_core::symbols::gosym::version_number;
use probectl_core::symbols::{ElfFile, Machine};

/// The first Go release whose amd64 functions take their arguments in registers (and keep the
/// current goroutine in R14).
const FIRST_REGISTER_ABI: (u32, u32) = (1, 17);
/// The same for arm64 (the goroutine is in R28 there).
const FIRST_REGISTER_ABI_ARM64: (u32, u32) = (1, 18);

pub struct Go;

impl Plugin for Go {
    fn group(&self) -> &'static str {
        "go"
    }

    fn inspect(&self, file: &ElfFile) -> Verdict {
        let Some(version) = file.go_version() else {
            // Built without build info (a very old Go, or an unusual linker): the symbols
            // matched, so try; the version is not known.
            return Verdict::Accept { version: None };
        };
        let display = version.strip_prefix("go").unwrap_or(&version);
        let first = if file.machine() == Machine::Aarch64 {
            FIRST_REGISTER_ABI_ARM64
        } else {
            FIRST_REGISTER_ABI
        };
        match version_number(&version) {
            Some(number) if number < first => Verdict::Reject {
                reason: format!(
                    "built with Go {display}, which passes arguments on the stack: the go group needs Go {}.{} or later (register ABI) on {}",
                    first.0,
                    first.1,
                    file.machine()
                ),
            },
            _ => Verdict::Accept {
                version: Some(format!("Go {display}")),
            },
        }
    }
}

inventory::submit! { PluginRegistration(&Go) }

/// Linking this crate is what registers the plugin; the binary calls this so that the linker
/// keeps it.
pub fn register() {}
