//! The seeded simulation of a zonecast cluster (TigerBeetle's VOPR and quinn's test `Pair` are
//! the models): the real controller state machine, pairs (real scene engines, assignment
//! trackers, mirror and stream-peer cores) and devices (the real roaming policy, real sealed
//! datagrams) on a virtual clock, over a simulated network that delays, drops, duplicates,
//! reorders and partitions, with pairs crashing, restarting, freezing, running slow and
//! draining and the controller stalling, all drawn from one seed. The invariants (check.rs) are checked as the run goes; a violation prints
//! its seed, and that seed replays exactly.
//!
//! Usage (a harness of its own):
//!   cargo test --test sim                           # the default seeds (also in scripts/test)
//!   cargo test --test sim -- --seed 42 --verbose    # replay one seed, every step printed
//!   cargo test --release --test sim -- --seeds 100000 --first 1   # a long run
//!   cargo test --test sim -- --seeds 200 --no-replicas  # without the controller replica set

mod check;
mod detect;
mod device;
mod net;
mod nodes;
mod pair;
mod replicas;
mod world;

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| -> Option<u64> {
        let i = args.iter().position(|a| a == name)?;
        args.get(i + 1)?.parse().ok()
    };
    // `cargo test FILTER` passes its filter to every test binary: run only if it names us.
    let positional: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            let is_value =
                *i > 0 && ["--seed", "--seeds", "--first"].contains(&args[i - 1].as_str());
            !a.starts_with('-') && !is_value
        })
        .map(|(_, a)| a)
        .collect();
    if positional.iter().any(|f| !"sim".contains(f.as_str())) {
        return;
    }
    let verbose = args.iter().any(|a| a == "--verbose");
    // The controller replica set (replicas.rs) runs with every seed unless left out.
    let with_replicas = !args.iter().any(|a| a == "--no-replicas");
    let (first, count) = match value("--seed") {
        Some(seed) => (seed, 1),
        None => (
            value("--first").unwrap_or(1),
            value("--seeds").unwrap_or(400),
        ),
    };
    let options = world::Options { verbose };
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut total = world::Outcome::default();
    let mut replica_total = replicas::Outcome::default();
    for seed in first..first + count {
        match world::run(seed, &options) {
            Ok(o) => {
                total.virtual_us += o.virtual_us;
                total.messages += o.messages;
                total.faults += o.faults;
                total.promotions += o.promotions;
                total.handovers += o.handovers;
                total.crashes += o.crashes;
                total.rehome_checks += o.rehome_checks;
                total.confirmed += o.confirmed;
                total.detect_checks += o.detect_checks;
                total.stalls += o.stalls;
            }
            Err(violation) => {
                println!("seed {seed}: VIOLATION: {violation}");
                println!("  replay: cargo test --test sim -- --seed {seed} --verbose");
                failed.push(seed);
            }
        }
        if !with_replicas {
            continue;
        }
        match replicas::run(seed, verbose) {
            Ok(o) => {
                replica_total.takeovers += o.takeovers;
                replica_total.acked += o.acked;
                replica_total.faults += o.faults;
            }
            Err(violation) => {
                println!("seed {seed}: controller replicas: VIOLATION: {violation}");
                println!("  replay: cargo test --test sim -- --seed {seed} --verbose");
                failed.push(seed);
            }
        }
    }
    println!(
        "sim: {count} seeds ({first}..{}) in {:.1} s: {} violations; {:.0} virtual s, {} messages, {} faults ({} crashes), {} failovers from a mirror, {} hand-overs, {} re-homing checks; detection: {} deaths confirmed by a probe, {} crash-to-death checks, {} controller stalls",
        first + count - 1,
        started.elapsed().as_secs_f64(),
        failed.len(),
        total.virtual_us as f64 / 1e6,
        total.messages,
        total.faults,
        total.crashes,
        total.promotions,
        total.handovers,
        total.rehome_checks,
        total.confirmed,
        total.detect_checks,
        total.stalls,
    );
    if with_replicas {
        println!(
            "sim: controller replicas: {} take-overs, {} acknowledged writes, {} faults (kill -9, isolation, step-down)",
            replica_total.takeovers, replica_total.acked, replica_total.faults
        );
    }
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
