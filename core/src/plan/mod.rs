//! Attach planning: from specs and a scope (one process, a command to start, the whole host) to
//! the list of (file, symbol, offset) attach points, and the list of what was skipped and why.

pub mod inspect;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::plugin::{plugin_for, Verdict};
use crate::spec::{Group, Probe};
use crate::symbols::locate::Found;
use crate::symbols::placement::Placement;
use crate::symbols::{ElfFile, Machine, Resolution, SymbolCache};
use crate::targets::FileId;
use crate::targets::{self, DiscoveryError, TargetFile};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error(
        "process {pid} ({comm}) maps no library probectl can trace with {groups}: {looked_for}"
    )]
    NothingToTrace {
        pid: u32,
        comm: String,
        groups: String,
        looked_for: String,
    },
    #[error("no file on this host matches {groups}: {looked_for}")]
    NothingOnHost { groups: String, looked_for: String },
}

/// What to trace.
#[derive(Debug, Clone)]
pub enum Scope {
    /// One running process (one that just started a program, looked at for new files).
    Process(u32),
    /// A running process and its descendants that exist now (`--pid`): `members` holds the
    /// root first (see [`targets::process_tree`]). The kernel follows later forks.
    Tree { root: u32, members: Vec<u32> },
    /// A command probectl starts: its executable and the host's libraries it may load.
    Command { executable: PathBuf },
    /// Every process on the host, now and later.
    Host,
}

/// How a file came to be probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Library,
    Path,
    Executable,
}

/// A file that will be probed for a group.
#[derive(Debug, Clone)]
pub struct PlannedFile {
    pub group: String,
    pub file: TargetFile,
    pub via: Via,
    pub version: Option<String>,
}

/// One attach point: a probe of a group at an offset in a file. Its index in
/// `Plan::probes` is its attach id (the BPF cookie).
#[derive(Debug, Clone)]
pub struct PlannedProbe {
    pub file_index: usize,
    pub probe: Probe,
    pub offset: u64,
    /// Where the uprobes go: the classic pair at `offset`, or emulated entry/exit points.
    pub placement: Placement,
    /// A secret probe whose client random is a field of a struct: the field's offset (or,
    /// where the file has no accessor to read it from and the spec allows it, the
    /// connection's ClientHello), and how it was found (see [`crate::spec::RandomRef::Field`]).
    pub random_field: Option<(crate::spec::ClientRandomSource, String)>,
}

/// Something that was looked at and not probed, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub group: String,
    pub path: PathBuf,
    pub symbol: Option<String>,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub files: Vec<PlannedFile>,
    pub probes: Vec<PlannedProbe>,
    pub skipped: Vec<Skipped>,
    /// For a process tree: which members map a planned file.
    pub tree: Option<TreeCoverage>,
}

impl Plan {
    pub fn file_of(&self, probe: &PlannedProbe) -> &PlannedFile {
        &self.files[probe.file_index]
    }
}

/// Which members of a process tree map a file the plan probes.
#[derive(Debug, Clone, Default)]
pub struct TreeCoverage {
    pub root: u32,
    /// Every member, the root first.
    pub members: Vec<u32>,
    /// The members that map a planned file, in `members` order.
    pub mapping: Vec<u32>,
    /// The planned groups' names, for messages.
    pub groups: String,
}

impl TreeCoverage {
    /// The message for a root that maps no planned file itself while descendants do (the
    /// master of a server whose workers make the TLS calls, a shell that started the program):
    /// which pids make the plan. `None` when the root maps one.
    pub fn note(&self) -> Option<String> {
        if self.mapping.contains(&self.root) || self.mapping.is_empty() {
            return None;
        }
        let named: Vec<String> = self
            .mapping
            .iter()
            .map(|pid| format!("{pid} ({})", targets::comm(*pid)))
            .collect();
        Some(format!(
            "pid {} ({}) maps no {} library itself; tracing its descendants that do: {}",
            self.root,
            targets::comm(self.root),
            self.groups,
            named.join(", ")
        ))
    }

    /// How many descendants the tree has.
    pub fn descendants(&self) -> usize {
        self.members.len().saturating_sub(1)
    }
}

