//! Locating functions in executables that carry a TLS library without its symbols (Bun's and
//! Chromium's BoringSSL, Deno's and uv's aws-lc), by what every build keeps.
//!
//! BoringSSL and its descendants report errors with `OPENSSL_PUT_ERROR(LIB, REASON)`, which
//! passes the library code, the reason code and the source file's `__FILE__` path to one error
//! function. The path string survives stripping, and so do the calls: a function is known by
//! the set of (library, reason) pairs it reports from its source file, which changes only when
//! the function's own checks change, not with the compiler, the build or the release's layout.
//! A spec names that set ([`LocateRule`]); [`locate`] finds every function reporting from the
//! source file ([`code`] decodes them by control flow) and accepts a rule's answer only when
//! exactly one function matches. Otherwise nothing is attached there, and the reason is given.
//!
//! Results are cached per build id ([`cache`]) so that a second run on a 100 MiB executable
//! does not decode it again, and a user can pin a function's address per build id in a spec
//! file ([`Pin`]) for a build the analysis cannot handle.

pub mod cache;
pub mod code;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::spec::{LocateRule, Pin};

use crate::symbols::{ElfFile, FunctionSymbol};
use code::{Code, Function};

/// How the reason of a file without the rule's source path starts: such a file is simply not
/// the library, which messages need not say.
pub const NO_SOURCE: &str = "no string ending in";

/// How the reason of a file without a string rule's string starts (likewise not the library).
pub const NO_STRING: &str = "no string ";

/// Rust TLS code in an executable, from what every build keeps: the crate paths of Rust's
/// panic locations (`.../rustls-0.23.46/src/...`) and aws-lc's source paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RustTls {
    /// The rustls version, if rustls is there.
    pub rustls: Option<String>,
    /// Its crypto provider with version ("aws-lc-rs 1.18.0", "ring 0.17.14").
    pub provider: Option<String>,
    /// Whether the provider is aws-lc-rs, or aws-lc's sources are there at all.
    pub aws_lc: bool,
}

impl fmt::Display for RustTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.rustls, &self.provider) {
            (Some(rustls), Some(provider)) => write!(f, "rustls {rustls} with {provider}"),
            (Some(rustls), None) => write!(f, "rustls {rustls}"),
            (None, _) => f.write_str("aws-lc"),
        }
    }
}

/// The Rust TLS in `bytes` (an executable), if any.
pub fn rust_tls(bytes: &[u8]) -> Option<RustTls> {
    // The version of crate `name` from a path component "/NAME-VERSION/".
    let version = |name: &str| -> Option<String> {
        let needle = format!("/{name}-");
        memchr::memmem::find_iter(bytes, needle.as_bytes()).find_map(|at| {
            let rest = bytes.get(at + needle.len()..)?;
            let end = rest.iter().position(|&byte| byte == b'/')?;
            let text = std::str::from_utf8(rest.get(..end)?).ok()?;
            let valid = !text.is_empty()
                && text.len() <= 16
                && text.starts_with(|c: char| c.is_ascii_digit())
                && text.chars().all(|c| c.is_ascii_digit() || c == '.');
            valid.then(|| text.to_string())
        })
    };
    let aws_lc_rs = version("aws-lc-rs");
    let provider = aws_lc_rs
        .as_ref()
        .map(|v| format!("aws-lc-rs {v}"))
        .or_else(|| version("ring").map(|v| format!("ring {v}")));
    let aws_lc = aws_lc_rs.is_some() || memchr::memmem::find(bytes, b"/aws-lc/crypto/").is_some();
    let rustls = version("rustls");
    (rustls.is_some() || aws_lc).then_some(RustTls {
        provider: if rustls.is_some() { provider } else { None },
        rustls,
        aws_lc,
    })
}

