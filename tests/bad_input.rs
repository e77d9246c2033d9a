//! End-to-end: hostile and broken datagrams sent to a real `zonecast pair` process are dropped,
//! counted under their reason, never reach another device, and the pair keeps serving.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;
use zonecast::client::{Device, Event, Session};
use zonecast::wire::{Fields, Kind, RejectReason, SessionKey, MASK_TRANSLATION};

fn update_body(object: u64, x: f32) -> Vec<u8> {
    let f = Fields {
        translation: [x, 0.0, 0.0],
        ..Fields::default()
    };
    let b = zonecast::wire::ObjectBody::new(object, MASK_TRANSLATION, f, &[]);
    let mut out = vec![0u8; b.len()];
    b.emit(&mut out).unwrap();
    out
}

/// Sends one bad datagram and checks that exactly its reason's counter moved by one.
fn expect_drop(pair: &PairProcess, reason: &str, send: impl FnOnce()) {
    let before = pair.metrics();
    send();
    let after = pair.wait_metric(&drop_key(reason), before[&drop_key(reason)] + 1);
    assert_eq!(after, before[&drop_key(reason)] + 1, "{reason}");
    let now = pair.metrics();
    for (k, v) in &now {
        if k.starts_with("zonecast_ingest_dropped_total") && *k != drop_key(reason) {
            assert_eq!(before[k], *v, "sending a {reason} datagram moved {k}");
        }
    }
}

#[test]
fn every_bad_datagram_is_dropped_counted_and_never_relayed() {
    let mut pair = PairProcess::start(3, &[]);
    let mut owner = pair.joined(1);
    let mut observer = pair.joined(2);
    let mut intruder = pair.joined(3);
    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    let send_raw = |bytes: &[u8]| {
        raw.send_to(bytes, pair.udp).unwrap();
    };

    // The owner creates object 1 (x = 1): the observer sees it.
    move_to(&mut owner, 1, 1.0);
    let first = collect_updates(&mut observer, 1, Duration::from_secs(5));
    assert_eq!(first[0].fields.translation[0], 1.0);

    // Forged: a valid datagram with one tag byte changed (x = 666).
    let mut forged = owner
        .seal_raw(Kind::ObjectUpdate, &update_body(1, 666.0))
        .unwrap();
    let n = forged.len();
    forged[n - 3] ^= 0x01;
    expect_drop(&pair, "bad_tag", || send_raw(&forged));

    // Forged body under a valid header: the tag covers the body too (x = 667).
    let mut tampered = owner
        .seal_raw(Kind::ObjectUpdate, &update_body(1, 5.0))
        .unwrap();
    tampered[32 + 32..32 + 36].copy_from_slice(&667f32.to_le_bytes());
    expect_drop(&pair, "bad_tag", || send_raw(&tampered));

    // Replay: the same valid datagram (x = 5) twice, the second from another address.
    let valid = owner
        .seal_raw(Kind::ObjectUpdate, &update_body(1, 5.0))
        .unwrap();
    owner.send_raw(&valid).unwrap();
    expect_drop(&pair, "replay", || send_raw(&valid));

    // Stale: two updates sealed in order (x = 10 then x = 20), delivered in reverse.
    let older = owner
        .seal_raw(Kind::ObjectUpdate, &update_body(1, 10.0))
        .unwrap();
    let newer = owner
        .seal_raw(Kind::ObjectUpdate, &update_body(1, 20.0))
        .unwrap();
    owner.send_raw(&newer).unwrap();
    expect_drop(&pair, "stale", || owner.send_raw(&older).unwrap());

    // Not owner: another authenticated device writes object 1 (x = 777) and is told so.
    expect_drop(&pair, "not_owner", || {
        move_to(&mut intruder, 1, 777.0);
    });
    let mut intruder_events = drain(&mut intruder, Duration::from_millis(300));
    let rejects: Vec<_> = intruder_events
        .iter()
        .filter_map(|e| match e {
            Event::Reject { reason, object, .. } => Some((*reason, *object)),
            _ => None,
        })
        .collect();
    assert_eq!(rejects, vec![(Some(RejectReason::NotOwner), 1)]);

    // Unknown device: well formed, sealed under a key the pair has never seen (x = 888).
    let mut stranger = Device::connect(Session {
        device: 99,
        scene: 1,
        key: SessionKey::random(),
        pair: pair.udp,
    })
    .unwrap();
    expect_drop(&pair, "unknown_device", || {
        move_to(&mut stranger, 1, 888.0);
    });

    // Truncated, oversized (both under and over the receive buffer) and garbage.
    let valid = owner
        .seal_raw(Kind::ObjectUpdate, &update_body(1, 999.0))
        .unwrap();
    expect_drop(&pair, "truncated", || send_raw(&valid[..20]));
    expect_drop(&pair, "truncated", || send_raw(&valid[..valid.len() - 1]));
    let mut big = valid.clone();
    big.resize(1500, 0);
    expect_drop(&pair, "oversized", || send_raw(&big));
    expect_drop(&pair, "oversized", || send_raw(&vec![0x5a; 9000]));
    expect_drop(&pair, "malformed", || send_raw(&[0xff; 64]));
    expect_drop(&pair, "truncated", || send_raw(&[]));

    // Authenticated but malformed body: dropped, and the sender is told.
    expect_drop(&pair, "truncated", || {
        owner.send(Kind::ObjectUpdate, &[1, 2, 3]).unwrap();
    });

    // The pair keeps serving.
    move_to(&mut owner, 1, 30.0);
    let tail = drain(&mut observer, Duration::from_millis(500));
    let xs: Vec<f32> = updates(&tail)
        .iter()
        .map(|r| r.fields.translation[0])
        .collect();
    assert_eq!(
        xs,
        vec![5.0, 20.0, 30.0],
        "the observer sees exactly the accepted updates"
    );
    assert!(pair.is_alive());
    intruder_events.extend(drain(&mut intruder, Duration::from_millis(100)));
    let intruder_saw: Vec<f32> = updates(&intruder_events)
        .iter()
        .map(|r| r.fields.translation[0])
        .collect();
    assert_eq!(intruder_saw, vec![1.0, 5.0, 20.0, 30.0]);
    assert_eq!(observer.dropped(), 0);
}
