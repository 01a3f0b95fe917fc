//! What a finished session reports on stderr: totals, kernel counters, and one record per
//! connection.

use std::process::ExitStatus;

use crate::bpf::KernelStats;
use crate::connections::Connection;

/// Connections the summary lists one by one (those with losses are always listed).
const SUMMARY_CONNECTIONS: usize = 20;

/// What a finished session reports.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub events: u64,
    pub bytes_captured: u64,
    /// Bytes over the per-call capture limit.
    pub bytes_truncated: u64,
    pub kernel: KernelStats,
    /// Ring buffer records of a kind this version does not know.
    pub unknown_records: u64,
    /// Every connection seen, with its byte counts and gaps.
    pub connections: Vec<Connection>,
    /// Events that arrived behind their stream's position.
    pub out_of_order: u64,
    pub probes_attached: usize,
    pub attach_failures: usize,
    /// Attach points of programs started during the run that failed to attach.
    pub late_attach_failures: usize,
    /// The exit status of the command probectl started, if any.
    pub command_status: Option<ExitStatus>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "probectl: {} events, {} bytes captured, {} bytes truncated (over --max-bytes), \
             {} events lost ({} bytes), {} probes attached, {} failed to attach",
            self.events,
            self.bytes_captured,
            self.bytes_truncated,
            self.kernel.chunks_lost,
            self.kernel.bytes_lost,
            self.probes_attached,
            self.attach_failures,
        )?;
        if self.kernel.read_faults > 0 || self.kernel.length_faults > 0 {
            write!(
                f,
                ", {} unreadable buffers, {} unreadable lengths",
                self.kernel.read_faults, self.kernel.length_faults
            )?;
        }
        let closed = self.connections.iter().filter(|c| c.closed).count();
        write!(
            f,
            "\nprobectl: {} connections ({closed} closed), {} calls without a known fd, {} calls on two fds",
            self.connections.len(),
            self.kernel.fd_unknown,
            self.kernel.fd_mismatches,
        )?;
        if self.kernel.records_lost > 0 {
            write!(f, ", {} connection records lost", self.kernel.records_lost)?;
        }
        if self.kernel.nesting_overflows > 0 {
            write!(
                f,
                ", {} calls not traced (nested too deep)",
                self.kernel.nesting_overflows
            )?;
        }
        if self.out_of_order > 0 {
            write!(f, ", {} events out of order", self.out_of_order)?;
        }
        if self.unknown_records > 0 {
            write!(f, ", {} unknown records", self.unknown_records)?;
        }
        // Every connection with a loss, and the first few of the others: one record each.
        let mut listed = 0;
        for connection in &self.connections {
            let lossy = connection.gaps != [0, 0];
            if !lossy && listed >= SUMMARY_CONNECTIONS {
                continue;
            }
            listed += 1;
            write!(
                f,
                "\nprobectl: conn#{} {} (pid {}): {} bytes written, {} read",
                connection.id,
                connection.describe(),
                connection.pid,
                connection.moved[0],
                connection.moved[1],
            )?;
            if lossy {
                write!(
                    f,
                    ", lost {} bytes written, {} bytes read",
                    connection.gaps[0], connection.gaps[1]
                )?;
            }
            write!(
                f,
                "{}",
                if connection.closed {
                    ", closed"
                } else {
                    ", open"
                }
            )?;
        }
        if listed < self.connections.len() {
            write!(
                f,
                "\nprobectl: ... and {} more connections",
                self.connections.len() - listed
            )?;
        }
        Ok(())
    }
}
