//! Where the PostgreSQL programs live. Input: `postgresql.bin_dir` (may be unset) and the data
//! directory; output: a [`BinDir`] in which every program pgha runs exists. Order (DESIGN.md,
//! "User-facing contract"): the configured directory; else the version in the data directory's
//! `PG_VERSION` under the package layouts (Debian `/usr/lib/postgresql/<v>/bin`, PGDG RPM
//! `/usr/pgsql-<v>/bin`); else the newest installed version of those layouts. It only reads the
//! file system and never picks a version other than the data directory's: starting a data
//! directory with another major version's binaries fails, or worse, on an upgrade path.

use crate::pg::error::PgError;
use std::path::{Path, PathBuf};

/// The programs pgha runs; a directory lacking any of them is refused at once rather than at
/// the first clone or rewind.
pub const REQUIRED: [&str; 5] = ["postgres", "initdb", "pg_basebackup", "pg_rewind", "pg_controldata"];

/// One package layout: `<parent>/<prefix><version>/bin`.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub parent: &'static str,
    pub prefix: &'static str,
}

/// Debian/Ubuntu (postgresql-common) and the PGDG RPMs (RHEL, Rocky, Fedora).
pub const LAYOUTS: [Layout; 2] =
    [Layout { parent: "/usr/lib/postgresql", prefix: "" }, Layout { parent: "/usr", prefix: "pgsql-" }];

/// A directory holding every program in [`REQUIRED`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinDir(PathBuf);

impl BinDir {
    /// Resolves the directory on this machine; see the module comment for the order.
    pub fn resolve(configured: Option<&Path>, data_dir: &Path) -> Result<BinDir, PgError> {
        BinDir::resolve_in(configured, data_dir, Path::new("/"), &LAYOUTS)
    }

