//! `POST /switchover`, `DELETE /switchover`, `POST /failover` with Patroni's bodies and status
//! codes: the request is checked against the live member statuses (the candidate must be
//! streaming and reporting), stored in the replicated state, and carried out by the HA loops
//! (the primary stops cleanly, releases its lease with the shutdown checkpoint, the candidate
//! promotes after replaying it). An immediate request waits for the outcome: 200 when the
//! candidate holds the lease, 503 when that did not happen in time; a scheduled one answers 202.
//! A refused check is 412 with the reason naming the member and the check.

use super::error::ApiError;
use super::model::Done;
use super::server::ApiContext;
use crate::clock;
use crate::dcs::state::{ClusterState, Command, Outcome, SwitchoverRequest};
use crate::ha::eligibility::STATUS_FRESH_MS;
use crate::types::MemberName;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use std::time::Duration;

/// How long an immediate switchover may take before the API answers 503.
const SWITCHOVER_WAIT: Duration = Duration::from_secs(60);

pub fn routes() -> Router<ApiContext> {
    Router::new().route("/switchover", post(switchover).delete(cancel)).route("/failover", post(failover))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(default)]
    leader: Option<String>,
    #[serde(default)]
    candidate: Option<String>,
    /// ISO 8601 with a time zone, e.g. `2026-11-25T20:00:00+00:00`.
    #[serde(default)]
    scheduled_at: Option<String>,
}

fn member(field: &str, v: Option<String>) -> Result<Option<MemberName>, ApiError> {
    v.map(|s| MemberName::new(s).map_err(|e| ApiError::BadRequest(format!("{field}: {e}")))).transpose()
}

fn parse(body: &Bytes) -> Result<Body, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid request: {e}")))
}

/// Patroni's 412: a check about the members failed.
fn precondition(why: String) -> ApiError {
    ApiError::Precondition(why)
}

/// The candidate (or, without one, any replica) must stream and report.
pub fn check_candidate(st: &ClusterState, candidate: Option<&MemberName>, now_ms: u64) -> Result<(), String> {
    let healthy = |m: &crate::dcs::state::Member| {
        m.status.as_ref().is_some_and(|s| {
            s.state == "streaming" && now_ms.saturating_sub(s.updated_at_ms) <= STATUS_FRESH_MS
        })
    };
    let holder = st.lease.as_ref().map(|l| &l.holder);
    match candidate {
        Some(c) => {
            let m = st.members.get(c).ok_or_else(|| format!("candidate {c} is not a member"))?;
            if m.witness || m.tags.nofailover || m.tags.failover_priority == Some(0) {
                return Err(format!("candidate {c} may not become primary (witness or nofailover)"));
            }
            if Some(c) == holder {
                return Err(format!("candidate {c} is already the leader"));
            }
            // Without a primary (failover) a stopped candidate can still be promoted.
            if holder.is_some() && !healthy(m) {
                let state = m.status.as_ref().map_or("not reporting", |s| s.state.as_str());
                return Err(format!("candidate {c} is not streaming (state: {state})"));
            }
            Ok(())
        }
        None => st
            .members
            .values()
            .find(|m| Some(&m.name) != holder && !m.witness && !m.tags.nofailover && healthy(m))
            .map(|_| ())
            .ok_or_else(|| "no replica is streaming: there is no candidate".to_string()),
    }
}

