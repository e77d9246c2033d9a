//! Wire tests: a round trip for every kind, the documented worked example, and property tests
//! that parsing and verification never panic and that any changed byte breaks the tag.

use proptest::prelude::*;
use zerocopy::IntoBytes;

use super::bodies::{parse_exact, SNAPSHOT_HEAD_LEN};
use super::header::seal;
use super::*;

const KEY: [u8; 32] = [7; 32];

fn fields(kind: Kind, seq: u64) -> HeaderFields {
    HeaderFields {
        kind,
        device: 42,
        scene: 3,
        seq,
        timestamp_ns: 1_700_000_000_000_000_000,
    }
}

/// Seals `body` as a datagram of `kind` in `dir`.
fn datagram(kind: Kind, body: &[u8], dir: Direction) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    buf[HEADER_LEN..HEADER_LEN + body.len()].copy_from_slice(body);
    let len = seal(
        &mut buf,
        &fields(kind, 9),
        body.len(),
        &SessionKey::new(KEY),
        dir,
    )
    .unwrap();
    buf.truncate(len);
    buf
}

/// Parses and verifies, returning the body.
fn open(bytes: &[u8], dir: Direction) -> (Kind, Vec<u8>) {
    let dg = Datagram::parse(bytes).unwrap();
    dg.verify(&SessionKey::new(KEY), dir).unwrap();
    assert_eq!((dg.device(), dg.scene(), dg.seq()), (42, 3, 9));
    assert_eq!(dg.timestamp_ns(), 1_700_000_000_000_000_000);
    (dg.kind(), dg.body().to_vec())
}

fn sample_object(mask: u8, payload: &[u8]) -> Vec<u8> {
    let f = Fields {
        translation: [1.0, -2.5, 3.25],
        rotation: [0.0, 0.6, 0.0, 0.8],
        scale: [2.0, 2.0, 2.0],
    };
    let mut b = ObjectBody::new(77, mask, f, payload);
    b.origin_device = 5;
    b.origin_seq = 6;
    b.origin_timestamp_ns = 7;
    let mut out = vec![0u8; b.len()];
    assert_eq!(b.emit(&mut out).unwrap(), out.len());
    out
}

