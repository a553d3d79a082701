//! What the HA loop knows when it decides: the applied cluster state, the lease as this node
//! sees it, and the local Postgres. Built once per iteration by the driver (gather), then
//! handed to [`super::decide::decide`] (decide); nothing here does I/O.

use crate::dcs::state::ClusterState;
use crate::dcs::status::LeaseView;
use crate::types::{Lsn, MemberName, Timeline};

/// Whether a running Postgres is a primary or a standby.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgRole {
    Primary,
    Replica,
}

/// The local Postgres as probed this iteration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalPg {
    /// No data directory, or an empty one: it must be bootstrapped or cloned.
    Absent,
    /// A data directory, no postmaster running (from `pg_controldata`).
    Stopped {
        system_identifier: String,
        timeline: Timeline,
        checkpoint: Lsn,
        /// The control file says the last run was a primary (`in production` or `shut down`),
        /// not a standby (`in archive recovery` / `shut down in recovery`).
        was_primary: bool,
        /// Shut down cleanly (`shut down` / `shut down in recovery`). After a crash the last
        /// checkpoint is not the end of the WAL, so it cannot be compared with the history.
        clean: bool,
        /// A standby's directory: how far it replayed at least (the control file's minimum
        /// recovery point and its timeline). Past the point where its timeline ended in the
        /// history, it can never follow the new timeline without a rewind or a new clone.
        replayed: Option<(Timeline, Lsn)>,
    },
    /// A postmaster that does not answer queries yet (starting up, crash recovery).
    Starting,
    /// A standby's postmaster that refuses connections until its recovery is consistent: it
    /// needs WAL from `upstream` (what pgha configured). If that member is no longer the
    /// primary it never gets it, so it must be pointed at the new one while it cannot answer.
    Recovering { upstream: Option<MemberName> },
    /// A postmaster that answers.
    Running {
        role: PgRole,
        system_identifier: String,
        timeline: Timeline,
        /// Primary: current WAL position; standby: last replayed position.
        lsn: Lsn,
        /// The member this standby streams from (from `primary_conninfo`), if any.
        upstream: Option<MemberName>,
        /// Whether its WAL receiver is streaming right now.
        streaming: bool,
    },
}

impl LocalPg {
    pub fn system_identifier(&self) -> Option<&str> {
        match self {
            LocalPg::Stopped { system_identifier, .. } | LocalPg::Running { system_identifier, .. } => {
                Some(system_identifier)
            }
            LocalPg::Absent | LocalPg::Starting | LocalPg::Recovering { .. } => None,
        }
    }

    pub fn timeline(&self) -> Option<Timeline> {
        match self {
            LocalPg::Stopped { timeline, .. } | LocalPg::Running { timeline, .. } => Some(*timeline),
            LocalPg::Absent | LocalPg::Starting | LocalPg::Recovering { .. } => None,
        }
    }

    pub fn lsn(&self) -> Option<Lsn> {
        match self {
            LocalPg::Stopped { checkpoint, .. } => Some(*checkpoint),
            LocalPg::Running { lsn, .. } => Some(*lsn),
            LocalPg::Absent | LocalPg::Starting | LocalPg::Recovering { .. } => None,
        }
    }

    pub fn is_running_primary(&self) -> bool {
        matches!(self, LocalPg::Running { role: PgRole::Primary, .. })
    }
}

/// One iteration's view.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    pub me: &'a MemberName,
    pub cluster: &'a ClusterState,
    pub lease: &'a LeaseView,
    pub pg: &'a LocalPg,
    /// Wall-clock milliseconds, only to compare with a scheduled switchover's time.
    pub wall_now_ms: u64,
    /// `watchdog.mode: required` and the watchdog does not work: this member may not become
    /// primary (it must not bootstrap nor take a free lease).
    pub watchdog_blocks: bool,
    /// Milliseconds this member has held a valid lease without its Postgres running as
    /// primary (`None`: it is not such a holder).
    pub primary_down_ms: Option<u64>,
}
