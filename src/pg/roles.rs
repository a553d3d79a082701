//! The three Postgres roles pgha uses (DESIGN.md, "Postgres management"): its superuser, the
//! replication role that clones and streams, and the rewind role with exactly the grants
//! pg_rewind needs. Input: a [`Session`] on the primary, a role name, its password and its
//! [`RoleKind`]; output: the role exists with those attributes and that password, however often
//! it is called. The password is sent once, in a statement that is kept out of the server log
//! and out of pg_stat_statements, and is hashed by Postgres (scram-sha-256); it never reaches a
//! log line of pgha either.

use crate::pg::error::PgError;
use crate::pg::session::Session;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleKind {
    Superuser,
    Replication,
    Rewind,
}

impl RoleKind {
    fn attributes(self) -> &'static str {
        match self {
            RoleKind::Superuser => "LOGIN SUPERUSER",
            RoleKind::Replication => "LOGIN REPLICATION NOSUPERUSER",
            RoleKind::Rewind => "LOGIN NOSUPERUSER",
        }
    }
}

/// What pg_rewind calls on the source as a non-superuser (PostgreSQL docs, pg_rewind "Notes").
const REWIND_FUNCTIONS: &[&str] = &[
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
];

/// Keeps the statement carrying the password out of logs (`log_statement`, slow-query and
/// error-statement logging) and out of pg_stat_statements. Sent as a query of its own before
/// that statement, at session level: Postgres decides whether to log a query string before it
/// runs any statement in it, so a `SET LOCAL` in the same string would come too late. They
/// only affect pgha's own connection.
const QUIET: &str = "SET log_statement = 'none';
SET log_min_duration_statement = -1;
SET log_min_error_statement = 'panic';
SET pg_stat_statements.track_utility = off";

/// Role changes commit without waiting for a synchronous standby that may not exist yet.
const LOCAL_COMMIT: &str = "SET LOCAL synchronous_commit = 'local';\n";

impl Session {
    /// Creates the role, or updates its attributes and password when it exists. `password:
    /// None` leaves an existing password alone (and creates a role that cannot log in with
    /// one). Run on the primary.
    pub async fn create_role(
        &self,
        name: &str,
        password: Option<&str>,
        kind: RoleKind,
    ) -> Result<(), PgError> {
        let exists = self
            .timed(
                "looking up a role",
                self.client().query_opt("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", &[&name]),
            )
            .await?
            .is_some();
        self.timed("quieting the log", self.client().batch_execute(QUIET)).await?;
        let sql = role_sql(name, password, kind, exists);
        self.timed("creating a role", self.client().batch_execute(&sql)).await
    }
}

/// The statements that make the role so (pure, for the table test).
fn role_sql(name: &str, password: Option<&str>, kind: RoleKind, exists: bool) -> String {
    let ident = quote_ident(name);
    let verb = if exists { "ALTER" } else { "CREATE" };
    let mut sql = String::from(LOCAL_COMMIT);
    sql.push_str(&format!("{verb} ROLE {ident} WITH {}", kind.attributes()));
    if let Some(password) = password {
        sql.push_str(&format!(" PASSWORD {}", quote_literal(password)));
    }
    sql.push_str(";\n");
    if kind == RoleKind::Rewind {
        for function in REWIND_FUNCTIONS {
            sql.push_str(&format!("GRANT EXECUTE ON FUNCTION {function} TO {ident};\n"));
        }
    }
    sql
}

/// A SQL identifier in double quotes (`"` doubled), so any role name is taken literally.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL string constant in the `E'...'` form, whose meaning does not depend on
/// `standard_conforming_strings`: `\` and `'` are escaped.
pub fn quote_literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_takes_names_and_secrets_literally() {
        assert_eq!(quote_ident("replicator"), "\"replicator\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("pw"), "E'pw'");
        assert_eq!(quote_literal(r"it's\x"), r"E'it''s\\x'");
    }

    #[test]
    fn statements_per_kind() {
        let sql = role_sql("replicator", Some("s'cret"), RoleKind::Replication, false);
        assert!(sql.starts_with(LOCAL_COMMIT));
        assert!(sql.ends_with(
            "CREATE ROLE \"replicator\" WITH LOGIN REPLICATION NOSUPERUSER PASSWORD E's''cret';\n"
        ));
        let sql = role_sql("postgres", None, RoleKind::Superuser, true);
        assert!(sql.ends_with("ALTER ROLE \"postgres\" WITH LOGIN SUPERUSER;\n"), "{sql}");
        let sql = role_sql("rewind_user", Some("x"), RoleKind::Rewind, true);
        assert_eq!(sql.matches("GRANT EXECUTE ON FUNCTION").count(), 4, "{sql}");
        assert!(sql.contains("pg_read_binary_file(text, bigint, bigint, boolean) TO \"rewind_user\""));
    }
}
