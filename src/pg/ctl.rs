//! [`PgTools`]: the Postgres programs pgha runs to completion (initdb, pg_basebackup,
//! pg_rewind, pg_controldata), each with a deadline. Input: the binaries directory, the service
//! user, the spawner, and per call the data directory, the source server and the credentials;
//! output: a bootstrapped, cloned or rewound data directory, or [`ControlData`]; failures as
//! [`PgError`] with the command line, the exit status and the last lines of its output. Every
//! program runs as the service user via the spawner (so it dies with pgha). Passwords never
//! appear on a command line (visible to every local user in `ps`): initdb reads a 0600 file,
//! the others `PGPASSWORD`. A clone is atomic: it fills a temporary directory next to the data
//! directory and renames it into place only when complete, so a half clone is never started.

use crate::pg::bin::BinDir;
use crate::pg::child::ChildProcess;
use crate::pg::conninfo::Conninfo;
use crate::pg::controldata::ControlData;
use crate::pg::datadir::{self, DataDir};
use crate::pg::error::{tail, PgError, TAIL_LINES};
use crate::pg::spawner::{self, Spawner};
use crate::sys::user::ServiceUser;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The most of a tool's stdout or stderr kept in memory; older output is dropped.
const OUTPUT_CAP: usize = 256 * 1024;
/// How long a killed tool may take to disappear (SIGKILL is not instantaneous on a busy disk).
const KILL_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct PgTools {
    bin: BinDir,
    user: ServiceUser,
    spawner: Spawner,
}

impl PgTools {
    pub fn new(bin: BinDir, user: ServiceUser, spawner: Spawner) -> PgTools {
        PgTools { bin, user, spawner }
    }

    pub fn bin(&self) -> &BinDir {
        &self.bin
    }

    pub fn user(&self) -> &ServiceUser {
        &self.user
    }

    pub fn spawner(&self) -> &Spawner {
        &self.spawner
    }

