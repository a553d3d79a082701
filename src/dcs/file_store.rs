//! The Raft store of a real member: a directory of files, recovered by [`FileLogStore::open`].
//!
//! Job: make every [`LogStore`] write durable before it returns, in the order the safety
//! argument needs, and after a crash at any point recover exactly what was acknowledged.
//! Input: the Ready loop's writes. Output: raft's `Storage` reads, served from an in-memory
//! [`MemLogStore`] that mirrors the files and checks every write before the disk sees it.
//! The directory (0700; files 0600; formats in `record`):
//! - `log`: the log header, then one record per entry; `append` writes and fsyncs it, cuts it at
//!   an entry's offset when a new leader overwrote a suffix, and compaction replaces it whole;
//! - `hardstate`, `snapshot`: one record each, replaced atomically (temp file, rename);
//! - `lock`: `flock`ed while open, so two processes never write one store;
//! - `<file>.tmp`: leftover of an interrupted replacement, never read, removed on open.
//!
//! Other files (`member.json`) may share the directory; this module leaves them alone.
//!
//! `initialize` writes `log` last, so a directory without it holds no store. This module must
//! never acknowledge a write it has not synced, never silently drop a record that may have
//! been acknowledged (that is `StorageError::Corrupt`), and never be used again after it
//! returned an error: the node stops, and a restart reopens the store.

use super::mem_store::MemLogStore;
use super::record::{
    encode_record, read_error, read_record_file, scan_log, sync_dir, write_atomically, write_error,
    write_record_file, HARD_STATE_MAGIC, HEADER_LEN, LOG_MAGIC, SNAPSHOT_MAGIC, TEMP_SUFFIX,
};
use super::storage::{LogStore, StorageError};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use protobuf::Message;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const LOG_FILE: &str = "log";
const HARD_STATE_FILE: &str = "hardstate";
const SNAPSHOT_FILE: &str = "snapshot";
const LOCK_FILE: &str = "lock";

/// Raft storage in a directory; see the module documentation for the layout.
pub struct FileLogStore {
    dir: PathBuf,
    mem: MemLogStore,
    log: File,
    /// `offsets[i]` is where the record of the `i`-th stored entry starts.
    offsets: Vec<u64>,
    /// End of the last record: the file is never longer once a write has returned.
    log_len: u64,
    _lock: Flock<File>,
}

impl std::fmt::Debug for FileLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileLogStore")
            .field("dir", &self.dir)
            .field("mem", &self.mem)
            .field("log_len", &self.log_len)
            .finish_non_exhaustive()
    }
}

