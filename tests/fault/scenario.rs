//! One scenario's life: a cluster on the test network with the workload's table and
//! `pg_hba` rules, the workload running through every node's proxy and straight to every data
//! node, the fault (the test's own code), then [`Scenario::finish`]: wait until the cluster
//! converged (one primary, every other data node streaming on its timeline) within the stated
//! bound, see writes resume through the proxy, stop the workload, wait until the replicas
//! replayed everything, read every data node, run the checker and print one summary line.

use crate::checker::{self, Mode, Report};
use crate::cluster::{FirstNode, NetCluster, PG_PORT, PROXY_PORT, SUPERUSER_PASSWORD};
use crate::harness::{elapsed, wait_until};
use crate::workload::{Target, Workload, TABLE_DDL};
use pgha::clock::{boot_now, BootInstant};
use std::collections::BTreeSet;
use std::time::Duration;

/// Bootstrap, two clones, streaming: generous on a loaded 2-core host.
pub const FORM: Duration = Duration::from_secs(180);
/// A failover: lease ttl (4 s) plus election and promotion, with room for a busy machine.
pub const FAILOVER: Duration = Duration::from_secs(60);
/// The stated bound for convergence after the last fault ends (includes a pg_rewind or a
/// re-clone of a returning node).
pub const CONVERGE: Duration = Duration::from_secs(90);
/// Default `maximum_lag_on_failover` (docs/configuration.md).
pub const MAX_LAG: u64 = 1 << 20;

#[derive(Clone, Debug)]
pub struct Opts {
    pub data: usize,
    pub witnesses: usize,
    pub sync: bool,
    /// Special settings of the first node (the first primary).
    pub first: FirstNode,
}

impl Opts {
    pub fn asynchronous() -> Opts {
        Opts { data: 3, witnesses: 0, sync: false, first: FirstNode::default() }
    }
    pub fn synchronous() -> Opts {
        Opts { data: 3, witnesses: 0, sync: true, first: FirstNode::default() }
    }
}

pub struct Scenario {
    pub name: String,
    pub c: NetCluster,
    pub mode: Mode,
    pub wl: Option<Workload>,
    fault_over: Option<BootInstant>,
    started: BootInstant,
}

/// One node's Postgres as the checker needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgRole {
    Primary { timeline: u32 },
    Replica { streaming: bool, timeline: Option<u32> },
    Down(String),
}

const ROLE_SQL: &str = "SELECT CASE WHEN pg_is_in_recovery() THEN 'r:' || coalesce((SELECT status || ':' || received_tli FROM pg_stat_wal_receiver), 'none') \
     ELSE 'p:' || ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END";

impl Scenario {
    /// The cluster, formed and ready for writes; `None` (after saying why) when this machine
    /// cannot run the suite.
    pub fn new(name: &str, opts: Opts) -> Option<Scenario> {
        if let Err(why) = crate::net::available() {
            eprintln!("fault {name}: SKIPPED: {why}");
            return None;
        }
        let started = boot_now();
        let c = NetCluster::new(opts.data, opts.witnesses, opts.first);
        let s = Scenario {
            name: name.to_string(),
            c,
            mode: if opts.sync { Mode::SyncStrict } else { Mode::Async { max_lag_bytes: MAX_LAG } },
            wl: None,
            fault_over: None,
            started,
        };
        // Clients come from the client namespace, without TLS: allow the test network.
        let patch = s.c.root.join("hba.json");
        std::fs::write(
            &patch,
            r#"{"postgresql": {"pg_hba": ["local all all scram-sha-256", "host all all 10.77.0.0/24 scram-sha-256"]}}"#,
        )
        .expect("write the pg_hba patch");
        let patch = patch.to_str().expect("UTF-8 path").to_string();
        wait_until(FORM, "the pg_hba patch is applied", || {
            s.c.ctl(&["edit-config", "--apply", &patch, "--force"])
        });
        if opts.sync {
            wait_until(FORM, "synchronous_mode on, strict", || {
                s.c.ctl(&[
                    "edit-config",
                    "--set",
                    "synchronous_mode=on",
                    "--set",
                    "synchronous_mode_strict=true",
                    "--force",
                ])
            });
        }
        let p = s.wait_converged(FORM).0;
        wait_until(FORM, "the workload's table exists", || s.c.psql(p, TABLE_DDL));
        if opts.sync {
            wait_until(FORM, "a synchronous standby is published", || {
                let list = s.c.ctl(&["list", "--format", "json"])?;
                list.contains("Sync Standby").then_some(()).ok_or(list)
            });
        }
        eprintln!("fault {name}: cluster ready after {:?}", elapsed(started));
        Some(s)
    }

