//! `--record FILE` and `probectl replay FILE`: a run's raw input to the data pipeline, kept so
//! that the pipeline can be run again on it, later or elsewhere (a recording sent with a bug
//! report), and print exactly what the live run printed.
//!
//! What the pipeline's output depends on, and so what a recording holds, in the order the live
//! pipeline met it:
//! - the clock base (CLOCK_MONOTONIC of the BPF timestamps → wall clock) and the capture limit;
//! - every ring buffer record, byte for byte;
//! - the attach table's entries (attach id → library, function, direction), as the pipeline
//!   took them in;
//! - the identity (cgroup, container) of each process, as the pipeline learnt it;
//! - the pipeline's ticks (the CLOCK_MONOTONIC time of each flush: calls held for their fd
//!   are released by it);
//! - at the end, the kernel's byte counts of the connections still open and the counters the
//!   summary shows.
//!
//! The file: [`MAGIC`], the format version (u32, little-endian), then frames of
//! `kind: u8, length: u32 (little-endian), payload`. A reader refuses another version with a
//! clear error instead of guessing. A recording that stops short (the run was killed) replays
//! up to its last whole frame, and the replay says so.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::capture::identity::Identity;
use crate::output::AttachInfo;
use crate::{KernelStats, Swept};

/// The first bytes of every recording.
pub const MAGIC: &[u8; 19] = b"probectl-recording\n";
/// Bumped when a frame changes meaning or layout. Version 1: this module's frames; version 2
/// adds process frames (a process's cgroup and container), so a reader of version 2 reads
/// version 1 too.
pub const RECORDING_FORMAT: u32 = 2;
/// The oldest format this reader reads.
const OLDEST_FORMAT: u32 = 1;
/// A frame larger than this is damage, not data (a ring record is at most a chunk).
const MAX_FRAME: u32 = 64 << 20;

mod frame {
    pub const START: u8 = 1;
    pub const ATTACH: u8 = 2;
    pub const RECORD: u8 = 3;
    pub const TICK: u8 = 4;
    pub const END: u8 = 5;
    pub const PROCESS: u8 = 6;
}

/// How the run started: what the pipeline was built with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// The probectl version that recorded (said by a replay, never required to match).
    pub probectl: String,
    /// CLOCK_MONOTONIC (BPF timestamps) → wall clock, in ns.
    pub clock_offset: u64,
    pub max_capture_bytes: u64,
    /// The kernel that recorded (`uname -r`), for the reader of a bug report.
    pub kernel: String,
}

/// How the run ended: what the summary shows besides the pipeline's own counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    /// The kernel's byte counts of connections still open, by (pid, handle).
    pub open_positions: Vec<((u32, u64), [u64; 2])>,
    pub kernel: KernelStats,
    pub probes_attached: usize,
    pub attach_failures: usize,
    pub swept: Swept,
    /// The command's exit code, or the signal that ended it (`--` runs).
    pub command_code: Option<i32>,
    pub command_signal: Option<i32>,
    /// probectl's memory at the end of the run.
    #[serde(default)]
    pub memory: crate::capture::summary::MemoryUse,
    /// Frames of the run's input not recorded: the recording had reached `--record-limit`
    /// (set by the recorder itself as it writes the end).
    #[serde(default)]
    pub frames_not_recorded: u64,
    /// What the run selected (`--container`, `--port`, ...).
    #[serde(default)]
    pub selection: crate::capture::summary::SelectionSummary,
}

/// `--record-limit`'s default: a recording left on for days stops growing here.
pub const DEFAULT_RECORD_LIMIT: u64 = 1 << 30;

/// Writes a recording. Write errors are kept, not raised at each call: the pipeline asks for
/// the first one when it flushes, and the session stops on it (like an output error).
pub struct Recorder {
    out: BufWriter<File>,
    error: Option<io::Error>,
    /// Bytes written so far, and the most the input frames may take (`--record-limit`); the
    /// end frame is written past it.
    written: u64,
    limit: u64,
    /// Input frames not written for the limit.
    not_recorded: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("cannot create the recording {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the recording {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a probectl recording (made by `probectl run --record FILE`)")]
    NotARecording { path: PathBuf },
    #[error(
        "{path} is a recording of format version {found}; this probectl replays versions \
         {OLDEST_FORMAT} to {RECORDING_FORMAT} only (replay it with the probectl that recorded it)"
    )]
    Version { path: PathBuf, found: u32 },
    #[error("{path} is damaged: {what} at byte {at}")]
    Damaged {
        path: PathBuf,
        what: String,
        at: u64,
    },
}

