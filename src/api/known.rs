//! The REST API addresses of every member, kept by `pgha run` in a small file of the Raft data
//! directory (`api-addresses`, one `host:port` per line, this node first) so that `pgha ctl`
//! can reach another member when this node's API does not answer, as patronictl reaches any
//! member it finds in the DCS.

use crate::dcs::handle::Handle;
use crate::types::MemberName;
use std::path::{Path, PathBuf};
use tokio::sync::watch;

pub const FILE: &str = "api-addresses";

pub fn path(raft_dir: &Path) -> PathBuf {
    raft_dir.join(FILE)
}

/// The addresses written by [`keep_written`], or none if the file is missing or unreadable
/// (ctl then uses only the configured endpoint).
pub fn read(raft_dir: &Path) -> Vec<String> {
    std::fs::read_to_string(path(raft_dir))
        .map(|t| t.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
        .unwrap_or_default()
}

/// Rewrites the file whenever the members' API addresses change, until `shutdown`.
pub async fn keep_written(
    handle: Handle,
    raft_dir: PathBuf,
    me: MemberName,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut states = handle.watch_state();
    let mut written: Vec<String> = read(&raft_dir);
    loop {
        let current = states.borrow_and_update().as_deref().map(|st| super::server::api_addresses(st, &me));
        if let Some(addresses) = current.filter(|a| *a != written) {
            let tmp = raft_dir.join(format!("{FILE}.tmp"));
            let text: String = addresses.iter().map(|a| format!("{a}\n")).collect();
            match std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path(&raft_dir))) {
                Ok(()) => written = addresses,
                Err(e) => {
                    tracing::warn!(file = %path(&raft_dir).display(), "cannot record the members' API addresses for pgha ctl: {e}")
                }
            }
        }
        tokio::select! {
            changed = states.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}