/// A file considered for a group, before its symbols are checked.
struct Candidate {
    file: TargetFile,
    via: Via,
}

/// Plans the attach points of `groups` for `scope`.
pub fn plan(groups: &[&Group], scope: &Scope, cache: &mut SymbolCache) -> Result<Plan, PlanError> {
    let mut plan = Plan::default();
    // Which members of a tree offered which files.
    let mut offered_by: BTreeMap<FileId, BTreeSet<u32>> = BTreeMap::new();
    for group in groups {
        let candidates = candidates(group, scope, cache, &mut offered_by)?;
        for candidate in candidates {
            add_file(&mut plan, group, candidate, cache);
        }
    }
    forget_skips_of_claimed_files(&mut plan);
    let names: Vec<&str> = groups.iter().map(|group| group.name.as_str()).collect();
    let groups_text = names.join(", ");
    if let Scope::Tree { root, members } = scope {
        let mapping: BTreeSet<u32> = plan
            .files
            .iter()
            .filter_map(|planned| offered_by.get(&planned.file.id))
            .flatten()
            .copied()
            .collect();
        plan.tree = Some(TreeCoverage {
            root: *root,
            members: members.clone(),
            mapping: members
                .iter()
                .copied()
                .filter(|pid| mapping.contains(pid))
                .collect(),
            groups: groups_text.clone(),
        });
    }
    if plan.probes.is_empty() {
        let mut looked_for = groups
            .iter()
            .map(|group| describe_search(group))
            .collect::<Vec<_>>()
            .join("; ");
        if let Some(reasons) = skip_summary(&plan.skipped) {
            looked_for.push_str(&format!("; found but not probed: {reasons}"));
        }
        return Err(match scope {
            Scope::Process(pid) | Scope::Tree { root: pid, .. }
                if !targets::process_exists(*pid) =>
            {
                DiscoveryError::NoSuchProcess { pid: *pid }.into()
            }
            Scope::Process(pid) | Scope::Tree { root: pid, .. } => {
                let mut file_list = format!("/proc/{pid}/maps and /proc/{pid}/exe");
                if let Scope::Tree { members, .. } = scope {
                    let descendants: Vec<String> =
                        members.iter().skip(1).map(u32::to_string).collect();
                    if !descendants.is_empty() {
                        file_list.push_str(&format!(
                            " (and those of its descendants {})",
                            descendants.join(", ")
                        ));
                    }
                }
                PlanError::NothingToTrace {
                    pid: *pid,
                    comm: targets::comm(*pid),
                    groups: groups_text,
                    looked_for: format!("looked in {file_list} for {looked_for}"),
                }
            }
            _ => PlanError::NothingOnHost {
                groups: groups_text,
                looked_for: format!("looked for {looked_for}"),
            },
        });
    }
    Ok(plan)
}

/// What is looked for to trace `group`, e.g. "[openssl] libraries named libssl.so*".
pub fn describe_search(group: &Group) -> String {
    let (mut parts, executables) = group.describe_files();
    if let Some(required) = executables {
        parts.push(format!("an executable defining {required}"));
    }
    // Stripped executables count too when functions can be located (see `crate::symbols::locate`).
    let mut located: Vec<(&str, Vec<String>)> = Vec::new();
    // The functions a file needs (optional ones and lifecycle ends are extras), each with the
    // stand-ins that can take its place.
    for probe in &group.probes {
        if probe.optional || probe.instead_of.is_some() {
            continue;
        }
        let stand_ins: Vec<&crate::spec::Probe> = group
            .probes
            .iter()
            .filter(|other| other.instead_of.as_deref() == Some(probe.symbol.as_str()))
            .filter(|other| other.locate.is_some())
            .collect();
        let Some(rule) = probe
            .locate
            .as_ref()
            .or_else(|| stand_ins.first().and_then(|other| other.locate.as_ref()))
        else {
            continue;
        };
        let mut name = match &probe.locate {
            Some(_) => probe.symbol.clone(),
            None => String::new(),
        };
        for other in stand_ins {
            name = if name.is_empty() {
                other.symbol.clone()
            } else {
                format!("{name} (or {} in its place)", other.symbol)
            };
        }
        match located
            .iter_mut()
            .find(|(source, _)| *source == rule.source)
        {
            Some((_, symbols)) => symbols.push(name),
            None => located.push((&rule.source, vec![name])),
        }
    }
    for (source, symbols) in located {
        parts.push(format!(
            "a stripped executable where {} can be located by their error reports from {source:?}",
            symbols.join(" and ")
        ));
    }
    format!("[{}] {}", group.name, parts.join(", or "))
}

