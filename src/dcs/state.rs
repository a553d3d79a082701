//! The replicated cluster state and its deterministic `apply`.
//!
//! Every node applies the same committed commands in the same order, so `apply` must read
//! nothing but the state and the command: the proposer stamps every time and id into the
//! command. A lost compare-and-set is `Outcome::Rejected`, a value, never an error; `apply`
//! cannot fail. The lease rules implemented here are DESIGN.md's "The lease" rules 1-3: an
//! acquire is one compare-and-set on the epoch, a renewal is accepted only for the current holder
//! and epoch, and an expiry only if no renewal was accepted since the leader started its timer.

use crate::config::dynamic::DynamicConfig;
use crate::types::{LeaseEpoch, Lsn, MemberName, NodeId, Timeline};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Who bootstrapped the cluster's Postgres, and the system identifier once known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Initialize {
    pub bootstrapper: MemberName,
    pub system_identifier: Option<String>,
}

/// The primary lease (DESIGN.md "The lease"). `ttl_ms` is stamped by the holder into every grant
/// and renewal, so a later `ttl` change never shortens a running lease on one side only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: MemberName,
    pub epoch: LeaseEpoch,
    pub ttl_ms: u64,
    /// Id of the last accepted grant or renewal, chosen by the holder; the Raft leader's expiry
    /// timer is keyed on it.
    pub renewal: u64,
}

/// A member's Raft role as seen by the replicated configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RaftMembership {
    /// Admitted by a join but not yet in the Raft configuration.
    Pending,
    Learner,
    Voter,
}

/// Tags as Patroni names them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tags {
    #[serde(default)]
    pub nofailover: bool,
    #[serde(default)]
    pub noloadbalance: bool,
    #[serde(default)]
    pub clonefrom: bool,
    #[serde(default)]
    pub nosync: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_priority: Option<i64>,
}

/// What a member last reported of its Postgres (filled by the HA loop).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub state: String,
    pub role: String,
    pub timeline: Option<Timeline>,
    pub receive_lsn: Option<Lsn>,
    pub replay_lsn: Option<Lsn>,
    pub wal_lsn: Option<Lsn>,
    pub pending_restart: bool,
    pub updated_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: MemberName,
    pub node_id: NodeId,
    /// Raft-only member without Postgres (DESIGN.md "join --witness").
    pub witness: bool,
    pub api_address: String,
    pub raft_address: String,
    pub pg_address: Option<String>,
    pub membership: RaftMembership,
    pub tags: Tags,
    pub version: String,
    pub status: Option<MemberStatus>,
    /// Marked by `pgha ctl remove`; the Raft leader takes it out of the configuration, and the
    /// member disappears from the state when that change is applied.
    #[serde(default)]
    pub removing: bool,
    /// A restart of this member's Postgres planned for later (`POST /restart` with `schedule`);
    /// its HA loop carries it out and clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_restart: Option<ScheduledRestart>,
}

/// Patroni's scheduled restart with its conditions, checked when the time comes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledRestart {
    /// Wall clock, milliseconds since the epoch.
    pub at_ms: u64,
    #[serde(default)]
    pub restart_pending: bool,
    /// `primary` or `replica`; none: either.
    #[serde(default)]
    pub role: Option<String>,
    /// Restart only while the running server is older than this version (e.g. `15.8`).
    #[serde(default)]
    pub postgres_version: Option<String>,
}

/// A one-time join token, stored only as the SHA-256 of its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    pub expires_at_ms: u64,
    pub used_by: Option<MemberName>,
}

