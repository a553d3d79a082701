//! `RaftCore`: one Raft member as a value you step, shared by the tokio driver and the
//! deterministic simulation, so the simulation tests the real durability order.
//!
//! Inputs: ticks and the current boot-clock time (from the caller), messages from peers,
//! proposals. Outputs ([`Output`]): messages to send, applied outcomes keyed by proposal id,
//! ReadIndex results, whether the state changed. It performs no I/O of its own beyond the
//! `LogStore` writes of the Ready loop, reads no clock and never sleeps.
//!
//! The Ready loop order (raft-rs's documented order, etcd's too): install a snapshot, apply
//! committed entries, persist new entries, persist the hard state, and only then hand out the
//! messages: every message leaves after what it vouches for is durable (a vote or an append
//! acknowledgement sent before the fsync could be forgotten in a crash, electing two leaders
//! or losing a committed entry). A failed write stops the node: `advance` returns the error
//! and the caller must not continue.
//!
//! Membership is reconciled by the leader from the replicated state: a `Join` adds a `Pending`
//! member, the leader proposes it as a learner, promotes a caught-up learner to voter with joint
//! consensus (`ConfChangeTransition::Implicit`), and removes members marked `removing`, one
//! configuration change at a time.

use super::lease::{ExpiryTimer, HolderClock};
use super::state::{ClusterState, Command, Lease, Outcome, ProposalId, RaftMembership};
pub use super::status::{LeaseView, PeerProgress, RaftRole, RaftStatus};
use super::storage::{LogStore, StorageError};
use crate::clock::BootInstant;
use crate::types::{LeaseEpoch, Lsn, MemberName, NodeId};
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType,
    Message, Snapshot,
};
use raft::{RawNode, StateRole};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a member keeps serving after applying its own removal.
const REMOVAL_GRACE: Duration = Duration::from_secs(10);

/// Entries a learner may lag behind the commit index and still be promoted to voter.
const LEARNER_SLACK: u64 = 8;

/// How a node's Raft runs. Tick length is the driver's; these are in ticks.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub id: NodeId,
    pub name: MemberName,
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    /// Distinguishes this run of the member from earlier ones in proposal and renewal ids.
    /// Drivers draw it at random at every start; the simulation from its seed. Two runs with
    /// the same value could take a replayed renewal for a new one.
    pub instance: u32,
    /// Pins raft-rs's randomized election timeout to exactly this many ticks (raft-rs draws
    /// it from its own thread RNG otherwise). The simulation sets it from its seed.
    pub fixed_election_timeout: Option<usize>,
    /// Holder-side safety margin subtracted from every lease deadline.
    pub safety_margin: Duration,
    /// Take a snapshot and compact after this many applied entries.
    pub snapshot_every: u64,
    /// Entries kept before a snapshot for followers that are slightly behind.
    pub retain_entries: u64,
}

impl CoreConfig {
    pub fn new(id: NodeId, name: MemberName, safety_margin: Duration) -> Self {
        CoreConfig {
            id,
            name,
            // With a 100 ms tick: elections after 1-2 s of silence, heartbeats every 200 ms.
            election_tick: 10,
            heartbeat_tick: 2,
            instance: 0,
            fixed_election_timeout: None,
            safety_margin,
            snapshot_every: 1000,
            retain_entries: 200,
        }
    }
}

/// What a normal entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: Option<ProposalId>,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub index: u64,
    pub proposal: Option<ProposalId>,
    /// The command as applied (configuration changes appear as `SetMembership`).
    pub command: Command,
    pub outcome: Outcome,
}

