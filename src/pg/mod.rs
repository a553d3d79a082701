//! Everything that touches the local Postgres, as building blocks the HA loop calls (DESIGN.md,
//! "Postgres management"); none of them decides *when* to act. Pure parts: `conf` (pgha.conf),
//! `hba` (pg_hba.conf), `conninfo` (libpq strings), `controldata` (parsing), slot names in
//! `slots`. Edges: `bin` (where the programs are), `datadir` (files in the data directory),
//! `spawner` + `child` (every child process, from one long-lived thread), `ctl` (initdb,
//! pg_basebackup, pg_rewind, pg_controldata), `process` (the postmaster), `leftover` (a
//! postmaster an earlier pgha left), `session` + `probe` + `roles` + `slots` (SQL over pgha's
//! unix socket). Every call into Postgres or a child process has a deadline.

pub mod bin;
pub mod child;
pub mod conf;
pub mod conninfo;
pub mod controldata;
pub mod ctl;
pub mod datadir;
pub mod error;
pub mod hba;
pub mod leftover;
pub mod probe;
pub mod process;
pub mod roles;
pub mod session;
pub mod slots;
pub mod spawner;
#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;

pub use error::PgError;
