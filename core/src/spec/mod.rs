//! Declarative probe specs (`probes.toml`): what gets probed, where, and how to read it.
//!
//! A spec file holds groups (`openssl`, ...). A group says which files it applies to (library
//! file name patterns, exact paths, executables that export its symbols) and lists probes: a
//! symbol, its direction, and which argument registers hold the connection, the buffer and the
//! length. The same two BPF programs serve every probe; a probe's spec becomes their per-attach
//! configuration.

use std::path::{Path, PathBuf};

use probectl_common::{
    abi, direction, length_source, return_width, ProbeSpec, SecretSpec, ARG_NONE,
    FILTER_MAX_POINTERS, SECRET_RANDOM_MAX,
};
use serde::{Deserialize, Serialize};

/// The specs compiled into the binary; `--probes FILE` replaces them.
pub const DEFAULT_SPECS: &str = include_str!("../../../probes.toml");
/// The name the embedded specs are reported under.
pub const DEFAULT_SPECS_NAME: &str = "probes.toml (built in)";

/// Arguments a probe may name (`arg0`..`arg15`): Go's register ABI has nine integer argument
/// registers (`arg0`..`arg8`, checked by `validate`); System V x86-64 six, and the kernel reads
/// the rest from the stack at the call's entry.
const MAX_ARGS: u8 = probectl_common::MAX_ARGUMENTS as u8;
/// Go's integer argument registers.
const GO_ARGS: u8 = probectl_common::MAX_ARGUMENT_REGISTERS as u8;
/// System V x86-64 integer argument registers.
const SYSV_ARGS: u8 = 6;

/// The calling convention of a group's functions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Abi {
    /// System V x86-64 (C): `arg0`..`arg5` are RDI, RSI, RDX, RCX, R8, R9; the return value is
    /// RAX. Calls are matched to their returns per thread, by the stack pointer.
    #[default]
    #[serde(rename = "sysv")]
    SystemV,
    /// Go's register ABI (amd64, Go >= 1.17): `arg0`..`arg8` are RAX, RBX, RCX, RDI, RSI, R8,
    /// R9, R10, R11, a `[]byte` takes three (pointer, length, capacity), the first result is
    /// RAX (a 64-bit `int`). Calls are per goroutine (R14), and their returns are probed at
    /// every `ret` of the function, found by disassembly: never a uretprobe, which would
    /// crash a Go program whose goroutine stack moves.
    #[serde(rename = "go")]
    Go,
}

/// Errors in reading or validating a spec file.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read probe specs {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

/// A whole spec file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    #[serde(rename = "group", default)]
    pub groups: Vec<Group>,
}

/// A library (or family of libraries) and its probes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// What users type: `probectl run <name>`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// File name patterns (`*` and `?` wildcards) matched against the files a process maps,
    /// e.g. `libssl.so*`.
    #[serde(default)]
    pub libraries: Vec<String>,
    /// Exact paths of files to probe (as seen inside the target's mount namespace).
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// Also probe a process's executable when it defines the group's required symbols
    /// (static linking, e.g. node).
    #[serde(default)]
    pub executables: bool,
    /// The calling convention of the group's functions (`"sysv"`, the default, or `"go"`).
    #[serde(default)]
    pub abi: Abi,
    /// The data probes, then (after parsing) the lifecycle probes of `[[group.end]]`.
    #[serde(rename = "probe", default)]
    pub probes: Vec<Probe>,
    /// Lifecycle functions: their call ends the handle's connection (see [`EndProbe`]).
    /// Parsing moves them into `probes` with [`Role::End`].
    #[serde(rename = "end", default)]
    ends: Vec<EndProbe>,
    /// Key-log functions: their entry hands a session secret over (see [`SecretProbe`]).
    /// Parsing moves them into `probes` with [`Role::Secret`].
    #[serde(rename = "secret", default)]
    secrets: Vec<SecretProbe>,
    /// Function addresses pinned per build id, for builds that `locate` rules cannot handle.
    #[serde(rename = "pin", default)]
    pub pins: Vec<crate::spec::Pin>,
}

/// A lifecycle function of a group (`SSL_free`, `SSL_clear`, `gnutls_deinit`, `PR_Close`): when
/// it is entered, the kernel ends the connection of the handle in `connection`, so a handle
/// reused at the same address starts a new connection, with or without an fd. Always optional:
/// a file without it is traced, and the skip is reported.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndProbe {
    pub symbol: String,
    pub connection: ArgRef,
    #[serde(default)]
    pub only_if: Option<CallFilter>,
    /// How to find the function without a symbol, as for probes.
    #[serde(default)]
    pub locate: Option<crate::spec::LocateRule>,
}

/// A library's key-log function (`[[group.secret]]`): every session secret of every handshake
/// goes through it, whether or not the program asked for a key log (OpenSSL checks for a
/// callback inside `nss_keylog_int`; Go checks `KeyLogWriter` inside `writeKeyLog`). Its
/// entry's arguments hold the NSS key-log line's parts: the label, the client random and the
/// secret. Probed only with `--keylog`; always optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretProbe {
    pub symbol: String,
    /// Register of the connection handle (`SSL*`): ties the secret to its connection.
    #[serde(default)]
    pub connection: Option<ArgRef>,
    /// Register of the label: a C string, or a pointer with `label_length` (Go).
    pub label: ArgRef,
    #[serde(default)]
    pub label_length: Option<ArgRef>,
    /// Where the client random is: an argument pointing at it, or a field of the struct an
    /// argument points at, at the offset the library's own accessor function reads it from.
    pub client_random: RandomRef,
    /// The random's length: an argument, or a constant (default 32).
    #[serde(default)]
    pub client_random_length: Option<LengthOrConstant>,
    pub secret: ArgRef,
    pub secret_length: ArgRef,
    #[serde(default)]
    pub locate: Option<crate::spec::LocateRule>,
    /// Probed only where the named secret probe's function is not found (node's OpenSSL,
    /// where `nss_keylog_int` is inlined into `ssl_log_secret`).
    #[serde(default)]
    pub instead_of: Option<String>,
}

