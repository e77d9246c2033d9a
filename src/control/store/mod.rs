//! The controller's durable state on disk, in its data directory:
//! - `log`: an append-only sequence of records, one [`Batch`] of state changes each (every
//!   change a group of requests made), fsynced before any reply that depends on it is sent;
//! - `snapshot`: the whole state ([`Image`]) as of a log sequence number, written to a
//!   temporary file, fsynced and renamed over the old one; the log is emptied after it
//!   (compaction), and records at or below the snapshot's sequence are skipped on replay.
//!
//! Both files hold session keys, so they are created with mode 0600 in a directory of mode
//! 0700. Every record is framed as `length (u32 LE) | CRC-32 of the body (u32 LE) | body
//! (JSON)`. On open, a log whose tail is torn or corrupt (short frame, bad checksum, body that
//! does not parse, sequence out of order) is truncated to its last valid record and the cut is
//! reported; a corrupt snapshot is an error (it was renamed into place whole, so its
//! corruption is a disk fault, and starting without it would silently lose state).

mod frame;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Entry, Image};

/// Compact the log once it holds this many bytes.
pub const COMPACT_BYTES: u64 = 8 << 20;

/// One group of changes, as logged and as streamed to passives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Sequence number: one more than the previous batch's.
    pub seq: u64,
    /// The leadership term the active wrote it under.
    pub term: u64,
    pub entries: Vec<Entry>,
}

/// A snapshot file's body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The last batch it includes.
    pub seq: u64,
    pub image: Image,
}

/// What opening a data directory found.
#[derive(Debug, Default)]
pub struct Recovered {
    pub snapshot: Option<Snapshot>,
    /// Batches after the snapshot, in order.
    pub batches: Vec<Batch>,
    /// Why and where the log's tail was cut, if it was.
    pub truncated: Option<String>,
}

/// Why the store cannot go on.
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError(format!("{what} {}: {e}", path.display()))
}

/// An open data directory.
pub struct Store {
    dir: PathBuf,
    log: File,
    /// Held for the store's life: one process per data directory.
    _lock: File,
    /// The last sequence number written (to the log or a snapshot).
    seq: u64,
    log_bytes: u64,
}

impl Store {
    /// Opens (creating it if needed) the data directory `dir`: takes its lock, reads the
    /// snapshot and replays the log, cutting a torn tail.
    pub fn open(dir: &Path) -> Result<(Store, Recovered), StoreError> {
        fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| io("cannot restrict", dir, e))?;
        let lock_path = dir.join("lock");
        let lock = secret_file(&lock_path, false)?;
        lock.try_lock().map_err(|_| {
            StoreError(format!(
                "{} is in use by another controller (one process per data directory)",
                dir.display()
            ))
        })?;
        let snapshot = read_snapshot(&dir.join("snapshot"))?;
        let log_path = dir.join("log");
        let mut log = secret_file(&log_path, false)?;
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes)
            .map_err(|e| io("cannot read", &log_path, e))?;
        let base = snapshot.as_ref().map_or(0, |s| s.seq);
        let (batches, valid, truncated) = read_log(&bytes, base);
        if truncated.is_some() {
            log.set_len(valid as u64)
                .and_then(|_| log.sync_all())
                .map_err(|e| io("cannot truncate", &log_path, e))?;
        }
        log.seek(SeekFrom::Start(valid as u64))
            .map_err(|e| io("cannot seek", &log_path, e))?;
        let seq = batches.last().map_or(base, |b| b.seq).max(base);
        let store = Store {
            dir: dir.to_path_buf(),
            log,
            _lock: lock,
            seq,
            log_bytes: valid as u64,
        };
        let truncated = truncated.map(|why| {
            format!(
                "{}: {why}; cut {} bytes after byte {valid} (the last valid record is seq {seq})",
                log_path.display(),
                bytes.len() - valid
            )
        });
        Ok((
            store,
            Recovered {
                snapshot,
                batches: batches.into_iter().filter(|b| b.seq > base).collect(),
                truncated,
            },
        ))
    }

    /// The last sequence number written.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends the next batch (not yet durable: `sync` makes it so).
    pub fn append(&mut self, term: u64, entries: Vec<Entry>) -> Result<Batch, StoreError> {
        let batch = Batch {
            seq: self.seq + 1,
            term,
            entries,
        };
        self.write(&batch)?;
        Ok(batch)
    }

    /// Appends a batch the active wrote (on a passive): it must be the next one.
    pub fn append_batch(&mut self, batch: &Batch) -> Result<(), StoreError> {
        if batch.seq != self.seq + 1 {
            return Err(StoreError(format!(
                "batch {} does not follow {}",
                batch.seq, self.seq
            )));
        }
        self.write(batch)
    }

    fn write(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let body = serde_json::to_vec(batch).map_err(|e| StoreError(e.to_string()))?;
        let framed = frame::encode(&body);
        let path = self.dir.join("log");
        self.log
            .write_all(&framed)
            .map_err(|e| io("cannot append to", &path, e))?;
        self.seq = batch.seq;
        self.log_bytes += framed.len() as u64;
        Ok(())
    }

    /// Makes everything appended durable.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.log
            .sync_data()
            .map_err(|e| io("cannot sync", &self.dir.join("log"), e))
    }

    /// Whether the log is long enough to compact.
    pub fn should_compact(&self) -> bool {
        self.log_bytes >= COMPACT_BYTES
    }

    /// Writes `image` (the state as of `self.seq()`) as the snapshot and empties the log.
    pub fn compact(&mut self, image: &Image) -> Result<(), StoreError> {
        self.replace(image, self.seq)
    }

    /// Replaces everything with `image` as of `seq` (a passive's first sync, a restore).
    pub fn replace(&mut self, image: &Image, seq: u64) -> Result<(), StoreError> {
        write_snapshot(&self.dir.join("snapshot"), image, seq)?;
        let path = self.dir.join("log");
        self.log
            .set_len(0)
            .and_then(|_| self.log.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|_| self.log.sync_all())
            .map_err(|e| io("cannot empty", &path, e))?;
        self.seq = seq;
        self.log_bytes = 0;
        Ok(())
    }
}

