//! The local Postgres as the HA loop owns it: the data directory, the postmaster child (at most
//! one, started and stopped only here), the files pgha writes before every start, and the
//! credentials pgha uses. Input: the node's config, the tools (one spawner for the process),
//! and per call the applied cluster state; output: the [`LocalPg`] of this iteration (gather)
//! and the Postgres half of each action (act). The mapping from `pg_controldata` and the probe
//! to [`LocalPg`] is pure ([`from_controldata`], [`from_probe`]) and table-tested. It never
//! decides what to do, and it never starts a second postmaster while one of its own exists.

use super::observe::{LocalPg, PgRole};
use crate::clock;
use crate::config::file::{Credentials, LocalConfig};
use crate::dcs::state::ClusterState;
use crate::pg::conf::{ConfInput, Follow, Parameters, TlsFiles};
use crate::pg::conninfo::{Conninfo, Endpoint, StreamSource};
use crate::pg::controldata::{ClusterState as DbState, ControlData};
use crate::pg::ctl::PgTools;
use crate::pg::datadir::{self, DataDir};
use crate::pg::hba::{render_pg_hba, HbaRoles};
use crate::pg::probe::PgProbe;
use crate::pg::process::{Postmaster, StopMode, Stopped};
use crate::pg::session::{LocalConnect, Session};
use crate::pg::PgError;
use crate::types::{Lsn, MemberName};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Bound of every SQL call on the local Postgres (connect, probe, promote, roles, slots).
pub const SQL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound of `pg_controldata`.
const CONTROLDATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Keys of the generated role secrets in the replicated state.
pub const SECRET_SUPERUSER: &str = "superuser";
pub const SECRET_REPLICATION: &str = "replication";
pub const SECRET_REWIND: &str = "rewind";

/// Maps a stopped data directory's control file to [`LocalPg::Stopped`]. `was_primary`: the
/// last run was a primary (`in production` after a crash, `shut down` after a clean stop).
/// `base_backup`: the directory holds a `backup_label`, i.e. it is a clone that never ran: its
/// control file was copied from a running primary and says `in production`, but it is no
/// former primary.
pub fn from_controldata(cd: &ControlData, base_backup: bool) -> LocalPg {
    LocalPg::Stopped {
        system_identifier: cd.system_identifier.to_string(),
        timeline: cd.timeline,
        checkpoint: cd.checkpoint_lsn,
        // "in crash recovery": a primary's directory killed while it recovered (a standby's
        // would say "in archive recovery").
        was_primary: !base_backup
            && matches!(cd.state, DbState::InProduction | DbState::ShutDown | DbState::InCrashRecovery),
        clean: cd.state.is_clean_shutdown(),
        replayed: (cd.min_recovery_end_lsn.0 > 0)
            .then_some((cd.min_recovery_end_timeline, cd.min_recovery_end_lsn)),
    }
}

/// Maps a probe of a running Postgres to [`LocalPg::Running`]. `configured` is the upstream
/// pgha wrote into `primary_conninfo` (what the standby will stream from); without one the
/// member is found from the WAL receiver's sender address among the members' `pg_address`.
pub fn from_probe(probe: &PgProbe, configured: Option<&MemberName>, cluster: &ClusterState) -> LocalPg {
    let role = if probe.in_recovery { PgRole::Replica } else { PgRole::Primary };
    let lsn = if probe.in_recovery {
        probe.replay_lsn.or(probe.receive_lsn).unwrap_or(Lsn(0))
    } else {
        probe.wal_lsn.unwrap_or(Lsn(0))
    };
    let receiver = probe.wal_receiver.as_ref().filter(|_| probe.in_recovery);
    let from_receiver = receiver.and_then(|r| {
        let (host, port) = (r.sender_host.as_deref()?, r.sender_port?);
        cluster
            .members
            .values()
            .find(|m| {
                m.pg_address
                    .as_deref()
                    .and_then(Endpoint::parse)
                    .is_some_and(|e| e.host == host && e.port == port)
            })
            .map(|m| m.name.clone())
    });
    let upstream = match role {
        PgRole::Primary => None,
        PgRole::Replica => configured.cloned().or(from_receiver),
    };
    LocalPg::Running {
        role,
        system_identifier: probe.system_identifier.to_string(),
        timeline: probe.timeline,
        lsn,
        upstream,
        streaming: receiver.is_some_and(|r| r.status == "streaming"),
    }
}