    /// Starts the workload: one client through each data node's proxy, one straight to each.
    pub fn start_writes(&mut self) {
        let mut targets = Vec::new();
        for i in self.c.data_nodes() {
            let n = &self.c.nodes[i];
            targets.push(Target {
                label: format!("proxy@{}", n.name),
                addr: n.addr.clone(),
                port: PROXY_PORT,
            });
            targets.push(Target { label: format!("direct@{}", n.name), addr: n.addr.clone(), port: PG_PORT });
        }
        let names = self.c.nodes.iter().map(|n| (n.addr.clone(), n.name.clone())).collect();
        self.wl = Some(Workload::start(&self.c.net.client_ns(), &targets, names, SUPERUSER_PASSWORD));
        self.wait_writes(20, FAILOVER, "the workload is writing");
    }

    /// Waits until `n` more writes were acknowledged.
    pub fn wait_writes(&self, n: usize, deadline: Duration, what: &str) {
        let wl = self.wl.as_ref().expect("the workload runs");
        let before = wl.acked();
        wait_until(deadline, what, || {
            let now = wl.acked();
            (now >= before + n)
                .then_some(())
                .ok_or_else(|| format!("{} acknowledged writes since", now - before))
        });
    }

    /// What data node `i`'s Postgres says it is.
    pub fn role(&self, i: usize) -> PgRole {
        match self.c.psql(i, ROLE_SQL) {
            Ok(s) if s.starts_with("p:") => match s[2..].parse() {
                Ok(timeline) => PgRole::Primary { timeline },
                Err(_) => PgRole::Down(s),
            },
            Ok(s) if s.starts_with("r:") => {
                let parts: Vec<&str> = s.split(':').collect();
                PgRole::Replica {
                    streaming: parts.get(1) == Some(&"streaming"),
                    timeline: parts.get(2).and_then(|t| t.parse().ok()),
                }
            }
            Ok(s) => PgRole::Down(s),
            Err(e) => PgRole::Down(e),
        }
    }

    fn roles(&self) -> Vec<(usize, PgRole)> {
        self.c.data_nodes().into_iter().map(|i| (i, self.role(i))).collect()
    }

    /// The data nodes whose Postgres is a primary now.
    pub fn primaries(&self) -> Vec<usize> {
        self.roles()
            .into_iter()
            .filter(|(_, r)| matches!(r, PgRole::Primary { .. }))
            .map(|(i, _)| i)
            .collect()
    }

