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

#[test]
fn a_pair_that_comes_back_stale_is_fenced_and_serves_nothing_it_lost() {
    let ctl = ControllerProcess::start();
    let a = controlled_pair(&ctl.endpoint, "eu");
    ctl.wait_live_pairs("eu", 1);
    let scene = ctl.scene("arena", "eu");
    let mut dev = ctl.device(scene);
    let _b = controlled_pair(&ctl.endpoint, "eu");
    ctl.wait_live_pairs("eu", 2);
    assert_eq!(dev.session().pair, a.udp);

    // Freeze the serving pair past the death window, then let it run again.
    let pid = a.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(800));
    let moved = ctl.client().locate(dev.session().device).unwrap();
    assert_ne!(
        moved.udp, a.udp,
        "the scene did not move off the frozen pair"
    );
    assert!(std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());

    // Back, it learns it is stale, drops the sessions and registers again as a new pair.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut before = a.dropped("unknown_device");
    loop {
        // The device still talks to the old pair: it must no longer be served there.
        dev.keepalive().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let now = a.dropped("unknown_device");
        if now > before {
            break;
        }
        before = now;
        assert!(
            Instant::now() < deadline,
            "the stale pair kept serving the device"
        );
    }
    // Its old record is dead; it registers again under a new id, with none of its scenes.
    let old_udp = a.udp.to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    let again = loop {
        let st = ctl.status();
        let pairs = st["pairs"].as_array().unwrap().clone();
        let mine: Vec<_> = pairs.into_iter().filter(|p| p["udp"] == old_udp).collect();
        if let Some(live) = mine.iter().find(|p| p["alive"] == true) {
            assert!(mine.iter().any(|p| p["alive"] == false), "{st}");
            break live.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the old pair never registered again: {st}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        again["scenes"].as_array().unwrap().len(),
        0,
        "it must not get its old scene back"
    );
    // The device, told by the controller, moves and is served again.
    dev.redirect(moved.udp, moved.epoch).unwrap();
    let snap = dev
        .join_until_snapshot(0.0, Duration::from_secs(5))
        .unwrap();
    assert!(snap.is_some());
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
