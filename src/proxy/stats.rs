//! Counters of the proxy for `GET /metrics`: connections per port, refusals by reason, and per
//! backend the connections, bytes each way and errors. Updated with relaxed atomics on the hot
//! path; the per-backend map is touched once per connection.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Port {
    Writer,
    Reader,
}

impl Port {
    pub fn as_str(self) -> &'static str {
        match self {
            Port::Writer => "writer",
            Port::Reader => "reader",
        }
    }
}

#[derive(Default, Debug)]
pub struct PortStats {
    pub active: AtomicU64,
    pub accepted: AtomicU64,
    /// Refused: no primary / no replica / too many connections / backend unreachable.
    pub refused: AtomicU64,
    /// Closed by the proxy because their backend stopped being the primary (or a replica).
    pub cut: AtomicU64,
}

#[derive(Default, Debug)]
pub struct BackendStats {
    pub connections: AtomicU64,
    pub errors: AtomicU64,
    pub bytes_to_backend: AtomicU64,
    pub bytes_to_client: AtomicU64,
}

#[derive(Default, Debug)]
pub struct ProxyStats {
    pub writer: PortStats,
    pub reader: PortStats,
    backends: Mutex<BTreeMap<String, Arc<BackendStats>>>,
}

impl ProxyStats {
    pub fn port(&self, port: Port) -> &PortStats {
        match port {
            Port::Writer => &self.writer,
            Port::Reader => &self.reader,
        }
    }

    /// The counters of the backend `member` (created on first use).
    pub fn backend(&self, member: &str) -> Arc<BackendStats> {
        let mut map = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(member.to_string()).or_default().clone()
    }

    /// A copy of every backend's counters, by member name.
    pub fn backends(&self) -> Vec<(String, Arc<BackendStats>)> {
        let map = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}
