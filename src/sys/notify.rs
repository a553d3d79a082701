//! systemd's readiness protocol (`sd_notify(3)`) without libsystemd: one datagram of
//! `KEY=VALUE` lines to the unix socket named by `$NOTIFY_SOCKET` (a path, or an abstract
//! name written with a leading `@`). Input: the environment `pgha.service` (`Type=notify`)
//! gives the process — `NOTIFY_SOCKET`, and `WATCHDOG_USEC`/`WATCHDOG_PID` when the unit sets
//! `WatchdogSec=`; output: `READY=1`, `RELOADING=1`, `STOPPING=1`, `WATCHDOG=1` and `STATUS=`
//! messages. [`Notifier::take_from_env`] removes those variables from the environment, as
//! `sd_notify(unset_environment=1)` does, and must run before any thread or child exists:
//! Debian's and PGDG's `postgres` are built with systemd support and would otherwise send their
//! own READY=1/STOPPING=1 (ignored with a warning under `NotifyAccess=main`, believed under
//! `all`) every time pgha starts or stops them. Outside systemd every call does nothing.
//! Sending never blocks and never fails the caller: a lost notification shows in systemd,
//! not as a pgha error.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// Where notifications go, if anywhere, and how often the service manager wants `WATCHDOG=1`.
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads and removes the variables (see the module comment: single-threaded callers only).
    pub fn take_from_env() -> Notifier {
        let socket = std::env::var(NOTIFY_SOCKET).ok();
        let usec = std::env::var(WATCHDOG_USEC).ok();
        let pid = std::env::var(WATCHDOG_PID).ok();
        for name in [NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID] {
            std::env::remove_var(name);
        }
        Notifier::from_values(socket.as_deref(), usec.as_deref(), pid.as_deref(), std::process::id())
    }

    /// As [`Notifier::take_from_env`], from the variables' values. The watchdog is ours
    /// only when `WATCHDOG_PID` is unset or names `my_pid`.
    pub fn from_values(socket: Option<&str>, usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Notifier {
        let target = socket.filter(|s| !s.is_empty()).and_then(|s| match open(s) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(socket = s, error = %e, "cannot use $NOTIFY_SOCKET; systemd will not hear from pgha");
                None
            }
        });
        let ours = pid.is_none_or(|p| p.parse() == Ok(my_pid));
        let watchdog = usec
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && ours && target.is_some())
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    /// Whether a service manager listens.
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send `WATCHDOG=1`: half of `WatchdogSec=`, as sd_watchdog_enabled(3)
    /// recommends. `None` when the unit sets no watchdog.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines).
    pub fn notify(&self, state: &str) {
        let Some((socket, addr)) = &self.target else { return };
        if let Err(e) = socket.send_to_addr(state.as_bytes(), addr) {
            tracing::debug!(error = %e, state, "a notification to systemd was lost");
        }
    }

    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `RELOADING=1` with the CLOCK_MONOTONIC time systemd asks for; follow with [`Self::ready`].
    pub fn reloading(&self) {
        let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
            .unwrap_or(0);
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }

    pub fn stopping(&self, status: &str) {
        self.notify(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }

    pub fn status(&self, status: &str) {
        self.notify(&format!("STATUS={}", one_line(status)));
    }
}

/// A STATUS value is one line.
fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

fn open(name: &str) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    let addr = match name.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes())?,
        None if name.starts_with('/') => SocketAddr::from_pathname(name)?,
        None => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "only unix socket paths and @abstract names are supported",
            ))
        }
    };
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    Ok((socket, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(socket: &UnixDatagram) -> String {
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_socket_path() {
        let dir = std::env::temp_dir().join(format!("pgha-notify-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::from_values(path.to_str(), Some("30000000"), None, 42);
        assert!(n.is_active());
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(15)));
        n.ready("running as node1\nprimary");
        assert_eq!(recv(&listener), "READY=1\nSTATUS=running as node1 primary");
        n.watchdog();
        assert_eq!(recv(&listener), "WATCHDOG=1");
        n.stopping("stopping");
        assert_eq!(recv(&listener), "STOPPING=1\nSTATUS=stopping");
        n.reloading();
        assert!(recv(&listener).starts_with("RELOADING=1\nMONOTONIC_USEC="));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("pgha-notify-test-{}", std::process::id());
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        let n = Notifier::from_values(Some(&format!("@{name}")), None, None, 1);
        assert_eq!(n.watchdog_interval(), None);
        n.status("hello");
        assert_eq!(recv(&listener), "STATUS=hello");
    }

    #[test]
    fn without_systemd_nothing_happens() {
        let n = Notifier::from_values(None, Some("1000000"), None, 1);
        assert!(!n.is_active());
        assert_eq!(n.watchdog_interval(), None);
        n.ready("x");
        // Another process's watchdog, a relative path, garbage: ignored.
        let n = Notifier::from_values(Some("@x"), Some("1000000"), Some("7"), 1);
        assert_eq!(n.watchdog_interval(), None);
        assert!(!Notifier::from_values(Some("relative/path"), None, None, 1).is_active());
        assert!(!Notifier::from_values(Some(""), None, None, 1).is_active());
        let n = Notifier::from_values(Some("@x"), Some("0"), Some("1"), 1);
        assert_eq!(n.watchdog_interval(), None);
    }
}
