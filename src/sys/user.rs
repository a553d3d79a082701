//! The service user (`user:` in the config, default `postgres`): finding it, becoming it, and
//! starting children as it. Input: the account name and the files `/etc/passwd` and
//! `/etc/group`; output: a [`ServiceUser`] with uid, gid, home and every group it belongs to.
//! It never calls libc's `getpwnam`/`getgrouplist`: in the static binary they dlopen the host's
//! NSS modules and crash (STACK.md item 2), so the files are parsed here, which covers local
//! accounts (the ones packages create), not LDAP/SSSD users. Children get their supplementary
//! groups set explicitly because `Command::uid()/gid()` drops them and Postgres would lose
//! `ssl-cert` (STACK.md item 8). Nothing here decides *whether* to switch users.

use nix::unistd::{Gid, Uid};
use std::io;
use std::path::{Path, PathBuf};

pub const PASSWD_PATH: &str = "/etc/passwd";
pub const GROUP_PATH: &str = "/etc/group";

/// A local OS account, as `/etc/passwd` and `/etc/group` describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceUser {
    pub name: String,
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    pub home: PathBuf,
    /// Every group the account is in, the primary group first (what `id -G` prints).
    pub groups: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error(
        "OS user {name:?} does not exist in /etc/passwd: create it (`useradd --system {name}`, \
         or install the PostgreSQL package, which creates postgres) or set `user:` in the config \
         file to an existing local account"
    )]
    NotFound { name: String },
    #[error("cannot read {}: {source}", path.display())]
    Unreadable { path: PathBuf, source: io::Error },
    #[error(
        "OS user {name:?} is root (uid 0): Postgres refuses to run as root; set `user:` in the \
         config file to an unprivileged account such as postgres"
    )]
    RootServiceUser { name: String },
    #[error(
        "cannot switch to OS user {name:?}: {step} failed ({source}): start pgha as root, or as \
         {name} itself"
    )]
    Switch { name: String, step: &'static str, source: nix::errno::Errno },
    #[error(
        "after switching to OS user {name:?} the process could still become root again; \
         refusing to continue (is a capability such as CAP_SETUID granted to pgha?)"
    )]
    RootRegainable { name: String },
    #[error(
        "cannot give {} to uid {uid}: {source}: pgha must run as root to change owners",
        path.display()
    )]
    Chown { path: PathBuf, uid: u32, source: io::Error },
}

impl ServiceUser {
    /// Looks `name` up in `/etc/passwd` and `/etc/group`.
    pub fn lookup(name: &str) -> Result<ServiceUser, UserError> {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map_err(|source| UserError::Unreadable { path: PathBuf::from(path), source })
        };
        ServiceUser::lookup_in(name, &read(PASSWD_PATH)?, &read(GROUP_PATH)?)
    }

    /// Looks `name` up in the given texts of `/etc/passwd` and `/etc/group`. Comments, blank
    /// and malformed lines and NIS `+`/`-` entries are skipped; the first matching entry wins,
    /// as with libc's `files` source.
    pub fn lookup_in(name: &str, passwd: &str, group: &str) -> Result<ServiceUser, UserError> {
        let not_found = || UserError::NotFound { name: name.to_owned() };
        if name.is_empty() {
            return Err(not_found());
        }
        // name:password:uid:gid:gecos:home:shell
        let (uid, gid, home) = entries(passwd, 7)
            .filter(|f| f[0] == name)
            .find_map(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?, PathBuf::from(f[5]))))
            .ok_or_else(not_found)?;
        // name:password:gid:member,member,...
        let mut groups = vec![gid];
        let member_of = entries(group, 4)
            .filter(|f| f[3].split(',').any(|m| m.trim() == name))
            .filter_map(|f| f[2].parse::<u32>().ok());
        for g in member_of {
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        Ok(ServiceUser { name: name.to_owned(), uid, gid, home, groups })
    }
}

/// The colon-separated fields of the well-formed lines of a passwd-style file.
fn entries(text: &str, fields: usize) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim_end)
        .filter(|line| !line.is_empty() && !line.starts_with(['#', '+', '-']))
        .map(|line| line.split(':').collect::<Vec<_>>())
        .filter(move |f| f.len() == fields && !f[0].is_empty())
}

