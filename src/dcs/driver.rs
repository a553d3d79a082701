//! The tokio driver of one Raft member: owns the [`RaftCore`] over the file store, feeds it
//! ticks (every 100 ms), peer messages and requests from [`Handle`]s, and after every event
//! runs the Ready loop, sends what it produced, resolves waiters and publishes the applied state.
//!
//! A storage or Raft error is fatal: the driver stops and returns the error, and the process
//! exits (STYLE.md: a failed durable write is never retried and ignored).

use super::handle::{DcsError, Handle, Request};
use super::node::{CoreError, RaftCore};
use super::state::{ClusterState, Outcome, ProposalId};
use super::storage::LogStore;
use super::transport::{Outbox, PeerEvent, Reachability};
use crate::clock;
use crate::types::NodeId;
use raft::eraftpb::Message;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

pub const TICK: Duration = Duration::from_millis(100);
/// How often the Raft leader drops used and expired join tokens from the state.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Proposal latencies kept for the percentiles in `/raft/status`.
const LATENCY_SAMPLES: usize = 1024;

/// The last proposals' latencies, from submission on this node to their apply here.
#[derive(Default)]
struct LatencyWindow {
    samples: std::collections::VecDeque<Duration>,
    total: u64,
}

impl LatencyWindow {
    fn record(&mut self, d: Duration) {
        if self.samples.len() == LATENCY_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(d);
        self.total += 1;
    }

    fn summary(&self) -> CommitLatency {
        let mut v: Vec<u64> = self.samples.iter().map(|d| d.as_micros() as u64).collect();
        v.sort_unstable();
        let pick = |q: f64| (!v.is_empty()).then(|| v[((v.len() - 1) as f64 * q).round() as usize]);
        CommitLatency {
            proposals: self.total,
            window: v.len(),
            p50_us: pick(0.5),
            p99_us: pick(0.99),
            max_us: v.last().copied(),
        }
    }
}

/// Percentiles of the last proposals' commit-and-apply latency on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommitLatency {
    /// Proposals from this node applied since start.
    pub proposals: u64,
    /// How many of the latest are in the percentiles below.
    pub window: usize,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub max_us: Option<u64>,
}

fn prune_command(state: Option<&ClusterState>) -> Option<super::state::Command> {
    let now_ms = clock::wall_now_ms();
    let stale = state?.tokens.values().any(|t| t.used_by.is_some() || t.expires_at_ms <= now_ms);
    stale.then_some(super::state::Command::PruneTokens { now_ms })
}
/// How long a clean shutdown waits for Raft leadership to move to another voter.
const TRANSFER_ON_SHUTDOWN: Duration = Duration::from_secs(3);

/// Channels the driver listens on; build with [`channels`].
pub struct DriverIo {
    pub requests: mpsc::Receiver<Request>,
    pub inbox: mpsc::Receiver<Message>,
    pub peer_events: mpsc::Receiver<PeerEvent>,
    pub state_tx: watch::Sender<Option<Arc<ClusterState>>>,
}

/// Creates the handle, the driver's receiving ends, and the peer inbox / unreachable senders
/// for the transport.
pub fn channels(
    initial: Option<ClusterState>,
    reach: Reachability,
) -> (Handle, DriverIo, mpsc::Sender<Message>, mpsc::Sender<PeerEvent>) {
    let (req_tx, requests) = mpsc::channel(1024);
    let (inbox_tx, inbox) = mpsc::channel(8192);
    let (events_tx, peer_events) = mpsc::channel(1024);
    let (state_tx, state_rx) = watch::channel(initial.map(Arc::new));
    let handle = Handle::new(req_tx, state_rx, reach);
    (handle, DriverIo { requests, inbox, peer_events, state_tx }, inbox_tx, events_tx)
}

struct Waiters {
    proposals: BTreeMap<ProposalId, (clock::BootInstant, oneshot::Sender<Result<Outcome, DcsError>>)>,
    /// ReadIndex requests sent to Raft, by context.
    reads_sent: BTreeMap<Vec<u8>, oneshot::Sender<Result<u64, DcsError>>>,
    /// ReadIndex results waiting for the local apply to catch up: (index, reply).
    reads_ready: Vec<(u64, oneshot::Sender<Result<u64, DcsError>>)>,
    next_read: u64,
}

