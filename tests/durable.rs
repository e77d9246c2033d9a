//! The controller never forgets and never stops, with real processes: a lone controller
//! killed (SIGKILL, then SIGTERM) and restarted on its data directory resumes with every
//! scene, pair, device and key while devices keep relaying; two replicas behind the file lock
//! hand over when the active is killed (the passive takes over, writes go on) or stopped
//! gracefully (no acknowledged write lost); a torn log tail is cut and reported; a snapshot
//! restores a controller whose disk was lost (the README's runbook).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use common::replicas::*;
use common::*;
use serde_json::json;
use zonecast::control::client::ControlClient;

/// A lone controller (no lock) on `data` under `dir`, a scene, a pair and two devices in the
/// scene. Destructure it whole, as `Replicas` below.
struct Lone {
    dir: tempfile::TempDir,
    data: std::path::PathBuf,
    endpoint: String,
    ctl: ControllerProcess,
    scene: u32,
    _pair: PairProcess,
    a: zonecast::client::Device,
    b: zonecast::client::Device,
}

fn lone_controller() -> Lone {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let endpoint = free_endpoint();
    let ctl = replica(&endpoint, &data, &["--lock", "none"]);
    let scene = ctl.scene("lobby", "r");
    let pair = patient_pair(&endpoint);
    ctl.wait_live_pairs("r", 1);
    let a = ctl.device(scene);
    let b = ctl.device(scene);
    Lone {
        dir,
        data,
        endpoint,
        ctl,
        scene,
        _pair: pair,
        a,
        b,
    }
}

#[test]
fn a_lone_controller_killed_or_stopped_resumes_from_its_data_dir_and_no_device_goes_dark() {
    let Lone {
        dir: _dir,
        data,
        endpoint,
        mut ctl,
        scene,
        _pair,
        mut a,
        mut b,
    } = lone_controller();
    let before = facts(&ctl.status());
    let a_id = a.session().device;
    for (round, sig) in [libc::SIGKILL, libc::SIGTERM].into_iter().enumerate() {
        signal(&mut ctl, sig);
        wait_exit(&mut ctl);
        // The controller is gone: the data plane goes on.
        relays(&mut a, &mut b, 20, round as f32 * 100.0);
        ctl = replica(&endpoint, &data, &["--lock", "none"]);
        // Same pair (not re-registered, not dead), same scenes, same devices.
        assert_eq!(facts(&ctl.status()), before, "after signal {sig}");
        relays(&mut a, &mut b, 20, round as f32 * 100.0 + 50.0);
        // Devices need not register again: the restarted controller knows them.
        let located = ctl.client().locate(a_id).expect("locate after the restart");
        assert_eq!(located.scene, scene);
    }
    // The pair still takes orders: a device registered now is served.
    let mut c = ctl.device(scene);
    relays(&mut c, &mut b, 5, 900.0);
}

/// Two replicas behind the file lock (`c1` active, `c2` following), a scene, a pair of both
/// and two devices in the scene. Destructure it whole, without `..`: a field left out would be
/// dropped at once (the directory deleted, the process killed).
struct Replicas {
    _dir: tempfile::TempDir,
    c1: ControllerProcess,
    c2: ControllerProcess,
    e2: String,
    both: String,
    scene: u32,
    _pair: PairProcess,
    a: zonecast::client::Device,
    b: zonecast::client::Device,
}

fn two_replicas() -> Replicas {
    let dir = tempfile::tempdir().unwrap();
    let (e1, e2) = (free_endpoint(), free_endpoint());
    let c1 = replica(&e1, &dir.path().join("c1"), &[]);
    wait_active(&e1);
    let c2 = replica(&e2, &dir.path().join("c2"), &[]);
    let both = format!("{e1},{e2}");
    let scene = c1.scene("arena", "r");
    let pair = patient_pair(&both);
    c1.wait_live_pairs("r", 1);
    let a = c1.device(scene);
    let b = c1.device(scene);
    Replicas {
        _dir: dir,
        c1,
        c2,
        e2,
        both,
        scene,
        _pair: pair,
        a,
        b,
    }
}

#[test]
fn the_passive_takes_over_when_the_active_is_killed_and_writes_go_on() {
    let Replicas {
        mut c1,
        c2,
        e2,
        both,
        scene,
        mut a,
        mut b,
        _dir,
        _pair,
    } = two_replicas();
    let before = facts(&c1.status());
    signal(&mut c1, libc::SIGKILL);
    wait_exit(&mut c1);
    relays(&mut a, &mut b, 20, 0.0);
    wait_active(&e2);
    let mut writes = client(&both);
    writes
        .request(&json!({"op": "scene.create", "token": TOKEN, "name": "after", "region": "r"}))
        .expect("a write to the new active");
    let st = c2.status();
    let (pairs, scenes, devices) = facts(&st);
    assert_eq!(pairs, before.0, "the pair kept its identity: {st}");
    assert_eq!(devices, before.2);
    assert_eq!(scenes.len(), before.1.len() + 1);
    assert!(st["controllers"][0]["term"].as_u64().unwrap() >= 2, "{st}");
    relays(&mut a, &mut b, 20, 100.0);
    // A device registered through the new active is served by the same pair.
    let mut c = c2.device(scene);
    relays(&mut c, &mut b, 5, 500.0);
}