fn skip_summary(skipped: &[Skipped]) -> Option<String> {
    let whole_files: Vec<String> = skipped
        .iter()
        .filter(|skip| skip.symbol.is_none())
        .map(|skip| format!("{} ({})", skip.path.display(), skip.reason))
        .collect();
    (!whole_files.is_empty()).then(|| whole_files.join("; "))
}

/// The files `group` may probe in `scope`, each once; `offered_by` collects which process
/// offered which file (every process that maps it, not only the first).
fn candidates(
    group: &Group,
    scope: &Scope,
    cache: &mut SymbolCache,
    offered_by: &mut BTreeMap<FileId, BTreeSet<u32>>,
) -> Result<Vec<Candidate>, PlanError> {
    let mut found: Vec<Candidate> = Vec::new();
    let mut seen: BTreeSet<FileId> = BTreeSet::new();
    let mut push = |found: &mut Vec<Candidate>, mut file: TargetFile, via: Via| {
        // A file reached only through its process's link is held open now: the process may
        // be gone by the time probes are attached. One that cannot be held (its process just
        // exited) is left for another process that maps it.
        if !seen.contains(&file.id) && file.hold().is_ok() {
            seen.insert(file.id);
            found.push(Candidate { file, via });
        }
    };
    let mut from_process = |pid: u32,
                            found: &mut Vec<Candidate>,
                            push: &mut dyn FnMut(&mut Vec<Candidate>, TargetFile, Via),
                            cache: &mut SymbolCache|
     -> Result<(), DiscoveryError> {
        let mut offered = Vec::new();
        for file in targets::mapped_files(pid)? {
            if let Some(via) = library_match(group, &file.path) {
                offered.push((file, via));
            }
        }
        if group.executables {
            let executable = targets::executable(pid)?;
            if defines_required(group, &executable, cache) {
                offered.push((executable, Via::Executable));
            }
        }
        for (file, via) in offered {
            offered_by.entry(file.id).or_default().insert(pid);
            push(found, file, via);
        }
        Ok(())
    };
    match scope {
        Scope::Process(pid) => from_process(*pid, &mut found, &mut push, cache)?,
        Scope::Tree { root, members } => {
            for &pid in members {
                match from_process(pid, &mut found, &mut push, cache) {
                    Ok(()) => {}
                    Err(error) if pid == *root => return Err(error.into()),
                    // A descendant that exited since the tree was read is no error.
                    Err(_) => {}
                }
            }
        }
        Scope::Host | Scope::Command { .. } => {
            for file in targets::host_libraries(&|name| group.matches_library_name(name)) {
                push(&mut found, file, Via::Library);
            }
            for path in &group.paths {
                if let Ok(id) = FileId::of(path) {
                    let file = TargetFile::on_host(path.clone(), id);
                    push(&mut found, file, Via::Path);
                }
            }
            match scope {
                Scope::Command { executable } => {
                    // The command may find its libraries outside the standard directories:
                    // through LD_LIBRARY_PATH or its own RPATH/RUNPATH.
                    let directories = command_library_dirs(executable);
                    for file in targets::libraries_in(&directories, &|name| {
                        group.matches_library_name(name)
                    }) {
                        push(&mut found, file, Via::Library);
                    }
                    if group.executables {
                        if let Ok(id) = FileId::of(executable) {
                            let file = TargetFile::on_host(executable.clone(), id);
                            if defines_required(group, &file, cache) {
                                push(&mut found, file, Via::Executable);
                            }
                        }
                    }
                }
                _ => {
                    for pid in targets::all_pids() {
                        if pid == std::process::id() {
                            continue;
                        }
                        // Processes come and go while we look: one that vanished is no error.
                        let _ = from_process(pid, &mut found, &mut push, cache);
                    }
                }
            }
        }
    }
    Ok(found)
}