/// Runs until `shutdown` fires or a fatal error. On shutdown a leader first hands Raft
/// leadership to another voter, so the cluster does not wait for an election timeout.
pub async fn run<S: LogStore>(
    mut core: RaftCore<S>,
    mut io: DriverIo,
    mut outbox: Outbox,
    mut shutdown: watch::Receiver<bool>,
    seed_peers: Vec<(NodeId, String)>,
) -> Result<(), CoreError> {
    let mut latency = LatencyWindow::default();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut w = Waiters {
        proposals: BTreeMap::new(),
        reads_sent: BTreeMap::new(),
        reads_ready: Vec::new(),
        next_read: 1,
    };
    match core.state() {
        Some(s) => {
            outbox.set_incarnation(s.incarnation.clone());
            outbox.sync_members(s);
        }
        // A joiner before its first snapshot: answer the members it joined through.
        None => outbox.sync_peers(seed_peers),
    }
    let mut stopping: Option<clock::BootInstant> = None;
    let mut last_prune = clock::boot_now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                core.tick(clock::boot_now());
                // Forget waiters whose callers gave up.
                w.proposals.retain(|_, (_, tx)| !tx.is_closed());
                if core.is_leader() && clock::boot_now().saturating_since(last_prune) > PRUNE_EVERY {
                    last_prune = clock::boot_now();
                    if let Some(cmd) = prune_command(core.state()) {
                        let _ = core.propose(cmd);
                    }
                }
                if let Some(since) = stopping {
                    if !core.is_leader() || clock::boot_now().saturating_since(since) > TRANSFER_ON_SHUTDOWN {
                        return Ok(());
                    }
                }
            }
            Some(msg) = io.inbox.recv() => core.step(msg)?,
            Some(req) = io.requests.recv() => handle_request(&mut core, &mut w, &latency, req),
            Some(event) = io.peer_events.recv() => match event {
                PeerEvent::Unreachable(id) => core.report_unreachable(id),
                PeerEvent::Snapshot(id, delivered) => core.report_snapshot(id, delivered),
            },
            changed = shutdown.changed(), if stopping.is_none() => {
                if changed.is_err() || *shutdown.borrow() {
                    if core.is_leader() && core.transfer_leadership_away() {
                        tracing::info!("shutting down: handing Raft leadership to another voter");
                        stopping = Some(clock::boot_now());
                    } else {
                        return Ok(());
                    }
                }
            }
        }
        let out = core.advance(clock::boot_now())?;
        outbox.send(out.messages);
        let now = clock::boot_now();
        for a in out.applied {
            if let Some((sent, tx)) = a.proposal.and_then(|id| w.proposals.remove(&id)) {
                latency.record(now.saturating_since(sent));
                let _ = tx.send(Ok(a.outcome));
            }
        }
        for (ctx, index) in out.read_states {
            if let Some(tx) = w.reads_sent.remove(&ctx) {
                w.reads_ready.push((index, tx));
            }
        }
        let applied = core.applied();
        let (done, waiting): (Vec<_>, Vec<_>) = w.reads_ready.drain(..).partition(|(i, _)| *i <= applied);
        w.reads_ready = waiting;
        for (i, tx) in done {
            let _ = tx.send(Ok(i));
        }
        if out.state_changed {
            if let Some(s) = core.state() {
                outbox.set_incarnation(s.incarnation.clone());
                outbox.sync_members(s);
                io.state_tx.send_replace(Some(Arc::new(s.clone())));
            }
        }
        if out.removed {
            tracing::warn!("this member was removed from the cluster; stopping");
            return Ok(());
        }
    }
}

fn handle_request<S: LogStore>(
    core: &mut RaftCore<S>,
    w: &mut Waiters,
    latency: &LatencyWindow,
    req: Request,
) {
    let now = clock::boot_now();
    let mut register = |r: Result<ProposalId, super::node::ProposeError>, reply: oneshot::Sender<_>| match r {
        Ok(id) => {
            w.proposals.insert(id, (now, reply));
        }
        Err(e) => {
            let _ = reply.send(Err(DcsError::from(e)));
        }
    };
    match req {
        Request::Propose { command, reply } => register(core.propose(command), reply),
        Request::Acquire { expected_epoch, ttl, lsn, reply } => {
            register(core.propose_acquire_at(expected_epoch, ttl, now, lsn), reply)
        }
        Request::Renew { epoch, ttl, lsn, reply } => {
            register(core.propose_renew_at(epoch, ttl, now, lsn), reply)
        }
        Request::Release { epoch, checkpoint, reply } => {
            register(core.propose_release(epoch, checkpoint), reply)
        }
        Request::ReadIndex { reply } => {
            let ctx = w.next_read.to_be_bytes().to_vec();
            w.next_read += 1;
            core.read_index(ctx.clone());
            w.reads_sent.insert(ctx, reply);
            w.reads_sent.retain(|_, tx| !tx.is_closed());
        }
        Request::Status { reply } => {
            let _ = reply.send((core.status(), latency.summary()));
        }
        Request::Lease { reply } => {
            let _ = reply.send(core.lease_view(now));
        }
        Request::TransferLeader { to, reply } => {
            core.transfer_leader(to);
            let _ = reply.send(());
        }
    }
}