    /// `Ok((primary, timeline))` when exactly one data node is primary and every other one
    /// streams on its timeline.
    pub fn converged(&self) -> Result<(usize, u32), String> {
        let roles = self.roles();
        let show = || {
            roles
                .iter()
                .map(|(i, r)| format!("{}: {r:?}", self.c.nodes[*i].name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let prims: Vec<(usize, u32)> = roles
            .iter()
            .filter_map(|(i, r)| match r {
                PgRole::Primary { timeline } => Some((*i, *timeline)),
                _ => None,
            })
            .collect();
        let [(p, tl)] = prims.as_slice() else { return Err(show()) };
        let ok = roles
            .iter()
            .all(|(i, r)| i == p || *r == PgRole::Replica { streaming: true, timeline: Some(*tl) });
        if ok {
            Ok((*p, *tl))
        } else {
            Err(show())
        }
    }

    pub fn wait_converged(&self, deadline: Duration) -> (usize, u32) {
        wait_until(deadline, "one primary, every other data node streaming on its timeline", || {
            self.converged()
        })
    }

    /// The one primary now (waits for it).
    pub fn primary(&self) -> usize {
        wait_until(FAILOVER, "exactly one primary", || match self.primaries().as_slice() {
            [p] => Ok(*p),
            other => Err(format!("primaries {other:?}")),
        })
    }

    /// Waits until a data node other than `old` is primary; returns it.
    pub fn wait_new_primary(&self, old: usize, deadline: Duration) -> usize {
        wait_until(deadline, "a new primary", || {
            let p = self.primaries();
            p.iter().copied().find(|&i| i != old).ok_or_else(|| format!("primaries {p:?}"))
        })
    }

    /// Makes node `i` the primary (a switchover if it is not), e.g. the node with the special
    /// disk or clock: whoever wins the initialize race bootstraps, not always the first node.
    pub fn make_primary(&self, i: usize) {
        let p = self.primary();
        if p == i {
            return;
        }
        let name = self.c.nodes[i].name.clone();
        wait_until(FAILOVER, &format!("switchover to {name}"), || {
            self.c.ctl(&["switchover", "--candidate", &name, "--force"])
        });
        self.wait_new_primary(p, FAILOVER);
        let (now, _) = self.wait_converged(CONVERGE);
        assert_eq!(now, i, "the switchover went to {name}");
    }

    /// Prints `what` with the time on the history's clock (to place the write gaps).
    pub fn mark(&self, what: &str) {
        let t = self.wl.as_ref().map(|w| w.elapsed().as_secs_f64()).unwrap_or(0.0);
        eprintln!("fault {}: t={t:.1} s: {what}", self.name);
    }

    /// Marks the end of the last fault: convergence is timed from here.
    pub fn fault_over(&mut self) {
        self.mark("fault over");
        self.fault_over = Some(boot_now());
    }

    /// See the module comment. Panics with every problem the checker found.
    pub fn finish(mut self, bound: Duration) -> Report {
        let from = self.fault_over.unwrap_or_else(boot_now);
        let (p, tl) =
            wait_until(bound, &format!("{}: converged within the stated {bound:?}", self.name), || {
                self.converged()
            });
        let convergence = elapsed(from);
        self.wait_writes(10, FAILOVER, "writes resume after convergence");
        let history = self.wl.take().expect("the workload ran").stop();
        // Every replica replays up to the primary's last position before anyone is read.
        let lsn = self.c.psql(p, "SELECT pg_current_wal_lsn()").expect("the primary's position");
        for i in self.c.data_nodes().into_iter().filter(|&i| i != p) {
            wait_until(CONVERGE, &format!("{} replayed up to {lsn}", self.c.nodes[i].name), || {
                match self.c.psql(i, &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"))?.as_str()
                {
                    "t" => Ok(()),
                    other => Err(other.to_string()),
                }
            });
        }
        let mut fin = checker::Final { primary: self.c.nodes[p].name.clone(), ..Default::default() };
        for i in self.c.data_nodes() {
            let ids = self
                .c
                .psql(i, "SELECT coalesce(string_agg(id::text, ','), '') FROM fault_w")
                .expect("read rows");
            let ids: BTreeSet<u64> = ids.split(',').filter_map(|s| s.parse().ok()).collect();
            fin.rows.insert(self.c.nodes[i].name.clone(), ids);
        }
        if std::env::var_os("PGHA_FAULT_KEEP").is_some() {
            // The raw history next to the node logs, for a closer look.
            let mut csv = String::from("id,writer,start_ms,end_ms,outcome,node,timeline\n");
            for w in &history {
                let (outcome, node, tl) = match &w.outcome {
                    checker::Outcome::Ack { node, timeline } => ("ack", node.as_str(), timeline.to_string()),
                    checker::Outcome::Failed(e) => ("failed", e.as_str(), String::new()),
                    checker::Outcome::Unknown => ("unknown", "", String::new()),
                };
                csv.push_str(&format!(
                    "{},{},{},{},{outcome},\"{}\",{tl}\n",
                    w.id,
                    w.writer,
                    w.start.as_millis(),
                    w.end.as_millis(),
                    node.replace('"', "'")
                ));
            }
            let _ = std::fs::write(self.c.root.join("history.csv"), csv);
        }
        let report = checker::check(&history, &fin);
        let problems = report.problems(self.mode);
        let line = format!(
            "fault {}: mode {:?}; writes {} acked {} failed {} unknown {} lost {} {:?}; max write gap {} ms (from t={:.1} s); converged in {} ms (bound {} s) on {} timeline {}; acks per node/timeline {:?}; scenario {} s",
            self.name,
            self.mode,
            report.attempted,
            report.acked,
            report.failed,
            report.unknown,
            report.lost.len(),
            report.lost_by_writer,
            report.max_gap.as_millis(),
            report.max_gap_from.as_secs_f64(),
            convergence.as_millis(),
            bound.as_secs(),
            self.c.nodes[p].name,
            tl,
            report.groups,
            elapsed(self.started).as_secs()
        );
        eprintln!("{line}");
        if let Ok(path) = std::env::var("PGHA_FAULT_SUMMARY") {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
                let _ = writeln!(f, "{line}{}", if problems.is_empty() { "" } else { " FAILED" });
            }
        }
        assert!(problems.is_empty(), "fault {}: {problems:#?}", self.name);
        report
    }
}
