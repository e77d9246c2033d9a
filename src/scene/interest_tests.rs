//! Interest tests with no sockets: what each device would receive is replayed from the engine's
//! events into a per-device view, which must always equal what its area contains.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::wire::interest::{Area, Shape};
use crate::wire::{
    seal, Fields, HeaderFields, ObjectBody, SnapshotHead, HEADER_LEN, MASK_ROTATION,
    MASK_TRANSLATION, MAX_DATAGRAM, SNAPSHOT_INCREMENTAL,
};

struct Dev {
    id: u32,
    key: SessionKey,
    addr: SocketAddr,
    seq: u64,
}

const SCENE: u32 = 1;

impl Dev {
    fn new(id: u32) -> Dev {
        Dev {
            id,
            key: SessionKey::new([id as u8; 32]),
            addr: format!("127.0.0.1:{}", 6000 + id).parse().unwrap(),
            seq: 10,
        }
    }

    fn dgram(&mut self, kind: Kind, body: &[u8]) -> Vec<u8> {
        self.seq += 1;
        let mut buf = vec![0u8; MAX_DATAGRAM];
        buf[HEADER_LEN..HEADER_LEN + body.len()].copy_from_slice(body);
        let f = HeaderFields {
            kind,
            device: self.id,
            scene: SCENE,
            seq: self.seq,
            timestamp_ns: self.seq * 1000,
        };
        let len = seal(&mut buf, &f, body.len(), &self.key, Direction::ToServer).unwrap();
        buf.truncate(len);
        buf
    }

    fn area_body(area: &Area) -> Vec<u8> {
        let mut b = vec![0u8; area.len()];
        area.emit(&mut b).unwrap();
        b
    }

    fn write(&mut self, object: u64, layer: u8, mask: u8, p: [f32; 3]) -> Vec<u8> {
        let f = Fields {
            translation: p,
            ..Fields::default()
        };
        let mut b = ObjectBody::new(object, mask, f, &[]);
        b.layer = layer;
        let mut out = vec![0u8; b.len()];
        b.emit(&mut out).unwrap();
        self.dgram(Kind::ObjectUpdate, &out)
    }
}

/// What one device holds: object -> position, as the datagrams it was sent say.
type View = BTreeMap<u64, [f32; 3]>;

struct World {
    engine: Engine,
    now: Instant,
    out: Batch,
    views: BTreeMap<u32, View>,
    areas: BTreeMap<u32, Area>,
    /// Devices that joined.
    joined: HashSet<u32>,
    /// Every event the engine emitted, in order (what a standby's stream carries).
    log: Vec<(Event, Vec<u8>)>,
    /// When set, each datagram to a device is lost with this chance (out of 100).
    loss: Option<(Rng, u64)>,
}

impl World {
    fn new(devs: &[&Dev], cell: f32) -> World {
        let config = Config {
            hash_seed: Some(7),
            interest_cell: [cell, cell, cell],
            ..Config::default()
        };
        World::with_config(devs, config)
    }

    fn with_config(devs: &[&Dev], config: Config) -> World {
        let mut w = World {
            engine: Engine::new(config),
            now: Instant::now(),
            out: Batch::default(),
            views: BTreeMap::new(),
            areas: BTreeMap::new(),
            joined: HashSet::new(),
            log: Vec::new(),
            loss: None,
        };
        for d in devs {
            w.engine
                .admit(w.now, d.id, SCENE, d.key.clone(), &mut w.out);
        }
        w.out.clear();
        w
    }

    fn feed(&mut self, dev: &Dev, bytes: &[u8]) {
        self.engine
            .handle(self.now, dev.addr, bytes, &mut self.out)
            .unwrap();
        self.deliver();
    }

    fn join(&mut self, dev: &mut Dev, area: Area) {
        let b = dev.dgram(Kind::Join, &Dev::area_body(&area));
        self.areas.insert(dev.id, area);
        self.joined.insert(dev.id);
        self.feed(dev, &b);
    }

    fn interest(&mut self, dev: &mut Dev, area: Area) {
        let b = dev.dgram(Kind::Interest, &Dev::area_body(&area));
        self.areas.insert(dev.id, area);
        self.feed(dev, &b);
    }

    fn anchor(&mut self, dev: &mut Dev, anchor: [f32; 3]) {
        let mut body = [0u8; 12];
        crate::wire::interest::emit_anchor(anchor, &mut body).unwrap();
        let b = dev.dgram(Kind::Keepalive, &body);
        self.areas.get_mut(&dev.id).unwrap().anchor = anchor;
        self.feed(dev, &b);
    }