    /// As [`BinDir::resolve`], with the layouts' absolute parents taken below `root` (tests
    /// build a fake tree).
    pub fn resolve_in(
        configured: Option<&Path>,
        data_dir: &Path,
        root: &Path,
        layouts: &[Layout],
    ) -> Result<BinDir, PgError> {
        if let Some(dir) = configured {
            return BinDir::checked(dir.to_owned());
        }
        let under_root = |parent: &str| root.join(parent.trim_start_matches('/'));
        let version_file = data_dir.join("PG_VERSION");
        match std::fs::read_to_string(&version_file) {
            Ok(text) => {
                let version = text.trim().to_owned();
                let candidates: Vec<PathBuf> = layouts
                    .iter()
                    .map(|l| under_root(l.parent).join(format!("{}{version}", l.prefix)).join("bin"))
                    .collect();
                return match candidates.iter().find(|dir| dir.is_dir()) {
                    Some(dir) => BinDir::checked(dir.clone()),
                    None => Err(PgError::VersionNotInstalled {
                        data_dir: data_dir.to_owned(),
                        version,
                        expected: candidates[0].clone(),
                    }),
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PgError::io("cannot read", version_file)(e)),
        }
        // No data directory yet: the newest installed version (bootstrap and clone create
        // the data directory with it).
        let mut found: Vec<(Vec<u32>, PathBuf)> = Vec::new();
        for layout in layouts {
            let Ok(entries) = std::fs::read_dir(under_root(layout.parent)) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(version) = name.strip_prefix(layout.prefix).and_then(parse_version) else {
                    continue;
                };
                let bin = entry.path().join("bin");
                if bin.join("postgres").is_file() {
                    found.push((version, bin));
                }
            }
        }
        found.sort();
        match found.pop() {
            Some((_, dir)) => BinDir::checked(dir),
            None => Err(PgError::NoBinDir {
                searched: layouts
                    .iter()
                    .map(|l| format!("{}/{}*/bin", under_root(l.parent).display(), l.prefix))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    fn checked(dir: PathBuf) -> Result<BinDir, PgError> {
        let missing: Vec<&'static str> =
            REQUIRED.iter().copied().filter(|name| !dir.join(name).is_file()).collect();
        if missing.is_empty() {
            Ok(BinDir(dir))
        } else {
            Err(PgError::MissingBinaries { dir, missing })
        }
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The full path of one program in this directory.
    pub fn program(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

/// `15` -> [15], `9.6` -> [9, 6]; anything else is not a version directory.
fn parse_version(s: &str) -> Option<Vec<u32>> {
    s.split('.').map(|part| part.parse().ok()).collect::<Option<Vec<u32>>>().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree(PathBuf);
    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A fake root: each entry is (directory below root, programs in it).
    fn tree(name: &str, dirs: &[(&str, &[&str])]) -> Tree {
        let root = std::env::temp_dir().join(format!("pgha-bin-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (dir, programs) in dirs {
            let dir = root.join(dir);
            std::fs::create_dir_all(&dir).unwrap();
            for p in *programs {
                std::fs::write(dir.join(p), b"").unwrap();
            }
        }
        Tree(root)
    }

    const ALL: &[&str] = &REQUIRED;

    #[test]
    fn resolution_order() {
        let t = tree(
            "order",
            &[
                ("usr/lib/postgresql/9.6/bin", ALL),
                ("usr/lib/postgresql/13/bin", ALL),
                ("usr/lib/postgresql/15/bin", ALL),
                ("usr/pgsql-16/bin", ALL),
                ("usr/lib/postgresql/17/bin", &["psql"]),
                ("usr/lib/postgresql/notaversion/bin", ALL),
                ("custom", ALL),
                ("data13", &[]),
                ("data14", &[]),
                ("nodata", &[]),
            ],
        );
        let root = &t.0;
        std::fs::write(root.join("data13/PG_VERSION"), "13\n").unwrap();
        std::fs::write(root.join("data14/PG_VERSION"), "14\n").unwrap();
        let resolve = |configured: Option<&str>, data: &str| {
            BinDir::resolve_in(configured.map(|c| root.join(c)).as_deref(), &root.join(data), root, &LAYOUTS)
        };
        // The configured directory wins, even over the data directory's version.
        assert_eq!(resolve(Some("custom"), "data13").unwrap().path(), root.join("custom"));
        // The data directory's version.
        assert_eq!(resolve(None, "data13").unwrap().path(), root.join("usr/lib/postgresql/13/bin"));
        // No data directory: the newest with a postgres binary (17 has none), across layouts.
        assert_eq!(resolve(None, "nodata").unwrap().path(), root.join("usr/pgsql-16/bin"));
        assert_eq!(resolve(None, "missing-dir").unwrap().path(), root.join("usr/pgsql-16/bin"));
        // A version that is not installed is never replaced by another.
        let err = resolve(None, "data14").unwrap_err();
        assert!(matches!(&err, PgError::VersionNotInstalled { version, .. } if version == "14"), "{err}");
        assert!(err.to_string().contains("postgresql-14"), "{err}");
    }

    #[test]
    fn missing_programs_are_named() {
        let t = tree("missing", &[("partial", &["postgres", "initdb", "pg_controldata"])]);
        let err = BinDir::resolve_in(Some(&t.0.join("partial")), &t.0, &t.0, &LAYOUTS).unwrap_err();
        match &err {
            PgError::MissingBinaries { missing, .. } => assert_eq!(missing, &["pg_basebackup", "pg_rewind"]),
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("postgresql.bin_dir"), "{err}");
        let err = BinDir::resolve_in(None, &t.0, &t.0.join("empty-root"), &LAYOUTS).unwrap_err();
        assert!(matches!(err, PgError::NoBinDir { .. }), "{err}");
        assert!(err.to_string().contains("apt-get install postgresql-15"), "{err}");
    }

    #[test]
    fn versions_parse_numerically() {
        assert_eq!(parse_version("15"), Some(vec![15]));
        assert_eq!(parse_version("9.6"), Some(vec![9, 6]));
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("15beta"), None);
        assert!(parse_version("10") > parse_version("9.6"));
    }

    #[test]
    fn this_machine_has_postgres_15() {
        let bin = BinDir::resolve(None, Path::new("/nonexistent")).unwrap();
        assert!(bin.program("postgres").is_file(), "{bin:?}");
    }
}
