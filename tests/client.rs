//! The device client against scripted servers on loopback: it follows a verified redirect and
//! re-joins at the new endpoint, and ignores forged or misaddressed datagrams.

use std::net::UdpSocket;
use std::time::Duration;

use zerocopy::IntoBytes;
use zonecast::client::{Device, Event, Session};
use zonecast::wire::{
    seal, Datagram, Direction, HeaderFields, Kind, RedirectBody, SessionKey, HEADER_LEN,
    MAX_DATAGRAM,
};

/// A server-to-device datagram of `kind` for `device`, sealed under `key`.
fn to_device(key: &SessionKey, device: u32, seq: u64, kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    buf[HEADER_LEN..HEADER_LEN + body.len()].copy_from_slice(body);
    let f = HeaderFields {
        kind,
        device,
        scene: 1,
        seq,
        timestamp_ns: 1,
    };
    let len = seal(&mut buf, &f, body.len(), key, Direction::ToDevice).unwrap();
    buf.truncate(len);
    buf
}

/// A scripted old pair, a scripted new pair (reads time out after 5 s) and device 4 of scene
/// 1 talking to the old one, with its key.
fn between_pairs() -> (UdpSocket, UdpSocket, SessionKey, Device) {
    let old = UdpSocket::bind("127.0.0.1:0").unwrap();
    let new = UdpSocket::bind("127.0.0.1:0").unwrap();
    new.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let key = SessionKey::random();
    let dev = Device::connect(Session {
        device: 4,
        scene: 1,
        key: key.clone(),
        pair: old.local_addr().unwrap(),
    })
    .unwrap();
    (old, new, key, dev)
}

#[test]
fn follows_a_verified_redirect_and_rejoins_there() {
    let (old, new, key, mut dev) = between_pairs();
    let me = dev.local_addr().unwrap();
    let body = RedirectBody::new(9, new.local_addr().unwrap());

    // Forged (wrong key) and misaddressed (another device) redirects are ignored.
    let forged = to_device(
        &SessionKey::random(),
        4,
        10,
        Kind::Redirect,
        body.as_bytes(),
    );
    let other = to_device(&key, 5, 11, Kind::Redirect, body.as_bytes());
    old.send_to(&forged, me).unwrap();
    old.send_to(&other, me).unwrap();
    assert_eq!(dev.recv(Duration::from_millis(200)).unwrap(), None);
    assert_eq!(dev.dropped(), 2);
    assert_eq!(dev.session().pair, old.local_addr().unwrap());

    let genuine = to_device(&key, 4, 12, Kind::Redirect, body.as_bytes());
    old.send_to(&genuine, me).unwrap();
    match dev.recv(Duration::from_secs(5)).unwrap() {
        Some(Event::Redirect { to, epoch }) => {
            assert_eq!((to, epoch), (new.local_addr().unwrap(), 9));
        }
        other => panic!("expected a redirect, got {other:?}"),
    }
    assert_eq!(dev.session().pair, new.local_addr().unwrap());
    // The client re-joined at the new endpoint, sealed under its key.
    let mut buf = [0u8; 2048];
    let (len, from) = new.recv_from(&mut buf).unwrap();
    assert_eq!(from, me);
    let dg = Datagram::parse(&buf[..len]).unwrap();
    dg.verify(&key, Direction::ToServer).unwrap();
    assert_eq!((dg.kind(), dg.device()), (Kind::Join, 4));

    assert_eq!(dev.epoch(), 9);

    // The same redirect replayed, or an older one, is dropped: epochs only move forward.
    old.send_to(&genuine, me).unwrap();
    let older = RedirectBody::new(8, old.local_addr().unwrap());
    let older = to_device(&key, 4, 13, Kind::Redirect, older.as_bytes());
    old.send_to(&older, me).unwrap();
    assert_eq!(dev.recv(Duration::from_millis(200)).unwrap(), None);
    assert_eq!(dev.dropped(), 4);
    assert_eq!(dev.session().pair, new.local_addr().unwrap());
}

/// A border hand-over: the pair the device is handed to reaches it first (numbering from its
/// own, later clock), then the old pair's redirect arrives numbered far below: it is followed
/// all the same (its epoch is newer), found by `zonecast up` under load.
#[test]
fn a_redirect_below_the_inbound_window_is_followed_when_its_epoch_is_newer() {
    let (old, new, key, mut dev) = between_pairs();
    dev.set_epoch(3);
    let me = dev.local_addr().unwrap();
    let ack = zonecast::wire::KeepaliveAckBody {
        echo_seq: 1.into(),
        echo_timestamp_ns: 1.into(),
    };
    let early = to_device(&key, 4, 1_000_000, Kind::KeepaliveAck, ack.as_bytes());
    new.send_to(&early, me).unwrap();
    assert!(matches!(
        dev.recv(Duration::from_secs(5)).unwrap(),
        Some(Event::KeepaliveAck { .. })
    ));
    // Anything else that far below the window is a replay.
    let stale = to_device(&key, 4, 499, Kind::KeepaliveAck, ack.as_bytes());
    old.send_to(&stale, me).unwrap();
    assert_eq!(dev.recv(Duration::from_millis(200)).unwrap(), None);
    assert_eq!(dev.dropped(), 1);
    let body = RedirectBody::new(4, new.local_addr().unwrap());
    old.send_to(
        &to_device(&key, 4, 500, Kind::Redirect, body.as_bytes()),
        me,
    )
    .unwrap();
    match dev.recv(Duration::from_secs(5)).unwrap() {
        Some(Event::Redirect { epoch: 4, .. }) => {}
        other => panic!("expected the redirect, got {other:?}"),
    }
    assert_eq!(dev.session().pair, new.local_addr().unwrap());
}