/// The effective uid of this process.
pub fn current_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Whether this process runs with root's effective uid.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Makes this process `user` for good: supplementary groups, then gid, then uid (the order
/// matters: once the uid is not root, groups and gid can no longer be changed), then checks
/// that root cannot be regained.
///
/// Call it from `main` before the tokio runtime or any other thread starts: the kernel changes
/// credentials per thread, and although glibc broadcasts the change to every thread it knows,
/// a thread started earlier by other code could keep running as root, and whatever it opened
/// as root stays open.
pub fn drop_privileges(user: &ServiceUser) -> Result<(), UserError> {
    if user.uid == 0 {
        return Err(UserError::RootServiceUser { name: user.name.clone() });
    }
    let switch = |step| move |source| UserError::Switch { name: user.name.clone(), step, source };
    let groups: Vec<Gid> = user.groups.iter().map(|&g| Gid::from_raw(g)).collect();
    nix::unistd::setgroups(&groups).map_err(switch("setgroups"))?;
    nix::unistd::setgid(Gid::from_raw(user.gid)).map_err(switch("setgid"))?;
    nix::unistd::setuid(Uid::from_raw(user.uid)).map_err(switch("setuid"))?;
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(UserError::RootRegainable { name: user.name.clone() });
    }
    Ok(())
}

/// Gives `path` and everything below it to `uid:gid`. Symbolic links are changed themselves
/// and never followed, so a link planted in a data directory cannot hand a file elsewhere on the
/// system to the service user.
pub fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), UserError> {
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source| UserError::Chown { path, uid, source }
    };
    // An explicit stack: directory depth is not bounded by anything we control.
    let mut pending = vec![path.to_owned()];
    while let Some(p) = pending.pop() {
        std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).map_err(failed(&p))?;
        if std::fs::symlink_metadata(&p).map_err(failed(&p))?.is_dir() {
            for entry in std::fs::read_dir(&p).map_err(failed(&p))? {
                pending.push(entry.map_err(failed(&p))?.path());
            }
        }
    }
    Ok(())
}

