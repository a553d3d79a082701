//! The Linux watchdog device API (`include/uapi/linux/watchdog.h`, Documentation/watchdog/
//! watchdog-api.rst): open, `WDIOC_GETSUPPORT`, `WDIOC_SETTIMEOUT`, `WDIOC_GETTIMEOUT`,
//! `WDIOC_KEEPALIVE` and the magic close. Input: a device path; output: a [`Device`] or the raw
//! `io::Error` of the step that failed. It makes no policy decision and never logs: `super`
//! turns errors into [`super::WatchdogError`] and decides what to do with them.
//!
//! It must never write to a file that has not answered `WDIOC_GETSUPPORT`: writing the magic
//! `V` to a regular file named by a configuration mistake would change that file.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// `struct watchdog_info`.
#[repr(C)]
struct WatchdogInfo {
    options: u32,
    firmware_version: u32,
    identity: [u8; 32],
}

const WATCHDOG_IOCTL_BASE: u32 = b'W' as u32;
pub(super) const WDIOC_GETSUPPORT: libc::Ioctl = libc::_IOR::<WatchdogInfo>(WATCHDOG_IOCTL_BASE, 0);
pub(super) const WDIOC_KEEPALIVE: libc::Ioctl = libc::_IOR::<libc::c_int>(WATCHDOG_IOCTL_BASE, 5);
pub(super) const WDIOC_SETTIMEOUT: libc::Ioctl = libc::_IOWR::<libc::c_int>(WATCHDOG_IOCTL_BASE, 6);
pub(super) const WDIOC_GETTIMEOUT: libc::Ioctl = libc::_IOR::<libc::c_int>(WATCHDOG_IOCTL_BASE, 7);

/// The driver accepts `WDIOC_SETTIMEOUT`.
pub(super) const WDIOF_SETTIMEOUT: u32 = 0x0080;
/// The driver accepts `WDIOC_KEEPALIVE` (otherwise only a write pings it).
pub(super) const WDIOF_KEEPALIVEPING: u32 = 0x8000;

/// What the driver says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Support {
    pub options: u32,
    pub firmware_version: u32,
    /// The driver's name, e.g. "Software Watchdog".
    pub identity: String,
}

/// An open watchdog device. Most drivers start counting down on open: from then on it needs
/// keepalives or a [`Device::magic_close`].
#[derive(Debug)]
pub(super) struct Device {
    file: File,
    pub support: Support,
}

/// Why [`Device::open`] failed.
#[derive(Debug)]
pub(super) enum OpenError {
    /// `open(2)` failed.
    Open(io::Error),
    /// The file opened but `WDIOC_GETSUPPORT` failed; `ENOTTY` means it is not a watchdog.
    /// The file is closed; only a character device that failed otherwise gets the magic `V`
    /// first (a watchdog with a driver bug is armed by the open), a regular file never.
    Support(io::Error),
}

impl Device {
    /// Opens `path` write-only (as the API asks; `O_CLOEXEC` too, from std, so no child —
    /// Postgres above all — inherits the descriptor and keeps the device busy after pgha) and
    /// asks the driver what it supports.
    pub(super) fn open(path: &Path) -> Result<Device, OpenError> {
        let file = OpenOptions::new().write(true).open(path).map_err(OpenError::Open)?;
        match get_support(&file) {
            Ok(support) => Ok(Device { file, support }),
            Err(e) => {
                let char_device = file.metadata().is_ok_and(|m| m.file_type().is_char_device());
                if e.raw_os_error() != Some(libc::ENOTTY) && char_device {
                    let _ = (&file).write_all(b"V");
                }
                Err(OpenError::Support(e))
            }
        }
    }