/// The cluster CA, kept in the replicated state so any member can admit a joiner. This makes
/// the service user a cluster administrator (docs/security.md).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaMaterial {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaMaterial").field("key_pem", &"<secret>").finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverRequest {
    pub leader: Option<MemberName>,
    pub candidate: Option<MemberName>,
    /// Wall-clock milliseconds; `None` means now.
    pub scheduled_at_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The timeline that ended at `switch_lsn` when `new_primary` promoted (as in Postgres's
    /// timeline `.history` files and Patroni's `/history`).
    pub timeline: Timeline,
    pub switch_lsn: Lsn,
    pub reason: String,
    pub at_ms: u64,
    pub new_primary: MemberName,
}

/// The whole replicated state. `BTreeMap`s keep serialization and iteration order
/// deterministic, so snapshots of equal states are equal bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub scope: String,
    /// Changes only with `--force-new-cluster`; peers of another incarnation are refused.
    pub incarnation: String,
    pub initialize: Option<Initialize>,
    pub lease: Option<Lease>,
    /// The highest epoch ever granted; the next acquire must name it.
    pub last_epoch: LeaseEpoch,
    /// The last position the primary recorded (for `maximum_lag_on_failover`).
    pub last_primary_lsn: Option<Lsn>,
    /// The shutdown checkpoint of the last clean release (switchover, rule 6).
    pub release_checkpoint: Option<Lsn>,
    pub members: BTreeMap<MemberName, Member>,
    pub next_node_id: u64,
    pub config: DynamicConfig,
    pub config_version: u64,
    pub switchover: Option<SwitchoverRequest>,
    pub history: Vec<HistoryEntry>,
    /// Join tokens by hex SHA-256 of the secret.
    pub tokens: BTreeMap<String, JoinToken>,
    pub ca: CaMaterial,
    /// Generated Postgres role secrets (role -> password).
    pub secrets: BTreeMap<String, String>,
    /// The synchronous standbys the primary published (synchronous modes).
    #[serde(default)]
    pub sync: SyncState,
}

/// What the primary published about synchronous replication (DESIGN.md "Synchronous and
/// quorum replication"). `members` is always a subset of the standbys that acknowledged every
/// commit since they were published, so after a primary's lease expired only one of them may
/// take over. With no members: `degraded` means the primary may acknowledge commits
/// asynchronously (mode off, or `on` without a standby in non-strict mode), and the
/// asynchronous rules choose the next primary, but only among members at or past `min_lsn`
/// (the primary's position when it stopped waiting for standbys: every commit acknowledged
/// synchronously before is below it); otherwise commits wait for a standby not published yet,
/// and nobody may be promoted automatically.
///
/// Quorum mode (`quorum: Some(k)`): every acknowledged commit is on at least `k` of `members`
/// (not on all of them), so any `members.len() - k + 1` of them hold it. After the lease
/// expired they record their final received LSN (`final_lsns`), and only a member at the
/// maximum of enough records may take over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    pub members: BTreeSet<MemberName>,
    pub degraded: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_lsn: Option<Lsn>,
    /// `ANY k`: how many of `members` hold each acknowledged commit; `None`: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
    /// Quorum mode, while the lease is expired: each member's final received LSN, recorded
    /// after its WAL receiver stopped. Cleared when a lease is granted or the set changes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub final_lsns: BTreeMap<MemberName, Lsn>,
    /// The primary these commits are of (the lease holder that published, or was granted
    /// the lease last): it holds every one of them itself, so it may always take its lease
    /// back (Patroni's `leader` of the sync key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<MemberName>,
}

impl Default for SyncState {
    /// A new cluster is asynchronous until its primary publishes otherwise.
    fn default() -> Self {
        SyncState::degraded_at(None)
    }
}

impl SyncState {
    /// Commits are acknowledged without standbys since `min_lsn` (`None`: always were).
    pub fn degraded_at(min_lsn: Option<Lsn>) -> SyncState {
        SyncState {
            members: BTreeSet::new(),
            degraded: true,
            min_lsn,
            quorum: None,
            final_lsns: BTreeMap::new(),
            leader: None,
        }
    }

