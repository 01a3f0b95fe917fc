//! `probectl list` and `probectl check`: what the specs say, and where on this host (or in one
//! process) they would attach, without loading any BPF. Both answer from the same
//! [`assess`](crate::plan::assess) that planning uses, so they cannot disagree with `run`.

use std::fmt::{self, Display, Write as _};
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::plan::{self, Assessment, Outcome, Via};
use crate::plugin::plugin_for;
use crate::spec::{Abi, Group, LengthRef, Probe, ReturnType, Role, SpecError, SpecFile};
use crate::symbols::locate::Found;
use crate::symbols::placement::{Placement, PlacementMode};
use crate::symbols::{Resolution, SymbolCache};
use crate::targets::{self, DiscoveryError, TargetFile};

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
}

/// One file as one group sees it.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub path: PathBuf,
    pub via: Via,
    /// (symbol, optional, offset) for each probe of the group.
    pub symbols: Vec<(String, bool, Option<u64>)>,
    /// Where each defined symbol's probes would go (same order; `None`: not defined).
    pub placements: Vec<Option<Placement>>,
    /// How each was found, or why not (same order).
    pub resolutions: Vec<Resolution>,
    /// For a secret probe whose client random is a field: where it is and how that was
    /// found, or why not (same order; `None` for the other probes).
    pub client_randoms: Vec<Option<Result<String, String>>>,
    pub outcome: Outcome,
}

impl FileReport {
    fn new(group: &Group, file: &TargetFile, via: Via, cache: &mut SymbolCache) -> FileReport {
        let Assessment {
            offsets,
            resolutions,
            outcome,
        } = plan::assess(group, file, cache);
        let placements = group
            .probes
            .iter()
            .zip(&offsets)
            .map(|(probe, offset)| offset.map(|_| cache.placement(file.id, &file.host_path, probe)))
            .collect();
        let client_randoms = group
            .probes
            .iter()
            .zip(&offsets)
            .map(|(probe, offset)| {
                match (
                    probe.secret.as_ref().map(|secret| &secret.client_random),
                    offset,
                ) {
                    (Some(crate::spec::RandomRef::Field(field)), Some(_)) => {
                        Some(plan::random_source(cache, file, field).map(|(_, evidence)| evidence))
                    }
                    _ => None,
                }
            })
            .collect();
        FileReport {
            client_randoms,
            placements,
            resolutions,
            path: file.path.clone(),
            via,
            symbols: group
                .probes
                .iter()
                .zip(offsets)
                // A stand-in (`instead_of`) is never required: the plan does not ask for it.
                .map(|(probe, offset)| {
                    let optional = probe.optional || probe.instead_of.is_some();
                    (probe.symbol.clone(), optional, offset)
                })
                .collect(),
            outcome,
        }
    }

    /// The report as JSON (`list --format json`, `check --format json`).
    pub fn to_json(&self) -> Value {
        let (outcome, version) = match &self.outcome {
            Outcome::Traced { version } => ("traced", version.clone()),
            Outcome::MissingRequired(_) => ("missing_required", None),
            Outcome::Rejected(_) => ("rejected", None),
            Outcome::Unreadable(_) => ("unreadable", None),
        };
        let symbols: Vec<Value> = self
            .symbols
            .iter()
            .zip(&self.placements)
            .zip(&self.resolutions)
            .zip(&self.client_randoms)
            .filter(|((_, resolution), _)| !resolution.not_needed)
            .map(
                |((((symbol, optional, offset), placement), resolution), random)| {
                    json!({
                        // A secret probe's client random: where it is, or why it is not found.
                        "client_random": random.as_ref().map(|random| match random {
                            Ok(evidence) => json!({ "found": evidence }),
                            Err(why) => json!({ "not_found": why }),
                        }),
                        "symbol": symbol,
                        "optional": optional,
                        "offset": offset,
                        "placement": placement.as_ref().map(|placement| placement.to_string()),
                        // "symbol", "cross-reference", "cached" or "pinned"; null: not found.
                        "found": resolution.found.map(|found| match found {
                            Found::Symbol => "symbol",
                            Found::CrossReference => "cross-reference",
                            Found::Cached => "cached",
                            Found::Pinned => "pinned",
                        }),
                        // What proved a located function, or why it was not found.
                        "note": resolution.note,
                    })
                },
            )
            .collect();
        json!({
            "path": self.path,
            "via": via_name(self.via),
            "outcome": outcome,
            "reason": self.outcome.reason_not_traced(),
            "version": version,
            "symbols": symbols,
        })
    }