/// Which role's credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleOf {
    Superuser,
    Replication,
    Rewind,
}

impl RoleOf {
    pub fn secret_key(self) -> &'static str {
        match self {
            RoleOf::Superuser => SECRET_SUPERUSER,
            RoleOf::Replication => SECRET_REPLICATION,
            RoleOf::Rewind => SECRET_REWIND,
        }
    }
}

/// The local Postgres: files, child process and credentials. See the module comment.
pub struct LocalPostgres {
    me: MemberName,
    scope: String,
    tools: PgTools,
    data: DataDir,
    socket_dir: PathBuf,
    log_file: PathBuf,
    listen: SocketAddr,
    tls: (PathBuf, PathBuf, PathBuf),
    auth: crate::config::file::Authentication,
    local_parameters: BTreeMap<String, serde_json::Value>,
    /// Secrets generated at bootstrap, kept until `CompleteInitialize` records them.
    pub pending_secrets: BTreeMap<String, String>,
    postmaster: Option<Postmaster>,
    /// The member the running postmaster was told to stream from (`None`: primary).
    upstream: Option<MemberName>,
    /// The newest timeline this standby's walreceiver has flushed WAL of since it started. When
    /// the walreceiver stops (its primary died), the control file still names an older one
    /// until the next restartpoint, and the replica would look further behind than it is.
    seen_timeline: Option<crate::types::Timeline>,
    /// `synchronous_standby_names` for the next write of the files (`None`: asynchronous).
    sync_names: Option<String>,
    /// The configuration files as last written (`pgha.conf`, `pg_hba.conf`), to tell when the
    /// replicated config changed them.
    written: Option<(String, String)>,
}