impl Recorder {
    /// Creates `path` (mode 0600: it holds captured plaintext) and writes the header and the
    /// start frame. An existing file is refused: a recording never replaces one. Input frames
    /// that would take it past `limit` bytes are not written (counted; the end says so).
    pub fn create(path: &Path, start: &Start, limit: u64) -> Result<Recorder, RecordingError> {
        use std::os::unix::fs::OpenOptionsExt;
        let error = |source| RecordingError::Create {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(error)?;
        let mut recorder = Recorder {
            out: BufWriter::with_capacity(1 << 20, file),
            error: None,
            written: 0,
            limit,
            not_recorded: 0,
        };
        recorder.write_raw(MAGIC);
        recorder.write_raw(&RECORDING_FORMAT.to_le_bytes());
        recorder.json(frame::START, start);
        recorder.out.flush().map_err(error)?;
        match recorder.error.take() {
            Some(source) => Err(error(source)),
            None => Ok(recorder),
        }
    }

    pub fn attach(&mut self, first_id: u32, infos: &[std::sync::Arc<AttachInfo>]) {
        let infos: Vec<&AttachInfo> = infos.iter().map(|info| info.as_ref()).collect();
        self.json(frame::ATTACH, &(first_id, infos));
    }

    pub fn record(&mut self, record: &[u8]) {
        self.frame(frame::RECORD, record);
    }

    pub fn process(&mut self, pid: u32, identity: Option<&Identity>) {
        self.json(frame::PROCESS, &(pid, identity));
    }

    pub fn tick(&mut self, now_ns: u64) {
        self.frame(frame::TICK, &now_ns.to_le_bytes());
    }

    /// Writes the end frame and everything buffered; the first error of the recording's
    /// life, if any.
    pub fn end(&mut self, end: &End) -> Option<io::Error> {
        let end = End {
            frames_not_recorded: self.not_recorded,
            ..end.clone()
        };
        self.json(frame::END, &end);
        self.flush()
    }

    /// Input frames not written because the recording reached its limit.
    pub fn not_recorded(&self) -> u64 {
        self.not_recorded
    }

    /// Writes out what is buffered; the first error of the recording's life, if any (kept:
    /// every later call returns it too).
    pub fn flush(&mut self) -> Option<io::Error> {
        if self.error.is_none() {
            if let Err(error) = self.out.flush() {
                self.error = Some(error);
            }
        }
        self.error
            .as_ref()
            .map(|error| io::Error::new(error.kind(), error.to_string()))
    }

    fn json<T: Serialize>(&mut self, kind: u8, value: &T) {
        match serde_json::to_vec(value) {
            Ok(bytes) => self.frame(kind, &bytes),
            Err(error) => {
                self.error.get_or_insert(io::Error::other(error));
            }
        }
    }

    fn frame(&mut self, kind: u8, payload: &[u8]) {
        let Ok(length) = u32::try_from(payload.len()) else {
            self.error
                .get_or_insert(io::Error::other("a frame over 4 GiB"));
            return;
        };
        let size = 5 + u64::from(length);
        let input = matches!(kind, frame::ATTACH | frame::RECORD | frame::TICK);
        // Once one is left out, all later ones are: a recording is a prefix of the run's input.
        if input && (self.not_recorded > 0 || self.written.saturating_add(size) > self.limit) {
            if self.not_recorded == 0 {
                crate::notice::warning(
                    crate::notice::Topic::Recording,
                    format!(
                        "the recording reached --record-limit ({} bytes): the run goes on, but \
                         its input from here is not recorded (counted; a replay says so)",
                        self.limit
                    ),
                );
            }
            self.not_recorded += 1;
            return;
        }
        self.write_raw(&[kind]);
        self.write_raw(&length.to_le_bytes());
        self.write_raw(payload);
    }

    fn write_raw(&mut self, bytes: &[u8]) {
        self.written += bytes.len() as u64;
        if self.error.is_none() {
            if let Err(error) = self.out.write_all(bytes) {
                self.error = Some(error);
            }
        }
    }
}

/// One frame of a recording, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Attach {
        first_id: u32,
        infos: Vec<AttachInfo>,
    },
    Record(Vec<u8>),
    /// A process's identity (`None`: it could not be read).
    Process {
        pid: u32,
        identity: Option<Identity>,
    },
    Tick(u64),
    End(Box<End>),
}

