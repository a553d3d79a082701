//! The dynamic configuration through the REST API: a change made on one member reaches every
//! member, and bad input (unknown key, impossible timing, malformed JSON, no certificate) is
//! refused with a message and changes nothing.

use crate::harness::{wait_until, Cluster};
use pgha::api::client::{ApiClient, ClientError};
use pgha::config::dynamic::DynamicConfig;
use pgha::tls;
use std::time::Duration;

pub fn client(c: &Cluster, i: usize, with_cert: bool) -> ApiClient {
    let dir = c.nodes[i].tls_dir();
    let ca = tls::load_ca(&dir.join("ca.crt")).expect("CA");
    let auth = with_cert
        .then(|| tls::load_client_auth(&dir.join("ctl.crt"), &dir.join("ctl.key")).expect("ctl cert"));
    let config = tls::api_client_config(&ca, auth).expect("client config");
    ApiClient::new(vec![c.nodes[i].api.clone()], config, Duration::from_secs(10))
}

fn refused_with(r: Result<(String, DynamicConfig), ClientError>, status: u16, needle: &str) {
    match r {
        Err(ClientError::Refused { status: s, message, .. }) if s == status => {
            assert!(message.contains(needle), "refusal {status} should mention {needle:?}: {message}")
        }
        other => panic!("want {status} mentioning {needle:?}, got {other:?}"),
    }
}

#[test]
fn a_config_change_reaches_every_member_and_bad_ones_change_nothing() {
    let c = Cluster::new(3);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let admin = client(&c, 0, true);
    let patch =
        serde_json::json!({"ttl": 15, "postgresql": {"pg_hba": ["host all all 10.0.0.0/8 scram-sha-256"]}});
    let (_, after) = rt
        .block_on(admin.call::<_, DynamicConfig>(hyper::Method::PATCH, "/config", Some(&patch)))
        .expect("PATCH /config with the ctl certificate");
    assert_eq!(after.ttl, 15);
    for i in 0..3 {
        let reader = client(&c, i, false);
        wait_until(Duration::from_secs(10), &format!("node{} sees the change", i + 1), || {
            let (_, cfg) = rt.block_on(reader.get::<DynamicConfig>("/config")).map_err(|e| e.to_string())?;
            (cfg == after).then_some(()).ok_or(format!("{cfg:?}"))
        });
    }

    let bad = [
        (serde_json::json!({"tll": 20}), "tll"),
        (serde_json::json!({"ttl": 2}), "ttl"),
        (serde_json::json!({"loop_wait": "soon"}), "loop_wait"),
    ];
    for (patch, needle) in bad {
        refused_with(rt.block_on(admin.call(hyper::Method::PATCH, "/config", Some(&patch))), 400, needle);
    }
    refused_with(
        rt.block_on(admin.call(hyper::Method::PUT, "/config", Some(&serde_json::json!([1])))),
        400,
        "object",
    );
    refused_with(
        rt.block_on(client(&c, 1, false).call(
            hyper::Method::PATCH,
            "/config",
            Some(&serde_json::json!({"ttl": 20})),
        )),
        401,
        "certificate",
    );
    let (_, unchanged) = rt.block_on(client(&c, 2, false).get::<DynamicConfig>("/config")).unwrap();
    assert_eq!(unchanged, after, "refused changes left the configuration as it was");

    // PUT replaces: keys not given take their defaults.
    let (_, replaced) = rt
        .block_on(admin.call::<_, DynamicConfig>(
            hyper::Method::PUT,
            "/config",
            Some(&serde_json::json!({"pause": true})),
        ))
        .expect("PUT /config");
    assert_eq!(replaced, DynamicConfig { pause: true, ..DynamicConfig::default() });
    let (_, history) = rt.block_on(admin.get::<Vec<serde_json::Value>>("/history")).unwrap();
    assert!(history.is_empty(), "no promotion yet: {history:?}");
}

#[test]
fn ctl_edit_config_show_config_and_history() {
    let c = Cluster::new(2);
    let edit = c.ctl(0, &["edit-config", "--set", "ttl=12", "--pg", "max_connections=150", "--force"]);
    assert!(edit.status.success(), "{}", crate::harness::show(&edit));
    assert!(
        crate::harness::stdout(&edit).contains("+ ttl: 12"),
        "shows the diff: {}",
        crate::harness::show(&edit)
    );
    wait_until(Duration::from_secs(10), "node2 shows the change", || {
        let out = c.ctl(1, &["show-config", "--format", "json"]);
        let cfg: DynamicConfig =
            serde_json::from_str(&crate::harness::stdout(&out)).map_err(|e| e.to_string())?;
        (cfg.ttl == 12 && cfg.postgresql.parameters.get("max_connections") == Some(&serde_json::json!(150)))
            .then_some(())
            .ok_or(format!("{cfg:?}"))
    });
    let yaml = crate::harness::stdout(&c.ctl(1, &["show-config"]));
    assert!(yaml.contains("ttl: 12"), "YAML by default: {yaml}");

    // An impossible value is refused by the cluster, naming the key; nothing changes.
    let bad = c.ctl(0, &["edit-config", "--set", "ttl=1", "--force"]);
    assert!(!bad.status.success());
    assert!(crate::harness::stderr(&bad).contains("ttl"), "{}", crate::harness::show(&bad));
    // Without --force and without a terminal, it asks instead of changing anything.
    let unconfirmed = c.ctl(0, &["edit-config", "--set", "pause=true"]);
    assert!(!unconfirmed.status.success() && crate::harness::stderr(&unconfirmed).contains("--force"));

    // The editor flow: $EDITOR edits the YAML in place.
    let mut cmd = crate::harness::pgha();
    cmd.args(["ctl", "--config", c.nodes[0].config_str(), "edit-config", "--force"]);
    cmd.env("EDITOR", "sed -i 's/^pause: false/pause: true/'");
    let out = cmd.output().expect("pgha ctl runs");
    assert!(out.status.success(), "{}", crate::harness::show(&out));
    let cfg: DynamicConfig =
        serde_json::from_str(&crate::harness::stdout(&c.ctl(0, &["show-config", "--format", "json"])))
            .unwrap();
    assert!(cfg.pause && cfg.ttl == 12, "{cfg:?}");

    let history = c.ctl(0, &["history"]);
    assert!(history.status.success() && crate::harness::stdout(&history).contains("New Leader"));
}

/// Requests that cannot succeed are refused with the check that failed, and nothing is stored.
#[test]
fn a_switchover_that_cannot_succeed_is_refused_with_the_reason() {
    let c = Cluster::new(2);
    let cases: [(&[&str], &str); 4] = [
        (&["switchover", "--candidate", "node2", "--force"], "no primary"),
        (&["failover", "--candidate", "nobody", "--force"], "nobody is not a member"),
        (&["failover", "--candidate", "node2"], "--force"),
        (&["switchover", "--candidate", "node2", "--scheduled", "tomorrow", "--force"], "scheduled_at"),
    ];
    for (args, needle) in cases {
        let out = c.ctl(0, args);
        assert!(!out.status.success(), "{args:?} must fail: {}", crate::harness::show(&out));
        assert!(
            crate::harness::stderr(&out).contains(needle),
            "{args:?} says {needle:?}: {}",
            crate::harness::show(&out)
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (_, cluster) = rt.block_on(client(&c, 1, false).get::<serde_json::Value>("/cluster")).unwrap();
    assert!(cluster.get("scheduled_switchover").is_none(), "nothing was stored: {cluster}");
    let out = c.ctl(0, &["cancel-switchover"]);
    assert!(!out.status.success() && crate::harness::stderr(&out).contains("no switchover"));
}
