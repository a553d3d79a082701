//! [`DataDir`]: the files pgha keeps in and next to a Postgres data directory. Input: the
//! directory, the service user, and texts rendered by `conf` and `hba`; output: the directory
//! created private (0700, as Postgres demands), `pgha.conf` and `pg_hba.conf` replaced
//! atomically, the `include 'pgha.conf'` line appended once to `postgresql.conf`, and
//! `standby.signal` present exactly when the node follows. Every file pgha writes belongs to
//! the service user (pgha may run as root during tests and `init`). It never edits a line of
//! `postgresql.conf` other than appending the include, and never deletes a data directory.

use crate::pg::error::PgError;
use crate::sys::user::{is_root, ServiceUser};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const PGHA_CONF: &str = "pgha.conf";
pub const PG_HBA_CONF: &str = "pg_hba.conf";
pub const STANDBY_SIGNAL: &str = "standby.signal";
pub const POSTMASTER_PID: &str = "postmaster.pid";
/// The line that makes Postgres read pgha's parameters; last in the file, so they win over
/// everything above it (only `postgresql.auto.conf`, i.e. `ALTER SYSTEM`, is read later).
pub const INCLUDE_LINE: &str = "include 'pgha.conf'";

#[derive(Clone, Debug)]
pub struct DataDir {
    path: PathBuf,
    owner: ServiceUser,
}

impl DataDir {
    pub fn new(path: impl Into<PathBuf>, owner: ServiceUser) -> DataDir {
        DataDir { path: path.into(), owner }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn owner(&self) -> &ServiceUser {
        &self.owner
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// pgha's socket directory when none is configured: `run` next to the data directory, so
    /// nodes sharing a host (each with its own data directory) never share sockets.
    pub fn default_socket_dir(&self) -> PathBuf {
        self.sibling("run")
    }

    /// The server log when none is configured: `postgres.log` next to the data directory
    /// (outside it, so clones and pg_rewind never copy it).
    pub fn default_log_file(&self) -> PathBuf {
        self.sibling("postgres.log")
    }

    fn sibling(&self, name: &str) -> PathBuf {
        self.path.parent().unwrap_or(Path::new("/")).join(name)
    }

    /// Whether this is an initialised data directory (`PG_VERSION` exists).
    pub fn is_initialized(&self) -> bool {
        self.file("PG_VERSION").is_file()
    }

    /// Whether the directory is missing or empty (where initdb and a clone may write).
    pub fn is_absent_or_empty(&self) -> Result<bool, PgError> {
        match std::fs::read_dir(&self.path) {
            Ok(mut entries) => Ok(entries.next().is_none()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(PgError::io("cannot read the data directory", &self.path)(e)),
        }
    }

    /// Creates the directory if needed and makes it 0700 and the service user's.
    pub fn create_private(&self) -> Result<(), PgError> {
        create_owned_dir(&self.path, &self.owner, 0o700)
    }

    /// Replaces `pgha.conf` and `pg_hba.conf` and makes sure `postgresql.conf` includes
    /// `pgha.conf`. Call it before every start: a clone or pg_rewind copies the source's
    /// configuration files over this node's.
    pub fn write_config(&self, pgha_conf: &str, pg_hba: &str) -> Result<(), PgError> {
        self.write_file(PGHA_CONF, pgha_conf)?;
        self.write_file(PG_HBA_CONF, pg_hba)?;
        self.ensure_include()
    }

    /// Appends [`INCLUDE_LINE`] to `postgresql.conf` unless it is already there.
    pub fn ensure_include(&self) -> Result<(), PgError> {
        let path = self.file("postgresql.conf");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(PgError::io("cannot read", path)(e)),
        };
        if has_include(&text) {
            return Ok(());
        }
        let mut new = text;
        if !new.is_empty() && !new.ends_with('\n') {
            new.push('\n');
        }
        new.push_str("\n# Added by pgha: its parameters (pgha.conf) come last so they win.\n");
        new.push_str(INCLUDE_LINE);
        new.push('\n');
        self.write_file("postgresql.conf", &new)
    }

    /// Creates or removes `standby.signal`: with it Postgres starts as a replica.
    pub fn set_standby(&self, standby: bool) -> Result<(), PgError> {
        let path = self.file(STANDBY_SIGNAL);
        if standby {
            self.write_file(STANDBY_SIGNAL, "")
        } else {
            match std::fs::remove_file(&path) {
                Ok(()) => sync_dir(&self.path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(PgError::io("cannot remove", path)(e)),
            }
        }
    }

    pub fn is_standby(&self) -> bool {
        self.file(STANDBY_SIGNAL).exists()
    }

    /// Writes `name` in the data directory atomically: a temporary file (0600, the service
    /// user's), fsync, rename, fsync of the directory. Postgres reading the file during a
    /// reload sees the old or the new text, never half of it.
    pub fn write_file(&self, name: &str, text: &str) -> Result<(), PgError> {
        write_owned_file(&self.file(name), text, &self.owner)
    }
}

/// Whether `postgresql.conf` text already has an active `include 'pgha.conf'` line.
fn has_include(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        words.next() == Some("include")
            && words.next().map(|w| w.trim_matches('\'')) == Some(PGHA_CONF)
            && words.next().is_none()
    })
}

/// Creates `path` (and missing parents) with `mode`, owned by `owner` when pgha runs as root.
pub fn create_owned_dir(path: &Path, owner: &ServiceUser, mode: u32) -> Result<(), PgError> {
    std::fs::create_dir_all(path).map_err(PgError::io("cannot create the directory", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(PgError::io("cannot set the permissions of", path))?;
    if is_root() {
        std::os::unix::fs::chown(path, Some(owner.uid), Some(owner.gid))
            .map_err(PgError::io("cannot change the owner of", path))?;
    }
    Ok(())
}

/// Writes `path` atomically with mode 0600, owned by `owner` when pgha runs as root.
pub fn write_owned_file(path: &Path, text: &str, owner: &ServiceUser) -> Result<(), PgError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.pgha-tmp"));
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        if is_root() {
            std::os::unix::fs::fchown(&file, Some(owner.uid), Some(owner.gid))?;
        }
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        PgError::io("cannot write", path)(e)
    })?;
    sync_dir(dir)
}

