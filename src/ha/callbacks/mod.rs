//! Patroni's callbacks: after Postgres starts, stops, restarts or changes role, the configured
//! script runs as `<script> <action> <role> <scope>`, with Patroni's action names, so existing
//! scripts (moving a virtual IP, telling a load balancer) carry over. Input: [`Callbacks`] from
//! the local configuration and the events the HA loop fires; output: child processes, their
//! output and exit status in our log, and a [`Finished`] record per run for whoever subscribes.
//!
//! [`CallbackRunner::fire`] never blocks and never fails: a supervisor task runs one callback
//! at a time, and, as Patroni's `CallbackExecutor`, a newer callback kills a running one (with
//! its process group) so role changes do not pile up; a newer request also replaces one that
//! has not started yet. Every run has a deadline. Nothing a callback starts may outlive it, nor
//! pgha: each runs in a process group of its own that is SIGKILLed when the script exits, times
//! out, is replaced, or when the runner is dropped, and the script gets `PR_SET_PDEATHSIG`.

use crate::clock;
use crate::config::file::Callbacks;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{broadcast, watch};

/// How long a callback may run before it is killed: long enough for a script that talks to a
/// cloud API or a load balancer, short enough that a hung one does not hide the next event.
pub const DEFAULT_CALLBACK_TIMEOUT: Duration = Duration::from_secs(60);
/// Output longer than this without a newline is logged in pieces (bounds our buffer).
const MAX_LINE: usize = 4096;
/// After the script's group is gone, how long its last output may take to arrive (a process
/// that left the group could otherwise hold the pipe open forever).
const DRAIN: Duration = Duration::from_secs(1);
/// How long a SIGKILLed script may take to be reaped before its handle is dropped (tokio then
/// reaps it in the background).
const REAP: Duration = Duration::from_secs(5);
/// `ETXTBSY` (the script is open for writing somewhere, typically a forked child of another
/// thread that has not reached exec yet): tries and pause between them.
const BUSY_TRIES: u32 = 3;
const BUSY_PAUSE: Duration = Duration::from_millis(50);
/// [`Finished`] records kept for slow subscribers.
const FINISHED_BACKLOG: usize = 16;

/// The events Patroni calls back on (`on_reload` is not in pgha's configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallbackEvent {
    OnStart,
    OnStop,
    OnRestart,
    OnRoleChange,
}

impl CallbackEvent {
    /// The action argument, spelled as Patroni does.
    pub fn action(self) -> &'static str {
        match self {
            CallbackEvent::OnStart => "on_start",
            CallbackEvent::OnStop => "on_stop",
            CallbackEvent::OnRestart => "on_restart",
            CallbackEvent::OnRoleChange => "on_role_change",
        }
    }

    fn script(self, callbacks: &Callbacks) -> Option<&PathBuf> {
        match self {
            CallbackEvent::OnStart => callbacks.on_start.as_ref(),
            CallbackEvent::OnStop => callbacks.on_stop.as_ref(),
            CallbackEvent::OnRestart => callbacks.on_restart.as_ref(),
            CallbackEvent::OnRoleChange => callbacks.on_role_change.as_ref(),
        }
    }
}

impl fmt::Display for CallbackEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.action())
    }
}

/// How one run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallbackOutcome {
    /// The script exited (successfully or not) by itself.
    Exited(ExitStatus),
    /// It ran past its deadline and was killed.
    TimedOut,
    /// A newer callback was fired; this one was killed.
    Replaced,
    /// The runner was dropped (pgha stopping) and it was killed, or it could no longer be
    /// waited for.
    Stopped,
    /// It could not be started: `NotFound` (no such script), `PermissionDenied` (not
    /// executable by the service user), or another error kind.
    NotStarted(io::ErrorKind),
}

/// One run of a callback, as reported to [`CallbackRunner::subscribe`]rs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    pub event: CallbackEvent,
    pub role: String,
    pub outcome: CallbackOutcome,
}

#[derive(Clone, Debug)]
struct Request {
    event: CallbackEvent,
    role: String,
    script: PathBuf,
}

/// Runs the configured callbacks in the background; see the module comment. Dropping it kills
/// a running callback.
#[derive(Debug)]
pub struct CallbackRunner {
    callbacks: Callbacks,
    requests: watch::Sender<Option<Request>>,
    finished: broadcast::Sender<Finished>,
}

