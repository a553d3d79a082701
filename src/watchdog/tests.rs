//! The pure rules as tables, then the device's error paths for real: this machine (and CI) has
//! no watchdog, so these open missing paths, `/dev/null` and regular files — never a real
//! device. The one test that arms a real watchdog is ignored and needs an explicit variable.

use super::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A directory under the system temp dir, unique to this test, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("pgha-watchdog-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
    /// A regular file with known contents, standing in for a mistyped `watchdog.device`.
    fn file(&self, name: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, b"precious").unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn watchdog(mode: WatchdogMode, device: &Path) -> Watchdog {
    Watchdog::new(&WatchdogConfig { mode, device: device.to_path_buf(), safety_margin: 2 })
}

const MISSING: &str = "/nonexistent/pgha-test/watchdog";
const SEVEN_S: Duration = Duration::from_secs(7);

#[test]
fn the_timeout_leaves_the_margin_and_one_loop_and_outlasts_a_loop() {
    // (ttl, safety_margin, loop_wait) -> seconds, or None when no safe timeout exists
    let cases: &[(u64, u64, u64, Option<u64>)] = &[
        (10, 2, 1, Some(7)), // pgha's defaults
        (30, 5, 10, Some(15)),
        (30, 2, 10, Some(18)),
        (23, 2, 10, Some(11)),
        (22, 2, 10, None), // 10 s would be one loop: a healthy primary could be reset
        (20, 2, 10, None),
        (5, 2, 1, Some(2)),
        (4, 2, 1, None),
        (3, 2, 1, None),
        (1, 2, 1, None), // would underflow
        (0, 0, 0, None),
        (4, 1, 0, Some(2)), // a loop counts as 1 s
        (3, 0, 0, Some(2)),
        (2, 0, 0, None),
    ];
    for &(ttl, margin, loop_wait, want) in cases {
        let got = watchdog_timeout(ttl, margin, loop_wait).ok().map(|d| d.as_secs());
        assert_eq!(got, want, "ttl={ttl} margin={margin} loop_wait={loop_wait}");
    }
}

#[test]
fn every_timeout_is_safe_and_every_refusal_names_the_smallest_ttl_that_works() {
    for ttl in 0..60 {
        for margin in 0..8 {
            for loop_wait in 0..15 {
                match watchdog_timeout(ttl, margin, loop_wait) {
                    Ok(t) => {
                        let t = t.as_secs();
                        assert!(t >= 1, "{ttl} {margin} {loop_wait}");
                        assert!(t < ttl - margin, "{ttl} {margin} {loop_wait}: fires after the margin");
                        assert!(t > loop_wait, "{ttl} {margin} {loop_wait}: shorter than a loop");
                    }
                    Err(WatchdogError::Timing { min_ttl_s, .. }) => {
                        assert!(min_ttl_s > ttl);
                        assert!(watchdog_timeout(min_ttl_s, margin, loop_wait).is_ok());
                        assert!(watchdog_timeout(min_ttl_s - 1, margin, loop_wait).is_err());
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
        }
    }
}

#[test]
fn the_mode_decides_what_a_failed_watchdog_means() {
    fn failed() -> Result<(), WatchdogError> {
        Err(WatchdogError::NotFound { device: MISSING.into() })
    }
    fn too_long() -> Result<(), WatchdogError> {
        Err(WatchdogError::TimeoutTooLong { device: MISSING.into(), requested_s: 7, effective_s: 60 })
    }
    #[derive(Debug, PartialEq)]
    enum Want {
        Yes,
        Warn,
        No,
    }
    use WatchdogMode::*;
    let cases: Vec<(WatchdogMode, Result<(), WatchdogError>, Want)> = vec![
        (Off, Ok(()), Want::Yes),
        (Off, failed(), Want::Yes),
        (Automatic, Ok(()), Want::Yes),
        (Automatic, failed(), Want::Warn),
        (Automatic, too_long(), Want::Warn),
        (Required, Ok(()), Want::Yes),
        (Required, failed(), Want::No),
        (Required, too_long(), Want::No),
    ];
    for (mode, activation, want) in cases {
        let label = format!("{mode:?} {activation:?}");
        let got = match may_be_primary(mode, activation) {
            Permit::Yes => Want::Yes,
            Permit::YesWithWarning(_) => Want::Warn,
            Permit::No(_) => Want::No,
        };
        assert_eq!(got, want, "{label}");
    }
}

#[test]
fn mode_off_touches_nothing() {
    let dir = TempDir::new();
    let file = dir.file("not-a-watchdog");
    for device in [Path::new(MISSING), file.as_path()] {
        let mut wd = watchdog(WatchdogMode::Off, device);
        // A missing device would fail to open: Ok means it was not opened.
        wd.activate(SEVEN_S).unwrap();
        assert!(matches!(wd.activate_for_primary(SEVEN_S), Permit::Yes));
        assert!(!wd.is_active());
        wd.keepalive().unwrap();
        wd.disable();
        assert!(wd.is_healthy_for(WatchdogMode::Off));
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
}

#[test]
fn a_missing_device_is_named_with_what_to_do() {
    let mut wd = watchdog(WatchdogMode::Automatic, Path::new(MISSING));
    let e = wd.activate(SEVEN_S).unwrap_err();
    assert!(matches!(&e, WatchdogError::NotFound { device } if device == Path::new(MISSING)), "{e:?}");
    let text = e.to_string();
    assert!(text.contains(MISSING) && text.contains("modprobe softdog"), "{text}");
    assert!(!wd.is_active());
    // Not armed, so a keepalive has nothing to do.
    wd.keepalive().unwrap();
}

#[test]
fn dev_null_is_not_a_watchdog() {
    let mut wd = watchdog(WatchdogMode::Required, Path::new("/dev/null"));
    let e = wd.activate(SEVEN_S).unwrap_err();
    match &e {
        WatchdogError::NotAWatchdog { device, source } => {
            assert_eq!(device, Path::new("/dev/null"));
            assert_eq!(source.raw_os_error(), Some(libc::ENOTTY));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("/dev/null"));
    assert!(!wd.is_active());
}

#[test]
fn a_regular_file_is_not_a_watchdog_and_is_left_unchanged() {
    let dir = TempDir::new();
    let file = dir.file("watchdog");
    let mut wd = watchdog(WatchdogMode::Automatic, &file);
    let e = wd.activate(SEVEN_S).unwrap_err();
    assert!(matches!(&e, WatchdogError::NotAWatchdog { device, .. } if *device == file), "{e:?}");
    drop(wd);
    // No magic `V` (nor anything else) was written to it.
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
}

#[test]
fn a_directory_cannot_be_opened_for_writing() {
    let dir = TempDir::new();
    let mut wd = watchdog(WatchdogMode::Automatic, &dir.0);
    let e = wd.activate(SEVEN_S).unwrap_err();
    assert!(matches!(&e, WatchdogError::Open { device, .. } if *device == dir.0), "{e:?}");
}

#[test]
fn timeouts_outside_the_api_range_are_refused_before_opening() {
    for timeout in [Duration::ZERO, Duration::from_millis(999), Duration::from_secs(65_536)] {
        // /dev/null would fail as NotAWatchdog if it were opened.
        let mut wd = watchdog(WatchdogMode::Required, Path::new("/dev/null"));
        let e = wd.activate(timeout).unwrap_err();
        assert!(matches!(e, WatchdogError::InvalidTimeout { requested } if requested == timeout), "{e:?}");
    }
}

#[test]
fn required_refuses_and_automatic_warns_once() {
    let logs = Capture::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());

    let mut required = watchdog(WatchdogMode::Required, Path::new(MISSING));
    assert!(matches!(required.activate_for_primary(SEVEN_S), Permit::No(WatchdogError::NotFound { .. })));
    let mut automatic = watchdog(WatchdogMode::Automatic, Path::new(MISSING));
    for _ in 0..3 {
        assert!(matches!(
            automatic.activate_for_primary(SEVEN_S),
            Permit::YesWithWarning(WatchdogError::NotFound { .. })
        ));
    }
    assert_eq!(logs.count("ERROR"), 1, "{}", logs.text());
    assert_eq!(logs.count("WARN"), 1, "{}", logs.text());
}

#[test]
fn health_in_required_mode_needs_a_writable_device() {
    let wd = watchdog(WatchdogMode::Required, Path::new(MISSING));
    assert!(!wd.is_healthy_for(WatchdogMode::Required));
    assert!(wd.is_healthy_for(WatchdogMode::Automatic));
    assert!(wd.is_healthy_for(WatchdogMode::Off));
}

/// What the fake device was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    SetTimeout(u32),
    GetTimeout,
    Keepalive,
    MagicClose,
}

/// A watchdog driver in memory: `round` is what the driver makes of a requested timeout.
#[derive(Debug)]
struct Fake {
    can_set: bool,
    current: u32,
    round: fn(u32) -> u32,
    fail_keepalive: Arc<std::sync::atomic::AtomicBool>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Driver for Fake {
    fn describe(&self) -> String {
        "fake".into()
    }
    fn can_set_timeout(&self) -> bool {
        self.can_set
    }
    fn set_timeout(&mut self, seconds: u32) -> io::Result<()> {
        self.calls.lock().unwrap().push(Call::SetTimeout(seconds));
        self.current = (self.round)(seconds);
        Ok(())
    }
    fn timeout(&mut self) -> io::Result<u32> {
        self.calls.lock().unwrap().push(Call::GetTimeout);
        Ok(self.current)
    }
    fn keepalive(&mut self) -> io::Result<()> {
        self.calls.lock().unwrap().push(Call::Keepalive);
        if self.fail_keepalive.load(Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }
    fn magic_close(self: Box<Self>) -> io::Result<()> {
        self.calls.lock().unwrap().push(Call::MagicClose);
        Ok(())
    }
}

/// A watchdog in `mode` over a fake device, and the fake's call log and keepalive switch.
struct Bench {
    wd: Watchdog,
    calls: Arc<Mutex<Vec<Call>>>,
    fail_keepalive: Arc<std::sync::atomic::AtomicBool>,
}

impl Bench {
    /// A driver that sets timeouts (`round` applied) and starts at 60 s, like softdog.
    fn settable(round: fn(u32) -> u32) -> Bench {
        Bench::new(true, round)
    }
    /// A driver with a fixed 60 s timeout.
    fn fixed() -> Bench {
        Bench::new(false, |s| s)
    }
    fn new(can_set: bool, round: fn(u32) -> u32) -> Bench {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let fail_keepalive = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fake = Fake {
            can_set,
            current: 60,
            round,
            fail_keepalive: fail_keepalive.clone(),
            calls: calls.clone(),
        };
        let cfg = WatchdogConfig { mode: WatchdogMode::Required, device: MISSING.into(), safety_margin: 2 };
        Bench { wd: Watchdog::with_driver(&cfg, Box::new(fake)), calls, fail_keepalive }
    }
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

#[test]
fn activation_sets_reads_back_and_pings_then_disable_disarms_once() {
    let mut b = Bench::settable(|s| s);
    // 7.9 s is asked as 7 s: rounding down is the safe side.
    b.wd.activate(Duration::from_millis(7_900)).unwrap();
    assert!(b.wd.is_active());
    assert_eq!(b.wd.effective_timeout(), Some(SEVEN_S));
    assert_eq!(b.calls(), [Call::SetTimeout(7), Call::GetTimeout, Call::Keepalive]);
    b.wd.keepalive().unwrap();
    b.wd.disable();
    b.wd.disable();
    assert!(!b.wd.is_active());
    assert_eq!(b.wd.effective_timeout(), None);
    assert_eq!(b.calls()[3..], [Call::Keepalive, Call::MagicClose]);
}

#[test]
fn a_driver_that_picks_a_shorter_timeout_is_fine() {
    let mut b = Bench::settable(|s| s - 1);
    b.wd.activate(SEVEN_S).unwrap();
    assert_eq!(b.wd.effective_timeout(), Some(Duration::from_secs(6)));
}

#[test]
fn a_timeout_longer_than_asked_is_refused_and_the_device_disarmed() {
    for (mut b, expect) in [
        (Bench::settable(|s| s + 1), vec![Call::SetTimeout(7), Call::GetTimeout, Call::MagicClose]),
        (Bench::fixed(), vec![Call::GetTimeout, Call::MagicClose]),
    ] {
        let e = b.wd.activate(SEVEN_S).unwrap_err();
        assert!(matches!(e, WatchdogError::TimeoutTooLong { requested_s: 7, .. }), "{e:?}");
        assert!(!b.wd.is_active());
        assert_eq!(b.calls(), expect);
    }
}

#[test]
fn a_failed_first_ping_disarms_and_a_later_failed_keepalive_is_reported() {
    let mut b = Bench::settable(|s| s);
    b.fail_keepalive.store(true, Ordering::Relaxed);
    let e = b.wd.activate(SEVEN_S).unwrap_err();
    assert!(matches!(e, WatchdogError::Keepalive { .. }), "{e:?}");
    assert_eq!(b.calls().last(), Some(&Call::MagicClose));

    let mut b = Bench::settable(|s| s);
    b.wd.activate(SEVEN_S).unwrap();
    b.fail_keepalive.store(true, Ordering::Relaxed);
    let e = b.wd.keepalive().unwrap_err();
    assert!(matches!(&e, WatchdogError::Keepalive { device, .. } if device == Path::new(MISSING)), "{e:?}");
    // Still armed: only the HA loop may decide to give up the watchdog.
    assert!(b.wd.is_active());
}

#[test]
fn dropping_disarms_but_a_panic_leaves_the_device_armed() {
    let b = Bench::settable(|s| s);
    let calls = b.calls.clone();
    let mut wd = b.wd;
    wd.activate(SEVEN_S).unwrap();
    drop(wd);
    assert_eq!(calls.lock().unwrap().last(), Some(&Call::MagicClose));

    let b = Bench::settable(|s| s);
    let calls = b.calls.clone();
    let mut wd = b.wd;
    wd.activate(SEVEN_S).unwrap();
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _armed = wd;
        panic!("the HA loop panics while primary");
    }));
    assert!(unwound.is_err());
    assert!(!calls.lock().unwrap().contains(&Call::MagicClose), "disarmed during a panic");
}

/// Arms the host's real watchdog for a moment. Ignored, and also needs
/// `PGHA_TEST_REAL_WATCHDOG=1`, so `cargo test -- --ignored` on a CI machine cannot arm it.
/// Run on a throwaway machine with `modprobe softdog`:
/// `PGHA_TEST_REAL_WATCHDOG=1 cargo test --lib watchdog::tests::real -- --ignored`.
#[test]
#[ignore = "arms the real /dev/watchdog; needs PGHA_TEST_REAL_WATCHDOG=1"]
fn real_device_is_armed_kept_alive_and_disarmed() {
    let device = Path::new(crate::config::file::DEFAULT_WATCHDOG_DEVICE);
    if std::env::var_os("PGHA_TEST_REAL_WATCHDOG").as_deref() != Some("1".as_ref()) || !device.exists() {
        eprintln!("skipped: set PGHA_TEST_REAL_WATCHDOG=1 on a machine with {}", device.display());
        return;
    }
    let mut wd = watchdog(WatchdogMode::Required, device);
    wd.activate(Duration::from_secs(30)).unwrap();
    assert!(wd.is_active());
    assert!(wd.effective_timeout().unwrap() <= Duration::from_secs(30));
    wd.keepalive().unwrap();
    wd.disable();
    assert!(!wd.is_active());
    // Disarmed and closed: it can be opened again (and is disarmed again on drop).
    wd.activate(Duration::from_secs(30)).unwrap();
    drop(wd);
}

/// Log lines written while the test's subscriber is the thread's default.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn subscriber(&self) -> impl tracing::Subscriber {
        let sink = self.clone();
        tracing_subscriber::fmt().with_ansi(false).with_writer(move || sink.clone()).finish()
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn count(&self, level: &str) -> usize {
        self.text().lines().filter(|l| l.contains(level)).count()
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
