//! Physical replication slots for members (`use_slots`, DESIGN.md "Postgres management"): the
//! slot a member streams through keeps the WAL it has not received yet, so a replica that was
//! away can catch up without a re-clone. Input: a [`Session`] and the slot names wanted; output:
//! the slots created or dropped. A member's slot name is derived from its name by a pure
//! function. Only pgha's kind of slot is touched: physical and permanent; logical slots and
//! temporary ones (pg_basebackup's) belong to others, and a slot in use is never dropped.

use crate::pg::error::PgError;
use crate::pg::session::Session;
use crate::types::MemberName;

/// A member's slot: its name in lowercase with `-` and `.` as `_` (slot names allow only
/// `[a-z0-9_]`; member names are `[A-Za-z0-9_.-]{1,63}`, so the result always fits). Names
/// differing only in case or in `-`/`.`/`_` share a slot: do not give members such names.
pub fn slot_name(member: &MemberName) -> String {
    member.as_str().chars().map(|c| if c == '-' || c == '.' { '_' } else { c.to_ascii_lowercase() }).collect()
}

/// Whether Postgres accepts `name` as a replication slot name.
pub fn is_valid_slot_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 63 && name.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

impl Session {
    /// Creates the physical slots in `names` that do not exist; returns those it created.
    /// They reserve WAL at once, so a member that is being cloned or restarted finds the WAL
    /// it needs when it connects.
    pub async fn ensure_physical_slots(&self, names: &[String]) -> Result<Vec<String>, PgError> {
        if let Some(bad) = names.iter().find(|n| !is_valid_slot_name(n)) {
            return Err(PgError::Invalid {
                what: "replication slot name",
                problem: format!("{bad:?} is not 1 to 63 characters from a-z 0-9 _"),
            });
        }
        let existing = self.slot_names("SELECT slot_name::text FROM pg_catalog.pg_replication_slots").await?;
        let mut created = Vec::new();
        for name in names.iter().filter(|n| !existing.contains(n)) {
            let sql = "SELECT 1 FROM pg_catalog.pg_create_physical_replication_slot($1, true)";
            match self.timed("creating a replication slot", self.client().query_one(sql, &[name])).await {
                Ok(_) => created.push(name.clone()),
                // Created meanwhile (42710 duplicate_object): what we wanted.
                Err(e) if e.sqlstate() == Some("42710") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(created)
    }

    /// Drops pgha's slots (physical, permanent, not in use) whose names are not in `keep`;
    /// returns those it dropped. A slot in use stays until its walsender is gone (the next
    /// call drops it).
    pub async fn drop_slots_except(&self, keep: &[String]) -> Result<Vec<String>, PgError> {
        let idle = self
            .slot_names(
                "SELECT slot_name::text FROM pg_catalog.pg_replication_slots
                 WHERE slot_type = 'physical' AND NOT temporary AND NOT active ORDER BY slot_name",
            )
            .await?;
        let mut dropped = Vec::new();
        for name in idle.into_iter().filter(|n| !keep.contains(n)) {
            let sql = "SELECT 1 FROM pg_catalog.pg_drop_replication_slot($1)";
            match self.timed("dropping a replication slot", self.client().query_one(sql, &[&name])).await {
                Ok(_) => dropped.push(name),
                // Gone meanwhile (42704 undefined_object) or just became active (55006).
                Err(e) if matches!(e.sqlstate(), Some("42704" | "55006")) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(dropped)
    }

    async fn slot_names(&self, sql: &str) -> Result<Vec<String>, PgError> {
        let rows = self.timed("listing replication slots", self.client().query(sql, &[])).await?;
        rows.iter().map(|r| r.try_get(0).map_err(PgError::query("listing replication slots"))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_map_to_valid_slot_names() {
        let cases = [("node1", "node1"), ("Node-2.eu", "node_2_eu"), ("a_b", "a_b")];
        for (member, slot) in cases {
            let got = slot_name(&MemberName::new(member).unwrap());
            assert_eq!(got, slot);
            assert!(is_valid_slot_name(&got));
        }
        assert!(is_valid_slot_name(&slot_name(&MemberName::new("X".repeat(63)).unwrap())));
        for bad in ["", "Upper", "dash-ed", &"a".repeat(64)] {
            assert!(!is_valid_slot_name(bad), "{bad}");
        }
    }
}
