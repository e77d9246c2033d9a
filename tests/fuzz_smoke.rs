//! A short, deterministic run of every fuzz target (`zonecast::fuzz`) on each `scripts/test`:
//! the seed inputs, every file in `fuzz/corpus/<target>/` (the committed corpus, crash
//! reproductions included), then seeded random mutations of them. Not coverage-guided: the
//! long runs are `cargo fuzz` (fuzz/README.md). A panic names the target and the input (hex).
//!
//! `ZONECAST_FUZZ_MUTATIONS=N` changes the number of mutations per target;
//! `ZONECAST_WRITE_SEEDS=DIR cargo test --test fuzz_smoke` writes the seeds to
//! `DIR/<target>/seed-N` (how `fuzz/corpus` was started).

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use zonecast::fuzz::{self, seeds};
use zonecast::scene::DropReason;

fn body(target: &str) -> fn(&[u8]) {
    match target {
        "datagram" => fuzz::datagram,
        "client_events" => fuzz::client_events,
        "control" => fuzz::control,
        "stream" => fuzz::stream,
        "sessions_file" => fuzz::sessions_file,
        other => panic!("no target {other}"),
    }
}

/// The seeds and the committed corpus of `target`.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let mut inputs = seeds::seeds(target);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        files.sort();
        inputs.extend(files.iter().filter_map(|f| std::fs::read(f).ok()));
    }
    inputs
}

/// One mutation of `input` (libFuzzer's basic moves; `other` for splicing).
fn mutate(rng: &mut ChaCha8Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        let at = |rng: &mut ChaCha8Rng, len: usize| rng.gen_range(0..=len);
        match rng.gen_range(0..7) {
            0 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                v[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                v[i] = [0, 1, 0x7f, 0x80, 0xff, rng.gen()][rng.gen_range(0..6)];
            }
            2 => {
                let i = at(rng, v.len());
                let n = rng.gen_range(1..16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                v.splice(i..i, bytes);
            }
            3 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                let j = (i + rng.gen_range(1..32)).min(v.len());
                v.drain(i..j);
            }
            4 if !v.is_empty() => {
                let i = rng.gen_range(0..v.len());
                let j = (i + rng.gen_range(1..64)).min(v.len());
                let copy = v[i..j].to_vec();
                let k = at(rng, v.len());
                v.splice(k..k, copy);
            }
            5 if !other.is_empty() => {
                let i = at(rng, v.len());
                let j = rng.gen_range(0..other.len());
                v.truncate(i);
                v.extend_from_slice(&other[j..]);
            }
            _ => v.truncate(at(rng, v.len())),
        }
    }
    v
}

fn run(target: &str, mutations: usize) {
    let run = body(target);
    let inputs = corpus(target);
    assert!(!inputs.is_empty(), "{target} has no seeds");
    let check = |input: &[u8]| {
        let caught = std::panic::catch_unwind(|| run(input));
        if let Err(e) = caught {
            panic!(
                "fuzz target {target} failed on input {}: {e:?}",
                hex::encode(input)
            );
        }
    };
    for input in &inputs {
        check(input);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    for _ in 0..mutations {
        let a = &inputs[rng.gen_range(0..inputs.len())];
        let b = &inputs[rng.gen_range(0..inputs.len())];
        let input = mutate(&mut rng, a, b);
        check(&input);
    }
}

fn mutations() -> usize {
    std::env::var("ZONECAST_FUZZ_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

#[test]
fn datagram() {
    run("datagram", mutations());
}

#[test]
fn client_events() {
    run("client_events", mutations());
}

#[test]
fn control() {
    run("control", mutations());
}

#[test]
fn stream() {
    run("stream", mutations());
}

#[test]
fn sessions_file() {
    run("sessions_file", mutations());
}

#[test]
fn the_seeds_reach_deep() {
    if let Ok(dir) = std::env::var("ZONECAST_WRITE_SEEDS") {
        for target in seeds::TARGETS {
            let dir = Path::new(&dir).join(target);
            std::fs::create_dir_all(&dir).unwrap();
            for (i, seed) in seeds::seeds(target).iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i}")), seed).unwrap();
            }
        }
    }
    // The datagram seed joins two devices (one with an interest area, which it changes and
    // moves) and updates objects: the engine accepts all but one (an update of another
    // device's object) and holds the object that was not deleted.
    let engine = fuzz::datagram_engine(&seeds::seeds("datagram")[0]);
    assert_eq!((engine.accepted(), engine.drops().total()), (9, 1));
    assert_eq!(engine.drops().get(DropReason::NotOwner), 1);
    assert!(
        engine.object(1, 6).is_some(),
        "the overwritten object is missing"
    );
    // The device's seed decodes every event it carries: 6 datagrams, a bundle of 2.
    assert_eq!(
        fuzz::client_events_decoded(&seeds::seeds("client_events")[0]),
        8
    );
    // The control seed is served whole (12 requests, a drain among them), and the replies the
    // first pair heard make its tracker take the scene, admit both sessions and mirror the
    // other pair (4 commands), then hand the scene over and stop mirroring (2).
    let (served, commands) = fuzz::control_depth(&seeds::seeds("control")[0]);
    assert_eq!((served, commands), (12, 6));
    // The stream seeds: a hub greeted by a standby; a mirror synced from a checkpoint of the
    // three sessions.
    let stream = seeds::seeds("stream");
    assert_eq!(fuzz::stream_depth(&stream[0]), 1);
    assert_eq!(fuzz::stream_depth(&stream[1]), 3);
    // Its replay seed is one acceptance and one counted replay.
    let engine = fuzz::datagram_engine(&seeds::seeds("datagram")[1]);
    assert_eq!((engine.accepted(), engine.drops().total()), (1, 1));
}
