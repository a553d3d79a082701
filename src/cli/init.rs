//! `pgha init`: create a new cluster on this node.

use super::files::Written;
use super::ConfigArg;
use crate::api::token::{self, JoinToken};
use crate::clock;
use crate::config::file::LocalConfig;
use crate::dcs::bootstrap;
use crate::dcs::meta::MemberMeta;
use crate::dcs::state::{self, CaMaterial, ClusterState, NewMember};
use crate::tls::pki::{self, Identity, Role};
use crate::types::NodeId;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Join tokens printed by `init` live one hour (DESIGN.md).
const INIT_TOKEN_TTL_MS: u64 = 3600 * 1000;

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// This member's name (unique in the cluster)
    #[arg(long)]
    pub name: Option<String>,
    /// Cluster name
    #[arg(long)]
    pub scope: Option<String>,
    /// Address (IP or DNS name) other nodes use to reach this one
    #[arg(long)]
    pub advertise: Option<String>,
}

/// Host part of `host:port` (brackets of IPv6 removed).
pub fn host_of(address: &str) -> String {
    address
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(address)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// A config file text for a node made from flags, with pgha's default ports.
pub fn config_from_flags(scope: &str, name: &str, advertise: &str, witness: bool) -> String {
    let adv = if advertise.contains(':') { format!("[{advertise}]") } else { advertise.to_string() };
    let mut s = format!(
        "scope: {scope}\nname: {name}\nrestapi:\n  listen: 0.0.0.0:8008\n  connect_address: {adv}:8008\nraft:\n  listen: 0.0.0.0:5010\n  connect_address: {adv}:5010\n"
    );
    if witness {
        s.push_str("witness: true\n");
    } else {
        s.push_str(&format!("postgresql:\n  listen: 0.0.0.0:5432\n  connect_address: {adv}:5432\n"));
    }
    s
}

/// Loads the config file if it exists (flags must agree with it), else builds one from flags.
/// Returns the config and its text when it is new (to be written).
pub fn load_or_build(
    path: &Path,
    name: Option<&str>,
    scope: Option<&str>,
    advertise: Option<&str>,
    witness: bool,
) -> Result<(LocalConfig, Option<String>)> {
    if path.exists() {
        let cfg = LocalConfig::load(path)?;
        if let Some(n) = name {
            if n != cfg.name.as_str() {
                bail!(
                    "--name {n} disagrees with name: {} in {}; drop the flag or edit the file",
                    cfg.name,
                    path.display()
                );
            }
        }
        if let Some(s) = scope {
            if s != cfg.scope {
                bail!(
                    "--scope {s} disagrees with scope: {} in {}; drop the flag or edit the file",
                    cfg.scope,
                    path.display()
                );
            }
        }
        if witness && !cfg.witness {
            bail!("--witness given but {} does not say `witness: true`", path.display());
        }
        return Ok((cfg, None));
    }
    let name = name.with_context(|| {
        format!(
            "{} does not exist: give --name and --advertise to create it, or write it first",
            path.display()
        )
    })?;
    let advertise = advertise.with_context(|| {
        format!(
            "{} does not exist: give --advertise (an IP or DNS name other nodes can reach)",
            path.display()
        )
    })?;
    let text = config_from_flags(scope.unwrap_or("pgha"), name, advertise, witness);
    let cfg = LocalConfig::from_yaml_str(&text, path)?;
    Ok((cfg, Some(text)))
}

/// Hosts this node's certificate names: the hosts of its connect addresses.
pub fn advertised_hosts(cfg: &LocalConfig) -> Vec<String> {
    let mut hosts = vec![host_of(cfg.restapi.connect_address()), host_of(cfg.raft.connect_address())];
    if !cfg.witness {
        hosts.push(host_of(cfg.postgresql.connect_address()));
    }
    hosts.sort();
    hosts.dedup();
    hosts
}

pub fn new_member(cfg: &LocalConfig) -> NewMember {
    NewMember {
        name: cfg.name.clone(),
        witness: cfg.witness,
        api_address: cfg.restapi.connect_address().to_string(),
        raft_address: cfg.raft.connect_address().to_string(),
        pg_address: (!cfg.witness).then(|| cfg.postgresql.connect_address().to_string()),
        tags: cfg.tags.clone(),
        version: crate::VERSION.to_string(),
    }
}

pub fn run(args: InitArgs) -> Result<()> {
    let path = args.config.path();
    let (cfg, new_text) =
        load_or_build(&path, args.name.as_deref(), args.scope.as_deref(), args.advertise.as_deref(), false)?;
    let raft_dir = cfg.raft.data_dir.clone();
    if MemberMeta::exists(&raft_dir) {
        eprintln!(
            "{} is already initialized ({} exists); nothing to do. Make a join token with `pgha ctl token create`.",
            cfg.name,
            MemberMeta::path(&raft_dir).display()
        );
        return Ok(());
    }
    // Fail early, before writing anything, if the service user is missing.
    Written::service_user(&cfg.user)?;
    let scope = cfg.scope.clone();
    let ca = pki::generate_ca(&scope)?;
    let member_id = Identity { scope: scope.clone(), role: Role::Member, name: cfg.name.clone() };
    let client_id = Identity { scope: scope.clone(), role: Role::Client, name: cfg.name.clone() };
    let node = pki::issue_member_cert(&ca, &member_id, &advertised_hosts(&cfg))?;
    let ctl = pki::issue_client_cert(&ca, &client_id)?;

    let incarnation = bootstrap::new_incarnation();
    let mut st = ClusterState::bootstrap(
        scope.clone(),
        incarnation.clone(),
        new_member(&cfg),
        CaMaterial { cert_pem: ca.cert_pem.clone(), key_pem: ca.key_pem.clone() },
        cfg.bootstrap.dcs.clone(),
    );
    let secret = token::new_secret();
    st.tokens.insert(
        token::secret_hash(&secret),
        state::JoinToken { expires_at_ms: clock::wall_now_ms() + INIT_TOKEN_TTL_MS, used_by: None },
    );

    let mut w = Written::default();
    w.write(&cfg.tls.cafile, ca.cert_pem.as_bytes(), 0o644)?;
    w.write(&cfg.tls.certfile, node.cert_pem.as_bytes(), 0o644)?;
    w.write(&cfg.tls.keyfile, node.key_pem.as_bytes(), 0o600)?;
    if cfg.ctl.cacert != cfg.tls.cafile {
        w.write(&cfg.ctl.cacert, ca.cert_pem.as_bytes(), 0o644)?;
    }
    w.write(&cfg.ctl.certfile, ctl.cert_pem.as_bytes(), 0o644)?;
    w.write(&cfg.ctl.keyfile, ctl.key_pem.as_bytes(), 0o600)?;
    bootstrap::create_store(&raft_dir, &st, NodeId(1))?;
    MemberMeta {
        scope: scope.clone(),
        name: cfg.name.clone(),
        node_id: NodeId(1),
        incarnation,
        seed_peers: Vec::new(),
    }
    .save(&raft_dir)?;
    w.add_tree(&raft_dir);
    if let Some(text) = new_text {
        w.write(&path, text.as_bytes(), 0o644)?;
    }
    w.hand_over(&cfg.user)?;

    let token = JoinToken {
        v: 1,
        scope: scope.clone(),
        fp: pki::fingerprint(&ca.cert_pem)?,
        api: vec![cfg.restapi.connect_address().to_string()],
        secret,
    };
    eprintln!(
        "Initialized cluster {scope} with member {name}. The CA key is kept in the replicated Raft state ({dir}), not in a separate file.\nStart this node (`systemctl enable --now pgha` or `pgha run --config {cfgpath}`), then on each other node run:\n  pgha join <TOKEN> --name <NAME> --advertise <ADDRESS>\nThe token below is valid for one hour and for one node; make more with `pgha ctl token create`.",
        name = cfg.name,
        dir = raft_dir.display(),
        cfgpath = path.display()
    );
    println!("{}", token.encode());
    Ok(())
}
