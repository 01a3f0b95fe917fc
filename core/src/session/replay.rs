//! `probectl replay FILE`: a recording (`probectl run --record FILE`) through the data
//! pipeline again, with the same clock base, capture limit, attach table and ticks as the live
//! run: the output is what the live run printed in the same format, and any other format or
//! `--decode` can be asked for. No BPF, no privileges: a recording sent with a bug report
//! replays anywhere.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;

use crate::capture::pipeline::{AttachTable, Pipeline};
use crate::capture::recording::{End, Frame, Reader, RecordingError, Start};
use crate::capture::summary::Summary;
use crate::output::{open_output, Format, OutputFile};
use crate::session::RunError;

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub recording: PathBuf,
    pub format: Format,
    pub output: Option<PathBuf>,
    /// `--force`: an existing regular output file may be overwritten (it keeps its mode).
    pub force: bool,
    /// `--decode http` (with `--max-body`).
    pub decode: Option<(crate::decode::http::Decode, u64)>,
    /// `--memory-budget`: what the writer may hold for all connections.
    pub memory_budget: u64,
}

/// What a replay found, besides its output.
#[derive(Debug)]
pub struct Replayed {
    /// The summary of the recorded run, with the replay's own counts (the same as the live
    /// run's, for the same options).
    pub summary: Summary,
    pub start: Start,
    /// The recording stopped inside a frame, or before its end frame: the run was killed
    /// while recording, and the summary lacks what only its end could say.
    pub incomplete: bool,
    /// Frames of the run's input the recording did not keep (it reached `--record-limit`):
    /// the replay shows the run up to there.
    pub frames_not_recorded: u64,
}

/// Replays the recording of `options` into the output it names.
pub fn replay(options: &ReplayOptions) -> Result<Replayed, RunError> {
    let mut reader = Reader::open(&options.recording)?;
    let table = AttachTable::default();
    let output_file = options
        .output
        .as_deref()
        .map(|path| OutputFile::prepare(path, options.force))
        .transpose()?;
    let out = open_output(output_file)?;
    let mut pipeline = Pipeline::new(
        table.clone(),
        super::writer_for(options.format, options.decode, options.memory_budget, None)?,
        out,
        reader.start.clock_offset,
        reader.start.max_capture_bytes,
    )
    .map_err(|source| RunError::Io {
        context: "starting the output thread",
        source,
    })?;
    let mut end: Option<End> = None;
    let mut writing = true;
    while writing {
        let Some(frame) = reader.next_frame()? else {
            break;
        };
        match frame {
            Frame::Attach { first_id, infos } => {
                if !table.extend(first_id, infos) {
                    return Err(RecordingError::Damaged {
                        path: options.recording.clone(),
                        what: format!("attach ids from {first_id} do not continue the table"),
                        at: 0,
                    }
                    .into());
                }
            }
            Frame::Record(record) => pipeline.record(&record),
            Frame::Process { pid, identity } => pipeline.set_identity(pid, identity),
            Frame::Tick(now_ns) => writing = pipeline.flush(now_ns),
            Frame::End(recorded) => end = Some(*recorded),
        }
        // Only the live run acts on these (the control plane): kept bounded here.
        pipeline.take_lookups();
        pipeline.take_exited();
    }
    let incomplete = end.is_none();
    let end = end.unwrap_or_default();
    let frames_not_recorded = end.frames_not_recorded;
    let write_error = pipeline.finish(&end.open_positions);
    let command_status = match (end.command_code, end.command_signal) {
        (Some(code), _) => Some(std::process::ExitStatus::from_raw((code & 0xff) << 8)),
        (None, Some(signal)) => Some(std::process::ExitStatus::from_raw(signal & 0x7f)),
        (None, None) => None,
    };
    let summary = super::finished(
        super::summarize(&pipeline, &end, command_status),
        write_error,
        options.output.clone(),
    )?;
    Ok(Replayed {
        summary,
        start: reader.start,
        incomplete: incomplete || reader.cut_short,
        frames_not_recorded,
    })
}
