//! [`Postmaster`]: the local Postgres server as pgha's child process (no `pg_ctl`, no daemon:
//! DESIGN.md, "Postgres management"). Input: the tools (binaries, service user, spawner), the
//! data directory, the server log file and how to connect; output: a running postmaster that
//! accepts connections, its pid, its exit once it crashes, and stops whose end is confirmed by
//! `waitpid` and by the absence of any process of its group. That confirmation is what lets the
//! HA loop release the primary lease (DESIGN.md, lease rule 4); a stop that cannot confirm it
//! is an error, never a success. Dropping a `Postmaster` SIGKILLs its process group.
//!
//! The postmaster runs with the data directory as working directory, in its own process group
//! with `PR_SET_PDEATHSIG(SIGKILL)` (see `spawner`), and writes its log to stderr, which is
//! the log file opened for append (`logging_collector` is off, `conf` sees to that).

use crate::clock;
use crate::pg::child::ChildProcess;
use crate::pg::ctl::PgTools;
use crate::pg::error::{tail, PgError, TAIL_LINES};
use crate::pg::session::LocalConnect;
use crate::pg::spawner;
use nix::sys::signal::Signal;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

/// How often readiness is checked while Postgres starts.
const READY_POLL: Duration = Duration::from_millis(50);
/// How long SIGKILLed processes may take to disappear before the stop is reported as failed.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How much of the end of the log file is read for an error message.
const LOG_TAIL_BYTES: u64 = 16 * 1024;

/// Postgres's three shutdown modes (the signals `pg_ctl stop -m` sends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// SIGTERM: waits for clients to disconnect, then a shutdown checkpoint.
    Smart,
    /// SIGINT: disconnects clients, rolls back their transactions, shutdown checkpoint.
    Fast,
    /// SIGQUIT: every process exits at once; crash recovery at the next start.
    Immediate,
}

impl StopMode {
    /// The signal the postmaster gets for this mode.
    pub fn signal(self) -> Signal {
        match self {
            StopMode::Smart => Signal::SIGTERM,
            StopMode::Fast => Signal::SIGINT,
            StopMode::Immediate => Signal::SIGQUIT,
        }
    }
}

/// How a postmaster ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped {
    pub status: ExitStatus,
    /// The mode's signal did not stop it in time and its group was SIGKILLed.
    pub killed: bool,
}

/// Whether Postgres accepts connections yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Accepting,
    /// Not yet: starting, replaying to a consistent state, or no socket yet. The text is the
    /// last answer, for the log.
    NotYet(String),
}

#[derive(Debug)]
pub struct Postmaster {
    child: ChildProcess,
    data_dir: PathBuf,
    log_file: PathBuf,
    /// Where this run's lines start in the log file, so errors quote only them.
    log_start: u64,
    connect: LocalConnect,
}

impl Postmaster {
    /// Starts Postgres and waits up to `timeout` until it accepts connections; on failure it
    /// is stopped and the error quotes the server log. A replica that must replay much WAL
    /// before it is consistent may need [`Postmaster::spawn`] and [`Postmaster::readiness`].
    pub async fn start(
        tools: &PgTools,
        data_dir: &Path,
        log_file: &Path,
        connect: &LocalConnect,
        timeout: Duration,
    ) -> Result<Postmaster, PgError> {
        let mut postmaster = Postmaster::spawn(tools, data_dir, log_file, connect).await?;
        postmaster.wait_ready(timeout).await?;
        Ok(postmaster)
    }

