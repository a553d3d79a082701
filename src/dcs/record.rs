//! The on-disk format of the Raft store's files, and the file operations whose order the
//! safety argument rests on.
//!
//! Every file starts with an 8-byte magic naming its kind and format version, followed by
//! records `[u32 length LE][u32 CRC-32 LE of the payload][payload]`. The log is a sequence of
//! records, one protobuf `Entry` each; the hard-state and snapshot files hold exactly one record
//! and are only ever replaced whole by [`write_atomically`]. Input: bytes and paths; output:
//! parsed payloads, or an error naming the file. This module knows nothing of Raft beyond
//! "an entry has an index": it encodes, scans (telling a torn tail from corruption) and syncs.
//! It never drops data silently: [`scan_log`] reports where and why it stopped, and the caller
//! decides and logs.

use super::storage::StorageError;
use protobuf::Message;
use raft::eraftpb::Entry;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub(crate) const LOG_MAGIC: &[u8; 8] = b"PGHALOG1";
pub(crate) const HARD_STATE_MAGIC: &[u8; 8] = b"PGHAHST1";
pub(crate) const SNAPSHOT_MAGIC: &[u8; 8] = b"PGHASNP1";
/// Length of a file's magic; the log's first record starts here.
pub(crate) const HEADER_LEN: u64 = 8;
const RECORD_HEADER: usize = 8;

/// Appends one record holding `payload` to `out`.
pub(crate) fn encode_record(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("a Raft record is far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

enum Frame<'a> {
    Valid {
        payload: &'a [u8],
        next: usize,
    },
    /// The header or the payload runs past the end of the file.
    Incomplete,
    /// Zero length (zeroed space, never written by us: an entry has an index) or a CRC mismatch.
    Bad(&'static str),
}

fn frame_at(buf: &[u8], pos: usize) -> Frame<'_> {
    let Some(header) = buf.get(pos..pos + RECORD_HEADER) else {
        return Frame::Incomplete;
    };
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    let start = pos + RECORD_HEADER;
    let Some(payload) = buf.get(start..start + len) else {
        return Frame::Incomplete;
    };
    if len == 0 {
        Frame::Bad("zero length")
    } else if crc32fast::hash(payload) != crc {
        Frame::Bad("checksum mismatch")
    } else {
        Frame::Valid { payload, next: start + len }
    }
}

/// What [`scan_log`] recovered from a log file.
#[derive(Debug)]
pub(crate) struct LogScan {
    /// The entries in file order, each with the offset of its record.
    pub entries: Vec<(u64, Entry)>,
    /// Length of the valid prefix: the file must be cut here if it is longer.
    pub valid_len: u64,
    /// Why the bytes after `valid_len` are a torn final write, if there are any.
    pub torn: Option<String>,
}

/// Parses a whole log file. A bad final record is a torn write (a crash mid-append, never
/// acknowledged because the fsync had not returned) and is reported in `torn`. A bad record
/// followed by any valid record, a record that is not an entry, or indices that are not
/// consecutive is corruption, returned as `Err(detail)`.
pub(crate) fn scan_log(buf: &[u8]) -> Result<LogScan, String> {
    if buf.get(..LOG_MAGIC.len()) != Some(LOG_MAGIC.as_slice()) {
        return Err("the file does not start with the pgha log header".into());
    }
    let mut pos = LOG_MAGIC.len();
    let mut entries: Vec<(u64, Entry)> = Vec::new();
    let mut torn = None;
    while pos < buf.len() {
        let prev = entries.last().map(|(_, e)| e.index);
        let why = match frame_at(buf, pos) {
            Frame::Valid { payload, next } => {
                let entry = Entry::parse_from_bytes(payload).map_err(|e| {
                    format!("record at offset {pos} has a valid checksum but is no entry: {e}")
                })?;
                match prev {
                    Some(p) if entry.index != p + 1 => {
                        return Err(format!(
                            "entry {} at offset {pos} follows entry {p}: indices must be consecutive",
                            entry.index
                        ))
                    }
                    None if entry.index == 0 => {
                        return Err(format!("record at offset {pos} holds entry index 0"))
                    }
                    _ => {}
                }
                entries.push((pos as u64, entry));
                pos = next;
                continue;
            }
            Frame::Incomplete => "incomplete record",
            Frame::Bad(why) => why,
        };
        // Only the last, unacknowledged write can be torn. Valid data after the bad record
        // means an acknowledged record went bad: cutting it would lose it.
        if let Some(at) = next_valid_record(buf, pos + 1, prev.unwrap_or(0)) {
            return Err(format!(
                "record at offset {pos} is bad ({why}) but a valid record follows at offset {at}"
            ));
        }
        torn = Some(format!("{why} at offset {pos}, {} bytes before the end", buf.len() - pos));
        break;
    }
    Ok(LogScan { entries, valid_len: pos as u64, torn })
}

/// The first offset from `from` holding a valid record with an entry after index `after`.
/// Slow (it tries every offset) but it only runs on a damaged log, usually over a few bytes.
fn next_valid_record(buf: &[u8], from: usize, after: u64) -> Option<usize> {
    (from..buf.len()).find(|&q| match frame_at(buf, q) {
        Frame::Valid { payload, .. } => Entry::parse_from_bytes(payload).is_ok_and(|e| e.index > after),
        _ => false,
    })
}

/// Reads a single-record file; `Ok(None)` if it does not exist.
pub(crate) fn read_record_file(path: &Path, magic: &[u8; 8]) -> Result<Option<Vec<u8>>, StorageError> {
    let buf = match std::fs::read(path) {
        Ok(buf) => buf,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(read_error(path)(source)),
    };
    let corrupt = |detail: &str| StorageError::Corrupt { path: path.to_owned(), detail: detail.to_owned() };
    if buf.get(..magic.len()) != Some(magic.as_slice()) {
        return Err(corrupt("wrong or missing file header"));
    }
    match frame_at(&buf, magic.len()) {
        Frame::Valid { payload, next } if next == buf.len() => Ok(Some(payload.to_vec())),
        Frame::Valid { .. } => Err(corrupt("trailing bytes after the record")),
        Frame::Incomplete => Err(corrupt("incomplete record")),
        Frame::Bad(why) => Err(corrupt(why)),
    }
}

/// Replaces `dir/name` with a file holding `magic` and one record of `payload`.
pub(crate) fn write_record_file(
    dir: &Path,
    name: &str,
    magic: &[u8; 8],
    payload: &[u8],
) -> Result<(), StorageError> {
    let mut bytes = magic.to_vec();
    encode_record(payload, &mut bytes);
    write_atomically(dir, name, &bytes).map(drop)
}

/// Replaces `dir/name` with `bytes` so that after a crash the name holds either the old or the
/// new content, complete; returns the new file, open for reading and writing.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<File, StorageError> {
    let tmp = dir.join(format!("{name}{TEMP_SUFFIX}"));
    let path = dir.join(name);
    let mut file = create_file(&tmp).map_err(write_error(&tmp))?;
    file.write_all(bytes).map_err(write_error(&tmp))?;
    // Sync the data before the rename: otherwise the rename may reach the disk first and a
    // crash leaves the name pointing at an empty or partial file, the old content gone.
    file.sync_all().map_err(write_error(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(write_error(&path))?;
    // The rename lives in the directory: until the directory is synced a crash may bring the
    // old file back, e.g. an old vote, letting this node vote twice in one term.
    sync_dir(dir)?;
    Ok(file)
}

/// Suffix of files being written by [`write_atomically`]; leftovers are never read.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

/// Creates (or truncates) a file readable only by its owner: it holds cluster state.
pub(crate) fn create_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(true).mode(0o600).open(path)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(write_error(dir))
}

pub(crate) fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    let path: PathBuf = path.to_owned();
    move |source| StorageError::Write { path, source }
}

