//! Test fixtures for the `pg` tests against real PostgreSQL: a [`Lab`] (a temporary directory
//! owned by the service user, a cluster CA with a node certificate, a spawner and the tools)
//! and its [`Node`]s (data directory, socket directory, log, free port, roles), built only
//! from the module's public building blocks, as the HA loop will use them. Every Postgres a
//! node starts is owned by its `Postmaster`, whose drop SIGKILLs the process group, so a
//! failing test leaves nothing running; the lab's directory is removed last.

use crate::config::file::Credentials;
use crate::pg::bin::BinDir;
use crate::pg::conf::{ConfInput, Follow, Parameters, TlsFiles};
use crate::pg::conninfo::{Conninfo, Endpoint, StreamSource};
use crate::pg::ctl::PgTools;
use crate::pg::datadir::{self, DataDir};
use crate::pg::hba::{render_pg_hba, HbaRoles};
use crate::pg::process::{Postmaster, StopMode, Stopped};
use crate::pg::session::{LocalConnect, Session};
use crate::pg::spawner::Spawner;
use crate::sys::user::{current_uid, is_root, ServiceUser};
use crate::tls::pki::{generate_ca, issue_member_cert, Identity};
use crate::types::MemberName;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub const SCOPE: &str = "pgtest";
pub const START: Duration = Duration::from_secs(30);
pub const TOOL: Duration = Duration::from_secs(60);
pub const STOP: Duration = Duration::from_secs(20);
/// The per-call bound of sessions.
pub const CALL: Duration = Duration::from_secs(10);

/// Passwords with the characters that need quoting in pgha.conf, conninfo and SQL.
pub const SUPERUSER_PASSWORD: &str = "su per'pw\\";
pub const REPLICATION_PASSWORD: &str = "rep'l\\pw \"x";
pub const REWIND_PASSWORD: &str = "re wind'";

/// The service user Postgres runs as: `postgres` when the tests run as root (as CI does),
/// otherwise the current user.
pub fn service_user() -> ServiceUser {
    if is_root() {
        ServiceUser::lookup("postgres").expect("the postgres user exists (install postgresql-15)")
    } else {
        ServiceUser {
            name: "me".into(),
            uid: current_uid(),
            gid: nix::unistd::getegid().as_raw(),
            home: PathBuf::from("/"),
            groups: vec![nix::unistd::getegid().as_raw()],
        }
    }
}

/// A free TCP port on 127.0.0.1 (the kernel's choice; released again at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Lab {
    pub dir: PathBuf,
    pub tools: PgTools,
    pub tls: PathBuf,
}

