//! [`super::locate`] and [`super::code`] on a synthetic stripped executable that gcc builds
//! from testdata/error_reports.c: functions reporting errors the way BoringSSL's
//! `OPENSSL_PUT_ERROR` does, with known reason sets. The oracle is the unstripped build's
//! symbol table (`nm`), read before stripping; the analysis only ever sees the stripped copy.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::code::Code;
use super::{locate, survey, Found, Outcome};
use crate::spec::{CalleeRule, LocateRule};
use crate::symbols::ElfFile;

const SOURCE: &str = "ssl/ssl_lib.cc";

/// The two ways gcc lays out an executable here: absolute addresses (`mov $string, %ecx`)
/// and `%rip`-relative ones (`lea string(%rip), %rcx`).
#[derive(Debug, Clone, Copy)]
enum Layout {
    Fixed,
    PositionIndependent,
}

/// A stripped build and the (address, size) of each function of the unstripped one.
struct Build {
    stripped: PathBuf,
    functions: BTreeMap<String, (u64, u64)>,
}

fn build(layout: Layout) -> &'static Build {
    static FIXED: OnceLock<Build> = OnceLock::new();
    static PIE: OnceLock<Build> = OnceLock::new();
    let (cell, flags, name) = match layout {
        Layout::Fixed => (&FIXED, ["-fno-pie", "-no-pie"], "fixed"),
        Layout::PositionIndependent => (&PIE, ["-fpie", "-pie"], "pie"),
    };
    cell.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("probectl-locate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("build dir");
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/symbols/locate/testdata/error_reports.c");
        let unstripped = dir.join(format!("{name}-unstripped"));
        let stripped = dir.join(name);
        let status = Command::new("gcc")
            .arg("-O2")
            .args(flags)
            .arg("-Wl,--build-id")
            .arg("-o")
            .arg(&unstripped)
            .arg(&source)
            .status()
            .expect("gcc");
        assert!(status.success(), "gcc {name}");
        let status = Command::new("strip")
            .arg("-o")
            .arg(&stripped)
            .arg(&unstripped)
            .status()
            .expect("strip");
        assert!(status.success(), "strip {name}");
        let nm = Command::new("nm")
            .args(["-S", "--defined-only"])
            .arg(&unstripped)
            .output()
            .expect("nm");
        assert!(nm.status.success());
        let functions = String::from_utf8_lossy(&nm.stdout)
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let address = u64::from_str_radix(words.next()?, 16).ok()?;
                let size = u64::from_str_radix(words.next()?, 16).ok()?;
                let kind = words.next()?;
                let name = words.next()?;
                matches!(kind, "T" | "t").then(|| (name.to_string(), (address, size)))
            })
            .collect();
        // The analysis must not be helped by what it is checked against.
        let check = Command::new("nm").arg(&stripped).output().expect("nm");
        assert!(
            String::from_utf8_lossy(&check.stderr).contains("no symbols"),
            "{name} is stripped"
        );
        Build {
            stripped,
            functions,
        }
    })
}

impl Build {
    fn address(&self, function: &str) -> u64 {
        self.functions
            .get(function)
            .unwrap_or_else(|| panic!("{function} in nm's output"))
            .0
    }

    fn elf(&self) -> ElfFile {
        ElfFile::open(&self.stripped).expect("open the stripped build")
    }

    fn locate_one(&self, rule: &LocateRule) -> Outcome {
        let elf = self.elf();
        let mut outcomes = locate(&elf, &[("wanted", Some(rule))], &[], None);
        outcomes.remove("wanted").expect("an outcome")
    }
}

fn rule(library: u64, errors: &[u64], exact: bool) -> LocateRule {
    LocateRule {
        source: SOURCE.to_string(),
        library,
        errors: errors.to_vec(),
        exact,
        calls: None,
        inlines_another: false,
        string: None,
        follow: Vec::new(),
    }
}

const LAYOUTS: [Layout; 2] = [Layout::Fixed, Layout::PositionIndependent];

#[test]
fn a_unique_rule_finds_the_function() {
    for layout in LAYOUTS {
        let build = build(layout);
        let located = build
            .locate_one(&rule(16, &[66, 111, 226], false))
            .unwrap_or_else(|why| panic!("{layout:?}: {why}"));
        assert_eq!(
            located.function.address,
            build.address("write_like"),
            "{layout:?}"
        );
        assert_eq!(located.found, Found::CrossReference);
        assert!(
            located
                .evidence
                .contains("the only function that reports library 16"),
            "{}",
            located.evidence
        );
        // A subset of the reasons is enough when it is still one function's only.
        let located = build
            .locate_one(&rule(16, &[215], false))
            .unwrap_or_else(|why| panic!("{layout:?}: {why}"));
        assert_eq!(located.function.address, build.address("read_impl"));
    }
}

