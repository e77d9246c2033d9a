//! Controller state machine tests with a virtual clock: assignment, least-loaded choice, death
//! at the window's edge, reassignment, epoch fencing, and bad requests changing nothing.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::protocol::decode;
use super::*;

const TOKEN: &str = "secret";

struct Ctl {
    c: Controller,
    now: Instant,
}

impl Ctl {
    fn new() -> Ctl {
        Ctl {
            c: Controller::new(Config::new(TOKEN)),
            now: Instant::now(),
        }
    }

    /// Sends a request as JSON, through the same decoder the server uses.
    fn req(&mut self, v: Value) -> Result<Value, ControlError> {
        let req = decode(v.to_string().as_bytes())?;
        self.c.handle(self.now, req)
    }

    fn ok(&mut self, v: Value) -> Value {
        self.req(v.clone())
            .unwrap_or_else(|e| panic!("{v} failed: {e}"))
    }

    fn code(&mut self, v: Value) -> ErrorCode {
        self.req(v).unwrap_err().code
    }

    fn pair(&mut self, region: &str, port: u16) -> u32 {
        let r = self.ok(
            json!({"op": "pair.register", "token": TOKEN, "region": region,
            "udp": format!("127.0.0.1:{port}"), "capacity": 100, "version": "test"}),
        );
        r["pair"].as_u64().unwrap() as u32
    }

    fn scene(&mut self, name: &str, region: &str) -> Value {
        self.ok(json!({"op": "scene.create", "token": TOKEN, "name": name, "region": region}))
            ["scene"]
            .clone()
    }

    fn device(&mut self, scene: u64) -> Value {
        self.ok(json!({"op": "device.register", "scene": scene}))
    }

    fn heartbeat(&mut self, pair: u32, epoch: u64) -> Result<Value, ControlError> {
        self.req(json!({"op": "pair.heartbeat", "token": TOKEN, "pair": pair, "epoch": epoch}))
    }

    fn status(&mut self) -> Value {
        self.ok(json!({"op": "cluster.status", "token": TOKEN}))
    }
}

#[test]
fn scenes_wait_for_a_pair_and_get_one_when_it_registers() {
    let mut t = Ctl::new();
    let s = t.scene("lobby", "eu-west");
    assert_eq!(s["pair"], Value::Null);
    assert_eq!(
        t.code(json!({"op": "device.register", "scene": 1})),
        ErrorCode::NoPair
    );
    assert_eq!(
        t.status()["devices"],
        0,
        "a refused registration creates nothing"
    );
    let other = t.pair("us-east", 9001);
    assert_eq!(
        t.ok(json!({"op": "scene.get", "token": TOKEN, "scene": 1}))["scene"]["pair"],
        Value::Null
    );
    let e0 = t.c.epoch();
    let p = t.pair("eu-west", 9002);
    assert!(t.c.epoch() > e0);
    let s = t.ok(json!({"op": "scene.get", "token": TOKEN, "scene": 1}))["scene"].clone();
    assert_eq!(s["pair"], p);
    assert_ne!(p, other);
    let d = t.device(1);
    assert_eq!(d["udp"], "127.0.0.1:9002");
    assert_eq!(d["key"].as_str().unwrap().len(), 64);
}

#[test]
fn least_loaded_live_pair_of_the_region_serves_new_scenes() {
    let mut t = Ctl::new();
    let a = t.pair("r", 9001);
    let b = t.pair("r", 9002);
    assert_eq!(t.scene("one", "r")["pair"], a, "tie: lowest id");
    for _ in 0..3 {
        t.device(1);
    }
    assert_eq!(t.scene("two", "r")["pair"], b, "a has 3 devices, b none");
    t.device(2);
    assert_eq!(t.scene("three", "r")["pair"], b, "b: 1 device < a: 3");
}

#[test]
fn heartbeats_carry_the_assignment_only_when_it_changed() {
    let mut t = Ctl::new();
    let p = t.pair("r", 9001);
    t.scene("s", "r");
    let d = t.device(1);
    let r = t.heartbeat(p, 0).unwrap();
    let epoch = r["epoch"].as_u64().unwrap();
    let a = &r["assignment"];
    assert_eq!(a["scenes"], json!([1]));
    assert_eq!(a["sessions"][0]["device"], d["device"]);
    assert_eq!(a["sessions"][0]["key"], d["key"]);
    let r = t.heartbeat(p, epoch).unwrap();
    assert_eq!(r.get("assignment"), None);
    t.device(1);
    let r = t.heartbeat(p, epoch).unwrap();
    assert!(r["epoch"].as_u64().unwrap() > epoch);
    assert_eq!(r["assignment"]["sessions"].as_array().unwrap().len(), 2);
}

