//! End-to-end: a real `zonecast pair` process relays between real UDP devices on loopback.

mod common;

use std::time::Duration;

use common::*;
use zonecast::client::Event;
use zonecast::wire::{Fields, MASK_ALL};

#[test]
fn three_devices_receive_each_others_updates_never_their_own() {
    three_devices(&[]);
}

#[test]
fn the_split_thread_pair_relays_the_same() {
    three_devices(&["--split-threads"]);
}

fn three_devices(pair_args: &[&str]) {
    let pair = PairProcess::start(3, pair_args);
    let mut devs: Vec<_> = (1..=3).map(|id| pair.joined(id)).collect();
    const N: usize = 20;
    for round in 0..N {
        for d in devs.iter_mut() {
            let id = d.session().device;
            move_to(d, u64::from(id), round as f32);
        }
    }
    for d in devs.iter_mut() {
        let me = d.session().device;
        let got = collect_updates(d, 2 * N, Duration::from_secs(5));
        let extra = drain(d, Duration::from_millis(200));
        assert!(
            updates(&extra).is_empty(),
            "device {me} got extra updates: {extra:?}"
        );
        assert_eq!(got.len(), 2 * N, "device {me}");
        assert!(
            got.iter().all(|r| r.origin_device != me),
            "device {me} got its own update"
        );
        for other in (1..=3).filter(|o| *o != me) {
            let xs: Vec<f32> = got
                .iter()
                .filter(|r| r.origin_device == other)
                .map(|r| r.fields.translation[0])
                .collect();
            // Per-sender order is kept on loopback, and every update is there.
            assert_eq!(
                xs,
                (0..N).map(|i| i as f32).collect::<Vec<_>>(),
                "from {other}"
            );
            assert!(got.iter().all(|r| r.object == u64::from(r.origin_device)));
        }
    }
    let m = pair.metrics();
    assert_eq!(m["zonecast_ingest_accepted_total"], 3 + 3 * N as u64);
    assert_eq!(m["zonecast_devices_joined"], 3);
}

#[test]
fn late_joiner_receives_the_snapshot_of_current_state() {
    let pair = PairProcess::start(4, &[]);
    let mut a = pair.joined(1);
    let mut b = pair.joined(2);
    move_to(&mut a, 100, 1.0);
    move_to(&mut a, 100, 2.0);
    let full = Fields {
        translation: [5.0, 6.0, 7.0],
        rotation: [0.0, 0.6, 0.0, 0.8],
        scale: [2.0, 2.0, 2.0],
    };
    b.overwrite(200, &full, b"state").unwrap();
    move_to(&mut a, 101, 9.0);
    a.delete(101).unwrap();
    // Wait for the relay to have applied everything (b sees a's three datagrams).
    let seen = drain(&mut b, Duration::from_millis(300));
    assert_eq!(seen.len(), 4, "{seen:?}");

    let mut late = pair.device(4);
    late.join(0.0).unwrap();
    let objects = match late.recv(Duration::from_secs(5)).unwrap() {
        Some(Event::Snapshot {
            chunk_index: 0,
            chunk_count: 1,
            objects,
            ..
        }) => objects,
        other => panic!("expected a one-chunk snapshot, got {other:?}"),
    };
    let mut objects = objects;
    objects.sort_by_key(|r| r.object);
    assert_eq!(
        objects.len(),
        2,
        "deleted object 101 must not be in the snapshot"
    );
    assert_eq!((objects[0].object, objects[0].origin_device), (100, 1));
    assert_eq!(objects[0].fields.translation, [2.0, 0.0, 0.0]);
    assert_eq!((objects[1].object, objects[1].origin_device), (200, 2));
    assert_eq!(objects[1].fields, full);
    assert_eq!(objects[1].payload, b"state");
    assert_eq!(objects[1].mask, MASK_ALL);
    // And the late joiner is now a member: it receives the next update.
    move_to(&mut a, 100, 3.0);
    let got = collect_updates(&mut late, 1, Duration::from_secs(5));
    assert_eq!(got[0].fields.translation[0], 3.0);
}

