//! zonecast's benchmark suite: one-way latency and delivered throughput of one relay hop,
//! against the raw loopback floor and NATS core pub/sub, on the same workload and the same
//! harness, in the same run; plus a slow-device experiment and memory per session and object.
//!
//! The load generator runs on core 0; the server under test (a `zonecast pair` process, a
//! split pair's two processes, or `nats-server`) on core 1. `zonecast-mirrored` is a pair
//! streaming its state to a standby subscriber (the cost of replication on the hot path),
//! `zonecast-mirrored-encrypted` the same over a Noise-encrypted stream;
//! `zonecast-split` is `zonecast ingest` + `zonecast fanout` over ipc://. Every run writes a JSON file; `--report` also writes
//! docs/BENCHMARKS.md and its SVG plots. `scripts/bench` runs the whole suite.
//!
//! Usage: cargo bench --bench relay -- [--devices 8] [--scenes 1] [--hz 1000] [--payload 0]
//!   [--secs 5] [--warmup-secs 1] [--runs 3]
//!   [--modes raw,zonecast,zonecast-busy,zonecast-mirrored,zonecast-mirrored-encrypted,zonecast-split,nats]
//!   [--sweep 1000,5000,...] [--sweep-secs 2] [--slow] [--memory] [--report]
//!   [--out DIR] [--pair-args "--busy-poll"]

mod memory;
mod nats;
mod progress;
mod report;
mod servers;
mod udp;
mod workload;

use std::path::PathBuf;

use serde_json::{json, Value};
use zonecast::pair::SessionsFile;

use progress::Progress;
use report::{machine, Measured};
use workload::{Outcome, Workload};

#[global_allocator]
static ALLOC: memory::Counting = memory::Counting;

struct Args {
    w: Workload,
    runs: usize,
    modes: Vec<String>,
    sweep: Vec<f64>,
    sweep_secs: f64,
    slow: bool,
    memory: bool,
    report: bool,
    out: PathBuf,
    pair_args: Vec<String>,
}

fn parse_args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str| -> Option<String> {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1))
            .cloned()
    };
    let num = |name: &str, default: f64| -> f64 {
        get(name)
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name} takes a number"))
            })
            .unwrap_or(default)
    };
    let flag = |name: &str| argv.iter().any(|a| a == name);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let default_modes = if servers::nats_available() {
        "raw,zonecast,zonecast-busy,zonecast-mirrored,zonecast-mirrored-encrypted,zonecast-split,nats"
    } else {
        "raw,zonecast,zonecast-busy,zonecast-mirrored,zonecast-mirrored-encrypted,zonecast-split"
    };
    Args {
        w: Workload {
            devices: num("--devices", 8.0) as u32,
            scenes: num("--scenes", 1.0) as u32,
            hz: num("--hz", 1000.0),
            payload: num("--payload", 0.0) as usize,
            secs: num("--secs", 5.0),
            warmup_secs: num("--warmup-secs", 1.0),
            stuck: 0,
            extra_reads: false,
            spin: flag("--spin"),
        },
        runs: num("--runs", 1.0).max(1.0) as usize,
        modes: get("--modes")
            .unwrap_or_else(|| default_modes.into())
            .split(',')
            .map(str::to_string)
            .collect(),
        sweep: get("--sweep")
            .map(|s| {
                s.split(',')
                    .map(|v| v.parse().expect("--sweep takes rates"))
                    .collect()
            })
            .unwrap_or_default(),
        sweep_secs: num("--sweep-secs", 2.0),
        slow: flag("--slow"),
        memory: flag("--memory"),
        report: flag("--report"),
        out: get("--out")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(format!("bench-results/{stamp}"))),
        pair_args: get("--pair-args")
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
    }
}