/// Reads a recording: its start, then its frames in order.
pub struct Reader {
    path: PathBuf,
    input: BufReader<File>,
    at: u64,
    pub start: Start,
    /// Set when the file stopped inside a frame (the run was killed while recording): the
    /// frames before it were read.
    pub cut_short: bool,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader, RecordingError> {
        let read_error = |source| RecordingError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(read_error)?;
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut magic = [0u8; MAGIC.len()];
        if read_full(&mut input, &mut magic).map_err(read_error)? < magic.len() || &magic != MAGIC {
            return Err(RecordingError::NotARecording {
                path: path.to_path_buf(),
            });
        }
        let mut version = [0u8; 4];
        if read_full(&mut input, &mut version).map_err(read_error)? < 4 {
            return Err(RecordingError::NotARecording {
                path: path.to_path_buf(),
            });
        }
        let found = u32::from_le_bytes(version);
        if !(OLDEST_FORMAT..=RECORDING_FORMAT).contains(&found) {
            return Err(RecordingError::Version {
                path: path.to_path_buf(),
                found,
            });
        }
        let mut reader = Reader {
            path: path.to_path_buf(),
            input,
            at: (MAGIC.len() + 4) as u64,
            start: Start {
                probectl: String::new(),
                clock_offset: 0,
                max_capture_bytes: 0,
                kernel: String::new(),
            },
            cut_short: false,
        };
        match reader.raw_frame()? {
            Some((frame::START, payload)) => {
                reader.start = reader.parse(&payload, "the start frame")?;
                Ok(reader)
            }
            _ => Err(reader.damaged("no start frame")),
        }
    }

    /// The next frame; `None` at the end of the file (or where it was cut short).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, RecordingError> {
        let Some((kind, payload)) = self.raw_frame()? else {
            return Ok(None);
        };
        Ok(Some(match kind {
            frame::ATTACH => {
                let (first_id, infos): (u32, Vec<AttachInfo>) =
                    self.parse(&payload, "an attach frame")?;
                Frame::Attach { first_id, infos }
            }
            frame::RECORD => Frame::Record(payload),
            frame::PROCESS => {
                let (pid, identity): (u32, Option<Identity>) =
                    self.parse(&payload, "a process frame")?;
                Frame::Process { pid, identity }
            }
            frame::TICK => {
                let bytes: [u8; 8] = payload
                    .as_slice()
                    .try_into()
                    .map_err(|_| self.damaged("a tick frame not 8 bytes long"))?;
                Frame::Tick(u64::from_le_bytes(bytes))
            }
            frame::END => Frame::End(Box::new(self.parse(&payload, "the end frame")?)),
            other => return Err(self.damaged(&format!("a frame of unknown kind {other}"))),
        }))
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        payload: &[u8],
        what: &str,
    ) -> Result<T, RecordingError> {
        serde_json::from_slice(payload).map_err(|error| self.damaged(&format!("{what}: {error}")))
    }

    fn damaged(&self, what: &str) -> RecordingError {
        RecordingError::Damaged {
            path: self.path.clone(),
            what: what.to_string(),
            at: self.at,
        }
    }

    fn raw_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, RecordingError> {
        let read_error = |source| RecordingError::Read {
            path: self.path.clone(),
            source,
        };
        let mut head = [0u8; 5];
        match read_full(&mut self.input, &mut head).map_err(read_error)? {
            0 => return Ok(None),
            5 => {}
            _ => {
                self.cut_short = true;
                return Ok(None);
            }
        }
        let length = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        if length > MAX_FRAME {
            return Err(self.damaged(&format!("a frame of {length} bytes")));
        }
        let mut payload = vec![0u8; length as usize];
        let read_error = |source| RecordingError::Read {
            path: self.path.clone(),
            source,
        };
        if read_full(&mut self.input, &mut payload).map_err(read_error)? < payload.len() {
            self.cut_short = true;
            return Ok(None);
        }
        self.at += 5 + u64::from(length);
        Ok(Some((head[0], payload)))
    }
}

