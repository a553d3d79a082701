//! The contract suite over real files, then what only files can get wrong: torn writes,
//! corruption, crashes between the steps of a write, permissions and locking.

use super::*;
use crate::dcs::storage::contract::{self, entries, entry, hard_state, observe, snapshot, Harness, Observed};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU64, Ordering};

/// A directory under the system temp dir, unique to this process and test, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("pgha-store-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Files(TempDir);

impl Files {
    fn new() -> Self {
        Self(TempDir::new())
    }
}

impl Harness for Files {
    type Store = FileLogStore;
    fn empty(&mut self) -> FileLogStore {
        FileLogStore::open(&self.0 .0).unwrap()
    }
    fn bootstrapped(&mut self, snapshot: Snapshot, hs: HardState) -> FileLogStore {
        FileLogStore::initialize(&self.0 .0, snapshot, hs).unwrap()
    }
    /// The process dies: memory is lost, the directory stays.
    fn restart(&mut self, store: FileLogStore) -> FileLogStore {
        drop(store);
        FileLogStore::open(&self.0 .0).unwrap()
    }
}

contract::log_store_contract!(Files::new());

/// A store bootstrapped at index 1 holding entries 2..=4, closed; its directory and what it held.
fn closed_store() -> (TempDir, Observed) {
    let dir = TempDir::new();
    let mut s = FileLogStore::initialize(&dir.0, snapshot(1, 1, &[1], b""), hard_state(1, 0, 1)).unwrap();
    s.append(&entries(2..=4, 1)).unwrap();
    (dir, observe(&s))
}

fn log_bytes(dir: &TempDir) -> Vec<u8> {
    std::fs::read(dir.0.join(LOG_FILE)).unwrap()
}

fn write_log(dir: &TempDir, bytes: &[u8]) {
    std::fs::write(dir.0.join(LOG_FILE), bytes).unwrap();
}

fn assert_corrupt(result: Result<FileLogStore, StorageError>, file: &str) {
    match result {
        Err(StorageError::Corrupt { path, detail }) => {
            assert!(path.ends_with(file), "{} is not {file} ({detail})", path.display());
        }
        other => panic!("expected Corrupt in {file}, got {other:?}"),
    }
}

#[test]
fn a_torn_final_append_is_cut_and_the_store_stays_usable() {
    let (dir, before) = closed_store();
    let good = log_bytes(&dir);
    let mut next = Vec::new();
    encode_record(&entry(5, 1).write_to_bytes().unwrap(), &mut next);
    for torn in [&next[..3], &next[..next.len() - 1]] {
        write_log(&dir, &[good.as_slice(), torn].concat());
        let s = FileLogStore::open(&dir.0).unwrap();
        assert_eq!(observe(&s), before);
        assert_eq!(log_bytes(&dir), good, "the torn bytes are cut from the file");
    }
    let mut bad_crc = next.clone();
    *bad_crc.last_mut().unwrap() ^= 0xff;
    write_log(&dir, &[good.as_slice(), &bad_crc].concat());
    let mut s = FileLogStore::open(&dir.0).unwrap();
    assert_eq!(observe(&s), before);
    s.append(&[entry(5, 1)]).unwrap();
    drop(s);
    assert_eq!(FileLogStore::open(&dir.0).unwrap().last_index(), Ok(5));
}

#[test]
fn a_bad_record_before_good_ones_is_corruption_and_left_alone() {
    let (dir, _) = closed_store();
    let mut bytes = log_bytes(&dir);
    bytes[HEADER_LEN as usize + 12] ^= 0x01; // inside entry 2's payload
    write_log(&dir, &bytes);
    assert_corrupt(FileLogStore::open(&dir.0), LOG_FILE);
    assert_eq!(log_bytes(&dir), bytes, "nothing is cut from a corrupt log");
}

#[test]
fn a_gap_between_snapshot_and_log_is_corruption() {
    let (dir, _) = closed_store();
    let mut bytes = LOG_MAGIC.to_vec();
    for e in [entry(3, 1), entry(4, 1)] {
        encode_record(&e.write_to_bytes().unwrap(), &mut bytes);
    }
    write_log(&dir, &bytes);
    assert_corrupt(FileLogStore::open(&dir.0), LOG_FILE);
}

#[test]
fn unreadable_hard_state_or_snapshot_is_corruption() {
    for file in [HARD_STATE_FILE, SNAPSHOT_FILE] {
        let (dir, _) = closed_store();
        let path = dir.0.join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 1);
        std::fs::write(&path, &bytes).unwrap();
        assert_corrupt(FileLogStore::open(&dir.0), file);
        let mut garbage = bytes[..8].to_vec();
        encode_record(&[0xff; 7], &mut garbage); // valid checksum, not a protobuf message
        std::fs::write(&path, &garbage).unwrap();
        assert_corrupt(FileLogStore::open(&dir.0), file);
    }
}