    /// Plays the events as fanout would into each device's view.
    fn deliver(&mut self) {
        let events: Vec<(Event, Vec<u8>)> = self
            .out
            .iter()
            .map(|(e, d)| (e.clone(), d.to_vec()))
            .collect();
        self.out.clear();
        self.log.extend(events.iter().cloned());
        let apply = |view: &mut View, kind: Kind, body: &[u8]| {
            let b = ObjectBody::parse(body).unwrap();
            match kind {
                Kind::ObjectDelete | Kind::ObjectLeft => {
                    view.remove(&b.object);
                }
                _ => {
                    let p = view.entry(b.object).or_insert([f32::NAN; 3]);
                    if b.mask & MASK_TRANSLATION != 0 {
                        *p = b.fields.translation;
                    }
                }
            }
        };
        let lost = |loss: &mut Option<(Rng, u64)>| {
            loss.as_mut()
                .is_some_and(|(rng, pct)| rng.below(100) < *pct)
        };
        for (i, (e, data)) in events.iter().enumerate() {
            if matches!(e.kind, EventKind::Deliver(_) | EventKind::Direct(_))
                && lost(&mut self.loss)
            {
                // (A Deliver lists several devices; losing it loses it for all: harsher.)
                continue;
            }
            match e.kind {
                EventKind::Relay(kind) | EventKind::Proxy(kind) => {
                    let everyone: Vec<u32> = self
                        .joined
                        .iter()
                        .copied()
                        .filter(|d| self.areas[d].is_everything())
                        .collect();
                    for d in everyone {
                        apply(self.views.entry(d).or_default(), kind, data);
                    }
                    // The writer knows what it wrote (it is sent nothing of it); a proxy's
                    // writer is another pair's.
                    let local = matches!(e.kind, EventKind::Relay(_));
                    if local && !self.areas[&e.device].is_everything() {
                        apply(self.views.entry(e.device).or_default(), kind, data);
                    }
                }
                EventKind::Deliver(kind) => {
                    let (to, body) = parse_deliver(data).unwrap();
                    let body = if body.is_empty() {
                        assert!(
                            matches!(events[i - 1].0.kind, EventKind::Relay(k) | EventKind::Proxy(k) if k == kind),
                            "a delivery by reference follows its write"
                        );
                        &events[i - 1].1[..]
                    } else {
                        body
                    };
                    let object = ObjectBody::parse(body).unwrap().object;
                    let live = self.engine.object(SCENE, object).is_some();
                    match kind {
                        Kind::ObjectLeft => assert!(live, "left notice for deleted {object}"),
                        Kind::ObjectDelete => assert!(!live, "delete of live {object}"),
                        _ => {}
                    }
                    for d in to {
                        assert_ne!(d, e.device, "a writer is never sent its own write");
                        assert!(self.joined.contains(&d), "{d} is not joined");
                        apply(self.views.entry(d).or_default(), kind, body);
                    }
                }
                EventKind::Direct(Kind::ObjectLeft) => {
                    apply(
                        self.views.entry(e.device).or_default(),
                        Kind::ObjectLeft,
                        data,
                    );
                }
                EventKind::Direct(Kind::Snapshot) => {
                    let (head, records) = SnapshotHead::parse(data).unwrap();
                    let view = self.views.entry(e.device).or_default();
                    if head.flags.get() & SNAPSHOT_INCREMENTAL == 0 && head.chunk_index.get() == 0 {
                        view.clear();
                    }
                    for r in records {
                        let r = r.unwrap();
                        view.insert(r.object, r.fields.translation);
                    }
                }
                _ => {}
            }
        }
    }

    /// Every joined device's view holds exactly the objects its area contains, at their
    /// positions (objects it wrote last aside: it is not told about its own writes).
    fn check(&self, step: usize) {
        for d in &self.joined {
            let area = &self.areas[d];
            let view = self.views.get(d).cloned().unwrap_or_default();
            let scene = self.engine.scenes.get(&SCENE);
            for (id, o) in scene.iter().flat_map(|s| s.objects.iter()) {
                if o.writer == *d {
                    continue;
                }
                let inside = o.is_live() && area.contains(o.layer, o.fields.translation);
                let held = view.get(id);
                assert_eq!(
                    held.is_some(),
                    inside,
                    "step {step}: device {d} object {id} at {:?} inside {inside}, held {held:?}",
                    o.fields.translation
                );
                if let Some(p) = held {
                    assert_eq!(
                        *p, o.fields.translation,
                        "step {step}: device {d} object {id}"
                    );
                }
            }
            for id in view.keys() {
                let live = scene
                    .and_then(|s| s.objects.get(id))
                    .is_some_and(|o| o.is_live());
                assert!(
                    live,
                    "step {step}: device {d} holds object {id} that is gone"
                );
            }
        }
    }
}