/// Makes a rename or removal in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), PgError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(PgError::io("cannot sync the directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    use crate::pg::testkit::service_user as user;

    #[test]
    fn include_line_is_recognised() {
        let cases = [
            ("include 'pgha.conf'\n", true),
            ("  include   'pgha.conf'   # pgha\n", true),
            ("include pgha.conf\n", true),
            ("#include 'pgha.conf'\n", false),
            ("include 'other.conf'\n", false),
            ("include_if_exists 'pgha.conf'\n", false),
            ("", false),
        ];
        for (text, want) in cases {
            assert_eq!(has_include(text), want, "{text:?}");
        }
    }

    #[test]
    fn config_files_are_private_and_the_include_is_added_once() {
        let base = std::env::temp_dir().join(format!("pgha-datadir-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = DataDir::new(base.join("data"), user());
        assert!(dir.is_absent_or_empty().unwrap());
        dir.create_private().unwrap();
        assert!(!dir.is_initialized());
        let meta = std::fs::metadata(dir.path()).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        assert_eq!(meta.uid(), dir.owner().uid);
        std::fs::write(dir.file("postgresql.conf"), "max_connections = 100").unwrap();

        dir.write_config("port = '5433'\n", "local all all scram-sha-256\n").unwrap();
        dir.write_config("port = '5434'\n", "local all all scram-sha-256\n").unwrap();
        let conf = std::fs::read_to_string(dir.file("postgresql.conf")).unwrap();
        assert!(conf.starts_with("max_connections = 100\n"), "{conf}");
        assert_eq!(conf.matches(INCLUDE_LINE).count(), 1, "{conf}");
        assert_eq!(std::fs::read_to_string(dir.file(PGHA_CONF)).unwrap(), "port = '5434'\n");
        for name in [PGHA_CONF, PG_HBA_CONF, "postgresql.conf"] {
            let meta = std::fs::metadata(dir.file(name)).unwrap();
            assert_eq!((meta.mode() & 0o777, meta.uid()), (0o600, dir.owner().uid), "{name}");
        }
        assert!(!dir.file(".pgha.conf.pgha-tmp").exists());

        assert!(!dir.is_standby());
        dir.set_standby(true).unwrap();
        assert!(dir.is_standby());
        dir.set_standby(false).unwrap();
        dir.set_standby(false).unwrap();
        assert!(!dir.is_standby());
        assert!(!dir.is_absent_or_empty().unwrap());
        assert_eq!(dir.default_socket_dir(), base.join("run"));
        assert_eq!(dir.default_log_file(), base.join("postgres.log"));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