/// Where a secret probe finds the client random.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RandomRef {
    /// `"argN"`: the argument points at it.
    Argument(ArgRef),
    /// `{ argument = "argN", offset_from = "SSL_get_client_random" }`: the argument points at
    /// a struct, and the random is the field that the named function of the same file (an
    /// accessor taking that struct as its first argument) reads: its offset is read from
    /// that function's code, never from a table of versions.
    Field(RandomField),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomField {
    pub argument: ArgRef,
    pub offset_from: String,
    /// `else = "client_hello"`: where the file has no such accessor (a stripped executable),
    /// the probe is attached all the same, and each secret takes the client random of the
    /// ClientHello its connection's socket sent (see [`ClientRandomSource::ClientHello`]).
    #[serde(default, rename = "else")]
    pub fallback: Option<RandomFallback>,
}

/// What a secret probe does when its client random's field is not found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RandomFallback {
    #[serde(rename = "client_hello")]
    ClientHello,
}

/// Where a planned secret probe's client random comes from, when not from its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRandomSource {
    /// A field of the struct its argument points at (offsets read from the accessor's code).
    Field(crate::symbols::locate::code::FieldPath),
    /// The ClientHello that the socket of the secret's connection sent: the secret's
    /// connection handle is tied to its socket when the handle moves data, and the socket's
    /// last ClientHello before the secret names the random (user space, from the sys_enter
    /// hook's `HelloRecord`s).
    ClientHello,
}

impl RandomRef {
    pub fn argument(&self) -> ArgRef {
        match self {
            RandomRef::Argument(arg) => *arg,
            RandomRef::Field(field) => field.argument,
        }
    }
}

/// A length: an argument register, or a constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum LengthOrConstant {
    Argument(ArgRef),
    Constant(u8),
}

/// The secret part of a [`Probe`] of [`Role::Secret`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretArgs {
    pub label: ArgRef,
    pub label_length: Option<ArgRef>,
    pub client_random: RandomRef,
    pub client_random_length: LengthOrConstant,
    pub secret: ArgRef,
    pub secret_length: ArgRef,
}

impl SecretArgs {
    /// The configuration `probectl_secret` reads; `field` is where the client random lies
    /// from its argument where [`RandomRef::Field`] says so (found by planning).
    pub fn bpf_spec(
        &self,
        abi: Abi,
        connection: Option<ArgRef>,
        source: Option<&ClientRandomSource>,
    ) -> SecretSpec {
        let field = match source {
            Some(ClientRandomSource::Field(field)) => Some(field),
            _ => None,
        };
        let from_hello = matches!(source, Some(ClientRandomSource::ClientHello));
        let mut random_pointer_offsets = [0; probectl_common::SECRET_RANDOM_MAX_POINTERS];
        let mut random_pointers = 0;
        if let Some(field) = field {
            for (slot, offset) in random_pointer_offsets.iter_mut().zip(&field.pointers) {
                *slot = *offset as i32;
                random_pointers += 1;
            }
        }
        let (random_length_arg, random_length) = match self.client_random_length {
            // Nothing to read: the record's random comes from the ClientHello.
            _ if from_hello => (ARG_NONE, 0),
            LengthOrConstant::Argument(arg) => (arg.0, 0),
            LengthOrConstant::Constant(length) => (ARG_NONE, length),
        };
        SecretSpec {
            abi: match abi {
                Abi::SystemV => probectl_common::abi::SYSV,
                Abi::Go => probectl_common::abi::GO,
            },
            connection_arg: connection.map_or(ARG_NONE, |arg| arg.0),
            label_arg: self.label.0,
            label_length_arg: self.label_length.map_or(ARG_NONE, |arg| arg.0),
            random_arg: self.client_random.argument().0,
            random_length_arg,
            random_length,
            secret_arg: self.secret.0,
            secret_length_arg: self.secret_length.0,
            random_pointers,
            random_from_hello: u8::from(from_hello),
            _padding: [0; 1],
            random_pointer_offsets,
            random_offset: field.map_or(0, |field| field.offset as i32),
        }
    }
}

impl From<SecretProbe> for Probe {
    fn from(secret: SecretProbe) -> Probe {
        Probe {
            symbol: secret.symbol,
            // Not read for secret probes: they move no plaintext.
            direction: Direction::Write,
            connection: secret.connection,
            buffer: secret.label,
            length: LengthRef::Return,
            returns: ReturnType::Int,
            optional: true,
            only_if: None,
            vector: None,
            tls_record: None,
            locate: secret.locate,
            instead_of: secret.instead_of,
            role: Role::Secret,
            abi: Abi::SystemV,
            secret: Some(SecretArgs {
                label: secret.label,
                label_length: secret.label_length,
                client_random: secret.client_random,
                client_random_length: secret
                    .client_random_length
                    .unwrap_or(LengthOrConstant::Constant(SECRET_RANDOM_MAX as u8)),
                secret: secret.secret,
                secret_length: secret.secret_length,
            }),
        }
    }
}

/// What a probe is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    /// Its calls move plaintext (entry and return programs).
    #[default]
    Data,
    /// Its entry ends the handle's connection (the end program only).
    End,
    /// Its entry hands a session secret to the library's key log (the secret program only,
    /// with `--keylog`).
    Secret,
}

/// One probed function.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    pub symbol: String,
    pub direction: Direction,
    /// Register holding the connection handle (`arg0`...), if any.
    #[serde(default)]
    pub connection: Option<ArgRef>,
    /// Register holding the plaintext buffer pointer.
    pub buffer: ArgRef,
    /// `"return"`, `"*argN"` (a `size_t*` filled on success) or `"argN"` (the input's length,
    /// captured at entry).
    pub length: LengthRef,
    /// C type of the return value: `"int"` (default) or `"ssize_t"`.
    #[serde(default)]
    pub returns: ReturnType,
    /// A library without this symbol is fine: the probe is skipped and reported.
    #[serde(default)]
    pub optional: bool,
    /// Capture a call only when this holds (e.g. NSPR: only descriptors of the SSL layer).
    #[serde(default)]
    pub only_if: Option<CallFilter>,
    /// `buffer` points at a list of buffers (iovec style), not at the bytes.
    #[serde(default)]
    pub vector: Option<BufferVector>,
    /// The function seals or opens one TLS record (see [`TlsRecord`]).
    #[serde(default)]
    pub tls_record: Option<TlsRecord>,
    /// How to find the function in a file that has no symbol for it (a stripped executable):
    /// see [`crate::symbols::locate`].
    #[serde(default)]
    pub locate: Option<crate::spec::LocateRule>,
    /// Probed only in files where the named probe's function is not found, and then it
    /// stands in for it (BoringSSL's `SSL_peek` where link-time optimisation inlined
    /// `SSL_read`, which is `SSL_peek` plus consuming the bytes, into its callers).
    #[serde(default)]
    pub instead_of: Option<String>,
    /// Data probe, or lifecycle function (from `[[group.end]]`).
    #[serde(skip)]
    pub role: Role,
    /// The group's calling convention (copied from the group when parsed).
    #[serde(skip)]
    pub abi: Abi,
    /// What a secret probe reads (from `[[group.secret]]`).
    #[serde(skip)]
    pub secret: Option<SecretArgs>,
}