    /// Sets the timeout; the driver may pick a nearby value, read it back with [`Self::timeout`].
    pub(super) fn set_timeout(&self, seconds: u32) -> io::Result<()> {
        let mut value = libc::c_int::try_from(seconds).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: WDIOC_SETTIMEOUT reads and writes one c_int, which `value` is.
        let r =
            unsafe { libc::ioctl(self.file.as_raw_fd(), WDIOC_SETTIMEOUT, &mut value as *mut libc::c_int) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The timeout in effect, in seconds.
    pub(super) fn timeout(&self) -> io::Result<u32> {
        let mut value: libc::c_int = 0;
        // SAFETY: WDIOC_GETTIMEOUT writes one c_int, which `value` is.
        let r =
            unsafe { libc::ioctl(self.file.as_raw_fd(), WDIOC_GETTIMEOUT, &mut value as *mut libc::c_int) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        u32::try_from(value).map_err(|_| io::ErrorKind::InvalidData.into())
    }

    /// Restarts the countdown. Drivers without `WDIOF_KEEPALIVEPING` refuse the ioctl; every
    /// driver takes a write of any byte but `V` as a ping.
    pub(super) fn keepalive(&mut self) -> io::Result<()> {
        if self.support.options & WDIOF_KEEPALIVEPING != 0 {
            let mut dummy: libc::c_int = 0;
            // SAFETY: WDIOC_KEEPALIVE is declared with a c_int argument, which `dummy` is.
            let r = unsafe {
                libc::ioctl(self.file.as_raw_fd(), WDIOC_KEEPALIVE, &mut dummy as *mut libc::c_int)
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        } else {
            self.file.write_all(b"1")
        }
    }

    /// Writes the magic `V`, then closes: the driver stops the countdown (unless it was loaded
    /// with `nowayout`). Closing without the `V` leaves it running — what a crash should do.
    pub(super) fn magic_close(mut self) -> io::Result<()> {
        self.file.write_all(b"V")
        // `self.file` is closed here.
    }
}

fn get_support(file: &File) -> io::Result<Support> {
    let mut info = WatchdogInfo { options: 0, firmware_version: 0, identity: [0; 32] };
    // SAFETY: WDIOC_GETSUPPORT writes one `struct watchdog_info`, which `info` is (repr(C)).
    let r = unsafe { libc::ioctl(file.as_raw_fd(), WDIOC_GETSUPPORT, &mut info as *mut WatchdogInfo) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let end = info.identity.iter().position(|&b| b == 0).unwrap_or(info.identity.len());
    Ok(Support {
        options: info.options,
        firmware_version: info.firmware_version,
        identity: String::from_utf8_lossy(&info.identity[..end]).into_owned(),
    })
}

/// Where the kernel shows whether the device behind `device` can be stopped once opened:
/// `/dev/watchdog` is the legacy name of `watchdog0`, `/dev/watchdogN` is `watchdogN`. `None`
/// for other names (a udev alias the caller did not resolve): then nothing is known beforehand.
pub(super) fn sysfs_nowayout(device: &Path) -> Option<std::path::PathBuf> {
    let name = device.file_name()?.to_str()?;
    let id = name.strip_prefix("watchdog")?;
    let id = match id {
        "" => "0",
        digits if digits.bytes().all(|b| b.is_ascii_digit()) => digits,
        _ => return None,
    };
    Some(Path::new("/sys/class/watchdog").join(format!("watchdog{id}")).join("nowayout"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request numbers of `linux/watchdog.h` on the generic ioctl layout (x86_64, arm64).
    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn request_numbers_match_the_kernel_header() {
        assert_eq!(WDIOC_GETSUPPORT as u32, 0x8028_5700);
        assert_eq!(WDIOC_KEEPALIVE as u32, 0x8004_5705);
        assert_eq!(WDIOC_SETTIMEOUT as u32, 0xC004_5706);
        assert_eq!(WDIOC_GETTIMEOUT as u32, 0x8004_5707);
    }

    #[test]
    fn sysfs_names_follow_the_device_name() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/dev/watchdog", Some("/sys/class/watchdog/watchdog0/nowayout")),
            ("/dev/watchdog0", Some("/sys/class/watchdog/watchdog0/nowayout")),
            ("/dev/watchdog12", Some("/sys/class/watchdog/watchdog12/nowayout")),
            ("/dev/my-dog", None),
            ("/dev/watchdog-ipmi", None),
            ("/", None),
        ];
        for (device, want) in cases {
            assert_eq!(sysfs_nowayout(Path::new(device)).as_deref(), want.map(Path::new), "{device}");
        }
    }
}
