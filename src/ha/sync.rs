//! Synchronous replication, on the primary (DESIGN.md "Synchronous and quorum replication").
//! Each iteration of a primary that renewed its lease plans the next steps from the mode, the
//! published [`SyncState`], what Postgres currently waits for and what `pg_stat_replication`
//! shows; the loop carries them out in order and stops at the first failure. The order keeps
//! the published set a subset of the standbys that acknowledged every commit since it was
//! published:
//! - removing a standby: publish the smaller set first, then tell Postgres;
//! - adding one: tell Postgres first, wait until it is `sync` and has flushed everything the
//!   primary had written when it was named, then publish;
//! - degrading (non-strict `on` without a standby, or mode `off`): publish `degraded` first,
//!   then let Postgres acknowledge alone; strict mode never degrades (`*`: commits wait for
//!   any standby) and publishes that nobody may take over automatically.
//!
//! A standby is named only once it streams, and never with `nosync` or `nofailover` (a
//! synchronous standby that may not be promoted would protect nothing).

use crate::config::dynamic::SynchronousMode;
use crate::dcs::state::{ClusterState, SyncState};
use crate::pg::probe::PgProbe;
use crate::types::{Lsn, MemberName};
use std::collections::BTreeSet;

/// What Postgres waits for before it acknowledges a commit (`synchronous_standby_names`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncNames {
    /// Nothing: commits are acknowledged at once (`''`).
    Async,
    /// Any one standby (`'*'`): strict mode without a chosen standby.
    AnyStandby,
    /// Every one of these (`FIRST n (a, b)` with n the number named): mode `on`.
    Named(BTreeSet<MemberName>),
    /// Any `k` of these (`ANY k (a, b, c)`): mode `quorum`.
    Quorum { k: usize, names: BTreeSet<MemberName> },
}

impl SyncNames {
    /// The parameter's value; `None` for asynchronous.
    pub fn render(&self) -> Option<String> {
        let list = |names: &BTreeSet<MemberName>| {
            names.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ")
        };
        match self {
            SyncNames::Async => None,
            SyncNames::AnyStandby => Some("*".into()),
            SyncNames::Named(names) => Some(format!("FIRST {} ({})", names.len(), list(names))),
            SyncNames::Quorum { k, names } => Some(format!("ANY {k} ({})", list(names))),
        }
    }

    /// The standbys named (none for `''` and `'*'`).
    pub fn names(&self) -> Option<&BTreeSet<MemberName>> {
        match self {
            SyncNames::Named(names) | SyncNames::Quorum { names, .. } => Some(names),
            SyncNames::Async | SyncNames::AnyStandby => None,
        }
    }

    /// What a commit acknowledged under this setting is known to be on: at least `k` of the
    /// set. `'*'` names no one in particular, so it promises nothing about any member.
    fn promise(&self) -> (usize, BTreeSet<MemberName>) {
        match self {
            SyncNames::Async | SyncNames::AnyStandby => (0, BTreeSet::new()),
            SyncNames::Named(names) => (names.len(), names.clone()),
            SyncNames::Quorum { k, names } => (*k, names.clone()),
        }
    }

    /// What `me` waits for when it becomes (or starts as) primary: the other standbys still
    /// published (they hold every acknowledged commit, or `k` of them do, and will
    /// acknowledge its own), else nothing when the published state is degraded, else any
    /// standby.
    pub fn for_new_primary(c: &ClusterState, me: &MemberName) -> SyncNames {
        let others: BTreeSet<MemberName> = c.sync.members.iter().filter(|m| *m != me).cloned().collect();
        let k = c.sync.quorum.map_or(others.len(), |k| k as usize).min(others.len());
        match c.config.synchronous_mode {
            SynchronousMode::Off => SyncNames::Async,
            SynchronousMode::Quorum if !others.is_empty() => SyncNames::Quorum { k, names: others },
            _ if !others.is_empty() && k < others.len() => SyncNames::Quorum { k, names: others },
            _ if !others.is_empty() => SyncNames::Named(others),
            _ if c.sync.degraded => SyncNames::Async,
            _ => SyncNames::AnyStandby,
        }
    }
}