    /// The verdict line and the symbol lines, indented by `indent`.
    fn render(&self, out: &mut String, indent: &str) {
        let verdict = match &self.outcome {
            Outcome::Traced { version } => {
                let mut text = "would attach".to_string();
                if let Some(version) = version {
                    let _ = write!(text, "; version: {version}");
                }
                text
            }
            other => format!(
                "not traced: {}",
                other.reason_not_traced().unwrap_or_default()
            ),
        };
        let _ = writeln!(out, "{indent}{verdict}");
        if matches!(self.outcome, Outcome::Unreadable(_)) {
            return;
        }
        let width = self
            .symbols
            .iter()
            .map(|(name, _, _)| name.len())
            .max()
            .unwrap_or(0);
        for ((((name, optional, offset), placement), resolution), random) in self
            .symbols
            .iter()
            .zip(&self.placements)
            .zip(&self.resolutions)
            .zip(&self.client_randoms)
        {
            // A stand-in whose counterpart is found is no news.
            if resolution.not_needed {
                continue;
            }
            // Found by symbol is the rule: only the other ways are named.
            let found = resolution
                .found
                .filter(|found| *found != Found::Symbol)
                .map(|found| format!("  [{found}]"))
                .unwrap_or_default();
            let place = match (offset, optional) {
                (Some(offset), _) => match placement {
                    Some(placement) => format!("{offset:#x}  {placement}{found}"),
                    None => format!("{offset:#x}{found}"),
                },
                (None, _) if resolution.stood_in => "missing (another probe stands in)".to_string(),
                (None, _) if resolution.not_needed => resolution.note.clone().unwrap_or_default(),
                (None, true) => "missing (optional)".to_string(),
                (None, false) => "missing (required)".to_string(),
            };
            let _ = writeln!(out, "{indent}  {name:<width$}  {place}");
            // Located functions say what proved them; unlocated ones why not.
            if let Some(note) = resolution
                .note
                .as_ref()
                .filter(|_| resolution.found != Some(Found::Symbol) && !resolution.not_needed)
            {
                let _ = writeln!(out, "{indent}  {:<width$}    {note}", "");
            }
            match random {
                Some(Ok(evidence)) => {
                    let _ = writeln!(out, "{indent}  {:<width$}    client random: {evidence}", "");
                }
                Some(Err(why)) => {
                    let _ = writeln!(
                        out,
                        "{indent}  {:<width$}    client random not found (not probed): {why}",
                        ""
                    );
                }
                None => {}
            }
        }
    }
}

/// How a group matched a file, as JSON says it.
fn via_name(via: Via) -> &'static str {
    match via {
        Via::Library => "library",
        Via::Path => "path",
        Via::Executable => "executable",
    }
}

/// `probectl list`: every group, its probes, and the files on this host it would attach to.
#[derive(Debug, Clone)]
pub struct ListReport {
    pub specs_name: String,
    pub groups: Vec<GroupReport>,
}

#[derive(Debug, Clone)]
pub struct GroupReport {
    pub group: Group,
    pub has_plugin: bool,
    pub files: Vec<FileReport>,
}