impl From<EndProbe> for Probe {
    fn from(end: EndProbe) -> Probe {
        Probe {
            symbol: end.symbol,
            // Not read for lifecycle probes: they move no data.
            direction: Direction::Write,
            connection: Some(end.connection),
            buffer: end.connection,
            length: LengthRef::Return,
            returns: ReturnType::Int,
            optional: true,
            only_if: end.only_if,
            vector: None,
            tls_record: None,
            locate: end.locate,
            instead_of: None,
            role: Role::End,
            abi: Abi::SystemV,
            secret: None,
        }
    }
}

/// A list of (base pointer, length) entries, as `PR_Writev`/`writev` take: `count` is the
/// register with the number of entries; each entry is `entry_size` bytes, with the base
/// pointer at `base_offset` and a `length_size`-byte (4 or 8) length at `length_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferVector {
    pub count: ArgRef,
    pub entry_size: u8,
    #[serde(default)]
    pub base_offset: u8,
    pub length_offset: u8,
    pub length_size: u8,
}

/// A function of a TLS record layer: it encrypts or decrypts one record with an AEAD (aws-lc's
/// `EVP_AEAD_CTX_seal`/`_open` under rustls), authenticating the record header it is given as
/// additional data: `ad` holds its address and `ad_length` its length. The header tells the
/// record's type and TLS version: only application data is captured, without a TLS 1.3
/// record's inner content type and padding. The connection handle of such a function is the
/// key context of one direction: user space joins the contexts seen on one fd into one
/// connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsRecord {
    pub ad: ArgRef,
    pub ad_length: ArgRef,
}

/// A condition on a call's arguments, checked in the kernel when the call is entered: start
/// from `argument`, load the 8-byte pointer at each offset of `pointers` in turn, then read the
/// 4-byte value at `offset`; the call is captured when it equals `equals`. Memory that cannot be
/// read fails the condition.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallFilter {
    pub argument: ArgRef,
    #[serde(default)]
    pub pointers: Vec<i32>,
    #[serde(default)]
    pub offset: i32,
    pub equals: u32,
}

/// Which way plaintext moves through a probed function (owned by the pipeline crate, whose
/// events carry it).
pub use probectl_pipeline::Direction;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum ReturnType {
    #[default]
    #[serde(rename = "int")]
    Int,
    #[serde(rename = "ssize_t")]
    Ssize,
}

/// An argument register, written `argN` (0-based) in the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgRef(pub u8);

impl<'de> Deserialize<'de> for ArgRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_arg(&text).map(ArgRef).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "expected an argument register \"arg0\" to \"arg{}\", found \"{text}\"",
                MAX_ARGS - 1
            ))
        })
    }
}

fn parse_arg(text: &str) -> Option<u8> {
    let index: u8 = text.strip_prefix("arg")?.parse().ok()?;
    (index < MAX_ARGS).then_some(index)
}

/// Where a call's length comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthRef {
    /// The positive return value.
    Return,
    /// The `size_t` an out-pointer argument points at, when the call returns a positive value.
    OutPointer(u8),
    /// An argument's value: the length of the call's input, which is captured when the call
    /// is entered (for functions that overwrite their input, such as in-place encryption).
    Argument(u8),
}

impl<'de> Deserialize<'de> for LengthRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == "return" {
            return Ok(LengthRef::Return);
        }
        if let Some(arg) = parse_arg(&text) {
            return Ok(LengthRef::Argument(arg));
        }
        text.strip_prefix('*')
            .and_then(parse_arg)
            .map(LengthRef::OutPointer)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "expected \"return\", an out-pointer \"*argN\" or an argument \"argN\", found \"{text}\""
                ))
            })
    }
}

impl Probe {
    /// Whether the probe runs only when its function is entered: a lifecycle function, or a
    /// call whose input is captured at entry (`length = "argN"`). No return is probed.
    pub fn entry_only(&self) -> bool {
        self.role != Role::Data || matches!(self.length, LengthRef::Argument(_))
    }

    /// The configuration the BPF programs read for this probe.
    pub fn bpf_spec(&self) -> ProbeSpec {
        let (source, length_arg) = match self.length {
            LengthRef::Return => (length_source::RETURN, ARG_NONE),
            LengthRef::OutPointer(arg) => (length_source::OUT_POINTER, arg),
            LengthRef::Argument(arg) => (length_source::ENTRY_ARGUMENT, arg),
        };
        let mut spec = ProbeSpec {
            connection_arg: self.connection.map_or(ARG_NONE, |arg| arg.0),
            buffer_arg: self.buffer.0,
            length_source: source,
            length_arg,
            direction: match self.direction {
                Direction::Read => direction::READ,
                Direction::Write => direction::WRITE,
            },
            return_width: match (self.abi, self.returns) {
                // Go's `int` is 64 bits.
                (Abi::Go, _) | (_, ReturnType::Ssize) => return_width::INT64,
                (Abi::SystemV, ReturnType::Int) => return_width::INT32,
            },
            filter_arg: ARG_NONE,
            filter_pointers: 0,
            filter_pointer_offsets: [0; FILTER_MAX_POINTERS],
            filter_value_offset: 0,
            filter_equals: 0,
            vector_count_arg: ARG_NONE,
            vector_entry_size: 0,
            vector_base_offset: 0,
            vector_length_offset: 0,
            vector_length_size: 0,
            abi: match self.abi {
                Abi::SystemV => abi::SYSV,
                Abi::Go => abi::GO,
            },
            record_ad_arg: self.tls_record.map_or(ARG_NONE, |record| record.ad.0),
            record_ad_length_arg: self
                .tls_record
                .map_or(ARG_NONE, |record| record.ad_length.0),
            entry_stack_offset: 0,
            exit_stack_offset: 0,
        };
        if let Some(vector) = &self.vector {
            spec.vector_count_arg = vector.count.0;
            spec.vector_entry_size = vector.entry_size;
            spec.vector_base_offset = vector.base_offset;
            spec.vector_length_offset = vector.length_offset;
            spec.vector_length_size = vector.length_size;
        }
        if let Some(filter) = &self.only_if {
            spec.filter_arg = filter.argument.0;
            // validate() keeps pointers within FILTER_MAX_POINTERS.
            spec.filter_pointers = filter.pointers.len().min(FILTER_MAX_POINTERS) as u8;
            for (slot, offset) in spec.filter_pointer_offsets.iter_mut().zip(&filter.pointers) {
                *slot = *offset;
            }
            spec.filter_value_offset = filter.offset;
            spec.filter_equals = filter.equals;
        }
        spec
    }
}

