//! `pgha join`: become a member of an existing cluster with a one-time token.

use super::files::Written;
use super::init::{advertised_hosts, load_or_build, new_member};
use super::ConfigArg;
use crate::api::client::ApiClient;
use crate::api::model::{JoinRequest, JoinResponse};
use crate::api::token::JoinToken;
use crate::dcs::meta::MemberMeta;
use crate::tls::pki::{self, Identity, Role};
use anyhow::{bail, Context, Result};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct JoinArgs {
    /// Join token from `pgha init` or `pgha ctl token create`
    pub token: String,
    #[command(flatten)]
    pub config: ConfigArg,
    /// This member's name (unique in the cluster)
    #[arg(long)]
    pub name: Option<String>,
    /// Address (IP or DNS name) other nodes use to reach this one
    #[arg(long)]
    pub advertise: Option<String>,
    /// Join as a Raft-only witness (votes, holds no Postgres): size consensus 2F+1
    /// independently of the number of database nodes
    #[arg(long)]
    pub witness: bool,
}

pub async fn run(args: JoinArgs) -> Result<()> {
    let token = JoinToken::decode(&args.token)?;
    let path = args.config.path();
    let (cfg, new_text) = load_or_build(
        &path,
        args.name.as_deref(),
        Some(&token.scope),
        args.advertise.as_deref(),
        args.witness,
    )?;
    if MemberMeta::exists(&cfg.raft.data_dir) {
        bail!(
            "{} already belongs to a cluster ({} exists); to join again, stop pgha and remove {}",
            cfg.name,
            MemberMeta::path(&cfg.raft.data_dir).display(),
            cfg.raft.data_dir.display()
        );
    }
    Written::service_user(&cfg.user)?;
    let member_id = Identity { scope: token.scope.clone(), role: Role::Member, name: cfg.name.clone() };
    let client_id = Identity { scope: token.scope.clone(), role: Role::Client, name: cfg.name.clone() };
    let (csr_pem, key_pem) = pki::make_csr(&member_id, &advertised_hosts(&cfg))?;
    let (ctl_csr_pem, ctl_key_pem) = pki::make_csr(&client_id, &[])?;

    // The cluster is verified by the CA fingerprint before the secret leaves this machine.
    let (tls, pinned) = crate::tls::pinned_client_config(&token.fp)?;
    let client = ApiClient::new(token.api.clone(), tls, Duration::from_secs(15));
    let req = JoinRequest { secret: token.secret.clone(), member: new_member(&cfg), csr_pem, ctl_csr_pem };
    let (endpoint, resp): (String, JoinResponse) =
        client.post("/join", &req).await.context("the cluster did not admit this node")?;
    let ca_der = pinned.get().context("the pinned CA certificate was not captured during the handshake")?;
    if pki::fingerprint_der(ca_der.as_ref()) != token.fp.to_lowercase().replace(':', "") {
        bail!("the CA the cluster returned does not match the token's fingerprint; nothing was written");
    }
    if pki::fingerprint(&resp.ca_pem)? != pki::fingerprint_der(ca_der.as_ref()) {
        bail!("{endpoint} returned a CA certificate other than the one it presented; nothing was written");
    }

    let mut w = Written::default();
    w.write(&cfg.tls.cafile, resp.ca_pem.as_bytes(), 0o644)?;
    w.write(&cfg.tls.certfile, resp.cert_pem.as_bytes(), 0o644)?;
    w.write(&cfg.tls.keyfile, key_pem.as_bytes(), 0o600)?;
    if cfg.ctl.cacert != cfg.tls.cafile {
        w.write(&cfg.ctl.cacert, resp.ca_pem.as_bytes(), 0o644)?;
    }
    w.write(&cfg.ctl.certfile, resp.ctl_cert_pem.as_bytes(), 0o644)?;
    w.write(&cfg.ctl.keyfile, ctl_key_pem.as_bytes(), 0o600)?;
    MemberMeta {
        scope: resp.scope.clone(),
        name: cfg.name.clone(),
        node_id: resp.node_id,
        incarnation: resp.incarnation.clone(),
        seed_peers: resp.members.iter().map(|m| (m.node_id, m.raft_address.clone())).collect(),
    }
    .save(&cfg.raft.data_dir)?;
    w.add_tree(&cfg.raft.data_dir);
    if let Some(text) = new_text {
        w.write(&path, text.as_bytes(), 0o644)?;
    }
    w.hand_over(&cfg.user)?;
    eprintln!(
        "{name} joined cluster {scope} as node {id} (admitted by {endpoint}){witness}.\nStart it with `systemctl enable --now pgha` or `pgha run --config {cfg}`: it catches up as a learner and becomes a voter.",
        name = cfg.name,
        scope = resp.scope,
        id = resp.node_id,
        witness = if cfg.witness { " as a witness" } else { "" },
        cfg = path.display()
    );
    Ok(())
}
