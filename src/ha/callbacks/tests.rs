//! Real shell scripts in a temp dir, run by a real runner: arguments, never blocking, the
//! deadline, replacement, leftovers, missing scripts and the output in our log. Scripts report
//! what they saw through files written atomically (write, then rename).

use super::*;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const SCOPE: &str = "batman";
/// A bound for things that take milliseconds; generous for a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(10);

/// A directory under the system temp dir, unique to this test, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("pgha-callbacks-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    /// An executable `/bin/sh` script; `$DIR` in `body` is this directory.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.0.join(name);
        let body = body.replace("$DIR", &self.0.display().to_string());
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.0.join(name)).ok()
    }

    /// Waits for the file a script writes.
    async fn wait_for(&self, name: &str) -> String {
        let mut last = None;
        let found = wait_until(|| {
            last = self.read(name);
            last.is_some()
        })
        .await;
        assert!(found, "{name} never appeared in {}", self.0.display());
        last.unwrap()
    }

    fn pid(&self, name: &str) -> i32 {
        self.read(name).unwrap().trim().parse().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `probe` every 10 ms until it holds or [`PATIENCE`] passes.
async fn wait_until(mut probe: impl FnMut() -> bool) -> bool {
    let deadline = clock::boot_now() + PATIENCE;
    loop {
        if probe() {
            return true;
        }
        if clock::boot_now() >= deadline {
            return false;
        }
        clock::sleep(Duration::from_millis(10)).await;
    }
}

/// The process exists and is not a zombie (an orphan reparented to a container's PID 1 may
/// stay a zombie: it is dead all the same).
fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

async fn next(finished: &mut broadcast::Receiver<Finished>) -> Finished {
    tokio::select! {
        f = finished.recv() => f.expect("the runner reports every run"),
        () = clock::sleep(PATIENCE) => panic!("no callback finished within {PATIENCE:?}"),
    }
}

fn exited_ok(f: &Finished) -> bool {
    matches!(&f.outcome, CallbackOutcome::Exited(s) if s.success())
}

/// Writes its arguments, one per line, to `$DIR/<name>.args`.
const RECORD_ARGS: &str = r#"printf '%s\n' "$@" > "$DIR/$1.tmp" && mv "$DIR/$1.tmp" "$DIR/$1.args""#;

#[test]
fn actions_are_spelled_as_patroni_does() {
    let cases = [
        (CallbackEvent::OnStart, "on_start"),
        (CallbackEvent::OnStop, "on_stop"),
        (CallbackEvent::OnRestart, "on_restart"),
        (CallbackEvent::OnRoleChange, "on_role_change"),
    ];
    for (event, action) in cases {
        assert_eq!(event.action(), action);
        assert_eq!(event.to_string(), action);
    }
}

#[tokio::test]
async fn each_event_runs_its_script_with_action_role_and_scope() {
    let dir = TempDir::new();
    let callbacks = Callbacks {
        on_start: Some(dir.script("start.sh", RECORD_ARGS)),
        on_stop: Some(dir.script("stop.sh", RECORD_ARGS)),
        on_restart: Some(dir.script("restart.sh", RECORD_ARGS)),
        on_role_change: Some(dir.script("role.sh", RECORD_ARGS)),
    };
    let runner = CallbackRunner::new(&callbacks, SCOPE);
    let mut finished = runner.subscribe();
    for (event, role) in [
        (CallbackEvent::OnStart, "replica"),
        (CallbackEvent::OnRoleChange, "primary"),
        (CallbackEvent::OnRestart, "primary"),
        (CallbackEvent::OnStop, "demoted"),
    ] {
        runner.fire(event, role);
        let f = next(&mut finished).await;
        assert_eq!((f.event, f.role.as_str()), (event, role));
        assert!(exited_ok(&f), "{f:?}");
        let args = dir.wait_for(&format!("{}.args", event.action())).await;
        assert_eq!(args, format!("{}\n{role}\n{SCOPE}\n", event.action()));
    }
}

#[tokio::test]
async fn fire_returns_at_once_and_dropping_the_runner_kills_the_callback() {
    let dir = TempDir::new();
    let slow = dir.script("slow.sh", "echo $$ > $DIR/pid.tmp && mv $DIR/pid.tmp $DIR/pid\nsleep 30");
    let runner = CallbackRunner::new(&Callbacks { on_start: Some(slow), ..Default::default() }, SCOPE);
    let mut finished = runner.subscribe();
    let start = clock::boot_now();
    runner.fire(CallbackEvent::OnStart, "replica");
    assert!(clock::boot_now().saturating_since(start) < Duration::from_millis(50), "fire blocked");
    dir.wait_for("pid").await;
    let pid = dir.pid("pid");
    assert!(alive(pid));

    drop(runner);
    let f = next(&mut finished).await;
    assert_eq!(f.outcome, CallbackOutcome::Stopped);
    assert!(wait_until(|| !alive(pid)).await, "callback {pid} outlived its runner");
}

#[tokio::test]
async fn a_callback_past_its_timeout_is_killed_with_its_children() {
    let dir = TempDir::new();
    let hung = dir.script(
        "hung.sh",
        "sleep 30 &\necho $! > $DIR/child.tmp && mv $DIR/child.tmp $DIR/child\n\
         echo $$ > $DIR/pid.tmp && mv $DIR/pid.tmp $DIR/pid\nwait",
    );
    let callbacks = Callbacks { on_role_change: Some(hung), ..Default::default() };
    let runner = CallbackRunner::with_timeout(&callbacks, SCOPE, Duration::from_millis(500));
    let mut finished = runner.subscribe();
    runner.fire(CallbackEvent::OnRoleChange, "primary");
    let f = next(&mut finished).await;
    assert_eq!(f.outcome, CallbackOutcome::TimedOut);
    let (pid, child) = (dir.pid("pid"), dir.pid("child"));
    assert!(wait_until(|| !alive(pid) && !alive(child)).await, "script {pid} or its child {child} lives");
}

#[tokio::test]
async fn a_new_callback_kills_the_running_one_first() {
    let dir = TempDir::new();
    let callbacks = Callbacks {
        on_start: Some(dir.script("slow.sh", "echo $$ > $DIR/pid.tmp && mv $DIR/pid.tmp $DIR/pid\nsleep 30")),
        // Records whether the first script was still alive when this one started.
        on_role_change: Some(dir.script(
            "role.sh",
            "if kill -0 $(cat $DIR/pid) 2>/dev/null; then s=overlap; else s=alone; fi\n\
             echo $s > $DIR/seen.tmp && mv $DIR/seen.tmp $DIR/seen",
        )),
        ..Default::default()
    };
    let runner = CallbackRunner::new(&callbacks, SCOPE);
    let mut finished = runner.subscribe();
    runner.fire(CallbackEvent::OnStart, "replica");
    dir.wait_for("pid").await;
    let first = dir.pid("pid");
    runner.fire(CallbackEvent::OnRoleChange, "primary");

    let f = next(&mut finished).await;
    assert_eq!((f.event, &f.outcome), (CallbackEvent::OnStart, &CallbackOutcome::Replaced));
    let f = next(&mut finished).await;
    assert_eq!(f.event, CallbackEvent::OnRoleChange);
    assert!(exited_ok(&f), "{f:?}");
    assert!(!alive(first));
    assert_eq!(dir.wait_for("seen").await.trim(), "alone", "the callbacks overlapped");
}

#[tokio::test]
async fn processes_left_behind_by_a_finished_callback_are_killed() {
    let dir = TempDir::new();
    let leaky = dir
        .script("leaky.sh", "sleep 30 &\necho $! > $DIR/child.tmp && mv $DIR/child.tmp $DIR/child\nexit 0");
    let runner = CallbackRunner::new(&Callbacks { on_start: Some(leaky), ..Default::default() }, SCOPE);
    let mut finished = runner.subscribe();
    runner.fire(CallbackEvent::OnStart, "replica");
    let f = next(&mut finished).await;
    assert!(exited_ok(&f), "{f:?}");
    let child = dir.pid("child");
    assert!(wait_until(|| !alive(child)).await, "{child} outlived its callback");
}

#[tokio::test]
async fn an_event_without_a_script_does_nothing() {
    let dir = TempDir::new();
    let callbacks = Callbacks { on_start: Some(dir.script("start.sh", RECORD_ARGS)), ..Default::default() };
    let runner = CallbackRunner::new(&callbacks, SCOPE);
    let mut finished = runner.subscribe();
    runner.fire(CallbackEvent::OnStop, "replica");
    runner.fire(CallbackEvent::OnStart, "replica");
    let f = next(&mut finished).await;
    assert_eq!(f.event, CallbackEvent::OnStart);
    assert!(exited_ok(&f), "{f:?}");
}

#[tokio::test]
async fn missing_and_non_executable_scripts_are_warnings_naming_them() {
    let logs = Capture::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let dir = TempDir::new();
    let missing = dir.0.join("missing.sh");
    let plain = dir.script("plain.sh", "exit 0");
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let callbacks = Callbacks {
        on_start: Some(missing.clone()),
        on_stop: Some(plain.clone()),
        on_restart: Some(dir.script("ok.sh", "exit 3")),
        ..Default::default()
    };
    let runner = CallbackRunner::new(&callbacks, SCOPE);
    let mut finished = runner.subscribe();

    runner.fire(CallbackEvent::OnStart, "replica");
    assert_eq!(next(&mut finished).await.outcome, CallbackOutcome::NotStarted(io::ErrorKind::NotFound));
    runner.fire(CallbackEvent::OnStop, "replica");
    assert_eq!(
        next(&mut finished).await.outcome,
        CallbackOutcome::NotStarted(io::ErrorKind::PermissionDenied)
    );
    // The runner lives on; a failing script is reported with its status.
    runner.fire(CallbackEvent::OnRestart, "replica");
    let f = next(&mut finished).await;
    assert!(matches!(&f.outcome, CallbackOutcome::Exited(s) if s.code() == Some(3)), "{f:?}");

    let text = logs.text();
    for path in [&missing, &plain] {
        let line = text.lines().find(|l| l.contains(&*path.display().to_string())).unwrap_or_else(|| {
            panic!("no line names {}:\n{text}", path.display());
        });
        assert!(line.contains("WARN"), "{line}");
    }
}

#[tokio::test]
async fn output_is_logged_line_by_line_with_the_callback_name() {
    let logs = Capture::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let dir = TempDir::new();
    let chatty =
        dir.script("chatty.sh", "echo first line\necho to stderr >&2\necho second line\nprintf 'no newline'");
    let runner =
        CallbackRunner::new(&Callbacks { on_role_change: Some(chatty), ..Default::default() }, SCOPE);
    let mut finished = runner.subscribe();
    runner.fire(CallbackEvent::OnRoleChange, "primary");
    assert!(exited_ok(&next(&mut finished).await));

    let text = logs.text();
    let line_of = |needle: &str| {
        let found = text.lines().find(|l| l.contains(needle)).map(str::to_owned);
        found.unwrap_or_else(|| panic!("{needle:?} not logged:\n{text}"))
    };
    for (needle, stream) in [
        ("first line", "stdout"),
        ("second line", "stdout"),
        ("to stderr", "stderr"),
        ("no newline", "stdout"),
    ] {
        let line = line_of(needle);
        assert!(
            line.contains("callback=\"on_role_change\"") || line.contains("callback=on_role_change"),
            "{line}"
        );
        assert!(line.contains(stream), "{line}");
    }
}

#[tokio::test]
async fn a_line_without_end_is_logged_in_bounded_pieces() {
    let logs = Capture::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let dir = TempDir::new();
    // 20,000 bytes without a newline.
    let flood = dir.script("flood.sh", "head -c 20000 /dev/zero | tr '\\0' x");
    let runner = CallbackRunner::new(&Callbacks { on_start: Some(flood), ..Default::default() }, SCOPE);
    let mut finished = runner.subscribe();
    runner.fire(CallbackEvent::OnStart, "replica");
    assert!(exited_ok(&next(&mut finished).await));

    let text = logs.text();
    let pieces: Vec<usize> = text
        .lines()
        .filter(|l| l.contains("xxxx"))
        .map(|l| l.chars().filter(|&c| c == 'x').count())
        .collect();
    assert_eq!(pieces.iter().sum::<usize>(), 20_000, "{pieces:?}");
    assert!(pieces.iter().all(|&n| n < MAX_LINE + 4096), "{pieces:?}");
}

/// Log lines written while the test's subscriber is the thread's default (the tests run on a
/// current-thread runtime, so the supervisor task logs there too).
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