impl SpecFile {
    /// Parses and validates spec text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<SpecFile, SpecError> {
        let specs: SpecFile = toml::from_str(text).map_err(|error| {
            let (line, column) = error
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((1, 1));
            SpecError::Syntax {
                file: file.to_string(),
                line,
                column,
                message: error.message().trim_end().to_string(),
            }
        })?;
        specs.validate(file)?;
        let mut specs = specs;
        for group in &mut specs.groups {
            let ends = std::mem::take(&mut group.ends);
            group.probes.extend(ends.into_iter().map(Probe::from));
            let secrets = std::mem::take(&mut group.secrets);
            group.probes.extend(secrets.into_iter().map(Probe::from));
            for probe in &mut group.probes {
                probe.abi = group.abi;
            }
        }
        Ok(specs)
    }

    /// Reads `path`, or the built-in specs when `None`.
    pub fn load(path: Option<&Path>) -> Result<SpecFile, SpecError> {
        match path {
            None => SpecFile::parse(DEFAULT_SPECS, DEFAULT_SPECS_NAME),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                SpecFile::parse(&text, &path.display().to_string())
            }
        }
    }

    fn validate(&self, file: &str) -> Result<(), SpecError> {
        let invalid = |message: String| SpecError::Invalid {
            file: file.to_string(),
            message,
        };
        if self.groups.is_empty() {
            return Err(invalid("no [[group]] defined".into()));
        }
        for (index, group) in self.groups.iter().enumerate() {
            if group.name.is_empty()
                || !group
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(format!(
                    "group name \"{}\" must be non-empty and use only letters, digits, '-' and '_'",
                    group.name
                )));
            }
            if group.name == "all" {
                return Err(invalid(
                    "group name \"all\" is reserved (it means every group)".into(),
                ));
            }
            if self.groups[..index]
                .iter()
                .any(|other| other.name == group.name)
            {
                return Err(invalid(format!(
                    "group \"{}\" is defined twice",
                    group.name
                )));
            }
            if group.libraries.is_empty() && group.paths.is_empty() && !group.executables {
                return Err(invalid(format!(
                    "group \"{}\" names no files to probe: give libraries, paths or executables = true",
                    group.name
                )));
            }
            if let Some(path) = group.paths.iter().find(|path| !path.is_absolute()) {
                return Err(invalid(format!(
                    "group \"{}\": path \"{}\" must be absolute",
                    group.name,
                    path.display()
                )));
            }
            if group.probes.is_empty() {
                return Err(invalid(format!(
                    "group \"{}\" has no [[group.probe]]",
                    group.name
                )));
            }
            if !group.probes.iter().any(|probe| !probe.optional) {
                return Err(invalid(format!(
                    "group \"{}\" has only optional probes: at least one must be required, it is how a file is recognised",
                    group.name
                )));
            }
            for end in &group.ends {
                if end.symbol.is_empty() {
                    return Err(invalid(format!(
                        "group \"{}\": an [[group.end]] has an empty symbol",
                        group.name
                    )));
                }
                if let Some(filter) = end
                    .only_if
                    .as_ref()
                    .filter(|filter| filter.pointers.len() > FILTER_MAX_POINTERS)
                {
                    return Err(invalid(format!(
                        "group \"{}\", end {}: only_if follows at most {FILTER_MAX_POINTERS} pointers (found {})",
                        group.name, end.symbol, filter.pointers.len()
                    )));
                }
            }
            let register_limit = match group.abi {
                Abi::SystemV => SYSV_ARGS,
                Abi::Go => GO_ARGS,
            };
            for secret in &group.secrets {
                let mut used = vec![
                    secret.label.0,
                    secret.client_random.argument().0,
                    secret.secret.0,
                    secret.secret_length.0,
                ];
                used.extend(secret.connection.map(|arg| arg.0));
                used.extend(secret.label_length.map(|arg| arg.0));
                match secret.client_random_length {
                    Some(LengthOrConstant::Argument(arg)) => used.push(arg.0),
                    Some(LengthOrConstant::Constant(length))
                        if length == 0 || usize::from(length) > SECRET_RANDOM_MAX =>
                    {
                        return Err(invalid(format!(
                            "group \"{}\", secret {}: client_random_length must be 1 to {SECRET_RANDOM_MAX}",
                            group.name, secret.symbol
                        )));
                    }
                    _ => {}
                }
                if let Some(arg) = used.iter().find(|&&arg| arg >= register_limit) {
                    return Err(invalid(format!(
                        "group \"{}\", secret {}: arg{arg} is not an argument register (arg0 to arg{}); a secret probe reads registers only",
                        group.name,
                        secret.symbol,
                        register_limit - 1
                    )));
                }
                if let Some(other) = &secret.instead_of {
                    if !group.secrets.iter().any(|candidate| {
                        &candidate.symbol == other && candidate.instead_of.is_none()
                    }) {
                        return Err(invalid(format!(
                            "group \"{}\", secret {}: instead_of = \"{other}\" names no other secret of the group",
                            group.name, secret.symbol
                        )));
                    }
                }
                if let Some(rule) = &secret.locate {
                    rule.check().map_err(|message| {
                        invalid(format!(
                            "group \"{}\", secret {}: {message}",
                            group.name, secret.symbol
                        ))
                    })?;
                }
            }
            // A call filter reads registers only (System V's first six; Go's nine).
            let filters = group
                .probes
                .iter()
                .filter_map(|probe| probe.only_if.as_ref())
                .chain(group.ends.iter().filter_map(|end| end.only_if.as_ref()));
            if let Some(filter) = filters
                .into_iter()
                .find(|filter| filter.argument.0 >= register_limit)
            {
                return Err(invalid(format!(
                    "group \"{}\": only_if starts from arg{}, which is not an argument register (arg0 to arg{})",
                    group.name,
                    filter.argument.0,
                    register_limit - 1
                )));
            }
            if group.abi == Abi::Go {
                let arguments = group.probes.iter().flat_map(|probe| {
                    let mut used = vec![probe.buffer.0];
                    used.extend(probe.connection.map(|arg| arg.0));
                    used.extend(probe.vector.map(|vector| vector.count.0));
                    used
                });
                let ends = group.ends.iter().map(|end| end.connection.0);
                if let Some(arg) = arguments.chain(ends).find(|&arg| arg >= GO_ARGS) {
                    return Err(invalid(format!(
                        "group \"{}\": arg{arg} is no Go argument register (arg0 to arg{})",
                        group.name,
                        GO_ARGS - 1
                    )));
                }
                if let Some(probe) = group.probes.iter().find(|probe| {
                    probe.tls_record.is_some() || matches!(probe.length, LengthRef::Argument(_))
                }) {
                    return Err(invalid(format!(
                        "group \"{}\", probe {}: tls_record and length = \"argN\" are for abi = \"sysv\"",
                        group.name, probe.symbol
                    )));
                }
            }
            if let Some(probe) = group.probes.iter().find(|probe| {
                matches!(probe.length, LengthRef::Argument(_))
                    && (probe.direction != Direction::Write || probe.vector.is_some())
            }) {
                return Err(invalid(format!(
                    "group \"{}\", probe {}: length = \"argN\" captures the input at entry: it is for direction = \"write\" and one buffer",
                    group.name, probe.symbol
                )));
            }
            if let Some(probe) = group
                .probes
                .iter()
                .find(|probe| probe.tls_record.is_some() && probe.connection.is_none())
            {
                return Err(invalid(format!(
                    "group \"{}\", probe {}: a tls_record probe needs its key context as connection",
                    group.name, probe.symbol
                )));
            }
            if group.abi == Abi::Go {
                if let Some(probe) = group
                    .probes
                    .iter()
                    .find(|probe| matches!(probe.length, LengthRef::OutPointer(_)))
                {
                    return Err(invalid(format!(
                        "group \"{}\", probe {}: with abi = \"go\" the length is the first result (length = \"return\")",
                        group.name, probe.symbol
                    )));
                }
            }
            for probe in &group.probes {
                if let Some(other) = &probe.instead_of {
                    let stands_for = group.probes.iter().find(|candidate| {
                        &candidate.symbol == other && candidate.instead_of.is_none()
                    });
                    match stands_for {
                        Some(target) if target.direction == probe.direction => {}
                        Some(_) => {
                            return Err(invalid(format!(
                                "group \"{}\", probe {}: instead_of = \"{other}\" names a probe of the other direction",
                                group.name, probe.symbol
                            )))
                        }
                        None => {
                            return Err(invalid(format!(
                                "group \"{}\", probe {}: instead_of = \"{other}\" names no other probe of the group",
                                group.name, probe.symbol
                            )))
                        }
                    }
                }
                if let Some(rule) = &probe.locate {
                    rule.check().map_err(|message| {
                        invalid(format!(
                            "group \"{}\", probe {}: {message}",
                            group.name, probe.symbol
                        ))
                    })?;
                }
                if probe.symbol.is_empty() {
                    return Err(invalid(format!(
                        "group \"{}\": a probe has an empty symbol",
                        group.name
                    )));
                }
                if let Some(filter) = &probe.only_if {
                    if filter.pointers.len() > FILTER_MAX_POINTERS {
                        return Err(invalid(format!(
                            "group \"{}\", probe {}: only_if follows at most {FILTER_MAX_POINTERS} pointers",
                            group.name, probe.symbol
                        )));
                    }
                }
                if let Some(vector) = &probe.vector {
                    let fits = |offset: u8, size: u8| {
                        u16::from(offset) + u16::from(size) <= u16::from(vector.entry_size)
                    };
                    if !matches!(vector.length_size, 4 | 8)
                        || !fits(vector.base_offset, 8)
                        || !fits(vector.length_offset, vector.length_size)
                    {
                        return Err(invalid(format!(
                            "group \"{}\", probe {}: vector entries must hold an 8-byte base pointer and a 4- or 8-byte length within entry_size",
                            group.name, probe.symbol
                        )));
                    }
                }
                if let LengthRef::OutPointer(arg) = probe.length {
                    if arg == probe.buffer.0 {
                        return Err(invalid(format!(
                            "group \"{}\", probe {}: the length pointer and the buffer are the same argument",
                            group.name, probe.symbol
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|group| group.name == name)
    }

    pub fn group_names(&self) -> Vec<&str> {
        self.groups
            .iter()
            .map(|group| group.name.as_str())
            .collect()
    }
}

impl Group {
    /// Whether a file name matches one of the group's library patterns.
    pub fn matches_library_name(&self, file_name: &str) -> bool {
        self.libraries
            .iter()
            .any(|pattern| glob_match(pattern, file_name))
    }

    /// How the group finds its files, in words ("libraries named ...", "files ..."), and the
    /// required symbols (joined with "and") when executables that define them count too.
    pub fn describe_files(&self) -> (Vec<String>, Option<String>) {
        let mut parts = Vec::new();
        if !self.libraries.is_empty() {
            parts.push(format!("libraries named {}", self.libraries.join(" or ")));
        }
        if !self.paths.is_empty() {
            let paths: Vec<String> = self
                .paths
                .iter()
                .map(|path| path.display().to_string())
                .collect();
            parts.push(format!("files {}", paths.join(", ")));
        }
        let executables = self
            .executables
            .then(|| self.required_symbols().collect::<Vec<_>>().join(" and "));
        (parts, executables)
    }

    /// The symbols a file must define to count as this group's library.
    pub fn required_symbols(&self) -> impl Iterator<Item = &str> {
        self.probes
            .iter()
            .filter(|probe| !probe.optional && probe.instead_of.is_none())
            .map(|probe| probe.symbol.as_str())
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |index| index + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Shell-style matching with `*` (any run) and `?` (one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (pattern, text): (Vec<char>, Vec<char>) =
        (pattern.chars().collect(), text.chars().collect());
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            backtrack = Some((p, t));
            p += 1;
        } else if let Some((star, matched)) = backtrack {
            p = star + 1;
            t = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// How a function without a symbol is recognised: the error reports it makes from one source
/// file (`[[group.probe]] locate = { ... }` in a spec).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocateRule {
    /// The tail of the `__FILE__` path the library's error reports pass, e.g. `ssl/ssl_lib.cc`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// The library code the reports pass (`ERR_LIB_SSL` is 16, `ERR_LIB_CIPHER` 30).
    #[serde(default)]
    pub library: u64,
    /// Reason codes the function reports from `source`: all of them.
    #[serde(default)]
    pub errors: Vec<u64>,
    /// The other kind of rule, by cross-reference from a string: the one instruction that
    /// loads the address of this NUL-terminated string (e.g. OpenSSL's "CLIENT_RANDOM"
    /// label)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    /// ... then, from it, these branches in turn: `"call"`, the first direct call after the
    /// reference on its straight line (in the function holding the reference); `"jmp"`, the
    /// one direct jump out of the function reached so far (a tail call). The function reached
    /// last is the one probed. Empty: the function holding the reference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub follow: Vec<Follow>,
    /// Those and no other (from `source`).
    #[serde(default)]
    pub exact: bool,
    /// A function it calls directly that reports these (same source and library).
    #[serde(default)]
    pub calls: Option<CalleeRule>,
    /// It holds another function matching the rest of the rule inlined: of the functions that
    /// match, the one whose direct calls include every call of another match, and more.
    /// Chromium's SSL_read has its SSL_peek inlined and then consumes what was peeked, while
    /// SSL_peek stays a function of its own reporting the same; with a single match (SSL_read
    /// inlined into its callers, as in Bun) nothing is found, and a stand-in can take over.
    #[serde(default, skip_serializing_if = "is_false")]
    pub inlines_another: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// A branch a string cross-reference rule follows (see [`LocateRule::follow`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Follow {
    Call,
    Jmp,
}

impl LocateRule {
    /// Whether the rule is whole: error reports (a source and reasons), or a string.
    pub fn check(&self) -> Result<(), String> {
        match &self.string {
            Some(string) => {
                if string.is_empty() || string.contains('\0') {
                    return Err("locate: string must be non-empty, without NUL".into());
                }
                if !self.source.is_empty() || !self.errors.is_empty() || self.calls.is_some() {
                    return Err(
                        "locate: a rule is either by string (string, follow) or by error reports (source, library, errors), not both"
                            .into(),
                    );
                }
                Ok(())
            }
            None if self.source.is_empty() || self.errors.is_empty() => {
                Err("locate needs a source and at least one error reason, or a string".into())
            }
            None if !self.follow.is_empty() => Err("locate: follow goes with string".into()),
            None => Ok(()),
        }
    }
}

/// The callee part of a [`LocateRule`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CalleeRule {
    pub errors: Vec<u64>,
    #[serde(default)]
    pub exact: bool,
}

/// A function's address pinned by the user for one build (`[[group.pin]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// The executable's GNU build id in hex (`file` or `readelf -n` shows it).
    pub build_id: String,
    pub symbol: String,
    /// The function's virtual address (as `objdump -d` shows it).
    pub address: u64,
    /// Its size in bytes; 0 (the default) keeps the classic probe placement.
    #[serde(default)]
    pub size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_specs_parse() {
        let specs = SpecFile::load(None).expect("built-in specs");
        let openssl = specs.group("openssl").expect("openssl group");
        let symbols: Vec<_> = openssl
            .probes
            .iter()
            .map(|p| (p.symbol.as_str(), p.role))
            .collect();
        assert_eq!(
            symbols,
            [
                ("SSL_write", Role::Data),
                ("SSL_read", Role::Data),
                ("SSL_write_ex", Role::Data),
                ("SSL_read_ex", Role::Data),
                ("SSL_free", Role::End),
                ("SSL_clear", Role::End),
                ("nss_keylog_int", Role::Secret),
                ("ssl_log_secret", Role::Secret)
            ]
        );
        assert!(openssl.probes[4].optional && openssl.probes[4].connection == Some(ArgRef(0)));
        let ex = &openssl.probes[3];
        assert_eq!(ex.length, LengthRef::OutPointer(3));
        assert_eq!(ex.direction, Direction::Read);
        insta::assert_debug_snapshot!(
            "openssl_bpf_specs",
            openssl
                .probes
                .iter()
                // A secret probe's configuration is its SecretSpec (tested below).
                .filter(|p| p.role != Role::Secret)
                .map(|p| (p.symbol.as_str(), p.bpf_spec()))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn built_in_groups_and_the_nss_call_filter() {
        let specs = SpecFile::load(None).expect("built-in specs");
        assert_eq!(
            specs.group_names(),
            ["openssl", "boringssl", "gnutls", "nss", "go", "rustls"]
        );
        let nss = specs.group("nss").expect("nss group");
        for probe in &nss.probes {
            let spec = probe.bpf_spec();
            // fd->methods->file_type == PR_DESC_LAYERED
            assert_eq!(
                (
                    spec.filter_arg,
                    spec.filter_pointers,
                    spec.filter_pointer_offsets,
                    spec.filter_value_offset,
                    spec.filter_equals
                ),
                (0, 1, [0, 0], 0, 4),
                "{}",
                probe.symbol
            );
        }
        // No other group filters its calls.
        for group in specs.groups.iter().filter(|group| group.name != "nss") {
            assert!(group
                .probes
                .iter()
                .all(|probe| probe.bpf_spec().filter_arg == ARG_NONE));
        }
        let gnutls = specs.group("gnutls").expect("gnutls group");
        assert!(gnutls
            .probes
            .iter()
            .filter(|probe| probe.role == Role::Data)
            .all(|probe| probe.returns == ReturnType::Ssize));
        assert!(gnutls
            .probes
            .iter()
            .any(|probe| probe.symbol == "gnutls_deinit" && probe.role == Role::End));
    }

    #[test]
    fn the_go_group_uses_go_s_register_abi() {
        let specs = SpecFile::load(None).expect("built-in specs");
        let go = specs.group("go").expect("go group");
        assert_eq!(go.abi, Abi::Go);
        assert!(go.executables);
        for probe in &go.probes {
            let spec = probe.bpf_spec();
            assert_eq!(probe.abi, Abi::Go, "{}", probe.symbol);
            if probe.role == Role::Secret {
                // writeKeyLog: label in RBX/RCX, clientRandom in RDI/RSI, secret in R9/R10.
                let secret = probe.secret.as_ref().expect("secret args");
                let spec = secret.bpf_spec(probe.abi, probe.connection, None);
                assert_eq!(spec.abi, abi::GO);
                assert_eq!(
                    (
                        spec.connection_arg,
                        spec.label_arg,
                        spec.label_length_arg,
                        spec.random_arg,
                        spec.random_length_arg,
                        spec.secret_arg,
                        spec.secret_length_arg
                    ),
                    (ARG_NONE, 1, 2, 3, 4, 6, 7)
                );
                continue;
            }
            assert_eq!(spec.abi, abi::GO, "{}", probe.symbol);
            // The *Conn receiver in RAX (arg0); b's pointer in RBX (arg1); n is a 64-bit int.
            assert_eq!(spec.connection_arg, 0);
            if probe.role == Role::Data {
                assert_eq!(spec.buffer_arg, 1);
                assert_eq!(spec.return_width, return_width::INT64);
            }
        }
        // Every other group is System V.
        for group in specs.groups.iter().filter(|group| group.name != "go") {
            assert!(group
                .probes
                .iter()
                .all(|probe| probe.abi == Abi::SystemV && probe.bpf_spec().abi == abi::SYSV));
        }
        // Go's ABI names nine registers.
        let text = format!(
            "[[group]]\nname = \"x\"\nexecutables = true\nabi = \"go\"\n{}",
            GOOD_PROBE.replace("arg1", "arg8")
        );
        let parsed = SpecFile::parse(&text, "go.toml").expect("arg8 is a Go register");
        assert_eq!(parsed.groups[0].probes[0].bpf_spec().buffer_arg, 8);
    }

    #[test]
    fn the_rustls_group_reads_records_and_the_stack() {
        let specs = SpecFile::load(None).expect("built-in specs");
        let rustls = specs.group("rustls").expect("rustls group");
        let spec = |symbol: &str| {
            rustls
                .probes
                .iter()
                .find(|probe| probe.symbol == symbol)
                .expect(symbol)
        };
        let seal = spec("EVP_AEAD_CTX_seal");
        assert!(seal.entry_only());
        let bpf = seal.bpf_spec();
        assert_eq!(
            (bpf.buffer_arg, bpf.length_source, bpf.length_arg),
            (6, length_source::ENTRY_ARGUMENT, 7)
        );
        assert_eq!((bpf.record_ad_arg, bpf.record_ad_length_arg), (8, 9));
        let scatter = spec("EVP_AEAD_CTX_seal_scatter").bpf_spec();
        assert_eq!(
            (scatter.record_ad_arg, scatter.record_ad_length_arg),
            (11, 12)
        );
        let open = spec("EVP_AEAD_CTX_open");
        assert!(!open.entry_only());
        assert_eq!(open.bpf_spec().length_source, length_source::OUT_POINTER);
        assert!(spec("EVP_AEAD_CTX_init_with_direction").entry_only());
        // Every other group's probes read no record headers.
        for group in specs.groups.iter().filter(|group| group.name != "rustls") {
            assert!(group
                .probes
                .iter()
                .all(|probe| probe.bpf_spec().record_ad_arg == ARG_NONE));
        }
    }

    #[test]
    fn secret_probes_read_their_arguments_into_the_secret_spec() {
        let specs = SpecFile::load(None).expect("built-in specs");
        let openssl = specs.group("openssl").expect("openssl group");
        let secret = |symbol: &str| {
            openssl
                .probes
                .iter()
                .find(|probe| probe.symbol == symbol)
                .expect(symbol)
        };
        let keylog = secret("nss_keylog_int");
        assert!(keylog.optional && keylog.entry_only());
        let spec = keylog.secret.as_ref().expect("secret args").bpf_spec(
            keylog.abi,
            keylog.connection,
            None,
        );
        assert_eq!(
            (
                spec.connection_arg,
                spec.label_arg,
                spec.label_length_arg,
                spec.random_arg,
                spec.random_length_arg,
                spec.secret_arg,
                spec.secret_length_arg
            ),
            (1, 0, ARG_NONE, 2, 3, 4, 5)
        );
        let rule = keylog.locate.as_ref().expect("rule");
        assert_eq!(rule.string.as_deref(), Some("CLIENT_RANDOM"));
        assert_eq!(rule.follow, [Follow::Call, Follow::Jmp]);
        let stand_in = secret("ssl_log_secret");
        assert_eq!(stand_in.instead_of.as_deref(), Some("nss_keylog_int"));
        let args = stand_in.secret.as_ref().expect("secret args");
        assert_eq!(
            args.client_random,
            RandomRef::Field(RandomField {
                argument: ArgRef(0),
                offset_from: "SSL_get_client_random".into(),
                fallback: None,
            })
        );
        let field = ClientRandomSource::Field(crate::symbols::locate::code::FieldPath {
            pointers: vec![0x30],
            offset: 0x160,
        });
        let spec = args.bpf_spec(stand_in.abi, stand_in.connection, Some(&field));
        assert_eq!(spec.random_from_hello, 0);
        let hello = args.bpf_spec(
            stand_in.abi,
            stand_in.connection,
            Some(&ClientRandomSource::ClientHello),
        );
        assert_eq!(
            (
                hello.random_from_hello,
                hello.random_length,
                hello.random_length_arg
            ),
            (1, 0, ARG_NONE)
        );
        assert_eq!(
            (spec.random_pointers, spec.random_pointer_offsets),
            (1, [0x30, 0])
        );
        assert_eq!(
            (
                spec.random_arg,
                spec.random_offset,
                spec.random_length_arg,
                spec.random_length
            ),
            (0, 0x160, ARG_NONE, 32)
        );
        // Rules are by error reports or by string, not both; secret arguments are registers.
        let base = "[[group]]\nname = \"x\"\nlibraries = [\"a\"]\n[[group.probe]]\nsymbol = \"f\"\ndirection = \"write\"\nbuffer = \"arg1\"\nlength = \"return\"\n[[group.secret]]\nsymbol = \"k\"\nlabel = \"arg0\"\nclient_random = \"arg2\"\nsecret = \"arg4\"\nsecret_length = \"arg5\"\n";
        SpecFile::parse(base, "ok.toml").expect("a plain secret probe");
        for (bad, wanted) in [
            (
                "locate = { string = \"L\", source = \"a.c\", errors = [1] }\n",
                "not both",
            ),
            ("client_random_length = 33\n", "1 to 32"),
            ("connection = \"arg7\"\n", "registers only"),
            ("instead_of = \"nothing\"\n", "no other secret"),
        ] {
            let error = error_of(&format!("{base}{bad}"));
            assert!(error.contains(wanted), "{bad}: {error}");
        }
    }

    #[test]
    fn glob() {
        assert!(glob_match("libssl.so*", "libssl.so.3"));
        assert!(glob_match("libssl.so*", "libssl.so"));
        assert!(!glob_match("libssl.so*", "libssl3.so"));
        assert!(glob_match("lib?ssl*.so", "libXssl-1.so"));
        assert!(!glob_match("libssl.so", "libssl.so.3"));
    }

    fn error_of(text: &str) -> String {
        SpecFile::parse(text, "probes.toml")
            .expect_err("must be rejected")
            .to_string()
    }

    const GOOD_PROBE: &str = "[[group.probe]]\nsymbol = \"f\"\ndirection = \"write\"\nbuffer = \"arg1\"\nlength = \"return\"\n";

    #[test]
    fn invalid_specs_are_reported_with_position() {
        let cases = [
            ("syntax", "[[group]\nname = \"x\"\n".to_string()),
            ("unknown_field", format!("[[group]]\nname = \"x\"\nlibraries = [\"a\"]\n{GOOD_PROBE}symbl = \"g\"\n")),
            ("bad_register", format!("[[group]]\nname = \"x\"\nlibraries = [\"a\"]\n{}", GOOD_PROBE.replace("arg1", "rdi"))),
            ("bad_length", format!("[[group]]\nname = \"x\"\nlibraries = [\"a\"]\n{}", GOOD_PROBE.replace("\"return\"", "\"arg99\""))),
            ("bad_direction", format!("[[group]]\nname = \"x\"\nlibraries = [\"a\"]\n{}", GOOD_PROBE.replace("write", "both"))),
            ("missing_symbol", "[[group]]\nname = \"x\"\nlibraries = [\"a\"]\n[[group.probe]]\ndirection = \"read\"\nbuffer = \"arg1\"\nlength = \"return\"\n".to_string()),
            ("wrong_type", "[[group]]\nname = 7\n".to_string()),
            ("no_groups", "".to_string()),
            ("no_files", format!("[[group]]\nname = \"x\"\n{GOOD_PROBE}")),
            ("duplicate_group", format!("[[group]]\nname = \"x\"\nlibraries = [\"a\"]\n{GOOD_PROBE}[[group]]\nname = \"x\"\nlibraries = [\"a\"]\n{GOOD_PROBE}")),
            ("reserved_name", format!("[[group]]\nname = \"all\"\nlibraries = [\"a\"]\n{GOOD_PROBE}")),
            ("only_optional", format!("[[group]]\nname = \"x\"\nlibraries = [\"a\"]\n{GOOD_PROBE}optional = true\n")),
            ("relative_path", format!("[[group]]\nname = \"x\"\npaths = [\"lib/a.so\"]\n{GOOD_PROBE}")),
            ("filter_too_deep", format!("[[group]]\nname = \"x\"\nlibraries = [\"a\"]\n{GOOD_PROBE}only_if = {{ argument = \"arg0\", pointers = [0, 8, 16], equals = 1 }}\n")),
            ("vector_bad_length_size", format!("[[group]]\nname = \"x\"\nlibraries = [\"a\"]\n{GOOD_PROBE}vector = {{ count = \"arg2\", entry_size = 16, length_offset = 8, length_size = 2 }}\n")),
            ("vector_entry_too_small", format!("[[group]]\nname = \"x\"\nlibraries = [\"a\"]\n{GOOD_PROBE}vector = {{ count = \"arg2\", entry_size = 12, length_offset = 8, length_size = 8 }}\n")),
            ("filter_bad_field", format!("[[group]]\nname = \"x\"\nlibraries = [\"a\"]\n{GOOD_PROBE}only_if = {{ argument = \"arg0\", value = 1 }}\n")),
            ("filter_on_the_stack", format!("[[group]]\nname = \"x\"\nlibraries = [\"a\"]\n{GOOD_PROBE}only_if = {{ argument = \"arg6\", equals = 1 }}\n")),
            ("go_beyond_arg8", format!("[[group]]\nname = \"x\"\nexecutables = true\nabi = \"go\"\n{}", GOOD_PROBE.replace("arg1", "arg9"))),
            ("entry_length_on_a_read", format!("[[group]]\nname = \"x\"\nlibraries = [\"a\"]\n{}", GOOD_PROBE.replace("\"return\"", "\"arg7\"").replace("write", "read"))),
            ("tls_record_without_connection", format!("[[group]]\nname = \"x\"\nlibraries = [\"a\"]\n{GOOD_PROBE}tls_record = {{ ad = \"arg8\", ad_length = \"arg9\" }}\n")),
            ("go_out_pointer_length", format!("[[group]]\nname = \"x\"\nexecutables = true\nabi = \"go\"\n{}", GOOD_PROBE.replace("\"return\"", "\"*arg3\""))),
            ("unknown_abi", format!("[[group]]\nname = \"x\"\nexecutables = true\nabi = \"rust\"\n{GOOD_PROBE}")),
        ];
        let rendered: Vec<String> = cases
            .iter()
            .map(|(name, text)| format!("{name}: {}", error_of(text)))
            .collect();
        insta::assert_snapshot!("invalid_specs", rendered.join("\n"));
    }

    #[test]
    fn line_and_column_point_at_the_fault() {
        let text =
            format!("[[group]]\nname = \"x\"\nlibraries = [\"a\"]\n{GOOD_PROBE}symbl = \"g\"\n");
        match SpecFile::parse(&text, "f.toml") {
            Err(SpecError::Syntax { line, column, .. }) => assert_eq!((line, column), (9, 1)),
            other => panic!("unexpected {other:?}"),
        }
    }
}
