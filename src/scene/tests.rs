//! Scene rule tests with no sockets and a virtual clock: ownership, ordering, replay, eviction,
//! snapshots, and every drop reason.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::wire::{
    seal, Fields, HeaderFields, ObjectBody, SnapshotHead, HEADER_LEN, MASK_PAYLOAD,
    MASK_TRANSLATION, MAX_BODY, MAX_DATAGRAM, MAX_PAYLOAD,
};

/// A test device: its id, scene, key, address and next sequence number.
struct Dev {
    id: u32,
    scene: u32,
    key: SessionKey,
    addr: SocketAddr,
    seq: u64,
}

impl Dev {
    fn new(id: u32, scene: u32) -> Dev {
        Dev {
            id,
            scene,
            key: SessionKey::new([id as u8; 32]),
            addr: format!("127.0.0.1:{}", 5000 + id).parse().unwrap(),
            seq: 100,
        }
    }

    /// Seals `body` with an explicit sequence number and timestamp.
    fn raw(&self, kind: Kind, body: &[u8], seq: u64, ts: u64) -> Vec<u8> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        buf[HEADER_LEN..HEADER_LEN + body.len()].copy_from_slice(body);
        let f = HeaderFields {
            kind,
            device: self.id,
            scene: self.scene,
            seq,
            timestamp_ns: ts,
        };
        let len = seal(&mut buf, &f, body.len(), &self.key, Direction::ToServer).unwrap();
        buf.truncate(len);
        buf
    }

    fn dgram(&mut self, kind: Kind, body: &[u8]) -> Vec<u8> {
        self.seq += 1;
        self.raw(kind, body, self.seq, self.seq * 1000)
    }

    fn join(&mut self) -> Vec<u8> {
        self.dgram(Kind::Join, &[0; 8])
    }

    fn update(&mut self, object: u64, x: f32) -> Vec<u8> {
        let f = Fields {
            translation: [x, 0.0, 0.0],
            ..Fields::default()
        };
        self.dgram(Kind::ObjectUpdate, &body(object, MASK_TRANSLATION, f, &[]))
    }
}

fn body(object: u64, mask: u8, f: Fields, payload: &[u8]) -> Vec<u8> {
    let b = ObjectBody::new(object, mask, f, payload);
    let mut out = vec![0u8; b.len()];
    b.emit(&mut out).unwrap();
    out
}

struct World {
    engine: Engine,
    now: Instant,
    out: Batch,
}

impl World {
    fn new(devs: &[&Dev]) -> World {
        let mut w = World {
            engine: Engine::new(Config::default()),
            now: Instant::now(),
            out: Batch::default(),
        };
        for d in devs {
            w.engine
                .admit(w.now, d.id, d.scene, d.key.clone(), &mut w.out);
        }
        w.out.clear();
        w
    }

    fn feed(&mut self, from: &Dev, bytes: &[u8]) -> Result<(), DropReason> {
        self.engine
            .handle(self.now, from.addr, bytes, &mut self.out)
    }

    /// The kinds of the events produced since the last call.
    fn events(&mut self) -> Vec<(EventKind, u32)> {
        let v = self.out.iter().map(|(e, _)| (e.kind, e.device)).collect();
        self.out.clear();
        v
    }

    /// Joins `dev` (it must be accepted) and forgets the events that produced.
    fn join(&mut self, dev: &mut Dev) {
        let j = dev.join();
        self.feed(dev, &j).unwrap();
        self.out.clear();
    }

    fn x_of(&self, scene: u32, object: u64) -> Option<f32> {
        self.engine
            .object(scene, object)
            .map(|o| o.fields.translation[0])
    }
}

const REJECT: EventKind = EventKind::Direct(Kind::Reject);
const UPDATE: EventKind = EventKind::Relay(Kind::ObjectUpdate);