pub fn list(
    specs_path: Option<&std::path::Path>,
    placement: PlacementMode,
) -> Result<ListReport, InspectError> {
    let specs = SpecFile::load(specs_path)?;
    let mut cache = SymbolCache::with_placement(placement);
    let groups = specs
        .groups
        .iter()
        .map(|group| GroupReport {
            group: group.clone(),
            has_plugin: plugin_for(&group.name).is_some(),
            files: plan::host_candidates(group)
                .into_iter()
                .map(|(file, via)| FileReport::new(group, &file, via, &mut cache))
                .collect(),
        })
        .collect();
    Ok(ListReport {
        specs_name: specs_name(specs_path),
        groups,
    })
}

fn specs_name(path: Option<&std::path::Path>) -> String {
    path.map_or_else(
        || crate::spec::DEFAULT_SPECS_NAME.to_string(),
        |path| path.display().to_string(),
    )
}

/// How a probe reads its call, in the words of probes.toml.
fn describe_probe(probe: &Probe) -> String {
    let mut text = match probe.role {
        Role::Data => format!("{:<5}", probe.direction.as_str()),
        Role::End => "end  ".to_string(),
        Role::Secret => "key  ".to_string(),
    };
    if let Some(connection) = probe.connection {
        let _ = write!(text, "  connection=arg{}", connection.0);
    }
    if probe.role == Role::End {
        text.push_str("  (entering it ends the handle's connection)");
    } else if let Some(secret) = &probe.secret {
        let _ = write!(text, "  label=arg{}", secret.label.0);
        if let Some(length) = secret.label_length {
            let _ = write!(text, "+length arg{}", length.0);
        }
        match &secret.client_random {
            crate::spec::RandomRef::Argument(arg) => {
                let _ = write!(text, "  client_random=arg{}", arg.0);
            }
            crate::spec::RandomRef::Field(field) => {
                let _ = write!(
                    text,
                    "  client_random=field of arg{} ({} reads it)",
                    field.argument.0, field.offset_from
                );
            }
        }
        match secret.client_random_length {
            crate::spec::LengthOrConstant::Argument(arg) => {
                let _ = write!(text, "  client_random_length=arg{}", arg.0);
            }
            crate::spec::LengthOrConstant::Constant(length) => {
                let _ = write!(text, "  client_random_length={length}");
            }
        }
        let _ = write!(
            text,
            "  secret=arg{} secret_length=arg{}  (with --keylog)",
            secret.secret.0, secret.secret_length.0
        );
    } else {
        let _ = write!(text, "  buffer=arg{}", probe.buffer.0);
        match probe.length {
            LengthRef::Return => text.push_str("  length=return"),
            LengthRef::OutPointer(arg) => {
                let _ = write!(text, "  length=*arg{arg}");
            }
            LengthRef::Argument(arg) => {
                let _ = write!(text, "  length=arg{arg} (captured at entry)");
            }
        }
        if let Some(record) = probe.tls_record {
            let _ = write!(
                text,
                "  tls_record=(ad=arg{}, ad_length=arg{})",
                record.ad.0, record.ad_length.0
            );
        }
        text.push_str(match (probe.abi, probe.returns) {
            // Go's int is 64 bits.
            (Abi::Go, _) => "  returns=int (Go, 64-bit)",
            (Abi::SystemV, ReturnType::Int) => "  returns=int",
            (Abi::SystemV, ReturnType::Ssize) => "  returns=ssize_t",
        });
    }
    if probe.abi == Abi::Go {
        text.push_str("  abi=go");
    }
    if let Some(filter) = &probe.only_if {
        let mut place = format!("arg{}", filter.argument.0);
        for offset in &filter.pointers {
            place = format!("*({place}{offset:+})");
        }
        let _ = write!(
            text,
            "  only_if=u32 at ({place}{:+}) == {}",
            filter.offset, filter.equals
        );
    }
    if probe.optional {
        text.push_str("  optional");
    }
    text
}

fn describe_files(group: &Group) -> String {
    let (mut parts, executables) = group.describe_files();
    if let Some(required) = executables {
        parts.push(format!(
            "executables defining {required} (checked per process: probectl check --pid N)"
        ));
    }
    parts.join("; ")
}