impl CallbackRunner {
    /// A runner with [`DEFAULT_CALLBACK_TIMEOUT`]. Must be called within a tokio runtime (it
    /// spawns the supervisor task).
    pub fn new(callbacks: &Callbacks, scope: &str) -> CallbackRunner {
        CallbackRunner::with_timeout(callbacks, scope, DEFAULT_CALLBACK_TIMEOUT)
    }

    /// A runner whose callbacks are killed after `timeout`.
    pub fn with_timeout(callbacks: &Callbacks, scope: &str, timeout: Duration) -> CallbackRunner {
        let (requests, rx) = watch::channel(None);
        let (finished, _) = broadcast::channel(FINISHED_BACKLOG);
        let supervisor =
            Supervisor { requests: rx, finished: finished.clone(), scope: scope.to_owned(), timeout };
        tokio::spawn(supervisor.run());
        CallbackRunner { callbacks: callbacks.clone(), requests, finished }
    }

    /// Runs the script configured for `event` with `role` as Patroni 4 spells it (`primary`,
    /// also right after a promotion; `replica`; `standby_leader`; `demoted`). Returns at once;
    /// does nothing when no script is configured for `event`.
    pub fn fire(&self, event: CallbackEvent, role: &str) {
        let Some(script) = event.script(&self.callbacks) else {
            tracing::debug!(callback = event.action(), "no script configured");
            return;
        };
        let request = Request { event, role: role.to_owned(), script: script.clone() };
        self.requests.send_replace(Some(request));
    }

    /// A record of every run that ends from now on (the last [`FINISHED_BACKLOG`] of them
    /// if the subscriber falls behind).
    pub fn subscribe(&self) -> broadcast::Receiver<Finished> {
        self.finished.subscribe()
    }
}

/// The task that runs callbacks one at a time.
struct Supervisor {
    requests: watch::Receiver<Option<Request>>,
    finished: broadcast::Sender<Finished>,
    scope: String,
    timeout: Duration,
}

/// Why a run stopped waiting for its script.
enum End {
    Exited(io::Result<ExitStatus>),
    TimedOut,
    Replaced(Request),
    RunnerGone,
}

impl Supervisor {
    async fn run(mut self) {
        let mut next: Option<Request> = None;
        loop {
            let request = match next.take() {
                Some(request) => request,
                None => {
                    if self.requests.changed().await.is_err() {
                        return; // the runner is gone
                    }
                    match self.requests.borrow_and_update().clone() {
                        Some(request) => request,
                        None => continue,
                    }
                }
            };
            let (outcome, end) = self.run_one(&request).await;
            // No subscriber is fine: nobody asked.
            let _ = self.finished.send(Finished { event: request.event, role: request.role, outcome });
            match end {
                Some(End::Replaced(newer)) => next = Some(newer),
                Some(End::RunnerGone) => return,
                _ => {}
            }
        }
    }

