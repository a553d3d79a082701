//! The kernel watchdog, as Patroni uses it: while this node is primary the HA loop keeps the
//! device alive once per successful lease renewal, so a pgha that hangs (and cannot fence or
//! demote) gets the machine reset before another node may take the lease. Input: the local
//! `watchdog` configuration and the timeout from [`watchdog_timeout`]; output: an armed or
//! disarmed device and, from the pure [`may_be_primary`], whether the node may be primary.
//!
//! It never arms the device in mode `off` (not even an open: opening arms most drivers), and it
//! never leaves the device armed on a clean path: every failed activation, [`Watchdog::disable`]
//! and dropping the value write the magic `V` before closing. Only a panic or a crash leave it
//! armed, on purpose: an armed watchdog means this node was primary, and a primary whose HA
//! loop died must not outlive its lease. The device-level calls are in `linux`.

mod linux;

use crate::config::file::{WatchdogConfig, WatchdogMode};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest timeout the Linux API takes (Patroni's bound too; drivers cap much lower).
const MAX_TIMEOUT_S: u64 = 65_535;

#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    #[error(
        "watchdog device {device} does not exist: load a watchdog driver (modprobe softdog, or the \
         hardware's module), point watchdog.device at the right device, or set watchdog.mode: off"
    )]
    NotFound { device: PathBuf },
    #[error(
        "no write access to watchdog device {device}: give the service user write access (the \
         package's udev rule does that), or set watchdog.mode: off"
    )]
    PermissionDenied { device: PathBuf },
    #[error(
        "watchdog device {device} is held by another process (a watchdog daemon, systemd's \
         RuntimeWatchdogSec=, another pgha): stop it or give pgha another device"
    )]
    Busy { device: PathBuf },
    #[error("cannot open watchdog device {device}: {source}")]
    Open { device: PathBuf, source: io::Error },
    #[error(
        "{device} is not a watchdog device (WDIOC_GETSUPPORT: {source}): point watchdog.device at \
         /dev/watchdog or /dev/watchdogN"
    )]
    NotAWatchdog { device: PathBuf, source: io::Error },
    #[error(
        "watchdog device {device} cannot be stopped once opened (its driver has nowayout set), so \
         every clean stop of pgha would reset the machine: reload the driver with nowayout=0 \
         (modprobe softdog nowayout=0) or set watchdog.mode: off"
    )]
    NoWayOut { device: PathBuf },
    #[error("{request} on watchdog device {device} failed: {source}")]
    Ioctl { device: PathBuf, request: &'static str, source: io::Error },
    #[error(
        "watchdog device {device} keeps a {effective_s} s timeout where {requested_s} s was asked: \
         it would reset the machine only after the lease expired; use a device that accepts the \
         timeout, or raise ttl"
    )]
    TimeoutTooLong { device: PathBuf, requested_s: u64, effective_s: u64 },
    #[error("a watchdog timeout of {requested:?} is outside 1..={MAX_TIMEOUT_S} s")]
    InvalidTimeout { requested: Duration },
    #[error(
        "ttl ({ttl_s} s) - watchdog.safety_margin ({safety_margin_s} s) - loop_wait ({loop_wait_s} s) \
         leaves no watchdog timeout longer than one loop_wait, so keepalives could not keep a \
         healthy primary alive: raise ttl to at least {min_ttl_s} s"
    )]
    Timing { ttl_s: u64, safety_margin_s: u64, loop_wait_s: u64, min_ttl_s: u64 },
    #[error("keepalive to watchdog device {device} failed: {source}")]
    Keepalive { device: PathBuf, source: io::Error },
}

