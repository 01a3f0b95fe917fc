//! Output formats: human text (escaped or hexdump) and lossless JSON lines; files are created
//! 0600 because captured plaintext is sensitive.

pub mod packets;
pub mod pcapng;
pub mod terminal;
pub mod writer;

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use probectl_encode as encode;

use crate::Direction;

/// What one attach point is, for output: looked up by the chunk's attach id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttachInfo {
    pub plugin: String,
    pub library: PathBuf,
    pub function: String,
    pub direction: Direction,
}

/// Where an event belongs: its connection, as far as it is known.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectionView<'a> {
    /// Stable for the connection's life.
    pub id: u64,
    /// The library's connection handle (e.g. `SSL*`).
    pub handle: u64,
    pub fd: Option<i32>,
    /// `tcp`, `udp`, `unix`, `socket` or `file`.
    pub transport: Option<&'a str>,
    pub local: Option<&'a str>,
    pub remote: Option<&'a str>,
    /// Position of the event's first byte in the connection's stream, in its direction.
    pub offset: u64,
}

/// One TLS call (or, after a loss inside it, one run of it), ready to print.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// Wall-clock time of the call's return, ns since the Unix epoch.
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: &'a str,
    pub attach: &'a AttachInfo,
    pub conn: ConnectionView<'a>,
    /// Bytes of the stream this event accounts for: what the call really moved.
    pub len: u64,
    /// The captured bytes: a prefix of those `len` bytes.
    pub data: &'a [u8],
    /// Bytes not captured (`len - data.len()`).
    pub truncated: u64,
    /// Who the process is (cgroup, container), when it is known.
    pub process: Option<&'a std::sync::Arc<crate::capture::identity::Identity>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Header line, then the data with non-printable bytes escaped.
    Text,
    /// Header line, then a hexdump.
    Hex,
    /// One JSON object per line.
    Json,
    /// Synthesized TCP conversations for Wireshark (`crate::output::pcapng`).
    Pcapng,
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot create output file {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "output file {path} exists: probectl does not overwrite a file unless told to (--force), \
         or give another name"
    )]
    Exists { path: PathBuf },
    #[error(
        "output file {path} is a symbolic link: probectl never follows one (name the file itself)"
    )]
    Symlink { path: PathBuf },
    #[error("output file {path} is read-only (mode {mode:04o}): probectl does not write it, even with --force")]
    ReadOnly { path: PathBuf, mode: u32 },
    #[error(
        "output file {path} is on {filesystem}, a kernel interface, not a place for captured data"
    )]
    KernelFile {
        path: PathBuf,
        filesystem: &'static str,
    },
    #[error("output file {path} cannot be written: {source}")]
    Unwritable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the pcapng output")]
    Pcapng(#[source] crate::output::pcapng::PcapngError),
}

/// The writer of a format.
pub fn writer_for(format: Format, memory_budget: u64) -> Result<Box<dyn EventWriter>, OutputError> {
    Ok(match format {
        Format::Pcapng => Box::new(
            crate::output::pcapng::PcapngWriter::new()
                .map_err(OutputError::Pcapng)?
                .with_budget(memory_budget),
        ),
        text_or_json => Box::new(Renderer::new(text_or_json)),
    })
}

/// Opens the output: the `-o` file prepared by [`OutputFile::prepare`], or stdout (written in
/// whole lines when it is a terminal).
pub fn open_output(file: Option<OutputFile>) -> Result<Box<dyn Write + Send>, OutputError> {
    let Some(file) = file else {
        // On a terminal (that the traced command may share), whole lines only.
        if crate::output::terminal::stdout_is_terminal() {
            return Ok(Box::new(crate::output::terminal::WholeLines::new(
                io::stdout(),
                1 << 16,
            )));
        }
        return Ok(Box::new(io::BufWriter::with_capacity(
            1 << 16,
            io::stdout(),
        )));
    };
    let file = file.commit()?;
    Ok(Box::new(io::BufWriter::with_capacity(1 << 16, file)))
}