impl ListReport {
    /// `list --format json`: one object.
    pub fn to_json(&self) -> Value {
        let groups: Vec<Value> = self
            .groups
            .iter()
            .map(|report| {
                let group = &report.group;
                let probes: Vec<Value> = group
                    .probes
                    .iter()
                    .map(|probe| {
                        json!({
                            "symbol": probe.symbol,
                            "role": match probe.role {
                                Role::Data => "data",
                                Role::End => "end",
                                Role::Secret => "secret",
                            },
                            "direction": (probe.role == Role::Data).then(|| probe.direction.as_str()),
                            "optional": probe.optional,
                            "description": describe_probe(probe).trim_end(),
                        })
                    })
                    .collect();
                json!({
                    "name": group.name,
                    "description": group.description,
                    "plugin": report.has_plugin,
                    "looks_for": describe_files(group),
                    "probes": probes,
                    "files": report.files.iter().map(FileReport::to_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "specs": self.specs_name, "groups": groups })
    }
}

impl Display for ListReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let _ = writeln!(out, "probe specs: {}", self.specs_name);
        for report in &self.groups {
            let group = &report.group;
            let _ = writeln!(out);
            let _ = writeln!(out, "{}: {}", group.name, group.description);
            let _ = writeln!(
                out,
                "  plugin: {}",
                if report.has_plugin {
                    "registered (it inspects every file the spec matches)"
                } else {
                    "none: the spec alone"
                }
            );
            let _ = writeln!(out, "  looks for: {}", describe_files(group));
            let _ = writeln!(out, "  probes:");
            let width = group
                .probes
                .iter()
                .map(|probe| probe.symbol.len())
                .max()
                .unwrap_or(0);
            for probe in &group.probes {
                let _ = writeln!(
                    out,
                    "    {:<width$}  {}",
                    probe.symbol,
                    describe_probe(probe)
                );
            }
            if report.files.is_empty() {
                let _ = writeln!(out, "  on this host: no matching library file");
            } else {
                let _ = writeln!(out, "  on this host:");
                for file in &report.files {
                    let _ = writeln!(out, "    {}", file.path.display());
                    file.render(&mut out, "      ");
                }
            }
        }
        f.write_str(&out)
    }
}

/// `probectl check --pid N`: the process tree (when the process has descendants), then every
/// file the process maps and what each group makes of it, then for each descendant the files
/// not shown yet.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The process and its descendants, the root first (depth-first).
    pub processes: Vec<ProcessReport>,
    /// Show the files no group matches too (`check --all`); the executable is always shown.
    pub show_all: bool,
}

/// What `check` concludes for a process tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub pid: u32,
    pub comm: String,
    /// Each group that would trace a file of the tree (as `run all` assigns them), with its
    /// files, in the order the report shows them.
    pub groups: Vec<(String, Vec<PathBuf>)>,
    /// Files a group matched by name or symbols but would not trace: (group, path, why).
    pub refused: Vec<(String, PathBuf, String)>,
}

/// One process of the tree.
#[derive(Debug, Clone)]
pub struct ProcessReport {
    pub pid: u32,
    pub comm: String,
    /// How deep below the root (0 for the root).
    pub depth: usize,
    pub executable: PathBuf,
    /// Every file it maps (its executable first).
    pub files: Vec<MappedFile>,
    /// Which of `files` an earlier process of the report maps too (shown there).
    pub shown_above: Vec<bool>,
}

impl ProcessReport {
    /// (group, path) of every file a group would trace, as in `run`.
    fn traced(&self) -> Vec<(&str, &std::path::Path)> {
        let mut traced: Vec<(&str, &std::path::Path)> = Vec::new();
        for file in &self.files {
            // As in `run all`: the first group that accepts a file traces it.
            if let Some((group, _)) = file
                .groups
                .iter()
                .find(|(_, report)| matches!(report.outcome, Outcome::Traced { .. }))
            {
                traced.push((group, &file.path));
            }
        }
        traced
    }
}

