//! The HTTPS API server (axum over rustls): pgha's own endpoints for membership, join and
//! Raft status. TLS always; `GET`/`HEAD`/`OPTIONS` need no client certificate (Patroni's rule,
//! so health checks and monitoring work), every other method needs a certificate of the
//! cluster CA (401 without one, 403 with one of another scope). The one exception is
//! `POST /join`, which a joiner cannot yet sign: it is authorised by the one-time token secret.
//! No response ever contains a secret (the CA key, token hashes and role passwords stay inside).

use super::client::ApiClient;
use super::error::ApiError;
use super::model::*;
use super::token::{self, JoinToken};
use crate::clock;
use crate::dcs::handle::Handle;
use crate::dcs::state::{ClusterState, Command, Member, Outcome, RaftMembership};
use crate::tls::pki;
use crate::types::MemberName;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use axum_server::tls::TlsInfo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Reads that return a secret: they need a client certificate like changes do.
const SECRET_PATHS: [&str; 1] = ["/dsn"];
/// Bodies of pgha's API are small JSON documents.
const MAX_BODY: usize = 64 * 1024;
/// A token lives one hour unless asked otherwise (DESIGN.md), at most a week.
const DEFAULT_TOKEN_TTL_S: u64 = 3600;
const MAX_TOKEN_TTL_S: u64 = 7 * 24 * 3600;
/// Deadline for asking a peer for its status in `GET /members`.
const PEER_STATUS_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Clone)]
pub struct ApiContext {
    pub dcs: Handle,
    pub scope: String,
    pub me: MemberName,
    /// This node's `watchdog.safety_margin`, for validating dynamic configuration changes.
    pub safety_margin_s: u64,
    /// This node's configured superuser (`postgresql.authentication.superuser`), for `/dsn`.
    pub superuser: crate::config::file::Credentials,
    /// The local HA loop (`None` on a witness, which runs no Postgres).
    pub ha: Option<crate::ha::control::HaControl>,
    /// Client for peers' APIs (GETs only; presents no certificate).
    pub peers: ApiClient,
    /// `restapi.authentication`: basic auth that changing calls need besides the certificate.
    pub basic_auth: Option<crate::config::file::Credentials>,
    /// The built-in proxy's counters, for `/metrics`.
    pub proxy: Option<std::sync::Arc<crate::proxy::stats::ProxyStats>>,
}

pub fn router(ctx: ApiContext) -> Router {
    Router::new()
        .route("/raft/status", get(raft_status))
        .route("/members", get(members))
        .route("/members/{name}", delete(remove_member))
        .route("/raft/transfer", post(transfer))
        .route("/token", post(create_token))
        .route("/join", post(join))
        .merge(super::patroni::routes())
        .merge(super::node::routes())
        .merge(super::switchover::routes())
        .layer(middleware::from_fn_with_state(ctx.clone(), require_client_cert))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(ctx)
}

/// Serves the API on `listener` (non-blocking) until `shutdown` fires.
pub async fn serve(
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ctx: ApiContext,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        let _ = shutdown.wait_for(|s| *s).await;
        h.graceful_shutdown(Some(Duration::from_secs(2)));
    });
    axum_server::from_tcp_rustls(listener, config)?
        .handle(handle)
        .serve(router(ctx).into_make_service_with_connect_info::<SocketAddr>())
        .await
}

async fn require_client_cert(State(ctx): State<ApiContext>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let reads_secrets = SECRET_PATHS.contains(&req.uri().path());
    if (matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) && !reads_secrets)
        || req.uri().path() == "/join"
    {
        return next.run(req).await;
    }
    let path = req.uri().path().to_string();
    let cert = req.extensions().get::<Arc<TlsInfo>>().and_then(|i| i.peer_certificates.first().cloned());
    let Some(cert) = cert else {
        tracing::warn!(%method, %path, "refused: no client certificate");
        return ApiError::NoClientCert.into_response();
    };
    match pki::peer_identity(&cert, &ctx.scope) {
        Ok(id) => {
            if let Some(want) = &ctx.basic_auth {
                if !basic_auth_matches(req.headers().get(axum::http::header::AUTHORIZATION), want) {
                    tracing::warn!(%method, %path, caller = %id.name, "refused: basic auth missing or wrong");
                    let mut resp = ApiError::BasicAuth.into_response();
                    resp.headers_mut().insert(
                        axum::http::header::WWW_AUTHENTICATE,
                        axum::http::HeaderValue::from_static("Basic realm=\"pgha\""),
                    );
                    return resp;
                }
            }
            tracing::info!(%method, %path, caller = %id.name, role = ?id.role, "admin call");
            next.run(req).await
        }
        Err(e) => {
            tracing::warn!(%method, %path, error = %e, "refused: certificate not valid for this cluster");
            ApiError::Forbidden(e.to_string()).into_response()
        }
    }
}