    /// Bootstraps a new cluster in `data_dir` (missing or empty): UTF-8, data checksums (so
    /// pg_rewind works and corruption is detected), `superuser` with `password`, and
    /// scram-sha-256 for every connection until pgha writes its own pg_hba.conf.
    pub async fn initdb(
        &self,
        data_dir: &DataDir,
        superuser: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<(), PgError> {
        if !data_dir.is_absent_or_empty()? {
            return Err(PgError::DataDirNotEmpty { action: "run initdb", path: data_dir.path().to_owned() });
        }
        data_dir.create_private()?;
        // The password file sits next to the data directory (initdb refuses a non-empty data
        // directory), is readable by the service user only, and is removed whatever happens.
        let pwfile = TempFile(sibling(data_dir.path(), ".pgha-initdb-pwfile"));
        datadir::write_owned_file(&pwfile.0, &format!("{password}\n"), &self.user)?;
        let args: Vec<OsString> = vec![
            "-D".into(),
            data_dir.path().into(),
            "--encoding=UTF8".into(),
            "--data-checksums".into(),
            format!("--username={superuser}").into(),
            join_arg("--pwfile=", &pwfile.0),
            "--auth=scram-sha-256".into(),
        ];
        self.run("initdb", args, &[], timeout).await.map(drop)
    }

    /// Clones `data_dir` (missing or empty) from a running server with pg_basebackup: fast
    /// checkpoint on the source, WAL streamed alongside so the copy is consistent. `source` is
    /// a replication connection without password; `password` goes in `PGPASSWORD`.
    pub async fn clone_from(
        &self,
        data_dir: &DataDir,
        source: &Conninfo,
        password: Option<&str>,
        timeout: Duration,
    ) -> Result<(), PgError> {
        if !data_dir.is_absent_or_empty()? {
            return Err(PgError::DataDirNotEmpty { action: "clone", path: data_dir.path().to_owned() });
        }
        self.clone_into_place(data_dir, source, password, timeout).await
    }

    /// Reinitialize: replaces the stopped replica's `data_dir` with a fresh clone. The old
    /// directory stays in place until the clone is complete, so a failed clone loses nothing.
    pub async fn reclone(
        &self,
        data_dir: &DataDir,
        source: &Conninfo,
        password: Option<&str>,
        timeout: Duration,
    ) -> Result<(), PgError> {
        if data_dir.is_absent_or_empty()? {
            return self.clone_into_place(data_dir, source, password, timeout).await;
        }
        let old = TempDir(sibling(data_dir.path(), ".pgha-reinit-old"));
        old.remove()?;
        let fresh = TempDir(sibling(data_dir.path(), ".pgha-reinit-new"));
        fresh.remove()?;
        let staged = DataDir::new(fresh.0.clone(), self.user.clone());
        self.clone_into_place(&staged, source, password, timeout).await?;
        std::fs::rename(data_dir.path(), &old.0)
            .map_err(PgError::io("cannot move the old data directory aside to", &old.0))?;
        if let Err(e) = std::fs::rename(&fresh.0, data_dir.path()) {
            // Put the old directory back rather than lose it with `old`'s drop.
            if std::fs::rename(&old.0, data_dir.path()).is_err() {
                old.forget();
            }
            return Err(PgError::io("cannot move the clone to", data_dir.path())(e));
        }
        fresh.forget();
        datadir::sync_dir(data_dir.path().parent().unwrap_or(Path::new("/")))?;
        drop(old);
        Ok(())
    }

    async fn clone_into_place(
        &self,
        data_dir: &DataDir,
        source: &Conninfo,
        password: Option<&str>,
        timeout: Duration,
    ) -> Result<(), PgError> {
        // Left over by an interrupted clone, or new: either way start empty.
        let tmp = TempDir(sibling(data_dir.path(), ".pgha-clone"));
        tmp.remove()?;
        datadir::create_owned_dir(&tmp.0, &self.user, 0o700)?;
        let args: Vec<OsString> = vec![
            "-D".into(),
            tmp.0.clone().into(),
            "--wal-method=stream".into(),
            "--checkpoint=fast".into(),
            "--no-password".into(),
            "--label=pgha clone".into(),
            format!("--dbname={}", source.clone().without_password().render()).into(),
        ];
        self.run("pg_basebackup", args, &password_env(password), timeout).await?;
        // rename(2) replaces an empty directory; the parent's fsync makes the rename durable.
        std::fs::rename(&tmp.0, data_dir.path())
            .map_err(PgError::io("cannot move the clone to", data_dir.path()))?;
        tmp.forget();
        datadir::sync_dir(data_dir.path().parent().unwrap_or(Path::new("/")))
    }

    /// Rewinds the stopped `data_dir` to the point where it diverged from `source` (a running
    /// server on the new timeline) so it can follow it. The data directory then holds the
    /// source's configuration files: write this node's configuration before starting it.
    pub async fn rewind(
        &self,
        data_dir: &DataDir,
        source: &Conninfo,
        password: Option<&str>,
        timeout: Duration,
    ) -> Result<(), PgError> {
        let args: Vec<OsString> = vec![
            join_arg("--target-pgdata=", data_dir.path()),
            format!("--source-server={}", source.clone().without_password().render()).into(),
        ];
        self.run("pg_rewind", args, &password_env(password), timeout).await.map(drop)
    }

    /// Runs crash recovery on a stopped data directory that was not shut down cleanly, without
    /// accepting connections: `postgres --single` replays the WAL, and at the end of its input
    /// (stdin is empty) writes a shutdown checkpoint and exits. pg_rewind refuses a directory
    /// that was not shut down cleanly, and only afterwards is its last checkpoint the end of its
    /// WAL. Must not run on a directory with `standby.signal` (it would wait for WAL).
    pub async fn crash_recover(&self, data_dir: &Path, timeout: Duration) -> Result<(), PgError> {
        // `--single` must come first.
        let args: Vec<OsString> = vec![
            "--single".into(),
            "-D".into(),
            data_dir.into(),
            "-c".into(),
            "archive_mode=off".into(),
            "postgres".into(),
        ];
        self.run("postgres", args, &[], timeout).await.map(drop)
    }

    /// Reads the control file of `data_dir` (running or not).
    pub async fn controldata(&self, data_dir: &Path, timeout: Duration) -> Result<ControlData, PgError> {
        let args: Vec<OsString> = vec!["-D".into(), data_dir.into()];
        let out = self.run("pg_controldata", args, &[("LC_ALL", "C".into())], timeout).await?;
        ControlData::parse(&out)
            .map_err(|problem| PgError::ControlData { data_dir: data_dir.to_owned(), problem })
    }

    /// Runs one program to completion within `timeout`; returns its stdout.
    async fn run(
        &self,
        program: &str,
        args: Vec<OsString>,
        env: &[(&str, String)],
        timeout: Duration,
    ) -> Result<String, PgError> {
        let path = self.bin.program(program);
        let display = std::iter::once(path.as_os_str())
            .chain(args.iter().map(|a| a.as_os_str()))
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let mut command = spawner::command(&path);
        command.args(&args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = self.spawner.spawn(command, &self.user, display).await?;
        // Read while the program runs, or a full pipe would stall it.
        let stdout =
            tokio::spawn(read_capped(child.take_stdout().map(tokio::process::ChildStdout::from_std)));
        let stderr =
            tokio::spawn(read_capped(child.take_stderr().map(tokio::process::ChildStderr::from_std)));
        let outcome = wait_or_kill(&mut child, timeout).await;
        // The pipes close when the program and its group are gone; a descendant that escaped
        // the group could hold them open, so the wait for the rest of the output is bounded.
        let collect = |mut task: tokio::task::JoinHandle<Vec<u8>>| async move {
            match tokio::time::timeout(KILL_WAIT, &mut task).await {
                Ok(Ok(bytes)) => bytes,
                _ => {
                    task.abort();
                    Vec::new()
                }
            }
        };
        let (stdout, stderr) = tokio::join!(collect(stdout), collect(stderr));
        let display = child.display().to_owned();
        let output = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
        let both = || {
            let (out, err) = (output(stdout.clone()), output(stderr.clone()));
            tail(&format!("{out}{err}"), TAIL_LINES)
        };
        match outcome.map_err(|source| PgError::Spawn { command: display.clone(), source })? {
            Some(status) if status.success() => Ok(output(stdout)),
            Some(status) => {
                Err(PgError::ToolFailed { command: display, status: status.to_string(), stderr: both() })
            }
            None => Err(PgError::ToolTimedOut { command: display, timeout, stderr: both() }),
        }
    }
}

/// Waits for the child's exit; after `timeout` SIGKILLs its group. `None` when it timed out.
async fn wait_or_kill(
    child: &mut ChildProcess,
    timeout: Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    if let Some(status) = child.wait_for(timeout).await? {
        return Ok(Some(status));
    }
    child.kill_and_confirm(KILL_WAIT).await?;
    Ok(None)
}

/// Reads a pipe to its end, keeping the last [`OUTPUT_CAP`] bytes.
async fn read_capped<R: AsyncRead + Unpin>(pipe: Option<std::io::Result<R>>) -> Vec<u8> {
    let Some(Ok(mut pipe)) = pipe else { return Vec::new() };
    let mut kept = Vec::new();
    let mut chunk = [0u8; 8192];
    while let Ok(n) = pipe.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&chunk[..n]);
        if kept.len() > OUTPUT_CAP {
            kept.drain(..kept.len() - OUTPUT_CAP);
        }
    }
    kept
}

