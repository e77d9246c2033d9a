//! Proxies across pairs with no sockets: pair A's engine serves the writers, pair B's engine
//! follows A's event stream (what the region bus carries) and B's devices' views, replayed
//! from B's events, must always equal what their areas contain of A's objects.

use super::*;
use crate::scene::proxy::PROXY_GRACE;

const A: u32 = 1;

/// Feeds A's new events into B as B's follower of A would (every scene shared).
fn pipe(a: &mut World, b: &mut World) {
    for (e, data) in std::mem::take(&mut a.log) {
        // A proxy of an id a local object holds is refused (see the conflict below).
        match b
            .engine
            .follow(b.now, 2, A, &e, &data, |_| true, &mut b.out)
        {
            Ok(()) | Err(DropReason::NotOwner) => {}
            Err(r) => panic!("{e:?}: {r:?}"),
        }
    }
    b.deliver();
}

/// A's checkpoint, as a new follower gets it.
fn checkpoint(a: &mut World) {
    a.engine.checkpoint(&mut a.out);
    let events: Vec<(Event, Vec<u8>)> =
        a.out.iter().map(|(e, d)| (e.clone(), d.to_vec())).collect();
    a.out.clear();
    a.log.extend(events);
}

#[test]
fn a_follower_shows_another_pairs_objects_by_interest_and_drops_what_a_new_checkpoint_lacks() {
    let mut w1 = Dev::new(1);
    let (mut near, mut all, mut far, mut local) =
        (Dev::new(2), Dev::new(3), Dev::new(4), Dev::new(5));
    let mut a = World::new(&[&w1], 10.0);
    let mut b = World::new(&[&near, &all, &far, &local], 10.0);
    a.join(&mut w1, Area::EVERYTHING);
    b.join(&mut near, Area::sphere([0.0; 3], 20.0));
    b.join(&mut all, Area::EVERYTHING);
    b.join(&mut far, Area::sphere([500.0, 0.0, 0.0], 20.0));
    b.join(&mut local, Area::EVERYTHING);
    a.log.clear();
    // Objects A had before B followed come with the checkpoint.
    {
        let m = w1.clone_write(10, [5.0, 0.0, 0.0]);
        a.feed(&w1, &m);
    }
    {
        let m = w1.clone_write(11, [300.0, 0.0, 0.0]);
        a.feed(&w1, &m);
    }
    a.log.clear();
    checkpoint(&mut a);
    pipe(&mut a, &mut b);
    b.check(0);
    assert!(b.views[&2].contains_key(&10) && !b.views[&2].contains_key(&11));
    assert!(b.views[&3].contains_key(&11), "everything-devices see all");
    assert!(!b.views.get(&4).is_some_and(|v| v.contains_key(&10)));
    assert_eq!(b.engine.proxies(), 2);
    // A random walk of A's objects, B's near device and deletions: B's views stay exact.
    let mut rng = Rng(99);
    for step in 1..400 {
        let id = 10 + rng.below(6);
        match rng.below(10) {
            0 => {
                if a.engine.object(SCENE, id).is_some() {
                    let del = ObjectBody::new(id, 0, Fields::default(), &[]);
                    let mut body = vec![0u8; del.len()];
                    del.emit(&mut body).unwrap();
                    let m = w1.dgram(Kind::ObjectDelete, &body);
                    a.feed(&w1, &m);
                }
            }
            1 => {
                let p = [rng.coord(), 0.0, rng.coord()];
                b.anchor(&mut near, p);
            }
            _ => {
                let p = [rng.coord(), 0.0, rng.coord()];
                {
                    let m = w1.clone_write(id, p);
                    a.feed(&w1, &m);
                }
            }
        }
        pipe(&mut a, &mut b);
        b.check(step);
    }
    // B's devices cannot write A's objects: a live proxy is not theirs.
    let target = (10..16)
        .find(|id| b.engine.object(SCENE, *id).is_some())
        .expect("a live proxy");
    let m = local.clone_write(target, [1.0, 0.0, 1.0]);
    assert_eq!(
        b.engine.handle(b.now, local.addr, &m, &mut b.out),
        Err(DropReason::NotOwner)
    );
    b.out.clear();
    // A local object wins over a proxy of the same id (and the conflict is a counted drop).
    {
        let m = local.clone_write(99, [2.0, 0.0, 2.0]);
        b.feed(&local, &m);
    }
    {
        let m = w1.clone_write(99, [3.0, 0.0, 3.0]);
        a.feed(&w1, &m);
    }
    let relay = a
        .log
        .iter()
        .rev()
        .find(|(e, _)| matches!(e.kind, EventKind::Relay(_)));
    let (e, data) = relay.cloned().unwrap();
    a.log.clear();
    assert_eq!(
        b.engine
            .follow(b.now, 2, A, &e, &data, |_| true, &mut b.out),
        Err(DropReason::NotOwner)
    );
    assert_eq!(b.engine.object(SCENE, 99).unwrap().proxy, None);
    // B misses A's stream for a while (it broke): objects deleted meanwhile go when the next
    // checkpoint does not list them; the others stay without a word to anyone.
    let live: Vec<u64> = (10..16)
        .filter(|id| a.engine.object(SCENE, *id).is_some())
        .collect();
    let gone = live[0];
    let del = ObjectBody::new(gone, 0, Fields::default(), &[]);
    let mut body = vec![0u8; del.len()];
    del.emit(&mut body).unwrap();
    let m = w1.dgram(Kind::ObjectDelete, &body);
    a.feed(&w1, &m);
    a.log.clear();
    checkpoint(&mut a);
    pipe(&mut a, &mut b);
    b.check(1000);
    assert!(b.engine.object(SCENE, gone).is_none());
    assert_eq!(b.engine.proxies(), live.len() - 1);
    // B stops following A (A's zones failed over to a pair B has not heard yet): the proxies
    // wait out the grace, then go, and every device that saw one is told.
    b.engine.proxy_unfollow(b.now, A);
    b.engine.tick(b.now + PROXY_GRACE / 2, &mut b.out);
    b.deliver();
    assert_eq!(b.engine.proxies(), live.len() - 1, "kept within the grace");
    b.engine.tick(b.now + PROXY_GRACE, &mut b.out);
    b.deliver();
    assert_eq!(b.engine.proxies(), 0);
    b.check(1001);
    assert!(b.views[&3].keys().all(|id| *id == 99), "{:?}", b.views[&3]);
}