/// The `-o` file, opened and probed before anything is traced, and written only once the
/// trace starts ([`OutputFile::commit`]).
///
/// - A new file is created with mode 0600 (`O_EXCL`: never an existing one).
/// - An existing regular file is refused unless `force`; with `force` it keeps its mode (it is
///   not probectl's to change), a read-only one is refused, and it is emptied only at commit.
/// - A symbolic link is never followed (`O_NOFOLLOW`), even with `force`.
/// - Other existing files (a character device such as `/dev/null`, a FIFO) are written as they
///   are: there is nothing in them to overwrite.
/// - The file is probed with a write of zero bytes, which fails on files that take no writes
///   (`/proc/version`: EIO, `/dev/full`: ENOSPC).
///
/// Dropped before commit (a startup error), a file it created is removed: a run that fails to
/// start leaves no file behind and an existing one untouched.
#[derive(Debug)]
pub struct OutputFile {
    file: Option<std::fs::File>,
    path: PathBuf,
    /// Created by this run (removed again if the run never starts).
    created: bool,
    /// An existing regular file written with `--force`: emptied at commit.
    empty_at_commit: bool,
}

impl OutputFile {
    /// Opens `path` to append to it: created (0600) when missing, an existing regular file
    /// kept as it is and written at its end (the agent, whose runs follow each other into one
    /// file). A symbolic link is never followed.
    pub fn append(path: &Path) -> Result<OutputFile, OutputError> {
        let existed = std::fs::symlink_metadata(path).is_ok();
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| {
                if source.raw_os_error() == Some(libc::ELOOP) {
                    OutputError::Symlink {
                        path: path.to_path_buf(),
                    }
                } else {
                    OutputError::Create {
                        path: path.to_path_buf(),
                        source,
                    }
                }
            })?;
        Ok(OutputFile {
            file: Some(file),
            path: path.to_path_buf(),
            created: !existed,
            empty_at_commit: false,
        })
    }

    /// Opens and probes `path` (see [`OutputFile`]).
    pub fn prepare(path: &Path, force: bool) -> Result<OutputFile, OutputError> {
        use std::os::unix::fs::FileTypeExt;
        let create_error = |source| OutputError::Create {
            path: path.to_path_buf(),
            source,
        };
        let flags = libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let mut prepared = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(flags)
            .open(path)
        {
            Ok(file) => OutputFile {
                file: Some(file),
                path: path.to_path_buf(),
                created: true,
                empty_at_commit: false,
            },
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                let metadata = std::fs::symlink_metadata(path).map_err(create_error)?;
                let kind = metadata.file_type();
                if kind.is_symlink() {
                    return Err(OutputError::Symlink {
                        path: path.to_path_buf(),
                    });
                }
                let regular = kind.is_file();
                if regular && !force {
                    return Err(OutputError::Exists {
                        path: path.to_path_buf(),
                    });
                }
                let mode = metadata.permissions().mode() & 0o7777;
                if regular && mode & 0o222 == 0 {
                    return Err(OutputError::ReadOnly {
                        path: path.to_path_buf(),
                        mode,
                    });
                }
                // Nothing but FIFOs, devices, sockets and (with --force) regular files here.
                if !(regular || kind.is_fifo() || kind.is_char_device() || kind.is_block_device()) {
                    return Err(create_error(io::Error::other(
                        "not a regular file, a device or a FIFO",
                    )));
                }
                let file = OpenOptions::new()
                    .write(true)
                    .custom_flags(flags)
                    .open(path)
                    .map_err(|error| match error.raw_os_error() {
                        // Replaced by a link since it was looked at.
                        Some(libc::ELOOP) => OutputError::Symlink {
                            path: path.to_path_buf(),
                        },
                        _ => create_error(error),
                    })?;
                OutputFile {
                    file: Some(file),
                    path: path.to_path_buf(),
                    created: false,
                    empty_at_commit: regular,
                }
            }
            Err(error) if error.raw_os_error() == Some(libc::ELOOP) => {
                return Err(OutputError::Symlink {
                    path: path.to_path_buf(),
                })
            }
            Err(error) => return Err(create_error(error)),
        };
        prepared.refuse_kernel_files()?;
        prepared.probe()?;
        Ok(prepared)
    }

    /// A file of procfs, sysfs, ... is the kernel's interface: a write there changes settings
    /// (`/proc/self/comm`, `/proc/sys/...`) rather than keeping data. Refused, even with --force.
    /// The file system is the one `/proc/self/mountinfo` gives for the file's device.
    fn refuse_kernel_files(&self) -> Result<(), OutputError> {
        use std::os::unix::fs::MetadataExt;
        let Some(file) = &self.file else {
            return Ok(());
        };
        let Ok(metadata) = file.metadata() else {
            return Ok(());
        };
        // Devices and FIFOs live on the file system of their node (devtmpfs): only regular
        // files are the file system's own.
        if !metadata.is_file() {
            return Ok(());
        }
        let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return Ok(());
        };
        let filesystem = filesystem_of(metadata.dev(), &mounts);
        match KERNEL_FILESYSTEMS
            .iter()
            .find(|(kind, _)| Some(*kind) == filesystem)
        {
            Some((_, name)) => Err(OutputError::KernelFile {
                path: self.path.clone(),
                filesystem: name,
            }),
            None => Ok(()),
        }
    }

    /// A write of zero bytes: the kernel checks that the file takes writes at all (std passes
    /// an empty write on to write(2)).
    fn probe(&mut self) -> Result<(), OutputError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let mut file: &std::fs::File = file;
        // Zero bytes asked, zero written: the count says nothing, only the error does.
        #[allow(clippy::unused_io_amount)]
        let written = file.write(&[]);
        match written {
            Ok(_) => Ok(()),
            Err(source) => Err(OutputError::Unwritable {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// The file to write into, from now on kept whatever happens.
    pub fn commit(mut self) -> Result<std::fs::File, OutputError> {
        let Some(file) = self.file.take() else {
            return Err(OutputError::Unwritable {
                path: self.path.clone(),
                source: io::Error::other("already committed"),
            });
        };
        self.created = false;
        if self.empty_at_commit {
            file.set_len(0).map_err(|source| OutputError::Unwritable {
                path: self.path.clone(),
                source,
            })?;
        }
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Puts a committed file in append mode (`--keylog`): each write lands at the end whole,
/// whoever else appends to the file.
pub fn append_mode(file: std::fs::File) -> Result<std::fs::File, OutputError> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this File owns; F_GETFL/F_SETFL take and return flags only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_APPEND) } < 0 {
        return Err(OutputError::Unwritable {
            path: PathBuf::from(format!("/proc/self/fd/{fd}")),
            source: io::Error::last_os_error(),
        });
    }
    Ok(file)
}

impl Drop for OutputFile {
    /// A file this run created and never wrote is removed, if the path still names it.
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let Some(file) = self.file.take() else {
            return;
        };
        if !self.created {
            return;
        }
        if let (Ok(ours), Ok(now)) = (file.metadata(), std::fs::symlink_metadata(&self.path)) {
            if ours.dev() == now.dev() && ours.ino() == now.ino() {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// File systems that are kernel interfaces, not storage: the type `/proc/self/mountinfo` gives,
/// and the name said.
const KERNEL_FILESYSTEMS: [(&str, &str); 10] = [
    ("proc", "procfs"),
    ("sysfs", "sysfs"),
    ("cgroup", "cgroupfs"),
    ("cgroup2", "cgroupfs"),
    ("debugfs", "debugfs"),
    ("tracefs", "tracefs"),
    ("bpf", "bpffs"),
    ("securityfs", "securityfs"),
    ("configfs", "configfs"),
    ("pstore", "pstore"),
];

/// The type of the file system mounted from device `dev`, from the text of
/// `/proc/self/mountinfo` (`ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS ... - TYPE SOURCE ...`).
fn filesystem_of(dev: u64, mountinfo: &str) -> Option<&str> {
    // glibc's encoding of dev_t (gnu_dev_major / gnu_dev_minor).
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let wanted = format!("{major}:{minor}");
    mountinfo.lines().find_map(|line| {
        let mut fields = line.split(' ');
        if fields.nth(2)? != wanted {
            return None;
        }
        let (_, after) = line.split_once(" - ")?;
        after.split(' ').next()
    })
}

/// Creates (or empties) `path` with mode 0600, also when it existed with another mode: what
/// probectl writes names traced programs and carries their plaintext (the `--report` file).
pub fn create_private(path: &Path) -> io::Result<std::fs::File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open: tighten it too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Where an [`EventWriter`] puts its bytes: a `Write` that also lends the buffer its bytes are
/// collected in, so that an event is rendered in place. Rendering into a buffer of its own and
/// then copying that into the output's cost the reader as much as the base64 encoding itself.
pub trait Output: Write {
    /// Lets `render` append to the output's buffer; `size_hint` is about how many bytes it
    /// appends (more is allowed, and costs a reallocation).
    fn append(
        &mut self,
        size_hint: usize,
        render: &mut dyn FnMut(&mut Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()>;
}

/// A buffer in memory is its own output (tests and examples).
impl Output for Vec<u8> {
    fn append(
        &mut self,
        size_hint: usize,
        render: &mut dyn FnMut(&mut Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()> {
        self.reserve(size_hint);
        render(self)
    }
}

/// A consumer of the event stream: the last stage of the data pipeline. Every output format
/// (text, hex, JSON, and the decoders and writers built on them) implements it.
///
/// What it is given, in order: every event, in per-connection, per-direction stream order
/// (`conn.offset` jumps forward where calls were lost: a gap, never bytes), the end of each
/// connection whose fd was closed, and `finish` once at the end of the run.
pub trait EventWriter: Send {
    /// One event (one TLS call, or the run of one after a loss inside it).
    fn event(&mut self, event: &Event<'_>, out: &mut dyn Output) -> io::Result<()>;
    /// The connection `conn` ended (its fd was closed) at `ts_ns` (wall clock, ns since the
    /// epoch). No event of this connection id follows.
    fn connection_closed(
        &mut self,
        _conn: &ConnectionView<'_>,
        _ts_ns: u64,
        _out: &mut dyn Output,
    ) -> io::Result<()> {
        Ok(())
    }
    /// The run is over: write whatever is still held back.
    fn finish(&mut self, _out: &mut dyn Output) -> io::Result<()> {
        Ok(())
    }
    /// What this writer counted, for the `--report` (its losses and bounds by cause).
    fn report(&self) -> Option<serde_json::Value> {
        None
    }
    /// A session secret was seen (`--keylog`): formats that show it say which connection it
    /// belongs to (never the secret itself: that goes to the key log only).
    fn secret(&mut self, _secret: &SecretEvent<'_>, _out: &mut dyn Output) -> io::Result<()> {
        Ok(())
    }
}

/// A session secret as output shows it: its label and client random, and its connection.
#[derive(Debug, Clone, Copy)]
pub struct SecretEvent<'a> {
    /// Wall-clock time, ns since the Unix epoch.
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    /// The key-log function probed.
    pub function: &'a str,
    pub label: &'a str,
    /// Hex, as in the key log.
    pub client_random: &'a str,
    /// The library's connection handle (0: none).
    pub handle: u64,
    /// The connection's id when it is known already (a secret comes in the handshake, before
    /// the connection's first call: then its connection's later events carry the same
    /// `handle`, and the summary's connection carries its keys).
    pub connection: Option<u64>,
    /// The socket (fd) that sent the ClientHello its client random names, where that tied
    /// the secret to its connection (Go's secrets have no handle; stripped BoringSSL's no
    /// client random of their own).
    pub fd: Option<i32>,
}

#[derive(Serialize)]
struct JsonSecret<'a> {
    ts_ns: u64,
    pid: u32,
    tid: u32,
    function: &'a str,
    secret: JsonSecretFields<'a>,
}

#[derive(Serialize)]
struct JsonSecretFields<'a> {
    label: &'a str,
    client_random: &'a str,
    handle: String,
    conn: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fd: Option<i32>,
}

/// Renders events straight into the output's buffer.
pub struct Renderer {
    format: Format,
}

#[derive(Serialize)]
struct JsonEvent<'a> {
    ts_ns: u64,
    pid: u32,
    tid: u32,
    comm: &'a str,
    /// The group of probes.toml (`group` in JSON).
    #[serde(rename = "group")]
    plugin: &'a str,
    library: &'a Path,
    function: &'a str,
    direction: &'static str,
    len: u64,
    truncated: u64,
    conn: JsonConnection<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<JsonContainer<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
}

/// The container of an event's process (JSON).
#[derive(Serialize)]
pub struct JsonContainer<'a> {
    pub id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<&'a str>,
    /// The pod's name and namespace and the container's name, from the container runtime.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<&'a crate::capture::identity::PodNames>,
}

impl<'a> JsonContainer<'a> {
    pub fn of(identity: Option<&'a crate::capture::identity::Identity>) -> Option<Self> {
        let identity = identity?;
        Some(JsonContainer {
            id: identity.container.as_deref()?,
            runtime: identity.runtime.map(|r| r.as_str()),
            pod_uid: identity.pod_uid.as_deref(),
            pod: identity.pod.as_ref(),
        })
    }
}

/// What a text header says about where the process runs: ` container=ID12` (and
/// ` pod=UID`, or with the runtime's names ` pod=NAMESPACE/NAME/CONTAINER`), nothing for a
/// process in no container.
pub fn identity_suffix(identity: Option<&crate::capture::identity::Identity>) -> String {
    let Some(identity) = identity else {
        return String::new();
    };
    let mut text = String::new();
    if let Some(id) = identity.short_container() {
        text.push_str(" container=");
        text.push_str(id);
    }
    if let Some(pod) = identity.pod.as_ref() {
        text.push_str(" pod=");
        text.push_str(&pod.path());
    } else if let Some(pod) = identity.pod_uid.as_deref() {
        text.push_str(" pod=");
        text.push_str(pod);
    }
    text
}

#[derive(Serialize)]
struct JsonConnection<'a> {
    id: u64,
    /// The connection handle the library passes around (e.g. `SSL*`), as hex.
    handle: String,
    fd: Option<i32>,
    transport: Option<&'a str>,
    local: Option<&'a str>,
    remote: Option<&'a str>,
    offset: u64,
}

impl EventWriter for Renderer {
    fn event(&mut self, event: &Event<'_>, out: &mut dyn Output) -> io::Result<()> {
        self.render(event, out)
    }

    fn secret(&mut self, secret: &SecretEvent<'_>, out: &mut dyn Output) -> io::Result<()> {
        match self.format {
            Format::Json => out.append(HEADER_BYTES, &mut |line| {
                serde_json::to_writer(&mut *line, &secret_json(secret))?;
                line.push(b'\n');
                Ok(())
            }),
            Format::Text | Format::Hex => out.append(HEADER_BYTES, &mut |line| {
                let conn = match (secret.connection, secret.fd) {
                    (Some(id), _) => format!("conn#{id}"),
                    (None, Some(fd)) if secret.handle == 0 => format!("fd {fd}"),
                    (None, _) => format!("handle {:#x}", secret.handle),
                };
                writeln!(
                    line,
                    "--- {} [{}/{}] {} key {} {} {conn}",
                    format_time(secret.ts_ns),
                    secret.pid,
                    secret.tid,
                    secret.function,
                    secret.label,
                    secret.client_random,
                )?;
                Ok(())
            }),
            Format::Pcapng => Ok(()),
        }
    }
}

fn secret_json<'a>(secret: &SecretEvent<'a>) -> JsonSecret<'a> {
    JsonSecret {
        ts_ns: secret.ts_ns,
        pid: secret.pid,
        tid: secret.tid,
        function: secret.function,
        secret: JsonSecretFields {
            label: secret.label,
            client_random: secret.client_random,
            handle: format!("{:#x}", secret.handle),
            conn: secret.connection,
            fd: secret.fd,
        },
    }
}

impl Renderer {
    pub fn new(format: Format) -> Renderer {
        Renderer { format }
    }

    pub fn render(&mut self, event: &Event<'_>, out: &mut dyn Output) -> io::Result<()> {
        // The header's fields (paths, addresses) and the encoded data; the encoders reserve
        // what they need themselves.
        let header = HEADER_BYTES + event.attach.library.as_os_str().len();
        let data = event.data.len();
        match self.format {
            Format::Json => out.append(header + data.div_ceil(3) * 4, &mut |line| {
                render_json(event, line)
            }),
            Format::Text => out.append(header + 4 * data + 1, &mut |line| {
                write_header(event, line)?;
                encode::escape_text(event.data, line);
                Ok(())
            }),
            Format::Hex => out.append(header + 5 * data + 80, &mut |line| {
                write_header(event, line)?;
                encode::hexdump(event.data, line);
                Ok(())
            }),
            Format::Pcapng => Err(io::Error::other("pcapng is written by PcapngWriter")),
        }
    }
}

/// About the most a header (text) or the fields before the data (JSON) take, apart from the
/// library's path.
const HEADER_BYTES: usize = 512;

/// Appends the JSON line of `event` to `line`.
fn render_json(event: &Event<'_>, line: &mut Vec<u8>) -> io::Result<()> {
    let json = JsonEvent {
        ts_ns: event.ts_ns,
        pid: event.pid,
        tid: event.tid,
        comm: event.comm,
        plugin: &event.attach.plugin,
        library: &event.attach.library,
        function: &event.attach.function,
        direction: event.attach.direction.as_str(),
        len: event.len,
        truncated: event.truncated,
        conn: JsonConnection {
            id: event.conn.id,
            handle: format!("{:#x}", event.conn.handle),
            fd: event.conn.fd,
            transport: event.conn.transport,
            local: event.conn.local,
            remote: event.conn.remote,
            offset: event.conn.offset,
        },
        cgroup: event.process.map(|p| p.cgroup.as_str()),
        container: JsonContainer::of(event.process.map(|p| &**p)),
        unit: event.process.and_then(|p| p.unit.as_deref()),
    };
    // The fields go through serde_json; the data is appended as the last field straight
    // from the (SIMD) base64 encoder: base64 never needs JSON escaping, and scanning
    // megabytes of it for escapes was the reader's largest cost.
    serde_json::to_writer(&mut *line, &json)?;
    line.pop(); // the closing brace
    line.extend_from_slice(b",\"data_b64\":\"");
    encode::base64(event.data, line);
    line.extend_from_slice(b"\"}\n");
    Ok(())
}

/// `HH:MM:SS.micros` (UTC) of a wall-clock time in ns.
pub fn format_time(ts_ns: u64) -> String {
    let seconds = ts_ns / 1_000_000_000;
    let micros = (ts_ns % 1_000_000_000) / 1000;
    let day_seconds = seconds % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        day_seconds / 3600,
        (day_seconds / 60) % 60,
        day_seconds % 60,
        micros
    )
}

