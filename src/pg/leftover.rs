//! A postmaster left running in pgha's data directory by an earlier pgha (killed before its
//! child, or started by hand). pgha must stop it before anything else (DESIGN.md, lease rule
//! 4): it may be a primary that no lease covers. Input: the data directory; output: what was
//! found and done ([`Leftover`]). The pid comes from `postmaster.pid`, and the process is
//! only signalled once `/proc` shows it is alive, runs a `postgres` program and has this data
//! directory as working directory (the postmaster changes into it), so a reused pid is never
//! killed. It is stopped fast, then immediately, then with SIGKILL of its process group, each
//! bounded; a `postmaster.pid` naming a live process that is not our postmaster is stale and
//! removed so Postgres can start.

use crate::clock;
use crate::pg::child::{group_alive, ProcStat, POLL};
use crate::pg::datadir::POSTMASTER_PID;
use crate::pg::error::PgError;
use crate::pg::process::StopMode;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The lines of `postmaster.pid` pgha reads (Postgres's `pidfile.h` numbers them from 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PidFile {
    pub pid: u32,
    pub data_dir: PathBuf,
    /// Seconds since the epoch when the postmaster started.
    pub start_time: Option<i64>,
    pub port: Option<u16>,
    pub socket_dir: Option<String>,
    pub listen_address: Option<String>,
    /// `starting`, `stopping`, `ready` or `standby` (line 8), when written yet.
    pub status: Option<String>,
}

impl PidFile {
    pub fn parse(text: &str) -> Option<PidFile> {
        let lines: Vec<&str> = text.lines().collect();
        let line = |n: usize| lines.get(n - 1).map(|l| l.trim()).filter(|l| !l.is_empty());
        Some(PidFile {
            pid: line(1)?.parse().ok().filter(|p| *p > 0)?,
            data_dir: PathBuf::from(line(2)?),
            start_time: line(3).and_then(|l| l.parse().ok()),
            port: line(4).and_then(|l| l.parse().ok()),
            socket_dir: line(5).map(str::to_owned),
            listen_address: line(6).map(str::to_owned),
            status: line(8).map(str::to_owned),
        })
    }

    /// `None` when there is no `postmaster.pid` (or it is still being written).
    pub fn read(data_dir: &Path) -> Result<Option<PidFile>, PgError> {
        let path = data_dir.join(POSTMASTER_PID);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(PidFile::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(PgError::io("cannot read", path)(e)),
        }
    }
}

/// What [`stop_leftover`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leftover {
    /// No `postmaster.pid`, or it names a process that no longer exists (Postgres itself
    /// ignores such a file).
    None,
    /// `postmaster.pid` named a live process that is not this data directory's postmaster;
    /// the file was removed.
    StaleRemoved { pid: u32 },
    /// A postmaster was running and is gone; `mode` is the gentlest that worked, `None` when
    /// only SIGKILL did.
    Stopped { pid: u32, mode: Option<StopMode> },
}