    /// Commits wait for a standby that is not published: nobody is promoted automatically.
    pub fn waiting() -> SyncState {
        SyncState { degraded: false, ..SyncState::degraded_at(None) }
    }

    /// Every acknowledged commit is on each of `members` (mode `on`; `waiting` when empty).
    pub fn all(members: BTreeSet<MemberName>) -> SyncState {
        SyncState { members, ..SyncState::waiting() }
    }

    /// Every acknowledged commit is on at least `k` of `members` (mode `quorum`). With `k`
    /// at least the set's size this is [`SyncState::all`]; with `k` zero nothing is known
    /// (`waiting`).
    pub fn any(k: usize, members: BTreeSet<MemberName>) -> SyncState {
        if k == 0 || members.is_empty() {
            SyncState::waiting()
        } else if k >= members.len() {
            SyncState::all(members)
        } else {
            SyncState { quorum: Some(k as u32), ..SyncState::all(members) }
        }
    }

    /// How many of `members` hold each acknowledged commit.
    pub fn k(&self) -> usize {
        self.quorum.map_or(self.members.len(), |k| k as usize)
    }

    /// How many final LSN records an acquire needs after an expiry: enough to meet every
    /// set of `k` members.
    pub fn records_needed(&self) -> usize {
        self.members.len() + 1 - self.k().min(self.members.len())
    }

    /// Quorum mode after an expiry (DESIGN.md): any `n - k + 1` members of the quorum hold
    /// every acknowledged commit, so `candidate` must be at the highest of at least that many
    /// final records. `None`: it is.
    pub fn quorum_gap(&self, candidate: &MemberName) -> Option<QuorumGap> {
        let needed = self.records_needed();
        let records: Vec<Lsn> = self.members.iter().filter_map(|m| self.final_lsns.get(m).copied()).collect();
        if records.len() < needed {
            return Some(QuorumGap::Incomplete { recorded: records.len(), needed });
        }
        let max = records.iter().copied().max().unwrap_or(Lsn(0));
        match self.final_lsns.get(candidate) {
            Some(&lsn) if lsn >= max => None,
            lsn => Some(QuorumGap::Behind { lsn: lsn.copied(), max }),
        }
    }
}

/// Why a member of a quorum may not take an expired lease yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuorumGap {
    /// Too few members recorded their final LSN to be sure who holds every commit.
    Incomplete { recorded: usize, needed: usize },
    /// Another member recorded more WAL (or this one recorded nothing).
    Behind { lsn: Option<Lsn>, max: Lsn },
}

/// Identifies a proposal so the proposing node can match the applied entry to its waiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProposalId {
    pub node: NodeId,
    /// Chosen afresh at every start of the proposing process: committed entries are replayed
    /// after a restart, and an id from a previous run must never match a new waiter.
    pub instance: u32,
    pub seq: u64,
}

/// A member as a joiner describes itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMember {
    pub name: MemberName,
    pub witness: bool,
    pub api_address: String,
    pub raft_address: String,
    pub pg_address: Option<String>,
    pub tags: Tags,
    pub version: String,
}

