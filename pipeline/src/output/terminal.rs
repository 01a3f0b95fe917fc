//! Events on a terminal that the traced command writes to as well: written in whole lines, so
//! that the command's output can only come between two lines of ours, never inside one.

use std::io::{self, IsTerminal, Write};

/// Whether probectl's stdout is a terminal.
pub fn stdout_is_terminal() -> bool {
    io::stdout().is_terminal()
}

/// Holds what is written until a flush (the event loop flushes after each batch of events),
/// then writes every complete line in one write(2): a terminal write is not split by other
/// writers. A partial line waits for its end. Above `limit` bytes held, the complete lines are
/// written at once.
pub struct WholeLines<W: Write> {
    inner: W,
    held: Vec<u8>,
    limit: usize,
}

impl<W: Write> WholeLines<W> {
    pub fn new(inner: W, limit: usize) -> WholeLines<W> {
        WholeLines {
            inner,
            held: Vec::new(),
            limit,
        }
    }

    /// Writes the complete lines held; keeps the partial last one.
    fn write_lines(&mut self) -> io::Result<()> {
        let Some(last_newline) = memchr::memrchr(b'\n', &self.held) else {
            return Ok(());
        };
        let result = self.inner.write_all(&self.held[..=last_newline]);
        self.held.drain(..=last_newline);
        result
    }
}

impl<W: Write> Write for WholeLines<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.held.extend_from_slice(bytes);
        if self.held.len() >= self.limit {
            self.write_lines()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_lines()?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for WholeLines<W> {
    fn drop(&mut self) {
        // The end of the run: a last line without its newline is still written.
        let _ = self.inner.write_all(&self.held);
        let _ = self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each write the inner writer gets.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl Write for &mut Writes {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.push(bytes.to_vec());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn only_whole_lines_are_written_and_each_batch_at_once() {
        let mut writes = Writes::default();
        {
            let mut lines = WholeLines::new(&mut writes, 1 << 16);
            lines.write_all(b"--- header\nfirst ").expect("write");
            lines.write_all(b"line\nsecond").expect("write");
            lines.flush().expect("flush");
            lines.write_all(b" half\n").expect("write");
            lines.flush().expect("flush");
            lines.write_all(b"no newline at the end").expect("write");
        }
        assert_eq!(
            writes.0,
            [
                b"--- header\nfirst line\n".to_vec(),
                b"second half\n".to_vec(),
                b"no newline at the end".to_vec()
            ]
        );
    }

    #[test]
    fn over_the_limit_complete_lines_go_out_before_a_flush() {
        let mut writes = Writes::default();
        {
            let mut lines = WholeLines::new(&mut writes, 8);
            lines.write_all(b"0123456789\nab").expect("write");
            assert_eq!(writes_len(&lines), 1);
        }
        assert_eq!(writes.0, [b"0123456789\n".to_vec(), b"ab".to_vec()]);
    }

    fn writes_len(lines: &WholeLines<&mut Writes>) -> usize {
        lines.inner.0.len()
    }
}