/// `Authorization: Basic …` carries exactly `want`'s user and password (compared in constant
/// time, so the answer's timing tells nothing about the password).
fn basic_auth_matches(
    header: Option<&axum::http::HeaderValue>,
    want: &crate::config::file::Credentials,
) -> bool {
    use base64::Engine as _;
    let Some(given) = header
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
    else {
        return false;
    };
    let expected = format!("{}:{}", want.username, want.password.as_deref().unwrap_or(""));
    constant_time_eq(&given, expected.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn state(ctx: &ApiContext) -> Result<Arc<ClusterState>, ApiError> {
    ctx.dcs.state().ok_or(ApiError::NotReady)
}

async fn node_status(ctx: &ApiContext) -> Result<NodeStatus, ApiError> {
    let (raft, commit_latency) = ctx.dcs.status_with_latency().await?;
    let lease = ctx.dcs.lease().await?;
    Ok(NodeStatus {
        scope: ctx.scope.clone(),
        raft,
        commit_latency,
        lease,
        version: crate::VERSION.to_string(),
    })
}

async fn raft_status(State(ctx): State<ApiContext>) -> Result<Json<NodeStatus>, ApiError> {
    Ok(Json(node_status(&ctx).await?))
}

/// The consensus view, like `etcdctl member list` + `endpoint status`: every member's own
/// Raft status, asked concurrently with a deadline; a member that does not answer is shown
/// unreachable with what the replicated state knows of it.
async fn members(State(ctx): State<ApiContext>) -> Result<Json<Vec<MemberRow>>, ApiError> {
    let st = state(&ctx)?;
    let mut tasks = tokio::task::JoinSet::new();
    for m in st.members.values().cloned() {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let status = if m.name == ctx.me {
                node_status(&ctx).await.ok()
            } else {
                let client = ctx.peers.with_endpoint(m.api_address.clone());
                tokio::time::timeout(PEER_STATUS_TIMEOUT, client.get::<NodeStatus>("/raft/status"))
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .map(|(_, s)| s)
            };
            member_row(&m, status.as_ref())
        });
    }
    let mut rows = Vec::new();
    while let Some(r) = tasks.join_next().await {
        rows.push(r.map_err(|e| ApiError::Internal(e.to_string()))?);
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(rows))
}

fn member_row(m: &Member, status: Option<&NodeStatus>) -> MemberRow {
    let role = match (status, m.membership) {
        (Some(s), _) => serde_json::to_value(s.raft.role)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        (None, RaftMembership::Learner) => "learner".into(),
        (None, RaftMembership::Pending) => "pending".into(),
        (None, RaftMembership::Voter) => "follower".into(),
    };
    MemberRow {
        name: m.name.to_string(),
        id: m.node_id.to_string(),
        role,
        witness: m.witness,
        term: status.map(|s| s.raft.term),
        commit_index: status.map(|s| s.raft.commit_index),
        applied_index: status.map(|s| s.raft.applied_index),
        address: m.raft_address.clone(),
        reachable: status.is_some(),
    }
}

fn outcome_or_conflict(outcome: Outcome) -> Result<Outcome, ApiError> {
    match outcome {
        Outcome::Rejected { reason } => Err(ApiError::Conflict(reason.to_string())),
        other => Ok(other),
    }
}

async fn create_token(
    State(ctx): State<ApiContext>,
    body: Option<Json<TokenRequest>>,
) -> Result<Json<TokenResponse>, ApiError> {
    let ttl = body.and_then(|Json(b)| b.ttl).unwrap_or(DEFAULT_TOKEN_TTL_S);
    if ttl == 0 || ttl > MAX_TOKEN_TTL_S {
        return Err(ApiError::BadRequest(format!("ttl must be 1 to {MAX_TOKEN_TTL_S} seconds, got {ttl}")));
    }
    let st = state(&ctx)?;
    let secret = token::new_secret();
    let expires_at_ms = clock::wall_now_ms() + ttl * 1000;
    let outcome =
        ctx.dcs.propose(Command::CreateToken { hash: token::secret_hash(&secret), expires_at_ms }).await?;
    outcome_or_conflict(outcome)?;
    let token = JoinToken {
        v: 1,
        scope: ctx.scope.clone(),
        fp: pki::fingerprint(&st.ca.cert_pem)?,
        api: api_addresses(&st, &ctx.me),
        secret,
    };
    Ok(Json(TokenResponse { token: token.encode(), expires_at_ms }))
}

/// Members' API addresses, this node's first (it just answered, so it is likely up).
pub fn api_addresses(st: &ClusterState, me: &MemberName) -> Vec<String> {
    let mut v: Vec<String> = st.members.get(me).map(|m| m.api_address.clone()).into_iter().collect();
    v.extend(st.members.values().filter(|m| &m.name != me).map(|m| m.api_address.clone()));
    v
}