/// One standby as the primary sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standby {
    pub name: MemberName,
    /// Streaming now (`pg_stat_replication.state = 'streaming'`).
    pub streaming: bool,
    /// Postgres counts it as synchronous (`sync_state` `sync` or `quorum`).
    pub sync: bool,
    pub flush: Option<Lsn>,
    /// Allowed to be named: a data member, not `nosync`, not `nofailover`.
    pub allowed: bool,
}

/// The standbys of `probe` (a running primary) matched to members by application name.
pub fn standbys(c: &ClusterState, me: &MemberName, probe: &PgProbe) -> Vec<Standby> {
    probe
        .replication
        .iter()
        .filter_map(|r| {
            let m = c.members.values().find(|m| m.name.as_str() == r.application_name && &m.name != me)?;
            Some(Standby {
                name: m.name.clone(),
                streaming: r.state.as_deref() == Some("streaming"),
                sync: matches!(r.sync_state.as_deref(), Some("sync" | "quorum")),
                flush: r.flush_lsn,
                allowed: !m.witness && !m.removing && !m.tags.nosync && !m.tags.nofailover,
            })
        })
        .collect()
}

/// One step, in the order returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncStep {
    Publish(SyncState),
    /// Rewrite `synchronous_standby_names` and reload; the loop remembers the primary's WAL
    /// position at that moment (a newly named standby must reach it before it is published).
    SetPostgres(SyncNames),
}

pub struct Inputs<'a> {
    pub mode: SynchronousMode,
    pub strict: bool,
    pub count: usize,
    pub published: &'a SyncState,
    /// What Postgres waits for now, and the primary's position when it was set.
    pub postgres: &'a SyncNames,
    pub named_at: Option<Lsn>,
    pub standbys: &'a [Standby],
    /// The primary's current WAL position (`min_lsn` of a degrade).
    pub primary_lsn: Lsn,
}

/// The steps that move the published state and Postgres toward the mode's target.
pub fn plan(i: &Inputs) -> Vec<SyncStep> {
    // Who published and the records of an expiry are the replicated state's business.
    let current = SyncState { leader: None, final_lsns: Default::default(), ..i.published.clone() };
    let current = &current;
    // Degrading keeps the position where the primary stopped waiting for standbys: every
    // commit acknowledged synchronously before lies below it.
    let degraded =
        SyncState::degraded_at(if current.degraded { current.min_lsn } else { Some(i.primary_lsn) });
    let desired = if i.mode == SynchronousMode::Off { BTreeSet::new() } else { choose(i) };
    let mut steps = Vec::new();
    if desired.is_empty() {
        if i.mode != SynchronousMode::Off && i.strict {
            if !current.members.is_empty() {
                steps.push(SyncStep::Publish(SyncState::waiting()));
            }
            if *i.postgres != SyncNames::AnyStandby {
                steps.push(SyncStep::SetPostgres(SyncNames::AnyStandby));
            }
            if current.degraded {
                steps.push(SyncStep::Publish(SyncState::waiting()));
            }
        } else {
            if *current != degraded && !(current.degraded && current.members.is_empty()) {
                steps.push(SyncStep::Publish(degraded));
            }
            if *i.postgres != SyncNames::Async {
                steps.push(SyncStep::SetPostgres(SyncNames::Async));
            }
        }
        return steps;
    }
    let target = match i.mode {
        SynchronousMode::Quorum => SyncNames::Quorum { k: i.count.clamp(1, desired.len()), names: desired },
        _ => SyncNames::Named(desired),
    };
    let (k_target, target_names) = target.promise();
    // Removal first: the published claim shrinks to what stays true of the commits
    // acknowledged so far, of those acknowledged under the current setting, and of those
    // acknowledged under the target.
    let mut published = current.clone();
    if !published.members.is_empty() {
        let (k_now, now_names) = i.postgres.promise();
        let kept: BTreeSet<MemberName> = published
            .members
            .intersection(&now_names)
            .filter(|m| target_names.contains(*m))
            .cloned()
            .collect();
        let k = holding(published.k(), &published.members, &kept)
            .min(holding(k_now, &now_names, &kept))
            .min(holding(k_target, &target_names, &kept));
        let shrunk = SyncState::any(k, kept);
        if shrunk != published {
            published = shrunk;
            steps.push(SyncStep::Publish(published.clone()));
        }
    }
    if *i.postgres != target {
        // Named now; published on a later iteration, once they caught up.
        steps.push(SyncStep::SetPostgres(target));
        return steps;
    }
    // Every named standby flushed what the primary had written when they were named: they
    // hold every earlier commit, and the setting covers every later one.
    let caught_up = |s: &Standby| s.sync && matches!((s.flush, i.named_at), (Some(f), Some(at)) if f >= at);
    let ready = target_names.iter().all(|n| i.standbys.iter().any(|s| &s.name == n && caught_up(s)));
    let complete = SyncState::any(k_target, target_names);
    if ready && published != complete {
        steps.push(SyncStep::Publish(complete));
    }
    steps
}

