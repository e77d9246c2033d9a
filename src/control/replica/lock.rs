//! The lock that makes one controller replica active. Each acquisition starts a new **term**,
//! a number above every term the lock or the replica has seen, recorded with the holder's
//! endpoint so passives know whom to follow.
//!
//! [`FileLock`] (one host): `flock` on a file (in the data directories' parent by default).
//! The kernel releases it the moment the holder's process dies, so an ungraceful hand-over
//! starts at once; the file's content, `TERM ENDPOINT`, is rewritten and fsynced by each new
//! holder (`TERM -` after a graceful release: no active).
//!
//! Across hosts: `super::etcd::EtcdLock` (cargo feature `etcd`), an etcd lease and election.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A leadership lock.
pub trait Lock: Send {
    /// Tries to become the holder: the new term (above `min_term` and every term the lock
    /// recorded), or `None` while someone else holds it.
    fn try_acquire(&mut self, endpoint: &str, min_term: u64) -> Result<Option<u64>, String>;
    /// The last recorded term and the holder's endpoint (`None`: nobody holds it now).
    fn holder(&mut self) -> Result<(u64, Option<String>), String>;
    /// Whether this replica still holds it (a lease can expire under a partition).
    fn held(&mut self) -> bool;
    /// Lets go (graceful hand-over); the record says nobody holds it.
    fn release(&mut self);
    /// For log lines.
    fn describe(&self) -> String;
    /// How long after its holder dies the lock may still count as held (see
    /// `Node::set_lock_lapse`).
    fn lapse(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// The lock a `--lock` argument names: `none` (a lone controller), `etcd://...` (an etcd lease
/// and election; needs the cargo feature `etcd`) or the path of a lock file.
pub fn from_spec(spec: &str) -> Result<Option<Box<dyn Lock>>, String> {
    if spec == "none" {
        return Ok(None);
    }
    if spec.starts_with("etcd://") {
        #[cfg(feature = "etcd")]
        {
            let url = super::etcd::EtcdUrl::parse(spec)?;
            return Ok(Some(Box::new(super::etcd::EtcdLock::start(url)?)));
        }
        #[cfg(not(feature = "etcd"))]
        return Err(format!(
            "--lock {spec}: this zonecast was built without etcd support; build it with `cargo build --release --features etcd` (needs protoc)"
        ));
    }
    Ok(Some(Box::new(FileLock::new(Path::new(spec)))))
}

/// `flock` on a file.
pub struct FileLock {
    path: PathBuf,
    held: Option<File>,
}

impl FileLock {
    pub fn new(path: &Path) -> FileLock {
        FileLock {
            path: path.to_path_buf(),
            held: None,
        }
    }

    fn open(&self) -> Result<File, String> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(|e| format!("lock {}: {e}", self.path.display()))
    }

    /// The lock file, locked by us, or `None` while another process holds it.
    fn try_lock(&self) -> Result<Option<File>, String> {
        let file = self.open()?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(format!("lock {}: {e}", self.path.display()))
            }
        }
    }
}

/// `TERM ENDPOINT` (or `TERM -`).
pub fn parse_record(text: &str) -> (u64, Option<String>) {
    let mut words = text.split_whitespace();
    let term = words.next().and_then(|t| t.parse().ok()).unwrap_or(0);
    let endpoint = words.next().filter(|e| *e != "-").map(str::to_string);
    (term, endpoint)
}

fn record(file: &mut File, term: u64, endpoint: &str) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(format!("{term} {endpoint}\n").as_bytes())?;
    file.sync_all()
}

impl Lock for FileLock {
    fn try_acquire(&mut self, endpoint: &str, min_term: u64) -> Result<Option<u64>, String> {
        let Some(mut file) = self.try_lock()? else {
            return Ok(None);
        };
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        let term = parse_record(&text).0.max(min_term) + 1;
        record(&mut file, term, endpoint)
            .map_err(|e| format!("lock {}: {e}", self.path.display()))?;
        self.held = Some(file);
        Ok(Some(term))
    }

    fn holder(&mut self) -> Result<(u64, Option<String>), String> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let (term, endpoint) = parse_record(&text);
        if self.held.is_some() {
            return Ok((term, endpoint));
        }
        // The record outlives a holder killed by a signal: a probe of the lock tells (held
        // for an instant; a replica trying the lock meanwhile tries again on its next round).
        match self.try_lock()? {
            Some(file) => {
                let _ = file.unlock();
                Ok((term, None))
            }
            None => Ok((term, endpoint)),
        }
    }

    fn held(&mut self) -> bool {
        self.held.is_some()
    }

    fn release(&mut self) {
        if let Some(mut file) = self.held.take() {
            let mut text = String::new();
            let _ = file.seek(SeekFrom::Start(0));
            let _ = file.read_to_string(&mut text);
            let _ = record(&mut file, parse_record(&text).0, "-");
            let _ = file.unlock();
        }
    }

    fn describe(&self) -> String {
        format!("file lock {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_every_term_is_higher() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.lock");
        let mut a = FileLock::new(&path);
        let mut b = FileLock::new(&path);
        assert_eq!(a.try_acquire("tcp://a", 0).unwrap(), Some(1));
        assert_eq!(b.try_acquire("tcp://b", 0).unwrap(), None);
        assert_eq!(b.holder().unwrap(), (1, Some("tcp://a".into())));
        a.release();
        assert_eq!(b.holder().unwrap(), (1, None));
        // A replica that saw term 7 gets a term above it.
        assert_eq!(b.try_acquire("tcp://b", 7).unwrap(), Some(8));
        assert_eq!(a.try_acquire("tcp://a", 0).unwrap(), None);
        // Dropping the holder (its process dying) frees the lock; the record still names it.
        assert_eq!(a.holder().unwrap(), (8, Some("tcp://b".into())));
        drop(b);
        assert_eq!(a.holder().unwrap(), (8, None));
        assert_eq!(a.try_acquire("tcp://a", 0).unwrap(), Some(9));
    }
}
