//! Mirrored standbys and drains end to end, with real processes: a controller, two
//! `zonecast pair`s in one region (each streams its state; the other mirrors it), devices
//! from the client library. `kill -9` of the serving pair under traffic must lose no state a
//! device saw; a drain under traffic must lose no update at all; a hostile subscriber or a
//! primary sending garbage is refused and counted. The failover and the drain run in both
//! modes: plain, and encrypted (CurveZMQ control plane, Noise streams).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use zonecast::client::{Device, Event, ObjectRecord, Roaming};
use zonecast::wire::{Fields, MASK_PAYLOAD, MASK_TRANSLATION};

/// The serving pair of `scene` and its standby, once the standby's mirror is in sync.
fn wait_standby_synced(ctl: &ControllerProcess, scene: u32) -> (Value, Value) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = ctl.status();
        let pairs = st["pairs"].as_array().unwrap().clone();
        let serving = st["scenes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == scene)
            .map(|s| s["pair"].clone())
            .unwrap();
        let find = |id: &Value| pairs.iter().find(|p| &p["id"] == id).cloned();
        if let Some(p) = find(&serving) {
            if p["standby_state"] == "synced" {
                return (p.clone(), find(&p["standby"]).unwrap());
            }
        }
        assert!(Instant::now() < deadline, "no standby in sync: {st}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pair process listening at `udp` among `pairs`.
fn by_udp<'a>(pairs: &'a mut [PairProcess], udp: &Value) -> &'a mut PairProcess {
    let udp: SocketAddr = udp.as_str().unwrap().parse().unwrap();
    pairs.iter_mut().find(|p| p.udp == udp).unwrap()
}

/// Devices of one scene kept alive (keepalives, locate) while a test runs.
struct Crowd {
    devices: Vec<(Device, Roaming)>,
}

impl Crowd {
    fn new(ctl: &ControllerProcess, scene: u32, n: usize) -> Crowd {
        let devices = (0..n)
            .map(|_| {
                let d = ctl.device(scene);
                (d, Roaming::new(ctl.client()))
            })
            .collect();
        Crowd { devices }
    }

    fn poll(&mut self) {
        let now = Instant::now();
        for (d, r) in &mut self.devices {
            r.poll(d, now).unwrap();
        }
    }

    fn dev(&mut self, i: usize) -> &mut Device {
        &mut self.devices[i].0
    }
}

/// Object updates among what `d` has queued, without waiting.
fn received(d: &mut Device) -> Vec<ObjectRecord> {
    let mut out = Vec::new();
    while let Some(e) = d.try_recv().unwrap() {
        if let Event::Update(r) = e {
            out.push(r);
        }
    }
    out
}

/// The objects of a fresh device's snapshot of `scene`: the state its pair serves.
fn served_state(ctl: &ControllerProcess, scene: u32) -> BTreeMap<u64, ObjectRecord> {
    let reg = ctl.client().register_device(scene, None, None).unwrap();
    let mut d = Device::connect(zonecast::client::Session {
        device: reg.location.device,
        scene,
        key: reg.key,
        pair: reg.location.udp,
    })
    .unwrap();
    let mut objects = BTreeMap::new();
    let Some(Event::Snapshot {
        chunk_count,
        objects: first,
        ..
    }) = d.join_until_snapshot(0.0, Duration::from_secs(5)).unwrap()
    else {
        panic!("no snapshot");
    };
    let mut chunks = vec![first];
    while chunks.len() < chunk_count as usize {
        match d.recv(Duration::from_secs(2)).unwrap() {
            Some(Event::Snapshot { objects, .. }) => chunks.push(objects),
            Some(_) => {}
            None => panic!("snapshot incomplete"),
        }
    }
    for r in chunks.into_iter().flatten() {
        objects.insert(r.object, r);
    }
    objects
}

fn write(d: &mut Device, object: u64, x: f32, payload: &[u8]) -> u64 {
    let f = Fields {
        translation: [x, 0.0, 0.0],
        ..Fields::default()
    };
    let mask = MASK_TRANSLATION | if payload.is_empty() { 0 } else { MASK_PAYLOAD };
    d.update(object, mask, &f, payload).unwrap()
}

#[test]
fn a_killed_primary_is_replaced_by_its_standby_with_every_state_devices_saw() {
    killed_primary(Mode::Plain);
}

#[test]
fn encrypted_a_killed_primary_is_replaced_by_its_standby_with_every_state_devices_saw() {
    killed_primary(Mode::Encrypted);
}