#[test]
fn the_library_code_tells_functions_with_the_same_reasons_apart() {
    for layout in LAYOUTS {
        let build = build(layout);
        let located = build
            .locate_one(&rule(30, &[66, 111, 226], true))
            .unwrap_or_else(|why| panic!("{layout:?}: {why}"));
        assert_eq!(located.function.address, build.address("other_library"));
    }
}

#[test]
fn an_ambiguous_rule_locates_nothing() {
    for layout in LAYOUTS {
        let build = build(layout);
        let why = build
            .locate_one(&rule(16, &[300, 301], true))
            .expect_err("twin_a and twin_b report the same");
        assert!(why.contains("ambiguous"), "{layout:?}: {why}");
        assert!(why.starts_with("2 functions report"), "{why}");
        for twin in ["twin_a", "twin_b"] {
            assert!(
                why.contains(&format!("{:#x}", build.address(twin))),
                "{why} names {twin}"
            );
        }
        // 66 alone: peek_like and other_66.
        let why = build
            .locate_one(&rule(16, &[66], true))
            .expect_err("two functions report only 66");
        assert!(why.contains("ambiguous"), "{layout:?}: {why}");
    }
}

#[test]
fn a_calls_rule_picks_the_callers() {
    for layout in LAYOUTS {
        let build = build(layout);
        let mut peek = rule(16, &[66], true);
        peek.calls = Some(CalleeRule {
            errors: vec![215, 226],
            exact: true,
        });
        // other_66 calls nothing that reports; peek_like and read_like both call read_impl.
        let why = build
            .locate_one(&peek)
            .expect_err("two callers of read_impl");
        assert!(why.contains("calls one reporting 215, 226 (only)"), "{why}");
        assert!(why.starts_with("2 functions report"), "{layout:?}: {why}");
        for caller in ["peek_like", "read_like"] {
            assert!(
                why.contains(&format!("{:#x}", build.address(caller))),
                "{why} names {caller}"
            );
        }
    }
}

#[test]
fn an_inlining_rule_picks_the_function_holding_another_match() {
    for layout in LAYOUTS {
        let build = build(layout);
        let mut read = rule(16, &[66], true);
        read.calls = Some(CalleeRule {
            errors: vec![215, 226],
            exact: true,
        });
        read.inlines_another = true;
        let located = build
            .locate_one(&read)
            .unwrap_or_else(|why| panic!("{layout:?}: {why}"));
        // read_like calls all that peek_like calls, and consume.
        assert_eq!(located.function.address, build.address("read_like"));
        assert!(
            located
                .evidence
                .contains("holds another such function inlined"),
            "{}",
            located.evidence
        );
        // A single match holds nothing inlined: found is nothing, not the one match.
        let mut alone = rule(16, &[215, 226], true);
        alone.inlines_another = true;
        let why = build.locate_one(&alone).expect_err("read_impl has no twin");
        assert!(why.starts_with("no function reports"), "{layout:?}: {why}");
        // Without calls, three match (other_66 < peek_like < read_like): two hold another.
        let mut loose = rule(16, &[66], true);
        loose.inlines_another = true;
        let why = build.locate_one(&loose).expect_err("two hold other_66");
        assert!(why.contains("ambiguous"), "{layout:?}: {why}");
    }
}

#[test]
fn no_function_matching_is_said_with_what_was_seen() {
    let build = build(Layout::Fixed);
    let why = build
        .locate_one(&rule(16, &[66, 999], false))
        .expect_err("no function reports 999");
    assert!(
        why.starts_with("no function reports library 16 reasons 66, 999 from \"ssl/ssl_lib.cc\""),
        "{why}"
    );
    // 3 + 2 + 1 + 1 + 1 + 2 + 2 + 3 + 2 loads of the string; other_library's 3 and
    // indirect_like's 2 report library 30, so their functions are not library 16's.
    assert!(
        why.contains("17 references to \"ssl/ssl_lib.cc\" in 7 functions"),
        "{why}"
    );
}