#[test]
fn join_answers_with_snapshot_and_keepalive_with_ack() {
    let mut a = Dev::new(1, 1);
    let mut w = World::new(&[&a]);
    let j = a.join();
    w.feed(&a, &j).unwrap();
    assert_eq!(
        w.events(),
        vec![
            (EventKind::Joined, 1),
            (EventKind::Direct(Kind::Snapshot), 1)
        ]
    );
    let k = a.dgram(Kind::Keepalive, &[]);
    w.feed(&a, &k).unwrap();
    assert_eq!(w.events(), vec![(EventKind::Direct(Kind::KeepaliveAck), 1)]);
    assert_eq!(w.engine.joined(), 1);
}

#[test]
fn a_keepalive_from_a_device_that_is_not_joined_is_told_to_join() {
    let mut a = Dev::new(1, 1);
    let mut w = World::new(&[&a]);
    let k = a.dgram(Kind::Keepalive, &[]);
    assert_eq!(w.feed(&a, &k), Err(DropReason::NotJoined));
    assert_eq!(w.events(), vec![(REJECT, 1)]);
    w.join(&mut a);
    // The pair forgets everything (fenced off), then the controller admits the session again.
    let mut out = Batch::default();
    w.engine.reset(&mut out);
    assert_eq!(
        out.iter().map(|(e, _)| e.kind).collect::<Vec<_>>(),
        vec![EventKind::Checkpoint, EventKind::Synced]
    );
    assert_eq!((w.engine.sessions(), w.engine.objects()), (0, 0));
    w.engine
        .admit(w.now, 1, 1, a.key.clone(), &mut Batch::default());
    let k = a.dgram(Kind::Keepalive, &[]);
    assert_eq!(w.feed(&a, &k), Err(DropReason::NotJoined));
}

#[test]
fn first_writer_owns_and_only_owner_writes() {
    let (mut a, mut b) = (Dev::new(1, 1), Dev::new(2, 1));
    let mut w = World::new(&[&a, &b]);
    w.join(&mut a);
    w.join(&mut b);
    let u = a.update(10, 1.0);
    w.feed(&a, &u).unwrap();
    assert_eq!(w.events(), vec![(UPDATE, 1)]);
    let forged_owner = b.update(10, 9.0);
    assert_eq!(w.feed(&b, &forged_owner), Err(DropReason::NotOwner));
    assert_eq!(w.events(), vec![(REJECT, 2)]);
    assert_eq!(w.x_of(1, 10), Some(1.0));
    // The relayed body names its origin.
    let u = a.update(10, 2.0);
    w.feed(&a, &u).unwrap();
    let (_, data) = w.out.iter().next().unwrap();
    let relayed = ObjectBody::parse(data).unwrap();
    assert_eq!((relayed.origin_device, relayed.origin_seq), (1, a.seq));
    assert_eq!(relayed.origin_timestamp_ns, a.seq * 1000);
}

#[test]
fn last_writer_wins_drops_late_updates_and_replays() {
    let mut a = Dev::new(1, 1);
    let mut w = World::new(&[&a]);
    let j = a.join();
    w.feed(&a, &j).unwrap();
    let b = body(5, MASK_TRANSLATION, Fields::default(), &[]);
    let newer = a.raw(Kind::ObjectUpdate, &b, 300, 3_000);
    let older = a.raw(Kind::ObjectUpdate, &b, 299, 2_000);
    w.feed(&a, &newer).unwrap();
    assert_eq!(w.feed(&a, &older), Err(DropReason::Stale));
    assert_eq!(w.feed(&a, &newer), Err(DropReason::Replay));
    // Far below the window: a replay too.
    let ancient = a.raw(Kind::ObjectUpdate, &b, 300 - REPLAY_WINDOW, 1);
    assert_eq!(w.feed(&a, &ancient), Err(DropReason::Replay));
    assert_eq!(w.engine.drops().get(DropReason::Stale), 1);
    assert_eq!(w.engine.drops().get(DropReason::Replay), 2);
}