/// Everything that changes the replicated state. Times are stamped by the proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Compare-and-set: granted only if nobody holds the lease and `expected_epoch` is the last
    /// epoch granted (rule 3).
    AcquireLease {
        candidate: MemberName,
        expected_epoch: LeaseEpoch,
        ttl_ms: u64,
        renewal: u64,
        /// The candidate's WAL position, checked against `maximum_lag_on_failover` and a
        /// released primary's checkpoint inside the compare-and-set (rule 3).
        #[serde(default)]
        lsn: Option<Lsn>,
    },
    RenewLease {
        holder: MemberName,
        epoch: LeaseEpoch,
        ttl_ms: u64,
        renewal: u64,
        /// The primary's current WAL position, recorded as the last primary position.
        #[serde(default)]
        lsn: Option<Lsn>,
    },
    /// Given up by the holder; carries the shutdown checkpoint after a clean stop (rule 6).
    ReleaseLease {
        holder: MemberName,
        epoch: LeaseEpoch,
        checkpoint: Option<Lsn>,
    },
    /// Proposed only by the Raft leader when its timer for this exact renewal ran out (rule 2).
    ExpireLease {
        epoch: LeaseEpoch,
        renewal: u64,
    },
    CreateToken {
        hash: String,
        expires_at_ms: u64,
    },
    /// Admits a member: consumes the token and assigns a node id in one step, so a token can
    /// never admit two members and a name can never be taken twice.
    Join {
        token_hash: String,
        now_ms: u64,
        member: NewMember,
    },
    /// Records a Raft configuration change once Raft applied it (proposed as a ConfChange entry;
    /// the node turns its application into this command so the state mirrors Raft's view).
    SetMembership {
        node_id: NodeId,
        membership: Option<RaftMembership>,
    },
    /// Drops expired and used tokens older than `now_ms`.
    PruneTokens {
        now_ms: u64,
    },
    /// Marks a member for removal from the Raft configuration (`pgha ctl remove`).
    RemoveMember {
        name: MemberName,
    },
    /// Races for the right to bootstrap the cluster's Postgres (`initdb`).
    ClaimInitialize {
        member: MemberName,
    },
    /// The bootstrapper's Postgres runs: record its system identifier and the generated role
    /// secrets.
    CompleteInitialize {
        member: MemberName,
        system_identifier: String,
        secrets: BTreeMap<String, String>,
    },
    /// A member's periodic report of its Postgres.
    ReportStatus {
        member: MemberName,
        status: MemberStatus,
    },
    /// The new primary promoted: the timeline that ended and where (history, rule 7).
    RecordPromotion {
        member: MemberName,
        epoch: LeaseEpoch,
        entry: HistoryEntry,
    },
    /// A switchover (or, with only a candidate and no healthy primary, a failover) request.
    RequestSwitchover {
        request: SwitchoverRequest,
    },
    CancelSwitchover,
    /// The lease holder of `epoch` publishes its synchronous standbys.
    SetSync {
        holder: MemberName,
        epoch: LeaseEpoch,
        sync: SyncState,
    },
    /// Quorum mode, after the lease of `epoch` expired: `member` of the published quorum
    /// records the last LSN its WAL receiver flushed, once the receiver stopped.
    RecordFinalLsn {
        member: MemberName,
        epoch: LeaseEpoch,
        lsn: Lsn,
    },
    /// Plans (`Some`) or drops (`None`) a restart of `member`'s Postgres. Only one may be
    /// planned at a time, as in Patroni.
    ScheduleRestart {
        member: MemberName,
        restart: Option<ScheduledRestart>,
    },
    /// Replaces the dynamic configuration if `expected_version` is current (the proposer
    /// validated it; every node re-checks its own safety margin when it applies it).
    SetConfig {
        expected_version: u64,
        config: DynamicConfig,
    },
}

