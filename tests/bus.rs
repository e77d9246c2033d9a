//! The ZeroMQ bus transports with real sockets: ipc:// and tcp:// round trips, scene topics,
//! stale ipc socket files, malformed messages counted, and a subscriber that survives its
//! publisher's restart.

use std::time::{Duration, Instant};

use zonecast::ipc_bus::zmq::{ZmqPublisher, ZmqSubscriber};
use zonecast::ipc_bus::{Publisher, Subscriber, Topic};
use zonecast::net::zeromq::Curve;
use zonecast::scene::{Batch, EventKind};
use zonecast::wire::Kind;

fn relay(scene: u32, byte: u8) -> Batch {
    let mut b = Batch::default();
    b.push(
        EventKind::Relay(Kind::ObjectUpdate),
        scene,
        7,
        None,
        &[byte],
    );
    b
}

/// Publishes `make()` every 20 ms until the subscriber gets a batch (ZeroMQ's slow joiner:
/// a SUB receives only what is published after its subscription reached the PUB).
fn first_batch(p: &mut ZmqPublisher, s: &mut ZmqSubscriber, make: impl Fn() -> Batch) -> Batch {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        p.publish(make()).unwrap();
        if let Some(b) = s.recv(Duration::from_millis(20)).unwrap() {
            return b;
        }
        assert!(Instant::now() < deadline, "nothing arrived over the bus");
    }
}

fn bytes(b: &Batch) -> Vec<(u32, Vec<u8>)> {
    b.iter().map(|(e, d)| (e.scene, d.to_vec())).collect()
}

#[test]
fn ipc_round_trip_keeps_events_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("ipc://{}", dir.path().join("bus.sock").display());
    let mut p = ZmqPublisher::bind(&endpoint, 64, &Curve::Off).unwrap();
    let mut s = ZmqSubscriber::connect(&endpoint, &[Topic::All], 64, &Curve::Off).unwrap();
    first_batch(&mut p, &mut s, || relay(1, 0));
    let mut b = Batch::default();
    b.push(EventKind::Admitted, 1, 7, None, &[3; 32]);
    b.push(
        EventKind::Joined,
        1,
        7,
        Some("127.0.0.1:9".parse().unwrap()),
        &[],
    );
    b.push(EventKind::Relay(Kind::ObjectUpdate), 1, 8, None, &[1, 2]);
    p.publish(b).unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        let b = s
            .recv(Duration::from_secs(5))
            .unwrap()
            .expect("more events");
        // Warm-up relays still in flight (device 7, byte 0) are not part of the check.
        let warmup = |(k, d, data): &(EventKind, u32, Vec<u8>)| {
            *k == EventKind::Relay(Kind::ObjectUpdate) && *d == 7 && data == &[0]
        };
        got.extend(
            b.iter()
                .map(|(e, d)| (e.kind, e.device, d.to_vec()))
                .filter(|x| !warmup(x)),
        );
    }
    assert_eq!(
        got,
        vec![
            (EventKind::Admitted, 7, vec![3; 32]),
            (EventKind::Joined, 7, vec![]),
            (EventKind::Relay(Kind::ObjectUpdate), 8, vec![1, 2]),
        ]
    );
    assert_eq!((s.malformed(), p.dropped()), (0, 0));
}

#[test]
fn tcp_scene_topics_filter_and_sessions_reach_everyone() {
    let mut p = ZmqPublisher::bind("tcp://127.0.0.1:0", 64, &Curve::Off).unwrap();
    let endpoint = p.endpoint().to_string();
    let mut s = ZmqSubscriber::connect(&endpoint, &[Topic::Scene(2)], 64, &Curve::Off).unwrap();
    let b = first_batch(&mut p, &mut s, || relay(2, 0));
    assert_eq!(bytes(&b), vec![(2, vec![0])]);
    std::thread::sleep(Duration::from_millis(50));
    while s.recv(Duration::from_millis(50)).unwrap().is_some() {}
    let mut b = Batch::default();
    b.push(EventKind::Relay(Kind::ObjectUpdate), 1, 7, None, &[10]);
    b.push(EventKind::Admitted, 1, 9, None, &[4; 32]);
    b.push(EventKind::Relay(Kind::ObjectUpdate), 2, 7, None, &[20]);
    b.push(EventKind::Relay(Kind::ObjectUpdate), 12, 7, None, &[30]);
    p.publish(b).unwrap();
    let mut got = Vec::new();
    while let Some(b) = s.recv(Duration::from_millis(300)).unwrap() {
        got.extend(b.iter().map(|(e, d)| (e.kind, e.scene, d.to_vec())));
    }
    assert_eq!(
        got,
        vec![
            (EventKind::Admitted, 1, vec![4; 32]),
            (EventKind::Relay(Kind::ObjectUpdate), 2, vec![20]),
        ],
        "scene 1 and scene 12 are not scene 2; sessions reach every subscriber"
    );
}

#[test]
fn stale_ipc_files_are_replaced_and_live_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.sock");
    std::fs::write(&path, b"left over by a crash").unwrap();
    let endpoint = format!("ipc://{}", path.display());
    let p = ZmqPublisher::bind(&endpoint, 8, &Curve::Off).expect("a stale file is replaced");
    match ZmqPublisher::bind(&endpoint, 8, &Curve::Off) {
        Err(e) => assert!(e.to_string().contains("in use"), "{e}"),
        Ok(_) => panic!("a second publisher took a live endpoint"),
    }
    drop(p);
}

#[test]
fn foreign_messages_are_counted_and_dropped() {
    // A raw libzmq PUB that sends what a zonecast publisher never would.
    let raw = zonecast::net::zeromq::context().socket(zmq::PUB).unwrap();
    raw.bind("tcp://127.0.0.1:0").unwrap();
    let endpoint = raw.get_last_endpoint().unwrap().unwrap();
    let mut s = ZmqSubscriber::connect(&endpoint, &[Topic::All], 8, &Curve::Off).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.malformed() < 3 {
        raw.send("scene/1/", 0).unwrap();
        raw.send_multipart(["scene/1/", "not a batch"], 0).unwrap();
        let _ = s.recv(Duration::from_millis(20)).unwrap();
        assert!(
            Instant::now() < deadline,
            "malformed messages were not counted"
        );
    }
    assert_eq!(
        s.recv(Duration::from_millis(50)).unwrap().map(|b| b.len()),
        None
    );
}

#[test]
fn a_subscriber_survives_its_publisher_restarting() {
    let mut p = ZmqPublisher::bind("tcp://127.0.0.1:0", 64, &Curve::Off).unwrap();
    let endpoint = p.endpoint().to_string();
    let mut s = ZmqSubscriber::connect(&endpoint, &[Topic::All], 64, &Curve::Off).unwrap();
    first_batch(&mut p, &mut s, || relay(1, 1));
    drop(p);
    std::thread::sleep(Duration::from_millis(200));
    let mut p = ZmqPublisher::bind(&endpoint, 64, &Curve::Off).unwrap();
    let b = first_batch(&mut p, &mut s, || relay(1, 2));
    assert_eq!(bytes(&b), vec![(1, vec![2])]);
}
