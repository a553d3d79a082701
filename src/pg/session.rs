//! [`Session`]: pgha's connection to its own Postgres, as the superuser over pgha's unix
//! socket (never TCP: it works whatever `listen_addresses` and TLS say, and no network peer can
//! be mistaken for the local server). Input: the socket directory, port, superuser credentials
//! and a per-call timeout ([`LocalConnect`]); output: a session whose every call finishes
//! within that timeout (STYLE.md, "everything has a bound") or fails with the message Postgres
//! sent (`as_db_error()`, STACK.md item 9). The probe, roles and slots add their calls in their
//! own files. A call that times out is cancelled on the server; after any error the caller may
//! drop the session and connect anew. It never retries by itself: the HA loop's next
//! observation is the retry. It always names the role (without one tokio-postgres asks libc's
//! NSS for the OS user name, which the static binary must never do: STACK.md item 2) and never
//! resolves a host name.

use crate::config::file::Credentials;
use crate::pg::error::{describe, sqlstate_of, PgError};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

/// How to reach the local Postgres.
#[derive(Clone)]
pub struct LocalConnect {
    socket_dir: PathBuf,
    port: u16,
    user: String,
    password: Option<String>,
    timeout: Duration,
}

impl fmt::Debug for LocalConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalConnect")
            .field("socket", &self.socket_path())
            .field("user", &self.user)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl LocalConnect {
    /// `timeout` bounds the connection and then every call on the session.
    pub fn new(socket_dir: &Path, port: u16, credentials: &Credentials, timeout: Duration) -> LocalConnect {
        LocalConnect {
            socket_dir: socket_dir.to_owned(),
            port,
            user: credentials.username.clone(),
            password: credentials.password.clone(),
            timeout,
        }
    }

    /// The same server as another role.
    pub fn as_user(&self, credentials: &Credentials) -> LocalConnect {
        LocalConnect {
            user: credentials.username.clone(),
            password: credentials.password.clone(),
            ..self.clone()
        }
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket file Postgres creates: `<dir>/.s.PGSQL.<port>`.
    pub fn socket_path(&self) -> PathBuf {
        self.socket_dir.join(format!(".s.PGSQL.{}", self.port))
    }

    /// Opens a session. While Postgres starts, stops or has not reached a consistent state
    /// the error's SQLSTATE is 57P03 (`cannot_connect_now`).
    pub async fn connect(&self) -> Result<Session, PgError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(&self.user)
            .dbname("postgres")
            .application_name("pgha")
            .connect_timeout(self.timeout);
        if let Some(password) = &self.password {
            config.password(password);
        }
        let socket = self.socket_path().display().to_string();
        let connected = tokio::time::timeout(self.timeout, config.connect(NoTls)).await;
        let (client, connection) = match connected {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                return Err(PgError::Connect { socket, code: sqlstate_of(&e), message: describe(&e) })
            }
            Err(_) => {
                let message = format!("no answer within {:?}", self.timeout);
                return Err(PgError::Connect { socket, code: None, message });
            }
        };
        // The connection object does the socket I/O; it ends when the client is dropped.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %describe(&e), "local Postgres connection ended");
            }
        });
        Ok(Session { client, timeout: self.timeout })
    }
}

/// One connection to the local Postgres.
pub struct Session {
    client: Client,
    timeout: Duration,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("closed", &self.client.is_closed()).finish_non_exhaustive()
    }
}

impl Session {
    /// Whether the server closed the connection (then connect anew).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Promotes a replica with `pg_promote(wait => true)`: returns once Postgres accepts writes,
    /// or [`PgError::PromoteTimedOut`] after `wait` (rounded up to whole seconds, Postgres's
    /// unit). Only call it after the lease was acquired (DESIGN.md, lease rule 3). On a primary
    /// Postgres answers 55000 "recovery is not in progress".
    pub async fn promote(&self, wait: Duration) -> Result<(), PgError> {
        let secs = wait.as_secs_f64().ceil().max(1.0) as i32;
        let margin = self.timeout;
        let sql = "SELECT pg_catalog.pg_promote(true, $1)";
        let within = Duration::from_secs(secs as u64) + margin;
        let row = self.timed_for(within, "pg_promote()", self.client.query_one(sql, &[&secs])).await?;
        if row.get::<_, bool>(0) {
            Ok(())
        } else {
            Err(PgError::PromoteTimedOut { wait: Duration::from_secs(secs as u64) })
        }
    }

    /// `CHECKPOINT`: before a clean switchover or pg_rewind, so the data on disk and the
    /// control file are current. Its duration depends on the dirty buffers; `timeout` bounds it.
    pub async fn checkpoint(&self, timeout: Duration) -> Result<(), PgError> {
        self.timed_for(timeout, "CHECKPOINT", self.client.batch_execute("CHECKPOINT")).await
    }

    /// `pg_reload_conf()`: Postgres re-reads its files; parameters that need a restart then
    /// show in the probe's `pending_restart`.
    pub async fn reload(&self) -> Result<(), PgError> {
        self.timed("pg_reload_conf()", self.client.query_one("SELECT pg_catalog.pg_reload_conf()", &[]))
            .await
            .map(drop)
    }

    /// The current value of a parameter, as `SHOW` prints it.
    pub async fn show(&self, parameter: &str) -> Result<String, PgError> {
        let sql = "SELECT pg_catalog.current_setting($1)";
        let row = self.timed("current_setting()", self.client.query_one(sql, &[&parameter])).await?;
        row.try_get(0).map_err(PgError::query("current_setting()"))
    }

    /// Runs SQL statements (simple protocol, no results); for tests and one-off maintenance.
    pub async fn execute(&self, what: &'static str, sql: &str) -> Result<(), PgError> {
        self.timed(what, self.client.batch_execute(sql)).await
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Runs `call` within the session's timeout.
    pub(crate) async fn timed<T>(
        &self,
        what: &'static str,
        call: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, PgError> {
        self.timed_for(self.timeout, what, call).await
    }

    /// Runs `call` within `timeout`; on expiry asks Postgres to cancel it (bounded too), so a
    /// stuck query does not keep a backend busy after pgha gave up on it.
    pub(crate) async fn timed_for<T>(
        &self,
        timeout: Duration,
        what: &'static str,
        call: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, PgError> {
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result.map_err(PgError::query(what)),
            Err(_) => {
                let cancel = self.client.cancel_token();
                let _ = tokio::time::timeout(self.timeout, cancel.cancel_query(NoTls)).await;
                Err(PgError::QueryTimedOut { what, timeout })
            }
        }
    }
}