fn write_header(event: &Event<'_>, out: &mut Vec<u8>) -> io::Result<()> {
    write!(
        out,
        "--- {} {}[{}/{}] {} {} {} {} {} bytes conn#{} ",
        format_time(event.ts_ns),
        event.comm,
        event.pid,
        event.tid,
        event.attach.plugin,
        event.attach.library.display(),
        event.attach.function,
        event.attach.direction.as_str(),
        event.len,
        event.conn.id,
    )?;
    match (event.conn.local, event.conn.remote, event.conn.fd) {
        (Some(local), Some(remote), _) => write!(out, "{local} -> {remote}")?,
        (_, _, Some(fd)) => write!(out, "fd {fd} ({})", event.conn.transport.unwrap_or("?"))?,
        _ => write!(out, "handle {:#x}", event.conn.handle)?,
    }
    write!(out, " @{}", event.conn.offset)?;
    if event
        .process
        .is_some_and(|p| p.container.is_some() || p.pod_uid.is_some())
    {
        out.extend_from_slice(identity_suffix(event.process.map(|p| &**p)).as_bytes());
    }
    if event.truncated > 0 {
        write!(out, " ({} bytes not captured)", event.truncated)?;
    }
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn attach() -> AttachInfo {
        AttachInfo {
            plugin: "openssl".into(),
            library: "/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
            function: "SSL_write_ex".into(),
            direction: Direction::Write,
        }
    }

    fn render(format: Format, data: &[u8], truncated: u64) -> String {
        let attach = attach();
        let event = Event {
            ts_ns: 1_732_480_496_123_456_789,
            pid: 4242,
            tid: 4243,
            comm: "curl",
            attach: &attach,
            conn: ConnectionView {
                id: 3,
                handle: 0x55d0_1234_5678,
                fd: Some(5),
                transport: Some("tcp"),
                local: Some("127.0.0.1:41234"),
                remote: Some("127.0.0.1:443"),
                offset: 1024,
            },
            len: data.len() as u64 + truncated,
            data,
            truncated,
            process: None,
        };
        let mut out = Vec::new();
        Renderer::new(format)
            .render(&event, &mut out)
            .expect("render");
        String::from_utf8(out).expect("utf-8")
    }

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n\x00\x01\xff\tend\\";

    #[test]
    fn text() {
        insta::assert_snapshot!(render(Format::Text, REQUEST, 0));
    }

    #[test]
    fn text_truncated() {
        insta::assert_snapshot!(render(Format::Text, b"partial", 100));
    }

    #[test]
    fn hex() {
        insta::assert_snapshot!(render(Format::Hex, REQUEST, 0));
    }

    #[test]
    fn json() {
        let line = render(Format::Json, REQUEST, 0);
        assert!(line.ends_with('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).expect("one JSON object");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value["data_b64"].as_str().expect("data_b64"))
            .expect("base64");
        assert_eq!(decoded, REQUEST);
        insta::assert_snapshot!(line);
    }

    #[test]
    fn output_file_is_private() {
        let path = std::env::temp_dir().join(format!("probectl-output-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let prepared = OutputFile::prepare(&path, false).expect("prepare");
        drop(open_output(Some(prepared)).expect("open"));
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777;
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(mode, 0o600);
    }

    /// A scratch path of its own for each test.
    fn scratch(name: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("probectl-output-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn an_existing_file_is_kept_unless_forced_and_keeps_its_mode() {
        let path = scratch("existing");
        std::fs::write(&path, b"old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = OutputFile::prepare(&path, false).expect_err("refused");
        assert!(matches!(error, OutputError::Exists { .. }), "{error}");
        // Prepared with --force but never committed (a startup error): untouched.
        drop(OutputFile::prepare(&path, true).expect("forced"));
        assert_eq!(std::fs::read(&path).expect("read"), b"old");
        let mut file = OutputFile::prepare(&path, true)
            .expect("forced")
            .commit()
            .expect("commit");
        file.write_all(b"new").expect("write");
        drop(file);
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn links_read_only_files_and_unwritable_files_are_refused() {
        let target = scratch("target");
        std::fs::write(&target, b"target").expect("write");
        let link = scratch("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        for force in [false, true] {
            let error = OutputFile::prepare(&link, force).expect_err("link");
            assert!(matches!(error, OutputError::Symlink { .. }), "{error}");
        }
        // A dangling link too: O_EXCL never creates through it.
        std::fs::remove_file(&target).expect("remove");
        let error = OutputFile::prepare(&link, false).expect_err("dangling link");
        assert!(matches!(error, OutputError::Symlink { .. }), "{error}");
        assert!(!target.exists());
        std::fs::remove_file(&link).expect("remove");

        let read_only = scratch("read-only");
        std::fs::write(&read_only, b"keep").expect("write");
        std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o444))
            .expect("chmod");
        let error = OutputFile::prepare(&read_only, true).expect_err("read-only");
        assert!(matches!(error, OutputError::ReadOnly { .. }), "{error}");
        assert_eq!(std::fs::read(&read_only).expect("read"), b"keep");
        std::fs::remove_file(&read_only).expect("remove");

        let error = OutputFile::prepare(Path::new("/dev/full"), false).expect_err("full");
        assert!(matches!(error, OutputError::Unwritable { .. }), "{error}");
        let error = OutputFile::prepare(Path::new("/nonexistent-dir/out"), false)
            .expect_err("no directory");
        assert!(matches!(error, OutputError::Create { .. }), "{error}");
        let error = OutputFile::prepare(Path::new("/proc/self/comm"), true).expect_err("procfs");
        assert!(matches!(error, OutputError::KernelFile { .. }), "{error}");
        // A device with nothing to overwrite is written as it is.
        OutputFile::prepare(Path::new("/dev/null"), false).expect("/dev/null");
    }

    #[test]
    fn a_created_file_is_removed_when_the_run_never_starts() {
        let path = scratch("never-started");
        drop(OutputFile::prepare(&path, false).expect("prepare"));
        assert!(!path.exists());
    }
}