#[derive(Debug, Clone)]
pub struct MappedFile {
    pub path: PathBuf,
    /// Where the file is for probectl when the path there is another file (a chroot, a
    /// private mount namespace, a bind mount, a deleted file); see [`TargetFile::host_view`].
    pub host_view: Option<String>,
    pub id: crate::targets::FileId,
    pub is_executable: bool,
    /// (group name, report) for each group that matches the file by name, path, or (for the
    /// executable) by defining the group's required symbols.
    pub groups: Vec<(String, FileReport)>,
    /// For an executable no group recognised: the groups that look at executables.
    pub executable_groups: Vec<String>,
    /// For such an executable: why each function a group could locate without a symbol was
    /// not found (`[group] symbol: reason`).
    pub not_located: Vec<String>,
    /// TLS code the executable carries that probectl does not trace yet (`locate::rust_tls`).
    pub untraced_tls: Option<String>,
}

pub fn check(
    pid: u32,
    specs_path: Option<&std::path::Path>,
    placement: PlacementMode,
) -> Result<CheckReport, InspectError> {
    let specs = SpecFile::load(specs_path)?;
    if !targets::process_exists(pid) {
        return Err(DiscoveryError::NoSuchProcess { pid }.into());
    }
    let mut cache = SymbolCache::with_placement(placement);
    let mut shown = std::collections::BTreeSet::new();
    let mut processes = Vec::new();
    for member in targets::process_tree(pid) {
        let report = match process_report(member, &specs, &mut cache) {
            Ok(report) => report,
            Err(error) if member.pid == pid => return Err(error),
            // A descendant that exited since the tree was read is left out.
            Err(_) => continue,
        };
        let shown_above = report
            .files
            .iter()
            .map(|file| !shown.insert(file.id))
            .collect();
        processes.push(ProcessReport {
            shown_above,
            ..report
        });
    }
    Ok(CheckReport {
        processes,
        show_all: false,
    })
}

/// Every file one process maps and what each group makes of it.
fn process_report(
    member: targets::TreeMember,
    specs: &SpecFile,
    cache: &mut SymbolCache,
) -> Result<ProcessReport, InspectError> {
    let pid = member.pid;
    let executable = targets::executable(pid)?;
    let mut mapped = targets::mapped_files(pid)?;
    if !mapped.iter().any(|file| file.id == executable.id) {
        mapped.insert(0, executable.clone());
    }
    let mut files = Vec::new();
    for file in &mapped {
        let is_executable = file.id == executable.id;
        let mut groups = Vec::new();
        let mut executable_groups = Vec::new();
        let mut not_located = Vec::new();
        for group in &specs.groups {
            let via = match plan::library_match_of(group, &file.path) {
                Some(via) => Some(via),
                None if is_executable && group.executables => {
                    executable_groups.push(group.name.clone());
                    let matches = plan::executable_matches(group, file, cache);
                    if !matches {
                        // One line per reason: usually all functions share it (no source path).
                        let mut reasons: Vec<(&str, Vec<&str>)> = Vec::new();
                        for probe in group.probes.iter().filter(|probe| probe.locate.is_some()) {
                            let key = (file.id, probe.symbol.clone());
                            let Some(Err(why)) = cache.located.get(&key) else {
                                continue;
                            };
                            match reasons.iter_mut().find(|(reason, _)| reason == why) {
                                Some((_, symbols)) => symbols.push(&probe.symbol),
                                None => reasons.push((why, vec![&probe.symbol])),
                            }
                        }
                        // A file without the library's source path is simply not that
                        // library: no word about it.
                        not_located.extend(
                            reasons
                                .into_iter()
                                .filter(|(why, _)| {
                                    !why.starts_with(crate::symbols::locate::NO_SOURCE)
                                        && !why.starts_with(crate::symbols::locate::NO_STRING)
                                })
                                .map(|(why, symbols)| {
                                    format!("[{}] {}: {why}", group.name, symbols.join(", "))
                                }),
                        );
                    }
                    matches.then_some(Via::Executable)
                }
                None => None,
            };
            if let Some(via) = via {
                let report = FileReport::new(group, file, via, cache);
                groups.push((group.name.clone(), report));
            }
        }
        // TLS code that no group traces yet (rustls), named when it is there.
        let untraced_tls = if is_executable && groups.is_empty() {
            crate::symbols::ElfFile::open(&file.host_path)
                .ok()
                .and_then(|elf| crate::symbols::locate::rust_tls(elf.bytes()))
                .map(|tls| tls.to_string())
        } else {
            None
        };
        files.push(MappedFile {
            path: file.path.clone(),
            host_view: file.host_view(),
            id: file.id,
            is_executable,
            groups,
            executable_groups,
            not_located,
            untraced_tls,
        });
    }
    // The executable, then the files a group matches, then the rest, each by path: an order
    // that does not depend on where the files live or on the address layout.
    files.sort_by(|a, b| {
        (!a.is_executable, a.groups.is_empty(), &a.path).cmp(&(
            !b.is_executable,
            b.groups.is_empty(),
            &b.path,
        ))
    });
    Ok(ProcessReport {
        pid,
        comm: targets::comm(pid),
        depth: member.depth,
        executable: executable.path,
        shown_above: vec![false; files.len()],
        files,
    })
}

