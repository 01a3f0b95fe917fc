//! The output written from its own thread, so that the thread draining the ring buffer never
//! waits for the file system: writing rendered text to a file costs the kernel more than
//! rendering it (page cache allocation and copies, ~3 bytes of text per byte of binary data),
//! and while the reader sat in `write()` the ring buffer filled and dropped chunks.
//!
//! Memory stays bounded: a fixed pool of buffers goes back and forth between the reader and the
//! writer thread. When the writer falls behind and every buffer is in flight, the reader waits
//! for one; the ring buffer then absorbs the burst, and counts what it cannot.
//!
//! An output can also stop taking bytes altogether (a pager paused, a pipe nobody reads). The
//! reader then waits, and so does the event loop on its thread, signals included: Ctrl-C is
//! seen by [`stop_requested`], a flag the signal handler sets itself. Once it is set, waiting
//! for an output that takes nothing for [`STALLED_FOR`] ends: what is not written is counted in
//! the error, and the run ends with its summary.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::output::Output;

/// Bytes per buffer handed to the writer thread.
const BUFFER_BYTES: usize = 1 << 20;
/// Buffers in the pool: at most this many MiB of output wait to be written.
const BUFFERS: usize = 8;

/// How long an output may take nothing, once a stop was asked for, before it is given up.
pub const STALLED_FOR: Duration = Duration::from_secs(2);
/// How often a wait for the output looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// Set when the run was told to stop (SIGINT, SIGTERM): the session registers it with the
/// signal handler (`signal_hook::flag`), so it is set even while the event loop waits here.
pub fn stop_flag() -> Arc<AtomicBool> {
    static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    STOP.get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone()
}

fn stop_requested() -> bool {
    stop_flag().load(Ordering::Relaxed)
}

enum Message {
    Data(Vec<u8>),
    /// Flush the underlying output (e.g. stdout's buffer): the reader went idle.
    Flush,
}

/// A `Write` that hands its bytes to a writer thread. `flush` does not wait for the bytes to be
/// written (the reader calls it after every drain); `finish` does.
pub struct BackgroundWriter {
    current: Vec<u8>,
    sender: Option<SyncSender<Message>>,
    free: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<io::Result<()>>>,
    /// Data was handed over since the last `Flush` message.
    unflushed: bool,
    /// The writer thread's error, once it is known.
    error: Option<io::Error>,
    /// Bytes the writer thread has written: whether a stalled output still moves.
    written: Arc<AtomicU64>,
    /// Bytes handed over (or left in `current`) that a stalled output never took.
    abandoned: u64,
    /// Bytes handed to the writer thread.
    handed: u64,
}

impl BackgroundWriter {
    /// Starts the writer thread on `out`.
    pub fn new(mut out: Box<dyn Write + Send>) -> io::Result<BackgroundWriter> {
        // Data and Flush messages alternate at worst, and data is bounded by the pool.
        let (sender, messages) = mpsc::sync_channel::<Message>(2 * BUFFERS);
        let (give_back, free) = mpsc::sync_channel::<Vec<u8>>(BUFFERS);
        for _ in 1..BUFFERS {
            // Cannot block: the channel holds BUFFERS.
            let _ = give_back.send(Vec::with_capacity(BUFFER_BYTES));
        }
        let written = Arc::new(AtomicU64::new(0));
        let progress = written.clone();
        let thread = std::thread::Builder::new()
            .name("probectl-output".into())
            .spawn(move || -> io::Result<()> {
                for message in messages {
                    match message {
                        Message::Data(mut buffer) => {
                            out.write_all(&buffer)?;
                            progress.fetch_add(buffer.len() as u64, Ordering::Relaxed);
                            buffer.clear();
                            // An event larger than a buffer grew it: memory stays bounded by
                            // the pool, not by the largest event seen.
                            if buffer.capacity() > 2 * BUFFER_BYTES {
                                buffer.shrink_to(BUFFER_BYTES);
                            }
                            // The reader may be gone (finishing): the buffer is just dropped.
                            let _ = give_back.send(buffer);
                        }
                        Message::Flush => out.flush()?,
                    }
                }
                out.flush()
            })?;
        Ok(BackgroundWriter {
            current: Vec::with_capacity(BUFFER_BYTES),
            sender: Some(sender),
            free,
            thread: Some(thread),
            unflushed: false,
            error: None,
            written,
            abandoned: 0,
            handed: 0,
        })
    }