/// A closure for `CommandExt::pre_exec` (std or tokio) that makes the child `user`:
/// supplementary groups, gid, uid, in that order, so Postgres keeps groups such as `ssl-cert`
/// (`Command::uid()/gid()` would drop them, STACK.md item 8).
///
/// It runs in the forked child before `exec`, where only async-signal-safe calls are allowed:
/// it uses the raw `setgroups`/`setgid`/`setuid` syscall wrappers (as std's own `uid()/gid()`
/// do), captures the group list before the fork and allocates nothing. When the parent already
/// runs as `user` it changes nothing (an unprivileged parent could not anyway); a root `user`
/// is refused.
///
/// ```ignore
/// unsafe { command.pre_exec(child_pre_exec(&user)) };
/// ```
pub fn child_pre_exec(user: &ServiceUser) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
    let uid: libc::uid_t = user.uid;
    let gid: libc::gid_t = user.gid;
    let groups: Vec<libc::gid_t> = user.groups.clone();
    move || {
        if uid == 0 {
            // io::Error from a kind does not allocate.
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        // SAFETY: these are plain syscall wrappers taking integers and a pointer to `groups`,
        // which lives in this closure for the whole call; geteuid cannot fail.
        unsafe {
            if libc::geteuid() == uid {
                return Ok(());
            }
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
# local accounts
root:x:0:0:root:/root:/bin/bash

postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash
broken:x:notanumber:104::/nonexistent:/bin/false
short:x:105
+nisuser::::::
app:x:1000:1000:App:/home/app:/bin/sh
postgres:x:999:999:second entry loses:/tmp:/bin/sh
";

    const GROUP: &str = "\
root:x:0:
# the groups a Debian postgres is in
ssl-cert:x:103:postgres
postgres:x:104:
dba:x:2000:app, postgres
badgid:x:nope:postgres
short:x:2001
audit:x:2002:app
dup:x:104:postgres
";

    #[test]
    fn finds_the_user_and_all_its_groups() {
        let user = ServiceUser::lookup_in("postgres", PASSWD, GROUP).unwrap();
        assert_eq!(
            user,
            ServiceUser {
                name: "postgres".into(),
                uid: 101,
                gid: 104,
                home: PathBuf::from("/var/lib/postgresql"),
                groups: vec![104, 103, 2000],
            }
        );
        let app = ServiceUser::lookup_in("app", PASSWD, GROUP).unwrap();
        assert_eq!(app.groups, vec![1000, 2000, 2002]);
    }

    #[test]
    fn missing_and_malformed_entries_are_not_found() {
        for name in ["nobody-here", "broken", "short", "nisuser", "+nisuser", "", "#"] {
            let err = ServiceUser::lookup_in(name, PASSWD, GROUP).unwrap_err();
            assert!(matches!(&err, UserError::NotFound { name: n } if n == name), "{name}");
        }
        let text = ServiceUser::lookup_in("pg", PASSWD, GROUP).unwrap_err().to_string();
        assert!(text.contains("useradd --system pg") && text.contains("user:"), "{text}");
    }

    #[test]
    fn a_user_without_group_entries_keeps_its_primary_group() {
        let user = ServiceUser::lookup_in("root", PASSWD, "").unwrap();
        assert_eq!((user.uid, user.gid, user.groups), (0, 0, vec![0]));
    }

    #[test]
    fn looks_up_this_machine_s_accounts() {
        let user = ServiceUser::lookup("postgres").unwrap();
        assert_ne!(user.uid, 0);
        assert_eq!(user.groups[0], user.gid);
        let err = ServiceUser::lookup("no-such-user-xyz").unwrap_err();
        assert!(matches!(err, UserError::NotFound { .. }), "{err}");
    }

    #[test]
    fn root_is_never_a_service_user() {
        let root = ServiceUser::lookup_in("root", PASSWD, GROUP).unwrap();
        assert!(matches!(drop_privileges(&root), Err(UserError::RootServiceUser { .. })));
    }

    /// The child gets the user's uid, gid and supplementary groups. As root this really
    /// switches the child; otherwise the closure must leave a child of the same user alone.
    #[test]
    fn child_runs_as_the_user_with_its_groups() {
        use std::os::unix::process::CommandExt;
        let user = if is_root() {
            ServiceUser::lookup("postgres").unwrap()
        } else {
            let me = current_uid();
            ServiceUser {
                name: "me".into(),
                uid: me,
                gid: nix::unistd::getegid().as_raw(),
                home: PathBuf::from("/"),
                groups: nix::unistd::getgroups().unwrap().iter().map(|g| g.as_raw()).collect(),
            }
        };
        let mut command = std::process::Command::new("sh");
        command.args(["-c", "id -u; id -g; id -G"]);
        // SAFETY: the closure only makes async-signal-safe calls (see child_pre_exec).
        unsafe { command.pre_exec(child_pre_exec(&user)) };
        let out = command.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<Vec<u32>> =
            text.lines().map(|l| l.split_whitespace().map(|n| n.parse().unwrap()).collect()).collect();
        assert_eq!(lines[0], vec![user.uid], "{text}");
        assert_eq!(lines[1], vec![user.gid], "{text}");
        let mut want = user.groups.clone();
        let mut got = lines[2].clone();
        want.sort();
        got.sort();
        assert_eq!(got, want, "{text}");
    }

    #[test]
    fn chown_tree_changes_links_not_their_targets() {
        use std::os::unix::fs::MetadataExt;
        let base = std::env::temp_dir().join(format!("pgha-chown-test-{}", std::process::id()));
        let tree = base.join("tree");
        std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
        std::fs::write(tree.join("sub/deeper/file"), b"x").unwrap();
        let outside = base.join("outside");
        std::fs::write(&outside, b"y").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("sub/link")).unwrap();
        let before = std::fs::metadata(&outside).unwrap().uid();

        // As root, hand the tree to postgres; otherwise to ourselves (always allowed).
        let (uid, gid) = if is_root() {
            let pg = ServiceUser::lookup("postgres").unwrap();
            (pg.uid, pg.gid)
        } else {
            (current_uid(), nix::unistd::getegid().as_raw())
        };
        chown_tree(&tree, uid, gid).unwrap();
        for p in ["", "sub", "sub/deeper", "sub/deeper/file", "sub/link"] {
            let meta = std::fs::symlink_metadata(tree.join(p)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{p}");
        }
        assert_eq!(std::fs::metadata(&outside).unwrap().uid(), before);

        let err = chown_tree(&base.join("missing"), uid, gid).unwrap_err();
        assert!(matches!(err, UserError::Chown { .. }), "{err}");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
