//! `pgha ctl list | topology | dsn | restart | reload | reinit | pause | resume`: the data
//! members as patronictl shows them, and the manual actions on them. `list` reads `/cluster`
//! and prints patronictl 4's columns (JSON keys included, so scripts written for patronictl
//! keep working); the per-member actions call each member's own API, like patronictl does.
//! Like patronictl, an optional first name equal to the cluster's scope is accepted and
//! skipped (`pgha ctl restart pgha node2`).

use super::ctl::confirm;
use crate::api::client::{ApiClient, ClientError};
use crate::ctl::output::{self, Format};
use anyhow::{bail, Context, Result};
use hyper::Method;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// A restart waits for the clean stop and the start.
const RESTART_WAIT: Duration = Duration::from_secs(210);
const ACTION_WAIT: Duration = Duration::from_secs(80);
/// How the API words a restart whose condition (`--pending`, `--role`) does not hold.
use crate::ha::manual::NOT_SATISFIED;

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Cluster name (optional, must be this cluster's scope)
    pub cluster: Option<String>,
    /// Also show the pending restart and tags columns when no member has them, and each
    /// member's pgha version (asked of the member itself: during a rolling upgrade)
    #[arg(long, short = 'e')]
    pub extended: bool,
}

#[derive(clap::Args, Debug)]
pub struct MemberActionArgs {
    /// [cluster] member... (default: every data member)
    pub names: Vec<String>,
    /// Only members in this role
    #[arg(long, short = 'r', value_parser = ["primary", "leader", "replica", "any"], default_value = "any")]
    pub role: String,
    /// Do not ask for confirmation
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Args, Debug)]
pub struct RestartArgs {
    #[command(flatten)]
    pub members: MemberActionArgs,
    /// Only members with a pending restart
    #[arg(long)]
    pub pending: bool,
    /// Seconds the member waits for Postgres to come back
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Only members running an older PostgreSQL than this (e.g. 15.9: after a minor upgrade)
    #[arg(long)]
    pub pg_version: Option<String>,
    /// Restart later, at this time (ISO 8601 with a time zone, e.g. 2026-11-26T03:00:00+00:00);
    /// each member does it itself, `pgha ctl flush MEMBER restart` cancels
    #[arg(long)]
    pub scheduled: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct FlushArgs {
    /// [cluster] [member...] then what to cancel: `restart` (scheduled restarts of those
    /// members, default all) or `switchover` (the scheduled switchover)
    #[arg(required = true)]
    pub args: Vec<String>,
    /// Do not ask for confirmation
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Args, Debug)]
pub struct DsnArgs {
    /// A member's name (or the cluster's, as patronictl takes it)
    #[arg(value_name = "MEMBER")]
    pub cluster: Option<String>,
    /// Whose DSN: the primary (default), a streaming replica, or any member
    #[arg(long, short = 'r', value_parser = ["primary", "leader", "replica", "any"], default_value = "primary")]
    pub role: String,
    /// A named member instead
    #[arg(long, short = 'm')]
    pub member: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct PauseArgs {
    /// Cluster name (optional, must be this cluster's scope)
    pub cluster: Option<String>,
    /// Wait until every member reports the new state
    #[arg(long)]
    pub wait: bool,
}

async fn cluster(api: &ApiClient) -> Result<Value> {
    let (_, c): (_, Value) = api.get("/cluster").await?;
    Ok(c)
}

fn scope_of(c: &Value) -> &str {
    c["scope"].as_str().unwrap_or("")
}

/// Refuses a cluster name that is not ours (patronictl takes it as the first argument).
fn check_cluster(c: &Value, name: Option<&str>) -> Result<()> {
    match name {
        Some(n) if n != scope_of(c) => {
            bail!("this config manages cluster {:?}, not {n:?} (the cluster name is optional)", scope_of(c))
        }
        _ => Ok(()),
    }
}

fn members(c: &Value) -> Vec<Value> {
    c["members"].as_array().cloned().unwrap_or_default()
}

/// Patroni's lag in MB, or "" when unknown (a leader has none).
fn lag_mb(v: &Value) -> Value {
    match v.as_u64() {
        Some(bytes) => Value::from((bytes as f64 / 1024.0 / 1024.0).round() as u64),
        None => Value::from(""),
    }
}

fn text(v: &Value) -> Value {
    match v {
        Value::Null => Value::from(""),
        other => other.clone(),
    }
}

/// One patronictl `list` row per member (its JSON keys), in `/cluster`'s order.
pub fn list_rows(c: &Value) -> Vec<Map<String, Value>> {
    let ms = members(c);
    let mut hosts: Vec<&str> = ms.iter().filter_map(|m| m["host"].as_str()).collect();
    let n = hosts.len();
    hosts.sort();
    hosts.dedup();
    // patronictl: host:port when a port is not 5432 or two members share a host.
    let append_port = ms.iter().any(|m| m["port"].as_u64().is_some_and(|p| p != 5432)) || hosts.len() < n;
    ms.iter()
        .map(|m| {
            let host = m["host"].as_str().unwrap_or("");
            let host = match m["port"].as_u64() {
                Some(p) if append_port && !host.is_empty() => format!("{host}:{p}"),
                _ => host.to_string(),
            };
            let role = m["role"].as_str().unwrap_or("").replace('_', " ");
            let role: String = role
                .split(' ')
                .map(|w| {
                    let mut ch = w.chars();
                    ch.next().map(|f| f.to_uppercase().chain(ch).collect::<String>()).unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join(" ");
            let mut row = Map::new();
            row.insert("Cluster".into(), c["scope"].clone());
            row.insert("Member".into(), m["name"].clone());
            row.insert("Host".into(), host.into());
            row.insert("Role".into(), role.into());
            row.insert("State".into(), text(&m["state"]));
            row.insert("TL".into(), text(&m["timeline"]));
            row.insert("Receive LSN".into(), text(&m["receive_lsn"]));
            row.insert("Receive Lag".into(), lag_mb(&m["receive_lag"]));
            row.insert("Replay LSN".into(), text(&m["replay_lsn"]));
            row.insert("Replay Lag".into(), lag_mb(&m["replay_lag"]));
            let pending = if m["pending_restart"] == true { "*" } else { "" };
            row.insert("Pending restart".into(), pending.into());
            row.insert(
                "Scheduled restart".into(),
                m["scheduled_restart"]["schedule"].as_str().unwrap_or("").into(),
            );
            row.insert("Tags".into(), if m["tags"].is_object() { m["tags"].clone() } else { "".into() });
            if let Some(v) = m.get("version") {
                row.insert("Version".into(), v.clone());
            }
            row
        })
        .collect()
}

const LIST_COLUMNS: [&str; 10] = [
    "Cluster",
    "Member",
    "Host",
    "Role",
    "State",
    "TL",
    "Receive LSN",
    "Receive Lag",
    "Replay LSN",
    "Replay Lag",
];

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Object(o) => o.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// The table (or JSON/YAML) of `ctl list`; `topology` indents replicas under the primary.
pub fn list_output(c: &Value, format: Format, extended: bool, topology: bool) -> String {
    let mut rows = list_rows(c);
    if topology {
        rows.sort_by_key(|r| r["Role"] != "Leader");
        for r in rows.iter_mut().filter(|r| r["Role"] != "Leader") {
            let name = format!("+ {}", cell(&r["Member"]));
            r.insert("Member".into(), name.into());
        }
    }
    let mut columns: Vec<&str> = LIST_COLUMNS.to_vec();
    for extra in ["Pending restart", "Scheduled restart", "Tags", "Version"] {
        let present = rows.iter().any(|r| r.contains_key(extra));
        if present && (extended || rows.iter().any(|r| !cell(&r[extra]).is_empty())) {
            columns.push(extra);
        }
    }
    let title = format!(" Cluster: {} ", scope_of(c));
    match format {
        Format::Table => {
            let table_rows: Vec<Vec<String>> =
                rows.iter().map(|r| columns.iter().map(|k| cell(&r[*k])).collect()).collect();
            let table = output::table(&columns, &table_rows);
            // The cluster name in the top border, as patronictl prints it.
            let mut lines = table.lines();
            let top = lines.next().unwrap_or("");
            let titled = if top.len() > title.len() + 2 {
                format!("{}{}{}", &top[..1], title, &top[1 + title.len()..])
            } else {
                top.to_string()
            };
            let mut out = titled + "\n";
            for l in lines {
                out.push_str(l);
                out.push('\n');
            }
            let sync = &c["synchronous_mode"];
            if sync["degraded"] == true {
                out.push_str(&format!(
                    " Synchronous mode {}: DEGRADED, no synchronous standby streams; commits are acknowledged asynchronously\n",
                    cell(&sync["mode"])
                ));
            } else if sync.is_object() && sync["sync_standbys"].as_array().is_some_and(Vec::is_empty) {
                out.push_str(&format!(
                    " Synchronous mode {}{}: no synchronous standby published yet; commits wait for one and no member takes over automatically\n",
                    cell(&sync["mode"]),
                    if sync["strict"] == true { " (strict)" } else { "" }
                ));
            } else if sync["quorum"].is_number() {
                out.push_str(&format!(
                    " Synchronous mode quorum: each commit is acknowledged by {} of the quorum standbys\n",
                    cell(&sync["quorum"])
                ));
            }
            out
        }
        Format::Json | Format::Yaml => output::render(format, &rows, &[], |_| Vec::new()),
    }
}

pub async fn list(api: &ApiClient, args: ListArgs, format: Format, topology: bool) -> Result<()> {
    let mut c = cluster(api).await?;
    check_cluster(&c, args.cluster.as_deref())?;
    if args.extended {
        add_versions(api, &mut c).await;
    }
    print!("{}", list_output(&c, format, args.extended, topology));
    Ok(())
}

pub async fn dsn(api: &ApiClient, args: DsnArgs) -> Result<()> {
    let c = cluster(api).await?;
    // `dsn NAME`: the cluster's name (patronictl's first argument) or a member's.
    let positional_member = args.cluster.clone().filter(|n| n != scope_of(&c));
    let mut query = format!("/dsn?role={}", args.role);
    if let Some(m) = args.member.as_ref().or(positional_member.as_ref()) {
        query.push_str(&format!("&member={m}"));
    }
    let (_, v): (_, Value) = api.get(&query).await?;
    println!("{}", v["dsn"].as_str().context("the API sent no dsn")?);
    Ok(())
}

/// The members a per-member action applies to, with their API addresses.
fn targets(c: &Value, args: &MemberActionArgs) -> Result<Vec<(String, String)>> {
    let mut names: &[String] = &args.names;
    if names.first().is_some_and(|n| n == scope_of(c)) && !members(c).iter().any(|m| m["name"] == scope_of(c))
    {
        names = &names[1..];
    }
    let all = members(c);
    for n in names {
        if !all.iter().any(|m| m["name"] == n.as_str()) {
            bail!("{n} is not a data member of cluster {}", scope_of(c));
        }
    }
    let want_role = |m: &Value| match args.role.as_str() {
        "primary" | "leader" => m["role"] == "leader",
        "replica" => m["role"] != "leader",
        _ => true,
    };
    let chosen: Vec<(String, String)> = all
        .iter()
        .filter(|m| names.is_empty() || names.iter().any(|n| m["name"] == n.as_str()))
        .filter(|m| want_role(m))
        .filter_map(|m| {
            let name = m["name"].as_str()?.to_string();
            let url = m["api_url"].as_str()?;
            let addr = url.trim_start_matches("https://").split('/').next()?.to_string();
            Some((name, addr))
        })
        .collect();
    if chosen.is_empty() {
        bail!("no member matches (role {})", args.role);
    }
    Ok(chosen)
}

/// Runs `path` on each member; reports each outcome; fails if any failed.
async fn on_each(
    api: &ApiClient,
    what: &str,
    targets: &[(String, String)],
    path: &str,
    body: Value,
    wait: Duration,
) -> Result<()> {
    let mut failed = 0;
    for (name, addr) in targets {
        match api.with_endpoint(addr.clone()).with_timeout(wait).post_text(path, &body).await {
            Ok((_, text)) => println!("Success: {what} on member {name}: {}", text.trim()),
            // `restart --pending` on a member with nothing pending: nothing to do, not a failure.
            Err(ClientError::Refused { message, .. }) if message.starts_with(NOT_SATISFIED) => {
                println!("Skipped: {what} on member {name}: {message}")
            }
            Err(e) => {
                failed += 1;
                println!("Failed: {what} for member {name}: {e}");
            }
        }
    }
    if failed > 0 {
        bail!("{what} failed on {failed} of {} member(s)", targets.len());
    }
    Ok(())
}

pub async fn restart(api: &ApiClient, args: RestartArgs) -> Result<()> {
    let c = cluster(api).await?;
    let t = targets(&c, &args.members)?;
    if !args.members.force {
        let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
        confirm(&format!("Restart Postgres on {}?", names.join(", ")))?;
    }
    let mut body = json!({ "restart_pending": args.pending });
    if let Some(s) = args.timeout {
        body["timeout"] = s.into();
    }
    if let Some(v) = args.pg_version {
        body["postgres_version"] = v.into();
    }
    if let Some(at) = args.scheduled {
        body["schedule"] = at.into();
    }
    on_each(api, "restart", &t, "/restart", body, RESTART_WAIT).await
}

/// `ctl flush [MEMBER...] restart|switchover`, patronictl's way to cancel what was scheduled.
pub async fn flush(api: &ApiClient, args: FlushArgs) -> Result<()> {
    let mut names = args.args;
    let what = names.pop().unwrap_or_default();
    let c = cluster(api).await?;
    match what.as_str() {
        "switchover" => {
            let (_, d): (_, crate::api::model::Done) = api.delete("/switchover").await?;
            println!("{}", d.message);
            Ok(())
        }
        "restart" => {
            let all = names.is_empty();
            let t = targets(&c, &MemberActionArgs { names, role: "any".into(), force: true })?;
            if !args.force {
                let list: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
                confirm(&format!("Cancel the scheduled restart of {}?", list.join(", ")))?;
            }
            let mut failed = 0;
            for (name, addr) in &t {
                match api.with_endpoint(addr.clone()).call_text(Method::DELETE, "/restart", None::<&()>).await {
                    Ok((_, text)) => println!("Success: flush scheduled restart for member {name}: {}", text.trim()),
                    // Flushing every member: those with nothing scheduled are no failure.
                    Err(ClientError::Refused { status: 404, .. }) if all => {}
                    Err(e) => {
                        failed += 1;
                        println!("Failed: flush scheduled restart for member {name}: {e}");
                    }
                }
            }
            if failed > 0 {
                bail!("flush failed on {failed} of {} member(s)", t.len());
            }
            Ok(())
        }
        other => bail!("flush {other:?}: name what to cancel, `restart` or `switchover` (e.g. pgha ctl flush node2 restart)"),
    }
}

pub async fn reload(api: &ApiClient, args: MemberActionArgs) -> Result<()> {
    let c = cluster(api).await?;
    let t = targets(&c, &args)?;
    if !args.force {
        let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
        confirm(&format!("Reload the configuration of {}?", names.join(", ")))?;
    }
    on_each(api, "reload", &t, "/reload", json!({}), ACTION_WAIT).await
}

pub async fn reinit(api: &ApiClient, args: MemberActionArgs) -> Result<()> {
    let c = cluster(api).await?;
    if args.names.iter().all(|n| n == scope_of(&c)) {
        bail!("name the member(s) to reinitialize: pgha ctl reinit <member>");
    }
    let t = targets(&c, &args)?;
    if !args.force {
        let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
        confirm(&format!("Wipe and re-clone {} from the primary?", names.join(", ")))?;
    }
    on_each(api, "reinitialize", &t, "/reinitialize", json!({}), ACTION_WAIT).await
}

/// `ctl version`: like patronictl's, the client's version, then each member's (from its
/// `/patroni`), so a rolling upgrade shows where it stands.
pub async fn version(api: &ApiClient, format: Format) -> Result<()> {
    let c = cluster(api).await?;
    let mut rows = Vec::new();
    for (name, answer) in member_versions(api, &c).await? {
        let (pgha, pg) = answer.unwrap_or_else(|e| {
            eprintln!("{name}: unreachable ({e})");
            (None, None)
        });
        rows.push(json!({"Member": name, "pgha": pgha, "PostgreSQL": pg}));
    }
    match format {
        Format::Table => {
            println!("pgha ctl version {}", crate::VERSION);
            for r in &rows {
                let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
                println!(
                    "{}: pgha {} PostgreSQL {}",
                    text(&r["Member"]),
                    text(&r["pgha"]),
                    text(&r["PostgreSQL"])
                );
            }
        }
        _ => {
            let doc = json!({"ctl": crate::VERSION, "members": rows});
            print!("{}", output::render(format, &doc, &[], |_| Vec::new()));
        }
    }
    Ok(())
}

/// A member's pgha and PostgreSQL versions, or why it did not answer.
type Versions = Result<(Option<String>, Option<String>), crate::api::client::ClientError>;

/// Each data member's versions, asked of its own `/patroni` (the replicated state only knows
/// the version a member joined with).
async fn member_versions(api: &ApiClient, c: &Value) -> Result<Vec<(String, Versions)>> {
    let all = MemberActionArgs { names: vec![], role: "any".into(), force: true };
    let mut out = Vec::new();
    for (name, addr) in targets(c, &all)? {
        let answer = api.with_endpoint(addr).get::<Value>("/patroni").await.map(|(_, v)| {
            let pg = v["server_version"].as_u64().map(|n| format!("{}.{}", n / 10000, n % 10000));
            (v["patroni"]["version"].as_str().map(String::from), pg)
        });
        out.push((name, answer));
    }
    Ok(out)
}

/// `ctl list -e`: each member's pgha version in its row, `?` for a member that does not answer.
async fn add_versions(api: &ApiClient, c: &mut Value) {
    let Ok(versions) = member_versions(api, c).await else { return };
    let versions: std::collections::BTreeMap<String, String> = versions
        .into_iter()
        .map(|(name, v)| (name, v.ok().and_then(|(pgha, _)| pgha).unwrap_or_else(|| "?".into())))
        .collect();
    if let Some(members) = c["members"].as_array_mut() {
        for m in members {
            let v = m["name"].as_str().and_then(|n| versions.get(n)).cloned().unwrap_or_else(|| "?".into());
            m["version"] = v.into();
        }
    }
}

/// `pause` / `resume`: the dynamic config's `pause`, then (with `--wait`) until every member
/// shows it.
pub async fn toggle_pause(api: &ApiClient, args: PauseArgs, pause: bool) -> Result<()> {
    let c = cluster(api).await?;
    check_cluster(&c, args.cluster.as_deref())?;
    let (_, config): (_, Value) = api.get("/config").await?;
    if config["pause"].as_bool().unwrap_or(false) == pause {
        bail!("Cluster is {} paused", if pause { "already" } else { "not" });
    }
    let patch = json!({ "pause": if pause { Value::Bool(true) } else { Value::Null } });
    let _: (_, Value) = api.call(hyper::Method::PATCH, "/config", Some(&patch)).await?;
    let word = if pause { "paused" } else { "resumed" };
    if args.wait {
        for _ in 0..30 {
            let mut all = true;
            for (_, addr) in
                targets(&c, &MemberActionArgs { names: vec![], role: "any".into(), force: true })?
            {
                let seen: Result<(_, Value), _> = api.with_endpoint(addr).get("/patroni").await;
                let shown = seen.map(|(_, v)| v["pause"].as_bool().unwrap_or(false)).unwrap_or(!pause);
                all &= shown == pause;
            }
            if all {
                break;
            }
            crate::clock::sleep(Duration::from_secs(1)).await;
        }
    }
    println!("Success: cluster management is {word}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        json!({
            "scope": "demo",
            "members": [
                {"name": "node1", "role": "leader", "state": "running", "api_url": "https://127.0.0.1:8008/patroni",
                 "host": "127.0.0.1", "port": 5432, "timeline": 2},
                {"name": "node2", "role": "replica", "state": "streaming", "api_url": "https://127.0.0.1:8009/patroni",
                 "host": "127.0.0.1", "port": 5433, "timeline": 2, "receive_lsn": "0/3000148", "receive_lag": 3145728,
                 "replay_lsn": "0/3000100", "replay_lag": 0, "pending_restart": true, "tags": {"nofailover": true}},
                {"name": "node3", "role": "sync_standby", "state": "streaming", "api_url": "https://127.0.0.1:8010/patroni",
                 "host": "127.0.0.1", "port": 5434}
            ]
        })
    }

    #[test]
    fn list_rows_have_patronictl_keys_and_values() {
        let rows = list_rows(&sample());
        let keys: Vec<&str> = rows[0].keys().map(String::as_str).collect();
        let mut expected = vec![
            "Cluster",
            "Member",
            "Host",
            "Role",
            "Scheduled restart",
            "State",
            "TL",
            "Receive LSN",
            "Receive Lag",
            "Replay LSN",
            "Replay Lag",
            "Pending restart",
            "Tags",
        ];
        expected.sort();
        assert_eq!(keys, expected);
        assert_eq!(rows[0]["Role"], "Leader");
        assert_eq!(rows[0]["Host"], "127.0.0.1:5432", "ports differ: host:port");
        assert_eq!(rows[0]["Receive Lag"], "");
        assert_eq!(rows[1]["Receive Lag"], 3, "MB, rounded");
        assert_eq!(rows[1]["Replay Lag"], 0);
        assert_eq!(rows[1]["Pending restart"], "*");
        assert_eq!(rows[2]["Role"], "Sync Standby");
        assert_eq!(rows[2]["TL"], "");
    }

    #[test]
    fn the_table_names_the_cluster_and_shows_extra_columns_only_when_used() {
        let t = list_output(&sample(), Format::Table, false, false);
        assert!(t.starts_with("+ Cluster: demo -"), "{t}");
        assert!(t.contains("Pending restart") && t.contains("nofailover: true"), "{t}");
        let mut plain = sample();
        plain["members"][1].as_object_mut().unwrap().remove("pending_restart");
        plain["members"][1].as_object_mut().unwrap().remove("tags");
        let t = list_output(&plain, Format::Table, false, false);
        assert!(!t.contains("Pending restart") && !t.contains("Tags"), "{t}");
        // Versions (ctl list -e adds them) show in their own column.
        let mut versions = plain.clone();
        for m in versions["members"].as_array_mut().unwrap() {
            m["version"] = "0.1.0".into();
        }
        let t = list_output(&versions, Format::Table, true, false);
        assert!(t.contains("| Version |") && t.contains("| 0.1.0   |"), "{t}");
        assert!(!list_output(&plain, Format::Table, true, false).contains("Version"));
        let topo = list_output(&plain, Format::Table, false, true);
        assert!(topo.contains("| + node2"), "{topo}");
    }

    #[test]
    fn action_targets_skip_the_cluster_name_and_filter_by_role() {
        let c = sample();
        let args = |names: &[&str], role: &str| MemberActionArgs {
            names: names.iter().map(|s| s.to_string()).collect(),
            role: role.into(),
            force: true,
        };
        let t = targets(&c, &args(&["demo", "node2"], "any")).unwrap();
        assert_eq!(t, vec![("node2".to_string(), "127.0.0.1:8009".to_string())]);
        assert_eq!(targets(&c, &args(&[], "replica")).unwrap().len(), 2);
        assert_eq!(targets(&c, &args(&[], "primary")).unwrap()[0].0, "node1");
        let err = targets(&c, &args(&["nodeX"], "any")).unwrap_err().to_string();
        assert!(err.contains("nodeX is not a data member"), "{err}");
    }
}