impl LocalPostgres {
    pub fn new(cfg: &LocalConfig, tools: PgTools) -> Result<LocalPostgres, PgError> {
        let data = DataDir::new(cfg.postgresql.data_dir.clone(), tools.user().clone());
        let listen: SocketAddr = cfg.postgresql.listen.parse().map_err(|_| PgError::Io {
            action: "postgresql.listen must be ip:port, not",
            path: PathBuf::from(&cfg.postgresql.listen),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
        Ok(LocalPostgres {
            me: cfg.name.clone(),
            scope: cfg.scope.clone(),
            socket_dir: data.default_socket_dir(),
            log_file: data.default_log_file(),
            data,
            tools,
            listen,
            tls: (cfg.tls.certfile.clone(), cfg.tls.keyfile.clone(), cfg.tls.cafile.clone()),
            auth: cfg.postgresql.authentication.clone(),
            local_parameters: cfg.postgresql.parameters.clone(),
            pending_secrets: BTreeMap::new(),
            postmaster: None,
            upstream: None,
            written: None,
            sync_names: None,
            seen_timeline: None,
        })
    }

    pub fn tools(&self) -> &PgTools {
        &self.tools
    }

    pub fn data(&self) -> &DataDir {
        &self.data
    }

    pub fn socket_dir(&self) -> &std::path::Path {
        &self.socket_dir
    }

    pub fn port(&self) -> u16 {
        self.listen.port()
    }

    /// The postmaster's pid (= its process group), while one of ours runs.
    pub fn pid(&self) -> Option<u32> {
        self.postmaster.as_ref().map(Postmaster::pid)
    }

    /// Whether our postmaster was started (or promoted) to be a primary.
    pub fn runs_as_primary(&self) -> bool {
        self.postmaster.is_some() && self.upstream.is_none()
    }

    pub fn has_configured_password(&self, role: RoleOf) -> bool {
        self.configured(role).password.is_some()
    }

    fn configured(&self, role: RoleOf) -> &Credentials {
        match role {
            RoleOf::Superuser => &self.auth.superuser,
            RoleOf::Replication => &self.auth.replication,
            RoleOf::Rewind => &self.auth.rewind,
        }
    }

    /// A role's credentials: the password from the config file, else the one in the
    /// replicated state, else one generated by this node's bootstrap.
    pub fn credentials(&self, role: RoleOf, cluster: Option<&ClusterState>) -> Credentials {
        let configured = self.configured(role);
        let key = role.secret_key();
        let password = configured
            .password
            .clone()
            .or_else(|| cluster.and_then(|c| c.secrets.get(key).cloned()))
            .or_else(|| self.pending_secrets.get(key).cloned());
        Credentials { username: configured.username.clone(), password }
    }

    pub fn connect(&self, cluster: Option<&ClusterState>) -> LocalConnect {
        let su = self.credentials(RoleOf::Superuser, cluster);
        LocalConnect::new(&self.socket_dir, self.listen.port(), &su, SQL_TIMEOUT)
    }

    pub async fn session(&self, cluster: Option<&ClusterState>) -> Result<Session, PgError> {
        self.connect(cluster).connect().await
    }

    /// Gather: what the local Postgres is now, and the probe when it answers. A postmaster
    /// that exited by itself is reaped here (its backends confirmed gone) and reported.
    pub async fn observe(&mut self, cluster: &ClusterState) -> (LocalPg, Option<PgProbe>) {
        if let Some(pm) = self.postmaster.as_mut() {
            match pm.try_wait() {
                Ok(None) => {
                    return match self.session(Some(cluster)).await {
                        Ok(session) => match session.probe().await {
                            Ok(mut p) => {
                                self.remember_timeline(&mut p);
                                (from_probe(&p, self.upstream.as_ref(), cluster), Some(p))
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "Postgres does not answer the probe yet");
                                (LocalPg::Starting, None)
                            }
                        },
                        Err(e) if self.data.is_standby() => {
                            tracing::debug!(error = %e, "the standby does not accept connections yet");
                            (LocalPg::Recovering { upstream: self.upstream.clone() }, None)
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "Postgres does not accept connections yet");
                            (LocalPg::Starting, None)
                        }
                    };
                }
                Ok(Some(status)) => {
                    tracing::warn!(%status, log = %pm.log_tail(), "Postgres exited");
                    // Make sure no backend of its group survives before calling it stopped.
                    if let Err(e) = pm.kill().await {
                        tracing::error!(error = %e, "Postgres exited but its processes remain");
                        return (LocalPg::Starting, None);
                    }
                    self.postmaster = None;
                    self.upstream = None;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot check the postmaster");
                    return (LocalPg::Starting, None);
                }
            }
        }
        match self.data.is_absent_or_empty() {
            Ok(true) => return (LocalPg::Absent, None),
            Ok(false) if !self.data.is_initialized() => return (LocalPg::Absent, None),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot read the data directory");
                return (LocalPg::Starting, None);
            }
        }
        match self.tools.controldata(self.data.path(), CONTROLDATA_TIMEOUT).await {
            Ok(cd) => (from_controldata(&cd, self.data.file("backup_label").exists()), None),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the control file");
                (LocalPg::Starting, None)
            }
        }
    }

    /// Removes what an interrupted initdb or clone left in a data directory that was never
    /// initialized (no `PG_VERSION`). An initialized data directory is never touched.
    pub fn clear_partial(&self) -> Result<(), PgError> {
        if self.data.is_initialized() || self.data.is_absent_or_empty()? {
            return Ok(());
        }
        let path = self.data.path();
        tracing::warn!(data_dir = %path.display(), "removing a partial data directory");
        std::fs::remove_dir_all(path).map_err(PgError::io("cannot remove the partial data directory", path))
    }

    /// The replication (or rewind) connection to `upstream`'s Postgres.
    pub fn source(
        &self,
        upstream: &MemberName,
        role: RoleOf,
        cluster: &ClusterState,
    ) -> Result<Conninfo, String> {
        let member = cluster.members.get(upstream).ok_or_else(|| format!("{upstream} is not a member"))?;
        let address =
            member.pg_address.as_deref().ok_or_else(|| format!("{upstream} has no Postgres address"))?;
        let endpoint =
            Endpoint::parse(address).ok_or_else(|| format!("{upstream}: bad pg_address {address}"))?;
        let creds = self.credentials(role, Some(cluster));
        let source = StreamSource {
            primary: &endpoint,
            user: &creds.username,
            password: creds.password.as_deref(),
            member: &self.me,
            ca_file: &self.tls.2,
        };
        Ok(match role {
            RoleOf::Rewind => source.rewind_source(),
            _ => source.primary_conninfo(),
        })
    }

    /// Writes pgha.conf, pg_hba.conf and `standby.signal` for a primary (`follow: None`) or a
    /// standby of `follow`.
    pub fn write_config(
        &mut self,
        cluster: &ClusterState,
        follow: Option<&MemberName>,
    ) -> Result<(), String> {
        self.write_config_as(cluster, follow, follow.is_some())
    }

    /// `standby` without `follow`: a standby of nobody (see `start_standby_of_nobody`).
    fn write_config_as(
        &mut self,
        cluster: &ClusterState,
        follow: Option<&MemberName>,
        standby: bool,
    ) -> Result<(), String> {
        let files = self.render_config(cluster, follow)?;
        self.data.write_config(&files.0, &files.1).map_err(|e| e.to_string())?;
        self.written = Some(files);
        self.data.set_standby(standby).map_err(|e| e.to_string())
    }

    /// After a change of the replicated config (`postgresql.parameters`, `pg_hba`, use_slots,
    /// credentials): rewrites the running server's files and reloads it. Parameters that need
    /// a restart then show in `pg_settings.pending_restart` (the member's "pending restart").
    /// `force`: reload even when the files did not change (`POST /reload`). Returns whether
    /// it reloaded.
    pub async fn refresh_config(&mut self, cluster: &ClusterState, force: bool) -> Result<bool, String> {
        if self.postmaster.is_none() {
            return Ok(false);
        }
        let upstream = self.upstream.clone();
        let files = self.render_config(cluster, upstream.as_ref())?;
        if !force && self.written.as_ref() == Some(&files) {
            return Ok(false);
        }
        self.data.write_config(&files.0, &files.1).map_err(|e| e.to_string())?;
        self.written = Some(files);
        self.reload(cluster).await?;
        Ok(true)
    }

    /// The text of `pgha.conf` and `pg_hba.conf` for a primary or a standby of `follow`.
    fn render_config(
        &self,
        cluster: &ClusterState,
        follow: Option<&MemberName>,
    ) -> Result<(String, String), String> {
        let follow = match follow {
            None => None,
            Some(up) => Some(Follow {
                primary_conninfo: self.source(up, RoleOf::Replication, cluster)?,
                slot: cluster.config.postgresql.use_slots.then(|| crate::pg::slots::slot_name(&self.me)),
            }),
        };
        let hba_file = self.data.file(datadir::PG_HBA_CONF);
        let params = Parameters::build(&ConfInput {
            cluster_name: &self.scope,
            listen: self.listen,
            socket_dir: &self.socket_dir,
            hba_file: &hba_file,
            tls: TlsFiles { cert: &self.tls.0, key: &self.tls.1, ca: &self.tls.2 },
            follow: follow.as_ref(),
            synchronous_standby_names: self.sync_names.as_deref(),
            dynamic: &cluster.config.postgresql.parameters,
            local: &self.local_parameters,
        })
        .map_err(|e| e.to_string())?;
        let roles = HbaRoles {
            superuser: &self.auth.superuser.username,
            replication: &self.auth.replication.username,
            rewind: &self.auth.rewind.username,
        };
        let hba = render_pg_hba(roles, &cluster.config.postgresql.pg_hba).map_err(|e| e.to_string())?;
        Ok((params.render(), hba))
    }

    /// Starts the postmaster without waiting: the next observations see `Starting`, then
    /// `Running` (a primary in crash recovery keeps renewing its lease meanwhile).
    pub async fn start(&mut self, cluster: &ClusterState, follow: Option<&MemberName>) -> Result<(), String> {
        self.start_as(cluster, follow, follow.is_some()).await
    }

    async fn start_as(
        &mut self,
        cluster: &ClusterState,
        follow: Option<&MemberName>,
        standby: bool,
    ) -> Result<(), String> {
        if self.postmaster.is_some() {
            return Err("a postmaster of ours is already running".into());
        }
        self.write_config_as(cluster, follow, standby)?;
        datadir::create_owned_dir(&self.socket_dir, self.tools.user(), 0o700).map_err(|e| e.to_string())?;
        let connect = self.connect(Some(cluster));
        let pm = Postmaster::spawn(&self.tools, self.data.path(), &self.log_file, &connect)
            .await
            .map_err(|e| e.to_string())?;
        self.postmaster = Some(pm);
        self.seen_timeline = None;
        self.upstream = follow.cloned();
        Ok(())
    }

    /// Starts a standby's data directory as a standby with no upstream (the lease holder's,
    /// to be promoted onto a new timeline).
    pub async fn start_standby_of_nobody(&mut self, cluster: &ClusterState) -> Result<(), String> {
        self.start_as(cluster, None, true).await
    }

    /// `pg_reload_conf()` on the running server.
    /// A standby still recovering to consistency accepts no connection: it is told by
    /// SIGHUP to the postmaster instead (what `pg_reload_conf()` does).
    async fn reload(&self, cluster: &ClusterState) -> Result<(), String> {
        match self.session(Some(cluster)).await {
            Ok(session) => session.reload().await.map_err(|e| e.to_string()).map(drop),
            Err(e) => {
                let Some(pid) = self.pid() else { return Err(e.to_string()) };
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGHUP,
                )
                .map_err(|s| format!("cannot connect ({e}) nor signal the postmaster {pid}: {s}"))
            }
        }
    }

    /// Points the running standby at `upstream`: `primary_conninfo` and `primary_slot_name`
    /// are reloadable since PostgreSQL 13, so a reload restarts the WAL receiver.
    pub async fn follow(&mut self, cluster: &ClusterState, upstream: &MemberName) -> Result<(), String> {
        self.write_config(cluster, Some(upstream))?;
        self.reload(cluster).await?;
        self.upstream = Some(upstream.clone());
        Ok(())
    }

    /// Quorum mode after an expiry: stops the running standby's WAL receiver (an empty
    /// `primary_conninfo`, reloaded) and returns how far its WAL goes once no receiver runs:
    /// from then on it cannot grow until pgha points the standby somewhere again.
    pub async fn stop_receiving(&mut self, cluster: &ClusterState, timeout: Duration) -> Result<Lsn, String> {
        self.write_config_as(cluster, None, true)?;
        self.reload(cluster).await?;
        self.upstream = None;
        let start = clock::boot_now();
        loop {
            let session = self.session(Some(cluster)).await.map_err(|e| e.to_string())?;
            let probe = session.probe().await.map_err(|e| e.to_string())?;
            if !probe.in_recovery {
                return Err("Postgres is no longer a standby".into());
            }
            if probe.wal_receiver.is_none() {
                return probe.wal_position().ok_or_else(|| "the standby reports no WAL position".to_string());
            }
            if clock::boot_now().saturating_since(start) > timeout {
                return Err(format!(
                    "the WAL receiver still runs {timeout:?} after primary_conninfo was cleared"
                ));
            }
            clock::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What Postgres waits for before it acknowledges a commit, from the next write of the
    /// configuration files on (`refresh_config`, a start).
    pub fn set_sync_names(&mut self, names: Option<String>) {
        self.sync_names = names;
    }

    /// After `pg_promote()`: the postmaster now runs as a primary (its files still say
    /// standby: the next refresh rewrites them).
    pub fn promoted(&mut self) {
        self.upstream = None;
    }

    /// On a standby: the probe's timeline is at least the newest one its walreceiver flushed.
    fn remember_timeline(&mut self, p: &mut PgProbe) {
        if !p.in_recovery {
            self.seen_timeline = None;
            return;
        }
        let tl = self.seen_timeline.map_or(p.timeline, |seen| seen.max(p.timeline));
        self.seen_timeline = Some(tl);
        p.timeline = tl;
    }

    /// The member the running standby streams from.
    pub fn upstream(&self) -> Option<&MemberName> {
        self.upstream.as_ref()
    }

    /// Stops our postmaster; returns only once no process of it remains (`Ok(None)`: none ran).
    pub async fn stop(&mut self, mode: StopMode, timeout: Duration) -> Result<Option<Stopped>, PgError> {
        let Some(pm) = self.postmaster.as_mut() else { return Ok(None) };
        let stopped = pm.stop(mode, timeout).await?;
        self.postmaster = None;
        self.upstream = None;
        Ok(Some(stopped))
    }

    /// The shutdown checkpoint of a primary's data directory stopped cleanly: the end of
    /// everything it wrote. `None` after any other stop (killed, stopped while starting or in
    /// crash recovery): its last checkpoint is then somewhere before the end of its WAL, and a
    /// release carrying it would let a standby short of the end take over (found by the
    /// simulation).
    pub async fn checkpoint(&self) -> Option<Lsn> {
        let cd = self.tools.controldata(self.data.path(), CONTROLDATA_TIMEOUT).await.ok()?;
        (cd.state == DbState::ShutDown).then_some(cd.checkpoint_lsn)
    }
}

/// A strong random password (24 bytes from the OS, URL-safe base64).
pub fn generate_password() -> String {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut b = [0u8; 24];
    ring::rand::SystemRandom::new().fill(&mut b).expect("the OS random source works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}
