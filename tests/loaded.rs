//! Failure detection on a loaded host, with real processes: a controller, two `zonecast
//! pair`s that stand by for each other and devices under traffic, while busy loops (twice as
//! many as the machine has cores, at the tests' own priority) take the CPU, and the
//! controller is descheduled now and then (SIGSTOP: a VM losing its CPU, a long page fault),
//! alone or with the pairs. No live pair may be failed over: heartbeats come late, the
//! adaptive window widens, suspects answer probes, and a controller that was itself stalled
//! blames nobody for it. (Bounded in time and load; figures belong to `cargo bench --bench
//! rehome -- --soak`, this only asserts that nothing is falsely declared dead.)

mod common;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use zonecast::client::{Device, Roaming};
use zonecast::wire::{Fields, MASK_TRANSLATION};

/// Busy loops until dropped.
struct Hog {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Hog {
    fn start(threads: usize) -> Hog {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        Hog { stop, threads }
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Sends `sig` (`-STOP`, `-CONT`) to every process in `pids`.
fn signal(pids: &[u32], sig: &str) {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let ok = std::process::Command::new("kill")
        .arg(sig)
        .args(&pids)
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pids:?}");
}

/// Every pair's (id, alive).
fn pairs(ctl: &ControllerProcess) -> Vec<(u64, bool)> {
    ctl.status()["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_u64().unwrap(), p["alive"] == true))
        .collect()
}

#[test]
fn a_loaded_host_fails_no_live_pair_over() {
    let ctl = ControllerProcess::start();
    let pair_procs = [ctl.pair("eu", &[]), ctl.pair("eu", &[])];
    ctl.wait_live_pairs("eu", 2);
    let scenes = [ctl.scene("one", "eu"), ctl.scene("two", "eu")];
    let mut devices: Vec<(Device, Roaming)> = scenes
        .iter()
        .flat_map(|s| (0..3).map(|_| (ctl.device(*s), Roaming::new(ctl.client()))))
        .collect();
    let homes: Vec<_> = devices.iter().map(|(d, _)| d.session().pair).collect();
    let before = pairs(&ctl);
    assert_eq!(before.len(), 2);

    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hog = Hog::start(2 * cores);
    let start = Instant::now();
    let mut i = 0u32;
    // Stalls, each 700 ms (well past the 250 ms floor window): the controller alone at 2 s
    // and 4 s, the controller and both pairs together (the whole host) at 6 s.
    let mut stalls: Vec<(Duration, bool)> = vec![
        (Duration::from_secs(2), false),
        (Duration::from_secs(4), false),
        (Duration::from_secs(6), true),
    ];
    while start.elapsed() < Duration::from_secs(8) {
        if stalls.first().is_some_and(|(at, _)| start.elapsed() >= *at) {
            let (_, host) = stalls.remove(0);
            let mut pids = vec![ctl.child.id()];
            if host {
                pids.extend(pair_procs.iter().map(|p| p.child.id()));
            }
            signal(&pids, "-STOP");
            std::thread::sleep(Duration::from_millis(700));
            signal(&pids, "-CONT");
        }
        let now = Instant::now();
        for (d, r) in devices.iter_mut() {
            r.poll(d, now).unwrap();
            i += 1;
            let f = Fields {
                translation: [i as f32, 0.0, 0.0],
                ..Fields::default()
            };
            d.update(u64::from(d.session().device), MASK_TRANSLATION, &f, &[])
                .unwrap();
            while d.try_recv().unwrap().is_some() {}
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(hog);

    let m = ctl.metrics();
    let get = |k: &str| m.get(k).copied().unwrap_or(0);
    eprintln!(
        "under the hog: {} probes answered, {} timed out, {} controller stalls",
        get("zonecast_control_probes_total{outcome=\"answered\"}"),
        get("zonecast_control_probes_total{outcome=\"timed_out\"}"),
        get("zonecast_control_stalls_total{controller=\"self\"}"),
    );
    assert_eq!(
        (get(DEATHS_PROBE), get(DEATHS_SILENT), get(REVIVALS)),
        (0, 0, 0),
        "a live pair was declared dead under load"
    );
    assert_eq!(pairs(&ctl), before, "same pairs, same ids, all alive");
    let now: Vec<_> = devices.iter().map(|(d, _)| d.session().pair).collect();
    assert_eq!(now, homes, "no device moved");
}