#[test]
fn an_absent_source_is_said_and_nothing_analysed() {
    for layout in LAYOUTS {
        let build = build(layout);
        let mut absent = rule(16, &[66], false);
        absent.source = "ssl/s3_pkt.cc".to_string();
        let why = build.locate_one(&absent).expect_err("no such string");
        assert_eq!(why, "no string ending in \"ssl/s3_pkt.cc\" in the file");
    }
}

#[test]
fn results_are_cached_per_build_id_and_read_back() {
    let build = build(Layout::PositionIndependent);
    let dir = std::env::temp_dir().join(format!("probectl-locate-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let elf = build.elf();
    let wanted = rule(16, &[66, 111, 226], false);
    let first = locate(&elf, &[("SSL_write", Some(&wanted))], &[], Some(&dir));
    let first = first["SSL_write"].as_ref().expect("located");
    assert_eq!(first.found, Found::CrossReference);
    let build_id = elf.build_id().expect("gcc's build id");
    assert!(dir.join(format!("{build_id}.json")).is_file());
    let second = locate(&elf, &[("SSL_write", Some(&wanted))], &[], Some(&dir));
    let second = second["SSL_write"].as_ref().expect("located");
    assert_eq!(second.found, Found::Cached);
    assert_eq!(second.function, first.function);
    assert_eq!(second.evidence, first.evidence);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What `survey` reports per function, by name through the unstripped build's symbols.
fn surveyed(build: &Build, source: &str, library: u64) -> BTreeMap<String, BTreeSet<u64>> {
    let by_address: BTreeMap<u64, &String> = build
        .functions
        .iter()
        .map(|(name, (address, _))| (*address, name))
        .collect();
    survey(&build.elf(), source, library)
        .into_iter()
        .map(|(entry, size, reasons)| {
            let name = by_address
                .get(&entry)
                .unwrap_or_else(|| panic!("{entry:#x} is a function's entry"));
            let (_, symbol_size) = build.functions[*name];
            assert!(
                size > 0 && size <= symbol_size,
                "{name}: {size} bytes decoded, the symbol has {symbol_size}"
            );
            ((*name).clone(), reasons.into_iter().collect())
        })
        .collect()
}

#[test]
fn survey_finds_every_reporting_function_with_its_reasons() {
    for layout in LAYOUTS {
        let build = build(layout);
        let expected: BTreeMap<String, BTreeSet<u64>> = [
            ("write_like", &[66, 111, 226][..]),
            ("read_impl", &[215, 226]),
            ("peek_like", &[66]),
            ("other_66", &[66]),
            ("read_like", &[66]),
            ("twin_a", &[300, 301]),
            ("twin_b", &[300, 301]),
        ]
        .into_iter()
        .map(|(name, reasons)| (name.to_string(), reasons.iter().copied().collect()))
        .collect();
        assert_eq!(surveyed(build, SOURCE, 16), expected, "{layout:?}");
        let other: BTreeMap<String, BTreeSet<u64>> = [
            ("other_library".to_string(), [66, 111, 226].into()),
            ("indirect_like".to_string(), [500, 501].into()),
        ]
        .into();
        assert_eq!(surveyed(build, SOURCE, 30), other, "{layout:?}");
        // Constants loaded through the stack (`push imm8; pop reg`).
        let pushed: BTreeMap<String, BTreeSet<u64>> =
            [("pushed_like".to_string(), [117].into())].into();
        assert_eq!(
            surveyed(build, "crypto/fipsmodule/cipher/aead.c", 30),
            pushed,
            "{layout:?}"
        );
    }
}

#[test]
fn a_function_called_only_indirectly_is_found_by_the_unwind_table() {
    for layout in LAYOUTS {
        let build = build(layout);
        let elf = build.elf();
        let indirect = build.address("indirect_like");
        let starts = elf.unwind_function_starts();
        assert!(
            starts.contains(&indirect),
            "{layout:?}: gcc's .eh_frame_hdr lists it"
        );
        let site = |code: &Code| {
            let string = code.strings_ending_with(SOURCE)[0];
            code.references(string)
                .into_iter()
                .find(|&site| {
                    site > indirect && site < indirect + build.functions["indirect_like"].1
                })
                .expect("a reference in indirect_like")
        };
        // Without the unwind table no direct call proves its entry: the nearest call target
        // below is another function, whose flow does not reach the reference.
        let bare = Code::new(
            elf.bytes(),
            elf.load_segments(),
            elf.position_independent(),
            Vec::new(),
        );
        assert!(!bare.is_call_target(indirect), "{layout:?}");
        assert_ne!(
            bare.function_containing(site(&bare))
                .map(|function| function.entry),
            Some(indirect),
            "{layout:?}"
        );
        let code = Code::new(
            elf.bytes(),
            elf.load_segments(),
            elf.position_independent(),
            starts,
        );
        let function = code
            .function_containing(site(&code))
            .expect("proven by the unwind table");
        assert_eq!(function.entry, indirect, "{layout:?}");
    }
}

#[test]
fn code_finds_references_functions_and_error_sites() {
    for layout in LAYOUTS {
        let build = build(layout);
        let elf = build.elf();
        let code = Code::new(
            elf.bytes(),
            elf.load_segments(),
            elf.position_independent(),
            elf.unwind_function_starts(),
        );
        let strings = code.strings_ending_with(SOURCE);
        assert_eq!(strings.len(), 1, "{layout:?}: one merged string");
        let references = code.references(strings[0]);
        assert_eq!(references.len(), 17, "{layout:?}: one load per report");
        let write_like = build.address("write_like");
        let (_, write_size) = build.functions["write_like"];
        let mine: Vec<u64> = references
            .iter()
            .copied()
            .filter(|&site| site >= write_like && site < write_like + write_size)
            .collect();
        assert_eq!(mine.len(), 3, "{layout:?}");
        let mut reasons = BTreeSet::new();
        for site in mine {
            let function = code.function_containing(site).expect("a proven function");
            assert_eq!(function.entry, write_like);
            assert!(function.contains(site));
            let error = code
                .error_site(&function, site, strings[0])
                .expect("an error report");
            assert_eq!(error.library, 16);
            reasons.insert(error.reason);
        }
        assert_eq!(reasons, [66, 111, 226].into());
        // A site that loads no string reports nothing (the entry branches before any call).
        let function = code.follow(write_like).expect("follow");
        assert_eq!(function.entry, write_like);
        assert_eq!(code.error_site(&function, write_like, strings[0]), None);
        // peek_like's only direct callees: read_impl and the error function.
        let peek = code.follow(build.address("peek_like")).expect("follow");
        assert_eq!(
            peek.callees(),
            [build.address("read_impl"), build.address("ERR_put_error")].into()
        );
        assert!(code.is_call_target(build.address("read_impl")));
    }
}

#[test]
fn a_damaged_cache_is_said_once_and_the_rewritten_file_is_read_back() {
    let build = build(Layout::Fixed);
    let dir = std::env::temp_dir().join(format!("probectl-locate-damage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let elf = build.elf();
    let wanted = rule(16, &[66, 111, 226], false);
    let run = || {
        let mut outcomes = locate(&elf, &[("SSL_write", Some(&wanted))], &[], Some(&dir));
        outcomes
            .remove("SSL_write")
            .expect("an outcome")
            .expect("located")
    };
    let first = run();
    let file = dir.join(format!("{}.json", elf.build_id().expect("build id")));
    std::fs::write(&file, "{ not json").expect("damage");
    let recomputed = run();
    assert_eq!(recomputed.found, Found::CrossReference);
    assert_eq!(recomputed.function, first.function);
    assert!(
        recomputed.evidence.starts_with(&first.evidence)
            && recomputed
                .evidence
                .contains("(the cache file was damaged: not a cache file:"),
        "{}",
        recomputed.evidence
    );
    // The damage was this run's news: the rewritten file holds the evidence alone.
    let after = run();
    assert_eq!(after.found, Found::Cached);
    assert_eq!(after.evidence, first.evidence);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rustls_and_its_provider_are_named_from_their_crate_paths() {
    let rustls = b"\0/home/u/.cargo/registry/src/index/rustls-0.23.46/src/conn.rs\0\
        /home/u/.cargo/registry/src/index/tokio-rustls-0.26.6/src/lib.rs\0\
        /home/u/.cargo/registry/src/index/aws-lc-rs-1.18.0/src/aead.rs\0";
    assert_eq!(
        super::rust_tls(rustls)
            .map(|tls| tls.to_string())
            .as_deref(),
        Some("rustls 0.23.46 with aws-lc-rs 1.18.0")
    );
    let ring = b"\0/src/rustls-0.23.40/src/x.rs\0/src/ring-0.17.14/src/aead.rs\0";
    assert_eq!(
        super::rust_tls(ring).map(|tls| tls.to_string()).as_deref(),
        Some("rustls 0.23.40 with ring 0.17.14")
    );
    // tokio-rustls alone is not rustls' own path; nothing else is named.
    assert_eq!(
        super::rust_tls(b"\0/src/tokio-rustls-0.26.6/src/lib.rs\0"),
        None
    );
    assert_eq!(
        super::rust_tls(b"\0/aws-lc/crypto/fipsmodule/cipher/aead.c\0")
            .map(|tls| tls.to_string())
            .as_deref(),
        Some("aws-lc")
    );
    assert_eq!(
        super::rust_tls(b"\0../../vendor/boringssl/ssl/ssl_lib.cc\0"),
        None
    );
}

#[test]
fn a_string_rule_follows_the_call_to_the_function_the_symbol_table_names() {
    // node keeps OpenSSL's .symtab: the oracle for where the rule lands (the analysis does not
    // read symbols). "CLIENT_RANDOM" is passed to ssl_log_secret by the next call.
    let node = Path::new("/usr/bin/node");
    let elf = ElfFile::open(node).expect("node");
    let oracle = elf.functions(&["ssl_log_secret"]).expect("symbols")["ssl_log_secret"];
    let rule = LocateRule {
        source: String::new(),
        library: 0,
        errors: Vec::new(),
        exact: false,
        calls: None,
        inlines_another: false,
        string: Some("CLIENT_RANDOM".into()),
        follow: vec![crate::spec::Follow::Call],
    };
    let mut outcomes = locate(&elf, &[("wanted", Some(&rule))], &[], None);
    let located = outcomes
        .remove("wanted")
        .expect("outcome")
        .expect("located");
    assert_eq!(located.function.address, oracle.address);
    assert_eq!(located.found, Found::CrossReference);
    assert!(located
        .evidence
        .contains("the only reference to \"CLIENT_RANDOM\""));
    // node inlines nss_keylog_int into it: there is no tail jump to follow, and that is said.
    let deeper = LocateRule {
        follow: vec![crate::spec::Follow::Call, crate::spec::Follow::Jmp],
        ..rule.clone()
    };
    let mut outcomes = locate(&elf, &[("wanted", Some(&deeper))], &[], None);
    let why = outcomes
        .remove("wanted")
        .expect("outcome")
        .expect_err("no tail jump");
    assert!(why.contains("tail jumps"), "{why}");
    // A string the file lacks is said, and nothing analysed.
    let absent = LocateRule {
        string: Some("NO_SUCH_LABEL_ANYWHERE".into()),
        ..rule
    };
    let mut outcomes = locate(&elf, &[("wanted", Some(&absent))], &[], None);
    let why = outcomes
        .remove("wanted")
        .expect("outcome")
        .expect_err("absent");
    assert!(why.starts_with("no string"), "{why}");
}

#[test]
fn an_accessor_tells_where_the_field_it_copies_lies() {
    // SSL_get_client_random(ssl, out, outlen) copies the client random: OpenSSL 3.0's
    // ssl->s3.client_random (inline, the copy inlined too: one displacement from %rdi), and
    // BoringSSL's ssl->s3->client_random (through the s3 pointer, by a call to memcpy).
    let path = |pointers: &[i64], offset: i64| super::code::FieldPath {
        pointers: pointers.to_vec(),
        offset,
    };
    for (file, wanted) in [
        ("/usr/lib/x86_64-linux-gnu/libssl.so.3", path(&[], 0x160)),
        ("/usr/bin/node", path(&[], 0x160)),
        (
            "/usr/lib/x86_64-linux-gnu/android/libssl.so.0",
            path(&[0x30], 0x30),
        ),
    ] {
        let elf = ElfFile::open(Path::new(file)).expect(file);
        let accessor =
            elf.functions(&["SSL_get_client_random"]).expect("symbols")["SSL_get_client_random"];
        let found = super::field_path(&elf, accessor.address, iced_x86::Register::RDI);
        assert_eq!(found, Some(wanted), "{file}");
    }
    // GnuTLS's gnutls_session_get_random(session, client, server) stores the address of the
    // session's client random into *client: one displacement from %rdi, before %rdi moves on
    // to the server random.
    let file = "/usr/lib/x86_64-linux-gnu/libgnutls.so.30";
    let elf = ElfFile::open(Path::new(file)).expect(file);
    let accessor = elf
        .functions(&["gnutls_session_get_random"])
        .expect("symbols")["gnutls_session_get_random"];
    let found = super::field_path(&elf, accessor.address, iced_x86::Register::RDI);
    assert_eq!(found, Some(path(&[], 0x50)));
}
