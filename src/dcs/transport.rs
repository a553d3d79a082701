//! Raft peer transport over mutual TLS.
//!
//! Outbound: one task per peer with a bounded queue; it connects to the peer's
//! `raft.connect_address`, presents this node's member certificate, sends a [`Hello`] and then
//! message frames. A full queue or a broken connection drops messages (Raft retransmits) and
//! reports the peer unreachable so the leader probes instead of streaming.
//!
//! Inbound: every connection must present a certificate from the cluster CA whose URI SAN is
//! `pgha://<scope>/member/<name>` of a current member, with a `Hello` naming that member's node
//! id and this cluster's incarnation. A client (`pgha ctl`) certificate, a foreign CA, a removed
//! member or another incarnation is refused and logged; membership is re-checked on every frame,
//! so a removal takes effect at once on open connections too.
//!
//! Never: decode a frame from an unauthenticated peer, block the Raft loop on a slow peer.

use super::codec::{self, Hello};
use super::state::ClusterState;
use crate::clock::{self, BootInstant};
use crate::tls::{self, pki, NodeTls};
use crate::types::{MemberName, NodeId};
use raft::eraftpb::Message;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
pub use tokio_rustls::TlsAcceptor as RaftAcceptor;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Inbound connections accepted at once (peers need one each; the rest is abuse).
const MAX_INBOUND: usize = 64;

/// Who we are on the wire.
#[derive(Clone, Debug)]
pub struct LocalIdentity {
    pub scope: String,
    pub incarnation: String,
    pub node_id: NodeId,
    pub name: MemberName,
}

/// Last time a frame was written to each peer, for `pgha ctl members`.
#[derive(Clone, Default)]
pub struct Reachability(Arc<Mutex<BTreeMap<NodeId, BootInstant>>>);

impl Reachability {
    fn mark(&self, id: NodeId) {
        self.0.lock().expect("reachability lock").insert(id, clock::boot_now());
    }
    /// A peer counts as reachable if we delivered a frame to it within `window`.
    pub fn reachable(&self, id: NodeId, now: BootInstant, window: Duration) -> bool {
        self.0.lock().expect("reachability lock").get(&id).is_some_and(|t| now.saturating_since(*t) <= window)
    }
}

/// What peer tasks tell the Raft loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// Messages to this peer could not be delivered: the leader should probe, not stream.
    Unreachable(NodeId),
    /// A `MsgSnapshot` to this peer was written whole (`true`) or lost (`false`).
    Snapshot(NodeId, bool),
}

/// The sending half used by the driver.
pub struct Outbox {
    me: LocalIdentity,
    connector: TlsConnector,
    peers: BTreeMap<NodeId, Peer>,
    events: mpsc::Sender<PeerEvent>,
    reach: Reachability,
}