/// Why a command changed nothing. Displayed to operators as-is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Rejection {
    #[error("the lease is held by {holder} (epoch {epoch})")]
    LeaseHeld { holder: MemberName, epoch: LeaseEpoch },
    #[error("expected lease epoch {expected} but the last granted is {actual}")]
    StaleEpoch { expected: LeaseEpoch, actual: LeaseEpoch },
    #[error("{member} does not hold the lease")]
    NotHolder { member: MemberName },
    #[error("a renewal was accepted after the expiry timer started")]
    RenewedMeanwhile,
    #[error("{member} is not a member of this cluster")]
    UnknownMember { member: MemberName },
    #[error("{member} is a witness and holds no Postgres")]
    Witness { member: MemberName },
    #[error("{member} is tagged nofailover")]
    NoFailover { member: MemberName },
    #[error("the join token is unknown: create one with `pgha ctl token create`")]
    UnknownToken,
    #[error("the join token expired: create a new one with `pgha ctl token create`")]
    TokenExpired,
    #[error("the join token was already used by {by}: create a new one with `pgha ctl token create`")]
    TokenUsed { by: MemberName },
    #[error("a member named {name} already exists: choose another --name or `pgha ctl remove {name}` first")]
    DuplicateName { name: MemberName },
    #[error("{address} is already used by member {member}")]
    DuplicateAddress { address: String, member: MemberName },
    #[error("a token with this hash already exists")]
    DuplicateToken,
    #[error("{member} holds the primary lease: switch over to another member first")]
    HoldsLease { member: MemberName },
    #[error("{member} is the last voter: a cluster cannot remove its last voting member")]
    LastVoter { member: MemberName },
    #[error("{member} is {lag} bytes behind the last primary position (maximum_lag_on_failover {max})")]
    TooFarBehind { member: MemberName, lag: u64, max: u64 },
    #[error("{member} replayed only {lsn}, before the released primary's shutdown checkpoint {checkpoint}")]
    BeforeCheckpoint { member: MemberName, lsn: Lsn, checkpoint: Lsn },
    #[error("the cluster is already initialized (bootstrapped by {by})")]
    AlreadyInitialized { by: MemberName },
    #[error("{member} did not win the initialize race")]
    NotBootstrapper { member: MemberName },
    #[error("history already records timeline {timeline}")]
    TimelineRecorded { timeline: Timeline },
    #[error("{why}")]
    Switchover { why: String },
    #[error("{member} is not a synchronous standby of the last primary (synchronous_mode: only those hold every acknowledged commit)")]
    NotSyncStandby { member: MemberName },
    #[error("{member} is at {lsn}, before {min_lsn}, where the last primary stopped waiting for synchronous standbys")]
    BeforeSyncDegraded { member: MemberName, lsn: Lsn, min_lsn: Lsn },
    #[error("the last primary published no synchronous standby while its commits waited for one: no member is known to hold every acknowledged commit (synchronous_mode_strict); bring the primary back or fail over manually")]
    NoSyncStandby,
    #[error("only {recorded} of the {needed} quorum standbys needed have recorded their final WAL position since the primary's lease expired")]
    QuorumIncomplete { recorded: usize, needed: usize },
    #[error("{member} recorded {}, behind {max}, the highest final WAL position of the quorum", lsn.map_or("nothing".to_string(), |l| l.to_string()))]
    BehindQuorum { member: MemberName, lsn: Option<Lsn>, max: Lsn },
    #[error("a quorum of {quorum} among {members} synchronous standbys is not possible (1 to their number)")]
    InvalidQuorum { quorum: u32, members: usize },
    #[error("{member} already has a restart scheduled at {at}: cancel it first (DELETE /restart, `pgha ctl flush MEMBER restart`)")]
    RestartScheduled { member: MemberName, at: String },
    #[error("{member} has no scheduled restart")]
    NoRestartScheduled { member: MemberName },
    #[error("the configuration changed meanwhile (version {actual}, expected {expected}): reload and retry")]
    ConfigVersion { expected: u64, actual: u64 },
}

/// The result of applying one command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Accepted,
    /// A join was accepted and the member got this node id.
    Joined {
        node_id: NodeId,
    },
    /// A lease was granted with this epoch.
    LeaseGranted {
        epoch: LeaseEpoch,
    },
    Rejected {
        reason: Rejection,
    },
}

impl Outcome {
    pub fn is_accepted(&self) -> bool {
        !matches!(self, Outcome::Rejected { .. })
    }
}

