//! [`PgError`]: everything that can go wrong while pgha touches its local Postgres, each variant
//! carrying what an operator needs to act (the command, the exit status, the last lines of
//! stderr or of the server log, the SQLSTATE and message from Postgres). Input: failures from the
//! other `pg` files; output: one error type with messages that say what to do. It never carries
//! a password: tool command lines never contain one (passwords travel in the environment or in
//! 0600 files), and connection strings are shown redacted.

use crate::sys::user::UserError;
use std::path::PathBuf;
use std::time::Duration;

/// How many lines of a tool's stderr or of the server log an error keeps.
pub const TAIL_LINES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(
        "no PostgreSQL binaries found (looked in {searched}): install the server package \
         (`apt-get install postgresql-15` or `dnf install postgresql15-server`) or set \
         postgresql.bin_dir"
    )]
    NoBinDir { searched: String },
    #[error(
        "{} lacks {}: install the complete server package for that version (`apt-get install \
         postgresql-<version>`) or set postgresql.bin_dir to a directory that has them",
        dir.display(), missing.join(", ")
    )]
    MissingBinaries { dir: PathBuf, missing: Vec<&'static str> },
    #[error(
        "the data directory {} was made by PostgreSQL {version} but {} does not exist: install \
         postgresql-{version} or set postgresql.bin_dir",
        data_dir.display(), expected.display()
    )]
    VersionNotInstalled { data_dir: PathBuf, version: String, expected: PathBuf },
    #[error("{action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Conf(#[from] crate::pg::conf::ConfError),
    #[error("cannot start `{command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("the process spawner thread is gone; pgha cannot start children any more (restart pgha)")]
    SpawnerGone,
    #[error("`{command}` failed ({status}); its last output lines:\n{stderr}")]
    ToolFailed { command: String, status: String, stderr: String },
    #[error(
        "`{command}` did not finish within {timeout:?} and was killed; its last output lines:\n{stderr}"
    )]
    ToolTimedOut { command: String, timeout: Duration, stderr: String },
    #[error("cannot read pg_controldata output of {}: {problem}", data_dir.display())]
    ControlData { data_dir: PathBuf, problem: String },
    #[error(
        "cannot {action} into {}: it exists and is not empty; remove it first (re-initialise \
         the member) or choose another postgresql.data_dir",
        path.display()
    )]
    DataDirNotEmpty { action: &'static str, path: PathBuf },
    #[error(
        "Postgres (pid {pid}) of {} exited while starting ({status}){hint}; last lines of {}:\n{log}",
        data_dir.display(), log_file.display()
    )]
    StartFailed { pid: u32, data_dir: PathBuf, status: String, hint: String, log_file: PathBuf, log: String },
    #[error(
        "Postgres (pid {pid}) of {} did not accept connections within {timeout:?} (last \
         answer: {last}); last lines of {}:\n{log}",
        data_dir.display(), log_file.display()
    )]
    StartTimedOut {
        pid: u32,
        data_dir: PathBuf,
        timeout: Duration,
        last: String,
        log_file: PathBuf,
        log: String,
    },
    #[error(
        "process group {pgid} still has processes {after:?} after SIGKILL (stuck in the kernel, \
         e.g. on a hung disk); the primary lease must not be released while they exist"
    )]
    StillRunning { pgid: u32, after: Duration },
    #[error(
        "a process (pid {pid}) of {} could not be stopped: {problem}",
        data_dir.display()
    )]
    Leftover { pid: u32, data_dir: PathBuf, problem: String },
    /// `code` is the SQLSTATE when Postgres answered (e.g. 57P03 while it starts up).
    #[error("cannot connect to the local Postgres at {socket}: {message}")]
    Connect { socket: String, code: Option<String>, message: String },
    #[error("{what} failed: {message}")]
    Query { what: &'static str, code: Option<String>, message: String },
    #[error("{what} got no answer within {timeout:?} (the query was cancelled)")]
    QueryTimedOut { what: &'static str, timeout: Duration },
    #[error("Postgres did not finish promoting within {wait:?}; it may still complete: probe again")]
    PromoteTimedOut { wait: Duration },
    #[error("{what}: {problem}")]
    Invalid { what: &'static str, problem: String },
}

impl PgError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> PgError {
        let path = path.into();
        move |source| PgError::Io { action, path, source }
    }

    /// The SQLSTATE of a failed query or connection, when Postgres sent one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            PgError::Query { code, .. } | PgError::Connect { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    pub(crate) fn query(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> PgError {
        move |e| PgError::Query { what, code: sqlstate_of(&e), message: describe(&e) }
    }
}

/// The SQLSTATE Postgres sent with an error, if it sent one.
pub fn sqlstate_of(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|db| db.code().code().to_owned())
}

/// One line for a tokio-postgres error. Its `Display` is only "db error" (STACK.md item 9): the
/// message, detail, hint and SQLSTATE are in `as_db_error()`; other errors carry their cause
/// in `source()`.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" (detail: {detail})"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!(" (hint: {hint})"));
        }
        return text;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The last `n` lines of `text`, for error messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }
}