impl FileLogStore {
    /// Opens the store in `dir`, creating an empty one (a joiner's: no snapshot, default hard
    /// state) if the directory does not exist or holds nothing.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        create_dir(dir)?;
        let lock = lock(dir)?;
        Self::recover(dir, lock)
    }

    /// Creates the store of a new cluster's first member (`pgha init`) from its bootstrap
    /// snapshot (index ≥ 1, the first conf state, the initial state machine data). Refuses a
    /// directory that already holds a store.
    pub fn initialize(dir: &Path, snapshot: Snapshot, hard_state: HardState) -> Result<Self, StorageError> {
        let mem = MemLogStore::bootstrap(snapshot, hard_state)?;
        create_dir(dir)?;
        let lock = lock(dir)?;
        let log_path = dir.join(LOG_FILE);
        if log_path.try_exists().map_err(read_error(&log_path))? {
            return Err(StorageError::AlreadyInitialized { path: dir.to_owned() });
        }
        let snapshot = encode(&mem.latest_snapshot())?;
        write_record_file(dir, SNAPSHOT_FILE, SNAPSHOT_MAGIC, &snapshot)?;
        write_record_file(dir, HARD_STATE_FILE, HARD_STATE_MAGIC, &encode(&mem.hard_state())?)?;
        // Last: the log's existence makes the directory a store, so a crash before this line
        // leaves a directory that `open` refuses and `initialize` simply redoes.
        write_atomically(dir, LOG_FILE, LOG_MAGIC)?;
        Self::recover(dir, lock)
    }

    /// The directory holding the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn recover(dir: &Path, lock: Flock<File>) -> Result<Self, StorageError> {
        remove_temp_files(dir)?;
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let snapshot = read_record_file(&snapshot_path, SNAPSHOT_MAGIC)?
            .map(|bytes| decode::<Snapshot>(&snapshot_path, &bytes))
            .transpose()?;
        let hard_state_path = dir.join(HARD_STATE_FILE);
        let hard_state = read_record_file(&hard_state_path, HARD_STATE_MAGIC)?
            .map(|bytes| decode::<HardState>(&hard_state_path, &bytes))
            .transpose()?;
        let log_path = dir.join(LOG_FILE);
        let corrupt = |path: &Path, detail: String| StorageError::Corrupt { path: path.to_owned(), detail };
        let log = match OpenOptions::new().read(true).write(true).open(&log_path) {
            Ok(log) => log,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if snapshot.is_some() || hard_state.is_some() {
                    let detail = "missing next to a snapshot or hard state: `pgha init` was \
                        interrupted; remove the directory and run it again";
                    return Err(corrupt(&log_path, detail.into()));
                }
                write_atomically(dir, LOG_FILE, LOG_MAGIC)?
            }
            Err(e) => return Err(read_error(&log_path)(e)),
        };
        let buf = std::fs::read(&log_path).map_err(read_error(&log_path))?;
        let scan = scan_log(&buf).map_err(|detail| corrupt(&log_path, detail))?;
        if let Some(why) = &scan.torn {
            tracing::warn!(
                path = %log_path.display(),
                offset = scan.valid_len,
                dropped_bytes = buf.len() as u64 - scan.valid_len,
                "cutting a torn final write from the Raft log ({why}): a crash interrupted an \
                 append, which was never acknowledged"
            );
            cut(&log, &log_path, scan.valid_len)?;
        }
        let mut log_len = scan.valid_len;
        let (mut offsets, mut entries): (Vec<u64>, Vec<Entry>) = scan.entries.into_iter().unzip();
        let snapshot = snapshot.unwrap_or_default();
        let snapshot_index = snapshot.get_metadata().index;
        if !entries_fit_snapshot(&snapshot, &entries).map_err(|d| corrupt(&log_path, d))? {
            tracing::warn!(
                path = %log_path.display(),
                entries = entries.len(),
                snapshot_index,
                "dropping log entries replaced by the snapshot: a crash interrupted the \
                 installation of a snapshot from the leader"
            );
            cut(&log, &log_path, HEADER_LEN)?;
            (entries, offsets, log_len) = (Vec::new(), Vec::new(), HEADER_LEN);
        }
        let mut hard_state = hard_state.unwrap_or_default();
        // A snapshot covers only committed entries, and the crash may have come between
        // writing it and raising the stored commit index; raft refuses a commit below it.
        hard_state.commit = hard_state.commit.max(snapshot_index);
        let last = entries.last().map_or(snapshot_index, |e| e.index);
        if hard_state.commit > last {
            let detail = format!(
                "commit index {} is past the last log entry {last}: acknowledged entries are \
                 missing",
                hard_state.commit
            );
            return Err(corrupt(&hard_state_path, detail));
        }
        Ok(Self {
            dir: dir.to_owned(),
            mem: MemLogStore::restore(hard_state, snapshot, entries),
            log,
            offsets,
            log_len,
            _lock: lock,
        })
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// Durably shortens the log to `len` bytes (see [`cut`]).
    fn cut_log(&mut self, len: u64) -> Result<(), StorageError> {
        cut(&self.log, &self.log_path(), len)?;
        self.log_len = len;
        Ok(())
    }

    /// Replaces the log with one holding exactly `entries`.
    fn rewrite_log(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let mut buf = LOG_MAGIC.to_vec();
        let mut offsets = Vec::with_capacity(entries.len());
        for e in entries {
            offsets.push(buf.len() as u64);
            encode_record(&encode(e)?, &mut buf);
        }
        // A new file renamed over the old one: after a crash either log is there, whole, and
        // both fit the snapshot, which is already durable.
        self.log = write_atomically(&self.dir, LOG_FILE, &buf)?;
        self.offsets = offsets;
        self.log_len = buf.len() as u64;
        Ok(())
    }

    fn write_hard_state(&self, hs: &HardState) -> Result<(), StorageError> {
        write_record_file(&self.dir, HARD_STATE_FILE, HARD_STATE_MAGIC, &encode(hs)?)
    }

    fn write_snapshot(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        write_record_file(&self.dir, SNAPSHOT_FILE, SNAPSHOT_MAGIC, &encode(snapshot)?)
    }
}

