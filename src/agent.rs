//! `probectl agent --config FILE`: a long-running system-wide probectl whose group, selection,
//! output and exporter come from a TOML file, with structured logs (JSON lines on stderr).
//! SIGHUP reloads the file: a valid new configuration ends the running trace as SIGTERM does
//! (everything it captured is delivered, written and exported, and its summary logged), then
//! the next starts with it; an invalid one is logged and the running trace goes on. SIGINT and
//! SIGTERM end the agent.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use probectl_core::output::Format;
use probectl_core::selection::Selection;
use probectl_core::session::{run, RunOptions, Target};
use probectl_core::symbols::placement::PlacementMode;
use serde::Deserialize;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

use crate::exit;

/// The configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A group of probes.toml, or "all".
    pub group: String,
    #[serde(default)]
    pub select: Select,
    pub output: Output,
    #[serde(default)]
    pub export: Export,
    /// The container runtime's CRI socket that names pods (`--cri-socket`; default: the
    /// runtimes' default sockets, where one exists).
    pub cri_socket: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Select {
    #[serde(default)]
    pub container: Vec<String>,
    #[serde(default)]
    pub cgroup: Vec<PathBuf>,
    pub comm: Option<String>,
    #[serde(default)]
    pub port: Vec<u16>,
    #[serde(default)]
    pub host: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// Appended to (created 0600): the runs of one agent follow each other in it.
    pub file: PathBuf,
    /// "text" or "json" (the default).
    #[serde(default = "json")]
    pub format: String,
    /// "http" (live) or "http=exchange".
    pub decode: Option<String>,
}

fn json() -> String {
    "json".into()
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Export {
    /// `http://HOST:4318` (OTLP/HTTP).
    pub otlp: Option<String>,
    /// `http://HOST:4317` (OTLP/gRPC).
    pub otlp_grpc: Option<String>,
    /// Also send payloads as log records tied to the spans (`--export-payloads`).
    #[serde(default)]
    pub payloads: bool,
    /// PEM certificates trusted for an `https://` receiver (`--export-ca`).
    pub ca_file: Option<PathBuf>,
}

/// Reads and checks the configuration.
pub fn load(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read the configuration {}: {error}", path.display()))?;
    let config: Config = toml::from_str(&text)
        .map_err(|error| format!("the configuration {}: {error}", path.display()))?;
    config.options(None)?;
    Ok(config)
}

impl Config {
    /// The run it describes.
    fn options(&self, stop: Option<Arc<Notify>>) -> Result<RunOptions, String> {
        let format = match self.output.format.as_str() {
            "json" => Format::Json,
            "text" => Format::Text,
            other => return Err(format!("output.format {other:?}: \"json\" or \"text\"")),
        };
        let decode = match self.output.decode.as_deref() {
            None => None,
            Some("http") => Some(probectl_core::decode::http::Decode::Http(
                probectl_core::decode::http::live::Mode::Live,
            )),
            Some("http=exchange") => Some(probectl_core::decode::http::Decode::Http(
                probectl_core::decode::http::live::Mode::Exchange,
            )),
            Some(other) => {
                return Err(format!(
                    "output.decode {other:?}: \"http\" or \"http=exchange\""
                ))
            }
        };
        let export = match (&self.export.otlp, &self.export.otlp_grpc) {
            (Some(url), None) => Some(format!("otlp={url}")),
            (None, Some(url)) => Some(format!("otlp-grpc={url}")),
            (None, None) => None,
            (Some(_), Some(_)) => return Err("export: otlp or otlp_grpc, not both".into()),
        }
        .map(|text| probectl_export::ExportOptions::parse(&text).map_err(|e| e.to_string()))
        .transpose()?
        .map(|export| probectl_export::ExportOptions {
            payloads: self.export.payloads,
            ca_file: self.export.ca_file.clone(),
            ..export
        });
        Ok(RunOptions {
            plugin: self.group.clone(),
            target: Target::AllProcesses,
            specs: None,
            format,
            output: Some(self.output.file.clone()),
            force: false,
            max_capture_bytes: 1 << 20,
            ring_bytes: 32 << 20,
            decode: decode.map(|decode| (decode, 1 << 20)),
            memory_budget: probectl_core::budget::DEFAULT_MEMORY_BUDGET,
            placement: PlacementMode::Auto,
            wait_for_library: false,
            record: None,
            record_limit: probectl_core::capture::recording::DEFAULT_RECORD_LIMIT,
            keylog: None,
            packets: None,
            selection: Selection {
                containers: self.select.container.clone(),
                cgroups: self.select.cgroup.clone(),
                comm: self.select.comm.clone(),
                ports: self.select.port.clone(),
                hosts: self.select.host.clone(),
            },
            export,
            cri_socket: self.cri_socket.clone(),
            append: true,
            stop,
        })
    }
}

/// Runs the agent until SIGINT/SIGTERM.
pub fn command(path: &Path) -> ExitCode {
    exit::json_logs();
    let mut config = match load(path) {
        Ok(config) => config,
        Err(message) => return exit::error(message, exit::ERROR),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return exit::error(format!("starting the runtime: {error}"), exit::ERROR),
    };
    runtime.block_on(async {
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => hangup,
            Err(error) => return exit::error(format!("installing SIGHUP: {error}"), exit::ERROR),
        };
        let mut generation = 1u64;
        loop {
            let stop = Arc::new(Notify::new());
            let options = match config.options(Some(stop.clone())) {
                Ok(options) => options,
                Err(message) => return exit::error(message, exit::ERROR),
            };
            exit::log_json(
                "info",
                Some("agent"),
                "starting",
                Some(serde_json::json!({
                    "generation": generation,
                    "config": path.display().to_string(),
                    "group": config.group,
                    "output": config.output.file.display().to_string(),
                })),
            );
            let session = run(options);
            tokio::pin!(session);
            let mut next = None;
            let result = loop {
                tokio::select! {
                    result = &mut session => break result,
                    _ = hangup.recv() => match load(path) {
                        Ok(new) => {
                            exit::log_json("info", Some("agent"), "reloading: the running trace ends, everything it holds delivered", None);
                            next = Some(new);
                            stop.notify_one();
                        }
                        Err(message) => exit::log_json(
                            "error",
                            Some("agent"),
                            &format!("reload refused, the running configuration stays: {message}"),
                            None,
                        ),
                    },
                }
            };
            match result {
                Ok(summary) => exit::log_json(
                    "info",
                    Some("agent"),
                    "trace ended",
                    Some(serde_json::json!({"generation": generation, "summary": summary.to_json()})),
                ),
                Err(error) => {
                    exit::log_json("error", Some("agent"), &error.to_string(), None);
                    if next.is_none() {
                        return ExitCode::from(exit::ERROR);
                    }
                }
            }
            match next {
                Some(new) => {
                    config = new;
                    generation += 1;
                }
                None => return ExitCode::SUCCESS,
            }
        }
    })
}