#[test]
fn a_device_sees_what_its_sphere_holds_and_hears_when_it_leaves() {
    let (mut a, mut b, mut c) = (Dev::new(1), Dev::new(2), Dev::new(3));
    let mut w = World::new(&[&a, &b, &c], 10.0);
    w.join(&mut a, Area::sphere([0.0; 3], 5.0));
    w.join(&mut b, Area::EVERYTHING);
    w.join(&mut c, Area::sphere([100.0, 0.0, 0.0], 5.0));
    // c writes object 7 next to a: a and b get it, c (the writer) nothing.
    let m = c.write(7, 0, MASK_TRANSLATION, [3.0, 0.0, 0.0]);
    w.engine.handle(w.now, c.addr, &m, &mut w.out).unwrap();
    let kinds: Vec<EventKind> = w.out.iter().map(|(e, _)| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Relay(Kind::ObjectUpdate),
            EventKind::Deliver(Kind::ObjectOverwrite)
        ],
        "new to a: its full state"
    );
    w.deliver();
    w.check(0);
    assert_eq!(w.views[&1][&7], [3.0, 0.0, 0.0]);
    // Moving inside: a plain update by reference to the relay.
    let m = c.write(7, 0, MASK_TRANSLATION, [4.0, 0.0, 0.0]);
    w.engine.handle(w.now, c.addr, &m, &mut w.out).unwrap();
    let (e, data) = w.out.get(1).unwrap();
    assert_eq!(e.kind, EventKind::Deliver(Kind::ObjectUpdate));
    let (to, body) = parse_deliver(data).unwrap();
    assert_eq!((to.collect::<Vec<_>>(), body.len()), (vec![1], 0));
    w.deliver();
    // Moving out of a's sphere: a hears it left; b still sees it.
    let m = c.clone_write(7, [5.5, 0.0, 0.0]);
    w.feed(&c, &m);
    w.check(1);
    assert!(!w.views[&1].contains_key(&7) && w.views[&2].contains_key(&7));
    // A rotation-only update of an object outside a's area sends a nothing.
    let m = c.write(7, 0, MASK_ROTATION, [0.0; 3]);
    w.engine.handle(w.now, c.addr, &m, &mut w.out).unwrap();
    assert_eq!(w.out.len(), 1, "the relay alone");
    w.deliver();
    w.check(2);
}

impl Dev {
    fn clone_write(&mut self, object: u64, p: [f32; 3]) -> Vec<u8> {
        self.write(object, 0, MASK_TRANSLATION, p)
    }
}

#[test]
fn moving_the_anchor_brings_a_snapshot_of_what_entered_and_notices_of_what_left() {
    let (mut a, mut c) = (Dev::new(1), Dev::new(3));
    let mut w = World::new(&[&a, &c], 4.0);
    w.join(&mut c, Area::EVERYTHING);
    for i in 0..20u64 {
        let m = c.clone_write(i, [i as f32 * 10.0, 0.0, 0.0]);
        w.feed(&c, &m);
    }
    w.join(&mut a, Area::sphere([0.0; 3], 15.0));
    assert_eq!(w.views[&1].keys().copied().collect::<Vec<_>>(), vec![0, 1]);
    w.anchor(&mut a, [100.0, 0.0, 0.0]);
    assert_eq!(
        w.views[&1].keys().copied().collect::<Vec<_>>(),
        vec![9, 10, 11]
    );
    w.check(0);
    // A box on layer 0 and a sphere on layer 1.
    let mut area = Area::sphere([50.0, 0.0, 0.0], 0.0);
    area.layers[0] = Shape::Box([10.0, 1.0, 1.0]);
    area.layers[1] = Shape::Sphere(1000.0);
    w.interest(&mut a, area);
    assert_eq!(
        w.views[&1].keys().copied().collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
    let m = c.write(3, 1, MASK_TRANSLATION, [30.0, 0.0, 0.0]);
    w.feed(&c, &m);
    assert!(w.views[&1].contains_key(&3), "layer 1 reaches far");
    w.check(1);
    // Everything again: every object comes back, then a bounded area sends the rest away.
    w.interest(&mut a, Area::EVERYTHING);
    assert_eq!(w.views[&1].len(), 20);
    w.interest(&mut a, Area::sphere([0.0; 3], 1.0));
    assert_eq!(w.views[&1].keys().copied().collect::<Vec<_>>(), vec![0]);
    w.check(2);
}

/// A small deterministic generator (xorshift64*), so the walk replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn coord(&mut self) -> f32 {
        self.below(400) as f32 / 4.0 - 50.0
    }
}