#[test]
fn a_crash_inside_apply_snapshot_is_completed_on_open() {
    let (dir, _) = closed_store();
    // The leader's snapshot reached the disk; the old log was not cut yet.
    let snap = snapshot(7, 2, &[1, 2], b"leader");
    write_record_file(&dir.0, SNAPSHOT_FILE, SNAPSHOT_MAGIC, &snap.write_to_bytes().unwrap()).unwrap();
    let s = FileLogStore::open(&dir.0).unwrap();
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (8, 7));
    assert_eq!(s.hard_state().commit, 7);
    assert_eq!(log_bytes(&dir), LOG_MAGIC);
}

#[test]
fn a_crash_inside_compaction_keeps_the_whole_log() {
    let (dir, _) = closed_store();
    // The new snapshot reached the disk; the log was not rewritten yet.
    let snap = snapshot(3, 1, &[1], b"state at 3");
    write_record_file(&dir.0, SNAPSHOT_FILE, SNAPSHOT_MAGIC, &snap.write_to_bytes().unwrap()).unwrap();
    let s = FileLogStore::open(&dir.0).unwrap();
    assert_eq!(s.latest_snapshot(), snap);
    assert_eq!(s.entries(2, 5, None, GetEntriesContext::empty(false)), Ok(entries(2..=4, 1)));
    assert_eq!(observe(&s).hard_state, hard_state(1, 0, 3));
    assert_eq!(s.hard_state().commit, 3);
}

#[test]
fn leftover_temporary_files_are_ignored_and_removed() {
    let (dir, before) = closed_store();
    for name in ["log.tmp", "snapshot.tmp", "hardstate.tmp"] {
        std::fs::write(dir.0.join(name), b"half written").unwrap();
    }
    let s = FileLogStore::open(&dir.0).unwrap();
    assert_eq!(observe(&s), before);
    assert!(!dir.0.join("log.tmp").exists());
}

#[test]
fn initialize_refuses_a_store_and_redoes_an_interrupted_one() {
    let (dir, _) = closed_store();
    let again = FileLogStore::initialize(&dir.0, snapshot(1, 1, &[1], b""), HardState::default());
    assert!(matches!(again, Err(StorageError::AlreadyInitialized { .. })), "{again:?}");

    let dir = TempDir::new();
    drop(FileLogStore::initialize(&dir.0, snapshot(1, 1, &[1], b""), HardState::default()).unwrap());
    std::fs::remove_file(dir.0.join(LOG_FILE)).unwrap(); // the crash came before the log
    assert_corrupt(FileLogStore::open(&dir.0), LOG_FILE);
    let s = FileLogStore::initialize(&dir.0, snapshot(1, 1, &[1], b""), HardState::default());
    assert_eq!(s.unwrap().last_index(), Ok(1));
}

#[test]
fn a_joiner_gets_a_private_directory_and_files() {
    let dir = TempDir::new();
    let nested = dir.0.join("raft");
    let mut s = FileLogStore::open(&nested).unwrap();
    s.apply_snapshot(&snapshot(3, 1, &[1, 2], b"x")).unwrap();
    s.set_hard_state(&hard_state(2, 1, 3)).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&nested), 0o700);
    for file in [LOG_FILE, HARD_STATE_FILE, SNAPSHOT_FILE, LOCK_FILE] {
        assert_eq!(mode(&nested.join(file)), 0o600, "{file}");
    }
}

#[test]
fn a_second_open_of_a_store_in_use_is_refused() {
    let (dir, _) = closed_store();
    let _first = FileLogStore::open(&dir.0).unwrap();
    let second = FileLogStore::open(&dir.0);
    assert!(matches!(second, Err(StorageError::Locked { .. })), "{second:?}");
}

#[test]
fn commit_past_the_log_is_corruption() {
    let (dir, _) = closed_store();
    let hs = hard_state(1, 0, 9);
    write_record_file(&dir.0, HARD_STATE_FILE, HARD_STATE_MAGIC, &hs.write_to_bytes().unwrap()).unwrap();
    assert_corrupt(FileLogStore::open(&dir.0), HARD_STATE_FILE);
}

#[test]
fn a_full_disk_fails_the_append_and_changes_nothing() {
    let (dir, before) = closed_store();
    let mut s = FileLogStore::open(&dir.0).unwrap();
    // Every write to /dev/full fails with ENOSPC, like a full file system.
    s.log = OpenOptions::new().write(true).open("/dev/full").unwrap();
    match s.append(&entries(5..=6, 1)) {
        Err(StorageError::Write { path, source }) => {
            assert_eq!(path, dir.0.join(LOG_FILE));
            assert_eq!(source.raw_os_error(), Some(libc::ENOSPC));
        }
        other => panic!("expected a write error, got {other:?}"),
    }
    assert_eq!(observe(&s), before);
    drop(s);
    assert_eq!(observe(&FileLogStore::open(&dir.0).unwrap()), before);
}
