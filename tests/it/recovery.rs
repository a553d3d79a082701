//! Recovering from a permanent loss of the Raft majority with `pgha run --force-new-cluster` on
//! the last survivor: it leads alone in a new incarnation, and an old member that comes back
//! with its old data is refused, never merged.

use crate::harness::{self, show, wait_until, Cluster, SETTLE};

/// Exactly the operator's steps after `pgha init`/`join` as root: the directory holding
/// `raft.data_dir` belongs to root, and `pgha run` has dropped to the service user when it moves
/// the old store aside.
#[test]
fn force_new_cluster_on_the_last_survivor_leads_alone_and_refuses_old_members() {
    force_new_cluster_scenario(false);
}

/// The same with the parent of `raft.data_dir` handed to the service user (the workaround for
/// the bug above), so the rest of the recovery stays tested.
#[test]
fn force_new_cluster_with_a_service_user_owned_parent_leads_alone_and_refuses_old_members() {
    force_new_cluster_scenario(true);
}

fn give_to_service_user(c: &Cluster, dir: &std::path::Path) {
    let user = nix::unistd::User::from_name(&c.user).ok().flatten().expect("the service user exists");
    nix::unistd::chown(dir, Some(user.uid), Some(user.gid)).expect("chown the node directory");
}

fn force_new_cluster_scenario(parent_owned_by_service_user: bool) {
    let mut c = Cluster::new(3);
    let (survivor, lost) = (0, [1, 2]);
    for i in lost {
        c.kill9(i);
    }
    // Without a majority nothing can be decided.
    let out = c.ctl(survivor, &["--endpoint", &c.nodes[survivor].api, "token", "create"]);
    assert!(!out.status.success(), "a proposal without a majority must fail: {}", show(&out));

    c.stop(survivor);
    if parent_owned_by_service_user {
        give_to_service_user(&c, &c.nodes[survivor].dir);
    }
    c.start_with(survivor, &["--force-new-cluster"]);
    let leader = c.wait_leader(survivor);
    assert_eq!(leader, "node1", "the survivor leads the new incarnation");
    c.token(survivor);
    let (rows, _) = c.wait_converged(survivor, &[survivor]);
    assert_eq!(rows.len(), 1, "members shows only the survivor: {}", harness::summary(&rows));

    // An old member restarted with its old store tries to rejoin its old cluster.
    let old = lost[0];
    c.start(old);
    wait_until(SETTLE, "the survivor refuses the old member by incarnation", || {
        let log = c.log_text(survivor);
        log.lines()
            .find(|l| l.contains("refused") && l.contains("incarnation"))
            .map(|_| ())
            .ok_or_else(|| "no refusal mentioning the incarnation yet".to_string())
    });
    // It never becomes part of the new cluster, and the survivor keeps leading alone.
    let (rows, _) = c.wait_converged(survivor, &[survivor]);
    assert_eq!(rows.len(), 1, "{}", harness::summary(&rows));
    c.token(survivor);
    let rows = c.members(survivor).expect("members");
    assert!(
        rows.iter().all(|r| r.name == "node1") && rows[0].role == "leader",
        "only node1, leading: {}",
        harness::summary(&rows)
    );
    // The old member found no leader: its own Raft status names none.
    let status = c.api_get(old, "/raft/status").expect("the old member's API answers");
    let raft = &status["raft"];
    assert!(
        raft["leader_id"].is_null() && raft["role"] != "leader",
        "the old member must not have a leader: {raft}"
    );
}

/// An operator tries `--force-new-cluster`, it fails (here: the old store cannot be moved
/// aside, because the service user may not write its parent directory), and the lost members
/// come back after all: the member must rejoin its old cluster as if nothing happened. A
/// failed attempt must leave the Raft store as it found it.
#[test]
fn a_failed_force_new_cluster_leaves_the_member_able_to_rejoin() {
    use std::os::unix::fs::PermissionsExt;
    let mut c = Cluster::new(3);
    for i in [1, 2] {
        c.kill9(i);
    }
    // Appended to node1's log, never committed: the majority is gone.
    let out = c.ctl(0, &["--endpoint", &c.nodes[0].api, "token", "create"]);
    assert!(!out.status.success(), "a proposal without a majority must fail: {}", show(&out));
    c.stop(0);

    let dir = c.nodes[0].dir.clone();
    let mode = |m: u32| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(m)).expect("chmod");
    mode(0o555);
    // As root pgha recovers before dropping privileges (and root may write anywhere), so the
    // attempt runs as the service user itself, as `pgha.service` does.
    let config = c.nodes[0].config.display().to_string();
    let mut cmd = if nix::unistd::geteuid().is_root() {
        let mut r = std::process::Command::new("runuser");
        r.args(["-u", "postgres", "--", env!("CARGO_BIN_EXE_pgha")]);
        r
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_pgha"))
    };
    let out = cmd.args(["run", "--config", &config, "--force-new-cluster"]).output().expect("pgha runs");
    mode(0o755);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "--force-new-cluster must fail when the store cannot be moved aside");
    assert!(stderr.contains("cannot move"), "it says why:\n{stderr}");

    // The lost members return; node1 rejoins its cluster with its unchanged store.
    for i in [1, 2, 0] {
        c.start(i);
    }
    let (_, leader) = c.wait_converged(1, &[0, 1, 2]);
    c.token(c.idx(&leader));
    c.wait_converged(0, &[0, 1, 2]);
}