/// Directories a command's dynamic loader searches besides the standard ones:
/// LD_LIBRARY_PATH, and the executable's RPATH/RUNPATH (with `$ORIGIN` expanded).
fn command_library_dirs(executable: &Path) -> Vec<PathBuf> {
    let mut directories: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|paths| std::env::split_paths(&paths).collect())
        .unwrap_or_default();
    let origin = executable
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    if let Ok(elf) = ElfFile::open(executable) {
        for entry in elf.library_search_paths() {
            for part in entry.split(':').filter(|part| !part.is_empty()) {
                let expanded = part
                    .replace("${ORIGIN}", &origin.to_string_lossy())
                    .replace("$ORIGIN", &origin.to_string_lossy());
                directories.push(PathBuf::from(expanded));
            }
        }
    }
    directories
}

fn library_match(group: &Group, path: &Path) -> Option<Via> {
    if group.paths.iter().any(|wanted| wanted == path) {
        return Some(Via::Path);
    }
    let name = path.file_name()?.to_str()?;
    group.matches_library_name(name).then_some(Via::Library)
}

fn defines_required(group: &Group, file: &TargetFile, cache: &mut SymbolCache) -> bool {
    let required: Vec<&str> = group.required_symbols().collect();
    if cache
        .resolve(file.id, &file.host_path, &required)
        .is_ok_and(|offsets| offsets.iter().all(Option::is_some))
    {
        return true;
    }
    // A stripped executable: its functions may still be located (see `crate::symbols::locate`). One
    // where some were located and others not is offered too, so that planning and `check`
    // say what was found and what was not, instead of passing it by in silence.
    // (A key-log function found there says nothing of whether the file is the group's: it is
    // an extra, probed only with --keylog, and other libraries use the same strings.)
    let data = |probe: &Probe| probe.role != crate::spec::Role::Secret;
    let locatable = group
        .probes
        .iter()
        .any(|probe| probe.locate.is_some() && data(probe))
        || !group.pins.is_empty();
    locatable
        && cache
            .resolve_group(file.id, &file.host_path, group)
            .is_ok_and(|resolved| {
                missing_required(group, &resolved).is_empty()
                    || group
                        .probes
                        .iter()
                        .zip(&resolved)
                        .any(|(probe, resolution)| {
                            data(probe)
                                && resolution.found.is_some_and(|found| found != Found::Symbol)
                        })
            })
}

/// The required probes of `group` that `resolved` has no function for, and nothing stands in.
fn missing_required(group: &Group, resolved: &[Resolution]) -> Vec<String> {
    group
        .probes
        .iter()
        .zip(resolved)
        .filter(|(probe, resolution)| {
            !probe.optional
                && probe.instead_of.is_none()
                && resolution.offset.is_none()
                && !resolution.stood_in
        })
        .map(|(probe, resolution)| {
            // Why it and its stand-ins were not located, when they were looked for.
            let mut why: Vec<String> = resolution.note.iter().cloned().collect();
            for (stand_in, its) in group.probes.iter().zip(resolved) {
                if stand_in.instead_of.as_deref() == Some(probe.symbol.as_str()) {
                    if let Some(note) = &its.note {
                        why.push(format!("its stand-in {}: {note}", stand_in.symbol));
                    }
                }
            }
            if why.is_empty() {
                probe.symbol.clone()
            } else {
                format!("{} ({})", probe.symbol, why.join("; "))
            }
        })
        .collect()
}

/// What a group would do with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// The file offset of each of the group's probes, in spec order (`None`: not defined).
    pub offsets: Vec<Option<u64>>,
    /// How each was found, or why not (same order).
    pub resolutions: Vec<Resolution>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The file is the group's library; the plugin's version, if it names one.
    Traced { version: Option<String> },
    /// The file lacks these required symbols.
    MissingRequired(Vec<String>),
    /// The group's plugin says the file only looks like its library.
    Rejected(String),
    /// The file could not be read as ELF.
    Unreadable(String),
}