/// The watchdog timeout for a lease of `ttl_s`: the holder believes its lease until
/// `ttl - safety_margin` after the renewal was sent, and a keepalive follows the renewal by up
/// to one loop, so the device must fire within `ttl - safety_margin - loop_wait` of the last
/// keepalive to reset the machine before the lease could pass to another node. It must also be
/// longer than one `loop_wait`, the time between keepalives of a healthy primary.
pub fn watchdog_timeout(
    ttl_s: u64,
    safety_margin_s: u64,
    loop_wait_s: u64,
) -> Result<Duration, WatchdogError> {
    // A loop counts as at least one second, so the timeout stays below ttl - safety_margin
    // even for a loop_wait of 0 (which the configuration refuses anyway).
    let loop_s = loop_wait_s.max(1);
    let timeout = ttl_s.checked_sub(safety_margin_s).and_then(|t| t.checked_sub(loop_s)).unwrap_or(0);
    if timeout <= loop_s {
        // The timeout must reach loop + 1 (so it is also >= 1).
        let min_ttl_s = safety_margin_s + 2 * loop_s + 1;
        return Err(WatchdogError::Timing { ttl_s, safety_margin_s, loop_wait_s, min_ttl_s });
    }
    Ok(Duration::from_secs(timeout))
}

/// Whether the HA loop may make (or keep) this node primary, given the watchdog mode and the
/// outcome of [`Watchdog::activate`].
#[derive(Debug)]
pub enum Permit {
    Yes,
    /// `automatic`: the device did not work; go on without it (and say so, once).
    YesWithWarning(WatchdogError),
    /// `required`: no primary without a working watchdog.
    No(WatchdogError),
}

/// `off` never looks at the device, `automatic` goes on without a working one, `required`
/// refuses to be primary without one (Patroni's three modes).
pub fn may_be_primary(mode: WatchdogMode, activation: Result<(), WatchdogError>) -> Permit {
    match (mode, activation) {
        (WatchdogMode::Off, _) | (_, Ok(())) => Permit::Yes,
        (WatchdogMode::Automatic, Err(e)) => Permit::YesWithWarning(e),
        (WatchdogMode::Required, Err(e)) => Permit::No(e),
    }
}

/// The watchdog device of this node: closed until [`Watchdog::activate`], armed from then on
/// until [`Watchdog::disable`] (or drop).
#[derive(Debug)]
pub struct Watchdog {
    mode: WatchdogMode,
    path: PathBuf,
    device: Option<Box<dyn Driver>>,
    /// The timeout in effect while armed.
    effective: Option<Duration>,
    /// The last problem reported by [`Watchdog::activate_for_primary`], so it is logged once.
    reported: Option<String>,
}

impl Watchdog {
    /// A watchdog for `cfg`; nothing is opened yet.
    pub fn new(cfg: &WatchdogConfig) -> Watchdog {
        Watchdog { mode: cfg.mode, path: cfg.device.clone(), device: None, effective: None, reported: None }
    }

    /// A watchdog whose device is already open, as `driver` (the tests' fake device).
    #[cfg(test)]
    fn with_driver(cfg: &WatchdogConfig, driver: Box<dyn Driver>) -> Watchdog {
        Watchdog {
            mode: cfg.mode,
            path: cfg.device.clone(),
            device: Some(driver),
            effective: None,
            reported: None,
        }
    }

    /// Opens the device if it is not open yet, sets `timeout` (whole seconds, rounded down: a
    /// shorter timeout is the safe side) and reads back the timeout in effect. On any error the
    /// device is disarmed and closed again. Mode `off`: `Ok` without touching the device.
    pub fn activate(&mut self, timeout: Duration) -> Result<(), WatchdogError> {
        if self.mode == WatchdogMode::Off {
            return Ok(());
        }
        let seconds = timeout.as_secs();
        if !(1..=MAX_TIMEOUT_S).contains(&seconds) {
            return Err(WatchdogError::InvalidTimeout { requested: timeout });
        }
        if self.device.is_none() {
            self.device = Some(self.open()?);
        }
        match self.arm(seconds as u32) {
            Ok(effective) => {
                let driver = self.device.as_ref().map(|d| d.describe()).unwrap_or_default();
                if self.effective != Some(effective) {
                    tracing::info!(
                        device = %self.path.display(),
                        driver = %driver,
                        timeout_s = effective.as_secs(),
                        "watchdog armed"
                    );
                }
                self.effective = Some(effective);
                Ok(())
            }
            Err(e) => {
                self.disable();
                Err(e)
            }
        }
    }

