//! The checker: a pure function of the recorded history and the final contents of every node.
//! No clocks, no I/O; table-tested below.
//!
//! What it finds:
//! - **lost**: acknowledged writes missing from the final primary. Synchronous mode (strict)
//!   promises none; asynchronous mode bounds them by `maximum_lag_on_failover` (counted as at
//!   least [`MIN_WAL_PER_WRITE`] bytes of WAL each) and reports them.
//! - **split brain**: two (node, timeline) groups of acknowledgements whose *certain* windows
//!   overlap. A group certainly accepted a commit at or before the earliest end of its
//!   acknowledged writes, and certainly one at or after the latest start; if that window of one
//!   group intersects another's, both nodes were writable at the same time.
//! - **phantoms**: rows on a node that no client ever tried to write (corruption).
//! - **diverged replicas**: a replica whose rows differ from the final primary's after the
//!   replicas caught up.
//! - the longest gap between consecutive acknowledgements (reported, never asserted).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A conservative lower bound of the WAL one acknowledged write adds (heap insert, index
/// insert and commit records of a two-column row are each larger than this).
pub const MIN_WAL_PER_WRITE: u64 = 100;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ack {
        node: String,
        timeline: u32,
    },
    Failed(String),
    /// No answer within the client's timeout: may or may not have committed.
    Unknown,
}

#[derive(Clone, Debug)]
pub struct Write {
    pub id: u64,
    pub writer: String,
    pub start: Duration,
    pub end: Duration,
    pub outcome: Outcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `synchronous_mode: on` with `synchronous_mode_strict`: no acknowledged write may be lost.
    SyncStrict,
    /// Asynchronous replication: the loss is reported and bounded by `max_lag_bytes`.
    Async { max_lag_bytes: u64 },
}

/// What the nodes hold at the end.
#[derive(Clone, Debug, Default)]
pub struct Final {
    pub primary: String,
    /// Row ids per member name (every data node that answered).
    pub rows: BTreeMap<String, BTreeSet<u64>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub attempted: usize,
    pub acked: usize,
    pub failed: usize,
    pub unknown: usize,
    pub lost: Vec<u64>,
    /// Lost writes per client (`proxy@node1`, `direct@node2`…).
    pub lost_by_writer: BTreeMap<String, usize>,
    pub split_brain: Vec<String>,
    pub phantoms: Vec<u64>,
    pub diverged: Vec<String>,
    pub max_gap: Duration,
    /// When the longest gap began (the end of the acknowledgement before it), from the
    /// workload's start.
    pub max_gap_from: Duration,
    /// Acknowledgements per (node, timeline).
    pub groups: BTreeMap<(String, u32), usize>,
}

impl Report {
    /// The violations of `mode`'s promises, one sentence each (empty: all kept).
    pub fn problems(&self, mode: Mode) -> Vec<String> {
        let mut p = Vec::new();
        match mode {
            Mode::SyncStrict if !self.lost.is_empty() => {
                p.push(format!("{} acknowledged writes lost in synchronous mode: {:?}", self.lost.len(), first(&self.lost)))
            }
            Mode::Async { max_lag_bytes } if self.lost.len() as u64 * MIN_WAL_PER_WRITE > max_lag_bytes => p.push(
                format!(
                    "{} acknowledged writes lost (at least {} bytes of WAL), more than maximum_lag_on_failover {max_lag_bytes}",
                    self.lost.len(),
                    self.lost.len() as u64 * MIN_WAL_PER_WRITE
                ),
            ),
            _ => {}
        }
        p.extend(self.split_brain.iter().map(|s| format!("split brain: {s}")));
        if !self.phantoms.is_empty() {
            p.push(format!("rows nobody wrote: {:?}", first(&self.phantoms)));
        }
        p.extend(self.diverged.iter().map(|d| format!("diverged replica: {d}")));
        p
    }
}

