//! The store on a real temporary directory: what is appended and synced comes back, a torn or
//! corrupt tail is cut and reported (earlier records kept), compaction keeps the state, the
//! files are the owner's only, and one process holds a data directory.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use super::*;
use crate::control::protocol::Request;
use crate::control::{Config, Controller};

/// A controller that registered `n` more scenes, and the entries each one committed.
fn scenes(c: &mut Controller, from: u32, n: u32) -> Vec<Vec<Entry>> {
    (from..from + n)
        .map(|i| {
            c.handle(
                Instant::now(),
                Request::SceneCreate {
                    token: Some("t".into()),
                    name: format!("scene-{i}"),
                    region: "r".into(),
                    grid: None,
                    layers: Vec::new(),
                    reserved: Vec::new(),
                },
            )
            .expect("scene");
            c.commit()
        })
        .collect()
}

fn controller() -> Controller {
    Controller::new(Config::new("t"))
}

fn replay(r: &Recovered) -> Controller {
    let mut c = match &r.snapshot {
        Some(s) => Controller::from_image(
            Config::new("t"),
            Box::new(crate::control::random::OsRandom),
            s.image.clone(),
        ),
        None => controller(),
    };
    for b in &r.batches {
        c.apply(&b.entries);
    }
    c
}

#[test]
fn what_is_synced_comes_back_and_the_files_are_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = controller();
    {
        let (mut store, r) = Store::open(dir.path()).unwrap();
        assert!(r.snapshot.is_none() && r.batches.is_empty() && r.truncated.is_none());
        for entries in scenes(&mut c, 1, 5) {
            store.append(0, entries).unwrap();
        }
        store.sync().unwrap();
        assert_eq!(store.seq(), 5);
        assert!(
            Store::open(dir.path()).is_err(),
            "a second process on the same directory"
        );
    }
    let (store, r) = Store::open(dir.path()).unwrap();
    assert_eq!(store.seq(), 5);
    assert_eq!(r.batches.len(), 5);
    assert_eq!(replay(&r).image(), c.image());
    let mode = |p: &str| {
        fs::metadata(dir.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("log"), 0o600);
    assert_eq!(mode(""), 0o700);
}

#[test]
fn a_torn_or_corrupt_tail_is_cut_to_the_last_valid_record_and_reported() {
    for damage in ["torn", "flipped", "garbage"] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = controller();
        let batches = scenes(&mut c, 1, 3);
        let before_last;
        {
            let (mut store, _) = Store::open(dir.path()).unwrap();
            store.append(0, batches[0].clone()).unwrap();
            store.append(0, batches[1].clone()).unwrap();
            before_last = fs::metadata(dir.path().join("log")).unwrap().len();
            store.append(0, batches[2].clone()).unwrap();
            store.sync().unwrap();
        }
        let path = dir.path().join("log");
        let mut bytes = fs::read(&path).unwrap();
        match damage {
            "torn" => bytes.truncate(bytes.len() - 5),
            "flipped" => *bytes.last_mut().unwrap() ^= 0x40,
            _ => bytes.extend_from_slice(b"\x07\x00\x00\x00junk"),
        }
        fs::write(&path, &bytes).unwrap();
        let (mut store, r) = Store::open(dir.path()).unwrap();
        let why = r.truncated.clone().expect("the cut is reported");
        let kept = if damage == "garbage" { 3 } else { 2 };
        assert_eq!(r.batches.len(), kept, "{damage}: {why}");
        assert!(why.contains(&format!("seq {kept}")), "{damage}: {why}");
        let len = fs::metadata(&path).unwrap().len();
        if damage != "garbage" {
            assert_eq!(len, before_last, "{damage}: cut at the last valid record");
        }
        // Appending goes on after the last valid record.
        store.append(0, Vec::new()).unwrap();
        store.sync().unwrap();
        drop(store);
        let (_, r) = Store::open(dir.path()).unwrap();
        assert!(r.truncated.is_none(), "{damage}: clean after the cut");
        assert_eq!(r.batches.len(), kept + 1);
    }
}

#[test]
fn compaction_keeps_the_state_and_a_crash_before_the_log_is_emptied_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = controller();
    {
        let (mut store, _) = Store::open(dir.path()).unwrap();
        for entries in scenes(&mut c, 1, 4) {
            store.append(0, entries).unwrap();
        }
        store.compact(&c.image()).unwrap();
        assert_eq!(fs::metadata(dir.path().join("log")).unwrap().len(), 0);
        for entries in scenes(&mut c, 5, 2) {
            store.append(0, entries).unwrap();
        }
        store.sync().unwrap();
    }
    let (store, r) = Store::open(dir.path()).unwrap();
    assert_eq!(r.snapshot.as_ref().map(|s| s.seq), Some(4));
    assert_eq!(r.batches.iter().map(|b| b.seq).collect::<Vec<_>>(), [5, 6]);
    assert_eq!(store.seq(), 6);
    assert_eq!(replay(&r).image(), c.image());
    drop(store);
    // A snapshot written at seq 6 but the log not yet emptied (a crash in between): the
    // records it already holds are skipped.
    write_snapshot(&dir.path().join("snapshot"), &c.image(), 6).unwrap();
    let (store, r) = Store::open(dir.path()).unwrap();
    assert!(r.batches.is_empty() && r.truncated.is_none());
    assert_eq!(store.seq(), 6);
    assert_eq!(replay(&r).image(), c.image());
}

#[test]
fn a_corrupt_snapshot_is_an_error_not_an_empty_state() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller();
    write_snapshot(&dir.path().join("snapshot"), &c.image(), 1).unwrap();
    let path = dir.path().join("snapshot");
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(b"x").unwrap();
    let err = Store::open(dir.path()).err().expect("refused");
    assert!(err.0.contains("corrupt"), "{err}");
}