/// Runs `w` once in `mode`; the server (if any) lives for this run only.
fn measure(a: &Args, w: &Workload, mode: &str, label: &str) -> Outcome {
    let sessions = SessionsFile::generate(1, w.devices + w.stuck, w.scenes);
    let server_cpu = (std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        > 1)
    .then_some(1);
    let mut progress = Progress::new(format!("{mode} {label}"));
    let outcome = match mode {
        "raw" => udp::run(w, udp::Path::Raw, &sessions, &mut progress),
        "zonecast" | "zonecast-busy" => {
            let dir = std::env::temp_dir().join(format!("zc-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let path = dir.join("sessions.json");
            std::fs::write(&path, sessions.to_json()).expect("sessions file");
            let mut args = a.pair_args.clone();
            if mode == "zonecast-busy" {
                args.push("--busy-poll".into());
            }
            let pair = servers::zonecast_pair("pair", &path, server_cpu, &args);
            let mut o = udp::run(w, udp::Path::Relay(pair.addr), &sessions, &mut progress);
            if let Some(m) = pair.metrics {
                o.server_drops = servers::pair_drops(m);
            }
            o
        }
        "zonecast-mirrored" | "zonecast-mirrored-encrypted" | "zonecast-split" => {
            let dir = std::env::temp_dir().join(format!("zc-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let path = dir.join("sessions.json");
            std::fs::write(&path, sessions.to_json()).expect("sessions file");
            let pair = if mode == "zonecast-split" {
                servers::zonecast_split(&path, server_cpu, &a.pair_args)
            } else {
                let encrypted = mode == "zonecast-mirrored-encrypted";
                servers::zonecast_mirrored(&path, server_cpu, &a.pair_args, encrypted)
            };
            let mut o = udp::run(w, udp::Path::Relay(pair.addr), &sessions, &mut progress);
            if let Some(m) = pair.metrics {
                o.server_drops = servers::pair_drops(m);
            }
            o
        }
        "nats" => {
            let server = servers::nats_server(server_cpu);
            nats::run(w, server.addr, &sessions, &mut progress)
        }
        other => panic!(
            "unknown mode {other}: raw, zonecast, zonecast-busy, zonecast-mirrored, zonecast-mirrored-encrypted, zonecast-split or nats"
        ),
    };
    progress.done();
    outcome
}

fn save(a: &Args, name: &str, value: &Value) {
    std::fs::create_dir_all(&a.out).expect("results folder");
    let path = a.out.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(value).expect("json"))
        .expect("write result");
}

fn main() {
    let a = parse_args();
    servers::pin(0);
    let mach = machine();
    println!(
        "benchmark: {} | modes {} | results in {}",
        mach["cpu"].as_str().unwrap_or("?"),
        a.modes.join(","),
        a.out.display()
    );
    let mut measured = Measured::default();

    println!("\nlatency: {} devices x {} Hz in {} scene(s), payload {} B, {} s (+{} s warm-up), {} run(s)",
        a.w.devices, a.w.hz, a.w.scenes, a.w.payload, a.w.secs, a.w.warmup_secs, a.runs);
    for run in 0..a.runs {
        let mut order = a.modes.clone();
        let n = order.len().max(1);
        order.rotate_left(run % n);
        for mode in &order {
            let o = measure(&a, &a.w, mode, &format!("run {}", run + 1));
            report::print_row(mode, &o);
            save(
                &a,
                &format!("latency-{mode}-run{}", run + 1),
                &json!({
                    "kind": "latency", "mode": mode, "run": run + 1, "workload": a.w.to_json(),
                    "machine": mach, "pair_args": a.pair_args, "result": o.to_json(),
                }),
            );
            measured.latency.push((mode.clone(), o));
        }
    }
    measured.print_latency_summary();

    if !a.sweep.is_empty() {
        println!(
            "\nthroughput vs offered load ({} s per level)",
            a.sweep_secs
        );
        for &hz in &a.sweep {
            let w = Workload {
                hz,
                secs: a.sweep_secs,
                warmup_secs: 0.5,
                ..a.w.clone()
            };
            // Busy polling is a latency option; throughput is measured in the default mode.
            // The pair's variants are compared on latency; throughput sweeps the main modes.
            for mode in a.modes.iter().filter(|m| !m.starts_with("zonecast-")) {
                let o = measure(&a, &w, mode, &format!("{hz} Hz"));
                println!("  {mode:>9} offered {:>10.0}/s  delivered {:>10.0}/s ({:>6.2}%)  p99 {:>9.1}us",
                    w.offered_per_sec(), o.delivered_per_sec(),
                    100.0 * o.delivered_per_sec() / w.offered_per_sec(), o.us(0.99));
                save(
                    &a,
                    &format!("throughput-{mode}-{hz}hz"),
                    &json!({
                        "kind": "throughput", "mode": mode, "workload": w.to_json(), "machine": mach,
                        "pair_args": a.pair_args, "offered_per_sec": w.offered_per_sec(), "result": o.to_json(),
                    }),
                );
                measured
                    .throughput
                    .push((mode.clone(), w.offered_per_sec(), o));
            }
        }
    }

    if a.slow {
        println!("\nslow device: zonecast, the same workload plus one device that sends nothing and reads (stuck=0) or never reads (stuck=1)");
        for run in 0..a.runs {
            for stuck in [0, 1] {
                let w = Workload {
                    stuck: 1,
                    extra_reads: stuck == 0,
                    ..a.w.clone()
                };
                let label = format!("stuck={stuck} run {}", run + 1);
                let o = measure(&a, &w, "zonecast", &label);
                report::print_row(&format!("stuck={stuck}"), &o);
                let json = json!({
                    "kind": "slow_device", "stuck": stuck, "workload": w.to_json(),
                    "machine": mach, "result": o.to_json(),
                });
                save(&a, &format!("slow-stuck{stuck}-run{}", run + 1), &json);
                measured.slow.push((stuck, o));
            }
        }
    }

    if a.memory {
        println!("\nmemory: 100k sessions joined over 100 scenes, 1M objects");
        let m = memory::measure(100_000, 1_000_000, 100);
        println!(
            "  {:.0} bytes per session (ingest {:.0} + fanout {:.0}), {:.0} bytes per object",
            m["bytes_per_session"].as_f64().unwrap_or(0.0),
            m["bytes_per_session_ingest"].as_f64().unwrap_or(0.0),
            m["bytes_per_session_fanout"].as_f64().unwrap_or(0.0),
            m["bytes_per_object"].as_f64().unwrap_or(0.0)
        );
        save(
            &a,
            "memory",
            &json!({"kind": "memory", "machine": mach, "result": m}),
        );
        measured.memory = Some(m);
    }

    if a.report {
        let cmd = std::env::args()
            .skip(1)
            .filter(|x| x != "--bench")
            .collect::<Vec<_>>()
            .join(" ");
        report::write(&measured, &a.w, a.runs, &mach, &cmd, &a.out).expect("report written");
        println!("\nwrote docs/BENCHMARKS.md and docs/bench/*.svg");
    }
}