    /// Starts Postgres without waiting for it.
    pub async fn spawn(
        tools: &PgTools,
        data_dir: &Path,
        log_file: &Path,
        connect: &LocalConnect,
    ) -> Result<Postmaster, PgError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(log_file)
            .map_err(PgError::io("cannot open the server log", log_file))?;
        if crate::sys::user::is_root() {
            let user = tools.user();
            std::os::unix::fs::fchown(&log, Some(user.uid), Some(user.gid))
                .map_err(PgError::io("cannot change the owner of", log_file))?;
        }
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let stderr = log.try_clone().map_err(PgError::io("cannot open the server log", log_file))?;
        let program = tools.bin().program("postgres");
        let mut command = spawner::command(&program);
        command.arg("-D").arg(data_dir).current_dir(data_dir).stdin(Stdio::null()).stdout(log).stderr(stderr);
        let display = format!("{} -D {}", program.display(), data_dir.display());
        let child = tools.spawner().spawn(command, tools.user(), display).await?;
        tracing::info!(pid = child.pid(), data_dir = %data_dir.display(), "started Postgres");
        Ok(Postmaster {
            child,
            data_dir: data_dir.to_owned(),
            log_file: log_file.to_owned(),
            log_start,
            connect: connect.clone(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// How a crash is noticed: the exit status once the postmaster has exited (it is then
    /// reaped; call [`Postmaster::stop`] or [`Postmaster::kill`] to make sure its backends
    /// are gone too).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, PgError> {
        self.child.try_wait().map_err(PgError::io("cannot wait for Postgres", &self.data_dir))
    }

    /// One readiness check: a connection as pgha's superuser over its socket. An
    /// authentication failure (SQLSTATE class 28) is an error: waiting does not cure it.
    pub async fn readiness(&self) -> Result<Readiness, PgError> {
        match self.connect.connect().await {
            Ok(_) => Ok(Readiness::Accepting),
            Err(e) if e.sqlstate().is_some_and(|code| code.starts_with("28")) => Err(e),
            Err(e) => Ok(Readiness::NotYet(e.to_string())),
        }
    }

    /// Waits until Postgres accepts connections. If it exits meanwhile or `timeout` passes,
    /// it is stopped (immediately: it never served) and the error quotes this run's log.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), PgError> {
        let deadline = clock::boot_now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                let _ = self.child.confirm_group_gone(KILL_WAIT).await;
                let log = self.log_tail();
                let hint = if log.contains("Address already in use") {
                    format!(
                        ": port {} is taken by another server (a distribution's own cluster? e.g. \
                         `pg_dropcluster --stop 15 main`), or change postgresql.listen",
                        self.connect.port()
                    )
                } else {
                    String::new()
                };
                return Err(PgError::StartFailed {
                    pid: self.pid(),
                    data_dir: self.data_dir.clone(),
                    status: status.to_string(),
                    hint,
                    log_file: self.log_file.clone(),
                    log,
                });
            }
            let last = match self.readiness().await {
                Ok(Readiness::Accepting) => return Ok(()),
                Ok(Readiness::NotYet(answer)) => answer,
                Err(e) => {
                    let _ = self.stop(StopMode::Immediate, KILL_WAIT).await;
                    return Err(e);
                }
            };
            if clock::boot_now() >= deadline {
                let _ = self.stop(StopMode::Immediate, KILL_WAIT).await;
                return Err(PgError::StartTimedOut {
                    pid: self.pid(),
                    data_dir: self.data_dir.clone(),
                    timeout,
                    last,
                    log_file: self.log_file.clone(),
                    log: self.log_tail(),
                });
            }
            clock::sleep(READY_POLL).await;
        }
    }

    /// Stops Postgres with `mode`; if it has not exited after `timeout`, SIGKILLs its group.
    /// Returns only once `waitpid` reported the postmaster's exit and no process of its group
    /// is left (else [`PgError::StillRunning`]). Also the way to clean up after a crash.
    pub async fn stop(&mut self, mode: StopMode, timeout: Duration) -> Result<Stopped, PgError> {
        let io = PgError::io("cannot stop Postgres", self.data_dir.clone());
        let result = async {
            if self.child.try_wait()?.is_none() {
                self.child.signal(mode.signal())?;
            }
            if let Some(status) = self.child.wait_for(timeout).await? {
                if self.child.confirm_group_gone(KILL_WAIT).await? {
                    return Ok(Some(Stopped { status, killed: false }));
                }
                return Ok(None);
            }
            tracing::warn!(pid = self.pid(), ?mode, ?timeout, "Postgres did not stop in time: SIGKILL");
            let killed = self.child.kill_and_confirm(KILL_WAIT).await?;
            Ok(killed.map(|status| Stopped { status, killed: true }))
        }
        .await;
        match result {
            Ok(Some(stopped)) => {
                tracing::info!(pid = self.pid(), ?mode, killed = stopped.killed, "Postgres stopped");
                Ok(stopped)
            }
            Ok(None) => Err(PgError::StillRunning { pgid: self.pid(), after: KILL_WAIT }),
            Err(e) => Err(io(e)),
        }
    }

    /// SIGKILLs the postmaster and every backend at once (what the fencer does), then confirms
    /// as [`Postmaster::stop`] does.
    pub async fn kill(&mut self) -> Result<Stopped, PgError> {
        match self.child.kill_and_confirm(KILL_WAIT).await {
            Ok(Some(status)) => Ok(Stopped { status, killed: true }),
            Ok(None) => Err(PgError::StillRunning { pgid: self.pid(), after: KILL_WAIT }),
            Err(e) => Err(PgError::io("cannot kill Postgres", self.data_dir.clone())(e)),
        }
    }

    /// The last lines this run wrote to the server log.
    pub fn log_tail(&self) -> String {
        read_log_tail(&self.log_file, self.log_start)
    }

    /// Lets the postmaster run on without an owner, as if pgha had died (tests of leftover
    /// handling only); returns its pid, which the test must reap.
    #[cfg(test)]
    pub(crate) fn abandon(self) -> u32 {
        let pid = self.pid();
        std::mem::forget(self);
        pid
    }
}

/// The last [`TAIL_LINES`] lines of `path` written after byte `from`.
fn read_log_tail(path: &Path, from: u64) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        let start = from.max(len.saturating_sub(LOG_TAIL_BYTES)).min(len);
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => tail(&text, TAIL_LINES),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_reads_only_this_run() {
        let path = std::env::temp_dir().join(format!("pgha-logtail-test-{}", std::process::id()));
        std::fs::write(&path, "old run\nLOG:  database system is shut down\n").unwrap();
        let start = std::fs::metadata(&path).unwrap().len();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("FATAL:  could not bind\nLOG:  database system is shut down\n");
        std::fs::write(&path, text).unwrap();
        assert_eq!(read_log_tail(&path, start), "FATAL:  could not bind\nLOG:  database system is shut down");
        assert!(read_log_tail(&path.with_extension("missing"), 0).contains("cannot read"));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn modes_send_postgres_s_signals() {
        assert_eq!(StopMode::Smart.signal(), Signal::SIGTERM);
        assert_eq!(StopMode::Fast.signal(), Signal::SIGINT);
        assert_eq!(StopMode::Immediate.signal(), Signal::SIGQUIT);
    }
}