#[test]
fn a_silent_pair_dies_past_the_window_and_its_scenes_and_devices_move() {
    let mut t = Ctl::new();
    let a = t.pair("r", 9001);
    let b = t.pair("r", 9002);
    t.scene("s", "r");
    let d = t.device(1)["device"].as_u64().unwrap();
    assert_eq!(t.ok(json!({"op": "device.locate", "device": d}))["pair"], a);
    let start = t.now;
    let window = t.c.config().dead_after;
    // b keeps beating; a falls silent.
    t.now = start + window;
    t.heartbeat(b, 0).unwrap();
    assert!(
        t.c.tick(t.now).is_empty(),
        "exactly at the window edge a pair is still alive"
    );
    let before = t.c.epoch();
    t.now = start + window + Duration::from_millis(1);
    let changes = t.c.tick(t.now);
    assert_eq!(
        changes,
        vec![Change::PairDead {
            pair: a,
            moved: vec![(1, Some(b))]
        }]
    );
    assert!(t.c.epoch() > before);
    let loc = t.ok(json!({"op": "device.locate", "device": d}));
    assert_eq!(
        (loc["pair"].clone(), loc["udp"].clone()),
        (json!(b), json!("127.0.0.1:9002"))
    );
    // b's next heartbeat carries the moved scene and the device's session.
    let r = t.heartbeat(b, 0).unwrap();
    assert_eq!(r["assignment"]["scenes"], json!([1]));
    assert_eq!(r["assignment"]["sessions"][0]["device"], d);
    // a comes back: fenced off.
    assert_eq!(t.heartbeat(a, 5).unwrap_err().code, ErrorCode::StaleEpoch);
    let st = t.status();
    assert_eq!(st["pairs"][0]["alive"], false);
    assert_eq!(st["pairs"][0]["scenes"], json!([]));
    // Long dead pairs are forgotten.
    t.now += t.c.config().forget_after + Duration::from_secs(1);
    t.heartbeat(b, 0).unwrap();
    assert_eq!(t.c.tick(t.now), vec![Change::PairForgotten { pair: a }]);
    assert_eq!(t.heartbeat(a, 5).unwrap_err().code, ErrorCode::UnknownPair);
}

#[test]
fn the_last_pair_of_a_region_dying_leaves_scenes_waiting() {
    let mut t = Ctl::new();
    let a = t.pair("r", 9001);
    t.scene("s", "r");
    let d = t.device(1)["device"].as_u64().unwrap();
    t.now += Duration::from_secs(1);
    assert_eq!(
        t.c.tick(t.now),
        vec![Change::PairDead {
            pair: a,
            moved: vec![(1, None)]
        }]
    );
    assert_eq!(
        t.code(json!({"op": "device.locate", "device": d})),
        ErrorCode::NoPair
    );
    let b = t.pair("r", 9003);
    assert_eq!(t.ok(json!({"op": "device.locate", "device": d}))["pair"], b);
}

#[test]
fn deregistering_moves_scenes_and_devices_can_leave_with_their_key() {
    let mut t = Ctl::new();
    let a = t.pair("r", 9001);
    let b = t.pair("r", 9002);
    t.scene("s", "r");
    let d = t.device(1);
    let r = t.ok(json!({"op": "pair.deregister", "token": TOKEN, "pair": a}));
    assert_eq!(r["moved"], json!([{"scene": 1, "pair": b}]));
    let id = d["device"].clone();
    let wrong = t.code(json!({"op": "device.deregister", "device": id, "key": "00".repeat(32)}));
    assert_eq!(wrong, ErrorCode::Unauthorized);
    t.ok(json!({"op": "device.deregister", "device": id, "key": d["key"]}));
    assert_eq!(
        t.code(json!({"op": "device.locate", "device": id})),
        ErrorCode::UnknownDevice
    );
    t.ok(json!({"op": "scene.delete", "token": TOKEN, "scene": 1}));
    assert_eq!(
        t.ok(json!({"op": "scene.list", "token": TOKEN}))["scenes"],
        json!([])
    );
}

