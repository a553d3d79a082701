//! Bad input from an operator: unknown config keys, `init` run twice, a service user that does
//! not exist. Each must be refused (or be harmless) with a message naming what is wrong.

use crate::harness::{self, show, stderr, Cluster};

#[test]
fn a_config_with_an_unknown_key_is_refused_naming_the_key_and_the_file() {
    let mut c = Cluster::empty();
    let cases = [("top", "colour: blue\n", "colour"), ("nested", "log:\n  levle: debug\n", "levle")];
    for (label, extra, key) in cases {
        let i = c.add_node_as(label, label, extra);
        let out = harness::run(&["run", "--config", c.nodes[i].config_str()]);
        assert!(!out.status.success(), "{label}: run must fail: {}", show(&out));
        let err = stderr(&out);
        assert!(err.contains(key), "{label}: stderr names {key:?}: {}", show(&out));
        assert!(err.contains(c.nodes[i].config_str()), "{label}: stderr names the file: {}", show(&out));
    }
}

#[test]
fn init_twice_is_harmless() {
    let c = {
        let mut c = Cluster::empty();
        c.add_node("node1");
        c
    };
    let token = c.init(0);
    assert!(!token.is_empty(), "init prints a token");
    let tls = c.nodes[0].tls_dir();
    let files = ["ca.crt", "node.crt", "node.key", "ctl.crt", "ctl.key"];
    let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(tls.join(f)).expect("tls file")).collect();
    let meta = c.nodes[0].raft_dir().join("member.json");
    let meta_before = std::fs::read(&meta).expect("member.json");

    let out = harness::run(&["init", "--config", c.nodes[0].config_str()]);
    assert!(out.status.success(), "a second init exits 0: {}", show(&out));
    assert!(stderr(&out).contains("already initialized"), "it says so: {}", show(&out));
    let after: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(tls.join(f)).expect("tls file")).collect();
    assert!(before == after, "certificates and keys are unchanged");
    assert_eq!(std::fs::read(&meta).expect("member.json"), meta_before, "the Raft identity is unchanged");
}

#[test]
fn a_service_user_that_does_not_exist_stops_run_naming_the_user() {
    if !pgha::sys::user::is_root() {
        eprintln!("skipped: only root switches to the configured user");
        return;
    }
    let mut c = Cluster::empty();
    let i = c.add_node("node1");
    let path = c.nodes[i].config.clone();
    let text = std::fs::read_to_string(&path).expect("config");
    let text = text.replace(&format!("user: {}", c.user), "user: no-such-user-xyz");
    std::fs::write(&path, text).expect("rewrite config");
    let out = harness::run(&["run", "--config", c.nodes[i].config_str()]);
    assert!(!out.status.success(), "run must fail: {}", show(&out));
    assert!(stderr(&out).contains("no-such-user-xyz"), "stderr names the user: {}", show(&out));
}
