//! Where the PostgreSQL programs live. Input: `postgresql.bin_dir` (may be unset) and the data
//! directory; output: a [`BinDir`] in which every program pgha runs exists. Order (DESIGN.md,
//! "User-facing contract"): the configured directory; else the version in the data directory's
//! `PG_VERSION` under the package layouts (Debian `/usr/lib/postgresql/<v>/bin`, PGDG RPM
//! `/usr/pgsql-<v>/bin`); else the newest installed version of those layouts; else, when none
//! of those exists, `/usr/bin` if RHEL's or Fedora's own `postgresql-server` package put the
//! programs there (what the pgha RPM's dependency may bring). It never picks a version other
//! than the data directory's: starting a data directory with another major version's binaries
//! fails, or worse, on an upgrade path; for `/usr/bin` the version is asked of `postgres -V`.

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

/// Where the distributions' own unversioned packages (RHEL/Fedora `postgresql-server`) install.
pub const UNVERSIONED: &str = "/usr/bin";

/// A directory holding every program in [`REQUIRED`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinDir(PathBuf);

impl BinDir {
    /// Resolves the directory on this machine; see the module comment for the order.
    pub fn resolve(configured: Option<&Path>, data_dir: &Path) -> Result<BinDir, PgError> {
        BinDir::resolve_in(configured, data_dir, Path::new("/"), &LAYOUTS, &major_version_of)
    }

    /// As [`BinDir::resolve`], with the layouts' absolute parents taken below `root` (tests
    /// build a fake tree) and the major version of a directory's `postgres` from `version_of`.
    pub fn resolve_in(
        configured: Option<&Path>,
        data_dir: &Path,
        root: &Path,
        layouts: &[Layout],
        version_of: &dyn Fn(&Path) -> Option<String>,
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
                let unversioned = under_root(UNVERSIONED);
                return match candidates.iter().find(|dir| dir.is_dir()) {
                    Some(dir) => BinDir::checked(dir.clone()),
                    None if unversioned.join("postgres").is_file()
                        && version_of(&unversioned).as_deref() == Some(version.as_str()) =>
                    {
                        BinDir::checked(unversioned)
                    }
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
        let unversioned = under_root(UNVERSIONED);
        match found.pop() {
            Some((_, dir)) => BinDir::checked(dir),
            None if unversioned.join("postgres").is_file() => BinDir::checked(unversioned),
            None => Err(PgError::NoBinDir {
                searched: layouts
                    .iter()
                    .map(|l| format!("{}/{}*/bin", under_root(l.parent).display(), l.prefix))
                    .chain(std::iter::once(unversioned.display().to_string()))
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

/// The major version `dir/postgres -V` reports (`postgres (PostgreSQL) 15.4` -> `15`), the
/// spelling of `PG_VERSION`. `-V` prints and exits before any check of the data or the user.
fn major_version_of(dir: &Path) -> Option<String> {
    let out = std::process::Command::new(dir.join("postgres")).arg("-V").output().ok()?;
    major_of(&String::from_utf8_lossy(&out.stdout))
}

fn major_of(version_line: &str) -> Option<String> {
    let full = version_line.split_whitespace().find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    let parts: Vec<&str> = full.split(|c: char| !c.is_ascii_digit()).collect();
    match parts.as_slice() {
        // Before 10 the major version had two parts (9.6).
        [major, minor, ..] if major.parse::<u32>().ok()? < 10 => Some(format!("{major}.{minor}")),
        [major, ..] if !major.is_empty() => Some((*major).to_owned()),
        _ => None,
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

    fn no_version(_: &Path) -> Option<String> {
        None
    }

    #[test]
    fn rhel_s_own_package_in_usr_bin_is_the_last_resort() {
        let t = tree("usrbin", &[("usr/bin", ALL), ("data15", &[]), ("data16", &[]), ("nodata", &[])]);
        let root = &t.0;
        std::fs::write(root.join("data15/PG_VERSION"), "15\n").unwrap();
        std::fs::write(root.join("data16/PG_VERSION"), "16\n").unwrap();
        let fifteen = |_: &Path| Some("15".to_owned());
        let resolve = |data: &str| BinDir::resolve_in(None, &root.join(data), root, &LAYOUTS, &fifteen);
        assert_eq!(resolve("nodata").unwrap().path(), root.join("usr/bin"));
        assert_eq!(resolve("data15").unwrap().path(), root.join("usr/bin"));
        // /usr/bin holds 15: a data directory of 16 is never started with it.
        let err = resolve("data16").unwrap_err();
        assert!(matches!(&err, PgError::VersionNotInstalled { version, .. } if version == "16"), "{err}");
        // A versioned layout wins over /usr/bin.
        let t = tree("usrbin2", &[("usr/bin", ALL), ("usr/pgsql-16/bin", ALL)]);
        let got = BinDir::resolve_in(None, &t.0.join("none"), &t.0, &LAYOUTS, &fifteen).unwrap();
        assert_eq!(got.path(), t.0.join("usr/pgsql-16/bin"));
    }

    #[test]
    fn major_versions_from_postgres_v() {
        assert_eq!(major_of("postgres (PostgreSQL) 15.4 (Debian 15.4-1.pgdg120+1)\n").as_deref(), Some("15"));
        assert_eq!(major_of("postgres (PostgreSQL) 17beta2").as_deref(), Some("17"));
        assert_eq!(major_of("postgres (PostgreSQL) 9.6.24").as_deref(), Some("9.6"));
        assert_eq!(major_of("").as_deref(), None);
        let bin = BinDir::resolve(None, Path::new("/nonexistent")).unwrap();
        assert_eq!(major_version_of(bin.path()).as_deref(), Some("15"));
    }

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
            BinDir::resolve_in(
                configured.map(|c| root.join(c)).as_deref(),
                &root.join(data),
                root,
                &LAYOUTS,
                &no_version,
            )
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
        let err =
            BinDir::resolve_in(Some(&t.0.join("partial")), &t.0, &t.0, &LAYOUTS, &no_version).unwrap_err();
        match &err {
            PgError::MissingBinaries { missing, .. } => assert_eq!(missing, &["pg_basebackup", "pg_rewind"]),
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("postgresql.bin_dir"), "{err}");
        let err = BinDir::resolve_in(None, &t.0, &t.0.join("empty-root"), &LAYOUTS, &no_version).unwrap_err();
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
