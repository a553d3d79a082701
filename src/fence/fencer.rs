//! The fencer process (DESIGN.md lease rule 4): a tiny child forked from `pgha run` before any
//! thread exists, holding the lease deadline. pgha sends it `(pgid, deadline)` over a pipe after
//! every accepted renewal; when the deadline passes (on `CLOCK_BOOTTIME`, so a suspend counts)
//! it SIGKILLs the postmaster's process group — a SIGSTOPped, hung or deadlocked pgha is fenced
//! this way. On EOF of the pipe (pgha died) it kills an armed group at once and exits.
//!
//! The child runs only async-signal-safe calls (poll, read, kill, clock_gettime, _exit) on
//! stack buffers, so it is safe to fork even from a multi-threaded process. It ignores SIGINT
//! and SIGTERM and leaves the terminal's session: only pgha, through the pipe, stops it.
//! pgha must treat the fencer's death as fatal ([`FencerHandle::wait_death`]).

use super::Fence;
use crate::clock::BootInstant;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

/// One message: process group (0 = disarm) and deadline in boot-clock nanoseconds.
const RECORD: usize = 12;
/// How often the child re-reads the boot clock while armed: poll's own timeout runs on the
/// monotonic clock, which stops during suspend.
const RECHECK_MS: i64 = 50;

fn encode(pgid: i32, deadline_ns: u64) -> [u8; RECORD] {
    let mut b = [0u8; RECORD];
    b[..4].copy_from_slice(&pgid.to_le_bytes());
    b[4..].copy_from_slice(&deadline_ns.to_le_bytes());
    b
}

fn decode(b: &[u8; RECORD]) -> (i32, u64) {
    let pgid = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let mut d = [0u8; 8];
    d.copy_from_slice(&b[4..]);
    (pgid, u64::from_le_bytes(d))
}

#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("cannot start the fencer process: {0}")]
    Spawn(std::io::Error),
    #[error("the fencer process is gone ({0}): Postgres would no longer be fenced")]
    Gone(std::io::Error),
}

/// pgha's end: the pipe's write side and the fencer's pid.
pub struct FencerHandle {
    /// `None` only while dropping.
    pipe: Mutex<Option<std::fs::File>>,
    pid: i32,
}

impl FencerHandle {
    /// Forks the fencer. Call before any other thread exists in production (`pgha run` does,
    /// right after dropping privileges); the child itself is fork-safe either way.
    pub fn spawn() -> Result<FencerHandle, FenceError> {
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 fills two descriptors we then own; O_CLOEXEC keeps them out of
        // Postgres and other children.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(FenceError::Spawn(std::io::Error::last_os_error()));
        }
        let (read_fd, write_fd) = (fds[0], fds[1]);
        // SAFETY: the child only calls async-signal-safe functions (see `child_loop`) and
        // never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: closing the descriptors we just created.
            unsafe {
                libc::close(read_fd);
                libc::close(write_fd);
            }
            return Err(FenceError::Spawn(e));
        }
        if pid == 0 {
            // SAFETY: in the child; see above.
            unsafe {
                libc::close(write_fd);
                child_loop(read_fd)
            }
        }
        // SAFETY: the parent owns the write end; the read end belongs to the child.
        unsafe { libc::close(read_fd) };
        let pipe = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(write_fd) });
        Ok(FencerHandle { pipe: Mutex::new(Some(pipe)), pid })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    fn send(&self, pgid: i32, deadline_ns: u64) -> Result<(), FenceError> {
        let mut pipe = self.pipe.lock().unwrap_or_else(|p| p.into_inner());
        let pipe = pipe.as_mut().ok_or_else(|| FenceError::Gone(std::io::ErrorKind::BrokenPipe.into()))?;
        pipe.write_all(&encode(pgid, deadline_ns)).map_err(FenceError::Gone)
    }

    /// Resolves when the fencer process exits (it never should while pgha runs).
    pub async fn wait_death(&self) -> String {
        loop {
            let mut status = 0;
            // SAFETY: non-blocking wait for our own child.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r == self.pid {
                return format!("wait status {status}");
            }
            if r < 0 {
                return std::io::Error::last_os_error().to_string();
            }
            crate::clock::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Fence for FencerHandle {
    fn extend(&self, pgid: i32, deadline: BootInstant) {
        if let Err(e) = self.send(pgid, deadline.as_duration().as_nanos() as u64) {
            // The death watch stops pgha; nothing else is safe to do from here.
            tracing::error!(error = %e, "cannot extend the fence deadline");
        }
    }

    fn disarm(&self) {
        if let Err(e) = self.send(0, 0) {
            tracing::error!(error = %e, "cannot disarm the fence");
        }
    }
}

impl Drop for FencerHandle {
    /// Closing the pipe tells the fencer to act and exit; then reap it (briefly) so no zombie
    /// remains.
    fn drop(&mut self) {
        drop(self.pipe.get_mut().unwrap_or_else(|p| p.into_inner()).take());
        for _ in 0..200 {
            let mut status = 0;
            // SAFETY: non-blocking wait for our own child.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r != 0 {
                return;
            }
            // SAFETY: a plain sleep of 10 ms while the child exits.
            unsafe { libc::usleep(10_000) };
        }
    }
}