/// How a probed function was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Found {
    /// By its name in the symbol table (or Go's pclntab).
    Symbol,
    /// By cross-reference analysis, just now.
    CrossReference,
    /// By cross-reference analysis on an earlier run (the build-id cache).
    Cached,
    /// By a `[[group.pin]]` of the spec file.
    Pinned,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Found::Symbol => "symbol",
            Found::CrossReference => "cross-reference analysis",
            Found::Cached => "cross-reference analysis, cached",
            Found::Pinned => "pinned",
        })
    }
}

/// A function found without a symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub function: FunctionSymbol,
    pub found: Found,
    /// What proved it, in words.
    pub evidence: String,
}

/// The outcome for one wanted function: found, or why not.
pub type Outcome = Result<Located, String>;

/// Finds `wanted` (symbol name, rule) in `elf`: pins first, then the cache, then analysis.
/// `cache_dir`: where results are kept per build id (`None`: not kept).
pub fn locate(
    elf: &ElfFile,
    wanted: &[(&str, Option<&LocateRule>)],
    pins: &[Pin],
    cache_dir: Option<&Path>,
) -> HashMap<String, Outcome> {
    let mut outcomes: HashMap<String, Outcome> = HashMap::new();
    let build_id = elf.build_id();
    let mut left: Vec<(&str, &LocateRule)> = Vec::new();
    for &(symbol, rule) in wanted {
        let pinned = build_id.as_deref().and_then(|id| {
            pins.iter()
                .find(|pin| pin.symbol == symbol && pin.build_id.eq_ignore_ascii_case(id))
        });
        match pinned {
            Some(pin) => {
                let outcome = elf
                    .function_at(pin.address, pin.size)
                    .map(|function| Located {
                        function,
                        found: Found::Pinned,
                        evidence: format!(
                            "pinned at {:#x} for build {}",
                            pin.address, pin.build_id
                        ),
                    })
                    .ok_or_else(|| {
                        format!(
                            "the pinned address {:#x} is in no loaded segment",
                            pin.address
                        )
                    });
                outcomes.insert(symbol.to_string(), outcome);
            }
            None => {
                let Some(rule) = rule else { continue };
                // A file without the source path (or the string) is not this library: no
                // analysis, no cache.
                let wanted = rule.string.as_deref().unwrap_or(&rule.source);
                let mut path = wanted.as_bytes().to_vec();
                path.push(0);
                if memchr::memmem::find(elf.bytes(), &path).is_some() {
                    left.push((symbol, rule));
                } else if rule.string.is_some() {
                    outcomes.insert(
                        symbol.to_string(),
                        Err(format!("{NO_STRING}{wanted:?} in the file")),
                    );
                } else {
                    outcomes.insert(
                        symbol.to_string(),
                        Err(format!("{NO_SOURCE} {:?} in the file", rule.source)),
                    );
                }
            }
        }
    }
    if left.is_empty() {
        return outcomes;
    }
    let mut cache = match (&build_id, cache_dir) {
        (Some(id), Some(dir)) => Some(cache::Entry::load(dir, id)),
        _ => None,
    };
    let mut to_analyse: Vec<(&str, &LocateRule)> = Vec::new();
    for (symbol, rule) in left {
        match cache.as_ref().and_then(|entry| entry.get(symbol, rule)) {
            Some(cached) => {
                let outcome = cached.and_then(|(address, size, evidence)| {
                    elf.function_at(address, size)
                        .map(|function| Located {
                            function,
                            found: Found::Cached,
                            evidence,
                        })
                        .ok_or_else(|| format!("the cached address {address:#x} is in no segment"))
                });
                outcomes.insert(symbol.to_string(), outcome);
            }
            None => to_analyse.push((symbol, rule)),
        }
    }
    if to_analyse.is_empty() {
        return outcomes;
    }
    // The analysis decodes x86-64 code (code.rs).
    let machine = elf.machine();
    if machine != crate::symbols::Machine::X86_64 {
        for (symbol, _) in to_analyse {
            outcomes.insert(
                symbol.to_string(),
                Err(format!(
                    "{machine} code: functions are located by analysing x86-64 code only"
                )),
            );
        }
        return outcomes;
    }
    let code = Code::new(
        elf.bytes(),
        elf.load_segments(),
        elf.position_independent(),
        elf.unwind_function_starts(),
    );
    let mut indexes: HashMap<(String, u64), SourceIndex> = HashMap::new();
    for (symbol, rule) in to_analyse {
        if rule.string.is_some() {
            let outcome = by_string(&code, rule).and_then(|(function, evidence)| {
                elf.function_at(function.entry, function.end - function.entry)
                    .map(|symbol| Located {
                        function: symbol,
                        found: Found::CrossReference,
                        evidence,
                    })
                    .ok_or_else(|| format!("{:#x} is in no loaded segment", function.entry))
            });
            if let Some(entry) = cache.as_mut() {
                entry.put(
                    symbol,
                    rule,
                    outcome.as_ref().map(|located| {
                        (
                            located.function.address,
                            located.function.size,
                            located.evidence.clone(),
                        )
                    }),
                );
            }
            let mut outcome = outcome;
            if let (Ok(located), Some(why)) = (
                outcome.as_mut(),
                cache.as_ref().and_then(|entry| entry.damage()),
            ) {
                located.evidence.push_str(&format!(
                    " (the cache file was damaged: {why}; analysed anew)"
                ));
            }
            outcomes.insert(symbol.to_string(), outcome);
            continue;
        }
        let index = indexes
            .entry((rule.source.clone(), rule.library))
            .or_insert_with(|| SourceIndex::build(&code, &rule.source, rule.library));
        let damage = cache
            .as_ref()
            .and_then(|entry| entry.damage())
            .map(|why| format!(" (the cache file was damaged: {why}; analysed anew)"))
            .unwrap_or_default();
        let mut outcome = index.resolve(rule).and_then(|(function, evidence)| {
            elf.function_at(function.entry, function.end - function.entry)
                .map(|symbol| Located {
                    function: symbol,
                    found: Found::CrossReference,
                    evidence,
                })
                .ok_or_else(|| format!("{:#x} is in no loaded segment", function.entry))
        });
        if let Some(entry) = cache.as_mut() {
            entry.put(
                symbol,
                rule,
                outcome.as_ref().map(|located| {
                    (
                        located.function.address,
                        located.function.size,
                        located.evidence.clone(),
                    )
                }),
            );
        }
        // Said on this run only: the rewritten file is sound, and a later run reading it
        // must not report damage that is gone.
        if let Ok(located) = outcome.as_mut() {
            located.evidence.push_str(&damage);
        }
        outcomes.insert(symbol.to_string(), outcome);
    }
    if let Some(entry) = cache {
        // A cache that cannot be written costs the next run its time, nothing else.
        let _ = entry.save();
    }
    outcomes
}