/// Of a commit that is on at least `k` of `set`, how many copies `kept` is sure to hold.
fn holding(k: usize, set: &BTreeSet<MemberName>, kept: &BTreeSet<MemberName>) -> usize {
    k.saturating_sub(set.difference(kept).count())
}

/// Mode `on`: up to `count` streaming, allowed standbys: those already published or named
/// first (no churn), then the furthest ahead, then by name. Mode `quorum`: all of them.
fn choose(i: &Inputs) -> BTreeSet<MemberName> {
    let named = i.postgres.names().cloned().unwrap_or_default();
    let mut candidates: Vec<&Standby> = i.standbys.iter().filter(|s| s.streaming && s.allowed).collect();
    candidates.sort_by(|a, b| {
        let rank = |s: &Standby| (!i.published.members.contains(&s.name), !named.contains(&s.name));
        rank(a).cmp(&rank(b)).then(b.flush.cmp(&a.flush)).then(a.name.cmp(&b.name))
    });
    let take = if i.mode == SynchronousMode::Quorum { candidates.len() } else { i.count.max(1) };
    candidates.into_iter().take(take).map(|s| s.name.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> MemberName {
        MemberName::new(s.to_string()).unwrap()
    }
    fn set(names: &[&str]) -> BTreeSet<MemberName> {
        names.iter().map(|s| n(s)).collect()
    }
    fn published(names: &[&str], degraded: bool) -> SyncState {
        SyncState { degraded, ..SyncState::all(set(names)) }
    }
    fn degraded_at(lsn: u64) -> SyncState {
        SyncState::degraded_at(Some(Lsn(lsn)))
    }
    fn named(names: &[&str]) -> SyncNames {
        SyncNames::Named(set(names))
    }
    /// (name, streaming, sync, flush)
    fn standby(name: &str, streaming: bool, sync: bool, flush: u64) -> Standby {
        Standby { name: n(name), streaming, sync, flush: Some(Lsn(flush)), allowed: true }
    }

    /// (case, mode, strict, count, published, postgres, named_at, standbys, steps)
    type Case = (
        &'static str,
        SynchronousMode,
        bool,
        usize,
        SyncState,
        SyncNames,
        Option<u64>,
        Vec<Standby>,
        Vec<SyncStep>,
    );

    /// Plans every case with the primary at 700 and compares the steps.
    fn check(cases: Vec<Case>) {
        for (case, mode, strict, count, published, postgres, named_at, standbys, want) in cases {
            let i = Inputs {
                mode,
                strict,
                count,
                published: &published,
                postgres: &postgres,
                named_at: named_at.map(Lsn),
                standbys: &standbys,
                primary_lsn: Lsn(700),
            };
            assert_eq!(plan(&i), want, "{case}");
        }
    }

    #[test]
    fn names_render_as_postgres_reads_them() {
        assert_eq!(SyncNames::Async.render(), None);
        assert_eq!(SyncNames::AnyStandby.render().as_deref(), Some("*"));
        assert_eq!(named(&["b", "a"]).render().as_deref(), Some("FIRST 2 (\"a\", \"b\")"));
    }

    fn any(k: usize, names: &[&str]) -> SyncNames {
        SyncNames::Quorum { k, names: set(names) }
    }
    fn quorum_of(k: usize, names: &[&str]) -> SyncState {
        SyncState::any(k, set(names))
    }

    #[test]
    fn quorum_names_render_as_postgres_reads_them() {
        assert_eq!(any(1, &["c", "b"]).render().as_deref(), Some("ANY 1 (\"b\", \"c\")"));
        assert_eq!(quorum_of(2, &["b", "c"]), SyncState::all(set(&["b", "c"])), "ANY n of n is all of them");
        assert_eq!(quorum_of(0, &["b", "c"]), SyncState::waiting(), "ANY 0 promises nothing");
    }

    #[test]
    fn a_new_primary_waits_for_what_the_quorum_is_known_to_hold() {
        let mut c = crate::dcs::state::ClusterState::bootstrap(
            "s".into(),
            "i".into(),
            crate::dcs::state::NewMember {
                name: n("a"),
                witness: false,
                api_address: "a:8008".into(),
                raft_address: "a:5010".into(),
                pg_address: Some("a:5432".into()),
                tags: Default::default(),
                version: "t".into(),
            },
            crate::dcs::state::CaMaterial { cert_pem: String::new(), key_pem: String::new() },
            Default::default(),
        );
        c.config.synchronous_mode = SynchronousMode::Quorum;
        c.sync = quorum_of(2, &["b", "c", "d"]);
        assert_eq!(
            SyncNames::for_new_primary(&c, &n("b")),
            any(2, &["c", "d"]),
            "a standby keeps ANY 2 of the others"
        );
        c.sync = quorum_of(1, &["c", "d"]);
        assert_eq!(SyncNames::for_new_primary(&c, &n("b")), any(1, &["c", "d"]), "after the grant");
        c.config.synchronous_mode = SynchronousMode::On;
        assert_eq!(
            SyncNames::for_new_primary(&c, &n("b")),
            any(1, &["c", "d"]),
            "just switched to on: keep the quorum"
        );
        c.sync = SyncState::all(set(&["c"]));
        assert_eq!(SyncNames::for_new_primary(&c, &n("b")), named(&["c"]));
    }

    #[test]
    fn quorum_steps_keep_every_acknowledged_commit_on_k_of_the_published_set() {
        use SyncStep::{Publish, SetPostgres};
        let quorum = SynchronousMode::Quorum;
        let cases: Vec<Case> = vec![
            (
                "turned on: ANY 1 of every streaming standby, nothing published yet",
                quorum,
                false,
                1,
                SyncState::default(),
                SyncNames::Async,
                None,
                vec![
                    standby("b", true, false, 10),
                    standby("c", true, false, 20),
                    standby("d", false, false, 0),
                ],
                vec![SetPostgres(any(1, &["b", "c"]))],
            ),
            (
                "all named caught up: publish ANY 1 of them",
                quorum,
                false,
                1,
                SyncState::default(),
                any(1, &["b", "c"]),
                Some(100),
                vec![standby("b", true, true, 100), standby("c", true, true, 120)],
                vec![Publish(quorum_of(1, &["b", "c"]))],
            ),
            (
                "one named not caught up: wait",
                quorum,
                false,
                1,
                SyncState::default(),
                any(1, &["b", "c"]),
                Some(100),
                vec![standby("b", true, true, 100), standby("c", true, true, 99)],
                vec![],
            ),
            (
                "steady: nothing",
                quorum,
                false,
                1,
                quorum_of(1, &["b", "c"]),
                any(1, &["b", "c"]),
                Some(100),
                vec![standby("b", true, true, 500), standby("c", true, true, 400)],
                vec![],
            ),
            (
                "count above the standbys: ANY of all of them",
                quorum,
                false,
                3,
                SyncState::default(),
                SyncNames::Async,
                None,
                vec![standby("b", true, false, 10), standby("c", true, false, 20)],
                vec![SetPostgres(any(2, &["b", "c"]))],
            ),
            (
                "ANY 1 of 2 loses one: the other is not known to hold anything, publish that first",
                quorum,
                false,
                1,
                quorum_of(1, &["b", "c"]),
                any(1, &["b", "c"]),
                Some(100),
                vec![standby("b", true, true, 500)],
                vec![Publish(SyncState::waiting()), SetPostgres(any(1, &["b"]))],
            ),
            (
                "ANY 2 of 3 loses one: the other two hold each commit at least once",
                quorum,
                false,
                2,
                quorum_of(2, &["b", "c", "d"]),
                any(2, &["b", "c", "d"]),
                Some(100),
                vec![standby("b", true, true, 500), standby("c", true, true, 500)],
                vec![Publish(quorum_of(1, &["b", "c"])), SetPostgres(any(2, &["b", "c"]))],
            ),
            (
                "a standby joins ANY 1 of 2: the published ones are not sure to hold new commits",
                quorum,
                false,
                1,
                quorum_of(1, &["b", "c"]),
                any(1, &["b", "c"]),
                Some(100),
                vec![
                    standby("b", true, true, 500),
                    standby("c", true, true, 500),
                    standby("d", true, false, 400),
                ],
                vec![Publish(SyncState::waiting()), SetPostgres(any(1, &["b", "c", "d"]))],
            ),
            (
                "quorum to on: FIRST 1 of the published, claim nothing until it caught up",
                SynchronousMode::On,
                false,
                1,
                quorum_of(1, &["b", "c"]),
                any(1, &["b", "c"]),
                Some(100),
                vec![standby("b", true, true, 500), standby("c", true, true, 400)],
                vec![Publish(SyncState::waiting()), SetPostgres(named(&["b"]))],
            ),
            (
                "on to quorum: b keeps holding every commit while c joins",
                quorum,
                false,
                1,
                published(&["b"], false),
                named(&["b"]),
                Some(100),
                vec![standby("b", true, true, 500), standby("c", true, false, 400)],
                vec![Publish(SyncState::waiting()), SetPostgres(any(1, &["b", "c"]))],
            ),
            (
                "on (FIRST 2) to quorum ANY 1 of the same two: each commit is still on one of them",
                quorum,
                false,
                1,
                published(&["b", "c"], false),
                named(&["b", "c"]),
                Some(100),
                vec![standby("b", true, true, 500), standby("c", true, true, 500)],
                vec![Publish(quorum_of(1, &["b", "c"])), SetPostgres(any(1, &["b", "c"]))],
            ),
            (
                "no standby left, non-strict: degrade",
                quorum,
                false,
                1,
                quorum_of(1, &["b", "c"]),
                any(1, &["b", "c"]),
                Some(100),
                vec![],
                vec![Publish(degraded_at(700)), SetPostgres(SyncNames::Async)],
            ),
        ];
        check(cases);
    }

    #[test]
    fn steps_keep_the_published_set_behind_postgres() {
        use SyncStep::{Publish, SetPostgres};
        let on = SynchronousMode::On;
        let cases: Vec<Case> = vec![
            (
                "off and asynchronous: nothing to do",
                SynchronousMode::Off,
                false,
                1,
                SyncState::default(),
                SyncNames::Async,
                None,
                vec![standby("b", true, false, 10)],
                vec![],
            ),
            (
                "turned on: Postgres names the streaming standby first, nothing published yet",
                on,
                false,
                1,
                SyncState::default(),
                SyncNames::Async,
                None,
                vec![standby("b", true, false, 10), standby("c", false, false, 0)],
                vec![SetPostgres(named(&["b"]))],
            ),
            (
                "named but not yet sync: wait",
                on,
                false,
                1,
                SyncState::default(),
                named(&["b"]),
                Some(100),
                vec![standby("b", true, false, 100)],
                vec![],
            ),
            (
                "sync but not caught up with what was written when it was named: wait",
                on,
                false,
                1,
                SyncState::default(),
                named(&["b"]),
                Some(100),
                vec![standby("b", true, true, 99)],
                vec![],
            ),
            (
                "sync and caught up: publish it, no longer degraded",
                on,
                false,
                1,
                SyncState::default(),
                named(&["b"]),
                Some(100),
                vec![standby("b", true, true, 100)],
                vec![Publish(published(&["b"], false))],
            ),
            (
                "steady: nothing",
                on,
                false,
                1,
                published(&["b"], false),
                named(&["b"]),
                Some(100),
                vec![standby("b", true, true, 500), standby("c", true, false, 600)],
                vec![],
            ),
            (
                "sync standby gone, another streams: unpublish first, then name the other",
                on,
                false,
                1,
                published(&["b"], false),
                named(&["b"]),
                Some(100),
                vec![standby("c", true, false, 600)],
                vec![Publish(published(&[], false)), SetPostgres(named(&["c"]))],
            ),
            (
                "no standby, non-strict: unpublish, degrade, then asynchronous",
                on,
                false,
                1,
                published(&["b"], false),
                named(&["b"]),
                Some(100),
                vec![standby("b", false, false, 100)],
                vec![Publish(degraded_at(700)), SetPostgres(SyncNames::Async)],
            ),
            (
                "no standby, strict: unpublish, any standby, nobody may take over",
                on,
                true,
                1,
                published(&["b"], false),
                named(&["b"]),
                Some(100),
                vec![],
                vec![Publish(published(&[], false)), SetPostgres(SyncNames::AnyStandby)],
            ),
            (
                "strict from asynchronous: Postgres waits first, then publish that nobody may take over",
                on,
                true,
                1,
                SyncState::default(),
                SyncNames::Async,
                None,
                vec![],
                vec![SetPostgres(SyncNames::AnyStandby), Publish(published(&[], false))],
            ),
            (
                "nosync and nofailover standbys are never named",
                on,
                false,
                1,
                SyncState::default(),
                SyncNames::Async,
                None,
                vec![Standby { allowed: false, ..standby("b", true, false, 10) }],
                vec![],
            ),
            (
                "count 2 with three streaming: the published one stays, the furthest joins",
                on,
                false,
                2,
                published(&["c"], false),
                named(&["c"]),
                Some(100),
                vec![
                    standby("b", true, false, 90),
                    standby("c", true, true, 100),
                    standby("d", true, false, 95),
                ],
                vec![SetPostgres(named(&["c", "d"]))],
            ),
            (
                "count 2: published only when both caught up",
                on,
                false,
                2,
                published(&["c"], false),
                named(&["c", "d"]),
                Some(200),
                vec![standby("c", true, true, 300), standby("d", true, true, 200)],
                vec![Publish(published(&["c", "d"], false))],
            ),
            (
                "already degraded and asynchronous: the first min_lsn stays",
                on,
                false,
                1,
                degraded_at(300),
                SyncNames::Async,
                None,
                vec![],
                vec![],
            ),
            (
                "turned off: degrade first, then asynchronous",
                SynchronousMode::Off,
                false,
                1,
                published(&["b"], false),
                named(&["b"]),
                Some(100),
                vec![standby("b", true, true, 100)],
                vec![Publish(degraded_at(700)), SetPostgres(SyncNames::Async)],
            ),
        ];
        check(cases);
    }
}