#[test]
fn a_graceful_hand_over_under_writes_loses_no_acknowledged_write() {
    let Replicas {
        mut c1,
        c2: _c2,
        e2,
        both,
        scene,
        mut a,
        mut b,
        _dir,
        _pair,
    } = two_replicas();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (stop, written, both) = (stop.clone(), written.clone(), both.clone());
        std::thread::spawn(move || {
            let mut c = client(&both);
            let mut acknowledged = Vec::new();
            while !stop.load(Relaxed) {
                match c.register_device(scene, None, None) {
                    Ok(r) => acknowledged.push(r.location.device),
                    Err(e) => panic!("a write failed during the hand-over: {e}"),
                }
                written.store(acknowledged.len(), Relaxed);
            }
            acknowledged
        })
    };
    wait_until("writes before the hand-over", || written.load(Relaxed) >= 3);
    signal(&mut c1, libc::SIGTERM);
    let status = wait_exit(&mut c1);
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    relays(&mut a, &mut b, 20, 0.0);
    wait_active(&e2);
    let after = written.load(Relaxed);
    wait_until("writes to the new active", || {
        written.load(Relaxed) >= after + 3
    });
    stop.store(true, Relaxed);
    let acknowledged = writer.join().unwrap();
    assert!(
        acknowledged.len() > 2,
        "writes went on: {}",
        acknowledged.len()
    );
    let mut check = ControlClient::new(&e2).unwrap();
    let unique: BTreeSet<u32> = acknowledged.iter().copied().collect();
    for d in &unique {
        check
            .locate(*d)
            .unwrap_or_else(|e| panic!("acknowledged device {d} was lost: {e}"));
    }
    relays(&mut a, &mut b, 20, 100.0);
}

#[test]
fn a_torn_log_tail_is_cut_and_reported_and_the_rest_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let endpoint = free_endpoint();
    let mut ctl = replica(&endpoint, &data, &["--lock", "none"]);
    for i in 0..3 {
        ctl.scene(&format!("s{i}"), "r");
    }
    signal(&mut ctl, libc::SIGKILL);
    wait_exit(&mut ctl);
    let log = data.join("log");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend_from_slice(&[0x40, 0, 0, 0, 1, 2, 3, 4, b'{']);
    std::fs::write(&log, &bytes).unwrap();
    let stderr = dir.path().join("stderr");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zonecast"))
        .args([
            "controller",
            "--token",
            TOKEN,
            "--lock",
            "none",
            "--control",
        ])
        .arg(&endpoint)
        .arg("--data-dir")
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let _ctl2 = ControllerProcessGuard(out);
    let mut c = client(&endpoint);
    let st = c
        .request(&json!({"op": "scene.list", "token": TOKEN}))
        .unwrap();
    assert_eq!(st["scenes"].as_array().unwrap().len(), 3, "{st}");
    let said = std::fs::read_to_string(&stderr).unwrap();
    assert!(said.contains("torn or corrupt"), "{said}");
    assert!(said.contains("cut 9 bytes"), "{said}");
}

/// Kills a raw child on drop.
struct ControllerProcessGuard(std::process::Child);

impl Drop for ControllerProcessGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The README's disaster-recovery runbook: a snapshot taken from the running controller
/// (`zonecast controller snapshot --out`, a secret: mode 0600), the data directory then lost
/// with the controller, and a new controller on an empty directory `--restore`d from the
/// file: the same pair, scenes and devices, devices locate without registering again, and
/// the pair (which never stopped relaying) takes orders from it.
#[test]
fn a_controller_restored_from_a_snapshot_after_its_disk_is_lost_knows_everything() {
    use std::os::unix::fs::PermissionsExt;
    let Lone {
        dir,
        data,
        endpoint,
        mut ctl,
        scene,
        _pair,
        mut a,
        mut b,
    } = lone_controller();
    let before = facts(&ctl.status());

    let file = dir.path().join("backup.snap");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zonecast"))
        .args([
            "controller",
            "snapshot",
            "--control",
            &endpoint,
            "--token",
            TOKEN,
        ])
        .arg("--out")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "snapshot: {out:?}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the snapshot holds session keys");

    signal(&mut ctl, libc::SIGKILL);
    wait_exit(&mut ctl);
    std::fs::remove_dir_all(&data).unwrap();
    relays(&mut a, &mut b, 10, 0.0);

    let restore = file.to_str().unwrap();
    let fresh = dir.path().join("fresh");
    let ctl = replica(&endpoint, &fresh, &["--lock", "none", "--restore", restore]);
    assert_eq!(facts(&ctl.status()), before, "restored state");
    let located = ctl.client().locate(a.session().device).expect("locate");
    assert_eq!(located.scene, scene);
    relays(&mut a, &mut b, 10, 50.0);
    let mut c = ctl.device(scene);
    relays(&mut c, &mut b, 5, 90.0);
}