struct Peer {
    address: String,
    queue: mpsc::Sender<Message>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Outbox {
    pub fn new(
        me: LocalIdentity,
        node_tls: &NodeTls,
        events: mpsc::Sender<PeerEvent>,
        reach: Reachability,
    ) -> Result<Outbox, tls::TlsError> {
        Ok(Outbox {
            me,
            connector: TlsConnector::from(tls::raft_client_config(node_tls)?),
            peers: BTreeMap::new(),
            events,
            reach,
        })
    }

    pub fn set_incarnation(&mut self, incarnation: String) {
        if incarnation != self.me.incarnation {
            self.me.incarnation = incarnation;
            self.peers.clear();
        }
    }

    /// Keeps one peer task per other member, at its current address.
    pub fn sync_members(&mut self, state: &ClusterState) {
        self.sync_peers(state.members.values().map(|m| (m.node_id, m.raft_address.clone())).collect());
    }

    /// Keeps one peer task per entry of `(node id, raft address)`, except ourselves.
    pub fn sync_peers(&mut self, peers: Vec<(NodeId, String)>) {
        let wanted: BTreeMap<NodeId, String> =
            peers.into_iter().filter(|(id, _)| *id != self.me.node_id).collect();
        self.peers.retain(|id, p| wanted.get(id) == Some(&p.address));
        for (id, address) in wanted {
            if !self.peers.contains_key(&id) {
                let (tx, rx) = mpsc::channel(PEER_QUEUE);
                let task = tokio::spawn(peer_loop(
                    self.me.clone(),
                    self.connector.clone(),
                    id,
                    address.clone(),
                    rx,
                    self.events.clone(),
                    self.reach.clone(),
                ));
                self.peers.insert(id, Peer { address, queue: tx, task });
            }
        }
    }

    pub fn send(&mut self, messages: Vec<Message>) {
        for m in messages {
            let to = NodeId(m.to);
            let snapshot = is_snapshot(&m);
            match self.peers.get(&to) {
                Some(p) => {
                    if p.queue.try_send(m).is_err() {
                        let _ = self.events.try_send(PeerEvent::Unreachable(to));
                        if snapshot {
                            let _ = self.events.try_send(PeerEvent::Snapshot(to, false));
                        }
                    }
                }
                None => tracing::trace!(to = %to, "message for a peer with no known address dropped"),
            }
        }
    }
}

async fn peer_loop(
    me: LocalIdentity,
    connector: TlsConnector,
    id: NodeId,
    address: String,
    mut rx: mpsc::Receiver<Message>,
    events: mpsc::Sender<PeerEvent>,
    reach: Reachability,
) {
    let unreachable = || {
        let _ = events.try_send(PeerEvent::Unreachable(id));
    };
    // Snapshots are reported once written whole (flushed) or lost with the connection.
    let report = |snapshots: usize, delivered: bool| {
        for _ in 0..snapshots {
            let _ = events.try_send(PeerEvent::Snapshot(id, delivered));
        }
    };
    let mut backoff = Duration::from_millis(50);
    let mut logged = false;
    loop {
        match connect(&me, &connector, &address).await {
            Ok(mut conn) => {
                backoff = Duration::from_millis(50);
                if logged {
                    tracing::info!(peer = %id, %address, "raft peer reachable again");
                    logged = false;
                }
                reach.mark(id);
                loop {
                    let Some(first) = rx.recv().await else { return };
                    let mut snapshots = usize::from(is_snapshot(&first));
                    let mut result = codec::write_frame(&mut conn, &codec::encode_message(&first)).await;
                    // Batch whatever else is queued into the same flush.
                    while result.is_ok() {
                        match rx.try_recv() {
                            Ok(m) => {
                                snapshots += usize::from(is_snapshot(&m));
                                result = codec::write_frame(&mut conn, &codec::encode_message(&m)).await
                            }
                            Err(_) => break,
                        }
                    }
                    if result.is_ok() {
                        result = conn.flush().await.map_err(Into::into);
                    }
                    match result {
                        Ok(()) => {
                            reach.mark(id);
                            report(snapshots, true);
                        }
                        Err(e) => {
                            tracing::debug!(peer = %id, error = %e, "raft connection lost");
                            unreachable();
                            report(snapshots, false);
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                if !logged {
                    tracing::warn!(peer = %id, %address, error = %e, "cannot reach raft peer; retrying");
                    logged = true;
                }
                unreachable();
                // Drop what queued up meanwhile: Raft will resend what still matters.
                while let Ok(m) = rx.try_recv() {
                    report(usize::from(is_snapshot(&m)), false);
                }
                clock::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn is_snapshot(m: &Message) -> bool {
    m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot
}

type ClientConn = BufWriter<tokio_rustls::client::TlsStream<TcpStream>>;

async fn connect(me: &LocalIdentity, connector: &TlsConnector, address: &str) -> Result<ClientConn, String> {
    // Host names are resolved without libc (STACK.md item 2), inside the same deadline.
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, crate::sys::resolve::connect(address))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let host = address.rsplit_once(':').map(|(h, _)| h).unwrap_or(address);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = tls::server_name(host).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake: {}", tls::describe_handshake_error(&e)))?;
    let mut conn = BufWriter::new(tls);
    let hello = Hello { incarnation: me.incarnation.clone(), node_id: me.node_id, name: me.name.clone() };
    codec::write_frame(&mut conn, &serde_json::to_vec(&hello).expect("hello encodes"))
        .await
        .map_err(|e| e.to_string())?;
    conn.flush().await.map_err(|e| e.to_string())?;
    Ok(conn)
}

/// What an inbound peer must match, read from the applied state (or, before a joiner has
/// any state, from its local identity alone).
fn admit(
    state: Option<&ClusterState>,
    me: &LocalIdentity,
    cert_name: &MemberName,
    hello: &Hello,
) -> Result<(), String> {
    if &hello.name != cert_name {
        return Err(format!("hello names {} but the certificate is {}", hello.name, cert_name));
    }
    let incarnation = state.map(|s| s.incarnation.as_str()).unwrap_or(&me.incarnation);
    if hello.incarnation != incarnation {
        return Err(format!(
            "peer belongs to cluster incarnation {} but this is {} (after --force-new-cluster, old members must re-join)",
            hello.incarnation, incarnation
        ));
    }
    if let Some(state) = state {
        match state.members.get(cert_name) {
            Some(m) if m.node_id == hello.node_id => {}
            Some(m) => return Err(format!("{} is node {} not {}", cert_name, m.node_id, hello.node_id)),
            None => return Err(format!("{cert_name} is not a member of this cluster")),
        }
    }
    Ok(())
}

/// Accepts peer connections until the listener fails; forwards their messages to `inbox`.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    me: LocalIdentity,
    state: watch::Receiver<Option<Arc<ClusterState>>>,
    inbox: mpsc::Sender<Message>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_INBOUND));
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "raft listener accept failed");
                clock::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%addr, "too many raft connections; refusing");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, me, state, inbox) = (acceptor.clone(), me.clone(), state.clone(), inbox.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match inbound(tcp, acceptor, me, state, inbox).await {
                Ok(()) => {}
                Err(Inbound::Refused(e)) => tracing::warn!(%addr, error = %e, "raft peer refused"),
                Err(Inbound::Lost(e)) => tracing::debug!(%addr, error = %e, "raft peer connection closed"),
            }
        });
    }
}

