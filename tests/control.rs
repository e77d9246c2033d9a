//! End-to-end with real processes: a controller, two pairs registered in one region, devices
//! registered through the control plane; `kill -9` and SIGSTOP of the serving pair.

mod common;

use std::time::{Duration, Instant};

use common::*;
use zonecast::client::{Device, Event, Roaming};
use zonecast::control::client::ControlClient;

/// Runs two devices (sender moves object 1, receiver listens), both roaming, until `until`;
/// returns the updates the receiver got, with the instant each arrived.
fn run_roaming(
    control: &str,
    sender: &mut Device,
    receiver: &mut Device,
    until: Instant,
) -> Vec<(Instant, f32)> {
    let mut roam_s = Roaming::new(ControlClient::new(control).unwrap());
    let mut roam_r = Roaming::new(ControlClient::new(control).unwrap());
    let mut got = Vec::new();
    let mut i = 0u32;
    while Instant::now() < until {
        let now = Instant::now();
        roam_s.poll(sender, now).unwrap();
        roam_r.poll(receiver, now).unwrap();
        i += 1;
        move_to(sender, 1, i as f32);
        while let Some(e) = receiver.recv(Duration::from_millis(5)).unwrap() {
            if let Event::Update(r) = e {
                got.push((Instant::now(), r.fields.translation[0]));
            }
        }
        while sender.try_recv().unwrap().is_some() {}
    }
    got
}