#[test]
fn authentication_and_framing_drops() {
    let mut a = Dev::new(1, 1);
    let stranger = Dev::new(9, 1);
    let mut w = World::new(&[&a]);
    let mut forged = a.join();
    let n = forged.len();
    forged[n - 1] ^= 0x80;
    assert_eq!(w.feed(&a, &forged), Err(DropReason::BadTag));
    let j = stranger.raw(Kind::Join, &[0; 8], 1, 1);
    assert_eq!(w.feed(&stranger, &j), Err(DropReason::UnknownDevice));
    assert_eq!(w.feed(&a, &[0u8; 10]), Err(DropReason::Truncated));
    assert_eq!(
        w.feed(&a, &[0u8; MAX_DATAGRAM + 1]),
        Err(DropReason::Oversized)
    );
    assert_eq!(w.feed(&a, &[0u8; 60]), Err(DropReason::Malformed));
    // A server-to-device kind sent to the server.
    let wrong_way = a.dgram(Kind::Snapshot, &[]);
    assert_eq!(w.feed(&a, &wrong_way), Err(DropReason::Malformed));
    // None of these produced an event for anyone.
    assert!(w.events().is_empty());
    // Authenticated but not joined, or in the wrong scene: refused with a reject.
    let u = a.update(1, 1.0);
    assert_eq!(w.feed(&a, &u), Err(DropReason::NotJoined));
    assert_eq!(w.events(), vec![(REJECT, 1)]);
    a.scene = 2;
    let j = a.join();
    assert_eq!(w.feed(&a, &j), Err(DropReason::WrongScene));
    assert_eq!(w.events(), vec![(REJECT, 1)]);
    // Authenticated with a bad body.
    a.scene = 1;
    w.join(&mut a);
    let bad = a.dgram(Kind::ObjectUpdate, &[1, 2, 3]);
    assert_eq!(w.feed(&a, &bad), Err(DropReason::Truncated));
    assert_eq!(w.events(), vec![(REJECT, 1)]);
    assert_eq!(w.engine.accepted(), 1);
}

#[test]
fn delete_leaves_a_tombstone_that_expires() {
    let mut a = Dev::new(1, 1);
    let mut w = World::new(&[&a]);
    w.engine = Engine::new(Config {
        evict_after: Duration::from_secs(3600),
        ..Config::default()
    });
    w.engine.admit(w.now, 1, 1, a.key.clone(), &mut w.out);
    let j = a.join();
    w.feed(&a, &j).unwrap();
    let u = a.update(3, 1.0);
    let late = a.update(3, 2.0);
    w.feed(&a, &late).unwrap();
    let del = a.dgram(Kind::ObjectDelete, &body(3, 0, Fields::default(), &[]));
    w.feed(&a, &del).unwrap();
    assert_eq!(w.x_of(1, 3), None);
    // The reordered older update does not bring it back.
    assert_eq!(w.feed(&a, &u), Err(DropReason::Stale));
    let del2 = a.dgram(Kind::ObjectDelete, &body(3, 0, Fields::default(), &[]));
    assert_eq!(w.feed(&a, &del2), Err(DropReason::UnknownObject));
    assert_eq!(w.engine.objects(), 1);
    w.now += Config::default().tombstone_ttl;
    w.engine.tick(w.now, &mut w.out);
    assert_eq!(w.engine.objects(), 0);
    // A newer write recreates it.
    let again = a.update(3, 4.0);
    w.feed(&a, &again).unwrap();
    assert_eq!(w.x_of(1, 3), Some(4.0));
}