/// Hosts a joiner's certificate may name: the hosts of the addresses it registers.
fn hosts_of(req: &JoinRequest) -> Vec<String> {
    let m = &req.member;
    [Some(&m.api_address), Some(&m.raft_address), m.pg_address.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|a| {
            a.rsplit_once(':').map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_string())
        })
        .collect()
}

async fn join(
    State(ctx): State<ApiContext>,
    Json(req): Json<JoinRequest>,
) -> Result<Json<JoinResponse>, ApiError> {
    let st = state(&ctx)?;
    let ca = pki::CaPem { cert_pem: st.ca.cert_pem.clone(), key_pem: st.ca.key_pem.clone() };
    // Sign before admitting: a CSR that breaks policy changes nothing. The certificates are
    // returned only if the join is accepted.
    let member_id =
        pki::Identity { scope: ctx.scope.clone(), role: pki::Role::Member, name: req.member.name.clone() };
    let client_id =
        pki::Identity { scope: ctx.scope.clone(), role: pki::Role::Client, name: req.member.name.clone() };
    let cert_pem = pki::sign_csr(&ca, &req.csr_pem, &member_id, &hosts_of(&req))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let ctl_cert_pem = pki::sign_csr(&ca, &req.ctl_csr_pem, &client_id, &[])
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let cmd = Command::Join {
        token_hash: token::secret_hash(&req.secret),
        now_ms: clock::wall_now_ms(),
        member: req.member.clone(),
    };
    let node_id = match ctx.dcs.propose(cmd).await? {
        Outcome::Joined { node_id } => node_id,
        Outcome::Rejected { reason } => {
            tracing::warn!(member = %req.member.name, %reason, "join refused");
            return Err(ApiError::Conflict(reason.to_string()));
        }
        other => return Err(ApiError::Internal(format!("unexpected join outcome {other:?}"))),
    };
    tracing::info!(member = %req.member.name, node = %node_id, witness = req.member.witness, "member admitted; it becomes a learner, then a voter once caught up");
    let st = state(&ctx)?;
    let members = st
        .members
        .values()
        .map(|m| PeerInfo {
            name: m.name.to_string(),
            node_id: m.node_id,
            api_address: m.api_address.clone(),
            raft_address: m.raft_address.clone(),
        })
        .collect();
    Ok(Json(JoinResponse {
        node_id,
        scope: st.scope.clone(),
        incarnation: st.incarnation.clone(),
        ca_pem: st.ca.cert_pem.clone(),
        cert_pem,
        ctl_cert_pem,
        members,
        config: st.config.clone(),
    }))
}

async fn remove_member(
    State(ctx): State<ApiContext>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Done>), ApiError> {
    let name = MemberName::new(name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let outcome = ctx.dcs.propose(Command::RemoveMember { name: name.clone() }).await?;
    outcome_or_conflict(outcome)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Done { message: format!("{name} is being removed from the Raft configuration") }),
    ))
}

async fn transfer(
    State(ctx): State<ApiContext>,
    body: Option<Json<TransferRequest>>,
) -> Result<Json<Done>, ApiError> {
    let st = state(&ctx)?;
    let status = ctx.dcs.status().await?;
    let to = match body.and_then(|Json(b)| b.to) {
        Some(n) => {
            let m = st
                .members
                .values()
                .find(|m| m.name.as_str() == n)
                .ok_or_else(|| ApiError::NotFound(format!("no member named {n}")))?;
            if m.membership != RaftMembership::Voter {
                return Err(ApiError::Conflict(format!("{n} is not a voter; only voters can lead")));
            }
            m.node_id
        }
        None => {
            let leader = status.leader_id;
            st.members
                .values()
                .filter(|m| m.membership == RaftMembership::Voter && Some(m.node_id) != leader)
                .map(|m| m.node_id)
                .next()
                .ok_or_else(|| ApiError::Conflict("there is no other voter to hand leadership to".into()))?
        }
    };
    if status.leader_id == Some(to) {
        return Ok(Json(Done { message: "that member already leads".into() }));
    }
    ctx.dcs.transfer_leader(to).await?;
    Ok(Json(Done { message: format!("leadership transfer to node {to} requested") }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::Credentials;
    use axum::http::HeaderValue;

    #[test]
    fn basic_auth_accepts_only_the_configured_user_and_password() {
        let want = Credentials { username: "admin".into(), password: Some("s3cret:x".into()) };
        // base64("admin:s3cret:x") and variations.
        let cases = [
            (Some("Basic YWRtaW46czNjcmV0Ong="), true),
            (Some("Basic YWRtaW46czNjcmV0"), false),
            (Some("Basic cm9vdDpzM2NyZXQ6eA=="), false),
            (Some("Bearer YWRtaW46czNjcmV0Ong="), false),
            (Some("Basic !!!"), false),
            (None, false),
        ];
        for (header, ok) in cases {
            let h = header.map(|v| HeaderValue::from_str(v).unwrap());
            assert_eq!(basic_auth_matches(h.as_ref(), &want), ok, "{header:?}");
        }
    }
}