#[test]
fn devices_are_rehomed_when_their_pair_is_killed() {
    let ctl = ControllerProcess::start();
    let mut a = controlled_pair(&ctl.endpoint, "eu");
    let mut b = controlled_pair(&ctl.endpoint, "eu");
    ctl.wait_live_pairs("eu", 2);
    let scene = ctl.scene("arena", "eu");
    let mut sender = ctl.device(scene);
    let mut receiver = ctl.device(scene);

    // Relayed through the serving pair.
    move_to(&mut sender, 1, 0.5);
    let got = collect_updates(&mut receiver, 1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "no relay before the kill");
    let serving = receiver.session().pair;
    let (victim, survivor) = if serving == a.udp {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    assert_eq!(serving, victim.udp);

    run_roaming(
        &ctl.endpoint,
        &mut sender,
        &mut receiver,
        Instant::now() + Duration::from_millis(300),
    );
    victim.child.kill().unwrap(); // SIGKILL
    let killed_at = Instant::now();
    let got = run_roaming(
        &ctl.endpoint,
        &mut sender,
        &mut receiver,
        killed_at + Duration::from_secs(3),
    );
    assert_eq!(
        receiver.session().pair,
        survivor.udp,
        "receiver was not re-homed"
    );
    assert_eq!(
        sender.session().pair,
        survivor.udp,
        "sender was not re-homed"
    );
    let after: Vec<_> = got
        .iter()
        .filter(|(t, _)| *t > killed_at + Duration::from_millis(100))
        .collect();
    assert!(
        after.len() > 20,
        "only {} updates after the kill",
        after.len()
    );
    // They arrive in order from the new pair.
    assert!(after.windows(2).all(|w| w[0].1 < w[1].1));
    // The crash was confirmed by a probe (the closed port refused it), not waited out.
    assert_eq!(ctl.metric(DEATHS_PROBE), 1);
    assert_eq!(ctl.metric(DEATHS_SILENT), 0);
    let st = ctl.status();
    let dead: Vec<_> = st["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["alive"] == false)
        .collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["udp"], victim.udp.to_string());
}

/// A controller, pair `a` serving a scene with one device on it, and a spare pair `b`.
fn serving_pair_and_spare() -> (ControllerProcess, PairProcess, PairProcess, Device) {
    let ctl = ControllerProcess::start();
    let a = controlled_pair(&ctl.endpoint, "eu");
    ctl.wait_live_pairs("eu", 1);
    let scene = ctl.scene("arena", "eu");
    let dev = ctl.device(scene);
    let b = controlled_pair(&ctl.endpoint, "eu");
    ctl.wait_live_pairs("eu", 2);
    assert_eq!(dev.session().pair, a.udp);
    (ctl, a, b, dev)
}

/// Sends SIGSTOP or SIGCONT to `pair`.
fn signal(pair: &PairProcess, sig: &str) {
    let pid = pair.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
}

/// The controller's record of the pair at `udp`: (id, alive, scenes), and how many records
/// it has for that address.
fn record(ctl: &ControllerProcess, udp: std::net::SocketAddr) -> ((u64, bool, usize), usize) {
    let st = ctl.status();
    let mine: Vec<serde_json::Value> = st["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["udp"] == udp.to_string())
        .cloned()
        .collect();
    let p = &mine[0];
    let fact = (
        p["id"].as_u64().unwrap(),
        p["alive"] == true,
        p["scenes"].as_array().unwrap().len(),
    );
    (fact, mine.len())
}

/// Waits (10 s at most) until `done`.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const OBJECTS: &str = "zonecast_objects";

#[test]
fn a_pair_frozen_past_its_window_is_failed_over_and_comes_back_under_its_id_serving_nothing_it_lost(
) {
    let (ctl, a, _b, mut dev) = serving_pair_and_spare();
    let ((id, _, _), _) = record(&ctl, a.udp);
    move_to(&mut dev, 1, 0.5);
    assert_eq!(a.wait_metric(OBJECTS, 1), 1, "the pair holds the object");

    // A silent host (SIGSTOP: no heartbeat, no probe answer, no refusal either): the window
    // decides, and the scene moves.
    signal(&a, "-STOP");
    let deadline = Instant::now() + Duration::from_secs(10);
    let moved = loop {
        let loc = ctl.client().locate(dev.session().device).unwrap();
        if loc.udp != a.udp {
            break loc;
        }
        assert!(
            Instant::now() < deadline,
            "the scene never moved off the frozen pair"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(ctl.metric(DEATHS_SILENT), 1);
    assert_eq!(
        ctl.metric(DEATHS_PROBE),
        0,
        "a stopped process refuses nothing"
    );
    signal(&a, "-CONT");

    // Back, it heartbeats: revived under its own id (no second record), told it serves
    // nothing now.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (fact, records) = record(&ctl, a.udp);
        if fact.1 {
            assert_eq!(
                (fact, records),
                ((id, true, 0), 1),
                "revived as itself, empty"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the frozen pair never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_until("the revival counted", || ctl.metric(REVIVALS) == 1);
    // The device still talking to it is no longer served there: its scene was dropped.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut before = a.dropped("unknown_device");
    loop {
        dev.keepalive().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let now = a.dropped("unknown_device");
        if now > before {
            break;
        }
        before = now;
        assert!(
            Instant::now() < deadline,
            "the revived pair kept serving the device"
        );
    }
    wait_until("the moved scene's objects dropped", || {
        a.metrics()[OBJECTS] == 0
    });
    // The device, told by the controller, moves and is served again.
    dev.redirect(moved.udp, moved.epoch).unwrap();
    let snap = dev
        .join_until_snapshot(0.0, Duration::from_secs(5))
        .unwrap();
    assert!(snap.is_some());
}

#[test]
fn a_pair_frozen_briefly_is_not_failed_over() {
    let (ctl, a, _b, mut dev) = serving_pair_and_spare();
    let (before, _) = record(&ctl, a.udp);

    // Stopped for well under the 250 ms floor window (a scheduling hiccup, a GC pause).
    for _ in 0..3 {
        signal(&a, "-STOP");
        std::thread::sleep(Duration::from_millis(100));
        signal(&a, "-CONT");
        // Heard again before the next stop.
        wait_until_heard(&ctl, a.udp);
    }
    // It heartbeats on, keeps its id and its scene, and serves the device.
    wait_until_heard(&ctl, a.udp);
    assert_eq!(record(&ctl, a.udp), (before, 1));
    assert_eq!(ctl.metric(DEATHS_SILENT) + ctl.metric(DEATHS_PROBE), 0);
    assert_eq!(
        ctl.client().locate(dev.session().device).unwrap().udp,
        a.udp
    );
    dev.keepalive().unwrap();
    let acked = dev.recv(Duration::from_secs(5)).unwrap();
    assert!(acked.is_some(), "the pair answers its device");
}

/// Waits until the pair at `udp` has heartbeated within the last interval or two.
fn wait_until_heard(ctl: &ControllerProcess, udp: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = ctl.status();
        let age = st["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["udp"] == udp.to_string())
            .and_then(|p| p["heartbeat_age_ms"].as_u64());
        if age.is_some_and(|a| a < 100) {
            return;
        }
        assert!(Instant::now() < deadline, "pair {udp} is not heartbeating");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn status_command_shows_pairs_and_scenes() {
    let ctl = ControllerProcess::start();
    let p = controlled_pair(&ctl.endpoint, "eu");
    ctl.wait_live_pairs("eu", 1);
    let endpoint = ctl.endpoint.as_str();
    let create = ["scene", "create", "--name", "lobby", "--region", "eu"];
    zonecast_ok(&[&create[..], &["--control", endpoint, "--token", TOKEN]].concat());
    let text = zonecast_ok(&["status", "--control", endpoint, "--token", TOKEN]);
    assert!(text.contains(&p.udp.to_string()), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("lobby") && l.contains("eu")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(&p.udp.to_string()) && l.contains("live")),
        "{text}"
    );
    assert!(text.contains("WINDOW") && text.contains("250ms"), "{text}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zonecast"))
        .args(["status", "--control", &ctl.endpoint, "--token", "wrong"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthorized"));
}

#[test]
fn pairs_keep_relaying_while_the_controller_is_down() {
    let mut ctl = ControllerProcess::start();
    let pair = controlled_pair(&ctl.endpoint, "eu");
    ctl.wait_live_pairs("eu", 1);
    let scene = ctl.scene("arena", "eu");
    let mut a = ctl.device(scene);
    let mut b = ctl.device(scene);
    ctl.child.kill().unwrap();
    ctl.child.wait().unwrap();
    // Several heartbeat intervals without a controller.
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..10 {
        move_to(&mut a, 1, i as f32);
    }
    let got = collect_updates(&mut b, 10, Duration::from_secs(5));
    assert_eq!(
        got.len(),
        10,
        "the pair stopped relaying without its controller"
    );
    assert_eq!(b.session().pair, pair.udp);
}

#[test]
fn the_controller_serves_ipc_endpoints_too() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("ipc://{}", dir.path().join("control.sock").display());
    let ctl = ControllerProcess::start_at(&endpoint);
    assert_eq!(ctl.endpoint, endpoint);
    let _pair = controlled_pair(&ctl.endpoint, "eu");
    ctl.wait_live_pairs("eu", 1);
    let scene = ctl.scene("arena", "eu");
    assert_relays(&ctl, scene);
}

/// Controllers started and stopped in one process (tests, benchmarks, an embedding
/// supervisor) while clients are connected: each one after the first still answers. libzmq
/// sends socket-monitor events from its I/O thread with a blocking send, so a stopped
/// controller whose monitor saw a disconnect after its reader was closed used to wedge every
/// ZeroMQ socket of the process (one CI run: no reply from the next controller for 20 s).
#[test]
fn a_stopped_controller_leaves_the_process_zeromq_working() {
    use zonecast::control::server::ControllerServer;
    use zonecast::control::Config;
    let status = serde_json::json!({"op": "cluster.status", "token": TOKEN});
    for round in 0..50 {
        let server =
            ControllerServer::start("tcp://127.0.0.1:0", Config::new(TOKEN), Default::default())
                .unwrap();
        let mut clients: Vec<ControlClient> = (0..20)
            .map(|_| {
                ControlClient::new(server.endpoint())
                    .unwrap()
                    .with_timeout(Duration::from_secs(3))
                    .with_retries(1)
            })
            .collect();
        for c in &mut clients {
            c.request(&status)
                .unwrap_or_else(|e| panic!("round {round}: no status: {e}"));
        }
        // The clients go away as the server stops: their disconnects race its shutdown.
        drop(clients);
        server.stop();
    }
}