/// Why an inbound connection ended: refused (logged as a warning: someone tried to get in) or
/// lost after admission (a peer restarting; not worth a warning).
enum Inbound {
    Refused(String),
    Lost(String),
}

impl From<String> for Inbound {
    fn from(s: String) -> Self {
        Inbound::Refused(s)
    }
}
impl From<&str> for Inbound {
    fn from(s: &str) -> Self {
        Inbound::Refused(s.to_string())
    }
}

async fn inbound(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    me: LocalIdentity,
    state: watch::Receiver<Option<Arc<ClusterState>>>,
    inbox: mpsc::Sender<Message>,
) -> Result<(), Inbound> {
    let mut tls = tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake: {}", tls::describe_handshake_error(&e)))?;
    let identity = tls::peer_identity_from_conn(tls.get_ref().1, &me.scope).map_err(|e| e.to_string())?;
    if identity.role != pki::Role::Member {
        return Err(Inbound::Refused(format!(
            "{} presented a {:?} certificate, not a member certificate",
            identity.name, identity.role
        )));
    }
    let hello = tokio::time::timeout(CONNECT_TIMEOUT, codec::read_frame(&mut tls))
        .await
        .map_err(|_| "no hello".to_string())?
        .map_err(|e| e.to_string())?;
    let hello: Hello = serde_json::from_slice(&hello).map_err(|e| format!("bad hello: {e}"))?;
    admit(state.borrow().as_deref(), &me, &identity.name, &hello)?;
    tracing::debug!(peer = %hello.name, "raft peer connected");
    loop {
        let frame = match codec::read_frame(&mut tls).await {
            Ok(f) => f,
            Err(codec::CodecError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(Inbound::Lost(e.to_string())),
        };
        // Re-check on every frame: a member removed meanwhile is cut off at once.
        admit(state.borrow().as_deref(), &me, &identity.name, &hello)?;
        let msg = codec::decode_message(&frame).map_err(|e| e.to_string())?;
        // raft-rs forwards a leadership transfer with `from` = the transferee, so a follower
        // relays it on the transferee's behalf; it must still name a current member.
        let relayed_transfer = msg.get_msg_type() == raft::eraftpb::MessageType::MsgTransferLeader
            && state.borrow().as_deref().is_some_and(|s| s.member_by_id(NodeId(msg.from)).is_some());
        if msg.from != hello.node_id.0 && !relayed_transfer {
            return Err(Inbound::Refused(format!(
                "message claims to be from {} on {}'s connection",
                msg.from, hello.name
            )));
        }
        if inbox.send(msg).await.is_err() {
            return Ok(()); // shutting down
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::dynamic::DynamicConfig;
    use crate::dcs::state::{CaMaterial, NewMember, Tags};

    fn name(s: &str) -> MemberName {
        MemberName::new(s).unwrap()
    }

    fn state() -> ClusterState {
        ClusterState::bootstrap(
            "s".into(),
            "inc-1".into(),
            NewMember {
                name: name("n1"),
                witness: false,
                api_address: "a".into(),
                raft_address: "r".into(),
                pg_address: None,
                tags: Tags::default(),
                version: "t".into(),
            },
            CaMaterial { cert_pem: String::new(), key_pem: String::new() },
            DynamicConfig::default(),
        )
    }

    fn me() -> LocalIdentity {
        LocalIdentity { scope: "s".into(), incarnation: "inc-1".into(), node_id: NodeId(2), name: name("n2") }
    }

    /// (scenario, certificate name, hello, expected admitted)
    #[test]
    fn admission_rules() {
        let hello = |n: &str, id: u64, inc: &str| Hello {
            incarnation: inc.into(),
            node_id: NodeId(id),
            name: name(n),
        };
        let s = state();
        let rows = [
            ("current member", "n1", hello("n1", 1, "inc-1"), true),
            ("hello lies about the name", "n1", hello("n9", 1, "inc-1"), false),
            ("wrong node id", "n1", hello("n1", 7, "inc-1"), false),
            ("old incarnation", "n1", hello("n1", 1, "inc-0"), false),
            ("not a member", "n5", hello("n5", 5, "inc-1"), false),
        ];
        for (scenario, cert, h, ok) in rows {
            assert_eq!(admit(Some(&s), &me(), &name(cert), &h).is_ok(), ok, "{scenario}");
        }
        // A joiner with no state yet admits members of its incarnation only.
        assert!(admit(None, &me(), &name("n1"), &hello("n1", 1, "inc-1")).is_ok());
        assert!(admit(None, &me(), &name("n1"), &hello("n1", 1, "other")).is_err());
    }
}