impl LogStore for FileLogStore {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let keep = self.mem.check_append(entries)?;
        if entries.is_empty() {
            return Ok(());
        }
        if let Some(&at) = self.offsets.get(keep) {
            // A new leader replaced our suffix. The cut is synced before anything is written
            // after it: otherwise a crash could leave the new records torn with the old ones
            // still behind them, which reads as corruption (or brings overwritten entries back).
            self.cut_log(at)?;
            self.mem.truncate_entries(keep);
            self.offsets.truncate(keep);
        }
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(entries.len());
        for e in entries {
            offsets.push(self.log_len + buf.len() as u64);
            encode_record(&encode(e)?, &mut buf);
        }
        // Synced before returning: right after, the node acknowledges these entries (to the
        // leader, or by counting itself in the quorum); losing them in a crash could un-commit
        // an entry that the cluster already applied.
        let written = self.log.write_all_at(&buf, self.log_len).and_then(|()| self.log.sync_data());
        if let Err(source) = written {
            // Best effort: leave no partial record (e.g. on ENOSPC) that a later write could
            // bury. The node stops on this error anyway.
            let _ = self.log.set_len(self.log_len).and_then(|()| self.log.sync_data());
            return Err(StorageError::Write { path: self.log_path(), source });
        }
        self.log_len += buf.len() as u64;
        self.offsets.extend(offsets);
        self.mem.extend_entries(entries);
        Ok(())
    }

    fn set_hard_state(&mut self, hs: &HardState) -> Result<(), StorageError> {
        if *hs != self.mem.hard_state() {
            // Durable before return: the vote and term go out in messages right after, and a
            // vote forgotten in a crash lets this node vote twice in one term.
            self.write_hard_state(hs)?;
        }
        self.mem.set_hard_state(hs)
    }

    fn set_commit(&mut self, commit: u64) -> Result<(), StorageError> {
        let mut hs = self.mem.hard_state();
        if commit <= hs.commit {
            return Ok(());
        }
        hs.commit = commit;
        // Safety does not need it (the leader tells the commit index again), but the file is
        // still replaced atomically and synced: an unsynced rename may leave an empty file, i.e.
        // a lost vote. Two fsyncs per commit advance are cheap at a DCS's write rate.
        self.write_hard_state(&hs)?;
        self.mem.set_commit(commit)
    }

    fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let mut next = self.mem.clone();
        next.apply_snapshot(snapshot)?;
        // The snapshot first: until it is durable, the log it replaces is our only copy of
        // what we acknowledged.
        self.write_snapshot(&next.latest_snapshot())?;
        if next.hard_state() != self.mem.hard_state() {
            self.write_hard_state(&next.hard_state())?;
        }
        // Then drop the replaced log. After a crash before this cut, `open` sees entries that
        // do not hold the snapshot's last entry and drops them itself.
        if self.log_len > HEADER_LEN {
            self.cut_log(HEADER_LEN)?;
        }
        self.offsets.clear();
        self.mem = next;
        Ok(())
    }

    fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
        retain: u64,
    ) -> Result<(), StorageError> {
        let mut next = self.mem.clone();
        next.create_snapshot(index, conf_state, data, retain)?;
        // The snapshot must be durable before any entry it covers leaves the log. A crash in
        // between leaves the old log, which still holds the snapshot's last entry: `open`
        // keeps it whole and the next compaction retries.
        self.write_snapshot(&next.latest_snapshot())?;
        if next.stored_entries().len() < self.mem.stored_entries().len() {
            self.rewrite_log(next.stored_entries())?;
        }
        self.mem = next;
        Ok(())
    }

    fn latest_snapshot(&self) -> Snapshot {
        self.mem.latest_snapshot()
    }

    fn hard_state(&self) -> HardState {
        self.mem.hard_state()
    }

    fn snapshot_requested(&self) -> bool {
        self.mem.snapshot_requested()
    }
}

