//! Interest areas end to end: a real pair process, devices from the client library. A device
//! with an area receives only what it holds, hears when an object leaves it, gets the full
//! state of what enters it; a revision-1 device next to it still receives everything.

mod common;

use std::time::{Duration, Instant};

use common::{move_to, PairProcess};
use zonecast::client::{Area, Device, Event, ObjectRecord, Shape, View};

const WAIT: Duration = Duration::from_secs(10);

/// Receives until `marker`'s object arrives (in any form); returns everything before it.
fn until_marker(d: &mut Device, marker: u64) -> Vec<Event> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "marker {marker} never came; got {got:?}");
        let Some(e) = d.recv(left).unwrap() else {
            continue;
        };
        let is_marker = match &e {
            Event::Update(r) | Event::Overwrite(r) | Event::Delete(r) | Event::Left(r) => {
                r.object == marker
            }
            Event::Snapshot { objects, .. } => objects.iter().any(|o| o.object == marker),
            _ => false,
        };
        if is_marker {
            return got;
        }
        // The periodic complete view is checked at the end.
        if !matches!(e, Event::KeepaliveAck { .. }) && !complete(&e) {
            got.push(e);
        }
    }
}

/// `(kind, object, x)` of the object events among `events`, for readable assertions.
fn summary(events: &[Event]) -> Vec<(&'static str, u64, f32)> {
    let row = |k: &'static str, r: &ObjectRecord| (k, r.object, r.fields.translation[0]);
    events
        .iter()
        .flat_map(|e| match e {
            Event::Update(r) => vec![row("update", r)],
            Event::Overwrite(r) => vec![row("overwrite", r)],
            Event::Delete(r) => vec![row("delete", r)],
            Event::Left(r) => vec![row("left", r)],
            Event::Snapshot {
                objects,
                incremental,
                ..
            } => objects
                .iter()
                .map(|r| row(if *incremental { "entered" } else { "snapshot" }, r))
                .collect(),
            _ => vec![],
        })
        .collect()
}

/// Whether `e` is a chunk of a complete snapshot (the periodic view among them).
fn complete(e: &Event) -> bool {
    matches!(
        e,
        Event::Snapshot {
            incremental: false,
            ..
        }
    )
}

/// The next incremental snapshot chunk `d` receives (other events are skipped).
fn next_snapshot(d: &mut Device) -> Event {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no snapshot");
        match d.recv(left).unwrap() {
            Some(e @ Event::Snapshot { .. }) if !complete(&e) => return e,
            _ => {}
        }
    }
}

#[test]
fn a_device_receives_what_its_area_holds_hears_what_leaves_and_gets_what_enters() {
    let args = ["--interest-cell", "8", "--view-refresh-ms", "300"];
    let pair = PairProcess::start(3, &args);
    let mut writer = pair.joined(1);
    let mut everything = pair.joined(2);
    let mut near = pair.device(3);
    let first = near
        .join_area_until_snapshot(Area::sphere([0.0; 3], 10.0), WAIT)
        .unwrap();
    assert!(
        matches!(first, Some(Event::Snapshot { incremental: false, ref objects, .. }) if objects.is_empty()),
        "{first:?}"
    );

    // Object 8 far away; object 7 walks out along x from 0 to 30; then marker 10 at the anchor.
    move_to(&mut writer, 8, 100.0);
    for i in 0..=15 {
        move_to(&mut writer, 7, i as f32 * 2.0);
    }
    move_to(&mut writer, 10, 0.0);
    let seen = summary(&until_marker(&mut near, 10));
    let mut expected = vec![("overwrite", 7, 0.0)];
    expected.extend((1..=5).map(|i| ("update", 7, i as f32 * 2.0)));
    expected.push(("left", 7, 0.0)); // a notice carries no fields
    assert_eq!(
        seen, expected,
        "inside: the walk up to 10; then it left; 8 never"
    );
    let all = summary(&until_marker(&mut everything, 10));
    assert_eq!(
        all.len(),
        17,
        "a revision-1 device gets every update: {all:?}"
    );

    // Moving the area to x=30 brings 7 (where it is now) and sends 10 away.
    near.set_interest(Area::sphere([30.0, 0.0, 0.0], 5.0))
        .unwrap();
    let mut got = Vec::new();
    loop {
        let e = near
            .recv(WAIT)
            .unwrap()
            .expect("an answer to the interest change");
        if complete(&e) {
            continue; // the periodic complete view, checked at the end
        }
        let done = matches!(e, Event::Snapshot { .. });
        got.push(e);
        if done {
            break;
        }
    }
    assert_eq!(summary(&got), [("left", 10, 0.0), ("entered", 7, 30.0)]);

    // A box on layer 0 around x=100 brings 8; its deletion reaches the device; an object on
    // layer 1 (outside every shape) never does.
    let mut area = Area::sphere([100.0, 0.0, 0.0], 0.0);
    area.layers[0] = Shape::Box([2.0, 2.0, 2.0]);
    near.set_interest(area).unwrap();
    let entered = summary(&[next_snapshot(&mut near)]);
    assert_eq!(entered, [("entered", 8, 100.0)]);
    let fields = zonecast::wire::Fields {
        translation: [100.0, 0.0, 0.0],
        ..Default::default()
    };
    writer
        .write_on_layer(1, false, 11, zonecast::wire::MASK_TRANSLATION, &fields, &[])
        .unwrap();
    writer.delete(8).unwrap();
    move_to(&mut writer, 12, 100.0);
    let seen = summary(&until_marker(&mut near, 12));
    assert_eq!(
        seen,
        [("delete", 8, 0.0)],
        "the delete, not the layer-1 object"
    );

    // A view kept from what arrives, through two periodic complete views (every 300 ms here),
    // holds what the box holds and nothing else.
    let mut view = View::new();
    let deadline = Instant::now() + WAIT;
    let mut views = 0;
    while views < 2 {
        assert!(Instant::now() < deadline, "no periodic complete view");
        if let Some(e) = near.recv(WAIT).unwrap() {
            views += usize::from(complete(&e));
            view.apply(&e);
        }
    }
    let held: Vec<(u64, f32)> = view
        .iter()
        .map(|(id, r)| (*id, r.fields.translation[0]))
        .collect();
    assert_eq!(
        held,
        [(12, 100.0)],
        "only the marker at x=100 is in the box"
    );
}