impl ClusterState {
    /// The state `pgha init` writes: one voter, no lease, the given CA and dynamic config.
    pub fn bootstrap(
        scope: String,
        incarnation: String,
        first: NewMember,
        ca: CaMaterial,
        config: DynamicConfig,
    ) -> ClusterState {
        let mut members = BTreeMap::new();
        members.insert(
            first.name.clone(),
            Member {
                name: first.name,
                node_id: NodeId(1),
                witness: first.witness,
                api_address: first.api_address,
                raft_address: first.raft_address,
                pg_address: first.pg_address,
                membership: RaftMembership::Voter,
                tags: first.tags,
                version: first.version,
                status: None,
                removing: false,
                scheduled_restart: None,
            },
        );
        ClusterState {
            scope,
            incarnation,
            initialize: None,
            lease: None,
            last_epoch: LeaseEpoch(0),
            last_primary_lsn: None,
            release_checkpoint: None,
            sync: SyncState::default(),
            members,
            next_node_id: 2,
            config,
            config_version: 1,
            switchover: None,
            history: Vec::new(),
            tokens: BTreeMap::new(),
            ca,
            secrets: BTreeMap::new(),
        }
    }

    pub fn member_by_id(&self, id: NodeId) -> Option<&Member> {
        self.members.values().find(|m| m.node_id == id)
    }

    /// Node ids the Raft configuration contains (learners and voters).
    pub fn raft_node_ids(&self) -> BTreeSet<NodeId> {
        self.members.values().filter(|m| m.membership != RaftMembership::Pending).map(|m| m.node_id).collect()
    }

    /// `synchronous_mode: quorum`: the published standbys are an `ANY k` quorum.
    pub fn quorum_mode(&self) -> bool {
        self.config.synchronous_mode == crate::config::dynamic::SynchronousMode::Quorum
    }

    /// Applies one committed command. Deterministic: reads only `self` and `cmd`.
    pub fn apply(&mut self, cmd: Command) -> Outcome {
        let outcome = match cmd {
            Command::AcquireLease { candidate, expected_epoch, ttl_ms, renewal, lsn } => {
                self.acquire(candidate, expected_epoch, ttl_ms, renewal, lsn)
            }
            Command::RenewLease { holder, epoch, ttl_ms, renewal, lsn } => match &mut self.lease {
                Some(l) if l.holder == holder && l.epoch == epoch => {
                    l.ttl_ms = ttl_ms;
                    l.renewal = renewal;
                    if lsn.is_some() {
                        self.last_primary_lsn = lsn;
                    }
                    Outcome::Accepted
                }
                _ => Outcome::Rejected { reason: Rejection::NotHolder { member: holder } },
            },
            Command::ReleaseLease { holder, epoch, checkpoint } => match &self.lease {
                Some(l) if l.holder == holder && l.epoch == epoch => {
                    self.lease = None;
                    self.release_checkpoint = checkpoint;
                    Outcome::Accepted
                }
                _ => Outcome::Rejected { reason: Rejection::NotHolder { member: holder } },
            },
            Command::ExpireLease { epoch, renewal } => match &self.lease {
                Some(l) if l.epoch == epoch && l.renewal == renewal => {
                    self.lease = None;
                    self.release_checkpoint = None;
                    Outcome::Accepted
                }
                Some(l) if l.epoch == epoch => Outcome::Rejected { reason: Rejection::RenewedMeanwhile },
                Some(l) => {
                    Outcome::Rejected { reason: Rejection::StaleEpoch { expected: epoch, actual: l.epoch } }
                }
                None => Outcome::Rejected {
                    reason: Rejection::StaleEpoch { expected: epoch, actual: self.last_epoch },
                },
            },
            Command::CreateToken { hash, expires_at_ms } => {
                use std::collections::btree_map::Entry;
                match self.tokens.entry(hash) {
                    Entry::Occupied(_) => Outcome::Rejected { reason: Rejection::DuplicateToken },
                    Entry::Vacant(v) => {
                        v.insert(JoinToken { expires_at_ms, used_by: None });
                        Outcome::Accepted
                    }
                }
            }
            Command::Join { token_hash, now_ms, member } => self.join(token_hash, now_ms, member),
            Command::SetMembership { node_id, membership } => {
                let name = self.member_by_id(node_id).map(|m| m.name.clone());
                match (name, membership) {
                    (Some(name), Some(ms)) => {
                        if let Some(m) = self.members.get_mut(&name) {
                            m.membership = ms;
                        }
                        Outcome::Accepted
                    }
                    (Some(name), None) => {
                        self.members.remove(&name);
                        self.sync.members.remove(&name);
                        if self.lease.as_ref().is_some_and(|l| l.holder == name) {
                            // A removed member can no longer renew; freeing the lease here is
                            // safe only because removal is refused while it holds it (api).
                            self.lease = None;
                        }
                        Outcome::Accepted
                    }
                    // Raft changes for ids the state no longer knows (a removal applied twice).
                    (None, _) => Outcome::Accepted,
                }
            }
            Command::RemoveMember { name } => self.mark_removing(name),
            Command::ClaimInitialize { member } => self.claim_initialize(member),
            Command::CompleteInitialize { member, system_identifier, secrets } => {
                self.complete_initialize(member, system_identifier, secrets)
            }
            Command::ReportStatus { member, status } => self.report_status(member, status),
            Command::RecordPromotion { member, epoch, entry } => self.record_promotion(member, epoch, entry),
            Command::RequestSwitchover { request } => self.request_switchover(request),
            Command::CancelSwitchover => {
                self.switchover = None;
                Outcome::Accepted
            }
            Command::ScheduleRestart { member, restart } => self.schedule_restart(member, restart),
            Command::SetSync { holder, epoch, sync } => self.set_sync(holder, epoch, sync),
            Command::RecordFinalLsn { member, epoch, lsn } => self.record_final_lsn(member, epoch, lsn),
            Command::SetConfig { expected_version, config } => self.set_config(expected_version, config),
            Command::PruneTokens { now_ms } => {
                self.tokens.retain(|_, t| t.used_by.is_none() && t.expires_at_ms > now_ms);
                Outcome::Accepted
            }
        };
        #[cfg(debug_assertions)]
        self.check_invariants();
        outcome
    }