pub(crate) fn read_error(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    let path: PathBuf = path.to_owned();
    move |source| StorageError::Read { path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(indices: &[u64]) -> Vec<u8> {
        let mut buf = LOG_MAGIC.to_vec();
        for &index in indices {
            let e = Entry { index, term: 1, data: vec![7; 20].into(), ..Default::default() };
            encode_record(&e.write_to_bytes().unwrap(), &mut buf);
        }
        buf
    }

    fn indices(scan: &LogScan) -> Vec<u64> {
        scan.entries.iter().map(|(_, e)| e.index).collect()
    }

    #[test]
    fn clean_log_scans_completely() {
        let buf = log_of(&[3, 4, 5]);
        let scan = scan_log(&buf).unwrap();
        assert_eq!(indices(&scan), [3, 4, 5]);
        assert_eq!(scan.valid_len, buf.len() as u64);
        assert!(scan.torn.is_none());
    }

    #[test]
    fn every_cut_of_the_last_record_is_a_torn_tail() {
        let two = log_of(&[1, 2]).len();
        let full = log_of(&[1, 2, 3]);
        for cut in two + 1..full.len() {
            let scan = scan_log(&full[..cut]).unwrap();
            assert_eq!(indices(&scan), [1, 2], "cut at {cut}");
            assert_eq!(scan.valid_len, two as u64);
            assert!(scan.torn.is_some());
        }
    }

    #[test]
    fn zeroed_or_garbled_tail_is_torn() {
        let mut buf = log_of(&[1, 2]);
        let good = buf.len();
        buf.extend_from_slice(&[0; 100]);
        assert_eq!(scan_log(&buf).unwrap().valid_len, good as u64);
        let mut buf = log_of(&[1, 2]);
        let last = buf.len() - 1;
        buf[last] ^= 0xff;
        let scan = scan_log(&buf).unwrap();
        assert_eq!(indices(&scan), [1]);
    }

    #[test]
    fn bad_record_before_valid_ones_is_corruption() {
        let mut buf = log_of(&[1, 2, 3]);
        buf[HEADER_LEN as usize + RECORD_HEADER + 2] ^= 0x01;
        let err = scan_log(&buf).unwrap_err();
        assert!(err.contains("valid record follows"), "{err}");
        // A length bumped past the end of the file swallows the rest: still found.
        let mut buf = log_of(&[1, 2, 3]);
        buf[HEADER_LEN as usize + 3] = 0x7f;
        assert!(scan_log(&buf).is_err());
    }

    #[test]
    fn gaps_and_missing_header_are_corruption() {
        assert!(scan_log(&log_of(&[1, 3])).unwrap_err().contains("consecutive"));
        assert!(scan_log(&log_of(&[2, 1])).is_err());
        assert!(scan_log(b"PGHA").is_err());
        assert!(scan_log(b"").is_err());
    }
}