fn killed_primary(mode: Mode) {
    let ctl = ControllerProcess::start_in(mode);
    let mut pairs = vec![ctl.pair("eu", &[]), ctl.pair("eu", &[])];
    ctl.wait_live_pairs("eu", 2);
    let scene = ctl.scene("arena", "eu");
    // 0 writes 20 objects once and then only keeps alive; 1 writes 4 objects without a
    // pause; 2 watches.
    let mut crowd = Crowd::new(&ctl, scene, 3);
    let (primary, standby) = wait_standby_synced(&ctl, scene);
    // Encrypted: the standby synced over a Noise stream whose key the controller handed out.
    assert_eq!(
        primary["bus_key"].is_string(),
        mode == Mode::Encrypted,
        "{primary}"
    );
    for id in 1..=20u64 {
        write(crowd.dev(0), id, id as f32 * 10.0, &[id as u8; 3]);
    }
    let mut sent: BTreeMap<(u64, u64), f32> = BTreeMap::new(); // (object, seq) -> x
    let mut seen: BTreeMap<u64, ObjectRecord> = BTreeMap::new();
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < Duration::from_millis(400) {
        crowd.poll();
        i += 1;
        let object = 100 + i % 4;
        let seq = write(crowd.dev(1), object, i as f32, &[]);
        sent.insert((object, seq), i as f32);
        for r in received(crowd.dev(2)) {
            seen.insert(r.object, r);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    by_udp(&mut pairs, &primary["udp"]).child.kill().unwrap(); // SIGKILL, under traffic
    let killed = Instant::now();
    // What was in flight to the watcher still arrives; then nothing is written until the
    // standby's state has been compared.
    while killed.elapsed() < Duration::from_millis(50) {
        for r in received(crowd.dev(2)) {
            seen.insert(r.object, r);
        }
    }
    while killed.elapsed() < Duration::from_millis(1500) {
        crowd.poll();
        for d in 0..3 {
            let _ = received(crowd.dev(d));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // The standby's report of a lost stream made the controller probe: the closed port
    // confirmed the crash at once, no window was waited out.
    assert_eq!(ctl.metric(DEATHS_PROBE), 1);
    assert_eq!(ctl.metric(DEATHS_SILENT), 0);
    let standby_udp: SocketAddr = standby["udp"].as_str().unwrap().parse().unwrap();
    for d in 0..3 {
        assert_eq!(
            crowd.dev(d).session().pair,
            standby_udp,
            "device {d} not on the standby"
        );
    }
    let served = served_state(&ctl, scene);
    assert_eq!(
        seen.len(),
        24,
        "the watcher saw every object before the kill"
    );
    for (id, last) in &seen {
        let s = served.get(id).unwrap_or_else(|| panic!("object {id} lost"));
        assert_eq!(s.origin_device, last.origin_device, "object {id} owner");
        assert!(
            s.origin_seq >= last.origin_seq,
            "object {id}: standby serves seq {} older than seq {} a device saw",
            s.origin_seq,
            last.origin_seq
        );
        if s.origin_seq == last.origin_seq {
            assert_eq!(s.fields, last.fields, "object {id}");
            assert_eq!(s.payload, last.payload, "object {id}");
        } else {
            // Accepted by the primary but never relayed before it died: still what was sent.
            assert_eq!(
                sent.get(&(*id, s.origin_seq)),
                Some(&s.fields.translation[0])
            );
        }
    }
    assert_eq!(
        served.len(),
        seen.len(),
        "no object the devices never wrote"
    );
    for id in 1..=20u64 {
        assert_eq!(served[&id].payload, vec![id as u8; 3], "idle object {id}");
    }

    // Devices hear each other again, through the standby.
    let mut after = Vec::new();
    let resumed = Instant::now();
    while after.len() < 20 && resumed.elapsed() < Duration::from_secs(5) {
        crowd.poll();
        i += 1;
        write(crowd.dev(1), 100, i as f32, &[]);
        after.extend(received(crowd.dev(2)));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        after.len() >= 20,
        "only {} updates after the failover",
        after.len()
    );
    assert!(after.windows(2).all(|w| w[0].origin_seq < w[1].origin_seq));
}

#[test]
fn a_drain_under_traffic_loses_no_update_and_the_drained_pair_exits() {
    drain_under_traffic(Mode::Plain, Stop::Drain);
}

#[test]
fn encrypted_a_drain_under_traffic_loses_no_update_and_the_drained_pair_exits() {
    drain_under_traffic(Mode::Encrypted, Stop::Drain);
}

/// What systemd, Docker and Kubernetes do: SIGTERM. The pair drains itself.
#[test]
fn sigterm_to_a_serving_pair_drains_it_losing_no_update_and_it_exits_0_deregistered() {
    drain_under_traffic(Mode::Plain, Stop::Sigterm);
}

/// How the serving pair is told to go.
#[derive(Clone, Copy, PartialEq)]
enum Stop {
    /// `zonecast pair drain --pair ID`.
    Drain,
    /// `kill -TERM`.
    Sigterm,
}

fn drain_under_traffic(mode: Mode, stop: Stop) {
    let ctl = ControllerProcess::start_in(mode);
    let extra = ["--drain-grace-ms", "500"];
    let mut pairs = vec![ctl.pair("eu", &extra), ctl.pair("eu", &extra)];
    ctl.wait_live_pairs("eu", 2);
    let scene = ctl.scene("arena", "eu");
    let mut crowd = Crowd::new(&ctl, scene, 2);
    let (primary, standby) = wait_standby_synced(&ctl, scene);

    let mut got: Vec<f32> = Vec::new();
    let mut n = 0u32;
    let mut drained = false;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        crowd.poll();
        n += 1;
        write(crowd.dev(0), 1, n as f32, &[]);
        got.extend(
            received(crowd.dev(1))
                .iter()
                .map(|r| r.fields.translation[0]),
        );
        // The sender reads (and so follows redirects) only every 100 ms, like a busy game
        // loop: what it sends the old pair meanwhile must be forwarded, not lost.
        if n.is_multiple_of(25) {
            let _ = received(crowd.dev(0));
        }
        if !drained && start.elapsed() > Duration::from_millis(500) {
            match stop {
                Stop::Drain => {
                    let id = primary["id"].to_string();
                    let mut args = vec!["pair", "drain", "--pair", &id];
                    let operator = ctl.cli_args();
                    args.extend(operator.iter().map(String::as_str));
                    zonecast_ok(&args);
                }
                Stop::Sigterm => {
                    let pid = by_udp(&mut pairs, &primary["udp"]).child.id();
                    // SAFETY: kill(2) on a child process this test started and still owns.
                    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
                }
            }
            drained = true;
        }
        std::thread::sleep(Duration::from_millis(4));
    }
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_millis(300) {
        crowd.poll();
        got.extend(
            received(crowd.dev(1))
                .iter()
                .map(|r| r.fields.translation[0]),
        );
    }
    let want: Vec<f32> = (1..=n).map(|i| i as f32).collect();
    let missing: Vec<&f32> = want.iter().filter(|x| !got.contains(x)).collect();
    eprintln!(
        "{}: {} of {n} updates received, {} lost",
        if stop == Stop::Sigterm {
            "sigterm"
        } else {
            "drain"
        },
        got.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "{} of {n} updates lost: {missing:?}",
        missing.len()
    );
    assert_eq!(got, want, "every update once, in order");
    let standby_udp: SocketAddr = standby["udp"].as_str().unwrap().parse().unwrap();
    assert_eq!(crowd.dev(0).session().pair, standby_udp);
    assert_eq!(crowd.dev(1).session().pair, standby_udp);
    // The drained pair deregistered and exited on its own, successfully.
    let old = by_udp(&mut pairs, &primary["udp"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = old.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the drained pair did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let st = ctl.status();
    assert_eq!(st["pairs"].as_array().unwrap().len(), 1, "{st}");
}

#[test]
fn hostile_stream_subscribers_and_a_primary_sending_garbage_are_refused_and_counted() {
    let ctl = ControllerProcess::start();
    let pair = controlled_pair(&ctl.endpoint, "eu");
    ctl.wait_live_pairs("eu", 1);
    let bus = pair.bus[0].trim_start_matches("tcp://").to_string();
    // Garbage, then a hello with the wrong token, on the pair's stream.
    let mut s = std::net::TcpStream::connect(&bus).unwrap();
    s.write_all(&[0xee; 64]).unwrap();
    let mut s2 = std::net::TcpStream::connect(&bus).unwrap();
    let mut hello = b"ZH\x01\x02\x05wrong".to_vec();
    let mut framed = (hello.len() as u32).to_le_bytes().to_vec();
    framed.append(&mut hello);
    s2.write_all(&framed).unwrap();
    assert_eq!(pair.wait_metric("zonecast_bus_refused_total", 2), 2);
    assert_eq!(pair.metrics()["zonecast_bus_subscribers"], 0);

    // A fake primary in the region whose stream sends garbage once its standby dials in.
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = ctl.client();
    let reg = client
        .request(&json!({
            "op": "pair.register", "token": TOKEN, "region": "eu", "udp": "127.0.0.1:9",
            "capacity": 10, "version": "fake", "bus": format!("tcp://{}", fake.local_addr().unwrap()),
        }))
        .unwrap();
    let fake_id = reg["pair"].as_u64().unwrap();
    let beat = std::thread::spawn(move || {
        for _ in 0..100 {
            let hb = json!({"op": "pair.heartbeat", "token": TOKEN, "pair": fake_id, "epoch": 0});
            let _ = client.request(&hb);
            std::thread::sleep(Duration::from_millis(30));
        }
    });
    let (mut conn, _) = fake.accept().unwrap();
    conn.write_all(&[16, 0, 0, 0]).unwrap();
    conn.write_all(b"ZB\x01not events here").unwrap();
    assert!(pair.wait_metric("zonecast_mirror_malformed_total", 1) >= 1);
    // The standby dials again for a fresh checkpoint, and the pair still serves devices.
    let (_again, _) = fake.accept().unwrap();
    let scene = ctl.scene("arena", "eu");
    assert_relays(&ctl, scene);
    drop(beat);
}