#[test]
fn random_walks_keep_every_view_exact() {
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut devs: Vec<Dev> = (1..=6).map(Dev::new).collect();
        let refs: Vec<&Dev> = devs.iter().collect();
        let cell = [3.0, 8.0, 20.0][(seed % 3) as usize];
        let mut w = World::new(&refs, cell);
        let shape = |rng: &mut Rng| match rng.below(6) {
            0 => Shape::All,
            1 => Shape::None,
            2 => Shape::Box([rng.below(20) as f32, rng.below(20) as f32, 100.0]),
            _ => Shape::Sphere(rng.below(30) as f32),
        };
        for step in 0..300 {
            let d = rng.below(devs.len() as u64) as usize;
            let p = [rng.coord(), rng.coord(), 0.0];
            let joined = w.joined.contains(&devs[d].id);
            match rng.below(12) {
                _ if !joined => {
                    let mut area = Area::sphere(p, 0.0);
                    area.layers[0] = shape(&mut rng);
                    area.layers[1] = shape(&mut rng);
                    if rng.below(5) == 0 {
                        area = Area::EVERYTHING;
                    }
                    w.join(&mut devs[d], area);
                }
                0 => {
                    let mut area = w.areas[&devs[d].id];
                    area.layers[rng.below(2) as usize] = shape(&mut rng);
                    w.interest(&mut devs[d], area);
                }
                1 | 2 => w.anchor(&mut devs[d], p),
                3 => {
                    let object = rng.below(12);
                    let owner = w.engine.object(SCENE, object).and_then(|o| o.owner);
                    if owner.is_none_or(|o| o == devs[d].id) {
                        let m = devs[d].dgram(Kind::ObjectDelete, &{
                            let b = ObjectBody::new(object, 0, Fields::default(), &[]);
                            let mut v = vec![0u8; b.len()];
                            b.emit(&mut v).unwrap();
                            v
                        });
                        let _ = w.engine.handle(w.now, devs[d].addr, &m, &mut w.out);
                        w.deliver();
                    }
                }
                4 => {
                    let leave = devs[d].dgram(Kind::Leave, &[]);
                    w.feed(&devs[d], &leave);
                    w.joined.remove(&devs[d].id);
                    w.views.remove(&devs[d].id);
                }
                _ => {
                    let object = rng.below(12);
                    let layer = rng.below(2) as u8;
                    let m = devs[d].write(object, layer, MASK_TRANSLATION, p);
                    // Refused when another device owns it: nothing changes then.
                    let _ = w.engine.handle(w.now, devs[d].addr, &m, &mut w.out);
                    w.deliver();
                }
            }
            w.check(step);
        }
    }
}

/// The devices whose area holds each live object of `engine`'s scene, as its viewers list
/// must say (joined, bounded area).
fn assert_viewers_exact(engine: &Engine, areas: &BTreeMap<u32, Area>) {
    let scene = engine.scenes.get(&SCENE).expect("the scene");
    for (id, o) in scene.objects.iter().filter(|(_, o)| o.is_live()) {
        let expected: Vec<u32> = areas
            .iter()
            .filter(|(_, a)| !a.is_everything() && a.contains(o.layer, o.fields.translation))
            .map(|(d, _)| *d)
            .collect();
        assert_eq!(
            o.viewers, expected,
            "object {id} at {:?}",
            o.fields.translation
        );
    }
}

