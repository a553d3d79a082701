//! `pgha ctl`: operate the cluster through the REST API with the ctl client certificate
//! written by `init`/`join`.

use super::ConfigArg;
use crate::api::client::ApiClient;
use crate::api::model::{Done, MemberRow, TokenRequest, TokenResponse, TransferRequest};
use crate::config::file::LocalConfig;
use crate::ctl::output::{self, Format};
use crate::tls;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct CtlArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// REST API address(es) to use, comma-separated host:port [default: this node's restapi.connect_address]
    #[arg(long, env = "PGHA_ENDPOINT", global = true)]
    pub endpoint: Option<String>,
    /// Output format
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// The data members like `patronictl list`: role, state, timeline, LSNs and lag (MB)
    List(super::ctl_members::ListArgs),
    /// Like `list`, replicas indented under the primary
    Topology(super::ctl_members::ListArgs),
    /// A libpq connection string (with the superuser's password) for the primary, a replica or
    /// a named member
    Dsn(super::ctl_members::DsnArgs),
    /// Restart Postgres on members (in the role each has)
    Restart(super::ctl_members::RestartArgs),
    /// Rewrite Postgres' configuration files from the replicated config and reload them
    Reload(super::ctl_members::MemberActionArgs),
    /// Wipe a replica's data directory and clone it again from the primary
    Reinit(super::ctl_members::MemberActionArgs),
    /// This client's version and each data member's pgha and Postgres versions
    Version,
    /// Stop automatic failover and all automatic actions (maintenance mode)
    Pause(super::ctl_members::PauseArgs),
    /// Resume automatic failover
    Resume(super::ctl_members::PauseArgs),
    /// The consensus view, like `etcdctl member list` + `endpoint status`: name, id, Raft
    /// role, term, commit and applied index, address, reachable
    Members,
    /// Join tokens
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Take a member out of the cluster (Raft configuration and state) safely
    Remove {
        /// Member name
        name: String,
        /// Do not ask for confirmation
        #[arg(long)]
        force: bool,
    },
    /// Switch the primary over to a replica with no data loss (clean stop, then promotion)
    Switchover {
        /// The current primary (checked)
        #[arg(long)]
        leader: Option<String>,
        /// The member to promote; default: the best streaming replica
        #[arg(long)]
        candidate: Option<String>,
        /// When, ISO 8601 with a time zone (e.g. 2026-11-25T20:00:00+00:00); default: now
        #[arg(long)]
        scheduled: Option<String>,
        /// Do not ask for confirmation
        #[arg(long)]
        force: bool,
    },
    /// Cancel a scheduled switchover
    CancelSwitchover,
    /// Cancel scheduled actions: `flush [MEMBER...] restart` or `flush switchover`
    Flush(super::ctl_members::FlushArgs),
    /// Promote a named member, also when there is no healthy primary
    Failover {
        #[arg(long)]
        candidate: String,
        /// Do not ask for confirmation
        #[arg(long)]
        force: bool,
    },
    /// Show the dynamic configuration (YAML)
    ShowConfig,
    /// Change the dynamic configuration: in $EDITOR (diff, then confirm), or with --set,
    /// --pg and --apply
    EditConfig(super::ctl_config::EditConfigArgs),
    /// Timeline history: every promotion with its switch LSN
    History,
    /// Hand Raft leadership to another voter (the Postgres primary is not affected)
    TransferLeadership {
        /// Member to lead; default: any other voter
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a one-time join token; prints the token alone on stdout
    Create {
        /// How long the token stays valid: seconds, or with a unit (30m, 1h, 2d)
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
    },
}

/// The API waits up to 60 s for a switchover to complete; ctl waits a little longer.
const SWITCHOVER_WAIT: Duration = Duration::from_secs(75);

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration: use e.g. 3600, 30m, 1h, 2d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?} has an unknown unit: use s, m, h or d")),
    };
    Ok(Duration::from_secs(n * mult))
}

/// The API client from the config's ctl certificate and the endpoints to try.
pub fn client(config: &ConfigArg, endpoint: Option<&str>) -> Result<ApiClient> {
    let path = config.path();
    let cfg = LocalConfig::load(&path)
        .with_context(|| "pgha ctl reads the ctl certificate paths from the config file".to_string())?;
    let ca = tls::load_ca(&cfg.ctl.cacert)?;
    let auth = tls::load_client_auth(&cfg.ctl.certfile, &cfg.ctl.keyfile)?;
    let endpoints: Vec<String> = match endpoint {
        Some(e) => e.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        // This node first, then every member `pgha run` last recorded, so ctl still works
        // when this node's API is down.
        None => {
            let mut v = vec![cfg.restapi.connect_address().to_string()];
            for a in crate::api::known::read(&cfg.raft.data_dir) {
                if !v.contains(&a) {
                    v.push(a);
                }
            }
            v
        }
    };
    let basic = cfg.ctl.authentication.as_ref().or(cfg.restapi.authentication.as_ref());
    Ok(ApiClient::new(endpoints, tls::api_client_config(&ca, Some(auth))?, Duration::from_secs(10))
        .with_basic_auth(basic))
}