    /// Runs one callback to its end; returns how it ended and, when it was cut short, why.
    async fn run_one(&mut self, request: &Request) -> (CallbackOutcome, Option<End>) {
        let action = request.event.action();
        let script = request.script.display().to_string();
        let mut child = match spawn(request, &self.scope).await {
            Ok(child) => child,
            Err(e) => {
                let hint = match e.kind() {
                    io::ErrorKind::NotFound => "the script does not exist",
                    io::ErrorKind::PermissionDenied => {
                        "the script is not executable by the service user (chmod +x; check its directories)"
                    }
                    _ => "the script cannot be started",
                };
                tracing::warn!(callback = action, script, error = %e, "callback not run: {hint}");
                return (CallbackOutcome::NotStarted(e.kind()), None);
            }
        };
        let group = child.id().map(|pid| ProcessGroup::new(pid as i32));
        let output = log_output(child.stdout.take(), child.stderr.take(), action);
        tokio::pin!(output);
        let deadline = clock::sleep(self.timeout);
        tokio::pin!(deadline);
        let mut output_done = false;
        let end = loop {
            tokio::select! {
                status = child.wait() => break End::Exited(status),
                () = &mut output, if !output_done => output_done = true,
                () = &mut deadline => break End::TimedOut,
                changed = self.requests.changed() => match changed {
                    Err(_) => break End::RunnerGone,
                    Ok(()) => {
                        if let Some(newer) = self.requests.borrow_and_update().clone() {
                            break End::Replaced(newer);
                        }
                    }
                },
            }
        };
        // Whatever the script left behind goes with it (Patroni kills a callback's children too).
        let leftovers = group.is_some_and(ProcessGroup::kill);
        if !matches!(end, End::Exited(_)) {
            // Killed while running: reap it, boundedly (a process in D state takes its time).
            tokio::select! {
                _ = child.wait() => {}
                () = clock::sleep(REAP) => {}
            }
        }
        if !output_done {
            tokio::select! {
                () = &mut output => {}
                () = clock::sleep(DRAIN) => {}
            }
        }
        let role = request.role.as_str();
        let outcome = match &end {
            End::Exited(Ok(status)) => {
                if leftovers {
                    tracing::warn!(callback = action, script, "callback left processes running: killed them");
                }
                if status.success() {
                    tracing::info!(callback = action, role, "callback finished");
                } else {
                    tracing::warn!(callback = action, role, script, %status, "callback failed");
                }
                CallbackOutcome::Exited(*status)
            }
            End::Exited(Err(e)) => {
                // waitpid failed: the child is not ours to wait for any more; treat it as gone.
                tracing::warn!(callback = action, script, error = %e, "cannot wait for the callback");
                CallbackOutcome::Stopped
            }
            End::TimedOut => {
                tracing::warn!(
                    callback = action,
                    role,
                    script,
                    timeout_s = self.timeout.as_secs_f64(),
                    "callback ran past its timeout: killed it and its process group"
                );
                CallbackOutcome::TimedOut
            }
            End::Replaced(newer) => {
                tracing::info!(
                    callback = action,
                    role,
                    by = newer.event.action(),
                    "callback killed: a newer one replaces it"
                );
                CallbackOutcome::Replaced
            }
            End::RunnerGone => {
                tracing::info!(callback = action, role, "callback killed: pgha is stopping");
                CallbackOutcome::Stopped
            }
        };
        let end = match end {
            End::Exited(_) | End::TimedOut => None,
            other => Some(other),
        };
        (outcome, end)
    }
}

/// Starts `<script> <action> <role> <scope>` in a process group of its own, with our log as its
/// output and no stdin.
async fn spawn(request: &Request, scope: &str) -> io::Result<tokio::process::Child> {
    let mut command = tokio::process::Command::new(&request.script);
    command
        .arg(request.event.action())
        .arg(&request.role)
        .arg(scope)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: runs between fork and exec and only makes async-signal-safe calls (prctl,
    // getppid); it allocates nothing. The death signal fires when the forking thread exits:
    // here a runtime worker (or the test's thread), which lives as long as the runtime.
    unsafe {
        command.pre_exec(move || {
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
    let mut tries = 1;
    loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < BUSY_TRIES => {
                tries += 1;
                clock::sleep(BUSY_PAUSE).await;
            }
            spawned => return spawned,
        }
    }
}

/// The script's process group (its pid: it leads the group). Dropping it SIGKILLs the group, so
/// an abandoned run (the runtime shutting down mid-callback) leaves nothing behind.
struct ProcessGroup {
    pgid: Pid,
    killed: bool,
}

impl ProcessGroup {
    fn new(pgid: i32) -> ProcessGroup {
        ProcessGroup { pgid: Pid::from_raw(pgid), killed: false }
    }

    /// SIGKILLs every process in the group; true if there was one. Called while the leader is
    /// unreaped (so the id is certainly ours), or right after it was reaped: then the id can
    /// only have been reused if the group was empty and pids wrapped around within that moment.
    fn kill(mut self) -> bool {
        self.killed = true;
        killpg(self.pgid, Signal::SIGKILL).is_ok()
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if !self.killed {
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
    }
}

/// Logs the script's stdout and stderr line by line until both are closed.
async fn log_output(
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
    action: &'static str,
) {
    tokio::join!(log_lines(stdout, "stdout", action), log_lines(stderr, "stderr", action));
}

async fn log_lines<R: AsyncRead + Unpin>(reader: Option<R>, stream: &'static str, action: &'static str) {
    let Some(mut reader) = reader else { return };
    let emit = |line: &[u8]| {
        let line = String::from_utf8_lossy(line);
        tracing::info!(callback = action, stream, "{}", line.trim_end_matches('\r'));
    };
    let mut pending = Vec::with_capacity(256);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            emit(&pending[..end]);
            pending.drain(..=end);
        }
        if pending.len() >= MAX_LINE {
            emit(&pending);
            pending.clear();
        }
    }
    if !pending.is_empty() {
        emit(&pending);
    }
}

#[cfg(test)]
mod tests;