    /// [`Self::activate`] judged by [`may_be_primary`] for this watchdog's mode, logging a
    /// problem once (again only after it changed or the device worked in between).
    pub fn activate_for_primary(&mut self, timeout: Duration) -> Permit {
        let permit = may_be_primary(self.mode, self.activate(timeout));
        match &permit {
            Permit::Yes => self.reported = None,
            Permit::YesWithWarning(e) | Permit::No(e) => {
                let text = e.to_string();
                if self.reported.as_deref() != Some(text.as_str()) {
                    if matches!(permit, Permit::No(_)) {
                        tracing::error!(error = %text, "watchdog.mode is required: not becoming primary");
                    } else {
                        tracing::warn!(error = %text, "running as primary without a watchdog");
                    }
                    self.reported = Some(text);
                }
            }
        }
        permit
    }

    /// Restarts the countdown; call it only after a renewal of the lease was accepted. A no-op
    /// while the device is not armed (mode `off`, or `automatic` without a working device).
    pub fn keepalive(&mut self) -> Result<(), WatchdogError> {
        match self.device.as_mut() {
            None => Ok(()),
            Some(device) => device
                .keepalive()
                .map_err(|source| WatchdogError::Keepalive { device: self.path.clone(), source }),
        }
    }

    /// Disarms (magic close) and closes the device; a no-op when it is not open. Call it when
    /// the node stops being primary and before a clean exit.
    pub fn disable(&mut self) {
        self.effective = None;
        if let Some(device) = self.device.take() {
            match device.magic_close() {
                Ok(()) => tracing::info!(device = %self.path.display(), "watchdog disarmed"),
                Err(e) => tracing::error!(
                    device = %self.path.display(),
                    error = %e,
                    "cannot disarm the watchdog: the machine may reset when its timeout expires"
                ),
            }
        }
    }

    pub fn mode(&self) -> WatchdogMode {
        self.mode
    }

    /// The device is open and armed.
    pub fn is_active(&self) -> bool {
        self.device.is_some()
    }

    /// The timeout in effect while armed.
    pub fn effective_timeout(&self) -> Option<Duration> {
        self.effective
    }

    /// Whether this node could satisfy `mode` if it became primary (Patroni's `is_healthy`): in
    /// `off` and `automatic` always; in `required` when the device is armed, or exists, is
    /// writable and can be disarmed. Does not open it (that would arm it).
    pub fn is_healthy_for(&self, mode: WatchdogMode) -> bool {
        match mode {
            WatchdogMode::Off | WatchdogMode::Automatic => true,
            WatchdogMode::Required => {
                self.is_active()
                    || (nix::unistd::access(&self.path, nix::unistd::AccessFlags::W_OK).is_ok()
                        && !nowayout(&self.path))
            }
        }
    }

    fn open(&self) -> Result<Box<dyn Driver>, WatchdogError> {
        let device = self.path.clone();
        // Opening arms the device: refuse one that could not be disarmed again.
        if nowayout(&self.path) {
            return Err(WatchdogError::NoWayOut { device });
        }
        let device = linux::Device::open(&self.path).map_err(|e| match e {
            linux::OpenError::Open(source) => match source.kind() {
                io::ErrorKind::NotFound => WatchdogError::NotFound { device },
                io::ErrorKind::PermissionDenied => WatchdogError::PermissionDenied { device },
                _ if source.raw_os_error() == Some(libc::EBUSY) => WatchdogError::Busy { device },
                _ => WatchdogError::Open { device, source },
            },
            linux::OpenError::Support(source) if source.raw_os_error() == Some(libc::ENOTTY) => {
                WatchdogError::NotAWatchdog { device, source }
            }
            // Some other failure: `Device::open` wrote the magic `V` if it is a character
            // device (it may be a watchdog, now armed), nothing otherwise.
            linux::OpenError::Support(source) => {
                WatchdogError::Ioctl { device, request: "WDIOC_GETSUPPORT", source }
            }
        })?;
        Ok(Box::new(device))
    }