#[test]
fn silent_devices_are_evicted_at_the_window_edge_and_release_objects() {
    let (mut a, mut b) = (Dev::new(1, 1), Dev::new(2, 1));
    let mut w = World::new(&[&a, &b]);
    w.join(&mut a);
    w.join(&mut b);
    let u = a.update(7, 1.0);
    w.feed(&a, &u).unwrap();
    w.events();
    let start = w.now;
    let evict = Config::default().evict_after;
    // b keeps talking, a goes silent.
    w.now = start + evict - Duration::from_millis(1);
    let k = b.dgram(Kind::Keepalive, &[]);
    w.feed(&b, &k).unwrap();
    w.engine.tick(w.now, &mut w.out);
    // Long silent already: paused (no fanout) before it is evicted.
    assert_eq!(
        w.events(),
        vec![
            (EventKind::Direct(Kind::KeepaliveAck), 2),
            (EventKind::Paused, 1)
        ]
    );
    w.now = start + evict;
    w.engine.tick(w.now, &mut w.out);
    let evs: Vec<_> = w
        .out
        .iter()
        .map(|(e, d)| (e.kind, e.device, d.to_vec()))
        .collect();
    assert_eq!(evs, vec![(EventKind::Left, 1, vec![LEAVE_TIMED_OUT])]);
    w.out.clear();
    assert_eq!(w.engine.joined(), 1);
    // The object stays and b may claim it.
    let claim = b.update(7, 5.0);
    w.feed(&b, &claim).unwrap();
    assert_eq!(w.x_of(1, 7), Some(5.0));
    assert_eq!(w.engine.object(1, 7).unwrap().owner, Some(2));
}

#[test]
fn leave_is_announced_and_roaming_is_followed() {
    let mut a = Dev::new(1, 1);
    let mut w = World::new(&[&a]);
    w.join(&mut a);
    a.addr = "127.0.0.1:6001".parse().unwrap();
    let k = a.dgram(Kind::Keepalive, &[]);
    w.feed(&a, &k).unwrap();
    assert_eq!(w.events()[0], (EventKind::Moved, 1));
    let l = a.dgram(Kind::Leave, &[]);
    w.feed(&a, &l).unwrap();
    assert_eq!(w.events(), vec![(EventKind::Left, 1)]);
    assert_eq!(w.engine.joined(), 0);
}

#[test]
fn late_joiner_snapshot_holds_every_object_in_chunks() {
    let (mut a, mut b) = (Dev::new(1, 1), Dev::new(2, 1));
    let mut w = World::new(&[&a, &b]);
    let j = a.join();
    w.feed(&a, &j).unwrap();
    let payload = vec![0xAB; MAX_PAYLOAD];
    for object in 0..5u64 {
        let f = Fields {
            translation: [object as f32, 0.0, 0.0],
            ..Fields::default()
        };
        let d = a.dgram(
            Kind::ObjectOverwrite,
            &body(object, MASK_TRANSLATION | MASK_PAYLOAD, f, &payload),
        );
        w.feed(&a, &d).unwrap();
    }
    for object in 5..40u64 {
        let u = a.update(object, object as f32);
        w.feed(&a, &u).unwrap();
    }
    w.events();
    let j = b.join();
    w.feed(&b, &j).unwrap();
    let mut seen = Vec::new();
    let mut chunks = 0;
    for (e, data) in w.out.iter() {
        if e.kind != EventKind::Direct(Kind::Snapshot) {
            continue;
        }
        assert!(data.len() <= MAX_BODY);
        chunks += 1;
        let (head, recs) = SnapshotHead::parse(data).unwrap();
        assert_eq!(head.chunk_index.get(), chunks - 1);
        for r in recs {
            let r = r.unwrap();
            assert_eq!(r.fields.translation[0], r.object as f32);
            assert_eq!(r.origin_device, 1);
            seen.push(r.object);
        }
    }
    let (head, _) = SnapshotHead::parse(w.out.iter().last().unwrap().1).unwrap();
    assert_eq!(head.chunk_count.get(), chunks);
    assert!(
        chunks >= 5,
        "five 1 KiB payloads need five chunks, got {chunks}"
    );
    seen.sort();
    assert_eq!(seen, (0..40).collect::<Vec<_>>());
}