impl Lab {
    pub fn new(name: &str) -> Lab {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!("/tmp/pgha-pg-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let user = service_user();
        datadir::create_owned_dir(&dir, &user, 0o755).unwrap();
        let tls = dir.join("tls");
        datadir::create_owned_dir(&tls, &user, 0o700).unwrap();
        let ca = generate_ca(SCOPE).unwrap();
        let id = Identity::member(SCOPE, MemberName::new("node").unwrap()).unwrap();
        let cert = issue_member_cert(&ca, &id, &["127.0.0.1".into()]).unwrap();
        datadir::write_owned_file(&tls.join("ca.crt"), &ca.cert_pem, &user).unwrap();
        datadir::write_owned_file(&tls.join("node.crt"), &cert.cert_pem, &user).unwrap();
        datadir::write_owned_file(&tls.join("node.key"), &cert.key_pem, &user).unwrap();
        let bin = BinDir::resolve(None, Path::new("/nonexistent")).unwrap();
        let tools = PgTools::new(bin, user, Spawner::start().unwrap());
        Lab { dir, tools, tls }
    }

    pub fn node(&self, name: &str) -> Node {
        let base = self.dir.join(name);
        datadir::create_owned_dir(&base, self.tools.user(), 0o700).unwrap();
        let data = DataDir::new(base.join("data"), self.tools.user().clone());
        let socket_dir = data.default_socket_dir();
        datadir::create_owned_dir(&socket_dir, self.tools.user(), 0o755).unwrap();
        let superuser = credentials("postgres", SUPERUSER_PASSWORD);
        let port = free_port();
        Node {
            name: MemberName::new(name).unwrap(),
            log_file: data.default_log_file(),
            connect: LocalConnect::new(&socket_dir, port, &superuser, CALL),
            data,
            socket_dir,
            port,
            superuser,
            replication: credentials("replicator", REPLICATION_PASSWORD),
            rewind: credentials("rewind_user", REWIND_PASSWORD),
            tls: self.tls.clone(),
            tools: self.tools.clone(),
            postmaster: None,
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn credentials(name: &str, password: &str) -> Credentials {
    Credentials { username: name.into(), password: Some(password.into()) }
}

pub struct Node {
    pub name: MemberName,
    pub data: DataDir,
    pub socket_dir: PathBuf,
    pub log_file: PathBuf,
    pub port: u16,
    pub superuser: Credentials,
    pub replication: Credentials,
    pub rewind: Credentials,
    pub connect: LocalConnect,
    pub tls: PathBuf,
    pub tools: PgTools,
    pub postmaster: Option<Postmaster>,
}

impl Node {
    pub fn endpoint(&self) -> Endpoint {
        Endpoint { host: "127.0.0.1".into(), port: self.port }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.tls.join("ca.crt")
    }

    /// The replication conninfo for streaming from `primary`.
    pub fn primary_conninfo(&self, primary: &Node) -> Conninfo {
        let endpoint = primary.endpoint();
        let ca = self.ca_file();
        StreamSource {
            primary: &endpoint,
            user: &self.replication.username,
            password: self.replication.password.as_deref(),
            member: &self.name,
            ca_file: &ca,
        }
        .primary_conninfo()
    }

    /// The pg_rewind source conninfo (the rewind role) for `primary`.
    pub fn rewind_conninfo(&self, primary: &Node) -> Conninfo {
        let endpoint = primary.endpoint();
        let ca = self.ca_file();
        StreamSource {
            primary: &endpoint,
            user: &self.rewind.username,
            password: self.rewind.password.as_deref(),
            member: &self.name,
            ca_file: &ca,
        }
        .rewind_source()
    }

    /// Renders and writes pgha.conf and pg_hba.conf; `follow` makes it a replica of that node
    /// through the slot named after this member.
    pub fn write_config(&self, follow: Option<&Node>) -> Parameters {
        let follow = follow.map(|primary| Follow {
            primary_conninfo: self.primary_conninfo(primary),
            slot: Some(crate::pg::slots::slot_name(&self.name)),
        });
        // Small and quick for tests; fsync stays on (pg_rewind and crash paths are tested).
        let local: BTreeMap<String, serde_json::Value> =
            [("shared_buffers".to_owned(), json!("16MB")), ("max_connections".to_owned(), json!(20))].into();
        let (cert, key, ca) = (self.tls.join("node.crt"), self.tls.join("node.key"), self.ca_file());
        let params = Parameters::build(&ConfInput {
            cluster_name: SCOPE,
            listen: format!("127.0.0.1:{}", self.port).parse().unwrap(),
            socket_dir: &self.socket_dir,
            hba_file: &self.data.file(datadir::PG_HBA_CONF),
            tls: TlsFiles { cert: &cert, key: &key, ca: &ca },
            follow: follow.as_ref(),
            synchronous_standby_names: None,
            dynamic: &BTreeMap::new(),
            local: &local,
        })
        .unwrap();
        let roles = HbaRoles {
            superuser: &self.superuser.username,
            replication: &self.replication.username,
            rewind: &self.rewind.username,
        };
        let hba = render_pg_hba(roles, &[]).unwrap();
        self.data.write_config(&params.render(), &hba).unwrap();
        self.data.set_standby(follow.is_some()).unwrap();
        params
    }

    pub async fn start(&mut self) {
        assert!(self.postmaster.is_none(), "{} is already running", self.name);
        let started =
            Postmaster::start(&self.tools, self.data.path(), &self.log_file, &self.connect, START).await;
        self.postmaster = Some(started.unwrap_or_else(|e| panic!("{}: {e}", self.name)));
    }

    pub async fn stop(&mut self, mode: StopMode) -> Stopped {
        let mut postmaster = self.postmaster.take().expect("running");
        postmaster.stop(mode, STOP).await.unwrap()
    }

    pub async fn session(&self) -> Session {
        self.connect.connect().await.unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }
}

/// Polls `probe` until it returns `Some`, up to `timeout`; panics with the last value seen.
pub async fn wait_until<T, S: std::fmt::Debug, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, S>>,
{
    let deadline = crate::clock::boot_now() + timeout;
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(state) => state,
        };
        if crate::clock::boot_now() >= deadline {
            panic!("{what}: not within {timeout:?}; last seen: {last:?}");
        }
        crate::clock::sleep(Duration::from_millis(100)).await;
    }
}