impl ProcessReport {
    fn render(&self, out: &mut String, show_all: bool) {
        let above = self.shown_above.iter().filter(|&&shown| shown).count();
        let note = match above {
            0 => String::new(),
            count if count == self.files.len() => ", all shown above".to_string(),
            count => format!(", {count} shown above"),
        };
        let _ = writeln!(
            out,
            "process {} ({}): executable {}, {} mapped files{note}",
            self.pid,
            self.comm,
            self.executable.display(),
            self.files.len()
        );
        let mut traced_by: Vec<(&str, &std::path::Path)> = Vec::new();
        let mut hidden = 0;
        for (file, _) in self
            .files
            .iter()
            .zip(&self.shown_above)
            .filter(|(_, &shown)| !shown)
        {
            if !show_all && file.groups.is_empty() && !file.is_executable {
                hidden += 1;
                continue;
            }
            let _ = writeln!(out);
            let label = if file.is_executable {
                " (executable)"
            } else {
                ""
            };
            let _ = writeln!(out, "{}{label}", file.path.display());
            if let Some(view) = &file.host_view {
                let _ = writeln!(out, "  {view}");
            }
            if file.groups.is_empty() {
                if file.executable_groups.is_empty() {
                    let _ = writeln!(out, "  no group matches");
                } else {
                    let _ = writeln!(
                        out,
                        "  no group matches (it does not define the required symbols of {})",
                        file.executable_groups.join(", ")
                    );
                    for why in &file.not_located {
                        let _ = writeln!(out, "    not located: {why}");
                    }
                    if let Some(tls) = &file.untraced_tls {
                        let _ = writeln!(
                            out,
                            "    it carries {tls}, which probectl does not trace yet (see docs/stripped.md)"
                        );
                    }
                }
                continue;
            }
            for (group, report) in &file.groups {
                let how = match report.via {
                    Via::Library => "by file name",
                    Via::Path => "by exact path",
                    Via::Executable => "as an executable defining its symbols",
                };
                let _ = writeln!(out, "  [{group}] matches {how}");
                // As in `run all`: the first group that accepts a file traces it.
                if let Some((owner, _)) = traced_by
                    .iter()
                    .find(|(_, path)| *path == file.path.as_path())
                {
                    if matches!(report.outcome, Outcome::Traced { .. }) {
                        let _ = writeln!(
                            out,
                            "    accepted, but with `run all` [{owner}] traces it first"
                        );
                        continue;
                    }
                }
                if matches!(report.outcome, Outcome::Traced { .. }) {
                    traced_by.push((group, &file.path));
                }
                report.render(out, "    ");
            }
        }
        if hidden > 0 {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "({hidden} more mapped file{} that no group matches: --all shows them)",
                if hidden == 1 { "" } else { "s" }
            );
        }
    }
}