impl Outcome {
    /// Why the file is not traced (`None`: it is).
    pub fn reason_not_traced(&self) -> Option<String> {
        match self {
            Outcome::Traced { .. } => None,
            Outcome::MissingRequired(symbols) => {
                Some(format!("does not define {}", symbols.join(", ")))
            }
            Outcome::Rejected(reason) | Outcome::Unreadable(reason) => Some(reason.clone()),
        }
    }
}

/// Resolves a group's symbols in `file` and asks the group's plugin, if any, about it.
pub fn assess(group: &Group, file: &TargetFile, cache: &mut SymbolCache) -> Assessment {
    let resolutions = match cache.resolve_group(file.id, &file.host_path, group) {
        Ok(resolutions) => resolutions,
        Err(error) => {
            return Assessment {
                offsets: vec![None; group.probes.len()],
                resolutions: vec![Resolution::default(); group.probes.len()],
                outcome: Outcome::Unreadable(error.to_string()),
            }
        }
    };
    let offsets: Vec<Option<u64>> = resolutions
        .iter()
        .map(|resolution| resolution.offset)
        .collect();
    let missing_required = missing_required(group, &resolutions);
    let outcome = if !missing_required.is_empty() {
        Outcome::MissingRequired(missing_required)
    } else {
        match ElfFile::open(&file.host_path) {
            Err(error) => Outcome::Unreadable(error.to_string()),
            // The BPF programs read the registers of the architecture probectl is built for.
            Ok(elf) if elf.machine() != Machine::native() => Outcome::Rejected(format!(
                "{} code: this probectl is built for {}",
                elf.machine(),
                Machine::native()
            )),
            Ok(elf) => match plugin_for(&group.name).map(|plugin| plugin.inspect(&elf)) {
                None => Outcome::Traced { version: None },
                Some(Verdict::Reject { reason }) => Outcome::Rejected(reason),
                Some(Verdict::Accept { version }) => Outcome::Traced { version },
            },
        }
    };
    Assessment {
        offsets,
        resolutions,
        outcome,
    }
}

fn add_file(plan: &mut Plan, group: &Group, candidate: Candidate, cache: &mut SymbolCache) {
    let Candidate { file, via } = candidate;
    let skip = |plan: &mut Plan, symbol: Option<&str>, reason: String| {
        plan.skipped.push(Skipped {
            group: group.name.clone(),
            path: file.path.clone(),
            symbol: symbol.map(str::to_string),
            reason,
        });
    };
    // With several groups (`run all`), a file is traced by the first group that accepts it:
    // two groups probing the same functions would capture every call twice.
    if let Some(owner) = plan.files.iter().find(|planned| planned.file.id == file.id) {
        let reason = format!("already traced by [{}]", owner.group);
        return skip(plan, None, reason);
    }
    let Assessment {
        offsets,
        resolutions,
        outcome,
    } = assess(group, &file, cache);
    let version = match outcome {
        Outcome::Traced { version } => version,
        other => {
            let reason = other.reason_not_traced().unwrap_or_default();
            return skip(plan, None, reason);
        }
    };
    let file_index = plan.files.len();
    for ((probe, offset), resolution) in group.probes.iter().zip(offsets).zip(&resolutions) {
        let random_field = match probe.secret.as_ref().map(|secret| &secret.client_random) {
            Some(crate::spec::RandomRef::Field(field)) if offset.is_some() => {
                match random_source(cache, &file, field) {
                    Ok(found) => Some(found),
                    Err(reason) => {
                        skip(
                            plan,
                            Some(&probe.symbol),
                            format!("client random not found: {reason}"),
                        );
                        continue;
                    }
                }
            }
            _ => None,
        };
        match offset {
            Some(offset) => match cache.placement(file.id, &file.host_path, probe) {
                Placement::Refused { reason } => skip(plan, Some(&probe.symbol), reason),
                placement => plan.probes.push(PlannedProbe {
                    file_index,
                    probe: probe.clone(),
                    offset,
                    placement,
                    random_field,
                }),
            },
            // A stand-in that is not needed is no news.
            None if probe.instead_of.is_some()
                && resolution
                    .note
                    .as_deref()
                    .is_some_and(|note| note.starts_with("not needed")) => {}
            None => skip(
                plan,
                Some(&probe.symbol),
                match &resolution.note {
                    Some(note) if resolution.stood_in => {
                        format!("not defined in this file: {note}")
                    }
                    Some(note) => format!("not found: {note}"),
                    None => "optional symbol not defined in this file".to_string(),
                },
            ),
        }
    }
    plan.files.push(PlannedFile {
        group: group.name.clone(),
        file,
        via,
        version,
    });
}