async fn request(ctx: &ApiContext, req: SwitchoverRequest) -> Result<(StatusCode, Json<Done>), ApiError> {
    let st = ctx.dcs.state().ok_or(ApiError::NotReady)?;
    check_candidate(&st, req.candidate.as_ref(), clock::wall_now_ms()).map_err(precondition)?;
    let old = st.lease.as_ref().map(|l| l.holder.clone());
    let scheduled = req.scheduled_at_ms.is_some_and(|t| t > clock::wall_now_ms());
    let candidate = req.candidate.clone();
    match ctx.dcs.propose(Command::RequestSwitchover { request: req }).await? {
        Outcome::Rejected { reason } => return Err(precondition(reason.to_string())),
        _ => tracing::info!(from = ?old, to = ?candidate, scheduled, "switchover requested"),
    }
    if scheduled {
        return Ok((StatusCode::ACCEPTED, Json(Done { message: "Switchover scheduled".into() })));
    }
    let mut watch = ctx.dcs.watch_state();
    let done = tokio::time::timeout(SWITCHOVER_WAIT, async {
        loop {
            let holder = watch.borrow().as_ref().and_then(|s| s.lease.as_ref().map(|l| l.holder.clone()));
            if let Some(h) = holder {
                if candidate.as_ref().map_or(Some(&h) != old.as_ref(), |c| &h == c) {
                    return h;
                }
            }
            if watch.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    })
    .await;
    match done {
        Ok(new) => {
            Ok((StatusCode::OK, Json(Done { message: format!("Successfully switched over to \"{new}\"") })))
        }
        Err(_) => {
            Err(ApiError::Unavailable("Switchover status unknown: it did not complete within 60 s".into()))
        }
    }
}

async fn switchover(
    State(ctx): State<ApiContext>,
    body: Bytes,
) -> Result<(StatusCode, Json<Done>), ApiError> {
    let b = parse(&body)?;
    let scheduled_at_ms = b
        .scheduled_at
        .as_deref()
        .map(|s| {
            crate::clock::parse_rfc3339_ms(s).map_err(|e| ApiError::BadRequest(format!("scheduled_at {e}")))
        })
        .transpose()?;
    let leader = member("leader", b.leader)?;
    let candidate = member("candidate", b.candidate)?;
    if leader.is_none() && candidate.is_none() {
        return Err(ApiError::BadRequest("a switchover needs the leader or a candidate".into()));
    }
    let st = ctx.dcs.state().ok_or(ApiError::NotReady)?;
    if st.lease.is_none() {
        return Err(precondition("there is no primary to switch over from: use `pgha ctl failover`".into()));
    }
    request(&ctx, SwitchoverRequest { leader, candidate, scheduled_at_ms }).await
}

async fn failover(State(ctx): State<ApiContext>, body: Bytes) -> Result<(StatusCode, Json<Done>), ApiError> {
    let b = parse(&body)?;
    if b.scheduled_at.is_some() {
        return Err(ApiError::BadRequest("a failover cannot be scheduled; use /switchover".into()));
    }
    let candidate = member("candidate", b.candidate)?
        .ok_or_else(|| ApiError::BadRequest("a failover needs a candidate".into()))?;
    request(&ctx, SwitchoverRequest { leader: None, candidate: Some(candidate), scheduled_at_ms: None }).await
}

async fn cancel(State(ctx): State<ApiContext>) -> Result<Json<Done>, ApiError> {
    let st = ctx.dcs.state().ok_or(ApiError::NotReady)?;
    if st.switchover.is_none() {
        return Err(ApiError::NotFound("no switchover is scheduled".into()));
    }
    ctx.dcs.propose(Command::CancelSwitchover).await?;
    Ok(Json(Done { message: "scheduled switchover deleted".into() }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::dynamic::DynamicConfig;
    use crate::dcs::state::{CaMaterial, Lease, MemberStatus, NewMember, Tags};
    use crate::types::{LeaseEpoch, NodeId};

    fn n(s: &str) -> MemberName {
        MemberName::new(s).unwrap()
    }

    fn state(streaming: &[&str]) -> ClusterState {
        let nm = |name: &str| NewMember {
            name: n(name),
            witness: false,
            api_address: format!("{name}:1"),
            raft_address: format!("{name}:2"),
            pg_address: Some(format!("{name}:3")),
            tags: Tags::default(),
            version: "t".into(),
        };
        let ca = CaMaterial { cert_pem: String::new(), key_pem: String::new() };
        let mut st = ClusterState::bootstrap("s".into(), "i".into(), nm("n1"), ca, DynamicConfig::default());
        for (i, name) in ["n2", "n3", "w"].iter().enumerate() {
            let mut m = st.members[&n("n1")].clone();
            m.name = n(name);
            m.node_id = NodeId(i as u64 + 2);
            m.witness = *name == "w";
            st.members.insert(n(name), m);
        }
        st.lease = Some(Lease { holder: n("n1"), epoch: LeaseEpoch(1), ttl_ms: 1, renewal: 1 });
        for s in streaming {
            st.members.get_mut(&n(s)).unwrap().status =
                Some(MemberStatus { state: "streaming".into(), updated_at_ms: 1_000, ..Default::default() });
        }
        st
    }

    /// (scenario, streaming members, candidate, expected error fragment or None)
    type Row = (&'static str, &'static [&'static str], Option<&'static str>, Option<&'static str>);

    #[test]
    fn candidates_are_checked_against_live_statuses() {
        let rows: [Row; 7] = [
            ("streaming candidate", &["n2"], Some("n2"), None),
            ("candidate not streaming", &["n3"], Some("n2"), Some("n2 is not streaming")),
            ("unknown candidate", &["n2"], Some("zz"), Some("zz is not a member")),
            ("witness candidate", &["n2"], Some("w"), Some("may not become primary")),
            ("the leader itself", &["n2"], Some("n1"), Some("already the leader")),
            ("any streaming replica", &["n3"], None, None),
            ("no streaming replica at all", &[], None, Some("no replica is streaming")),
        ];
        for (scenario, streaming, candidate, want) in rows {
            let st = state(streaming);
            let got = check_candidate(&st, candidate.map(n).as_ref(), 2_000);
            match want {
                None => assert!(got.is_ok(), "{scenario}: {got:?}"),
                Some(frag) => assert!(got.as_ref().is_err_and(|e| e.contains(frag)), "{scenario}: {got:?}"),
            }
        }
        // A stale report is no evidence of streaming.
        assert!(check_candidate(&state(&["n2"]), Some(&n("n2")), 1_000 + STATUS_FRESH_MS + 1).is_err());
        // Without a primary (failover), a candidate that is not streaming may still be named.
        let mut st = state(&[]);
        st.lease = None;
        assert!(check_candidate(&st, Some(&n("n2")), 2_000).is_ok());
    }
}