fn password_env(password: Option<&str>) -> Vec<(&'static str, String)> {
    password.map(|p| vec![("PGPASSWORD", p.to_owned())]).unwrap_or_default()
}

fn join_arg(flag: &str, path: &Path) -> OsString {
    let mut arg = OsString::from(flag);
    arg.push(path);
    arg
}

/// `<parent>/<prefix>.<data dir name>`: beside the data directory, on the same file system
/// (so a rename is atomic), hidden, and distinct for each data directory.
fn sibling(data_dir: &Path, prefix: &str) -> PathBuf {
    let name = data_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    data_dir.parent().unwrap_or(Path::new("/")).join(format!("{prefix}.{name}"))
}

/// A file removed when dropped.
struct TempFile(PathBuf);
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A directory removed when dropped, unless forgotten (moved into place).
struct TempDir(PathBuf);
impl TempDir {
    fn remove(&self) -> Result<(), PgError> {
        match std::fs::remove_dir_all(&self.0) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(PgError::io("cannot remove the unfinished clone", &self.0)(e))
            }
            _ => Ok(()),
        }
    }
    fn forget(mut self) {
        self.0 = PathBuf::new();
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_place_files_beside_the_data_dir() {
        assert_eq!(sibling(Path::new("/srv/n1/data"), ".pgha-clone"), Path::new("/srv/n1/.pgha-clone.data"));
        assert_eq!(join_arg("--pwfile=", Path::new("/a b")), OsString::from("--pwfile=/a b"));
        assert!(password_env(None).is_empty());
        assert_eq!(password_env(Some("x"))[0].0, "PGPASSWORD");
    }
}