    fn acquire(
        &mut self,
        candidate: MemberName,
        expected_epoch: LeaseEpoch,
        ttl_ms: u64,
        renewal: u64,
        lsn: Option<Lsn>,
    ) -> Outcome {
        if let Some(l) = &self.lease {
            return Outcome::Rejected {
                reason: Rejection::LeaseHeld { holder: l.holder.clone(), epoch: l.epoch },
            };
        }
        if expected_epoch != self.last_epoch {
            return Outcome::Rejected {
                reason: Rejection::StaleEpoch { expected: expected_epoch, actual: self.last_epoch },
            };
        }
        let Some(member) = self.members.get(&candidate) else {
            return Outcome::Rejected { reason: Rejection::UnknownMember { member: candidate } };
        };
        if member.witness {
            return Outcome::Rejected { reason: Rejection::Witness { member: candidate } };
        }
        if member.tags.nofailover || member.tags.failover_priority == Some(0) {
            return Outcome::Rejected { reason: Rejection::NoFailover { member: candidate } };
        }
        if let Some(reason) = self.wal_blocker(&candidate, lsn) {
            return Outcome::Rejected { reason };
        }
        if let Some(reason) = self.sync_blocker(&candidate, lsn) {
            return Outcome::Rejected { reason };
        }
        // The new primary's own commits are acknowledged by the others still published (it
        // names them before it promotes); it is no standby of itself. In a quorum, the others
        // hold each earlier commit one time fewer if it was one of them.
        if !self.sync.members.is_empty() {
            let k = self.sync.k();
            let was_member = self.sync.members.remove(&candidate);
            let rest = std::mem::take(&mut self.sync.members);
            self.sync = SyncState::any(k - usize::from(was_member), rest);
        }
        self.sync.final_lsns.clear();
        self.sync.leader = Some(candidate.clone());
        let epoch = self.last_epoch.next();
        self.last_epoch = epoch;
        // A switchover is done once someone other than the member it moved the role away
        // from holds the lease; its checkpoint has served its purpose too.
        if self.switchover.as_ref().is_some_and(|sw| sw.leader.as_ref() != Some(&candidate)) {
            self.switchover = None;
            self.release_checkpoint = None;
        }
        self.lease = Some(Lease { holder: candidate, epoch, ttl_ms, renewal });
        Outcome::LeaseGranted { epoch }
    }

