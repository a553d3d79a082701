//! What `pg_controldata` says about a data directory, parsed. Pure. Input: the program's
//! output, run with `LC_ALL=C` so the labels are English; output: [`ControlData`], the facts
//! the HA loop needs about a stopped Postgres (was it shut down cleanly, on which timeline,
//! where did its last checkpoint end) to choose between start, rewind and re-clone. It never
//! guesses: a missing or malformed field is an error naming it.

use crate::types::{Lsn, Timeline};
use std::fmt;

/// `Database cluster state` (`DBState` in Postgres's `pg_control.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    StartingUp,
    ShutDown,
    ShutDownInRecovery,
    ShuttingDown,
    InCrashRecovery,
    InArchiveRecovery,
    InProduction,
}

impl ClusterState {
    fn parse(text: &str) -> Option<ClusterState> {
        Some(match text {
            "starting up" => ClusterState::StartingUp,
            "shut down" => ClusterState::ShutDown,
            "shut down in recovery" => ClusterState::ShutDownInRecovery,
            "shutting down" => ClusterState::ShuttingDown,
            "in crash recovery" => ClusterState::InCrashRecovery,
            "in archive recovery" => ClusterState::InArchiveRecovery,
            "in production" => ClusterState::InProduction,
            _ => return None,
        })
    }

    /// Stopped cleanly, as a primary (`shut down`) or a replica (`shut down in recovery`).
    /// Anything else on a stopped server means it crashed or was killed: pg_rewind then runs
    /// crash recovery first, and a promotion decision must not trust its checkpoint alone.
    pub fn is_clean_shutdown(self) -> bool {
        matches!(self, ClusterState::ShutDown | ClusterState::ShutDownInRecovery)
    }
}

impl fmt::Display for ClusterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClusterState::StartingUp => "starting up",
            ClusterState::ShutDown => "shut down",
            ClusterState::ShutDownInRecovery => "shut down in recovery",
            ClusterState::ShuttingDown => "shutting down",
            ClusterState::InCrashRecovery => "in crash recovery",
            ClusterState::InArchiveRecovery => "in archive recovery",
            ClusterState::InProduction => "in production",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlData {
    pub system_identifier: u64,
    pub state: ClusterState,
    /// `Latest checkpoint's TimeLineID`.
    pub timeline: Timeline,
    /// `Latest checkpoint location`: after a clean shutdown, the shutdown checkpoint, i.e. the
    /// end of everything this server wrote (DESIGN.md, lease rule 6).
    pub checkpoint_lsn: Lsn,
    pub redo_lsn: Lsn,
    /// `Minimum recovery ending location` and its timeline: how far a stopped replica must
    /// replay before it is consistent (zero on a primary).
    pub min_recovery_end_lsn: Lsn,
    pub min_recovery_end_timeline: Timeline,
    /// `Data page checksum version` is not 0.
    pub data_checksums: bool,
    /// `wal_log_hints setting`; pg_rewind needs this or checksums.
    pub wal_log_hints: bool,
}

impl ControlData {
    /// Parses `pg_controldata` output (labels in English: run it with `LC_ALL=C`).
    pub fn parse(text: &str) -> Result<ControlData, String> {
        let field = |label: &str| -> Result<&str, String> {
            text.lines()
                .find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    (key.trim() == label).then(|| value.trim())
                })
                .ok_or_else(|| format!("no {label:?} line"))
        };
        let number = |label: &str| -> Result<u64, String> {
            let value = field(label)?;
            value.parse().map_err(|_| format!("{label} is {value:?}, not a number"))
        };
        let lsn = |label: &str| -> Result<Lsn, String> {
            let value = field(label)?;
            value.parse().map_err(|_| format!("{label} is {value:?}, not an LSN"))
        };
        let timeline = |label: &str| -> Result<Timeline, String> {
            let n = number(label)?;
            u32::try_from(n).map(Timeline).map_err(|_| format!("{label} {n} is out of range"))
        };
        let state_text = field("Database cluster state")?;
        Ok(ControlData {
            system_identifier: number("Database system identifier")?,
            state: ClusterState::parse(state_text)
                .ok_or_else(|| format!("unknown Database cluster state {state_text:?}"))?,
            timeline: timeline("Latest checkpoint's TimeLineID")?,
            checkpoint_lsn: lsn("Latest checkpoint location")?,
            redo_lsn: lsn("Latest checkpoint's REDO location")?,
            min_recovery_end_lsn: lsn("Minimum recovery ending location")?,
            min_recovery_end_timeline: timeline("Min recovery ending loc's timeline")?,
            data_checksums: number("Data page checksum version")? != 0,
            wal_log_hints: field("wal_log_hints setting")? == "on",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real PostgreSQL 15 output (trimmed of fields pgha does not read).
    const PRIMARY: &str = "\
pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7712179787012557424
Database cluster state:               shut down
pg_control last modified:             Wed Nov 25 18:36:24 2026
Latest checkpoint location:           0/1741890
Latest checkpoint's REDO location:    0/1741858
Latest checkpoint's REDO WAL file:    000000010000000000000001
Latest checkpoint's TimeLineID:       1
Latest checkpoint's PrevTimeLineID:   1
Latest checkpoint's oldestCommitTsXid:0
Minimum recovery ending location:     0/0
Min recovery ending loc's timeline:   0
wal_level setting:                    replica
wal_log_hints setting:                off
Data page checksum version:           1
Mock authentication nonce:            f5b5be16aedd8f49669e8d6d799d0ebb36fef40003cd57183302979e2034490e
";

    #[test]
    fn parses_a_clean_primary() {
        let c = ControlData::parse(PRIMARY).unwrap();
        assert_eq!(
            c,
            ControlData {
                system_identifier: 7712179787012557424,
                state: ClusterState::ShutDown,
                timeline: Timeline(1),
                checkpoint_lsn: "0/1741890".parse().unwrap(),
                redo_lsn: "0/1741858".parse().unwrap(),
                min_recovery_end_lsn: Lsn(0),
                min_recovery_end_timeline: Timeline(0),
                data_checksums: true,
                wal_log_hints: false,
            }
        );
        assert!(c.state.is_clean_shutdown());
    }

    #[test]
    fn every_state_round_trips() {
        for text in [
            "starting up",
            "shut down",
            "shut down in recovery",
            "shutting down",
            "in crash recovery",
            "in archive recovery",
            "in production",
        ] {
            let state = ClusterState::parse(text).unwrap();
            assert_eq!(state.to_string(), text);
            assert_eq!(state.is_clean_shutdown(), text.starts_with("shut down"), "{text}");
        }
    }

    #[test]
    fn missing_or_bad_fields_are_named() {
        let cases = [
            (
                "Database cluster state:               shut down",
                "Database cluster state:  en panne",
                "unknown",
            ),
            ("Latest checkpoint's TimeLineID:       1", "", "TimeLineID"),
            (
                "Latest checkpoint location:           0/1741890",
                "Latest checkpoint location: x",
                "not an LSN",
            ),
            ("Data page checksum version:           1", "Data page checksum version: one", "not a number"),
        ];
        for (line, replacement, want) in cases {
            let text = PRIMARY.replace(line, replacement);
            let err = ControlData::parse(&text).unwrap_err();
            assert!(err.contains(want), "{line}: {err}");
        }
    }
}