#[test]
fn scene_full_is_refused() {
    let mut a = Dev::new(1, 1);
    let mut w = World {
        engine: Engine::new(Config {
            max_objects_per_scene: 2,
            ..Config::default()
        }),
        now: Instant::now(),
        out: Batch::default(),
    };
    w.engine.admit(w.now, 1, 1, a.key.clone(), &mut w.out);
    let j = a.join();
    w.feed(&a, &j).unwrap();
    for o in 0..2 {
        let u = a.update(o, 0.0);
        w.feed(&a, &u).unwrap();
    }
    let u = a.update(2, 0.0);
    assert_eq!(w.feed(&a, &u), Err(DropReason::SceneFull));
    let u = a.update(1, 3.0);
    w.feed(&a, &u).unwrap();
}

#[test]
fn readmission_with_a_new_key_starts_over() {
    let mut a = Dev::new(1, 1);
    let mut w = World::new(&[&a]);
    w.join(&mut a);
    let same_key = a.key.clone();
    w.engine.admit(w.now, 1, 1, same_key, &mut w.out);
    assert!(w.events().is_empty(), "same session: nothing changes");
    a.key = SessionKey::new([0xEE; 32]);
    w.engine.admit(w.now, 1, 1, a.key.clone(), &mut w.out);
    assert_eq!(
        w.events(),
        vec![
            (EventKind::Left, 1),
            (EventKind::Revoked, 1),
            (EventKind::Admitted, 1)
        ]
    );
    let u = a.update(1, 1.0);
    assert_eq!(w.feed(&a, &u), Err(DropReason::NotJoined));
}

#[test]
fn a_quiet_device_is_paused_and_resumed_with_a_fresh_snapshot() {
    let (mut a, mut b) = (Dev::new(1, 1), Dev::new(2, 1));
    let mut w = World::new(&[&a, &b]);
    w.join(&mut a);
    w.join(&mut b);
    let start = w.now;
    let quiet = Config::default().quiet_after;
    w.now = start + quiet - Duration::from_millis(1);
    let k = a.dgram(Kind::Keepalive, &[]);
    w.feed(&a, &k).unwrap();
    w.engine.tick(w.now, &mut w.out);
    w.events();
    w.now = start + quiet;
    w.engine.tick(w.now, &mut w.out);
    assert_eq!(
        w.events(),
        vec![(EventKind::Paused, 2)],
        "b was silent, a was not"
    );
    w.engine.tick(w.now, &mut w.out);
    assert!(w.events().is_empty(), "paused once");
    let k = b.dgram(Kind::Keepalive, &[]);
    w.feed(&b, &k).unwrap();
    assert_eq!(
        w.events(),
        vec![
            (EventKind::Resumed, 2),
            (EventKind::Direct(Kind::Snapshot), 2),
            (EventKind::Direct(Kind::KeepaliveAck), 2)
        ]
    );
    // Paused again, then heard through a Join: one snapshot, not two.
    w.now += quiet;
    w.engine.tick(w.now, &mut w.out);
    w.events();
    let j = b.join();
    w.feed(&b, &j).unwrap();
    assert_eq!(
        w.events(),
        vec![
            (EventKind::Resumed, 2),
            (EventKind::Direct(Kind::Snapshot), 2)
        ]
    );
}

/// Replays every event of `w.out` into `mirror` (what a standby does with the bus), then
/// clears it.
fn replicate(w: &mut World, mirror: &mut Engine) {
    for (e, data) in w.out.iter() {
        assert!(mirror.mirror(w.now, e, data), "{:?} refused", e.kind);
    }
    w.out.clear();
}

/// One object as compared between a primary and its mirror:
/// (id, owner, writer, order, x, payload, live).
type ObjectView = (u64, Option<u32>, u32, Order, f32, Vec<u8>, bool);