    fn mark_removing(&mut self, name: MemberName) -> Outcome {
        let reject = |reason| Outcome::Rejected { reason };
        let Some(member) = self.members.get(&name) else {
            return reject(Rejection::UnknownMember { member: name });
        };
        if self.lease.as_ref().is_some_and(|l| l.holder == name) {
            return reject(Rejection::HoldsLease { member: name });
        }
        let other_voters = self
            .members
            .values()
            .filter(|m| m.name != name && m.membership == RaftMembership::Voter && !m.removing)
            .count();
        if member.membership == RaftMembership::Voter && other_voters == 0 {
            return reject(Rejection::LastVoter { member: name });
        }
        if member.membership == RaftMembership::Pending {
            // Never entered Raft: nothing to reconfigure.
            self.members.remove(&name);
            self.sync.members.remove(&name);
        } else if let Some(m) = self.members.get_mut(&name) {
            m.removing = true;
        }
        Outcome::Accepted
    }

    fn join(&mut self, token_hash: String, now_ms: u64, m: NewMember) -> Outcome {
        let reject = |reason| Outcome::Rejected { reason };
        let Some(token) = self.tokens.get(&token_hash) else {
            return reject(Rejection::UnknownToken);
        };
        if let Some(by) = &token.used_by {
            return reject(Rejection::TokenUsed { by: by.clone() });
        }
        if token.expires_at_ms <= now_ms {
            return reject(Rejection::TokenExpired);
        }
        if self.members.contains_key(&m.name) {
            return reject(Rejection::DuplicateName { name: m.name });
        }
        for other in self.members.values() {
            for (mine, theirs) in
                [(&m.api_address, &other.api_address), (&m.raft_address, &other.raft_address)]
            {
                if mine == theirs {
                    return reject(Rejection::DuplicateAddress {
                        address: mine.clone(),
                        member: other.name.clone(),
                    });
                }
            }
        }
        let node_id = NodeId(self.next_node_id);
        self.next_node_id += 1;
        if let Some(t) = self.tokens.get_mut(&token_hash) {
            t.used_by = Some(m.name.clone());
        }
        self.members.insert(
            m.name.clone(),
            Member {
                name: m.name,
                node_id,
                witness: m.witness,
                api_address: m.api_address,
                raft_address: m.raft_address,
                pg_address: m.pg_address,
                membership: RaftMembership::Pending,
                tags: m.tags,
                version: m.version,
                status: None,
                removing: false,
                scheduled_restart: None,
            },
        );
        Outcome::Joined { node_id }
    }

    /// Invariants that hold after every apply; checked in debug builds and by the simulation.
    pub fn check_invariants(&self) {
        if let Some(l) = &self.lease {
            assert!(
                l.epoch == self.last_epoch,
                "lease epoch {} != last granted {}",
                l.epoch,
                self.last_epoch
            );
            assert!(self.members.contains_key(&l.holder), "lease holder {} is not a member", l.holder);
        }
        let ids: BTreeSet<_> = self.members.values().map(|m| m.node_id).collect();
        assert_eq!(ids.len(), self.members.len(), "two members share a node id");
        assert!(ids.iter().all(|id| id.0 < self.next_node_id), "node id not below next_node_id");
        for w in self.history.windows(2) {
            assert!(w[0].timeline < w[1].timeline, "timelines in history must increase");
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
