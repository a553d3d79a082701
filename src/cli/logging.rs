//! Logging setup: `tracing` events as text or JSON lines, to stderr or to `log.file`, at
//! `log.level` (or `PGHA_LOG`, an `EnvFilter` directive that wins over the file).
//!
//! Under systemd, stderr is the journal: [`journal_stderr`] tells so by comparing stderr with
//! `$JOURNAL_STREAM` (as sd-journal(3) says, so a shell started from a service is not fooled).
//! Text lines then carry no timestamp (the journal stamps each line) and start with a `<N>`
//! syslog priority, which journald turns into the entry's priority (`journalctl -p warning`).
//! Elsewhere lines carry an RFC 3339 timestamp; JSON always carries its own.
//!
//! `pgha run` keeps a [`LogHandle`]: on SIGHUP it rebuilds the filter and the writer from the
//! re-read `log` section, which applies a new level or format and reopens `log.file` (so
//! logrotate's `postrotate` can send SIGHUP, and no `copytruncate` is needed).

use crate::config::file::{LogConfig, LogFormat};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// The environment variable whose filter directive overrides `log.level`.
pub const LOG_ENV: &str = "PGHA_LOG";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(
        "cannot open log.file {}: {source}; create its directory and let the service user write \
         there, or remove log.file to log to stderr (the journal under systemd)",
        path.display()
    )]
    File { path: PathBuf, source: std::io::Error },
    #[error("cannot change the logging setup: {0}")]
    Reload(String),
}

type Base = Layered<reload::Layer<EnvFilter, Registry>, Registry>;
type Output = Box<dyn Layer<Base> + Send + Sync>;

/// Changes the running logger (see the module comment).
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    output: reload::Handle<Output, Base>,
}

impl LogHandle {
    /// Applies `cfg`: level (unless `PGHA_LOG` is set), format and destination, reopening
    /// `log.file`. On error nothing changes.
    pub fn apply(&self, cfg: &LogConfig) -> Result<(), LogError> {
        let output = output_layer(Some(cfg))?;
        self.filter.reload(filter(Some(cfg))).map_err(|e| LogError::Reload(e.to_string()))?;
        self.output.reload(output).map_err(|e| LogError::Reload(e.to_string()))
    }
}

/// Sets up logging for a short-lived subcommand (`init`, `join`, `demo`): stderr, info, text.
pub fn init(cfg: Option<&LogConfig>) {
    if let Ok(output) = output_layer(cfg) {
        let (filter, _) = reload::Layer::new(filter(cfg));
        let (output, _) = reload::Layer::new(output);
        let _ = tracing_subscriber::registry().with(filter).with(output).try_init();
    }
}

/// Sets up logging for `pgha run` and returns the handle SIGHUP uses.
pub fn init_reloadable(cfg: &LogConfig) -> Result<LogHandle, LogError> {
    let (filter, filter_handle) = reload::Layer::new(filter(Some(cfg)));
    let (output, output_handle) = reload::Layer::new(output_layer(Some(cfg))?);
    let _ = tracing_subscriber::registry().with(filter).with(output).try_init();
    Ok(LogHandle { filter: filter_handle, output: output_handle })
}

/// Whether `PGHA_LOG` overrides `log.level`.
pub fn level_from_env() -> bool {
    std::env::var_os(LOG_ENV).is_some()
}

fn filter(cfg: Option<&LogConfig>) -> EnvFilter {
    let level = cfg.map(|c| c.level.as_str()).unwrap_or("info");
    EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(level))
}

fn output_layer(cfg: Option<&LogConfig>) -> Result<Output, LogError> {
    let json = cfg.is_some_and(|c| matches!(c.format, LogFormat::Json));
    let file = match cfg.and_then(|c| c.file.as_ref()) {
        Some(path) => Some(Arc::new(open_log_file(path)?)),
        None => None,
    };
    let journal = file.is_none() && journal_stderr();
    let ansi = file.is_none() && !journal && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer().with_target(false).with_ansi(ansi);
    Ok(match (file, json, journal) {
        (Some(f), true, _) => layer.json().with_writer(f).boxed(),
        (Some(f), false, _) => layer.with_writer(f).boxed(),
        (None, true, _) => layer.json().with_writer(std::io::stderr).boxed(),
        (None, false, true) => layer
            .event_format(JournalFormat(tracing_subscriber::fmt::format().without_time().with_target(false)))
            .with_writer(std::io::stderr)
            .boxed(),
        (None, false, false) => layer.with_writer(std::io::stderr).boxed(),
    })
}

/// Appends; readable by the service user's group (an operator in it), not by everyone.
fn open_log_file(path: &std::path::Path) -> Result<File, LogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|source| LogError::File { path: path.to_owned(), source })
}

/// Whether stderr is the journal stream systemd gave this process (`$JOURNAL_STREAM` is
/// `<device>:<inode>` of it).
pub fn journal_stderr() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr()) else { return false };
    value.to_str().is_some_and(|v| is_stream(v, stat.st_dev, stat.st_ino))
}

fn is_stream(value: &str, dev: u64, ino: u64) -> bool {
    value.split_once(':').is_some_and(|(d, i)| d.parse() == Ok(dev) && i.parse() == Ok(ino))
}

/// syslog priority of a level, for the `<N>` prefix journald reads.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Prefixes each line of an inner format with its `<N>` syslog priority: journald makes
/// every line an entry of its own, so a multi-line message (a config error with its snippet)
/// keeps its priority on every line.
struct JournalFormat<F>(F);

impl<S, N, F> FormatEvent<S, N> for JournalFormat<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut text = String::new();
        self.0.format_event(ctx, Writer::new(&mut text), event)?;
        let prefix = priority(event.metadata().level());
        for line in text.lines() {
            writeln!(writer, "<{prefix}>{line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_match_stderr() {
        assert!(is_stream("2049:123456", 2049, 123456));
        assert!(!is_stream("2049:123456", 2049, 1));
        assert!(!is_stream("garbage", 2049, 123456));
        assert!(!is_stream("", 0, 0));
    }

    #[test]
    fn priorities_match_syslog() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::TRACE), 7);
    }

    #[test]
    fn an_unwritable_log_file_is_named() {
        let cfg = LogConfig { file: Some("/nonexistent-dir/pgha.log".into()), ..LogConfig::default() };
        let err = output_layer(Some(&cfg)).err().expect("cannot open");
        assert!(err.to_string().contains("/nonexistent-dir/pgha.log"), "{err}");
    }
}