    /// Sets and checks the timeout on the open device, then pings it so the countdown starts now.
    fn arm(&mut self, seconds: u32) -> Result<Duration, WatchdogError> {
        let path = &self.path;
        let ioctl = |request| move |source| WatchdogError::Ioctl { device: path.clone(), request, source };
        let device = self.device.as_mut().expect("arm is called with the device open");
        // Without WDIOF_SETTIMEOUT the driver's fixed timeout must already be short enough.
        if device.can_set_timeout() {
            device.set_timeout(seconds).map_err(ioctl("WDIOC_SETTIMEOUT"))?;
        }
        let effective = device.timeout().map_err(ioctl("WDIOC_GETTIMEOUT"))?;
        if effective > seconds {
            return Err(WatchdogError::TimeoutTooLong {
                device: path.clone(),
                requested_s: seconds.into(),
                effective_s: effective.into(),
            });
        }
        device.keepalive().map_err(|source| WatchdogError::Keepalive { device: path.clone(), source })?;
        Ok(Duration::from_secs(effective.into()))
    }
}

impl Drop for Watchdog {
    /// A clean drop disarms, so no clean path can leave the device armed. During a panic the
    /// device stays armed on purpose (see the module comment).
    fn drop(&mut self) {
        if self.device.is_some() {
            if std::thread::panicking() {
                tracing::error!(
                    device = %self.path.display(),
                    "panicking with the watchdog armed: the machine resets unless pgha comes back in time"
                );
            } else {
                self.disable();
            }
        }
    }
}

/// What [`Watchdog`] needs from an open device: `linux::Device`, or a fake in the tests (no
/// test may open a real watchdog).
trait Driver: Send + Sync + std::fmt::Debug {
    /// The driver's name (and firmware), for the log.
    fn describe(&self) -> String;
    fn can_set_timeout(&self) -> bool;
    fn set_timeout(&mut self, seconds: u32) -> io::Result<()>;
    /// The timeout in effect, in seconds.
    fn timeout(&mut self) -> io::Result<u32>;
    fn keepalive(&mut self) -> io::Result<()>;
    /// Disarms and closes.
    fn magic_close(self: Box<Self>) -> io::Result<()>;
}

impl Driver for linux::Device {
    fn describe(&self) -> String {
        match self.support.firmware_version {
            0 => self.support.identity.clone(),
            v => format!("{} (firmware {v})", self.support.identity),
        }
    }
    fn can_set_timeout(&self) -> bool {
        self.support.options & linux::WDIOF_SETTIMEOUT != 0
    }
    fn set_timeout(&mut self, seconds: u32) -> io::Result<()> {
        linux::Device::set_timeout(self, seconds)
    }
    fn timeout(&mut self) -> io::Result<u32> {
        linux::Device::timeout(self)
    }
    fn keepalive(&mut self) -> io::Result<()> {
        linux::Device::keepalive(self)
    }
    fn magic_close(self: Box<Self>) -> io::Result<()> {
        linux::Device::magic_close(*self)
    }
}

/// The kernel says the device behind `device` cannot be stopped once opened. Unknown (no
/// such sysfs file, an alias name) counts as stoppable.
fn nowayout(device: &Path) -> bool {
    let resolved = std::fs::canonicalize(device).unwrap_or_else(|_| device.to_path_buf());
    linux::sysfs_nowayout(&resolved)
        .and_then(|p| std::fs::read_to_string(p).ok())
        .is_some_and(|s| s.trim() == "1")
}

#[cfg(test)]
mod tests;
