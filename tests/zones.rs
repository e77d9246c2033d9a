//! Zones over several pairs end to end, with real processes: a controller and three pairs in
//! one region; a gridded scene with a reserved zone is spread over them (the reserved zone on
//! a pair of its own, the two grid cells on the other two); devices are homed by their
//! anchor; a device near the border on one pair sees, through the region bus, the objects a
//! device on the other pair moves within its radius and not beyond, each update once and in
//! order; and everything-devices see the whole scene across pairs.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use zonecast::client::{Area, Device, Event, ObjectRecord, View};
use zonecast::wire::{Fields, RejectReason, MASK_TRANSLATION};

const WAIT: Duration = Duration::from_secs(10);

fn put(d: &mut Device, object: u64, x: f32) -> u64 {
    let f = Fields {
        translation: [x, 0.0, 10.0],
        ..Fields::default()
    };
    d.update(object, MASK_TRANSLATION, &f, &[]).unwrap()
}

/// Receives into `view` (keeping every event) until `done` holds of it.
fn until(
    d: &mut Device,
    view: &mut View,
    log: &mut Vec<Event>,
    what: &str,
    done: impl Fn(&View, &[Event]) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    while !done(view, log) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{what}: never; got {log:?}");
        if let Some(e) = d.recv(left.min(Duration::from_millis(200))).unwrap() {
            view.apply(&e);
            log.push(e);
        }
    }
}

/// A controller, `pairs` pairs in region `eu`, and a scene of two cells along x (x < 50 and
/// x >= 50) with the `extra` scene.create fields.
fn halves(pairs: usize, extra: Value) -> (ControllerProcess, Vec<PairProcess>, u32) {
    let ctl = ControllerProcess::start();
    let started: Vec<PairProcess> = (0..pairs).map(|_| ctl.pair("eu", &[])).collect();
    ctl.wait_live_pairs("eu", pairs as u64);
    let mut req = json!({"op": "scene.create", "token": TOKEN, "name": "halves", "region": "eu",
        "grid": {"origin": [0, 0, 0], "cell": [50, 0, 50], "counts": [2, 1, 1]}});
    req.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let created = ctl.client().request(&req).unwrap();
    let scene = created["scene"]["id"].as_u64().unwrap() as u32;
    (ctl, started, scene)
}

fn x_of(r: &ObjectRecord) -> f32 {
    r.fields.translation[0]
}

#[test]
fn two_pairs_serve_the_halves_of_a_scene_and_devices_see_across_the_border() {
    let boss = json!({"reserved": [{"name": "boss", "min": [200, -10, 0], "max": [220, 10, 20]}]});
    let (ctl, _pairs, scene) = halves(3, boss);
    let shown = ctl
        .client()
        .request(&json!({"op": "scene.get", "token": TOKEN, "scene": scene}))
        .unwrap();
    let zone_pair: Vec<Value> = shown["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["pair"].clone())
        .collect();
    let (west, east, boss) = (&zone_pair[0], &zone_pair[1], &zone_pair[2]);
    assert!(
        west != east && boss != west && boss != east,
        "each zone its own pair: {shown}"
    );

    // A watcher near the border on the west pair (radius 10), an everything-device on the
    // west pair, a writer on the east pair.
    let (mut watcher, on) = ctl.device_at(
        scene,
        Some([45.0, 0.0, 10.0]),
        Some(Area::sphere([45.0, 0.0, 10.0], 10.0)),
    );
    assert_eq!(json!(on), *west);
    let (mut all, on) = ctl.device_at(scene, Some([5.0, 0.0, 10.0]), None);
    assert_eq!(json!(on), *west);
    let (mut writer, on) = ctl.device_at(scene, Some([75.0, 0.0, 10.0]), None);
    assert_eq!(json!(on), *east);

    // Object 1 just across the border (within the radius), object 2 well beyond it.
    let (mut view, mut log) = (View::new(), Vec::new());
    let (mut seen_all, mut all_log) = (View::new(), Vec::new());
    // The west pair follows the east pair's stream once its assignment lists it: write until
    // the first proxy shows (a write before the link is up reaches the west pair with the
    // checkpoint, so nothing is lost either way).
    put(&mut writer, 2, 70.0);
    put(&mut writer, 1, 52.0);
    until(
        &mut watcher,
        &mut view,
        &mut log,
        "object 1 across the border",
        |v, _| v.get(1).is_some_and(|r| x_of(r) == 52.0),
    );
    until(
        &mut all,
        &mut seen_all,
        &mut all_log,
        "both objects everywhere",
        // (An everything-device is sent the writes as they are: partial updates.)
        |_, log| got_update(log, 1, 52.0) && got_update(log, 2, 70.0),
    );
    // Moves of object 1 inside the radius: each once, in order.
    log.clear();
    for i in 1..=20 {
        put(&mut writer, 1, 52.0 + i as f32 * 0.1);
    }
    let last = 52.0 + 20.0 * 0.1;
    until(&mut watcher, &mut view, &mut log, "the 20 moves", |v, _| {
        v.get(1).is_some_and(|r| (x_of(r) - last).abs() < 1e-4)
    });
    let moves: Vec<(u64, f32)> = log
        .iter()
        .filter_map(|e| match e {
            Event::Update(r) if r.object == 1 => Some((r.origin_seq, x_of(r))),
            _ => None,
        })
        .collect();
    assert_eq!(moves.len(), 20, "each move once: {moves:?}");
    assert!(
        moves.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1),
        "{moves:?}"
    );
    assert!(view.get(2).is_none(), "object 2 is beyond the radius");
    // Object 2 crosses into the radius: the watcher gets its full state; object 1 leaves it.
    put(&mut writer, 2, 50.0);
    put(&mut writer, 1, 90.0);
    until(
        &mut watcher,
        &mut view,
        &mut log,
        "2 entered, 1 left",
        |v, _| v.get(2).is_some_and(|r| x_of(r) == 50.0) && v.get(1).is_none(),
    );
    assert!(
        log.iter()
            .any(|e| matches!(e, Event::Left(r) if r.object == 1)),
        "a left notice for object 1: {log:?}"
    );
    // The other way: an object on the west pair is seen by the east pair's writer.
    put(&mut all, 7, 30.0);
    let (mut writer_view, mut writer_log) = (View::new(), Vec::new());
    until(
        &mut writer,
        &mut writer_view,
        &mut writer_log,
        "the west object on the east pair",
        |_, log| got_update(log, 7, 30.0),
    );
    // A west device cannot write the east pair's object.
    put(&mut all, 2, 10.0);
    until(
        &mut all,
        &mut seen_all,
        &mut all_log,
        "a not_owner reject",
        |_, log| false_until_reject(log),
    );
    // A delete on the east pair reaches the watcher.
    writer.delete(2).unwrap();
    until(
        &mut watcher,
        &mut view,
        &mut log,
        "object 2 deleted",
        |v, _| v.get(2).is_none(),
    );
}