/// A file only its owner may read or write (created if missing, emptied if `truncate`).
pub fn secret_file(path: &Path, truncate: bool) -> Result<File, StoreError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(0o600)
        .open(path)
        .map_err(|e| io("cannot open", path, e))?;
    // An existing file keeps its mode on open: make sure it is the owner's only.
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(|e| io("cannot restrict", path, e))?;
    Ok(f)
}

/// Writes a snapshot file atomically: a temporary file, fsynced, renamed, directory fsynced.
pub fn write_snapshot(path: &Path, image: &Image, seq: u64) -> Result<(), StoreError> {
    let body = serde_json::to_vec(&Snapshot {
        seq,
        image: image.clone(),
    })
    .map_err(|e| StoreError(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    let mut f = secret_file(&tmp, true)?;
    f.write_all(&frame::encode(&body))
        .and_then(|_| f.sync_all())
        .map_err(|e| io("cannot write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io("cannot rename", &tmp, e))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("cannot sync", parent, e))?;
    }
    Ok(())
}

/// Reads a snapshot file; absent is `None`, unreadable or corrupt is an error.
pub fn read_snapshot(path: &Path) -> Result<Option<Snapshot>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("cannot read", path, e)),
    };
    let corrupt = |why: String| {
        StoreError(format!(
            "snapshot {} is corrupt ({why}); restore one with `zonecast controller --restore FILE`",
            path.display()
        ))
    };
    let (body, used) = frame::decode(&bytes).map_err(corrupt)?;
    if used != bytes.len() {
        return Err(corrupt(format!(
            "{} bytes after its record",
            bytes.len() - used
        )));
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| corrupt(e.to_string()))
}

/// The valid batches of a log, the length of its valid prefix, and why the rest (if any) is
/// invalid. Batches at or below `base` (already in the snapshot) are kept in order but not
/// required to start right after it.
fn read_log(bytes: &[u8], base: u64) -> (Vec<Batch>, usize, Option<String>) {
    let mut batches: Vec<Batch> = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (body, used) = match frame::decode(&bytes[at..]) {
            Ok(r) => r,
            Err(why) => return (batches, at, Some(why)),
        };
        let batch: Batch = match serde_json::from_slice(body) {
            Ok(b) => b,
            Err(e) => return (batches, at, Some(format!("a record does not parse: {e}"))),
        };
        let expected = batches.last().map(|b| b.seq + 1);
        if expected.is_some_and(|s| s != batch.seq) || (expected.is_none() && batch.seq > base + 1)
        {
            let why = format!("record seq {} is out of order", batch.seq);
            return (batches, at, Some(why));
        }
        batches.push(batch);
        at += used;
    }
    (batches, at, None)
}

#[cfg(test)]
mod tests;
