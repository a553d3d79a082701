//! `member.json` in the Raft data directory: which node this directory belongs to (scope,
//! name, Raft node id, cluster incarnation). Written by `init`, `join` and
//! `--force-new-cluster`, read by `run`; atomically replaced (temp file, fsync, rename).

use crate::types::{MemberName, NodeId};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const FILE: &str = "member.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberMeta {
    pub scope: String,
    pub name: MemberName,
    pub node_id: NodeId,
    pub incarnation: String,
    /// Raft addresses of the members at join time: a joiner has no cluster state until the
    /// leader's snapshot arrives, and needs somewhere to send its answers until then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seed_peers: Vec<(NodeId, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{path} does not exist: this node was never initialized; run `pgha init` (first node) or `pgha join` (other nodes)")]
    Missing { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is damaged ({detail}); re-create this member with `pgha ctl remove` and `pgha join`")]
    Bad { path: PathBuf, detail: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl MemberMeta {
    pub fn path(raft_dir: &Path) -> PathBuf {
        raft_dir.join(FILE)
    }

    pub fn exists(raft_dir: &Path) -> bool {
        Self::path(raft_dir).exists()
    }

    pub fn load(raft_dir: &Path) -> Result<MemberMeta, MetaError> {
        let path = Self::path(raft_dir);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(MetaError::Missing { path }),
            Err(source) => return Err(MetaError::Read { path, source }),
        };
        serde_json::from_slice(&text).map_err(|e| MetaError::Bad { path, detail: e.to_string() })
    }

    pub fn save(&self, raft_dir: &Path) -> Result<(), MetaError> {
        let path = Self::path(raft_dir);
        let tmp = raft_dir.join(format!("{FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(raft_dir)?;
            let mut f =
                std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode_0600().open(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(self).expect("meta serializes"))?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(raft_dir)?.sync_all()
        };
        write().map_err(|source| MetaError::Write { path, source })
    }
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}
impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_loads_and_explains_absence() {
        let dir = std::env::temp_dir().join(format!("pgha-meta-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(MemberMeta::load(&dir), Err(MetaError::Missing { .. })));
        let m = MemberMeta {
            scope: "s".into(),
            name: MemberName::new("n1").unwrap(),
            node_id: NodeId(3),
            incarnation: "i".into(),
            seed_peers: vec![(NodeId(1), "127.0.0.1:1".into())],
        };
        m.save(&dir).unwrap();
        assert_eq!(MemberMeta::load(&dir).unwrap(), m);
        std::fs::write(MemberMeta::path(&dir), b"{").unwrap();
        assert!(matches!(MemberMeta::load(&dir), Err(MetaError::Bad { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