#[test]
fn round_trip_every_kind() {
    use Direction::*;
    let join = JoinBody {
        interest_radius: 12.5.into(),
        reserved: 0.into(),
    };
    let ack = KeepaliveAckBody {
        echo_seq: 11.into(),
        echo_timestamp_ns: 12.into(),
    };
    let redirect = RedirectBody::new(4, "[::1]:7300".parse().unwrap());
    let reject = RejectBody::new(RejectReason::NotOwner, 9, 77);
    let left = PeerLeftBody {
        device: 8.into(),
        reason: LEAVE_TIMED_OUT,
        reserved: [0; 3],
    };
    let mut snapshot = SnapshotHead {
        snapshot_id: 1.into(),
        chunk_index: 0.into(),
        chunk_count: 1.into(),
        object_count: 2.into(),
        flags: 0.into(),
    }
    .as_bytes()
    .to_vec();
    snapshot.extend(sample_object(MASK_ALL, b"hi"));
    snapshot.extend(sample_object(MASK_TRANSLATION, b""));
    let cases: Vec<(Kind, Direction, Vec<u8>)> = vec![
        (Kind::Join, ToServer, join.as_bytes().to_vec()),
        (Kind::Leave, ToServer, vec![]),
        (Kind::Keepalive, ToServer, vec![]),
        (Kind::KeepaliveAck, ToDevice, ack.as_bytes().to_vec()),
        (
            Kind::ObjectUpdate,
            ToServer,
            sample_object(MASK_TRANSLATION | MASK_PAYLOAD, b"x"),
        ),
        (
            Kind::ObjectUpdate,
            ToDevice,
            sample_object(MASK_ROTATION, b""),
        ),
        (
            Kind::ObjectOverwrite,
            ToServer,
            sample_object(MASK_ALL, &[1; MAX_PAYLOAD]),
        ),
        (Kind::ObjectDelete, ToDevice, sample_object(0, b"")),
        (Kind::Snapshot, ToDevice, snapshot),
        (Kind::Redirect, ToDevice, redirect.as_bytes().to_vec()),
        (Kind::Reject, ToDevice, reject.as_bytes().to_vec()),
        (Kind::PeerLeft, ToDevice, left.as_bytes().to_vec()),
    ];
    for (kind, dir, body) in cases {
        let bytes = datagram(kind, &body, dir);
        assert!(bytes.len() <= MAX_DATAGRAM);
        assert_eq!(open(&bytes, dir), (kind, body.clone()), "{kind:?}");
        let other = if dir == ToServer { ToDevice } else { ToServer };
        assert!(Datagram::parse(&bytes)
            .unwrap()
            .verify(&SessionKey::new(KEY), other)
            .is_err());
    }
    // Typed bodies decode back to what was encoded.
    let r = RedirectBody::new(4, "10.1.2.3:99".parse().unwrap());
    assert_eq!(
        parse_exact::<RedirectBody>(r.as_bytes())
            .unwrap()
            .endpoint()
            .unwrap()
            .to_string(),
        "10.1.2.3:99"
    );
    let full = sample_object(MASK_ALL, b"payload");
    let b = ObjectBody::parse(&full).unwrap();
    assert_eq!(
        (
            b.object,
            b.origin_device,
            b.origin_seq,
            b.origin_timestamp_ns
        ),
        (77, 5, 6, 7)
    );
    assert_eq!(b.fields.translation, [1.0, -2.5, 3.25]);
    assert_eq!(b.payload, b"payload");
    let scale_only = sample_object(MASK_SCALE, b"");
    let partial = ObjectBody::parse(&scale_only).unwrap();
    assert_eq!(partial.fields.translation, Fields::default().translation);
    assert_eq!(partial.fields.scale, [2.0; 3]);
}

#[test]
fn snapshot_records_iterate_and_reject_leftovers() {
    let mut body = SnapshotHead {
        snapshot_id: 1.into(),
        chunk_index: 0.into(),
        chunk_count: 1.into(),
        object_count: 1.into(),
        flags: 0.into(),
    }
    .as_bytes()
    .to_vec();
    assert_eq!(body.len(), SNAPSHOT_HEAD_LEN);
    body.extend(sample_object(MASK_ALL, b"a"));
    let (_, recs) = SnapshotHead::parse(&body).unwrap();
    assert_eq!(recs.filter(|r| r.is_ok()).count(), 1);
    body.push(0);
    let (_, recs) = SnapshotHead::parse(&body).unwrap();
    assert!(recs.last().unwrap().is_err());
}

#[test]
fn framing_errors_have_their_reasons() {
    let good = datagram(Kind::Keepalive, &[], Direction::ToServer);
    assert_eq!(
        Datagram::parse(&good[..20]).unwrap_err(),
        WireError::Truncated
    );
    assert_eq!(
        Datagram::parse(&[0u8; MAX_DATAGRAM + 1]).unwrap_err(),
        WireError::Oversized
    );
    let mut bad = good.clone();
    bad[0] = b'X';
    assert_eq!(Datagram::parse(&bad).unwrap_err(), WireError::Malformed);
    let mut bad = good.clone();
    bad[2] = 2;
    assert_eq!(Datagram::parse(&bad).unwrap_err(), WireError::Malformed);
    let mut bad = good.clone();
    bad[3] = 99;
    assert_eq!(Datagram::parse(&bad).unwrap_err(), WireError::Malformed);
    let mut longer = good.clone();
    longer.push(0);
    assert_eq!(Datagram::parse(&longer).unwrap_err(), WireError::Malformed);
    let mut forged = good.clone();
    *forged.last_mut().unwrap() ^= 1;
    let dg = Datagram::parse(&forged).unwrap();
    assert_eq!(
        dg.verify(&SessionKey::new(KEY), Direction::ToServer),
        Err(WireError::BadTag)
    );
    // Object bodies: unknown mask bit, payload without its bit, non-finite float.
    let mut body = sample_object(MASK_TRANSLATION, b"");
    body[12] = 0x10;
    assert_eq!(ObjectBody::parse(&body).unwrap_err(), WireError::Malformed);
    let mut body = sample_object(MASK_TRANSLATION, b"");
    body[32..36].copy_from_slice(&f32::NAN.to_le_bytes());
    assert_eq!(ObjectBody::parse(&body).unwrap_err(), WireError::Malformed);
    let body = sample_object(MASK_ALL, b"abc");
    assert_eq!(
        ObjectBody::parse(&body[..body.len() - 1]).unwrap_err(),
        WireError::Truncated
    );
}