pub async fn run(args: CtlArgs) -> Result<()> {
    let api = client(&args.config, args.endpoint.as_deref())?;
    match args.command {
        CtlCommand::List(a) => super::ctl_members::list(&api, a, args.format, false).await?,
        CtlCommand::Topology(a) => super::ctl_members::list(&api, a, args.format, true).await?,
        CtlCommand::Dsn(a) => super::ctl_members::dsn(&api, a).await?,
        CtlCommand::Restart(a) => super::ctl_members::restart(&api, a).await?,
        CtlCommand::Reload(a) => super::ctl_members::reload(&api, a).await?,
        CtlCommand::Reinit(a) => super::ctl_members::reinit(&api, a).await?,
        CtlCommand::Version => super::ctl_members::version(&api, args.format).await?,
        CtlCommand::Pause(a) => super::ctl_members::toggle_pause(&api, a, true).await?,
        CtlCommand::Resume(a) => super::ctl_members::toggle_pause(&api, a, false).await?,
        CtlCommand::Members => {
            let (_, rows): (_, Vec<MemberRow>) = api.get("/members").await?;
            print!("{}", members_output(args.format, &rows));
        }
        CtlCommand::Token { command: TokenCommand::Create { ttl } } => {
            let (_, t): (_, TokenResponse) =
                api.post("/token", &TokenRequest { ttl: Some(ttl.as_secs()) }).await?;
            println!("{}", t.token);
        }
        CtlCommand::Remove { name, force } => {
            if !force {
                confirm(&format!("Remove member {name} from the cluster?"))?;
            }
            let (_, d): (_, Done) = api.delete(&format!("/members/{name}")).await?;
            eprintln!("{}", d.message);
        }
        CtlCommand::Switchover { leader, candidate, scheduled, force } => {
            if !force {
                let to = candidate.as_deref().unwrap_or("the best replica");
                let when = scheduled.as_deref().unwrap_or("now");
                confirm(&format!("Switch over to {to} {when}?"))?;
            }
            // Like patronictl: without --leader, the current leader (the API checks it again).
            let leader = match leader {
                Some(l) => Some(l),
                None => {
                    let (_, c): (_, serde_json::Value) = api.get("/cluster").await?;
                    let members = c["members"].as_array().cloned().unwrap_or_default();
                    members
                        .iter()
                        .find(|m| m["role"] == "leader")
                        .and_then(|m| m["name"].as_str().map(String::from))
                }
            };
            let body =
                serde_json::json!({"leader": leader, "candidate": candidate, "scheduled_at": scheduled});
            let (_, d): (_, Done) =
                api.clone().with_timeout(SWITCHOVER_WAIT).post("/switchover", &body).await?;
            println!("{}", d.message);
        }
        CtlCommand::CancelSwitchover => {
            let (_, d): (_, Done) = api.delete("/switchover").await?;
            println!("{}", d.message);
        }
        CtlCommand::Flush(a) => super::ctl_members::flush(&api, a).await?,
        CtlCommand::Failover { candidate, force } => {
            if !force {
                confirm(&format!("Fail over to {candidate}? The current primary, if any, is stopped."))?;
            }
            let (_, d): (_, Done) = api
                .clone()
                .with_timeout(SWITCHOVER_WAIT)
                .post("/failover", &serde_json::json!({"candidate": candidate}))
                .await?;
            println!("{}", d.message);
        }
        CtlCommand::ShowConfig => super::ctl_config::show_config(&api, args.format).await?,
        CtlCommand::EditConfig(edit) => super::ctl_config::edit_config(&api, edit).await?,
        CtlCommand::History => super::ctl_config::history(&api, args.format).await?,
        CtlCommand::TransferLeadership { to } => {
            let (_, d): (_, Done) = api.post("/raft/transfer", &TransferRequest { to }).await?;
            eprintln!("{}", d.message);
        }
    }
    Ok(())
}

pub fn members_output(format: Format, rows: &[MemberRow]) -> String {
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    output::render(
        format,
        &rows,
        &["Name", "ID", "Role", "Witness", "Term", "Commit", "Applied", "Address", "Reachable"],
        |rows| {
            rows.iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        r.id.clone(),
                        r.role.clone(),
                        if r.witness { "yes" } else { "no" }.into(),
                        opt(r.term),
                        opt(r.commit_index),
                        opt(r.applied_index),
                        r.address.clone(),
                        if r.reachable { "yes" } else { "no" }.into(),
                    ]
                })
                .collect()
        },
    )
}

pub(crate) fn confirm(question: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("{question} needs confirmation: run it in a terminal or add --force");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        bail!("aborted; nothing changed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_garbage() {
        let cases = [
            ("3600", Some(3600)),
            ("30m", Some(1800)),
            ("1h", Some(3600)),
            ("2d", Some(172800)),
            ("5x", None),
            ("h", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text).ok().map(|d| d.as_secs()), want, "{text:?}");
        }
    }
}
