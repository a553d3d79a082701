//! A simulated Postgres for one data member: its data directory (WAL, timelines, control file)
//! and its postmaster (down, starting, running as primary or standby). Small and explicit, and
//! only what pgha's decisions depend on. Positions are plain `u64` LSNs; virtual time is in
//! microseconds, as everywhere in the simulation.
//!
//! WAL content is modelled by who wrote it: a run of bytes written by one *origin* (a fresh id
//! each time a Postgres becomes primary: started as primary, or promoted). Two data directories
//! hold the same WAL up to a position iff their runs agree there. Timelines are what Postgres
//! itself knows (its `.history` files): `(timeline, first lsn)` pairs. Postgres and pg_rewind can
//! only compare timelines; the simulation's checks also compare the content.
//!
//! What each operation does, as in Postgres 15:
//! - `initdb`: timeline 1, a clean shut-down primary directory;
//! - start as primary: crash recovery if needed, then writable on the *same* timeline (a new
//!   timeline only comes from promotion, i.e. the end of archive recovery);
//! - start as standby: then streams from its upstream if that runs, is reachable, and its
//!   timeline history contains the standby's position (else the WAL receiver fails);
//! - promote: timeline + 1 from the current end of WAL;
//! - kill (-9, the fence, pgha's death): stopped, not clean; a fast stop: clean, and a primary's
//!   shutdown checkpoint is its end of WAL;
//! - crash recovery (`postgres --single`): replays to the end, clean, checkpoint at the end;
//! - pg_rewind: the divergence point from the timeline histories; if the target ends after it,
//!   its WAL is cut there, it adopts the source's timelines and becomes a standby-to-be
//!   (`backup_label`, control file "in archive recovery"); else "no rewind required";
//! - pg_basebackup: a copy of the source's directory with a `backup_label`.

use pgha::ha::observe::{LocalPg, PgRole};
use pgha::ha::sync::SyncNames;
use pgha::types::{Lsn, MemberName, Timeline};

/// Who wrote a stretch of WAL: one primary run of one member.
pub type Origin = u64;

/// `[previous run's end, end)` written by `origin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub origin: Origin,
    pub end: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wal {
    pub runs: Vec<Run>,
    /// `(timeline, first lsn)` in order; the last one is the current timeline.
    pub timelines: Vec<(u32, u64)>,
}

impl Wal {
    pub fn end(&self) -> u64 {
        self.runs.last().map_or(0, |r| r.end)
    }

    pub fn timeline(&self) -> u32 {
        self.timelines.last().map_or(1, |t| t.0)
    }

    /// Appends `[end, end + bytes)` written by `origin`.
    fn append(&mut self, origin: Origin, bytes: u64) {
        let end = self.end() + bytes;
        match self.runs.last_mut() {
            Some(r) if r.origin == origin => r.end = end,
            _ => self.runs.push(Run { origin, end }),
        }
    }

    /// Who wrote the byte at `lsn`.
    fn origin_at(&self, lsn: u64) -> Option<Origin> {
        self.runs.iter().find(|r| r.end > lsn).map(|r| r.origin)
    }

    /// Whether `[from, to)` of this WAL was written by `origin` (an acknowledged commit is
    /// there, not just some WAL at its position).
    pub fn holds(&self, origin: Origin, from: u64, to: u64) -> bool {
        let mut at = from;
        while at < to {
            match self.runs.iter().find(|r| r.end > at) {
                Some(r) if r.origin == origin => at = r.end,
                _ => return false,
            }
        }
        true
    }

    /// The first position below `upto` where the two WALs hold different content, if any.
    pub fn content_differs_before(&self, other: &Wal, upto: u64) -> Option<u64> {
        let mut at = 0;
        while at < upto {
            let (a, b) = (self.origin_at(at), other.origin_at(at));
            if a != b {
                return Some(at);
            }
            let next = |w: &Wal| w.runs.iter().find(|r| r.end > at).map_or(u64::MAX, |r| r.end);
            at = next(self).min(next(other));
        }
        None
    }

    /// This WAL cut at `lsn`, keeping the timelines that began at or before it.
    pub fn truncated(&self, lsn: u64) -> Wal {
        let mut runs: Vec<Run> = self.runs.iter().copied().filter(|r| r.end <= lsn).collect();
        if let Some(r) = self.runs.iter().find(|r| r.end > lsn) {
            if runs.last().map_or(0, |l| l.end) < lsn {
                runs.push(Run { origin: r.origin, end: lsn });
            }
        }
        let timelines = self.timelines.iter().copied().filter(|t| t.1 <= lsn).collect();
        Wal { runs, timelines }
    }

