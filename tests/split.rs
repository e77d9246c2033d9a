//! The split pair end to end: `zonecast ingest` and `zonecast fanout` as two processes over an
//! `ipc://` stream relay like the one-process pair; registered with a controller, the pair is
//! alive only while both halves are.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use zonecast::pair::SessionsFile;

fn fanout(bus: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_zonecast"))
        .args([
            "fanout",
            "--bus",
            bus,
            "--token",
            TOKEN,
            "--stats-every-secs",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn ingest(dir: &tempfile::TempDir, bus: &str, devices: u32, extra: &[&str]) -> PairProcess {
    let sessions = SessionsFile::generate(1, devices, 1);
    let path = dir.path().join("sessions.json");
    std::fs::write(&path, sessions.to_json()).unwrap();
    let mut args = vec!["--fanout-bus", bus, "--token", TOKEN];
    args.extend_from_slice(extra);
    PairProcess::launch("ingest", &path, sessions, &args)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_split_pair_relays_among_devices_in_order_never_to_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let bus = format!("ipc://{}", dir.path().join("pair.sock").display());
    let pair = ingest(&dir, &bus, 3, &[]);
    let _fanout = Killed(fanout(&bus));
    // The fanout half subscribes, gets the checkpoint of the sessions, and then the devices'
    // joins are answered (snapshots are sent by the fanout process).
    pair.wait_metric("zonecast_bus_subscribers", 1);
    let mut a = pair.joined(1);
    let mut b = pair.joined(2);
    let mut c = pair.joined(3);
    for i in 0..50 {
        move_to(&mut a, 1, i as f32);
    }
    for d in [&mut b, &mut c] {
        let got = collect_updates(d, 50, Duration::from_secs(5));
        let xs: Vec<f32> = got.iter().map(|r| r.fields.translation[0]).collect();
        assert_eq!(xs, (0..50).map(|i| i as f32).collect::<Vec<_>>());
    }
    assert!(updates(&drain(&mut a, Duration::from_millis(100))).is_empty());
    // What the fanout half sent (snapshots and 2 x 50 updates) reaches the ingest half's
    // metrics through its heartbeats: the pair's `out`, as `status` and the controller see it.
    let out = pair.wait_metric("zonecast_fanout_updates_total", 100);
    assert!(out >= 100, "the ingest half reports {out} updates sent");
    assert!(pair.metrics()["zonecast_fanout_bytes_total"] > 0);
}

#[test]
fn a_split_pair_is_alive_only_while_both_halves_are() {
    let ctl = ControllerProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let bus = format!("ipc://{}", dir.path().join("pair.sock").display());
    let control = ["--control", ctl.endpoint.as_str(), "--region", "eu"];
    let pair = ingest(&dir, &bus, 0, &control);
    // Ingest alone is not a pair: it does not register.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(ctl.status()["pairs"].as_array().unwrap().len(), 0);
    let mut half = Killed(fanout(&bus));
    ctl.wait_live_pairs("eu", 1);
    let scene = ctl.scene("arena", "eu");
    assert_relays(&ctl, scene);

    half.0.kill().unwrap(); // SIGKILL the fanout half
    let killed = Instant::now();
    ctl.wait_live_pairs("eu", 0);
    assert!(killed.elapsed() < Duration::from_secs(2));
    // The ingest stops heartbeating and answers the controller's probe "not serving": a
    // death confirmed, not a window waited out.
    assert_eq!(ctl.metric(DEATHS_PROBE), 1);
    drop(half);
    let _back = Killed(fanout(&bus));
    ctl.wait_live_pairs("eu", 1);
    // Whole again, it comes back under its own id.
    assert_eq!(ctl.status()["pairs"].as_array().unwrap().len(), 1);
    drop(pair);
}
