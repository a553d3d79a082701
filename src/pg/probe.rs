//! [`PgProbe`]: one snapshot of what the local Postgres says about itself, taken over a
//! [`Session`] in three pipelined queries bounded by the session's timeout. It is the Postgres
//! half of the HA loop's observation (STYLE.md, "gather, decide, act"): role, timeline, WAL
//! positions, replay state, pending restarts, identity, and who streams from or to it. It only
//! reads: it never changes a setting, and it reports what Postgres said, nothing guessed
//! (positions a replica does not have are `None`, not zero).

use crate::pg::error::PgError;
use crate::pg::session::Session;
use crate::types::{Lsn, Timeline};
use std::time::SystemTime;
use tokio_postgres::types::{FromSql, PgLsn};
use tokio_postgres::Row;

/// The local Postgres at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgProbe {
    /// `pg_is_in_recovery()`: a replica (or a primary still finishing its promotion).
    pub in_recovery: bool,
    /// The timeline it writes (primary) or receives (replica); see [`PgProbe::timeline`]'s
    /// sources in the query comments.
    pub timeline: Timeline,
    /// `pg_current_wal_lsn()` on a primary; `None` on a replica (where it raises an error).
    pub wal_lsn: Option<Lsn>,
    /// `pg_last_wal_receive_lsn()` on a replica: streamed and flushed to disk. `None` on a
    /// primary and on a replica that has not streamed since it started.
    pub receive_lsn: Option<Lsn>,
    /// `pg_last_wal_replay_lsn()` on a replica; `None` on a primary.
    pub replay_lsn: Option<Lsn>,
    /// Commit time of the last transaction replayed (replica), if any.
    pub replay_timestamp: Option<SystemTime>,
    /// `pg_is_wal_replay_paused()`; false on a primary.
    pub wal_replay_paused: bool,
    /// Names of parameters changed in the files but waiting for a restart
    /// (`pg_settings.pending_restart`), sorted.
    pub pending_restart: Vec<String>,
    /// `server_version_num`, e.g. 150018.
    pub server_version: u32,
    pub postmaster_start_time: SystemTime,
    /// `pg_control_system().system_identifier`: equal on every member of one cluster.
    pub system_identifier: u64,
    /// `pg_stat_replication`, by application name.
    pub replication: Vec<Replica>,
    /// `pg_stat_wal_receiver`, on a replica whose walreceiver runs.
    pub wal_receiver: Option<WalReceiver>,
}

impl PgProbe {
    /// Whether a parameter change waits for a restart.
    pub fn needs_restart(&self) -> bool {
        !self.pending_restart.is_empty()
    }

    /// How far this server's WAL goes: written on a primary, the furthest of received and
    /// replayed on a replica. What failover eligibility compares (DESIGN.md, lease rule 5).
    pub fn wal_position(&self) -> Option<Lsn> {
        if self.in_recovery {
            self.receive_lsn.max(self.replay_lsn)
        } else {
            self.wal_lsn
        }
    }
}

/// One row of `pg_stat_replication`: a standby (or a base backup) streaming from this server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    pub usename: Option<String>,
    /// The member name, from the standby's `primary_conninfo`.
    pub application_name: String,
    /// `None` for a connection over a unix socket.
    pub client_addr: Option<String>,
    /// `startup`, `catchup`, `streaming`, `backup`, `stopping`.
    pub state: Option<String>,
    /// `async`, `potential`, `sync`, `quorum`.
    pub sync_state: Option<String>,
    pub sync_priority: Option<i32>,
    pub sent_lsn: Option<Lsn>,
    pub write_lsn: Option<Lsn>,
    pub flush_lsn: Option<Lsn>,
    pub replay_lsn: Option<Lsn>,
}

/// The row of `pg_stat_wal_receiver`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalReceiver {
    /// `streaming`, `waiting`, `starting`, `stopping`, ...
    pub status: String,
    pub received_tli: Option<Timeline>,
    pub flushed_lsn: Option<Lsn>,
    pub sender_host: Option<String>,
    pub sender_port: Option<u16>,
    pub slot_name: Option<String>,
}