fn boot_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime is async-signal-safe and writes only `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn kill_group(pgid: i32) {
    if pgid > 1 {
        // SAFETY: kill is async-signal-safe; a negative pid names the process group.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

/// The fencer's whole life. Only async-signal-safe calls, no allocation.
unsafe fn child_loop(read_fd: i32) -> ! {
    // Keep only the pipe (as fd 3) and stdio: an inherited write end of another pipe would
    // keep that pipe open, and its fencer would never see pgha go away.
    let fd = 3;
    if read_fd != fd {
        libc::dup2(read_fd, fd);
    }
    if libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) != 0 {
        for other in 4..65_536 {
            libc::close(other);
        }
    }
    libc::signal(libc::SIGINT, libc::SIG_IGN);
    libc::signal(libc::SIGTERM, libc::SIG_IGN);
    libc::signal(libc::SIGHUP, libc::SIG_IGN);
    libc::setsid();
    let mut armed: Option<(i32, u64)> = None;
    let mut buf = [0u8; RECORD];
    let mut have = 0usize;
    loop {
        let timeout = match armed {
            Some((pgid, deadline)) => {
                let now = boot_ns();
                if now >= deadline {
                    kill_group(pgid);
                    armed = None;
                    continue;
                }
                (((deadline - now) / 1_000_000) as i64 + 1).min(RECHECK_MS) as i32
            }
            None => -1,
        };
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let r = libc::poll(&mut pfd, 1, timeout);
        if r == 0 || (r < 0 && *libc::__errno_location() == libc::EINTR) {
            continue;
        }
        let n = libc::read(fd, buf.as_mut_ptr().add(have) as *mut libc::c_void, RECORD - have);
        if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
            // pgha is gone (or the pipe broke): Postgres must not outlive it.
            if let Some((pgid, _)) = armed {
                kill_group(pgid);
            }
            libc::_exit(0);
        }
        if n < 0 {
            continue;
        }
        have += n as usize;
        if have == RECORD {
            have = 0;
            armed = match decode(&buf) {
                (0, _) => None,
                (pgid, deadline) => Some((pgid, deadline)),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::boot_now;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command};

    /// A `sleep` in its own process group, standing in for a postmaster.
    fn victim() -> Child {
        let mut c = Command::new("sleep");
        c.arg("60");
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            c.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        c.spawn().expect("sleep starts")
    }

    fn dead_within(child: &mut Child, within: Duration) -> bool {
        let start = boot_now();
        while boot_now().saturating_since(start) < within {
            if child.try_wait().expect("wait").is_some() {
                return true;
            }
            #[allow(clippy::disallowed_methods)] // a test waits on a real process
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn records_round_trip() {
        assert_eq!(decode(&encode(1234, 987_654_321_000)), (1234, 987_654_321_000));
        assert_eq!(decode(&encode(0, 0)), (0, 0));
    }

    #[test]
    fn the_group_is_killed_when_the_deadline_passes_and_not_before() {
        let fencer = FencerHandle::spawn().unwrap();
        let mut v = victim();
        let pgid = v.id() as i32;
        fencer.extend(pgid, boot_now() + Duration::from_millis(400));
        assert!(!dead_within(&mut v, Duration::from_millis(250)), "killed before its deadline");
        assert!(dead_within(&mut v, Duration::from_secs(2)), "not killed after its deadline");
    }

    #[test]
    fn extending_keeps_it_alive_and_disarming_stops_fencing() {
        let fencer = FencerHandle::spawn().unwrap();
        let mut v = victim();
        let pgid = v.id() as i32;
        for _ in 0..5 {
            fencer.extend(pgid, boot_now() + Duration::from_millis(300));
            assert!(!dead_within(&mut v, Duration::from_millis(100)));
        }
        fencer.disarm();
        assert!(!dead_within(&mut v, Duration::from_millis(600)), "a disarmed fence killed");
        v.kill().unwrap();
        v.wait().unwrap();
    }

    #[test]
    fn when_pgha_goes_away_an_armed_group_dies_at_once() {
        let fencer = FencerHandle::spawn().unwrap();
        let pid = fencer.pid();
        let mut v = victim();
        fencer.extend(v.id() as i32, boot_now() + Duration::from_secs(60));
        drop(fencer);
        assert!(dead_within(&mut v, Duration::from_secs(2)), "the fencer did not act on EOF");
        // and the fencer itself exited (reaped by the drop)
        // SAFETY: signal 0 only checks that the pid exists.
        assert_eq!(unsafe { libc::kill(pid, 0) }, -1, "fencer {pid} still running");
    }
}