/// The worked example of docs/PROTOCOL.md: if this changes, the document must change too.
#[test]
fn worked_example_matches_protocol_doc() {
    let key = SessionKey::new(core::array::from_fn(|i| i as u8));
    let body = ObjectBody::new(
        7,
        MASK_TRANSLATION,
        Fields {
            translation: [1.0, 2.0, 3.0],
            ..Fields::default()
        },
        &[],
    );
    let mut buf = [0u8; MAX_DATAGRAM];
    let body_len = body.emit(&mut buf[HEADER_LEN..]).unwrap();
    let f = HeaderFields {
        kind: Kind::ObjectUpdate,
        device: 1,
        scene: 1,
        seq: 1000,
        timestamp_ns: 1_700_000_000_000_000_000,
    };
    let len = seal(&mut buf, &f, body_len, &key, Direction::ToServer).unwrap();
    assert_eq!(
        nonce(1, Direction::ToServer, 1000),
        [1, 0, 0, 0, 0, 0xe8, 3, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        hex::encode(&buf[..len]),
        concat!(
            "5a4301050100000001000000e80300000000000000002a36fe9c97172c000000",
            "07000000000000000000000001000000000000000000000000000000000000000000803f0000004000004040",
            "f93a97b4eb596d391a461644a111eff3"
        )
    );
}

proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1400)) {
        if let Ok(dg) = Datagram::parse(&bytes) {
            let _ = dg.verify(&SessionKey::new(KEY), Direction::ToServer);
            let _ = ObjectBody::parse(dg.body());
            let _ = SnapshotHead::parse(dg.body()).map(|(_, r)| r.count());
        }
        let _ = ObjectBody::parse(&bytes);
        let _ = SnapshotHead::parse(&bytes).map(|(_, r)| r.count());
        let _ = parse_exact::<RedirectBody>(&bytes).map(|r| r.endpoint());
    }

    #[test]
    fn any_flipped_byte_fails(pos in 0usize..1000, flip in 1u8..=255, payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let body = sample_object(MASK_ALL, &payload);
        let mut bytes = datagram(Kind::ObjectUpdate, &body, Direction::ToServer);
        let pos = pos % bytes.len();
        bytes[pos] ^= flip;
        let ok = Datagram::parse(&bytes)
            .and_then(|dg| dg.verify(&SessionKey::new(KEY), Direction::ToServer))
            .is_ok();
        prop_assert!(!ok);
    }

    #[test]
    fn object_bodies_round_trip(mask in 0u8..16, payload in proptest::collection::vec(any::<u8>(), 0..MAX_PAYLOAD), t in any::<[i16; 3]>()) {
        let payload = if mask & MASK_PAYLOAD != 0 { &payload[..] } else { &[][..] };
        let mut f = Fields::default();
        if mask & MASK_TRANSLATION != 0 {
            f.translation = t.map(f32::from);
        }
        let b = ObjectBody::new(1, mask, f, payload);
        let mut out = vec![0u8; b.len()];
        b.emit(&mut out).unwrap();
        prop_assert_eq!(ObjectBody::parse(&out).unwrap(), b);
    }
}