/// Reads come from memory; the files are only for durability.
impl Storage for FileLogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        self.mem.snapshot(request_index, to)
    }
}

/// Whether recovered entries belong with the snapshot: `Ok(false)` if they are a log the
/// snapshot replaces (a crash stopped `apply_snapshot` before it cut the log), `Err` on a gap.
fn entries_fit_snapshot(snapshot: &Snapshot, entries: &[Entry]) -> Result<bool, String> {
    let (index, term) = (snapshot.get_metadata().index, snapshot.get_metadata().term);
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(true);
    };
    if first.index > index + 1 {
        return Err(format!(
            "the log starts at entry {} but the snapshot ends at {index}: entries are missing",
            first.index
        ));
    }
    if first.index == index + 1 {
        return Ok(true);
    }
    // The log overlaps the snapshot: it is the same history only if it holds the snapshot's
    // last entry with the same term (raft's log matching property).
    Ok(last.index >= index && entries[(index - first.index) as usize].term == term)
}

fn encode(message: &impl Message) -> Result<Vec<u8>, StorageError> {
    message.write_to_bytes().map_err(|e| StorageError::Invalid { op: "encode", detail: e.to_string() })
}

fn decode<M: Message>(path: &Path, bytes: &[u8]) -> Result<M, StorageError> {
    M::parse_from_bytes(bytes).map_err(|e| StorageError::Corrupt {
        path: path.to_owned(),
        detail: format!("the record has a valid checksum but does not parse: {e}"),
    })
}

/// Shortens the log to `len` bytes, synced: records later written at `len` must never be
/// followed, after a crash, by the bytes that were cut (they would read as corruption, or as
/// entries that a new leader had overwritten).
fn cut(log: &File, path: &Path, len: u64) -> Result<(), StorageError> {
    log.set_len(len).and_then(|()| log.sync_data()).map_err(write_error(path))
}

fn create_dir(dir: &Path) -> Result<(), StorageError> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(write_error(dir))?;
    // The new entry lives in the parent directory: unsynced, a crash could lose the directory
    // together with everything later synced inside it.
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => sync_dir(Path::new(".")),
    }
}

fn lock(dir: &Path) -> Result<Flock<File>, StorageError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(write_error(&path))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == Errno::EWOULDBLOCK {
            StorageError::Locked { path: dir.to_owned() }
        } else {
            write_error(&path)(errno.into())
        }
    })
}

/// Removes what interrupted atomic replacements of our files left behind (other files in the
/// directory, e.g. `member.json.tmp`, belong to others). They are never read, so failing to
/// remove one is only worth a warning.
fn remove_temp_files(dir: &Path) -> Result<(), StorageError> {
    for name in [LOG_FILE, HARD_STATE_FILE, SNAPSHOT_FILE] {
        let path = dir.join(format!("{name}{TEMP_SUFFIX}"));
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::debug!(path = %path.display(), "removed a leftover temporary file"),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover temporary file")
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