fn first(ids: &[u64]) -> Vec<u64> {
    ids.iter().take(20).copied().collect()
}

/// Checks `history` against `fin`. See the module comment.
pub fn check(history: &[Write], fin: &Final) -> Report {
    let mut r = Report { attempted: history.len(), ..Report::default() };
    let empty = BTreeSet::new();
    let on_primary = fin.rows.get(&fin.primary).unwrap_or(&empty);
    // (node, timeline) -> (earliest end, latest start) of its acknowledged writes.
    let mut windows: BTreeMap<(String, u32), (Duration, Duration)> = BTreeMap::new();
    let mut ack_ends = Vec::new();
    for w in history {
        match &w.outcome {
            Outcome::Ack { node, timeline } => {
                r.acked += 1;
                ack_ends.push(w.end);
                if !on_primary.contains(&w.id) {
                    r.lost.push(w.id);
                    *r.lost_by_writer.entry(w.writer.clone()).or_default() += 1;
                }
                let key = (node.clone(), *timeline);
                *r.groups.entry(key.clone()).or_default() += 1;
                let e = windows.entry(key).or_insert((w.end, w.start));
                e.0 = e.0.min(w.end);
                e.1 = e.1.max(w.start);
            }
            Outcome::Failed(_) => r.failed += 1,
            Outcome::Unknown => r.unknown += 1,
        }
    }
    let keys: Vec<&(String, u32)> = windows.keys().collect();
    for (a, ka) in keys.iter().enumerate() {
        for kb in &keys[a + 1..] {
            let (a0, a1) = windows[*ka];
            let (b0, b1) = windows[*kb];
            // Certain windows [earliest end, latest start]; empty when the first is after the last.
            if a0 < a1 && b0 < b1 && a0.max(b0) < a1.min(b1) {
                r.split_brain.push(format!(
                    "{} on timeline {} acknowledged writes during {:?}..{:?} and {} on timeline {} during {:?}..{:?}",
                    ka.0, ka.1, a0, a1, kb.0, kb.1, b0, b1
                ));
            }
        }
    }
    let attempted: BTreeSet<u64> = history.iter().map(|w| w.id).collect();
    let mut phantoms = BTreeSet::new();
    for rows in fin.rows.values() {
        phantoms.extend(rows.difference(&attempted).copied());
    }
    r.phantoms = phantoms.into_iter().collect();
    for (node, rows) in &fin.rows {
        if node != &fin.primary && rows != on_primary {
            let missing = on_primary.difference(rows).count();
            let extra = rows.difference(on_primary).count();
            r.diverged.push(format!(
                "{node}: {missing} rows of the primary missing, {extra} rows the primary lacks"
            ));
        }
    }
    ack_ends.sort();
    if let Some(w) = ack_ends.windows(2).max_by_key(|w| w[1] - w[0]) {
        r.max_gap = w[1] - w[0];
        r.max_gap_from = w[0];
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn ack(id: u64, node: &str, tl: u32, start: u64, end: u64) -> Write {
        Write {
            id,
            writer: "w".into(),
            start: ms(start),
            end: ms(end),
            outcome: Outcome::Ack { node: node.into(), timeline: tl },
        }
    }

    fn fail(id: u64, start: u64, end: u64) -> Write {
        Write { id, writer: "w".into(), start: ms(start), end: ms(end), outcome: Outcome::Failed("x".into()) }
    }

    fn fin(primary: &str, nodes: &[(&str, &[u64])]) -> Final {
        Final {
            primary: primary.into(),
            rows: nodes.iter().map(|(n, ids)| (n.to_string(), ids.iter().copied().collect())).collect(),
        }
    }

    #[test]
    fn a_clean_failover_has_no_problem() {
        let h = vec![
            ack(1, "n1", 1, 0, 10),
            ack(2, "n1", 1, 20, 30),
            fail(3, 40, 4000),
            ack(4, "n2", 2, 4100, 4110),
            ack(5, "n2", 2, 4120, 4130),
        ];
        let r = check(&h, &fin("n2", &[("n2", &[1, 2, 4, 5]), ("n3", &[1, 2, 4, 5])]));
        assert!(r.problems(Mode::SyncStrict).is_empty(), "{r:?}");
        assert_eq!((r.acked, r.failed, r.lost.len()), (4, 1, 0));
        assert_eq!((r.max_gap, r.max_gap_from), (ms(4110 - 30), ms(30)));
        assert_eq!(r.groups.len(), 2);
    }

    #[test]
    fn a_failed_write_that_committed_anyway_is_no_problem() {
        let h = vec![ack(1, "n1", 1, 0, 10), fail(2, 20, 30)];
        let r = check(&h, &fin("n1", &[("n1", &[1, 2])]));
        assert!(r.problems(Mode::SyncStrict).is_empty(), "{r:?}");
    }

    #[test]
    fn an_acknowledged_write_missing_from_the_primary_is_lost() {
        let h = vec![ack(1, "n1", 1, 0, 10), ack(2, "n1", 1, 20, 30), ack(3, "n2", 2, 5000, 5010)];
        let r = check(&h, &fin("n2", &[("n2", &[1, 3])]));
        assert_eq!(r.lost, vec![2]);
        assert_eq!(r.problems(Mode::SyncStrict).len(), 1);
        // One write is within a 1 MB lag budget, so asynchronous mode only reports it.
        assert!(r.problems(Mode::Async { max_lag_bytes: 1 << 20 }).is_empty());
        assert_eq!(r.problems(Mode::Async { max_lag_bytes: 50 }).len(), 1);
    }

    #[test]
    fn two_nodes_acknowledging_in_overlapping_windows_is_split_brain() {
        // n1 keeps acknowledging on timeline 1 after n2 acknowledged on timeline 2.
        let h = vec![
            ack(1, "n1", 1, 0, 10),
            ack(2, "n2", 2, 100, 110),
            ack(3, "n1", 1, 200, 210),
            ack(4, "n2", 2, 300, 310),
        ];
        let r = check(&h, &fin("n2", &[("n2", &[1, 2, 4])]));
        assert_eq!(r.split_brain.len(), 1, "{r:?}");
        assert!(!r.problems(Mode::Async { max_lag_bytes: 1 << 20 }).is_empty());
    }

    #[test]
    fn the_same_timeline_number_on_two_nodes_is_split_brain_too() {
        let h = vec![
            ack(1, "n1", 2, 0, 10),
            ack(2, "n2", 2, 5, 15),
            ack(3, "n1", 2, 20, 30),
            ack(4, "n2", 2, 25, 35),
        ];
        let r = check(&h, &fin("n2", &[("n2", &[2, 4])]));
        assert_eq!(r.split_brain.len(), 1, "{r:?}");
    }

    #[test]
    fn acknowledgements_that_only_may_overlap_are_not_split_brain() {
        // n1's last write was sent before n2's first returned: it may have committed first.
        let h = vec![
            ack(1, "n1", 1, 0, 10),
            ack(2, "n1", 1, 100, 5000),
            ack(3, "n2", 2, 4000, 4010),
            ack(4, "n2", 2, 4020, 4030),
        ];
        let r = check(&h, &fin("n2", &[("n2", &[1, 2, 3, 4])]));
        assert!(r.split_brain.is_empty(), "{r:?}");
    }

    #[test]
    fn rows_nobody_wrote_and_diverged_replicas_are_found() {
        let h = vec![ack(1, "n1", 1, 0, 10)];
        let r = check(&h, &fin("n1", &[("n1", &[1, 99]), ("n2", &[])]));
        assert_eq!(r.phantoms, vec![99]);
        assert_eq!(r.diverged.len(), 1);
        assert_eq!(r.problems(Mode::SyncStrict).len(), 2);
    }
}
