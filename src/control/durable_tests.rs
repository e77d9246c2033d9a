//! The durable state's contract: whatever sequence of requests and ticks an active controller
//! serves, a follower that applies its committed entries (through their JSON form, as the log
//! and the follow stream carry them) holds the same image after every step, and a controller
//! rebuilt from that image answers the same. Heartbeats that change nothing durable commit
//! nothing (so they cost no fsync).

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::protocol::{Load, MirrorReport, MirrorState, Request};
use super::random::Random;
use super::*;

const TOKEN: &str = "t";

struct Fixed(ChaCha8Rng);

impl Random for Fixed {
    fn fill(&mut self, out: &mut [u8]) {
        self.0.fill(out);
    }
}

fn controller(seed: u64) -> Controller {
    let random = Box::new(Fixed(ChaCha8Rng::seed_from_u64(seed)));
    Controller::with_random(Config::new(TOKEN), random)
}

fn tok() -> Option<String> {
    Some(TOKEN.into())
}

/// A request drawn from `rng`, over small id ranges so most of them hit something.
fn draw(rng: &mut ChaCha8Rng) -> Request {
    let id = rng.gen_range(1..8u32);
    match rng.gen_range(0..10) {
        0 => Request::SceneCreate {
            token: tok(),
            name: format!("s{id}"),
            region: ["a", "b"][rng.gen_range(0..2)].into(),
            grid: None,
            layers: Vec::new(),
            reserved: Vec::new(),
        },
        1 => Request::SceneDelete {
            token: tok(),
            scene: id,
        },
        2 => Request::PairRegister {
            token: tok(),
            region: ["a", "b"][rng.gen_range(0..2)].into(),
            udp: format!("127.0.0.1:{}", 9000 + id),
            capacity: 10,
            version: "v".into(),
            bus: Some(format!("tcp://127.0.0.1:{}", 7000 + id)),
            bus_key: None,
        },
        3 | 4 => Request::PairHeartbeat {
            token: tok(),
            pair: id,
            epoch: 0,
            load: Load::default(),
            mirrors: vec![MirrorReport {
                pair: rng.gen_range(1..8),
                state: [MirrorState::Synced, MirrorState::Lost][rng.gen_range(0..2)],
            }],
            crossings: vec![crate::control::protocol::Crossing {
                device: rng.gen_range(1..8),
                zone: rng.gen_range(0..4),
            }],
        },
        5 => Request::PairDrain {
            token: tok(),
            pair: id,
        },
        6 => Request::PairDeregister {
            token: tok(),
            pair: id,
        },
        7 | 8 => Request::DeviceRegister {
            token: None,
            scene: id,
            name: None,
            anchor: None,
        },
        _ => Request::DeviceDeregister {
            device: id,
            key: "wrong".into(),
        },
    }
}

#[test]
fn a_follower_applying_the_committed_entries_holds_the_same_state() {
    for seed in 0..40 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut active = controller(seed);
        let mut follower = controller(seed + 1000);
        let start = Instant::now();
        let mut now = start;
        let mut logged = 0;
        for step in 0..300 {
            now += Duration::from_millis(rng.gen_range(0..120));
            if rng.gen_bool(0.2) {
                active.tick(now);
            } else {
                let _ = active.handle(now, draw(&mut rng));
            }
            let entries = active.commit();
            logged += entries.len();
            let json = serde_json::to_string(&entries).expect("entries serialise");
            let read: Vec<Entry> = serde_json::from_str(&json).expect("entries parse");
            follower.apply(&read);
            assert_eq!(
                follower.image(),
                active.image(),
                "seed {seed} step {step}: the follower diverged"
            );
        }
        assert!(logged > 0, "seed {seed}: nothing was ever committed");
        // A controller rebuilt from the image answers status like the active did.
        let image: Image = serde_json::from_str(&serde_json::to_string(&active.image()).unwrap())
            .expect("image parses");
        let mut rebuilt = Controller::from_image(
            Config::new(TOKEN),
            Box::new(Fixed(ChaCha8Rng::seed_from_u64(0))),
            image,
        );
        let status = |c: &mut Controller| {
            let mut v = c
                .handle(now, Request::ClusterStatus { token: tok() })
                .unwrap()
                .to_json();
            for p in v["pairs"].as_array_mut().unwrap() {
                // Soft state: the rebuilt controller has heard no heartbeat yet.
                p["heartbeat_age_ms"] = 0.into();
                p["window_ms"] = 0.into();
                p["load"] = serde_json::Value::Null;
                p["standby_state"] = serde_json::Value::Null;
            }
            v
        };
        assert_eq!(status(&mut rebuilt), status(&mut active), "seed {seed}");
    }
}

/// Registers pair 1 (region `a`, no stream).
fn register_pair(c: &mut Controller, now: Instant) {
    c.handle(
        now,
        Request::PairRegister {
            token: tok(),
            region: "a".into(),
            udp: "127.0.0.1:9000".into(),
            capacity: 10,
            version: "v".into(),
            bus: None,
            bus_key: None,
        },
    )
    .unwrap();
}

#[test]
fn heartbeats_that_change_nothing_durable_commit_nothing() {
    let mut c = controller(1);
    let now = Instant::now();
    register_pair(&mut c, now);
    assert!(!c.commit().is_empty());
    for i in 1..100u64 {
        c.handle(
            now + Duration::from_millis(i),
            Request::PairHeartbeat {
                token: tok(),
                pair: 1,
                epoch: 0,
                load: Load {
                    joined: i,
                    ..Load::default()
                },
                mirrors: Vec::new(),
                crossings: Vec::new(),
            },
        )
        .unwrap();
        assert!(c.commit().is_empty(), "heartbeat {i} committed something");
    }
}

#[test]
fn a_take_over_needs_a_higher_term_and_restarts_every_window() {
    let mut c = controller(1);
    let t0 = Instant::now();
    assert!(c.take_over(t0, 3));
    assert_eq!(c.commit().len(), 1, "the new term is logged");
    assert!(!c.take_over(t0, 3), "the same term again");
    assert!(!c.take_over(t0, 2), "an older term");
    register_pair(&mut c, t0);
    let window = c.config().dead_after;
    // Silent for longer than its window, but the controller took over meanwhile: not dead.
    let later = t0 + window * 3;
    assert!(c.take_over(later, 4));
    assert!(c.tick(later + window / 2).is_empty());
    assert!(!c.tick(later + window * 2).is_empty(), "still silent: dead");
}