/// What one `advance` produced for the caller to act on.
#[derive(Debug, Default)]
pub struct Output {
    pub messages: Vec<Message>,
    pub applied: Vec<Applied>,
    /// (request context, read index) pairs: the read is linearizable once applied ≥ index.
    pub read_states: Vec<(Vec<u8>, u64)>,
    pub state_changed: bool,
    /// This node was removed from the Raft configuration and must stop.
    pub removed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("the replicated state in the snapshot at index {index} cannot be decoded: {detail}")]
    BadSnapshot { index: u64, detail: String },
    #[error("entry {index} cannot be decoded: {detail}")]
    BadEntry { index: u64, detail: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProposeError {
    #[error("no Raft leader is known yet; retry shortly")]
    NoLeader,
    #[error("this member has not received the cluster state yet")]
    NotReady,
    #[error("raft refused the proposal: {0}")]
    Refused(String),
}

pub struct RaftCore<S: LogStore> {
    raw: RawNode<S>,
    cfg: CoreConfig,
    state: Option<ClusterState>,
    conf_state: ConfState,
    applied: u64,
    snapshot_index: u64,
    expiry: ExpiryTimer,
    holder: HolderClock,
    was_leader: bool,
    next_seq: u64,
    removed: bool,
    /// When this member applied its own removal (entering the joint configuration). It keeps
    /// running for `REMOVAL_GRACE` so the outgoing majority can still count it, since it may
    /// never learn that the joint configuration was left.
    removal_started: Option<BootInstant>,
    /// A configuration change was applied after the latest snapshot. raft-rs refuses a
    /// snapshot whose ConfState does not contain the receiving node, so a joiner can only be
    /// caught up from a snapshot taken after it was added.
    conf_changed: bool,
}

fn raft_config(cfg: &CoreConfig, applied: u64) -> raft::Config {
    raft::Config {
        id: cfg.id.0,
        election_tick: cfg.election_tick,
        heartbeat_tick: cfg.heartbeat_tick,
        applied,
        // A partitioned node cannot disturb the cluster (pre_vote) and a leader that lost its
        // quorum steps down instead of serving stale reads (check_quorum).
        pre_vote: true,
        check_quorum: true,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        min_election_tick: cfg.fixed_election_timeout.unwrap_or(0),
        max_election_tick: cfg.fixed_election_timeout.map_or(0, |t| t + 1),
        ..Default::default()
    }
}

pub fn decode_state(index: u64, data: &[u8]) -> Result<ClusterState, CoreError> {
    serde_json::from_slice(data).map_err(|e| CoreError::BadSnapshot { index, detail: e.to_string() })
}

pub fn encode_state(state: &ClusterState) -> Vec<u8> {
    serde_json::to_vec(state).expect("the cluster state always serializes")
}

impl<S: LogStore> RaftCore<S> {
    /// Opens a member over its storage. The state machine starts from the stored snapshot and
    /// re-applies committed entries after it (they come back as committed entries in Ready).
    pub fn new(store: S, cfg: CoreConfig, logger: &slog::Logger) -> Result<Self, CoreError> {
        let snap = store.latest_snapshot();
        let meta = snap.get_metadata();
        let state =
            if snap.get_data().is_empty() { None } else { Some(decode_state(meta.index, snap.get_data())?) };
        let applied = meta.index;
        let conf_state = meta.get_conf_state().clone();
        let raw = RawNode::new(&raft_config(&cfg, applied), store, logger)?;
        Ok(RaftCore {
            raw,
            cfg,
            state,
            conf_state,
            applied,
            snapshot_index: applied,
            expiry: ExpiryTimer::default(),
            holder: HolderClock::default(),
            was_leader: false,
            next_seq: 1,
            removed: false,
            removal_started: None,
            conf_changed: false,
        })
    }

    pub fn id(&self) -> NodeId {
        self.cfg.id
    }
    pub fn name(&self) -> &MemberName {
        &self.cfg.name
    }
    pub fn state(&self) -> Option<&ClusterState> {
        self.state.as_ref()
    }
    pub fn applied(&self) -> u64 {
        self.applied
    }
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }
    pub fn leader_id(&self) -> Option<NodeId> {
        match self.raw.raft.leader_id {
            0 => None,
            id => Some(NodeId(id)),
        }
    }
    pub fn store(&self) -> &S {
        self.raw.store()
    }

    /// A copy of the storage as a crash would leave it: everything the Ready loop wrote
    /// (the simulation restarts a node from it).
    pub fn crash_copy_of_store(&self) -> S
    where
        S: Clone,
    {
        self.raw.store().clone()
    }

    pub fn status(&self) -> RaftStatus {
        let r = &self.raw.raft;
        let role = match r.state {
            StateRole::Leader => RaftRole::Leader,
            StateRole::Candidate | StateRole::PreCandidate => RaftRole::Candidate,
            // A joiner not yet in the configuration it knows of cannot vote either.
            StateRole::Follower if !self.conf_state.get_voters().contains(&self.cfg.id.0) => {
                RaftRole::Learner
            }
            StateRole::Follower => RaftRole::Follower,
        };
        let progress = if r.state == StateRole::Leader {
            let learners = self.conf_state.get_learners();
            let mut p: Vec<_> = r
                .prs()
                .iter()
                .map(|(id, pr)| PeerProgress {
                    id: NodeId(*id),
                    matched: pr.matched,
                    learner: learners.contains(id),
                })
                .collect();
            p.sort_by_key(|p| p.id);
            p
        } else {
            Vec::new()
        };
        RaftStatus {
            id: self.cfg.id,
            name: self.cfg.name.clone(),
            role,
            term: r.term,
            leader_id: self.leader_id(),
            commit_index: r.raft_log.committed,
            applied_index: self.applied,
            first_index: r.raft_log.first_index(),
            last_index: r.raft_log.last_index(),
            snapshot_index: self.snapshot_index,
            progress,
        }
    }

    pub fn lease_view(&self, now: BootInstant) -> LeaseView {
        let lease = self.state.as_ref().and_then(|s| s.lease.as_ref());
        let valid = self.holder.valid(now);
        LeaseView {
            holder: lease.map(|l| l.holder.clone()),
            epoch: lease.map(|l| l.epoch).unwrap_or_default(),
            last_epoch: self.state.as_ref().map(|s| s.last_epoch).unwrap_or_default(),
            time_left: self.holder.time_left(now),
            deadline: valid.map(|(_, d)| d),
        }
    }

    /// One tick of the Raft clock. The leader also runs its lease expiry timer and reconciles
    /// membership here.
    pub fn tick(&mut self, now: BootInstant) {
        self.raw.tick();
        self.track_leadership(now);
        if !self.is_leader() {
            return;
        }
        if let Some(cmd) = self.expiry.poll(now) {
            if self.propose_internal(cmd).is_err() {
                self.expiry.retry();
            }
        }
        self.reconcile_membership();
    }

    pub fn step(&mut self, msg: Message) -> Result<(), CoreError> {
        // Messages from ids outside the configuration are ignored by raft-rs itself, except
        // responses; a removed node's late messages are harmless.
        // `ProposalDropped`: a follower's forwarded proposal reached a member that cannot take
        // it (no leader known, or a leadership transfer in progress); the proposer times out
        // and retries. Found by the simulation: treating it as fatal stopped the member.
        match self.raw.step(msg) {
            Ok(())
            | Err(raft::Error::StepPeerNotFound)
            | Err(raft::Error::StepLocalMsg)
            | Err(raft::Error::ProposalDropped) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Proposes a state command; the outcome arrives in `Output::applied` under the returned id
    /// on this node (every node applies every entry, so a follower's proposal resolves too).
    pub fn propose(&mut self, command: Command) -> Result<ProposalId, ProposeError> {
        if self.state.is_none() {
            return Err(ProposeError::NotReady);
        }
        let id = ProposalId { node: self.cfg.id, instance: self.cfg.instance, seq: self.next_seq };
        self.next_seq += 1;
        let data =
            serde_json::to_vec(&Proposal { id: Some(id), command }).expect("commands always serialize");
        match self.raw.propose(Vec::new(), data) {
            Ok(()) => Ok(id),
            Err(raft::Error::ProposalDropped) => Err(ProposeError::NoLeader),
            Err(e) => Err(ProposeError::Refused(e.to_string())),
        }
    }

    fn propose_internal(&mut self, command: Command) -> Result<ProposalId, ProposeError> {
        self.propose(command)
    }

    /// A renewal id unique across runs of this member: the instance in the high half, the
    /// sequence number of the proposal that will carry it in the low half (increasing within
    /// a run, as `HolderClock` expects).
    fn next_renewal_id(&self) -> u64 {
        ((self.cfg.instance as u64) << 32) | (self.next_seq & 0xffff_ffff)
    }

    /// Proposes taking the free lease (compare-and-set on `expected_epoch`). The grant counts
    /// only once applied as accepted; its deadline runs from `now`, the send time.
    pub fn propose_acquire(
        &mut self,
        expected_epoch: LeaseEpoch,
        ttl: Duration,
        now: BootInstant,
    ) -> Result<ProposalId, ProposeError> {
        self.propose_acquire_at(expected_epoch, ttl, now, None)
    }

    /// `propose_acquire` with the candidate's WAL position, checked inside the compare-and-set.
    pub fn propose_acquire_at(
        &mut self,
        expected_epoch: LeaseEpoch,
        ttl: Duration,
        now: BootInstant,
        lsn: Option<Lsn>,
    ) -> Result<ProposalId, ProposeError> {
        let candidate = self.cfg.name.clone();
        let ttl_ms = ttl.as_millis() as u64;
        self.propose_timed(now, |renewal| Command::AcquireLease {
            candidate,
            expected_epoch,
            ttl_ms,
            renewal,
            lsn,
        })
    }

    /// Proposes renewing the lease this node holds under `epoch`.
    pub fn propose_renew(
        &mut self,
        epoch: LeaseEpoch,
        ttl: Duration,
        now: BootInstant,
    ) -> Result<ProposalId, ProposeError> {
        self.propose_renew_at(epoch, ttl, now, None)
    }

    /// `propose_renew` recording the primary's current WAL position.
    pub fn propose_renew_at(
        &mut self,
        epoch: LeaseEpoch,
        ttl: Duration,
        now: BootInstant,
        lsn: Option<Lsn>,
    ) -> Result<ProposalId, ProposeError> {
        let holder = self.cfg.name.clone();
        let ttl_ms = ttl.as_millis() as u64;
        self.propose_timed(now, |renewal| Command::RenewLease { holder, epoch, ttl_ms, renewal, lsn })
    }

    /// Proposes a lease grant or renewal carrying a fresh renewal id, and remembers when it was
    /// sent — only for a proposal Raft took, since only such a one can ever be applied.
    fn propose_timed(
        &mut self,
        now: BootInstant,
        make: impl FnOnce(u64) -> Command,
    ) -> Result<ProposalId, ProposeError> {
        let renewal = self.next_renewal_id();
        let id = self.propose(make(renewal))?;
        self.holder.sent(renewal, now);
        Ok(id)
    }

    pub fn propose_release(
        &mut self,
        epoch: LeaseEpoch,
        checkpoint: Option<Lsn>,
    ) -> Result<ProposalId, ProposeError> {
        self.propose(Command::ReleaseLease { holder: self.cfg.name.clone(), epoch, checkpoint })
    }

    /// Starts a ReadIndex request; its result comes back in `Output::read_states`.
    pub fn read_index(&mut self, ctx: Vec<u8>) {
        self.raw.read_index(ctx);
    }

    /// Asks the current leader to hand leadership to `to` (forwarded by followers).
    pub fn transfer_leader(&mut self, to: NodeId) {
        self.raw.transfer_leader(to.0);
    }

    pub fn report_unreachable(&mut self, id: NodeId) {
        self.raw.report_unreachable(id.0);
    }

    /// Tells Raft whether a `MsgSnapshot` to `to` was handed over whole. Without it the
    /// leader's progress for that follower stays in snapshot state, sending only heartbeats,
    /// if the snapshot or its one answer is lost (found by the simulation; etcd reports every
    /// snapshot send the same way).
    pub fn report_snapshot(&mut self, to: NodeId, delivered: bool) {
        let status = if delivered { raft::SnapshotStatus::Finish } else { raft::SnapshotStatus::Failure };
        self.raw.report_snapshot(to.0, status);
    }

    /// Starts an election at once (used by `--force-new-cluster`, where this node is the only
    /// voter, and by tests).
    pub fn campaign(&mut self) -> Result<(), CoreError> {
        Ok(self.raw.campaign()?)
    }

    fn track_leadership(&mut self, now: BootInstant) {
        let leader = self.is_leader();
        if leader && !self.was_leader {
            // A new Raft leader starts every lease timer afresh with the full ttl (rule 2).
            let lease = self.state.as_ref().and_then(|s| s.lease.clone());
            self.expiry.restart(lease.as_ref(), now);
        } else if !leader && self.was_leader {
            self.expiry.stop();
        }
        self.was_leader = leader;
    }

    /// Leader only: drive the Raft configuration towards the replicated membership, one
    /// change at a time.
    fn reconcile_membership(&mut self) {
        let Some(state) = &self.state else { return };
        if self.raw.raft.pending_conf_index > self.raw.raft.raft_log.applied
            || !self.conf_state.get_voters_outgoing().is_empty()
        {
            return; // a change is in flight or we are in a joint configuration
        }
        let committed = self.raw.raft.raft_log.committed;
        let mut change = None;
        for m in state.members.values() {
            let id = m.node_id.0;
            if m.removing {
                if m.node_id == self.cfg.id {
                    // Never remove ourselves while leading: hand leadership to a caught-up
                    // voter first; the next leader performs the removal.
                    if let Some(to) = self.best_transferee() {
                        self.raw.transfer_leader(to);
                    }
                    return;
                }
                if m.membership != RaftMembership::Pending {
                    change = Some((id, ConfChangeType::RemoveNode));
                    break;
                }
            } else if m.membership == RaftMembership::Pending {
                change = Some((id, ConfChangeType::AddLearnerNode));
                break;
            } else if m.membership == RaftMembership::Learner {
                // Promote only a learner that holds (nearly) everything committed: promoting one
                // that is far behind would make the cluster wait on it for its quorum.
                let caught_up = self
                    .raw
                    .raft
                    .prs()
                    .get(id)
                    .is_some_and(|pr| pr.matched > 0 && pr.matched + LEARNER_SLACK >= committed);
                if caught_up {
                    change = Some((id, ConfChangeType::AddNode));
                    break;
                }
            }
        }
        if let Some((id, ty)) = change {
            let mut single = ConfChangeSingle::default();
            single.set_node_id(id);
            single.set_change_type(ty);
            let mut cc = ConfChangeV2::default();
            // Joint consensus even for one change, left automatically by raft-rs.
            cc.set_transition(ConfChangeTransition::Implicit);
            cc.set_changes(vec![single].into());
            if let Err(e) = self.raw.propose_conf_change(Vec::new(), cc) {
                tracing::debug!(error = %e, node = id, "membership change not proposed yet");
            }
        }
    }

    /// Leader only: hands leadership to the most caught-up other voter. False if there is none.
    pub fn transfer_leadership_away(&mut self) -> bool {
        match self.best_transferee() {
            Some(to) if self.is_leader() => {
                self.raw.transfer_leader(to);
                true
            }
            _ => false,
        }
    }

    fn best_transferee(&self) -> Option<u64> {
        let voters = self.conf_state.get_voters();
        self.raw
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != self.cfg.id.0 && voters.contains(id))
            .max_by_key(|(_, pr)| pr.matched)
            .map(|(id, _)| *id)
    }

    /// Processes everything Raft has ready, in the durability order described at the top.
    pub fn advance(&mut self, now: BootInstant) -> Result<Output, CoreError> {
        let mut out = Output::default();
        if !self.raw.has_ready() {
            self.track_leadership(now);
            out.removed = self.is_removed(now);
            return Ok(out);
        }
        let mut rd = self.raw.ready();
        // Leader messages may go out before persisting (raft-rs allows it), but we keep one
        // simple rule: nothing leaves before this function's writes are done.
        out.messages.extend(rd.take_messages());
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            self.install_snapshot(&snap, &mut out)?;
        }
        for (ctx, index) in rd.take_read_states().into_iter().map(|r| (r.request_ctx, r.index)) {
            out.read_states.push((ctx, index));
        }
        let committed = rd.take_committed_entries();
        self.apply_entries(committed, now, &mut out)?;
        if !rd.entries().is_empty() {
            self.raw.mut_store().append(rd.entries())?;
        }
        if let Some(hs) = rd.hs() {
            self.raw.mut_store().set_hard_state(hs)?;
        }
        out.messages.extend(rd.take_persisted_messages());
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        out.messages.extend(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply_entries(committed, now, &mut out)?;
        self.raw.advance_apply();
        self.track_leadership(now);
        self.maybe_snapshot()?;
        out.removed = self.is_removed(now);
        Ok(out)
    }

    fn is_removed(&self, now: BootInstant) -> bool {
        self.removed || self.removal_started.is_some_and(|t| now.saturating_since(t) >= REMOVAL_GRACE)
    }

    fn install_snapshot(&mut self, snap: &Snapshot, out: &mut Output) -> Result<(), CoreError> {
        let meta = snap.get_metadata();
        let state = decode_state(meta.index, snap.get_data())?;
        self.raw.mut_store().apply_snapshot(snap)?;
        self.state = Some(state);
        self.conf_state = meta.get_conf_state().clone();
        self.applied = meta.index;
        self.snapshot_index = meta.index;
        out.state_changed = true;
        self.observe_lease();
        Ok(())
    }

    fn apply_entries(
        &mut self,
        entries: Vec<Entry>,
        now: BootInstant,
        out: &mut Output,
    ) -> Result<(), CoreError> {
        for entry in entries {
            let index = entry.index;
            if index <= self.applied {
                continue; // already in the state via a snapshot
            }
            self.applied = index;
            match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    if entry.data.is_empty() {
                        continue; // a new leader's empty entry
                    }
                    let p: Proposal = serde_json::from_slice(&entry.data)
                        .map_err(|e| CoreError::BadEntry { index, detail: e.to_string() })?;
                    let outcome = self.apply_command(p.command.clone(), now);
                    out.state_changed = true;
                    out.applied.push(Applied { index, proposal: p.id, command: p.command, outcome });
                }
                EntryType::EntryConfChangeV2 | EntryType::EntryConfChange => {
                    if entry.get_entry_type() == EntryType::EntryConfChange {
                        // pgha only ever proposes V2 changes (joint consensus).
                        return Err(CoreError::BadEntry {
                            index,
                            detail: "a v1 configuration change; pgha writes only v2".into(),
                        });
                    }
                    let cc = ConfChangeV2::parse_from_bytes(&entry.data)
                        .map_err(|e| CoreError::BadEntry { index, detail: e.to_string() })?;
                    self.conf_state = self.raw.apply_conf_change(&cc)?;
                    self.conf_changed = true;
                    let mut changes = Vec::new();
                    for change in cc.get_changes() {
                        let node_id = NodeId(change.node_id);
                        match change.get_change_type() {
                            ConfChangeType::AddNode => changes.push((node_id, Some(RaftMembership::Voter))),
                            ConfChangeType::AddLearnerNode => {
                                changes.push((node_id, Some(RaftMembership::Learner)))
                            }
                            // Removed from the state only once the joint configuration is
                            // left (below): until then the outgoing majority still needs its
                            // vote, so peers must keep talking to it.
                            ConfChangeType::RemoveNode if node_id == self.cfg.id => {
                                self.removal_started.get_or_insert(now);
                            }
                            ConfChangeType::RemoveNode => {}
                        }
                    }
                    let in_config = |id: u64| {
                        let cs = &self.conf_state;
                        cs.get_voters().contains(&id)
                            || cs.get_learners().contains(&id)
                            || cs.get_voters_outgoing().contains(&id)
                            || cs.get_learners_next().contains(&id)
                    };
                    if let Some(state) = &self.state {
                        for m in state.members.values() {
                            if m.membership != RaftMembership::Pending && !in_config(m.node_id.0) {
                                changes.push((m.node_id, None));
                            }
                        }
                    }
                    if !in_config(self.cfg.id.0) {
                        self.removed = true;
                    }
                    for (node_id, membership) in changes {
                        let command = Command::SetMembership { node_id, membership };
                        let outcome = self.apply_command(command.clone(), now);
                        out.applied.push(Applied { index, proposal: None, command, outcome });
                    }
                    out.state_changed = true;
                }
            }
        }
        Ok(())
    }

    fn apply_command(&mut self, command: Command, now: BootInstant) -> Outcome {
        let state = self.state.as_mut().expect("a member receives the state in a snapshot before any entry");
        let outcome = state.apply(command);
        let lease = state.lease.clone();
        self.observe_lease();
        if self.is_leader() {
            self.expiry.observe(lease.as_ref(), now);
        }
        outcome
    }

    fn observe_lease(&mut self) {
        let lease: Option<&Lease> = self.state.as_ref().and_then(|s| s.lease.as_ref());
        self.holder.observe(self.cfg.name.as_str(), lease, self.cfg.safety_margin);
    }

    fn maybe_snapshot(&mut self) -> Result<(), CoreError> {
        let due = self.applied >= self.snapshot_index + self.cfg.snapshot_every;
        if !(due || self.conf_changed || self.raw.store().snapshot_requested())
            || self.applied == self.snapshot_index
        {
            return Ok(());
        }
        let Some(state) = &self.state else { return Ok(()) };
        let data = encode_state(state);
        self.raw.mut_store().create_snapshot(
            self.applied,
            self.conf_state.clone(),
            data,
            self.cfg.retain_entries,
        )?;
        self.snapshot_index = self.applied;
        self.conf_changed = false;
        Ok(())
    }
}