#[test]
fn bad_requests_get_typed_errors_and_change_nothing() {
    let mut t = Ctl::new();
    t.pair("r", 9001);
    t.scene("s", "r");
    let before = (t.c.epoch(), t.status());
    let decode_code = |body: &[u8]| decode(body).unwrap_err().code;
    assert_eq!(decode_code(b"not json"), ErrorCode::BadRequest);
    assert_eq!(decode_code(b"[1,2]"), ErrorCode::BadRequest);
    assert_eq!(decode_code(b"{\"scene\": 1}"), ErrorCode::BadRequest);
    assert_eq!(decode_code(b"{\"op\": 7}"), ErrorCode::BadRequest);
    assert_eq!(
        decode_code(b"{\"op\": \"scene.explode\"}"),
        ErrorCode::UnknownOp
    );
    assert_eq!(decode_code(&vec![b' '; 70_000]), ErrorCode::TooLarge);
    assert_eq!(
        decode_code(b"{\"op\": \"device.locate\", \"device\": \"x\"}"),
        ErrorCode::BadRequest
    );
    assert_eq!(
        decode_code(b"{\"op\": \"device.locate\", \"device\": -1}"),
        ErrorCode::BadRequest
    );
    assert_eq!(
        decode_code(b"{\"op\": \"device.locate\", \"device\": 1, \"x\": 1}"),
        ErrorCode::BadRequest
    );
    let cases = [
        (
            json!({"op": "scene.create", "name": "x", "region": "r"}),
            ErrorCode::Unauthorized,
        ),
        (
            json!({"op": "scene.create", "token": "nope", "name": "x", "region": "r"}),
            ErrorCode::Unauthorized,
        ),
        (
            json!({"op": "scene.create", "token": TOKEN, "name": "s", "region": "r"}),
            ErrorCode::Conflict,
        ),
        (
            json!({"op": "scene.create", "token": TOKEN, "name": " ", "region": "r"}),
            ErrorCode::InvalidValue,
        ),
        (
            json!({"op": "scene.get", "token": TOKEN, "scene": 99}),
            ErrorCode::UnknownScene,
        ),
        (
            json!({"op": "scene.delete", "token": TOKEN, "scene": 99}),
            ErrorCode::UnknownScene,
        ),
        (
            json!({"op": "pair.register", "token": TOKEN, "region": "r", "udp": "nowhere", "capacity": 1, "version": "v"}),
            ErrorCode::InvalidValue,
        ),
        (
            json!({"op": "pair.register", "token": TOKEN, "region": "r", "udp": "0.0.0.0:1", "capacity": 1, "version": "v"}),
            ErrorCode::InvalidValue,
        ),
        (
            json!({"op": "pair.register", "token": TOKEN, "region": "r", "udp": "127.0.0.1:1", "capacity": 0, "version": "v"}),
            ErrorCode::InvalidValue,
        ),
        (
            json!({"op": "pair.heartbeat", "token": TOKEN, "pair": 42, "epoch": 0}),
            ErrorCode::UnknownPair,
        ),
        (
            json!({"op": "pair.deregister", "token": TOKEN, "pair": 42}),
            ErrorCode::UnknownPair,
        ),
        (
            json!({"op": "pair.heartbeat", "pair": 1, "epoch": 0}),
            ErrorCode::Unauthorized,
        ),
        (
            json!({"op": "device.register", "scene": 99}),
            ErrorCode::UnknownScene,
        ),
        (
            json!({"op": "device.locate", "device": 99}),
            ErrorCode::UnknownDevice,
        ),
        (
            json!({"op": "device.deregister", "device": 99, "key": ""}),
            ErrorCode::UnknownDevice,
        ),
        (json!({"op": "cluster.status"}), ErrorCode::Unauthorized),
    ];
    for (req, code) in cases {
        assert_eq!(t.code(req.clone()), code, "{req}");
    }
    assert_eq!((t.c.epoch(), t.status()), before);
}

#[test]
fn device_registration_can_require_a_device_token() {
    let mut config = Config::new(TOKEN);
    config.device_token = Some("devices".into());
    let mut t = Ctl {
        c: Controller::new(config),
        now: Instant::now(),
    };
    t.pair("r", 9001);
    t.scene("s", "r");
    assert_eq!(
        t.code(json!({"op": "device.register", "scene": 1})),
        ErrorCode::Unauthorized
    );
    assert_eq!(
        t.code(json!({"op": "device.register", "scene": 1, "token": "x"})),
        ErrorCode::Unauthorized
    );
    t.ok(json!({"op": "device.register", "scene": 1, "token": "devices", "name": "headset"}));
}