    /// Gives up on an output that took nothing for [`STALLED_FOR`] after a stop was asked
    /// for: its thread is left to the process's exit, and the error says what was not written.
    fn give_up(&mut self) -> io::Error {
        let handed = self
            .handed
            .saturating_sub(self.written.load(Ordering::Relaxed));
        self.abandoned = handed + self.current.len() as u64;
        self.current.clear();
        self.sender = None;
        // Joining would wait for a write that never returns.
        drop(self.thread.take());
        let error = io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the output took nothing for {} s after probectl was told to stop: {} bytes of \
                 events not written",
                STALLED_FOR.as_secs(),
                self.abandoned
            ),
        );
        self.error = Some(io::Error::new(error.kind(), error.to_string()));
        error
    }

    /// Whether the output has taken nothing for [`STALLED_FOR`] since `since` (with the
    /// bytes written then) while a stop is asked for; updates both when it moved.
    fn stalled(&self, since: &mut Instant, seen: &mut u64) -> bool {
        let now_written = self.written.load(Ordering::Relaxed);
        if now_written != *seen {
            *seen = now_written;
            *since = Instant::now();
        }
        stop_requested() && since.elapsed() >= STALLED_FOR
    }

    /// The writer thread has stopped (on an error): collects its error.
    fn stopped(&mut self) -> io::Error {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            self.error = Some(match thread.join() {
                Ok(Err(error)) => error,
                Ok(Ok(())) => io::Error::other("the output thread stopped"),
                Err(_) => io::Error::other("the output thread panicked"),
            });
        }
        match &self.error {
            Some(error) => io::Error::new(error.kind(), error.to_string()),
            None => io::Error::other("the output thread stopped"),
        }
    }

    /// Hands the current buffer to the writer thread and takes a free one (waiting for one if
    /// all are in flight).
    fn hand_over(&mut self) -> io::Result<()> {
        if self.current.is_empty() {
            return Ok(());
        }
        if self.sender.is_none() {
            return Err(self.stopped());
        }
        let mut since = Instant::now();
        let mut seen = self.written.load(Ordering::Relaxed);
        let next = loop {
            match self.free.recv_timeout(POLL) {
                Ok(next) => break next,
                Err(RecvTimeoutError::Timeout) if self.stalled(&mut since, &mut seen) => {
                    return Err(self.give_up());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(self.stopped()),
            }
        };
        let full = std::mem::replace(&mut self.current, next);
        let length = full.len() as u64;
        let Some(sender) = &self.sender else {
            return Err(self.stopped());
        };
        if sender.send(Message::Data(full)).is_err() {
            return Err(self.stopped());
        }
        self.handed += length;
        self.unflushed = true;
        Ok(())
    }

    /// Writes everything handed over so far, flushes, and stops the thread. An output that
    /// takes nothing once a stop was asked for is given up (see [`STALLED_FOR`]).
    pub fn finish(&mut self) -> io::Result<()> {
        self.hand_over()?;
        self.sender = None;
        let mut since = Instant::now();
        let mut seen = self.written.load(Ordering::Relaxed);
        while self
            .thread
            .as_ref()
            .is_some_and(|thread| !thread.is_finished())
        {
            if self.stalled(&mut since, &mut seen) {
                return Err(self.give_up());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        match self.thread.take() {
            Some(thread) => match thread.join() {
                Ok(result) => result,
                Err(_) => Err(io::Error::other("the output thread panicked")),
            },
            None => Err(self.stopped()),
        }
    }
}

impl Output for BackgroundWriter {
    /// Renders into the buffer that goes to the writer thread: the event is never copied.
    fn append(
        &mut self,
        size_hint: usize,
        render: &mut dyn FnMut(&mut Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()> {
        // Room for the whole event, so that the buffer never reallocates (which copies all
        // it holds): a buffer without it is handed over first.
        if !self.current.is_empty() && self.current.len() + size_hint > self.current.capacity() {
            self.hand_over()?;
        }
        self.current.reserve(size_hint);
        let start = self.current.len();
        if let Err(error) = render(&mut self.current) {
            self.current.truncate(start);
            return Err(error);
        }
        if self.current.len() >= BUFFER_BYTES {
            self.hand_over()?;
        }
        Ok(())
    }
}

impl Write for BackgroundWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = BUFFER_BYTES.saturating_sub(self.current.len());
        if room == 0 {
            self.hand_over()?;
            return self.write(data);
        }
        let taken = data.len().min(room);
        self.current.extend_from_slice(&data[..taken]);
        Ok(taken)
    }

    /// Hands over what is buffered without waiting for it to be written. An error of the
    /// writer thread is returned here as soon as the thread has stopped on it, even when there
    /// is nothing new to hand over (the reader calls this on every idle tick).
    fn flush(&mut self) -> io::Result<()> {
        if self
            .thread
            .as_ref()
            .is_some_and(|thread| thread.is_finished())
        {
            return Err(self.stopped());
        }
        self.hand_over()?;
        if self.unflushed {
            let Some(sender) = &self.sender else {
                return Err(self.stopped());
            };
            if sender.send(Message::Flush).is_err() {
                return Err(self.stopped());
            }
            self.unflushed = false;
        }
        Ok(())
    }
}

impl Drop for BackgroundWriter {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A `Write` into shared memory, failing after `fail_after` bytes if set.
    struct Shared {
        bytes: Arc<Mutex<Vec<u8>>>,
        fail_after: Option<usize>,
    }

    impl Write for Shared {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            let mut bytes = self.bytes.lock().expect("lock");
            if self
                .fail_after
                .is_some_and(|limit| bytes.len() + data.len() > limit)
            {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            bytes.extend_from_slice(data);
            Ok(data.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A writer into memory that tests read back, failing after `fail_after` bytes if set.
    fn writer_into(fail_after: Option<usize>) -> (BackgroundWriter, Arc<Mutex<Vec<u8>>>) {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let writer = BackgroundWriter::new(Box::new(Shared {
            bytes: bytes.clone(),
            fail_after,
        }))
        .expect("thread");
        (writer, bytes)
    }

    #[test]
    fn every_byte_arrives_in_order() {
        let (mut writer, bytes) = writer_into(None);
        let mut expected = Vec::new();
        for size in [
            0,
            1,
            100,
            BUFFER_BYTES - 1,
            BUFFER_BYTES,
            3 * BUFFER_BYTES + 7,
            5,
        ] {
            let chunk: Vec<u8> = (0..size).map(|i| (i * 31 + size) as u8).collect();
            writer.write_all(&chunk).expect("write");
            writer.flush().expect("flush");
            expected.extend_from_slice(&chunk);
        }
        // More than the pool holds: the reader waits for buffers, nothing is dropped.
        for round in 0..3 * BUFFERS {
            let chunk = vec![round as u8; BUFFER_BYTES / 2 + round];
            writer.write_all(&chunk).expect("write");
            expected.extend_from_slice(&chunk);
        }
        writer.finish().expect("finish");
        assert!(*bytes.lock().expect("lock") == expected);
    }

    #[test]
    fn a_write_error_reaches_the_reader() {
        let (mut writer, _) = writer_into(Some(10));
        let mut result = Ok(());
        for _ in 0..3 * BUFFERS {
            result = writer
                .write_all(&vec![0; BUFFER_BYTES])
                .and_then(|()| writer.flush());
            if result.is_err() {
                break;
            }
        }
        let error = result
            .err()
            .or_else(|| writer.finish().err())
            .expect("error");
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn a_write_error_is_seen_on_an_idle_flush() {
        let (mut writer, _) = writer_into(Some(10));
        writer.write_all(&[0; 100]).expect("buffered");
        // Handed over (the thread may fail on it before this flush's own message is sent:
        // then this flush reports it already); then nothing new is written: the idle flushes
        // alone must report the thread's error.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let error = loop {
            if let Err(error) = writer.flush() {
                break error;
            }
            assert!(std::time::Instant::now() < deadline, "no error reported");
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn appended_events_arrive_whole_and_in_order() {
        let (mut writer, bytes) = writer_into(None);
        let mut expected = Vec::new();
        // Small events, events larger than a buffer, and hints that are too small.
        let sizes = [
            10,
            BUFFER_BYTES / 3,
            3 * BUFFER_BYTES,
            7,
            BUFFER_BYTES - 1,
            100,
        ];
        for (round, size) in sizes.iter().cycle().take(40).enumerate() {
            let event: Vec<u8> = (0..*size).map(|i| (i + round) as u8).collect();
            let hint = if round % 2 == 0 { *size } else { size / 2 };
            writer
                .append(hint, &mut |line| {
                    line.extend_from_slice(&event);
                    Ok(())
                })
                .expect("append");
            expected.extend_from_slice(&event);
            // A failed render leaves nothing behind.
            let error = writer.append(16, &mut |line| {
                line.extend_from_slice(b"half an event");
                Err(io::Error::other("render failed"))
            });
            assert!(error.is_err());
        }
        writer.finish().expect("finish");
        assert!(*bytes.lock().expect("lock") == expected);
    }

    #[test]
    fn appending_into_a_full_buffer_hands_it_over_first() {
        let (mut writer, _) = writer_into(None);
        writer
            .write_all(&vec![1; BUFFER_BYTES - 10])
            .expect("write");
        let capacity = writer.current.capacity();
        writer
            .append(100, &mut |line| {
                line.extend_from_slice(&[2; 100]);
                Ok(())
            })
            .expect("append");
        // The event went into a fresh buffer: the full one was not grown (which copies it).
        assert_eq!(writer.current.len(), 100);
        assert_eq!(writer.current.capacity(), capacity);
        writer.finish().expect("finish");
    }
}