impl CheckReport {
    /// Which groups would trace the tree, and through which files.
    pub fn verdict(&self) -> Verdict {
        let mut groups: Vec<(String, Vec<PathBuf>)> = Vec::new();
        let mut refused: Vec<(String, PathBuf, String)> = Vec::new();
        for process in &self.processes {
            for (group, path) in process.traced() {
                let path = path.to_path_buf();
                match groups.iter_mut().find(|(name, _)| name == group) {
                    Some((_, files)) if files.contains(&path) => {}
                    Some((_, files)) => files.push(path),
                    None => groups.push((group.to_string(), vec![path])),
                }
            }
            for file in &process.files {
                for (group, report) in &file.groups {
                    if let Some(reason) = report.outcome.reason_not_traced() {
                        let entry = (group.clone(), file.path.clone(), reason);
                        if !refused.contains(&entry) {
                            refused.push(entry);
                        }
                    }
                }
            }
        }
        let (pid, comm) = self
            .processes
            .first()
            .map_or((0, String::new()), |root| (root.pid, root.comm.clone()));
        Verdict {
            pid,
            comm,
            groups,
            refused,
        }
    }

    /// `check --format json`: one object, every mapped file included.
    pub fn to_json(&self) -> Value {
        let verdict = self.verdict();
        let processes: Vec<Value> = self
            .processes
            .iter()
            .map(|process| {
                let files: Vec<Value> = process
                    .files
                    .iter()
                    .zip(&process.shown_above)
                    .map(|(file, shown_above)| {
                        let matches: Vec<Value> = file
                            .groups
                            .iter()
                            .map(|(group, report)| {
                                let mut value = report.to_json();
                                if let Value::Object(map) = &mut value {
                                    map.insert("group".into(), json!(group));
                                    map.remove("path");
                                }
                                value
                            })
                            .collect();
                        json!({
                            "path": file.path,
                            "host_view": file.host_view,
                            "executable": file.is_executable,
                            "shown_above": shown_above,
                            "matches": matches,
                        })
                    })
                    .collect();
                json!({
                    "pid": process.pid,
                    "comm": process.comm,
                    "depth": process.depth,
                    "executable": process.executable,
                    "files": files,
                })
            })
            .collect();
        json!({
            "pid": verdict.pid,
            "comm": verdict.comm,
            "traceable": !verdict.groups.is_empty(),
            "groups": verdict
                .groups
                .iter()
                .map(|(group, files)| json!({ "group": group, "files": files }))
                .collect::<Vec<_>>(),
            "refused": verdict
                .refused
                .iter()
                .map(|(group, path, reason)| json!({ "group": group, "path": path, "reason": reason }))
                .collect::<Vec<_>>(),
            "processes": processes,
        })
    }
}

impl Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        // The tree first, when there is one: `run --pid` traces every member, and which
        // members map a matching library is the first thing to know (a server's master may map
        // none while its workers do).
        if let [root, _, ..] = self.processes.as_slice() {
            let _ = writeln!(
                out,
                "process tree of {} ({}): {} processes (run --pid traces them all, and their later children)",
                root.pid,
                root.comm,
                self.processes.len()
            );
            for process in &self.processes {
                let indent = "  ".repeat(process.depth + 1);
                let traced = process.traced();
                let what = if traced.is_empty() {
                    "no matching library".to_string()
                } else {
                    traced
                        .iter()
                        .map(|(group, path)| format!("[{group}] {}", path.display()))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let _ = writeln!(out, "{indent}{} {}: {what}", process.pid, process.comm);
            }
            let _ = writeln!(out);
        }
        for (index, process) in self.processes.iter().enumerate() {
            if index > 0 {
                let _ = writeln!(out);
            }
            process.render(&mut out, self.show_all);
        }
        f.write_str(&out)
    }
}