    /// Where the two timeline histories part (what Postgres and pg_rewind compute); `None` when
    /// one history is the other's (same current timeline, same switch points).
    pub fn timeline_divergence(&self, other: &Wal) -> Option<u64> {
        let common = self.timelines.iter().zip(&other.timelines).take_while(|(a, b)| a == b).count();
        if common == 0 {
            return Some(0);
        }
        let next = |w: &Wal| w.timelines.get(common).map(|t| t.1);
        match (next(self), next(other)) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(u64::MAX).min(b.unwrap_or(u64::MAX))),
        }
    }
}

/// The control file's "Database cluster state", as far as pgha reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    InProduction,
    ShutDown,
    /// Written when a start replays WAL without archive recovery (after a crash, or a standby
    /// directory started as primary), until it is done.
    InCrashRecovery,
    InArchiveRecovery,
    ShutDownInRecovery,
}

#[derive(Clone, Debug)]
pub struct DataDir {
    pub system_identifier: u64,
    pub wal: Wal,
    /// "Latest checkpoint location": a primary's last checkpoint, a standby's last restartpoint.
    pub checkpoint: u64,
    pub control: Control,
    /// A clone or a rewound directory that has not started since.
    pub backup_label: bool,
    pub standby_signal: bool,
}

impl DataDir {
    /// What `initdb` leaves.
    pub fn initdb(system_identifier: u64, origin: Origin) -> DataDir {
        let mut wal = Wal { runs: Vec::new(), timelines: vec![(1, 0)] };
        wal.append(origin, 0x0100_0000);
        DataDir {
            system_identifier,
            checkpoint: wal.end(),
            wal,
            control: Control::ShutDown,
            backup_label: false,
            standby_signal: false,
        }
    }