#[test]
fn adopting_a_mirror_into_a_scene_served_in_part_replaces_its_proxies() {
    let mut w1 = Dev::new(1);
    let (mut near, mut local) = (Dev::new(2), Dev::new(5));
    let mut a = World::new(&[&w1], 10.0);
    let mut b = World::new(&[&near, &local], 10.0);
    a.join(&mut w1, Area::EVERYTHING);
    b.join(&mut near, Area::sphere([0.0; 3], 50.0));
    b.join(&mut local, Area::EVERYTHING);
    {
        let m = local.clone_write(50, [1.0, 0.0, 1.0]);
        b.feed(&local, &m);
    }
    a.log.clear();
    checkpoint(&mut a);
    {
        let m = w1.clone_write(10, [5.0, 0.0, 0.0]);
        a.feed(&w1, &m);
    }
    // B is also A's standby: its mirror of A gets the same stream.
    let mut mirror = Engine::new(Config::default());
    for (e, data) in &a.log {
        assert!(mirror.mirror(a.now, e, data), "{e:?}");
    }
    pipe(&mut a, &mut b);
    assert_eq!(b.engine.object(SCENE, 10).unwrap().proxy, Some(A));
    // A dies; B takes A's part of the scene over: A's writer and object are B's now, B's own
    // object and device stay.
    b.engine.adopt(&mut mirror, SCENE, b.now, None, &mut b.out);
    b.out.clear();
    // (The adopted writer is not a viewer the model checks, only a writer it knows.)
    b.areas.insert(w1.id, Area::EVERYTHING);
    assert_eq!(b.engine.object(SCENE, 10).unwrap().proxy, None);
    assert!(b.engine.object(SCENE, 50).is_some());
    assert!(b.engine.device(1).is_some_and(|d| d.joined));
    assert!(b.engine.device(2).is_some_and(|d| d.joined));
    // And the adopted writer writes on B, seen by B's near device.
    let m = w1.clone_write(10, [6.0, 0.0, 0.0]);
    b.engine.handle(b.now, w1.addr, &m, &mut b.out).unwrap();
    b.deliver();
    b.check(0);
    assert_eq!(b.views[&2][&10], [6.0, 0.0, 0.0]);
}
