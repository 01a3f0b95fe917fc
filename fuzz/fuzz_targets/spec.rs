//! The `probes.toml` spec parser (`SpecFile::parse`: TOML, then validation). Checks: no panic;
//! a syntax error's line and column lie within the text; an accepted file has groups with
//! valid, unique names, and every probe's BPF configuration names only arguments its ABI has
//! (the BPF programs index registers and the stack with them) and at most
//! `FILTER_MAX_POINTERS` pointers; accepted text written back by `toml` and parsed again gives
//! the same specs; glob patterns match themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use probectl_common::{abi, ARG_NONE, FILTER_MAX_POINTERS, MAX_ARGUMENTS, MAX_ARGUMENT_REGISTERS};
use probectl_core::spec::{glob_match, SpecError, SpecFile};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let specs = match SpecFile::parse(text, "fuzz.toml") {
        Ok(specs) => specs,
        Err(SpecError::Syntax { line, column, .. }) => {
            let lines = text.split('\n').count();
            assert!(line >= 1 && line <= lines, "line {line} of {lines}");
            let length = text
                .split('\n')
                .nth(line - 1)
                .map_or(0, |l| l.chars().count());
            assert!(
                column >= 1 && column <= length + 1,
                "column {column} of {length}"
            );
            return;
        }
        Err(_) => return,
    };
    assert!(!specs.groups.is_empty());
    for (index, group) in specs.groups.iter().enumerate() {
        assert!(!group.name.is_empty() && group.name != "all");
        assert!(specs.groups[..index]
            .iter()
            .all(|other| other.name != group.name));
        assert!(specs.group(&group.name).is_some());
        let _ = group.describe_files();
        let _ = group.required_symbols().count();
        let _ = group.matches_library_name("libssl.so.3");
        for pattern in &group.libraries {
            if !pattern.contains(['*', '?']) {
                assert!(glob_match(pattern, pattern), "{pattern:?} matches itself");
                assert!(!glob_match(pattern, &format!("{pattern}x")));
            }
            assert!(glob_match("*", pattern));
        }
        for probe in &group.probes {
            let spec = probe.bpf_spec();
            let limit = if spec.abi == abi::GO {
                MAX_ARGUMENT_REGISTERS
            } else {
                MAX_ARGUMENTS
            } as u8;
            for (what, arg) in [
                ("connection", spec.connection_arg),
                ("buffer", spec.buffer_arg),
                ("length", spec.length_arg),
                ("filter", spec.filter_arg),
                ("vector count", spec.vector_count_arg),
                ("record ad", spec.record_ad_arg),
                ("record ad length", spec.record_ad_length_arg),
            ] {
                assert!(
                    arg == ARG_NONE || arg < limit,
                    "{} {}: {what} argument {arg}",
                    group.name,
                    probe.symbol
                );
            }
            assert!(usize::from(spec.filter_pointers) <= FILTER_MAX_POINTERS);
        }
    }
    // Written back by toml and read again: the same specs.
    let table: toml::Table = toml::from_str(text).expect("accepted text is TOML");
    if let Ok(again) = toml::to_string(&table) {
        let reparsed =
            SpecFile::parse(&again, "again.toml").expect("the same TOML is accepted again");
        assert_eq!(format!("{specs:?}"), format!("{reparsed:?}"));
    }
});