fn false_until_reject(log: &[Event]) -> bool {
    log.iter().any(|e| {
        matches!(
            e,
            Event::Reject {
                reason: Some(RejectReason::NotOwner),
                object: 2,
                ..
            }
        )
    })
}

/// Whether `log` holds an update of `object` to x.
fn got_update(log: &[Event], object: u64, x: f32) -> bool {
    log.iter()
        .any(|e| matches!(e, Event::Update(r) if r.object == object && x_of(r) == x))
}

#[test]
fn a_device_walking_across_the_border_is_handed_over_and_nothing_is_lost_or_doubled() {
    let (ctl, _pairs, scene) = halves(2, json!({}));
    let (mut watcher, east) = ctl.device_at(scene, Some([90.0, 0.0, 10.0]), None);
    let (mut walker, west) = ctl.device_at(
        scene,
        Some([40.0, 0.0, 10.0]),
        Some(Area::sphere([40.0, 0.0, 10.0], 15.0)),
    );
    assert_ne!(west, east);
    // Something for the walker to see on the far side.
    put(&mut watcher, 77, 65.0);
    // The walker moves its anchor and its object together from x=40 to x=70, one step per
    // few milliseconds, receiving as it goes (that is where it follows its redirect).
    // It keeps writing after the walk (its last steps a hair apart) until it has been
    // redirected and written 20 more times there, so writes span the hand-over however
    // long it takes on a loaded machine.
    let steps: u32 = 120;
    let (mut walker_view, mut walker_log) = (View::new(), Vec::new());
    let mut sent = Vec::new();
    let deadline = Instant::now() + WAIT;
    let (mut after, mut last) = (0, 0.0);
    for i in 0u32.. {
        let x = 40.0
            + 30.0 * (i.min(steps) as f32 / steps as f32)
            + i.saturating_sub(steps) as f32 * 1e-3;
        walker.move_anchor([x, 0.0, 10.0]).unwrap();
        sent.push(put(&mut walker, 5, x));
        last = x;
        while let Some(e) = walker.recv(Duration::from_millis(3)).unwrap() {
            walker_view.apply(&e);
            walker_log.push(e);
        }
        let redirected = walker_log
            .iter()
            .any(|e| matches!(e, Event::Redirect { .. }));
        after += usize::from(redirected);
        if i >= steps && after >= 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never redirected: {walker_log:?}"
        );
    }
    // The watcher (on the east pair all along) sees every update of the walker's object,
    // each once, in order: first through the region bus, then from its own pair.
    let (mut view, mut log) = (View::new(), Vec::new());
    until(
        &mut watcher,
        &mut view,
        &mut log,
        "the walker's last update",
        |_, log| got_update(log, 5, last),
    );
    let seen: Vec<u64> = log
        .iter()
        .filter_map(|e| match e {
            Event::Update(r) if r.object == 5 => Some(r.origin_seq),
            _ => None,
        })
        .collect();
    assert_eq!(seen, sent, "every update once, in order");
    let loc = ctl
        .client()
        .request(&json!({"op": "device.locate", "device": walker.session().device}))
        .unwrap();
    assert_eq!(loc["pair"], json!(east));
    // And it keeps receiving there: the watcher's object moves within its radius.
    put(&mut watcher, 77, 66.0);
    until(
        &mut walker,
        &mut walker_view,
        &mut walker_log,
        "the watcher's move",
        |_, log| got_update(log, 77, 66.0),
    );
}
