//! Writing the files `init` and `join` leave behind: created with their final mode (keys 0600,
//! certificates and config 0644), then handed to the service user when running as root, since
//! `pgha.service` runs as that user (DESIGN.md "Files and users").

use crate::sys::user::{self, ServiceUser};
use anyhow::{Context, Result};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Default)]
pub struct Written(Vec<PathBuf>);

impl Written {
    pub fn write(&mut self, path: &Path, contents: &[u8], mode: u32) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let tmp = path.with_extension("pgha-tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(contents)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        self.0.push(path.to_path_buf());
        Ok(())
    }

    pub fn add_tree(&mut self, path: &Path) {
        self.0.push(path.to_path_buf());
    }

    /// As root: everything written becomes the service user's (directories recursively).
    pub fn hand_over(&self, user_name: &str) -> Result<()> {
        if !user::is_root() {
            return Ok(());
        }
        let u = ServiceUser::lookup(user_name)?;
        for p in &self.0 {
            user::chown_tree(p, u.uid, u.gid)?;
        }
        Ok(())
    }

    /// As root: the service user must be able to reach the files (parent directories at
    /// least traversable). Returns the service user if running as root.
    pub fn service_user(user_name: &str) -> Result<Option<ServiceUser>> {
        if user::is_root() {
            Ok(Some(ServiceUser::lookup(user_name)?))
        } else {
            Ok(None)
        }
    }
}