#[test]
fn keepalive_is_acked_and_silent_devices_are_evicted_and_announced() {
    let pair = PairProcess::start(2, &["--evict-after-ms", "300"]);
    let mut a = pair.joined(1);
    let mut b = pair.joined(2);
    move_to(&mut a, 1, 1.0);
    assert_eq!(collect_updates(&mut b, 1, Duration::from_secs(5)).len(), 1);
    // b stays alive with keepalives; a falls silent.
    let mut left = None;
    for _ in 0..30 {
        let seq = b.keepalive().unwrap();
        for e in drain(&mut b, Duration::from_millis(100)) {
            match e {
                Event::KeepaliveAck { echo_seq, .. } => assert_eq!(echo_seq, seq),
                Event::PeerLeft { device, timed_out } => left = Some((device, timed_out)),
                other => panic!("unexpected {other:?}"),
            }
        }
        if left.is_some() {
            break;
        }
    }
    assert_eq!(left, Some((1, true)));
    assert_eq!(pair.metrics()["zonecast_devices_joined"], 1);
    // The evicted device's object is released: b may take it over.
    move_to(&mut b, 1, 7.0);
    let m = pair.wait_metric("zonecast_ingest_accepted_total", 6);
    assert!(m >= 6);
    assert_eq!(pair.dropped("not_owner"), 0);
}

#[test]
fn dead_and_stuck_devices_do_not_cost_the_others_their_updates() {
    let pair = PairProcess::start(4, &[]);
    let mut sender = pair.joined(1);
    let mut reader = pair.joined(2);
    let stuck = pair.joined(3); // never reads again: its socket buffer fills up
    {
        let _dead = pair.joined(4); // socket closed: its address is dead
    }
    const N: usize = 3000;
    let reading =
        std::thread::spawn(move || collect_updates(&mut reader, N, Duration::from_secs(20)));
    for i in 0..N {
        move_to(&mut sender, 1, i as f32);
        if i % 50 == 49 {
            // Paced so the reader keeps up: the test is about the others, not about overload.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let got = reading.join().unwrap();
    assert_eq!(got.len(), N);
    let xs: Vec<f32> = got.iter().map(|r| r.fields.translation[0]).collect();
    assert_eq!(xs, (0..N).map(|i| i as f32).collect::<Vec<_>>());
    // Every update went to all three others, the dead and the stuck one included.
    let out = pair.wait_metric("zonecast_fanout_updates_total", 3 * N as u64);
    assert_eq!(out, 3 * N as u64, "fanout sent {out} updates");
    drop(stuck);
}

#[test]
fn a_sharded_pair_keeps_each_scene_whole() {
    // Two shards on one port; devices in scenes 1 and 2 (sessions alternate scenes).
    let dir = tempfile::tempdir().unwrap();
    let sessions = zonecast::pair::SessionsFile::generate(1, 6, 2);
    let path = dir.path().join("s.json");
    std::fs::write(&path, sessions.to_json()).unwrap();
    let pair = PairProcess::start_with(&path, sessions, &["--shards", "2"]);
    let mut devs: Vec<_> = (1..=6).map(|id| pair.joined(id)).collect();
    for d in devs.iter_mut() {
        let id = d.session().device;
        move_to(d, u64::from(id), id as f32);
    }
    for d in devs.iter_mut() {
        let (me, scene) = (d.session().device, d.session().scene);
        let got = collect_updates(d, 2, Duration::from_secs(5));
        let mut from: Vec<u32> = got.iter().map(|r| r.origin_device).collect();
        from.sort();
        let expected: Vec<u32> = (1..=6u32)
            .filter(|o| *o != me && pair.sessions.get(*o).unwrap().scene == scene)
            .collect();
        assert_eq!(from, expected, "device {me} in scene {scene}");
        assert!(updates(&drain(d, Duration::from_millis(100))).is_empty());
    }
    let m = pair.metrics();
    assert_eq!(m["zonecast_devices_joined"], 6, "metrics add the shards up");
    assert_eq!(m["zonecast_ingest_accepted_total"], 12);
}
