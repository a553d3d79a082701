//! The one thread that starts every child process of pgha's Postgres side (the postmaster,
//! initdb, pg_basebackup, pg_rewind, pg_controldata). Input: a prepared `std::process::Command`
//! and the service user; output: a [`ChildProcess`]. Each child runs as the service user, in a
//! process group of its own (a fencer or `stop` can SIGKILL Postgres with all its backends),
//! and with `PR_SET_PDEATHSIG(SIGKILL)`, so it dies when pgha dies (DESIGN.md, lease rule 4).
//!
//! Why a dedicated thread: Linux delivers the parent-death signal when the *thread* that forked
//! the child exits, not the process. Tokio's blocking threads exit after a while idle and worker
//! threads are not ours to keep, so a postmaster forked from one of them would be SIGKILLed by an
//! idle timeout. This thread lives as long as some [`Spawner`] handle does (in `pgha run`, the
//! whole process); when the last handle is dropped it exits, and its children are killed with
//! it, which is also what keeps a failed test from leaving Postgres running. It never waits for
//! or reaps a child: the owner of each [`ChildProcess`] does.

use crate::pg::child::ChildProcess;
use crate::pg::error::PgError;
use crate::sys::user::{child_pre_exec, ServiceUser};
use std::ffi::OsStr;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use tokio::sync::{mpsc, oneshot};

/// Spawn requests wait here; a handful covers every caller (one HA loop, one fencer).
const QUEUE: usize = 8;

struct Request {
    command: Command,
    user: ServiceUser,
    reply: oneshot::Sender<io::Result<std::process::Child>>,
}

/// A handle to the spawner thread. Cloning it is cheap; the thread ends when every clone is gone.
#[derive(Clone, Debug)]
pub struct Spawner {
    requests: mpsc::Sender<Request>,
}

impl Spawner {
    /// Starts the spawner thread.
    pub fn start() -> io::Result<Spawner> {
        let (requests, mut queue) = mpsc::channel::<Request>(QUEUE);
        std::thread::Builder::new().name("pgha-spawner".into()).spawn(move || {
            while let Some(Request { command, user, reply }) = queue.blocking_recv() {
                let spawned = spawn_here(command, &user);
                if let Err(Ok(mut orphan)) = reply.send(spawned) {
                    // The caller gave up (its future was dropped): nobody owns this child, so
                    // it must not live on. SIGKILL reaches it whatever it is doing.
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(orphan.id() as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    let _ = orphan.wait();
                }
            }
        })?;
        Ok(Spawner { requests })
    }

    /// Starts `command` as `user` from the spawner thread. `display` is how errors and logs
    /// show the command; it must not contain secrets.
    pub async fn spawn(
        &self,
        mut command: Command,
        user: &ServiceUser,
        display: String,
    ) -> Result<ChildProcess, PgError> {
        // The service user's home, not an inherited one: libpq (pg_basebackup, pg_rewind, the
        // walreceiver) reads `~/.postgresql/postgresql.crt`, and under root's HOME that read
        // fails with "Permission denied" instead of finding nothing.
        command.env("HOME", &user.home);
        let (reply, answer) = oneshot::channel();
        let request = Request { command, user: user.clone(), reply };
        self.requests.send(request).await.map_err(|_| PgError::SpawnerGone)?;
        match answer.await {
            Ok(Ok(child)) => Ok(ChildProcess::new(child, display)),
            Ok(Err(source)) => Err(PgError::Spawn { command: display, source }),
            Err(_) => Err(PgError::SpawnerGone),
        }
    }
}

/// A command for a Postgres program with a predictable environment: no inherited `PG*`
/// variables (an operator's `PGHOST` or `PGPASSFILE` must not redirect pgha's tools; every
/// setting is explicit), and English messages so errors read the same everywhere.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            command.env_remove(name);
        }
    }
    command.env("LC_MESSAGES", "C");
    command
}

/// Runs on the spawner thread: forks here, so this thread is the child's "parent" for
/// `PR_SET_PDEATHSIG`.
fn spawn_here(mut command: Command, user: &ServiceUser) -> io::Result<std::process::Child> {
    if crate::sys::user::current_uid() != user.uid {
        // The child becomes another user: give it that user's environment too. libpq, for
        // one, looks for ~/.postgresql/postgresql.crt and fails when HOME is root's.
        command.env("HOME", &user.home).env("USER", &user.name).env("LOGNAME", &user.name);
    }
    let parent = std::process::id() as libc::pid_t;
    let mut become_user = child_pre_exec(user);
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (setsid, setgroups/setgid/setuid inside `become_user`, prctl, getppid); it allocates
    // nothing (io::Error from a raw OS error does not allocate).
    unsafe {
        command.pre_exec(move || {
            // A process group (and session) of its own, led by the child: `killpg(pid)` reaches
            // the postmaster and every backend, and a terminal's Ctrl-C reaches only pgha.
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            become_user()?;
            // After the user switch: the kernel clears the parent-death signal whenever the
            // credentials change (commit_creds), so setting it earlier would be undone.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // pgha died between fork and prctl: the signal was never sent, so do not start.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    command.spawn()
}
