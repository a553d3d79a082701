//! [`ChildProcess`]: one child started by the spawner, owned by exactly one value until it is
//! reaped. Input: the `std::process::Child` the spawner thread made; output: its pid, signals
//! to it or its process group, and its exit status, confirmed by `waitpid`. It never signals a
//! child it has reaped: until `waitpid` returns the pid stays a zombie of ours and cannot be
//! reused, so signals sent before that always reach the right process. Dropping it unreaped
//! SIGKILLs the whole group, so no Postgres outlives the value that owns it.

use crate::clock;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::io;
use std::process::ExitStatus;
use std::time::Duration;

/// How often an exit is checked while waiting: short against stop and start times, cheap (one
/// `waitpid(WNOHANG)`), and portable to kernels without pidfd.
pub const POLL: Duration = Duration::from_millis(10);

#[derive(Debug)]
pub struct ChildProcess {
    child: std::process::Child,
    display: String,
    status: Option<ExitStatus>,
}

impl ChildProcess {
    pub(crate) fn new(child: std::process::Child, display: String) -> ChildProcess {
        ChildProcess { child, display, status: None }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command as errors show it.
    pub fn display(&self) -> &str {
        &self.display
    }

    pub(crate) fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    pub(crate) fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.stderr.take()
    }

    /// The exit status, if the child has exited (reaping it).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Waits up to `timeout` for the child to exit; `None` if it is still running.
    pub async fn wait_for(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = clock::boot_now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if clock::boot_now() >= deadline {
                return Ok(None);
            }
            clock::sleep(POLL).await;
        }
    }

    /// Sends `signal` to the child alone. A no-op once it has been reaped.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        match kill(self.nix_pid(), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends `signal` to every process of the child's group (the spawner made the child its
    /// leader). Backends of a killed postmaster stay in the group after it is reaped, and a
    /// group id is not reused while a member lives, so this stays safe after reaping.
    pub fn signal_group(&self, signal: Signal) -> io::Result<()> {
        match killpg(self.nix_pid(), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether any live process of the child's group is left. Zombies do not count: they run
    /// nothing and hold no file, and an orphan's zombie is reaped by whoever adopted it, which
    /// in a container need not be a real init.
    pub fn group_exists(&self) -> bool {
        group_alive(self.child.id() as i32)
    }

    /// SIGKILLs the group and waits up to `timeout` until the child is reaped and no process
    /// of its group is left. Returns the child's status, `None` if something survived.
    pub async fn kill_and_confirm(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        self.signal_group(Signal::SIGKILL)?;
        let deadline = clock::boot_now() + timeout;
        let status = match self.wait_for(timeout).await? {
            Some(status) => status,
            None => return Ok(None),
        };
        while self.group_exists() {
            if clock::boot_now() >= deadline {
                return Ok(None);
            }
            self.signal_group(Signal::SIGKILL)?;
            clock::sleep(POLL).await;
        }
        Ok(Some(status))
    }

    /// After the child exited by itself: waits up to `timeout` for the rest of its group
    /// (SIGKILLing it), true when none is left.
    pub async fn confirm_group_gone(&self, timeout: Duration) -> io::Result<bool> {
        let deadline = clock::boot_now() + timeout;
        while self.group_exists() {
            if clock::boot_now() >= deadline {
                return Ok(false);
            }
            self.signal_group(Signal::SIGKILL)?;
            clock::sleep(POLL).await;
        }
        Ok(true)
    }

    fn nix_pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }
}

/// Whether a live (not zombie) process of group `pgid` exists.
pub fn group_alive(pgid: i32) -> bool {
    if killpg(Pid::from_raw(pgid), None).is_err() {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else { return true };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .any(|pid| ProcStat::read(pid).is_some_and(|stat| stat.pgrp == pgid && stat.is_alive()))
}

/// The fields of `/proc/<pid>/stat` pgha reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `D`, `Z`, ...
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

impl ProcStat {
    /// `None` when the process does not exist (any more).
    pub fn read(pid: i32) -> Option<ProcStat> {
        ProcStat::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// Parses `pid (comm) state ppid pgrp ...`; `comm` may contain spaces and parentheses, so
    /// the fields are taken after its last `)`.
    pub fn parse(text: &str) -> Option<ProcStat> {
        let mut fields = text[text.rfind(')')? + 1..].split_whitespace();
        let state = fields.next()?.chars().next()?;
        let ppid = fields.next()?.parse().ok()?;
        let pgrp = fields.next()?.parse().ok()?;
        Some(ProcStat { state, ppid, pgrp })
    }

    /// Neither a zombie nor dead.
    pub fn is_alive(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            // Never leave a Postgres behind. The SIGKILLed leader is reaped here when it is
            // already gone, otherwise it stays a zombie until pgha exits.
            let _ = self.signal_group(Signal::SIGKILL);
            let _ = self.try_wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_follow_the_last_parenthesis() {
        let stat = "4242 (postgres: pgha: wal (sender)) S 4200 4200 4200 0 -1 4194560 380 0 0 0";
        assert_eq!(ProcStat::parse(stat), Some(ProcStat { state: 'S', ppid: 4200, pgrp: 4200 }));
        assert!(ProcStat::parse("12 (x) Z 1 12").is_some_and(|s| !s.is_alive()));
        assert_eq!(ProcStat::parse("12 (x"), None);
        assert_eq!(ProcStat::parse("12 (x) S one 3"), None);
        let me = ProcStat::read(std::process::id() as i32).unwrap();
        assert!(me.is_alive());
    }
}