/// A rule by string cross-reference ([`LocateRule::string`]): the one instruction loading the
/// string's address, then the branches of [`LocateRule::follow`] in turn. Each step must
/// have exactly one answer, and the function reached must be a proven entry whose control
/// flow decodes.
fn by_string(code: &Code, rule: &LocateRule) -> Result<(Function, String), String> {
    let text = rule.string.as_deref().unwrap_or_default();
    let strings = code.string_addresses(text);
    let sites: Vec<u64> = strings
        .iter()
        .flat_map(|&address| code.references(address))
        .collect();
    let site = match sites.as_slice() {
        [site] => *site,
        [] => {
            return Err(format!(
                "no instruction loads the address of {text:?} ({} copies of the string)",
                strings.len()
            ))
        }
        many => {
            return Err(format!(
                "{} instructions load the address of {text:?} (at {}): ambiguous, nothing attached",
                many.len(),
                many.iter()
                    .map(|site| format!("{site:#x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    };
    let mut evidence = format!("the only reference to {text:?} (at {site:#x})");
    let mut current: Option<Function> = None;
    for step in &rule.follow {
        let target = match (step, &current) {
            (crate::spec::Follow::Call, None) => code.call_after(site).ok_or_else(|| {
                format!("{evidence} is not followed by a direct call on its straight line")
            })?,
            (crate::spec::Follow::Call, Some(function)) => {
                let callees = function.callees();
                match callees.len() {
                    1 => callees.into_iter().next().unwrap_or_default(),
                    count => {
                        return Err(format!(
                            "{evidence}: the function at {:#x} makes direct calls to {count} functions, not one",
                            function.entry
                        ))
                    }
                }
            }
            (crate::spec::Follow::Jmp, None) => {
                return Err("follow: \"jmp\" needs a function reached by \"call\" first".into())
            }
            (crate::spec::Follow::Jmp, Some(function)) => {
                let jumps = code.tail_jumps(function);
                match jumps.len() {
                    1 => jumps.into_iter().next().unwrap_or_default(),
                    count => {
                        return Err(format!(
                            "{evidence}: the function at {:#x} ends in {count} tail jumps to other functions, not one",
                            function.entry
                        ))
                    }
                }
            }
        };
        if !code.is_call_target(target) {
            return Err(format!(
                "{evidence}: {target:#x} is no proven function entry"
            ));
        }
        let function = code.follow(target).ok_or_else(|| {
            format!("{evidence}: the code at {target:#x} does not decode as a function")
        })?;
        evidence.push_str(match step {
            crate::spec::Follow::Call => ", then the function its next call enters",
            crate::spec::Follow::Jmp => ", then the function that one's tail jump enters",
        });
        evidence.push_str(&format!(" ({target:#x})"));
        current = Some(function);
    }
    match current {
        Some(function) => Ok((function, evidence)),
        None => {
            let function = code
                .function_containing(site)
                .ok_or_else(|| format!("{evidence} is in code not proven to be a function"))?;
            evidence.push_str(", in the function holding it");
            Ok((function, evidence))
        }
    }
}

/// Where the field that the accessor at `address` copies out lies, from the struct its
/// argument register `argument` points at (see [`Code::field_path`]).
pub fn field_path(
    elf: &ElfFile,
    address: u64,
    argument: iced_x86::Register,
) -> Option<code::FieldPath> {
    let code = Code::new(
        elf.bytes(),
        elf.load_segments(),
        elf.position_independent(),
        elf.unwind_function_starts(),
    );
    let function = code.follow(address)?;
    code.field_path(&function, argument)
}

/// The functions of `elf` that report errors of `library` from `source`: entry, size and
/// reasons (what a rule for a new build or library is written from).
pub fn survey(elf: &ElfFile, source: &str, library: u64) -> Vec<(u64, u64, Vec<u64>)> {
    let code = Code::new(
        elf.bytes(),
        elf.load_segments(),
        elf.position_independent(),
        elf.unwind_function_starts(),
    );
    SourceIndex::build(&code, source, library)
        .functions
        .values()
        .map(|(function, reasons)| {
            (
                function.entry,
                function.end - function.entry,
                reasons.iter().copied().collect(),
            )
        })
        .collect()
}

/// Every function of one file that reports errors of one library from one source file.
struct SourceIndex {
    source: String,
    library: u64,
    /// The source path strings found.
    strings: usize,
    /// References to them, and how many of those no proven function holds.
    references: usize,
    unplaced: usize,
    /// Function entry -> the function and the reasons it reports.
    functions: BTreeMap<u64, (Function, BTreeSet<u64>)>,
}

impl SourceIndex {
    fn build(code: &Code, source: &str, library: u64) -> SourceIndex {
        let mut index = SourceIndex {
            source: source.to_string(),
            library,
            strings: 0,
            references: 0,
            unplaced: 0,
            functions: BTreeMap::new(),
        };
        let strings = code.strings_ending_with(source);
        index.strings = strings.len();
        for string in strings {
            for site in code.references(string) {
                index.references += 1;
                // Sites of one function are many: decode it once.
                let known = index
                    .functions
                    .values()
                    .map(|(function, _)| function)
                    .find(|function| function.contains(site))
                    .cloned();
                let Some(function) = known.or_else(|| code.function_containing(site)) else {
                    index.unplaced += 1;
                    continue;
                };
                let Some(error) = code.error_site(&function, site, string) else {
                    continue;
                };
                if error.library != library {
                    continue;
                }
                index
                    .functions
                    .entry(function.entry)
                    .or_insert_with(|| (function, BTreeSet::new()))
                    .1
                    .insert(error.reason);
            }
        }
        index
    }

    /// The one function matching `rule`, with the evidence; or why there is none.
    fn resolve(&self, rule: &LocateRule) -> Result<(Function, String), String> {
        let wanted = describe(&rule.errors, rule.exact);
        if self.strings == 0 {
            return Err(format!("{NO_SOURCE} {:?} in the file", self.source));
        }
        let matches: Vec<&(Function, BTreeSet<u64>)> = self
            .functions
            .values()
            .filter(|(_, reasons)| reasons_match(reasons, &rule.errors, rule.exact))
            .filter(|(function, _)| match &rule.calls {
                None => true,
                Some(callee) => function.callees().iter().any(|target| {
                    self.functions.get(target).is_some_and(|(_, reasons)| {
                        reasons_match(reasons, &callee.errors, callee.exact)
                    })
                }),
            })
            .collect();
        let matches = if rule.inlines_another {
            holding_another_inlined(&matches)
        } else {
            matches
        };
        let mut callee_text = rule.calls.as_ref().map_or(String::new(), |callee| {
            format!(
                " and calls one reporting {}",
                describe(&callee.errors, callee.exact)
            )
        });
        if rule.inlines_another {
            callee_text.push_str(
                ", and holds another such function inlined (makes all its calls, and more)",
            );
        }
        let seen = format!(
            "{} references to {:?} in {} functions",
            self.references,
            self.source,
            self.functions.len()
        );
        match matches.as_slice() {
            [(function, reasons)] => Ok((
                function.clone(),
                format!(
                    "the only function that reports library {} reasons {}{} from {:?} \
                     (reports {}; {seen})",
                    self.library,
                    wanted,
                    callee_text,
                    self.source,
                    list(reasons)
                ),
            )),
            [] => Err(format!(
                "no function reports library {} reasons {wanted}{callee_text} from {:?} ({seen}{})",
                self.library,
                self.source,
                if self.unplaced > 0 {
                    format!(", {} in code not proven to be a function", self.unplaced)
                } else {
                    String::new()
                }
            )),
            many => Err(format!(
                "{} functions report library {} reasons {wanted}{callee_text} from {:?} (at {}): \
                 ambiguous, nothing attached",
                many.len(),
                self.library,
                self.source,
                many.iter()
                    .map(|(function, _)| format!("{:#x}", function.entry))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// Of `matches`, those whose direct calls are a strict superset of another match's: a
/// function with another inlined makes every call that one makes, and its own on top.
fn holding_another_inlined<'a>(
    matches: &[&'a (Function, BTreeSet<u64>)],
) -> Vec<&'a (Function, BTreeSet<u64>)> {
    let callees: Vec<BTreeSet<u64>> = matches
        .iter()
        .map(|(function, _)| function.callees())
        .collect();
    matches
        .iter()
        .enumerate()
        .filter(|(index, _)| {
            callees.iter().enumerate().any(|(other, theirs)| {
                other != *index
                    && theirs.is_subset(&callees[*index])
                    && theirs.len() < callees[*index].len()
            })
        })
        .map(|(_, matched)| *matched)
        .collect()
}

fn reasons_match(reasons: &BTreeSet<u64>, wanted: &[u64], exact: bool) -> bool {
    wanted.iter().all(|reason| reasons.contains(reason))
        && (!exact || reasons.len() == wanted.iter().collect::<BTreeSet<_>>().len())
}

fn list(reasons: &BTreeSet<u64>) -> String {
    reasons
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(reasons: &[u64], exact: bool) -> String {
    let set: BTreeSet<u64> = reasons.iter().copied().collect();
    format!("{}{}", list(&set), if exact { " (only)" } else { "" })
}
