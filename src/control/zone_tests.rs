//! Zones over several pairs, as the controller decides them (pure): a gridded scene's zones
//! spread over the region's pairs when it is created, devices homed by their anchor, each
//! pair told its zones and its peers, and a failed pair's zones moved as a whole.

use serde_json::{json, Value};

use super::tests::{Ctl, TOKEN};

fn gridded(t: &mut Ctl, name: &str, extra: Value) -> u64 {
    let mut req = json!({"op": "scene.create", "token": TOKEN, "name": name, "region": "r",
        "grid": {"origin": [0, 0, 0], "cell": [50, 0, 50], "counts": [2, 1, 1]}});
    req.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    t.ok(req)["scene"]["id"].as_u64().unwrap()
}

fn zone_pairs(t: &mut Ctl, scene: u64) -> Vec<Value> {
    let shown = t.ok(json!({"op": "scene.get", "token": TOKEN, "scene": scene}));
    shown["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["pair"].clone())
        .collect()
}

fn register_at(t: &mut Ctl, scene: u64, anchor: [f32; 3]) -> (u64, Value) {
    let r = t.ok(json!({"op": "device.register", "scene": scene, "anchor": anchor}));
    (r["device"].as_u64().unwrap(), r["pair"].clone())
}

#[test]
fn a_gridded_scene_spreads_over_the_region_and_devices_home_by_anchor() {
    let mut t = Ctl::new();
    let a = t.streaming_pair("r", 9001);
    let b = t.streaming_pair("r", 9002);
    let s = gridded(&mut t, "g", json!({}));
    assert_eq!(zone_pairs(&mut t, s), vec![json!(a), json!(b)]);
    // The zone map is durable, through a JSON value too (what the replica stream carries).
    let image = serde_json::to_value(t.c.image()).unwrap();
    let mut restored = Ctl::new();
    restored.c.restore(serde_json::from_value(image).unwrap());
    assert_eq!(zone_pairs(&mut restored, s), vec![json!(a), json!(b)]);
    let listed = t.ok(json!({"op": "scene.list", "token": TOKEN}));
    assert_eq!(listed["scenes"][0]["pairs"], json!([a, b]));
    // The anchor's zone decides; a border point belongs to the cell above it; no anchor: home.
    let (west, on) = register_at(&mut t, s, [10.0, 0.0, 10.0]);
    assert_eq!(on, json!(a));
    let (east, on) = register_at(&mut t, s, [50.0, 0.0, 10.0]);
    assert_eq!(on, json!(b));
    let plain = t.device(s)["device"].as_u64().unwrap();
    assert_eq!(
        t.ok(json!({"op": "device.locate", "device": plain}))["pair"],
        json!(a)
    );
    // Each pair is told the scene, its own zones, its peer's zones and stream, and only the
    // sessions of the devices homed on it.
    let ra = t.heartbeat(a, 0).unwrap()["assignment"].clone();
    assert_eq!(ra["scenes"], json!([s]));
    assert_eq!(ra["shared"][0]["zones"], json!([0]));
    assert_eq!(ra["shared"][0]["peers"][0]["pair"], json!(b));
    assert_eq!(ra["shared"][0]["peers"][0]["zones"], json!([1]));
    assert_eq!(ra["shared"][0]["peers"][0]["bus"], "tcp://127.0.0.1:10002");
    let sessions = |r: &Value| -> Vec<u64> {
        r["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["device"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(sessions(&ra), vec![west, plain]);
    let rb = t.heartbeat(b, 0).unwrap()["assignment"].clone();
    assert_eq!(rb["shared"][0]["zones"], json!([1]));
    assert_eq!(sessions(&rb), vec![east]);
    // a fails: its zone and its devices go to b, which now serves the scene whole.
    let before = t.c.epoch();
    let changes = t.run(t.c.config().dead_after * 2, &[b]);
    assert!(
        changes
            .iter()
            .any(|c| matches!(c, super::Change::PairDead { pair, .. } if *pair == a)),
        "{changes:?}"
    );
    assert!(t.c.epoch() > before);
    assert_eq!(zone_pairs(&mut t, s), vec![json!(b), json!(b)]);
    let rb = t.heartbeat(b, 0).unwrap()["assignment"].clone();
    assert_eq!(rb["shared"], Value::Null, "nobody to share with: {rb}");
    assert_eq!(sessions(&rb), vec![west, east, plain]);
    assert_eq!(
        t.ok(json!({"op": "device.locate", "device": west}))["pair"],
        json!(b)
    );
}

#[test]
fn a_reserved_zone_gets_a_pair_of_its_own_and_a_lone_pair_serves_everything() {
    let mut t = Ctl::new();
    let lone = t.pair("q", 8001);
    let mut req = json!({"op": "scene.create", "token": TOKEN, "name": "alone", "region": "q",
        "grid": {"origin": [0, 0, 0], "cell": [50, 0, 50], "counts": [2, 1, 1]}});
    let one = t.ok(req.take())["scene"]["id"].as_u64().unwrap();
    assert_eq!(zone_pairs(&mut t, one), vec![json!(lone), json!(lone)]);
    let ids: Vec<u32> = (0..3).map(|i| t.streaming_pair("r", 9001 + i)).collect();
    let boss = json!({"reserved": [{"name": "boss", "min": [40, -10, 0], "max": [60, 10, 20]}]});
    let s = gridded(&mut t, "g", boss);
    let zones = zone_pairs(&mut t, s);
    let reserved = zones[2].clone();
    assert!(zones[..2].iter().all(|p| *p != reserved), "{zones:?}");
    assert!(ids.iter().all(|id| zones.contains(&json!(id))), "{zones:?}");
    // A device anchored in the reserved box is homed on its pair.
    let (_, on) = register_at(&mut t, s, [50.0, 0.0, 10.0]);
    assert_eq!(on, reserved);
    // Bad anchors are refused.
    let bad = json!({"op": "device.register", "scene": s, "anchor": [1.0, 2.0]});
    assert_eq!(t.code(bad), crate::control::ErrorCode::BadRequest);
}

#[test]
fn a_crossing_moves_the_device_home_and_orders_its_hand_over_for_a_grace() {
    let mut t = Ctl::new();
    let a = t.streaming_pair("r", 9001);
    let b = t.streaming_pair("r", 9002);
    let s = gridded(&mut t, "g", json!({}));
    let (walker, _) = register_at(&mut t, s, [10.0, 0.0, 10.0]);
    let epoch = t.c.epoch();
    let beat = |t: &mut Ctl, pair: u32, crossings: Value| -> Value {
        t.ok(
            json!({"op": "pair.heartbeat", "token": TOKEN, "pair": pair, "epoch": 0,
            "crossings": crossings}),
        )["assignment"]
            .clone()
    };
    // Reports that change nothing: a device homed elsewhere, a zone of the reporting pair
    // itself, an unknown zone, an unknown device.
    for bad in [
        json!([{"device": walker, "zone": 1}]),
        json!([{"device": walker, "zone": 0}]),
        json!([{"device": walker, "zone": 99}]),
        json!([{"device": 999, "zone": 1}]),
    ] {
        let pair = if bad[0]["zone"] == 1 && bad[0]["device"] == walker {
            b
        } else {
            a
        };
        beat(&mut t, pair, bad);
    }
    assert_eq!(t.c.epoch(), epoch, "nothing moved");
    // a reports the walker in b's zone: its home is b now; a hands it over, b expects it.
    let ra = beat(&mut t, a, json!([{"device": walker, "zone": 1}]));
    assert!(t.c.epoch() > epoch);
    assert_eq!(
        t.ok(json!({"op": "device.locate", "device": walker}))["pair"],
        json!(b)
    );
    assert_eq!(ra["moves"][0]["device"], json!(walker));
    assert_eq!(ra["moves"][0]["pair"], json!(b));
    assert_eq!(ra["moves"][0]["udp"], "127.0.0.1:9002");
    assert!(ra["moves"][0]["epoch"].as_u64().unwrap() > epoch);
    let keeps = |r: &Value| {
        r["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["device"] == json!(walker))
    };
    assert!(keeps(&ra), "a keeps the session to forward stragglers");
    let rb = beat(&mut t, b, json!([]));
    assert_eq!(rb["arriving"], json!([walker]));
    assert!(keeps(&rb));
    // Reported again (the pair did not hear the answer): idempotent.
    let again = t.c.epoch();
    beat(&mut t, a, json!([{"device": walker, "zone": 1}]));
    assert_eq!(t.c.epoch(), again);
    // After the grace, a lets the session go and b takes it as its own.
    t.run(super::state::MOVE_GRACE, &[a, b]);
    let ra = t.heartbeat(a, 0).unwrap()["assignment"].clone();
    assert!(!keeps(&ra), "{ra}");
    assert_eq!(ra["moves"], Value::Null);
    let rb = t.heartbeat(b, 0).unwrap()["assignment"].clone();
    assert_eq!(rb["arriving"], Value::Null);
    assert!(keeps(&rb));
}

#[test]
fn a_move_ends_for_its_target_when_the_old_pair_leaves() {
    let mut t = Ctl::new();
    let (a, b, c) = (
        t.streaming_pair("r", 9001),
        t.streaming_pair("r", 9002),
        t.streaming_pair("r", 9003),
    );
    let s = t.ok(
        json!({"op": "scene.create", "token": TOKEN, "name": "g", "region": "r",
        "grid": {"origin": [0, 0, 0], "cell": [50, 0, 50], "counts": [3, 1, 1]}}),
    )["scene"]["id"]
        .as_u64()
        .unwrap();
    assert_eq!(zone_pairs(&mut t, s), vec![json!(a), json!(b), json!(c)]);
    let (walker, _) = register_at(&mut t, s, [10.0, 0.0, 10.0]);
    // The walker crosses from a's zone into c's; c waits for the hand-over.
    t.ok(
        json!({"op": "pair.heartbeat", "token": TOKEN, "pair": a, "epoch": 0,
        "crossings": [{"device": walker, "zone": 2}]}),
    );
    // a drains to its standby b (in sync) before the hand-over reached c.
    t.report(b, a, "synced");
    t.ok(json!({"op": "pair.drain", "token": TOKEN, "pair": a}));
    let rc = t.heartbeat(c, 0).unwrap();
    assert_eq!(rc["assignment"]["arriving"], json!([walker]), "{rc}");
    let epoch = rc["epoch"].as_u64().unwrap();
    // a leaves: c must hear that the device is simply its own now (nothing else changed for
    // c: a's zones went to b).
    t.ok(json!({"op": "pair.deregister", "token": TOKEN, "pair": a}));
    let rc = t.heartbeat(c, epoch).unwrap();
    assert!(rc["epoch"].as_u64().unwrap() > epoch, "{rc}");
    assert_eq!(rc["assignment"]["arriving"], Value::Null);
    assert!(rc["assignment"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["device"] == json!(walker)));
}