/// Objects of `scene`, sorted.
fn objects_of(engine: &Engine, scene: u32) -> Vec<ObjectView> {
    let mut v: Vec<_> = engine.scenes[&scene]
        .objects
        .iter()
        .map(|(id, o)| {
            let x = o.fields.translation[0];
            (
                *id,
                o.owner,
                o.writer,
                o.order,
                x,
                o.payload.clone(),
                o.is_live(),
            )
        })
        .collect();
    v.sort_by_key(|o| o.0);
    v
}

#[test]
fn a_mirror_fed_a_checkpoint_then_events_holds_the_primary_state() {
    let (mut a, mut b) = (Dev::new(1, 1), Dev::new(2, 1));
    let mut w = World::new(&[&a, &b]);
    w.join(&mut a);
    w.join(&mut b);
    for i in 0..5 {
        let u = a.update(10 + i, i as f32);
        w.feed(&a, &u).unwrap();
    }
    let del = a.dgram(Kind::ObjectDelete, &body(12, 0, Fields::default(), &[]));
    w.feed(&a, &del).unwrap();
    w.out.clear();
    // The standby connects: checkpoint, then live traffic.
    let mut mirror = Engine::new(Config::default());
    w.engine.checkpoint(&mut w.out);
    replicate(&mut w, &mut mirror);
    let u = b.update(20, 7.0);
    w.feed(&b, &u).unwrap();
    let k = a.dgram(Kind::Keepalive, &[]);
    w.feed(&a, &k).unwrap();
    let u = a.update(10, 9.5);
    w.feed(&a, &u).unwrap();
    let l = b.dgram(Kind::Leave, &[]);
    w.feed(&b, &l).unwrap();
    replicate(&mut w, &mut mirror);

    assert_eq!(objects_of(&mirror, 1), objects_of(&w.engine, 1));
    assert_eq!(
        objects_of(&mirror, 1).iter().filter(|o| !o.6).count(),
        1,
        "tombstone kept"
    );
    for id in [1, 2] {
        let (p, m) = (w.engine.device(id).unwrap(), mirror.device(id).unwrap());
        assert_eq!(
            (m.joined, m.addr, m.replay.top()),
            (p.joined, p.addr, p.replay.top())
        );
        assert_eq!(m.replay.seen(), p.replay.seen());
    }
    assert_eq!(mirror.joined(), 1);

    // Failover: a fresh serving engine adopts the scene from the mirror.
    let held = objects_of(&mirror, 1).len();
    let mut standby = World::new(&[]);
    let to: SocketAddr = "127.0.0.1:7300".parse().unwrap();
    standby.engine.adopt(
        &mut mirror,
        1,
        standby.now,
        Some((to, 42)),
        &mut standby.out,
    );
    let mut events = standby.events();
    // Its objects go downstream too (tombstones included), for this pair's own standbys.
    let objects = events.iter().filter(|e| e.0 == EventKind::Object).count();
    assert_eq!(objects, held);
    events.retain(|e| e.0 != EventKind::Object);
    events.sort_by_key(|e| (e.1, e.0 != EventKind::Session));
    let redirect = EventKind::Direct(Kind::Redirect);
    let want = [
        (EventKind::Session, 1),
        (redirect, 1),
        (EventKind::Session, 2),
        (redirect, 2),
    ];
    assert_eq!(events, want);
    assert_eq!(mirror.sessions(), 0);
    assert_eq!(standby.x_of(1, 10), Some(9.5));
    // A replay of a datagram the primary accepted is refused; the owner's next write counts,
    // another device still may not write the owner's object.
    assert_eq!(standby.feed(&a, &u), Err(DropReason::Replay));
    assert_eq!(standby.feed(&a, &k), Err(DropReason::Replay));
    let next = a.update(10, 11.0);
    standby.feed(&a, &next).unwrap();
    assert_eq!(standby.x_of(1, 10), Some(11.0));
    let j = b.join();
    standby.feed(&b, &j).unwrap();
    let steal = b.update(10, 0.0);
    assert_eq!(standby.feed(&b, &steal), Err(DropReason::NotOwner));
    // A late update (older clock) to the deleted object is refused: the tombstone moved too.
    a.seq += 1;
    let late = a.raw(
        Kind::ObjectUpdate,
        &body(12, MASK_TRANSLATION, Fields::default(), &[]),
        a.seq,
        1,
    );
    assert_eq!(
        standby.feed(&a, &late),
        Err(DropReason::Stale),
        "tombstone survives"
    );
}