#[test]
fn a_standby_that_takes_the_scene_over_rebuilds_who_sees_what() {
    let (mut a, mut b, mut c) = (Dev::new(1), Dev::new(2), Dev::new(3));
    let mut w = World::new(&[&a, &b, &c], 8.0);
    w.join(&mut a, Area::sphere([0.0; 3], 12.0));
    w.join(&mut b, Area::sphere([50.0, 0.0, 0.0], 12.0));
    w.join(&mut c, Area::EVERYTHING);
    for i in 0..20u64 {
        let m = c.clone_write(i, [i as f32 * 5.0, 0.0, 0.0]);
        w.feed(&c, &m);
    }
    // The standby's mirror: a checkpoint now, then the live events that follow.
    let mut mirror = Engine::new(Config {
        hash_seed: Some(9),
        ..Config::default()
    });
    let mut cp = Batch::default();
    w.engine.checkpoint(&mut cp);
    for (e, d) in cp.iter() {
        assert!(mirror.mirror(w.now, e, d));
    }
    let from = w.log.len();
    w.anchor(&mut a, [20.0, 0.0, 0.0]);
    let m = c.clone_write(3, [48.0, 0.0, 0.0]);
    w.feed(&c, &m);
    for (e, d) in &w.log[from..] {
        assert!(mirror.mirror(w.now, e, d), "{:?}", e.kind);
    }
    assert_viewers_exact(&w.engine, &w.areas);
    let mut standby = Engine::new(Config {
        hash_seed: Some(11),
        interest_cell: [8.0; 3],
        ..Config::default()
    });
    let mut out = Batch::default();
    standby.adopt(&mut mirror, SCENE, w.now, None, &mut out);
    assert_viewers_exact(&standby, &w.areas);
    // The rebuilt index works: c moves object 3 from b's area into a's.
    out.clear();
    let m = c.clone_write(3, [21.0, 0.0, 0.0]);
    standby.handle(w.now, c.addr, &m, &mut out).unwrap();
    let delivered: Vec<(EventKind, Vec<u32>)> = out
        .iter()
        .filter(|(e, _)| matches!(e.kind, EventKind::Deliver(_)))
        .map(|(e, d)| (e.kind, parse_deliver(d).unwrap().0.collect()))
        .collect();
    assert_eq!(
        delivered,
        [
            (EventKind::Deliver(Kind::ObjectOverwrite), vec![1]),
            (EventKind::Deliver(Kind::ObjectLeft), vec![2]),
        ]
    );
}

#[test]
fn the_periodic_complete_view_repairs_what_was_lost() {
    let mut devs: Vec<Dev> = (1..=5).map(Dev::new).collect();
    let refs: Vec<&Dev> = devs.iter().collect();
    let config = Config {
        hash_seed: Some(7),
        interest_cell: [8.0; 3],
        quiet_after: Duration::from_secs(60),
        evict_after: Duration::from_secs(120),
        view_refresh: Some(Duration::from_secs(5)),
        ..Config::default()
    };
    let mut w = World::with_config(&refs, config);
    for (i, d) in devs.iter_mut().enumerate().take(4) {
        w.join(d, Area::sphere([i as f32 * 10.0, 0.0, 0.0], 12.0));
    }
    w.join(&mut devs[4], Area::EVERYTHING);
    // A third of the datagrams to devices are lost while objects walk about.
    w.loss = Some((Rng(42), 33));
    let mut rng = Rng(7);
    for _ in 0..300 {
        let object = rng.below(10);
        let m = devs[4].clone_write(object, [rng.coord().abs() / 1.5, 0.0, 0.0]);
        w.feed(&devs[4], &m);
    }
    let wrong =
        |w: &World| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.check(0))).is_err();
    assert!(wrong(&w), "with this much loss some view is wrong");
    // The next refresh, delivered, makes every view exact again.
    w.loss = None;
    w.now += Duration::from_secs(1);
    w.engine.tick(w.now, &mut w.out);
    w.deliver();
    w.now += Duration::from_secs(5);
    w.engine.tick(w.now, &mut w.out);
    let snapshots = w
        .out
        .iter()
        .filter(|(e, _)| e.kind == EventKind::Direct(Kind::Snapshot))
        .count();
    assert!(
        snapshots >= 4,
        "a complete view for each bounded device, got {snapshots}"
    );
    w.deliver();
    w.check(1);
}

#[test]
fn a_device_with_an_area_hears_of_a_departure_when_it_saw_the_leavers_objects() {
    let (mut a, mut b, mut c) = (Dev::new(1), Dev::new(2), Dev::new(3));
    let mut w = World::new(&[&a, &b, &c], 8.0);
    w.join(&mut a, Area::sphere([0.0; 3], 10.0));
    w.join(&mut b, Area::sphere([100.0, 0.0, 0.0], 10.0));
    w.join(&mut c, Area::sphere([0.0; 3], 1.0));
    let m = c.clone_write(7, [5.0, 0.0, 0.0]);
    w.feed(&c, &m);
    let leave = c.dgram(Kind::Leave, &[]);
    w.engine.handle(w.now, c.addr, &leave, &mut w.out).unwrap();
    let told: Vec<(EventKind, u32)> = w
        .out
        .iter()
        .filter(|(e, _)| e.kind != EventKind::Relay(Kind::ObjectUpdate))
        .map(|(e, _)| (e.kind, e.device))
        .collect();
    assert_eq!(
        told,
        [(EventKind::Left, 3), (EventKind::Direct(Kind::PeerLeft), 1),],
        "a saw object 7; b saw nothing of c's"
    );
}

#[cfg(test)]
mod proxy_tests;
#[cfg(test)]
mod zoning_tests;
