//! A device crossing a zone border between two pairs, with no sockets: pair A's engine reports
//! the crossing (past the margin, once), hands the device over in its stream, and pair B's
//! engine (following A) takes the session and the device's objects; stragglers A forwards and
//! the device's own datagrams to B are each applied once, in order, and B's devices see them.

use super::*;
use crate::scene::Zoning;
use crate::zones::{Geometry, Grid};

const A: u32 = 1;
const B: u32 = 2;

fn halves(here: u32) -> Zoning {
    Zoning {
        geometry: Geometry {
            grid: Some(Grid {
                origin: [0.0; 3],
                cell: [50.0, 0.0, 50.0],
                counts: [2, 1, 1],
            }),
            ..Geometry::default()
        },
        here: vec![here],
    }
}

/// Feeds `from`'s new events into `to`, following it as pair `me`.
fn pipe(from: &mut World, origin: u32, to: &mut World, me: u32) {
    for (e, data) in std::mem::take(&mut from.log) {
        let _ = to
            .engine
            .follow(to.now, me, origin, &e, &data, |_| true, &mut to.out);
    }
    to.deliver();
}

#[test]
fn a_device_crossing_the_border_is_handed_over_with_its_objects_and_nothing_applies_twice() {
    let mut walker = Dev::new(1);
    let mut watcher = Dev::new(2);
    let mut a = World::new(&[&walker], 10.0);
    let mut b = World::new(&[&watcher], 10.0);
    a.engine.set_zoning(SCENE, Some(halves(0)));
    b.engine.set_zoning(SCENE, Some(halves(1)));
    a.join(&mut walker, Area::sphere([40.0, 0.0, 10.0], 20.0));
    b.join(&mut watcher, Area::sphere([60.0, 0.0, 10.0], 30.0));
    let m = walker.clone_write(9, [41.0, 0.0, 10.0]);
    a.feed(&walker, &m);
    pipe(&mut a, A, &mut b, B);
    assert_eq!(b.views[&2][&9], [41.0, 0.0, 10.0], "seen across the border");
    // Within the margin (5% of 50 = 2.5) past the border: not yet a crossing.
    a.anchor(&mut walker, [51.0, 0.0, 10.0]);
    assert!(a.engine.take_crossings().is_empty());
    a.anchor(&mut walker, [53.0, 0.0, 10.0]);
    assert_eq!(a.engine.take_crossings(), vec![(1, Some(1))]);
    a.anchor(&mut walker, [54.0, 0.0, 10.0]);
    assert!(a.engine.take_crossings().is_empty(), "reported once");
    a.anchor(&mut walker, [45.0, 0.0, 10.0]);
    assert_eq!(a.engine.take_crossings(), vec![(1, None)], "came back");
    a.anchor(&mut walker, [60.0, 0.0, 10.0]);
    assert_eq!(a.engine.take_crossings(), vec![(1, Some(1))]);
    pipe(&mut a, A, &mut b, B);
    // The controller moved its home: A hands it over; a write of it A accepted just before
    // is streamed first.
    let m = walker.clone_write(9, [42.0, 0.0, 10.0]);
    a.feed(&walker, &m);
    let to: SocketAddr = "127.0.0.1:7302".parse().unwrap();
    a.engine.move_device(1, B, to, 77, &mut a.out);
    let redirect = a
        .out
        .iter()
        .find(|(e, _)| e.kind == EventKind::Direct(Kind::Redirect));
    assert!(redirect.is_some(), "the device is redirected");
    a.deliver();
    assert!(
        !a.engine.device(1).unwrap().joined,
        "no longer a member at A"
    );
    assert_eq!(a.engine.object(SCENE, 9).unwrap().proxy, Some(B));
    // Two datagrams reach A after the hand-over (stragglers): forwarded in A's stream.
    let late1 = walker.clone_write(9, [43.0, 0.0, 10.0]);
    let late2 = walker.clone_write(9, [44.0, 0.0, 10.0]);
    // The device's next datagram, sent to B after the redirect, overtakes them.
    let direct = walker.clone_write(9, [45.0, 0.0, 10.0]);
    a.feed(&walker, &late1);
    // B learns of the hand-over, then gets the direct one before the second straggler. (The
    // model follows the walker to B with what it held at A.)
    b.areas.insert(1, a.areas[&1]);
    b.views
        .insert(1, a.views.get(&1).cloned().unwrap_or_default());
    b.joined.insert(1);
    pipe(&mut a, A, &mut b, B);
    assert!(b.engine.device(1).is_some_and(|d| d.joined), "adopted");
    assert_eq!(
        b.engine.object(SCENE, 9).unwrap().proxy,
        None,
        "its object moved with it"
    );
    b.engine
        .handle(b.now, walker.addr, &direct, &mut b.out)
        .unwrap();
    b.deliver();
    a.feed(&walker, &late2);
    pipe(&mut a, A, &mut b, B);
    b.engine.tick(b.now + GAP_WAIT * 2, &mut b.out);
    b.deliver();
    b.check(0);
    assert_eq!(b.views[&2][&9], [45.0, 0.0, 10.0], "the newest write last");
    assert_eq!(
        b.engine.drops().total(),
        0,
        "nothing applied twice, nothing refused"
    );
    // B's stream shows A the object as B's (proxy confirmed): A's devices keep seeing it.
    b.log
        .retain(|(e, _)| matches!(e.kind, EventKind::Relay(_) | EventKind::Object));
    pipe(&mut b, B, &mut a, A);
    assert_eq!(
        a.engine.object(SCENE, 9).unwrap().fields.translation,
        [45.0, 0.0, 10.0]
    );
}