#[test]
fn a_handed_over_scene_forwards_its_devices_and_redirects_them_at_a_bounded_rate() {
    let (mut a, b) = (Dev::new(1, 1), Dev::new(2, 2));
    let mut w = World::new(&[&a, &b]);
    w.join(&mut a);
    let to: SocketAddr = "127.0.0.1:7300".parse().unwrap();
    w.engine.handover(1, to, 9, &mut w.out);
    assert_eq!(
        w.events(),
        vec![
            (EventKind::Handover, 0),
            (EventKind::Direct(Kind::Redirect), 1)
        ],
        "the new pair is told in stream order; the joined device at once"
    );
    assert!(
        w.engine.device(2).unwrap().forward.is_none(),
        "other scenes stay"
    );
    let u = a.update(1, 1.0);
    w.feed(&a, &u).unwrap();
    assert_eq!(
        w.events(),
        vec![
            (EventKind::Forwarded, 1),
            (EventKind::Direct(Kind::Redirect), 1)
        ]
    );
    assert!(w.engine.object(1, 1).is_none(), "not applied here");
    let u2 = a.update(1, 2.0);
    w.feed(&a, &u2).unwrap();
    assert_eq!(
        w.events(),
        vec![(EventKind::Forwarded, 1)],
        "redirect not repeated at once"
    );
    assert_eq!(
        w.feed(&a, &u2),
        Err(DropReason::Replay),
        "forwarded datagrams are replay-checked"
    );
    w.now += Duration::from_millis(25);
    let u3 = a.update(1, 3.0);
    w.feed(&a, &u3).unwrap();
    assert_eq!(w.events().len(), 2);
    // A checkpoint taken now (a mirror reconnecting) leaves the handed-over scene out.
    w.engine.checkpoint(&mut w.out);
    let scenes: Vec<u32> = w
        .out
        .iter()
        .map(|(e, _)| e.scene)
        .filter(|s| *s != 0)
        .collect();
    w.out.clear();
    assert_eq!(scenes, vec![2], "only the other scene's session");
    // Silence is the new pair's business: no pause, no eviction here.
    w.now += Duration::from_secs(60);
    w.engine.tick(w.now, &mut w.out);
    assert_eq!(w.events(), vec![]);
}

#[test]
fn a_mirror_refuses_events_that_do_not_fit_its_state() {
    let mut mirror = Engine::new(Config::default());
    let now = Instant::now();
    let mut b = Batch::default();
    b.push(EventKind::Session, 1, 1, None, &[0; 3]);
    b.push(EventKind::Object, 1, 0, None, &[1, 0, 0]);
    b.push(EventKind::Joined, 1, 77, None, &[]);
    b.push(EventKind::Relay(Kind::ObjectUpdate), 1, 77, None, &[0; 4]);
    b.push(EventKind::Admitted, 1, 1, None, &[0; 5]);
    for (e, data) in b.iter() {
        assert!(!mirror.mirror(now, e, data), "{:?} accepted", e.kind);
    }
    assert_eq!(mirror.sessions(), 0);
    assert_eq!(mirror.objects(), 0);
}