/// Finds and stops a postmaster of `data_dir` that is not pgha's child; each step (fast,
/// immediate, SIGKILL) may take up to `timeout`.
pub async fn stop_leftover(data_dir: &Path, timeout: Duration) -> Result<Leftover, PgError> {
    let Some(pid_file) = PidFile::read(data_dir)? else { return Ok(Leftover::None) };
    let pid = pid_file.pid;
    let canonical = std::fs::canonicalize(data_dir).map_err(PgError::io("cannot resolve", data_dir))?;
    let Some(stat) = ProcStat::read(pid as i32).filter(ProcStat::is_alive) else {
        return Ok(Leftover::None);
    };
    if !is_postmaster_of(pid, &canonical) {
        let path = data_dir.join(POSTMASTER_PID);
        std::fs::remove_file(&path).map_err(PgError::io("cannot remove the stale", &path))?;
        tracing::warn!(pid, "removed a stale postmaster.pid naming another process");
        return Ok(Leftover::StaleRemoved { pid });
    }
    tracing::warn!(pid, data_dir = %data_dir.display(), "stopping a Postgres left running by an earlier pgha");
    let failed = |problem: String| PgError::Leftover { pid, data_dir: data_dir.to_owned(), problem };
    for mode in [StopMode::Fast, StopMode::Immediate] {
        let signal = mode.signal();
        if gone(pid, &canonical) {
            break;
        }
        match kill(Pid::from_raw(pid as i32), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(failed(format!("cannot send {signal}: {e}"))),
        }
        if wait_gone(pid, &canonical, timeout).await {
            kill_group_rest(pid, stat.pgrp).await.map_err(failed)?;
            return Ok(Leftover::Stopped { pid, mode: Some(mode) });
        }
    }
    // Its own group only if it leads one (pgha's spawner makes it so); else the pid alone.
    let group = stat.pgrp == pid as i32;
    let result = if group {
        killpg(Pid::from_raw(pid as i32), Signal::SIGKILL)
    } else {
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL)
    };
    if let Err(e) = result.or_else(|e| if e == nix::errno::Errno::ESRCH { Ok(()) } else { Err(e) }) {
        return Err(failed(format!("cannot send SIGKILL: {e}")));
    }
    if !wait_gone(pid, &canonical, timeout).await {
        return Err(failed(format!("still running {timeout:?} after SIGKILL")));
    }
    kill_group_rest(pid, stat.pgrp).await.map_err(failed)?;
    Ok(Leftover::Stopped { pid, mode: None })
}

/// Whether `pid` is a live `postgres` process whose working directory is `data_dir`.
fn is_postmaster_of(pid: u32, data_dir: &Path) -> bool {
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"));
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
    let is_postgres = exe.ok().and_then(|e| e.file_name().map(|n| n.to_string_lossy().into_owned()));
    // After a package upgrade the running binary shows as "postgres (deleted)".
    cwd.ok().as_deref() == Some(data_dir) && is_postgres.is_some_and(|n| n.starts_with("postgres"))
}

/// Exited (a zombie counts: it runs nothing), or the pid now belongs to something else.
fn gone(pid: u32, data_dir: &Path) -> bool {
    !ProcStat::read(pid as i32).is_some_and(|s| s.is_alive()) || !is_postmaster_of(pid, data_dir)
}

async fn wait_gone(pid: u32, data_dir: &Path, timeout: Duration) -> bool {
    let deadline = clock::boot_now() + timeout;
    loop {
        if gone(pid, data_dir) {
            return true;
        }
        if clock::boot_now() >= deadline {
            return false;
        }
        clock::sleep(POLL).await;
    }
}

/// After the postmaster is gone, its backends must be too (they are, after a fast or
/// immediate shutdown; after a SIGKILL they linger until they notice). Only a group the
/// postmaster led is swept.
async fn kill_group_rest(pid: u32, pgrp: i32) -> Result<(), String> {
    if pgrp != pid as i32 {
        return Ok(());
    }
    let deadline = clock::boot_now() + Duration::from_secs(10);
    while group_alive(pgrp) {
        if clock::boot_now() >= deadline {
            return Err(format!("processes of group {pgrp} survive SIGKILL"));
        }
        let _ = killpg(Pid::from_raw(pgrp), Signal::SIGKILL);
        clock::sleep(POLL).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_lines() {
        let text = "4242\n/var/lib/pgha/data\n1764090000\n5432\n/var/lib/pgha/run\n10.0.0.11\n  5432001    393216\nready   \n";
        assert_eq!(
            PidFile::parse(text),
            Some(PidFile {
                pid: 4242,
                data_dir: PathBuf::from("/var/lib/pgha/data"),
                start_time: Some(1764090000),
                port: Some(5432),
                socket_dir: Some("/var/lib/pgha/run".into()),
                listen_address: Some("10.0.0.11".into()),
                status: Some("ready".into()),
            })
        );
        // Postgres writes the file in steps; a partial one still names the pid.
        let partial = PidFile::parse("4242\n/d\n").unwrap();
        assert_eq!((partial.pid, partial.port, partial.status), (4242, None, None));
        for bad in ["", "\n/d\n", "x\n/d\n", "0\n/d\n", "4242\n"] {
            assert_eq!(PidFile::parse(bad), None, "{bad:?}");
        }
    }
}