/// Reads until `buffer` is full or the input ends; how many bytes were read.
fn read_full(input: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match input.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Direction;

    fn start() -> Start {
        Start {
            probectl: "0.1.0".into(),
            clock_offset: 1_700_000_000_000_000_000,
            max_capture_bytes: 1 << 20,
            kernel: "6.18.0".into(),
        }
    }

    fn info(function: &str) -> std::sync::Arc<AttachInfo> {
        std::sync::Arc::new(AttachInfo {
            plugin: "openssl".into(),
            library: "/usr/lib/libssl.so.3".into(),
            function: function.into(),
            direction: Direction::Write,
        })
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("probectl-recording-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    fn write_sample(path: &Path) {
        let mut recorder = Recorder::create(path, &start(), DEFAULT_RECORD_LIMIT).expect("create");
        recorder.attach(0, &[info("SSL_write"), info("SSL_read")]);
        recorder.record(b"\x01\x00\x00\x00chunk");
        recorder.tick(42);
        recorder.record(b"");
        let end = End {
            open_positions: vec![((7, 0xabc), [3, 4])],
            probes_attached: 6,
            command_code: Some(3),
            ..End::default()
        };
        assert!(recorder.end(&end).is_none());
    }

    #[test]
    fn a_recording_stops_at_its_limit_and_its_end_says_how_much_is_missing() {
        let path = temp("limited.rec");
        let header = MAGIC.len() as u64 + 4;
        let start_frame = 5 + serde_json::to_vec(&start()).expect("json").len() as u64;
        // Room for two 9-byte records (5 bytes of frame head each) after the start.
        let limit = header + start_frame + 2 * (5 + 9);
        let mut recorder = Recorder::create(&path, &start(), limit).expect("create");
        for index in 0..5u8 {
            recorder.record(&[index; 9]);
        }
        // A frame that would still fit after one left out is left out too.
        recorder.tick(1);
        assert_eq!(recorder.not_recorded(), 4);
        assert!(recorder.end(&End::default()).is_none());
        let mut reader = Reader::open(&path).expect("open");
        let mut frames = Vec::new();
        while let Some(frame) = reader.next_frame().expect("frame") {
            frames.push(frame);
        }
        assert_eq!(
            frames[..2],
            [Frame::Record(vec![0; 9]), Frame::Record(vec![1; 9])]
        );
        let Some(Frame::End(end)) = frames.get(2) else {
            panic!("no end frame: {frames:?}");
        };
        assert_eq!(end.frames_not_recorded, 4);
        assert_eq!(frames.len(), 3);
    }

    #[test]
    fn frames_are_read_back_in_order() {
        let path = temp("sample.rec");
        write_sample(&path);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "a recording holds plaintext");
        let mut reader = Reader::open(&path).expect("open");
        assert_eq!(reader.start, start());
        let mut frames = Vec::new();
        while let Some(frame) = reader.next_frame().expect("frame") {
            frames.push(frame);
        }
        assert!(!reader.cut_short);
        assert_eq!(frames.len(), 5);
        assert_eq!(
            frames[0],
            Frame::Attach {
                first_id: 0,
                infos: vec![(*info("SSL_write")).clone(), (*info("SSL_read")).clone()]
            }
        );
        assert_eq!(frames[1], Frame::Record(b"\x01\x00\x00\x00chunk".to_vec()));
        assert_eq!(frames[2], Frame::Tick(42));
        assert_eq!(frames[3], Frame::Record(Vec::new()));
        let Frame::End(end) = &frames[4] else {
            panic!("end frame: {:?}", frames[4]);
        };
        assert_eq!(end.open_positions, vec![((7, 0xabc), [3, 4])]);
        assert_eq!((end.probes_attached, end.command_code), (6, Some(3)));
    }

    #[test]
    fn an_existing_file_is_never_replaced() {
        let path = temp("existing.rec");
        std::fs::write(&path, b"keep me").expect("write");
        let error = Recorder::create(&path, &start(), DEFAULT_RECORD_LIMIT)
            .err()
            .expect("refused");
        assert!(
            matches!(&error, RecordingError::Create { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
            "{error}"
        );
        assert_eq!(std::fs::read(&path).expect("read"), b"keep me");
    }

    #[test]
    fn a_recording_cut_short_reads_up_to_its_last_whole_frame() {
        let path = temp("cut.rec");
        write_sample(&path);
        let bytes = std::fs::read(&path).expect("read");
        // Inside the end frame: the four frames before it are whole.
        std::fs::write(&path, &bytes[..bytes.len() - 3]).expect("write");
        let mut reader = Reader::open(&path).expect("open");
        let mut count = 0;
        while reader.next_frame().expect("frame").is_some() {
            count += 1;
        }
        assert_eq!(count, 4);
        assert!(reader.cut_short);
    }

    #[test]
    fn other_files_and_versions_are_refused_with_the_reason() {
        let path = temp("other.rec");
        std::fs::write(&path, b"GET / HTTP/1.1\r\n\r\n").expect("write");
        let error = Reader::open(&path).err().expect("refused");
        assert!(
            matches!(error, RecordingError::NotARecording { .. }),
            "{error}"
        );
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&99u32.to_le_bytes());
        std::fs::write(&path, &bytes).expect("write");
        let error = Reader::open(&path).err().expect("refused");
        assert!(
            matches!(error, RecordingError::Version { found: 99, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("format version 99"), "{error}");
        // A frame whose length is absurd is damage, said with where it is.
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&RECORDING_FORMAT.to_le_bytes());
        bytes.push(frame::START);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, &bytes).expect("write");
        let error = Reader::open(&path).err().expect("refused");
        assert!(
            matches!(&error, RecordingError::Damaged { at: 23, .. }),
            "{error}"
        );
    }
}