#[test]
fn a_dropped_scene_takes_its_sessions_and_objects_and_mirrors_follow() {
    let (mut a, mut b) = (Dev::new(1, 1), Dev::new(2, 2));
    let mut w = World::new(&[&a, &b]);
    w.join(&mut a);
    w.join(&mut b);
    let u = a.update(10, 1.0);
    w.feed(&a, &u).unwrap();
    let u = b.update(20, 1.0);
    w.feed(&b, &u).unwrap();
    w.out.clear();
    let mut mirror = Engine::new(Config::default());
    w.engine.checkpoint(&mut w.out);
    replicate(&mut w, &mut mirror);
    w.engine.drop_scene(1, &mut w.out);
    let kinds: Vec<EventKind> = w.out.iter().map(|(e, _)| e.kind).collect();
    assert!(kinds.contains(&EventKind::Revoked) && kinds.contains(&EventKind::Checkpoint));
    replicate(&mut w, &mut mirror);
    for e in [&w.engine, &mirror] {
        assert!(
            e.device(1).is_none() && e.object(1, 10).is_none(),
            "scene 1 gone"
        );
        assert!(
            e.device(2).is_some() && e.object(2, 20).is_some(),
            "scene 2 kept"
        );
    }
    // Nothing to drop: nothing happens.
    w.engine.drop_scene(1, &mut w.out);
    assert!(w.out.is_empty());
}

#[test]
fn a_device_arriving_from_a_drained_pair_has_its_datagrams_put_back_in_order() {
    let (mut a, mut b) = (Dev::new(1, 1), Dev::new(2, 1));
    let mut old = World::new(&[&a, &b]);
    old.join(&mut a);
    old.join(&mut b);
    let u = a.update(10, 1.0);
    old.feed(&a, &u).unwrap();
    old.out.clear();
    let mut mirror = Engine::new(Config::default());
    old.engine.checkpoint(&mut old.out);
    replicate(&mut old, &mut mirror);
    let mut new = World::new(&[]);
    let to: SocketAddr = "127.0.0.1:7300".parse().unwrap();
    new.engine
        .adopt_handover(&mut mirror, 1, new.now, Some((to, 9)), &mut new.out);
    new.out.clear();

    // a sent u2 to the old pair (forwarded later), then u3 here directly: u3 waits for u2.
    let (u2, u3) = (a.update(10, 2.0), a.update(10, 3.0));
    new.feed(&a, &u3).unwrap();
    assert_eq!(new.x_of(1, 10), Some(1.0), "u3 waits");
    assert_eq!(new.events(), vec![]);
    new.engine
        .handle_forwarded(new.now, a.addr, &u2, &mut new.out)
        .unwrap();
    let relayed: Vec<f32> = new
        .out
        .iter()
        .filter(|(e, _)| e.kind == UPDATE)
        .map(|(_, d)| ObjectBody::parse(d).unwrap().fields.translation[0])
        .collect();
    assert_eq!(relayed, [2.0, 3.0], "in the order a sent them");
    assert_eq!(new.engine.drops().get(DropReason::Stale), 0);
    assert_eq!(new.engine.accepted(), 2);
    assert_eq!(new.engine.reordered(), (1, 0));
    assert!(new.engine.device(1).unwrap().arrival.is_none(), "arrived");
    // Arrived: a later gap (a lost datagram) is no reason to wait.
    a.seq += 1;
    let u5 = a.update(10, 5.0);
    new.feed(&a, &u5).unwrap();
    assert_eq!(new.x_of(1, 10), Some(5.0));

    // b's datagram before its direct one was lost on the way to the old pair: the direct one
    // waits GAP_WAIT, then is taken.
    b.seq += 1;
    let k = b.dgram(Kind::Keepalive, &[]);
    new.feed(&b, &k).unwrap();
    new.out.clear();
    new.now += GAP_WAIT / 2;
    new.engine.tick(new.now, &mut new.out);
    assert_eq!(new.events(), vec![]);
    new.now += GAP_WAIT;
    new.engine.tick(new.now, &mut new.out);
    assert_eq!(
        new.events(),
        vec![(EventKind::Direct(Kind::KeepaliveAck), 2)]
    );
    assert!(new.engine.device(2).unwrap().arrival.is_none());
    assert_eq!(new.engine.reordered(), (1, 1));
}
