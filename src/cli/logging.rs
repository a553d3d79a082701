//! Logging setup: `tracing` to stderr, text or JSON, level from the config (or `PGHA_LOG`).
//! Under systemd (`JOURNAL_STREAM` set) text lines carry no timestamp: the journal adds its own.

use crate::config::file::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

pub fn init(cfg: Option<&LogConfig>) {
    let level = cfg.map(|c| c.level.as_str()).unwrap_or("info");
    let filter = EnvFilter::try_from_env("PGHA_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let json = cfg.is_some_and(|c| matches!(c.format, LogFormat::Json));
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    let _ = if json {
        builder.json().try_init()
    } else if journal {
        builder.without_time().with_ansi(false).try_init()
    } else {
        builder.try_init()
    };
}