/// Server state in one row. `pg_is_in_recovery()` is read once (a materialized CTE), so the
/// guarded calls below cannot disagree with the reported role: `pg_current_wal_lsn()` and
/// `pg_walfile_name()` raise errors during recovery, `pg_is_wal_replay_paused()` outside it.
/// A primary's timeline comes from the name of its current WAL file rather than
/// `pg_control_checkpoint()`: after a promotion the checkpoint still names the old timeline
/// until the next checkpoint completes. A replica's is the one its walreceiver last received;
/// without a walreceiver, the later of the last restartpoint's and the minimum recovery
/// point's timeline (what it has replayed up to, as far as the control file knows).
const STATE_SQL: &str = "
WITH r AS MATERIALIZED (SELECT pg_catalog.pg_is_in_recovery() AS rec)
SELECT r.rec,
       CASE WHEN r.rec THEN NULL ELSE pg_catalog.pg_current_wal_lsn() END,
       CASE WHEN r.rec THEN NULL ELSE ('x' || pg_catalog.substr(
            pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
       pg_catalog.pg_last_wal_receive_lsn(),
       pg_catalog.pg_last_wal_replay_lsn(),
       pg_catalog.pg_last_xact_replay_timestamp(),
       CASE WHEN r.rec THEN pg_catalog.pg_is_wal_replay_paused() ELSE false END,
       (SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()),
       (SELECT min_recovery_end_timeline FROM pg_catalog.pg_control_recovery()),
       (SELECT received_tli FROM pg_catalog.pg_stat_wal_receiver),
       pg_catalog.current_setting('server_version_num')::int,
       pg_catalog.pg_postmaster_start_time(),
       (SELECT system_identifier FROM pg_catalog.pg_control_system()),
       ARRAY(SELECT name::text FROM pg_catalog.pg_settings WHERE pending_restart ORDER BY name)
FROM r";

const REPLICATION_SQL: &str = "
SELECT usename::text, application_name, pg_catalog.host(client_addr), state, sync_state,
       sync_priority, sent_lsn, write_lsn, flush_lsn, replay_lsn
FROM pg_catalog.pg_stat_replication
ORDER BY application_name, pid";

const WAL_RECEIVER_SQL: &str = "
SELECT status, received_tli, flushed_lsn, sender_host, sender_port, slot_name
FROM pg_catalog.pg_stat_wal_receiver";

impl Session {
    /// Takes a [`PgProbe`]. The three queries are pipelined on the connection (one round trip
    /// of latency) and bounded together by the session's timeout.
    pub async fn probe(&self) -> Result<PgProbe, PgError> {
        let client = self.client();
        let all = async {
            tokio::try_join!(
                client.query_one(STATE_SQL, &[]),
                client.query(REPLICATION_SQL, &[]),
                client.query_opt(WAL_RECEIVER_SQL, &[]),
            )
        };
        let (state, replication, receiver) = self.timed("the probe", all).await?;
        let lsn = |v: Option<PgLsn>| v.map(|l| Lsn(u64::from(l)));
        let in_recovery: bool = get(&state, 0)?;
        let wal_timeline: Option<i32> = get(&state, 2)?;
        let checkpoint_tli: i32 = get(&state, 7)?;
        let min_recovery_tli: i32 = get(&state, 8)?;
        let received_tli: Option<i32> = get(&state, 9)?;
        let timeline = match (in_recovery, wal_timeline, received_tli) {
            (false, Some(tli), _) => tli,
            (true, _, Some(tli)) if tli > 0 => tli,
            _ => checkpoint_tli.max(min_recovery_tli),
        };
        let server_version: i32 = get(&state, 10)?;
        let system_identifier: i64 = get(&state, 12)?;
        let replication = replication
            .iter()
            .map(|row| {
                Ok(Replica {
                    usename: get(row, 0)?,
                    application_name: get(row, 1)?,
                    client_addr: get(row, 2)?,
                    state: get(row, 3)?,
                    sync_state: get(row, 4)?,
                    sync_priority: get(row, 5)?,
                    sent_lsn: lsn(get(row, 6)?),
                    write_lsn: lsn(get(row, 7)?),
                    flush_lsn: lsn(get(row, 8)?),
                    replay_lsn: lsn(get(row, 9)?),
                })
            })
            .collect::<Result<Vec<_>, PgError>>()?;
        let wal_receiver = match receiver {
            None => None,
            Some(row) => Some(WalReceiver {
                status: get(&row, 0)?,
                received_tli: get::<Option<i32>>(&row, 1)?.map(|t| Timeline(t as u32)),
                flushed_lsn: lsn(get(&row, 2)?),
                sender_host: get(&row, 3)?,
                sender_port: get::<Option<i32>>(&row, 4)?.map(|p| p as u16),
                slot_name: get(&row, 5)?,
            }),
        };
        Ok(PgProbe {
            in_recovery,
            timeline: Timeline(timeline as u32),
            wal_lsn: lsn(get(&state, 1)?),
            receive_lsn: lsn(get(&state, 3)?),
            replay_lsn: lsn(get(&state, 4)?),
            replay_timestamp: get(&state, 5)?,
            wal_replay_paused: get(&state, 6)?,
            pending_restart: get(&state, 13)?,
            server_version: server_version as u32,
            postmaster_start_time: get(&state, 11)?,
            // A bigint in SQL, unsigned in pg_controldata: the same 64 bits.
            system_identifier: system_identifier as u64,
            replication,
            wal_receiver,
        })
    }
}

/// One column, as an error rather than a panic when Postgres answers with another type or a
/// NULL where none was expected.
fn get<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, PgError> {
    row.try_get(index).map_err(PgError::query("the probe"))
}