/// A file that one group traces needs no word about the other groups that turned it down
/// (`run all`: [openssl] on BoringSSL's libssl.so.0, which [boringssl] traces).
fn forget_skips_of_claimed_files(plan: &mut Plan) {
    let claimed: BTreeSet<&Path> = plan
        .files
        .iter()
        .map(|planned| planned.file.path.as_path())
        .collect();
    let skipped = std::mem::take(&mut plan.skipped);
    plan.skipped = skipped
        .into_iter()
        .filter(|skip| skip.symbol.is_some() || !claimed.contains(skip.path.as_path()))
        .collect();
}

/// The files on this host a group would probe in a system-wide run, before their symbols are
/// checked: library files in the host's library directories, and the group's exact paths.
/// Executables are per process (`Scope::Process`).
pub fn host_candidates(group: &Group) -> Vec<(TargetFile, Via)> {
    let mut found: Vec<(TargetFile, Via)> = Vec::new();
    let mut seen: BTreeSet<FileId> = BTreeSet::new();
    for file in targets::host_libraries(&|name| group.matches_library_name(name)) {
        if seen.insert(file.id) {
            found.push((file, Via::Library));
        }
    }
    for path in &group.paths {
        if let Ok(id) = FileId::of(path) {
            if seen.insert(id) {
                let file = TargetFile::on_host(path.clone(), id);
                found.push((file, Via::Path));
            }
        }
    }
    found
}

/// How `path` (a file a process maps) matches `group` by name or exact path, if it does.
pub fn library_match_of(group: &Group, path: &Path) -> Option<Via> {
    library_match(group, path)
}

/// Whether `file` defines every required symbol of `group` (how executables are recognised).
pub fn executable_matches(group: &Group, file: &TargetFile, cache: &mut SymbolCache) -> bool {
    group.executables && defines_required(group, file, cache)
}

/// Where a secret probe whose client random is a field finds it: the field the accessor
/// copies, or (with `else = "client_hello"`, when the field is not found) the ClientHello of
/// the secret's connection. The error says why neither.
pub(crate) fn random_source(
    cache: &mut SymbolCache,
    file: &TargetFile,
    field: &crate::spec::RandomField,
) -> Result<(crate::spec::ClientRandomSource, String), String> {
    match cache.field_offset(
        file.id,
        &file.host_path,
        &field.offset_from,
        field.argument.0,
    ) {
        Ok((path, evidence)) => Ok((crate::spec::ClientRandomSource::Field(path), evidence)),
        Err(reason) => match field.fallback {
            Some(crate::spec::RandomFallback::ClientHello) => Ok((
                crate::spec::ClientRandomSource::ClientHello,
                format!("the ClientHello its connection's socket sent ({reason})"),
            )),
            None => Err(reason),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SpecFile;

    /// The BPF programs read the registers of probectl's own architecture: an executable of
    /// another one is not traced, and the reason says why.
    #[test]
    fn an_executable_of_another_architecture_is_not_traced() {
        let dir = std::env::temp_dir().join(format!("probectl-plan-arm64-{}", std::process::id()));
        let program = crate::symbols::arm64::build_go_peer(&dir);
        let specs = SpecFile::load(None).expect("built-in specs");
        let go = specs
            .groups
            .iter()
            .find(|group| group.name == "go")
            .expect("go group");
        let id = FileId::of_metadata(&std::fs::metadata(&program).expect("metadata"));
        let file = TargetFile::on_host(program.clone(), id);
        let outcome = assess(go, &file, &mut SymbolCache::default()).outcome;
        let _ = std::fs::remove_dir_all(&dir);
        if Machine::native() == Machine::Aarch64 {
            assert_eq!(outcome.reason_not_traced(), None);
        } else {
            assert_eq!(
                outcome.reason_not_traced().as_deref(),
                Some("arm64 code: this probectl is built for x86-64")
            );
        }
    }
}
