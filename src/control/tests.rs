//! Controller state machine tests with a virtual clock: assignment, least-loaded choice, death
//! at the window's edge, reassignment, epoch fencing, and bad requests changing nothing.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::limits::Source;
use super::protocol::decode;
use super::*;

pub(super) const TOKEN: &str = "secret";

pub(super) struct Ctl {
    pub(super) c: Controller,
    now: Instant,
}

impl Ctl {
    pub(super) fn new() -> Ctl {
        Ctl {
            c: Controller::new(Config::new(TOKEN)),
            now: Instant::now(),
        }
    }

    /// Sends a request as JSON, through the same decoder the server uses.
    fn req(&mut self, v: Value) -> Result<Value, ControlError> {
        let req = decode(v.to_string().as_bytes())?;
        self.c.handle(self.now, req).map(|r| r.to_json())
    }

    pub(super) fn ok(&mut self, v: Value) -> Value {
        self.req(v.clone())
            .unwrap_or_else(|e| panic!("{v} failed: {e}"))
    }

    pub(super) fn code(&mut self, v: Value) -> ErrorCode {
        self.req(v).unwrap_err().code
    }

    pub(super) fn pair(&mut self, region: &str, port: u16) -> u32 {
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

    pub(super) fn device(&mut self, scene: u64) -> Value {
        self.ok(json!({"op": "device.register", "scene": scene}))
    }

    /// Lets `d` pass in 25 ms steps as a server would (a tick each step), `beating` pairs
    /// heartbeating at every step; the changes the ticks reported.
    pub(super) fn run(&mut self, d: Duration, beating: &[u32]) -> Vec<Change> {
        let end = self.now + d;
        let mut changes = Vec::new();
        while self.now < end {
            self.now = (self.now + Duration::from_millis(25)).min(end);
            for p in beating {
                let _ = self.heartbeat(*p, 0);
            }
            changes.extend(self.c.tick(self.now));
        }
        changes
    }

    pub(super) fn heartbeat(&mut self, pair: u32, epoch: u64) -> Result<Value, ControlError> {
        self.req(json!({"op": "pair.heartbeat", "token": TOKEN, "pair": pair, "epoch": epoch}))
    }

    fn status(&mut self) -> Value {
        self.ok(json!({"op": "cluster.status", "token": TOKEN}))
    }
}

/// What `tick` reports when `pair` dies silent (the default window) and its scenes move as
/// `moved`.
fn dead(pair: u32, moved: Vec<(u32, Option<u32>)>) -> Vec<Change> {
    let cause = Cause::Silent { window_ms: 250 };
    vec![Change::PairDead { pair, cause, moved }]
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
    assert_eq!(t.c.tick(t.now), dead(a, vec![(1, Some(b))]));
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
    // a was alive after all (a stall): it comes back under its own id, told that it serves
    // nothing now; the scene stays with b.
    let r = t.heartbeat(a, 2).unwrap();
    assert_eq!(r["assignment"]["scenes"], json!([]));
    assert_eq!(r["assignment"]["sessions"], json!([]));
    assert_eq!(t.c.tick(t.now), vec![Change::PairRevived { pair: a }]);
    let st = t.status();
    assert_eq!(st["pairs"][0]["alive"], true);
    assert_eq!(st["pairs"][0]["id"], a);
    assert_eq!(st["pairs"][0]["scenes"], json!([]));
    assert_eq!(t.c.assigned(1), Some(b));
    // Its long silence widened its window: twice the gap.
    let window = st["pairs"][0]["window_ms"].as_u64().unwrap();
    assert!(window >= 2 * 251, "{window}");
    // Long dead pairs are forgotten, and then told to register anew.
    let changes = t.run(t.c.config().dead_after_max, &[b]);
    assert!(matches!(changes[..], [Change::PairDead { pair, .. }] if pair == a));
    let changes = t.run(t.c.config().forget_after, &[b]);
    assert_eq!(changes, vec![Change::PairForgotten { pair: a }]);
    assert_eq!(t.heartbeat(a, 5).unwrap_err().code, ErrorCode::UnknownPair);
}

#[test]
fn the_last_pair_of_a_region_dying_leaves_scenes_waiting() {
    let mut t = Ctl::new();
    let a = t.pair("r", 9001);
    t.scene("s", "r");
    let d = t.device(1)["device"].as_u64().unwrap();
    t.now += Duration::from_secs(1);
    assert_eq!(t.c.tick(t.now), dead(a, vec![(1, None)]));
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

impl Ctl {
    /// A pair with a replication stream.
    pub(super) fn streaming_pair(&mut self, region: &str, port: u16) -> u32 {
        let r = self.ok(
            json!({"op": "pair.register", "token": TOKEN, "region": region,
            "udp": format!("127.0.0.1:{port}"), "capacity": 100, "version": "test",
            "bus": format!("tcp://127.0.0.1:{}", port + 1000)}),
        );
        r["pair"].as_u64().unwrap() as u32
    }

    /// A heartbeat of `pair` reporting its mirror of `primary` in `state`.
    pub(super) fn report(&mut self, pair: u32, primary: u32, state: &str) -> Value {
        self.ok(
            json!({"op": "pair.heartbeat", "token": TOKEN, "pair": pair, "epoch": 0,
            "mirrors": [{"pair": primary, "state": state}]}),
        )
    }

    fn pair_status(&mut self, pair: u32) -> Value {
        let st = self.status();
        st["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == pair)
            .unwrap()
            .clone()
    }
}

#[test]
fn streaming_pairs_stand_by_for_each_other_and_standbys_learn_what_to_mirror() {
    let mut t = Ctl::new();
    let a = t.streaming_pair("r", 9001);
    assert_eq!(
        t.pair_status(a)["standby"],
        Value::Null,
        "alone: no standby"
    );
    let b = t.streaming_pair("r", 9002);
    let plain = t.pair("r", 9003);
    let other_region = t.streaming_pair("x", 9004);
    assert_eq!(t.pair_status(a)["standby"], json!(b));
    assert_eq!(t.pair_status(b)["standby"], json!(a));
    assert_eq!(
        t.pair_status(plain)["standby"],
        Value::Null,
        "no stream, no standby"
    );
    assert_eq!(t.pair_status(other_region)["standby"], Value::Null);
    let r = t.heartbeat(b, 0).unwrap();
    assert_eq!(
        r["assignment"]["mirrors"],
        json!([{"pair": a, "bus": "tcp://127.0.0.1:10001"}])
    );
    // A standby that dies is replaced (the plain pair can stand by: it needs no stream).
    t.now += t.c.config().dead_after + Duration::from_millis(1);
    for p in [a, plain, other_region] {
        t.heartbeat(p, 0).unwrap();
    }
    t.c.tick(t.now);
    assert_eq!(t.pair_status(a)["standby"], json!(plain));
}

#[test]
fn a_primary_whose_standby_lost_the_stream_is_probed_and_dies_at_once_when_the_probe_is_refused() {
    let mut t = Ctl::new();
    let a = t.streaming_pair("r", 9001);
    let b = t.streaming_pair("r", 9002);
    let c = t.pair("r", 9003);
    t.scene("s", "r");
    let d = t.device(1)["device"].as_u64().unwrap();
    t.report(b, a, "synced");
    assert!(t.c.due_probes(t.now).is_empty(), "nobody is suspect");
    let start = t.now;
    let beat = t.c.config().heartbeat_interval;
    // The stream breaks: a is probed at once, on its data port.
    t.now = start + Duration::from_millis(1);
    t.report(b, a, "lost");
    assert_eq!(
        t.c.due_probes(t.now),
        vec![(a, "127.0.0.1:9001".parse().unwrap())]
    );
    assert!(t.c.due_probes(t.now).is_empty(), "one probe in flight");
    // It answers: alive (a cut stream, not a crash); not failed over, even past the
    // floor window, while it keeps answering.
    t.c.probe_ended(t.now, a, ProbeOutcome::Answered);
    assert!(t.c.tick(t.now).is_empty());
    for _ in 0..10 {
        t.now += beat;
        t.heartbeat(b, 0).unwrap();
        t.heartbeat(c, 0).unwrap();
        t.report(b, a, "lost");
        for (p, _) in t.c.due_probes(t.now) {
            assert_eq!(p, a);
            t.c.probe_ended(t.now, p, ProbeOutcome::Answered);
        }
        assert!(
            t.c.tick(t.now).is_empty(),
            "a live primary is not failed over"
        );
    }
    assert!(t.now - start > t.c.config().dead_after);
    // A probe lost says nothing...
    t.heartbeat(a, 0).unwrap();
    t.now += beat;
    t.report(b, a, "lost");
    assert_eq!(t.c.due_probes(t.now).len(), 1);
    t.c.probe_ended(t.now, a, ProbeOutcome::TimedOut);
    assert!(t.c.tick(t.now).is_empty());
    // ...a refusal is the crash: dead at once, long before the window, and the standby
    // (holding the state) gets the scene even though c is less loaded.
    t.now += beat;
    t.heartbeat(b, 0).unwrap();
    t.heartbeat(c, 0).unwrap();
    t.report(b, a, "lost");
    assert_eq!(t.c.due_probes(t.now).len(), 1);
    t.c.probe_ended(t.now, a, ProbeOutcome::Refused);
    let cause = Cause::Probe(ProbeOutcome::Refused);
    assert_eq!(
        t.c.tick(t.now),
        vec![Change::PairDead {
            pair: a,
            cause,
            moved: vec![(1, Some(b))]
        }]
    );
    let r = t.heartbeat(b, 0).unwrap();
    assert_eq!(r["assignment"]["scenes"], json!([1]));
    assert_eq!(r["assignment"]["sessions"][0]["device"], d);
    assert_eq!(
        r["assignment"]["mirrors"],
        json!([]),
        "nothing left to mirror"
    );
}

#[test]
fn a_late_heartbeat_is_probed_and_a_stalled_controller_blames_nobody() {
    let mut t = Ctl::new();
    let a = t.pair("r", 9001);
    let beat = t.c.config().heartbeat_interval;
    let start = t.now;
    // Two intervals without a heartbeat (the controller ticking all along): a probe,
    // answered by another process on the port.
    while t.now <= start + beat * 2 {
        assert!(t.c.tick(t.now).is_empty());
        t.now += Duration::from_millis(25);
    }
    assert_eq!(t.c.due_probes(t.now).len(), 1);
    t.c.probe_ended(t.now, a, ProbeOutcome::NotServing);
    assert!(matches!(
        t.c.tick(t.now)[..],
        [Change::PairDead {
            cause: Cause::Probe(ProbeOutcome::NotServing),
            ..
        }]
    ));
    // A pair heard just before the controller itself froze for a second is not blamed.
    let b = t.pair("r", 9002);
    t.c.tick(t.now);
    t.now += Duration::from_secs(1);
    let changes = t.c.tick(t.now);
    assert!(
        matches!(changes[..], [Change::Stalled { ms }] if ms >= 900),
        "{changes:?}"
    );
    assert!(t.c.is_alive(b));
    assert!(t.c.due_probes(t.now).is_empty());
}

#[test]
fn a_standby_not_in_sync_is_passed_over_and_drains_wait_for_it() {
    let mut t = Ctl::new();
    let a = t.streaming_pair("r", 9001);
    let b = t.streaming_pair("r", 9002);
    t.scene("s", "r");
    t.report(b, a, "syncing");
    let drain = json!({"op": "pair.drain", "token": TOKEN, "pair": a});
    assert_eq!(t.code(drain.clone()), ErrorCode::Conflict);
    assert_eq!(
        t.pair_status(a)["draining"],
        false,
        "a refused drain changes nothing"
    );
    t.report(b, a, "synced");
    let r = t.ok(drain.clone());
    assert_eq!(r["moved"], json!([{"scene": 1, "pair": b}]));
    assert_eq!(
        t.ok(drain)["moved"],
        r["moved"],
        "draining again is a no-op"
    );
    // The draining pair keeps its sessions, hands over, forwards to b's endpoint.
    t.device(1);
    let h = t.heartbeat(a, 0).unwrap();
    let asg = &h["assignment"];
    assert_eq!(asg["scenes"], json!([]));
    assert_eq!(asg["draining"], true);
    assert_eq!(asg["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(asg["handovers"][0]["udp"], "127.0.0.1:9002");
    assert_eq!(asg["handovers"][0]["scene"], 1);
    // b still mirrors a (the forwarded stragglers come that way) and serves the scene.
    let h = t.heartbeat(b, 0).unwrap();
    assert_eq!(h["assignment"]["scenes"], json!([1]));
    assert_eq!(
        h["assignment"]["incoming"],
        json!([1]),
        "taken at the handover event"
    );
    assert_eq!(h["assignment"]["mirrors"][0]["pair"], a);
    // A draining pair gets no new scene and stands by for nobody.
    t.scene("s2", "r");
    assert_eq!(t.status()["scenes"][1]["pair"], b);
    assert_eq!(t.pair_status(b)["standby"], Value::Null);
    // b goes silent long enough to be declared dead (a's standby is gone with it), then is
    // heard again: it gets scene 2 back, still waits for scene 1's handover.
    t.run(Duration::from_secs(3), &[a]);
    assert!(!t.c.is_alive(b));
    let h = t.heartbeat(b, 0).unwrap();
    assert!(t.c.is_alive(b));
    let held = h["epoch"].as_u64().unwrap();
    assert!(
        t.heartbeat(b, held).unwrap()["assignment"].is_null(),
        "nothing new yet"
    );
    // Then a leaves: b, heartbeating under the epoch it has, is given a new assignment (its
    // incoming changed), or it would wait for that handover forever (sim seed 3510).
    t.ok(json!({"op": "pair.deregister", "token": TOKEN, "pair": a}));
    let h = t.heartbeat(b, held).unwrap();
    assert_eq!(h["assignment"]["incoming"], json!([]), "{h}");
}

#[test]
fn drains_without_anyone_to_take_over_or_without_a_stream_are_refused() {
    let mut t = Ctl::new();
    let a = t.streaming_pair("r", 9001);
    t.scene("s", "r");
    let drain = |p: u32| json!({"op": "pair.drain", "token": TOKEN, "pair": p});
    assert_eq!(t.code(drain(a)), ErrorCode::NoPair);
    let plain = t.pair("r", 9002);
    t.ok(json!({"op": "pair.deregister", "token": TOKEN, "pair": a}));
    assert_eq!(t.code(drain(plain)), ErrorCode::InvalidValue);
    assert_eq!(t.code(drain(99)), ErrorCode::UnknownPair);
    let no_token = json!({"op": "pair.drain", "pair": plain});
    assert_eq!(t.code(no_token), ErrorCode::Unauthorized);
    let bad_bus = json!({"op": "pair.register", "token": TOKEN, "region": "r",
        "udp": "127.0.0.1:1", "capacity": 1, "version": "v", "bus": "tcp://0.0.0.0:5"});
    assert_eq!(t.code(bad_bus), ErrorCode::InvalidValue);
}

#[test]
fn registrations_are_rate_limited_per_source_and_scenes_are_capped() {
    let mut config = Config::new(TOKEN);
    config.register = super::limits::RegisterLimits {
        per_sec: 10.0,
        burst: 3,
        max_sources: 64,
    };
    config.max_devices_per_scene = 5;
    let mut t = Ctl {
        c: Controller::new(config),
        now: Instant::now(),
    };
    t.pair("r", 9001);
    let scene = t.scene("s", "r")["id"].as_u64().unwrap();
    let register = |t: &mut Ctl, source: Source| {
        let req = decode(
            json!({"op": "device.register", "scene": scene})
                .to_string()
                .as_bytes(),
        );
        t.c.handle_from(t.now, source, req.unwrap())
    };
    let a = Source::V4([192, 0, 2, 1]);
    for _ in 0..3 {
        register(&mut t, a).unwrap();
    }
    let limited = register(&mut t, a).unwrap_err();
    assert_eq!(limited.code, ErrorCode::RateLimited);
    assert!(limited.message.contains("retry in 100 ms"), "{limited}");
    // Another source is not held back; every attempt counts, valid or not.
    let b = Source::V4([192, 0, 2, 2]);
    register(&mut t, b).unwrap();
    register(&mut t, b).unwrap();
    // The scene holds 5: the cap refuses the sixth whatever the source.
    t.now += Duration::from_secs(1);
    assert_eq!(register(&mut t, a).unwrap_err().code, ErrorCode::SceneFull);
    assert_eq!(
        t.ok(json!({"op": "cluster.status", "token": TOKEN}))["devices"],
        5
    );
    // Other ops are not rate limited.
    for _ in 0..10 {
        t.c.handle_from(t.now, a, decode(br#"{"op":"discovery"}"#).unwrap())
            .unwrap();
    }
}

#[test]
fn an_encrypted_controller_requires_encrypted_streams_and_hands_out_their_keys() {
    let mut config = Config::new(TOKEN);
    config.encrypted = true;
    let mut t = Ctl {
        c: Controller::new(config),
        now: Instant::now(),
    };
    let register = |port: u16, key: Option<String>| {
        json!({"op": "pair.register", "token": TOKEN, "region": "r",
            "udp": format!("127.0.0.1:{port}"), "capacity": 10, "version": "v",
            "bus": format!("tcp://127.0.0.1:{}", port + 1000), "bus_key": key})
    };
    assert_eq!(t.code(register(9001, None)), ErrorCode::InvalidValue);
    assert_eq!(
        t.code(register(9001, Some("not a key".into()))),
        ErrorCode::InvalidValue
    );
    // A pair without a stream needs no key.
    t.pair("r", 9003);
    let key = crate::security::KeyPair::generate().public().to_z85();
    let a = t.ok(register(9001, Some(key.clone())))["pair"]
        .as_u64()
        .unwrap() as u32;
    let b = t.ok(register(
        9002,
        Some(crate::security::KeyPair::generate().public().to_z85()),
    ))["pair"]
        .as_u64()
        .unwrap() as u32;
    let standby = t.pair_status(a)["standby"].as_u64().unwrap() as u32;
    assert_ne!(standby, a);
    let r = t.heartbeat(standby, 0).unwrap();
    let mirrors = r["assignment"]["mirrors"].as_array().unwrap().clone();
    let of_a = mirrors.iter().find(|m| m["pair"] == a).unwrap();
    assert_eq!(of_a["key"], key.as_str(), "{mirrors:?}");
    assert_eq!(t.pair_status(a)["bus_key"], key.as_str());
    let _ = b;
}

#[test]
fn a_gridded_scene_keeps_its_zones_and_shows_who_serves_each() {
    let mut t = Ctl::new();
    let pair = t.pair("r", 9000);
    let geometry = json!({
        "grid": {"origin": [0, 0, 0], "cell": [50, 0, 50], "counts": [2, 1, 2]},
        "layers": ["ground", "air"],
        "reserved": [{"name": "boss", "min": [40, -10, 40], "max": [60, 10, 60]}],
    });
    let mut req = json!({"op": "scene.create", "token": TOKEN, "name": "g", "region": "r"});
    req.as_object_mut()
        .unwrap()
        .extend(geometry.as_object().unwrap().clone());
    let created = t.ok(req.clone());
    assert_eq!(
        created["scene"]["zones"], 9,
        "2x2 cells on 2 layers and a reserved zone"
    );
    let id = created["scene"]["id"].clone();
    let shown = t.ok(json!({"op": "scene.get", "token": TOKEN, "scene": id}));
    assert_eq!(shown["geometry"], geometry.clone().tap_numbers());
    let zones = shown["zones"].as_array().unwrap();
    assert_eq!(zones.len(), 9);
    assert!(zones.iter().all(|z| z["pair"] == pair), "{zones:?}");
    assert_eq!(zones[5]["kind"], "cell");
    assert_eq!(zones[5]["name"], "air");
    assert_eq!(zones[5]["cell"], json!([1, 0, 0]));
    assert_eq!(zones[8]["kind"], "reserved");
    assert_eq!(zones[8]["zone"], 1u64 << 31);
    // The geometry is durable: through the JSON of an image (what snapshots and the replica
    // stream carry), a restored controller shows the same zones.
    let image = serde_json::to_string(&t.c.image()).unwrap();
    let mut restored = Ctl::new();
    restored.c.restore(serde_json::from_str(&image).unwrap());
    let again = restored.ok(json!({"op": "scene.get", "token": TOKEN, "scene": id}));
    assert_eq!(again["zones"], shown["zones"]);
    let plain = t.scene("plain", "r");
    assert_eq!(plain["zones"], 1);
    // Impossible geometries are refused and change nothing.
    for bad in [
        json!({"grid": {"origin": [0, 0, 0], "cell": [1, 1, 1], "counts": [100, 100, 1]}}),
        json!({"grid": {"origin": [0, 0, 0], "cell": [0, 1, 1], "counts": [2, 1, 1]}}),
        json!({"layers": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]}),
        json!({"reserved": [{"name": "x", "min": [1, 0, 0], "max": [0, 0, 0]}]}),
    ] {
        let mut req = json!({"op": "scene.create", "token": TOKEN, "name": "bad", "region": "r"});
        req.as_object_mut()
            .unwrap()
            .extend(bad.as_object().unwrap().clone());
        assert_eq!(t.code(req), ErrorCode::InvalidValue, "{bad}");
    }
    let bad_field = json!({"op": "scene.create", "token": TOKEN, "name": "b", "region": "r",
        "grid": {"origin": [0, 0, 0], "cell": [1, 1, 1], "counts": [1, 1, 1], "size": 3}});
    assert_eq!(t.code(bad_field), ErrorCode::BadRequest);
    let scenes = t.ok(json!({"op": "scene.list", "token": TOKEN}));
    assert_eq!(scenes["scenes"].as_array().unwrap().len(), 2);
}

/// Numbers as the controller writes them back (floats for the geometry's f32 fields).
trait TapNumbers {
    fn tap_numbers(self) -> Value;
}

impl TapNumbers for Value {
    fn tap_numbers(self) -> Value {
        let mut v = self;
        for key in ["origin", "cell"] {
            if let Some(a) = v["grid"][key].as_array_mut() {
                for x in a.iter_mut() {
                    *x = json!(x.as_f64().unwrap());
                }
            }
        }
        if let Some(r) = v["reserved"].as_array_mut() {
            for z in r.iter_mut() {
                for key in ["min", "max"] {
                    for x in z[key].as_array_mut().unwrap().iter_mut() {
                        *x = json!(x.as_f64().unwrap());
                    }
                }
            }
        }
        v
    }
}