    /// What pg_basebackup of `source` leaves.
    pub fn clone_of(source: &DataDir) -> DataDir {
        DataDir { backup_label: true, standby_signal: false, ..source.clone() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Process {
    Down,
    Starting { ready_at: u64, primary: bool, upstream: Option<u64> },
    Running { primary: bool, upstream: Option<u64>, streaming: bool, origin: Origin },
}

/// One member's Postgres: the data directory survives everything; the process does not.
#[derive(Clone, Debug)]
pub struct SimPostgres {
    pub dir: Option<DataDir>,
    pub process: Process,
    /// Virtual time of the last checkpoint (a primary checkpoints every so often).
    pub checkpointed_at: u64,
    /// The last attempt to stream was refused by the upstream's timeline history.
    pub refused: bool,
    /// `synchronous_standby_names` as the running server applies it (and its files say).
    pub sync_names: SyncNames,
    /// Written, not yet acknowledged: waiting for synchronous standbys (timeline, origin,
    /// from, to). Lost, never acknowledged, when the server stops.
    pub pending: Vec<(u32, Origin, u64, u64)>,
}

/// What happened when a standby tried to stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Stream {
    /// Received this many bytes (possibly none: caught up).
    Received(u64),
    /// The upstream's timeline history does not contain the standby's position.
    Refused,
    /// The standby is ahead of the upstream's end of WAL on the same timeline ("requested
    /// starting point is ahead of the WAL flush position"): it retries.
    Ahead,
    /// Streaming is allowed by the timelines, but the WAL differs below the standby's position
    /// (at this LSN): Postgres cannot tell, the data silently diverges.
    SilentlyDiverged(u64),
}

impl SimPostgres {
    pub fn absent() -> Self {
        SimPostgres {
            dir: None,
            process: Process::Down,
            checkpointed_at: 0,
            refused: false,
            sync_names: SyncNames::Async,
            pending: Vec::new(),
        }
    }

    pub fn is_up(&self) -> bool {
        self.process != Process::Down
    }

    /// Accepts writes right now.
    pub fn writable(&self) -> bool {
        matches!(self.process, Process::Running { primary: true, .. })
    }

    /// pgha's `runs_as_primary`: a postmaster started or promoted to be primary.
    pub fn runs_as_primary(&self) -> bool {
        matches!(
            self.process,
            Process::Starting { primary: true, .. } | Process::Running { primary: true, .. }
        )
    }

    pub fn end(&self) -> Option<u64> {
        self.dir.as_ref().map(|d| d.wal.end())
    }

    /// What pgha's probe and `pg_controldata` would report.
    pub fn local_pg(&self, name: impl Fn(u64) -> MemberName) -> LocalPg {
        let Some(dir) = &self.dir else { return LocalPg::Absent };
        let sysid = dir.system_identifier.to_string();
        match &self.process {
            Process::Down => LocalPg::Stopped {
                system_identifier: sysid,
                timeline: Timeline(dir.wal.timeline()),
                checkpoint: Lsn(dir.checkpoint),
                was_primary: !dir.backup_label
                    && matches!(
                        dir.control,
                        Control::InProduction | Control::ShutDown | Control::InCrashRecovery
                    ),
                clean: matches!(dir.control, Control::ShutDown | Control::ShutDownInRecovery),
                replayed: matches!(dir.control, Control::InArchiveRecovery | Control::ShutDownInRecovery)
                    .then(|| (Timeline(dir.wal.timeline()), Lsn(dir.wal.end()))),
            },
            Process::Starting { .. } => LocalPg::Starting,
            Process::Running { primary, upstream, streaming, .. } => LocalPg::Running {
                role: if *primary { PgRole::Primary } else { PgRole::Replica },
                system_identifier: sysid,
                timeline: Timeline(dir.wal.timeline()),
                lsn: Lsn(dir.wal.end()),
                upstream: upstream.map(&name),
                streaming: *streaming,
            },
        }
    }

    /// Starts the postmaster (the caller checked that none runs and a directory exists). The
    /// startup process writes the control file before it replays anything, and renames
    /// `backup_label` away, so a kill while starting leaves that behind; `crash_recovery_state`
    /// off keeps a crashed primary's "in production" instead of "in crash recovery" (steering
    /// around `pg_bugs::a_primary_killed_during_crash_recovery_is_taken_for_a_standby`).
    pub fn start(&mut self, primary: bool, upstream: Option<u64>, ready_at: u64, crash_recovery_state: bool) {
        if let Some(dir) = self.dir.as_mut() {
            dir.standby_signal = !primary;
            dir.backup_label = false;
            if !primary {
                dir.control = Control::InArchiveRecovery;
            } else if dir.control != Control::ShutDown && crash_recovery_state {
                dir.control = Control::InCrashRecovery;
            }
        }
        self.process = Process::Starting { ready_at, primary, upstream };
        self.refused = false;
    }

    /// A starting postmaster is ready by now: it accepts connections.
    pub fn become_ready(&mut self, now: u64, origin: Origin) -> bool {
        let Process::Starting { ready_at, primary, upstream } = self.process else { return false };
        if ready_at > now {
            return false;
        }
        let dir = self.dir.as_mut().expect("a started Postgres has a data directory");
        dir.control = if primary { Control::InProduction } else { Control::InArchiveRecovery };
        self.process = Process::Running { primary, upstream, streaming: false, origin };
        self.checkpointed_at = now;
        true
    }

    /// kill -9 of the postmaster's group: no shutdown checkpoint.
    pub fn kill(&mut self) {
        self.process = Process::Down;
        self.pending.clear();
    }

    /// A fast (clean) shutdown; a starting postmaster is just killed.
    pub fn stop_fast(&mut self) {
        if let (Process::Running { primary, .. }, Some(dir)) = (&self.process, self.dir.as_mut()) {
            if *primary {
                dir.checkpoint = dir.wal.end();
                dir.control = Control::ShutDown;
            } else {
                dir.control = Control::ShutDownInRecovery;
            }
        }
        self.process = Process::Down;
        self.pending.clear();
    }

    /// `pg_promote()` of a running standby: a new timeline from its end of WAL.
    pub fn promote(&mut self, origin: Origin) -> Result<(), String> {
        let Process::Running { primary: false, .. } = self.process else {
            return Err("recovery is not in progress".into());
        };
        let dir = self.dir.as_mut().expect("a running Postgres has a data directory");
        let (tl, end) = (dir.wal.timeline(), dir.wal.end());
        dir.wal.timelines.push((tl + 1, end));
        dir.checkpoint = end;
        dir.control = Control::InProduction;
        dir.standby_signal = false;
        self.process = Process::Running { primary: true, upstream: None, streaming: false, origin };
        Ok(())
    }

    /// An acknowledged write of `bytes` on a writable primary: (timeline, origin, from, to).
    pub fn write(&mut self, bytes: u64) -> Option<(u32, Origin, u64, u64)> {
        let Process::Running { primary: true, origin, .. } = self.process else { return None };
        let dir = self.dir.as_mut()?;
        let from = dir.wal.end();
        dir.wal.append(origin, bytes);
        Some((dir.wal.timeline(), origin, from, dir.wal.end()))
    }

    /// A primary's periodic checkpoint.
    pub fn checkpoint(&mut self, now: u64) {
        if let (true, Some(dir)) = (self.writable(), self.dir.as_mut()) {
            dir.checkpoint = dir.wal.end();
            self.checkpointed_at = now;
        }
    }

    /// `postgres --single` on a stopped directory.
    pub fn crash_recover(&mut self) {
        if let Some(dir) = self.dir.as_mut() {
            dir.checkpoint = dir.wal.end();
            dir.control = Control::ShutDown;
        }
    }

    /// One round of streaming for a running standby from `upstream` (running, reachable), at
    /// most `max_bytes`.
    pub fn stream_from(&mut self, upstream: &DataDir, max_bytes: u64) -> Stream {
        let dir = self.dir.as_mut().expect("a running standby has a data directory");
        let at = dir.wal.end();
        let current = dir.wal.timelines.last().copied();
        let allowed = current.is_some_and(|c| upstream.wal.timelines.contains(&c))
            && dir.wal.timeline_divergence(&upstream.wal).is_none_or(|d| at <= d);
        let ahead = at > upstream.wal.end();
        self.refused = !allowed;
        if let Process::Running { streaming, .. } = &mut self.process {
            *streaming = allowed && !ahead;
        }
        if !allowed {
            return Stream::Refused;
        }
        if let Some(lsn) = dir.wal.content_differs_before(&upstream.wal, at.min(upstream.wal.end())) {
            return Stream::SilentlyDiverged(lsn);
        }
        if ahead {
            return Stream::Ahead;
        }
        let to = upstream.wal.end().min(at.saturating_add(max_bytes));
        if to <= at {
            return Stream::Received(0);
        }
        dir.wal = upstream.wal.truncated(to);
        if upstream.checkpoint <= to {
            dir.checkpoint = dir.checkpoint.max(upstream.checkpoint);
        }
        Stream::Received(to - at)
    }

    /// The WAL receiver stops (no upstream, unreachable, upstream down).
    pub fn not_streaming(&mut self) {
        self.refused = false;
        if let Process::Running { streaming, .. } = &mut self.process {
            *streaming = false;
        }
    }

    /// pg_rewind of this stopped directory from `source`'s; returns what it did, or why not.
    pub fn rewind_from(&mut self, source: &DataDir) -> Result<String, String> {
        let dir = self.dir.as_mut().ok_or("no data directory")?;
        if dir.system_identifier != source.system_identifier {
            return Err("source and target clusters are from different systems".into());
        }
        let Some(div) = dir.wal.timeline_divergence(&source.wal) else {
            return Ok("source and target cluster are on the same timeline: no rewind required".into());
        };
        if dir.wal.end() <= div {
            return Ok(format!(
                "target ends at {:X}, before the divergence at {div:X}: no rewind required",
                dir.wal.end()
            ));
        }
        let mut wal = dir.wal.truncated(div);
        wal.timelines = source.wal.timelines.iter().copied().filter(|t| t.1 <= div).collect();
        let from = dir.wal.end();
        dir.wal = wal;
        dir.checkpoint = dir.checkpoint.min(div);
        dir.control = Control::InArchiveRecovery;
        dir.backup_label = true;
        dir.standby_signal = source.standby_signal;
        Ok(format!("rewound from {from:X} to the divergence at {div:X} on timeline {}", dir.wal.timeline()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal(runs: &[(Origin, u64)], timelines: &[(u32, u64)]) -> Wal {
        Wal {
            runs: runs.iter().map(|(origin, end)| Run { origin: *origin, end: *end }).collect(),
            timelines: timelines.to_vec(),
        }
    }

    #[test]
    fn timelines_and_content_part_where_expected() {
        let old = wal(&[(1, 200)], &[(1, 0)]);
        let new = wal(&[(1, 150), (2, 300)], &[(1, 0), (2, 150)]);
        assert_eq!(old.timeline_divergence(&new), Some(150));
        assert_eq!(old.content_differs_before(&new, 200), Some(150));
        assert_eq!(old.content_differs_before(&new, 150), None);
        let behind = wal(&[(1, 100)], &[(1, 0)]);
        assert_eq!(behind.timeline_divergence(&old), None, "same history: Postgres sees no fork");
        let same_tl_fork = wal(&[(1, 100), (3, 250)], &[(1, 0)]);
        assert_eq!(same_tl_fork.timeline_divergence(&old), None);
        assert_eq!(same_tl_fork.content_differs_before(&old, 250), Some(100), "but the content differs");
        assert_eq!(new.truncated(170), wal(&[(1, 150), (2, 170)], &[(1, 0), (2, 150)]));
        assert_eq!(new.truncated(150), wal(&[(1, 150)], &[(1, 0), (2, 150)]));
    }
}
