//! Failover benchmark: how long devices go without updates when the pair serving their scene
//! fails under load, and whether a loaded host fails any live pair over.
//!
//! A controller (in-process) and two `zonecast pair` processes in one region; a sender device
//! moves an object at R Hz, a receiver listens; both use the client's `Roaming` (keepalive,
//! locate after silence, move and re-join). Each round fails the serving pair, measures the
//! gap at the receiver (its longest silence from the last update before the failure to the
//! first one after it was on the new pair: updates still in flight from the old pair do not
//! end it), then starts a fresh pair so the next round has somewhere to go. Modes, run one after the other
//! in the same process:
//! - **standby**: SIGKILL; pairs stream their state, the next kill waits until the standby is
//!   in sync. The standby sees the stream break and reports it, the controller probes the
//!   suspect, the closed port refuses, the standby takes over and redirects the devices.
//! - **locate**: SIGKILL, `--no-bus`: no standby. The heartbeat is two intervals late, the
//!   probe is refused, the scene starts afresh on the other pair; devices find it by
//!   `device.locate` after their keepalives go unanswered.
//! - **silent**: SIGSTOP with a standby (a silent host: no refusal, no answer): the heartbeat
//!   window decides. The stopped pair is then killed.
//!
//! `--hog` runs every mode again with both cores saturated (`stress-ng`, or busy loops when
//! it is missing); `--soak SECS` runs the cluster that long under the hog with no failure at
//! all and counts false failovers. The baseline, measured in the same run, is the receiver's
//! steady inter-arrival gap before each failure (the sender's period plus the path's jitter).
//!
//! Usage: cargo bench --bench rehome -- [--kills 50] [--hz 500]
//!   [--mode standby,locate,silent] [--hog] [--soak 300]
//!   [--report]   (also writes docs/bench/failover.md, included in docs/BENCHMARKS.md)

#[path = "args.rs"]
mod args;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use args::arg;
use hdrhistogram::Histogram;
use serde_json::json;
use zonecast::client::{Device, Event, Roaming, Session};
use zonecast::control::client::ControlClient;
use zonecast::control::server::ControllerServer;
use zonecast::control::stats::Detection;
use zonecast::control::Config;
use zonecast::wire::{Fields, MASK_TRANSLATION};

const TOKEN: &str = "bench-token";
const REGION: &str = "bench";

/// A pair process registered with the controller; returns it with its UDP endpoint.
fn start_pair(control: &str, standby: bool) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zonecast"))
        .args(["pair", "--listen", "127.0.0.1:0", "--stats-every-secs", "0"])
        .args(["--control", control, "--region", REGION, "--token", TOKEN])
        .args(if standby { &[][..] } else { &["--no-bus"][..] })
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("zonecast pair starts");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("pair banner");
    let udp = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("udp="))
        .expect("udp= in banner")
        .to_string();
    (child, udp)
}

fn status(client: &mut ControlClient) -> serde_json::Value {
    client
        .request(&json!({"op": "cluster.status", "token": TOKEN}))
        .expect("status")
}

fn live_pairs(client: &mut ControlClient) -> usize {
    status(client)["pairs"]
        .as_array()
        .map(|p| p.iter().filter(|p| p["alive"] == true).count())
        .unwrap_or(0)
}

/// Whether the pair serving `scene` has a standby in sync.
fn standby_synced(client: &mut ControlClient, scene: u32) -> bool {
    let st = status(client);
    let serving = st["scenes"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == scene))
        .map(|s| s["pair"].clone());
    st["pairs"]
        .as_array()
        .and_then(|p| p.iter().find(|p| Some(&p["id"]) == serving.as_ref()))
        .is_some_and(|p| p["standby_state"] == "synced")
}

/// Both cores (all of them) saturated until dropped: `stress-ng --cpu 2N`, or busy shells.
struct Hog(Vec<Child>);

impl Hog {
    fn start() -> Hog {
        let n = 2 * std::thread::available_parallelism().map_or(2, |n| n.get());
        let stress = Command::new("stress-ng")
            .args(["--cpu", &n.to_string(), "--timeout", "3600s", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match stress {
            Ok(c) => Hog(vec![c]),
            Err(_) => Hog((0..n)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("sh")
                })
                .collect()),
        }
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        // stress-ng's workers follow their parent.
        let _ = Command::new("pkill").args(["-x", "stress-ng"]).status();
    }
}

/// How a round fails the serving pair.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Failure {
    Kill,
    Stop,
}

/// One mode's outcome.
struct Outcome {
    name: String,
    gaps: Histogram<u64>,
    /// The receiver's steady inter-arrival gaps before the failures, in microseconds.
    steady: Histogram<u64>,
    detection: Detection,
    missed: usize,
}

fn main() {
    let kills = arg("--kills", 20.0) as usize;
    let hz = arg("--hz", 500.0);
    let soak = arg("--soak", 0.0);
    let argv: Vec<String> = std::env::args().collect();
    let flag = |name: &str| argv.iter().any(|a| a == name);
    let modes: Vec<String> = argv
        .iter()
        .position(|a| a == "--mode")
        .and_then(|i| argv.get(i + 1))
        .map_or("standby,locate,silent", String::as_str)
        .split(',')
        .map(str::to_string)
        .collect();
    let config = Config::new(TOKEN);
    println!(
        "failover benchmark: {kills} failures per mode, sender at {hz} Hz, heartbeat {} ms, window {}..{} ms",
        config.heartbeat_interval.as_millis(),
        config.dead_after.as_millis(),
        config.dead_after_max.as_millis()
    );
    let mut results = Vec::new();
    let hogs: &[bool] = if flag("--hog") {
        &[false, true]
    } else {
        &[false]
    };
    for &hog in hogs {
        for mode in &modes {
            let (standby, failure) = match mode.as_str() {
                "standby" => (true, Failure::Kill),
                "locate" => (false, Failure::Kill),
                "silent" => (true, Failure::Stop),
                other => panic!("unknown mode {other} (standby, locate, silent)"),
            };
            let name = if hog {
                format!("{mode}, CPU hog")
            } else {
                mode.clone()
            };
            println!("mode {name}:");
            let _hog = hog.then(Hog::start);
            let o = run_mode(&config, standby, failure, kills, hz);
            results.push(Outcome { name, ..o });
        }
    }
    let soaked = (soak > 0.0).then(|| {
        println!("soak: {soak} s under a CPU hog, no failure");
        let _hog = Hog::start();
        run_soak(&config, Duration::from_secs_f64(soak), hz)
    });

    let mut md = format!(
        "## Failover\n\n`cargo bench --bench rehome -- {} --report`: a controller and two `zonecast pair` processes in one region, a sender at {hz} Hz and a receiver (both with the client's `Roaming`); each round fails the pair serving the scene under traffic and measures the gap at the receiver (its longest silence from the last update before the failure to its first update on the new pair), then starts a fresh pair. **standby**: SIGKILL; the standby sees its stream break and says so, the controller probes the suspect (an authenticated UDP datagram to its port), the closed port refuses, the standby takes over and redirects the devices in the same burst. **locate**: SIGKILL with `--no-bus`, no standby: the heartbeat is two intervals late, the probe is refused, the scene starts afresh on the other pair and devices find it by `device.locate` after 100 ms of silence (one unanswered keepalive). **silent**: SIGSTOP with a standby (a silent host: no refusal, no answer): the heartbeat window decides. **CPU hog**: the same with `stress-ng --cpu 2N` saturating every core. Baseline, same run: the receiver's steady inter-arrival gap before each failure. Heartbeat {} ms, window {}..{} ms (twice the longest recent heartbeat gap).\n\n| mode | failures | gap p50 | gap p99 | gap max | steady gap p99 (baseline) | confirmed by probe | silent | false failovers |\n|------|------:|----:|----:|----:|----:|----:|----:|----:|\n",
        argv[1..]
            .iter()
            .filter(|a| *a != "--report" && *a != "--bench")
            .cloned()
            .collect::<Vec<_>>()
            .join(" "),
        config.heartbeat_interval.as_millis(),
        config.dead_after.as_millis(),
        config.dead_after_max.as_millis()
    );
    for o in &results {
        let line = format!(
            "{} over {} failures ({} without an update within 10 s): gap p50 {} ms  p99 {} ms  max {} ms; steady gap p99 {:.2} ms; deaths confirmed {}, silent {}, revived {}",
            o.name,
            o.gaps.len(),
            o.missed,
            o.gaps.value_at_quantile(0.5),
            o.gaps.value_at_quantile(0.99),
            o.gaps.max(),
            o.steady.value_at_quantile(0.99) as f64 / 1000.0,
            o.detection.deaths_confirmed,
            o.detection.deaths_silent,
            o.detection.revivals,
        );
        println!("{line}");
        md += &format!(
            "| {} | {} | {} ms | {} ms | {} ms | {:.2} ms | {} | {} | {} |\n",
            o.name,
            o.gaps.len(),
            o.gaps.value_at_quantile(0.5),
            o.gaps.value_at_quantile(0.99),
            o.gaps.max(),
            o.steady.value_at_quantile(0.99) as f64 / 1000.0,
            o.detection.deaths_confirmed,
            o.detection.deaths_silent,
            o.detection.revivals,
        );
    }
    for o in results.iter().filter(|o| o.name.starts_with("standby")) {
        let p99 = o.gaps.value_at_quantile(0.99);
        let ok = if p99 < 50 { "met" } else { "missed" };
        md += &format!(
            "\nAim: failover with a standby after kill -9 under 50 ms p99 ({}): {p99} ms, **{ok}**.",
            o.name
        );
    }
    if let Some((secs, d, pairs_ok)) = soaked {
        let false_failovers = d.deaths_confirmed + d.deaths_silent;
        let ok = if false_failovers == 0 && pairs_ok {
            "met"
        } else {
            "missed"
        };
        let line = format!(
            "soak: {secs:.0} s, every core saturated, no failure injected: {false_failovers} pairs declared dead, {} revived; {} probes answered, {} timed out; {} controller stalls credited; same pair ids throughout: {pairs_ok}",
            d.revivals, d.probes_answered, d.probes_timed_out, d.stalls
        );
        println!("{line}");
        md += &format!(
            "\n\nSoak (`--soak {soak:.0}`): {secs:.0} s with every core saturated and no failure injected: **{false_failovers} false failovers** ({} revivals; {} probes answered, {} timed out; {} controller stalls credited; the same pair ids throughout: {pairs_ok}). Aim: zero false failovers, **{ok}**.",
            d.revivals, d.probes_answered, d.probes_timed_out, d.stalls
        );
    }
    md += "\n\n";
    if flag("--report") {
        std::fs::create_dir_all("docs/bench").expect("docs/bench");
        std::fs::write("docs/bench/failover.md", md).expect("write docs/bench/failover.md");
    }
}

/// A controller, two pairs (streaming their state when `standby`), one scene; returns the
/// server, an operator client and the scene.
fn cluster(
    config: &Config,
    standby: bool,
) -> (ControllerServer, ControlClient, Vec<(Child, String)>, u32) {
    let server = ControllerServer::start("tcp://127.0.0.1:0", config.clone(), Default::default())
        .expect("controller");
    let control = server.endpoint().to_string();
    // Operator requests only (status, scene): patient, so a loaded host (CI shares 2 cores)
    // slows the set-up down instead of aborting the run (one CI run lost 3 s of replies).
    let mut client = ControlClient::new(&control)
        .expect("client")
        .with_timeout(Duration::from_secs(2))
        .with_retries(10);
    let pairs = vec![start_pair(&control, standby), start_pair(&control, standby)];
    while live_pairs(&mut client) < 2 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let scene = client
        .request(&json!({"op": "scene.create", "token": TOKEN, "name": "bench", "region": REGION}))
        .expect("scene")["scene"]["id"]
        .as_u64()
        .expect("id") as u32;
    (server, client, pairs, scene)
}

/// A registered, joined device of `scene`.
fn device(client: &mut ControlClient, scene: u32) -> Device {
    let reg = client.register_device(scene, None, None).expect("register");
    let mut d = Device::connect(Session {
        device: reg.location.device,
        scene,
        key: reg.key,
        pair: reg.location.udp,
    })
    .expect("socket");
    d.set_epoch(reg.location.epoch);
    assert!(d
        .join_until_snapshot(0.0, Duration::from_secs(5))
        .expect("join")
        .is_some());
    d
}

/// A sender moving object 1 at `hz` and a receiver, both roaming.
struct Traffic {
    sender: Device,
    receiver: Device,
    roam_s: Roaming,
    roam_r: Roaming,
    period: Duration,
    next_send: Instant,
    x: f32,
    /// When the sender and the receiver were first seen on another pair since the last reset.
    moved: [Option<Instant>; 2],
}

impl Traffic {
    fn new(control: &str, client: &mut ControlClient, scene: u32, hz: f64) -> Traffic {
        Traffic {
            sender: device(client, scene),
            receiver: device(client, scene),
            roam_s: Roaming::new(ControlClient::new(control).expect("client")),
            roam_r: Roaming::new(ControlClient::new(control).expect("client")),
            period: Duration::from_secs_f64(1.0 / hz),
            next_send: Instant::now(),
            x: 0.0,
            moved: [None, None],
        }
    }

    /// Drives both devices until `until` says stop (10 s at most); returns the arrival
    /// instants of updates at the receiver.
    fn run(&mut self, until: &mut dyn FnMut(&[Instant], Option<Instant>) -> bool) -> Vec<Instant> {
        let mut arrivals = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let homes = [self.sender.session().pair, self.receiver.session().pair];
        while !until(&arrivals, self.moved[1]) && Instant::now() < deadline {
            let now = Instant::now();
            let _ = self.roam_s.poll(&mut self.sender, now);
            let _ = self.roam_r.poll(&mut self.receiver, now);
            let pairs = [self.sender.session().pair, self.receiver.session().pair];
            for i in 0..2 {
                if pairs[i] != homes[i] && self.moved[i].is_none() {
                    self.moved[i] = Some(Instant::now());
                }
            }
            if now >= self.next_send {
                self.x += 1.0;
                let f = Fields {
                    translation: [self.x, 0.0, 0.0],
                    ..Fields::default()
                };
                let _ = self.sender.update(1, MASK_TRANSLATION, &f, &[]);
                self.next_send += self.period;
                if self.next_send < now {
                    self.next_send = now + self.period;
                }
            }
            let wait = self
                .next_send
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(1));
            while let Ok(Some(e)) = self.receiver.recv(wait) {
                if let Event::Update(_) = e {
                    arrivals.push(Instant::now());
                }
            }
            while let Ok(Some(_)) = self.sender.try_recv() {}
        }
        arrivals
    }
}

/// Runs `kills` rounds with pairs that stream their state (`standby`) or not, failing the
/// serving pair by `failure`.
fn run_mode(config: &Config, standby: bool, failure: Failure, kills: usize, hz: f64) -> Outcome {
    let (server, mut client, mut pairs, scene) = cluster(config, standby);
    let control = server.endpoint().to_string();
    let mut t = Traffic::new(&control, &mut client, scene, hz);
    let mut gaps = Histogram::<u64>::new_with_bounds(1, 60_000, 3).expect("bounds");
    let mut steady = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut missed = 0;
    for round in 1..=kills {
        while standby && !standby_synced(&mut client, scene) {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Steady traffic first: the baseline.
        let warm_until = Instant::now() + Duration::from_millis(300);
        let before = t.run(&mut |_, _| Instant::now() >= warm_until);
        for w in before.windows(2) {
            let _ = steady.record(w[1].duration_since(w[0]).as_micros().max(1) as u64);
        }
        let Some(&last_before) = before.last() else {
            println!("round {round}: no traffic before the failure; skipped");
            continue;
        };
        let serving = t.receiver.session().pair.to_string();
        let Some(idx) = pairs.iter().position(|(_, udp)| *udp == serving) else {
            println!("round {round}: serving pair {serving} unknown; skipped");
            continue;
        };
        let (mut victim, _) = pairs.remove(idx);
        match failure {
            Failure::Kill => victim.kill().expect("SIGKILL"),
            Failure::Stop => {
                let pid = victim.id().to_string();
                let _ = Command::new("kill").args(["-STOP", &pid]).status();
            }
        }
        let failed = Instant::now();
        t.moved = [None, None];
        // Until the receiver is on another pair and an update reached it there: what still
        // came from the old pair (in flight, or sent before a SIGSTOP took hold) is not the
        // end of the gap.
        let after = t.run(&mut |a, moved| moved.is_some_and(|m| a.last().is_some_and(|l| *l > m)));
        // The gap: the longest silence at the receiver from its last update before the
        // failure to its first on the new pair.
        let split = t.moved[1].map_or(after.len(), |m| after.partition_point(|a| *a <= m));
        let end = (split < after.len()).then_some(split);
        let hole = end.map(|end| {
            std::iter::once(&last_before)
                .chain(&after[..=end])
                .collect::<Vec<_>>()
                .windows(2)
                .map(|w| w[1].duration_since(*w[0]))
                .max()
                .unwrap_or_default()
        });
        let moved = t.moved.map(|m| {
            m.map_or("-".to_string(), |at: Instant| {
                format!("{:.1}", at.duration_since(failed).as_secs_f64() * 1000.0)
            })
        });
        let _ = victim.kill();
        let _ = victim.wait();
        match hole {
            Some(gap) => {
                let _ = gaps.record(gap.as_millis().max(1) as u64);
                println!(
                    "round {round:>3}: gap {:>6.1} ms (failure {:>5.1} ms after the last update; sender moved after {} ms, receiver after {} ms)",
                    gap.as_secs_f64() * 1000.0,
                    failed.duration_since(last_before).as_secs_f64() * 1000.0,
                    moved[0],
                    moved[1],
                );
            }
            None => {
                missed += 1;
                println!("round {round:>3}: no update within 10 s of the failure");
            }
        }
        pairs.push(start_pair(&control, standby));
        while live_pairs(&mut client) < 2 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    for (mut c, _) in pairs {
        let _ = c.kill();
        let _ = c.wait();
    }
    Outcome {
        name: String::new(),
        gaps,
        steady,
        detection: server.stats().detection(),
        missed,
    }
}

/// The cluster with standbys under traffic for `secs`, nothing failed: what the controller
/// declared, and whether the same pairs were alive under the same ids at every look.
fn run_soak(config: &Config, secs: Duration, hz: f64) -> (f64, Detection, bool) {
    let (server, mut client, pairs, scene) = cluster(config, true);
    let control = server.endpoint().to_string();
    let mut t = Traffic::new(&control, &mut client, scene, hz);
    let ids = |client: &mut ControlClient| -> Vec<(u64, bool)> {
        let st = status(client);
        st["pairs"]
            .as_array()
            .map(|p| {
                p.iter()
                    .map(|p| (p["id"].as_u64().unwrap_or(0), p["alive"] == true))
                    .collect()
            })
            .unwrap_or_default()
    };
    let first = ids(&mut client);
    let start = Instant::now();
    let mut same = true;
    while start.elapsed() < secs {
        let look = Instant::now() + Duration::from_secs(1);
        t.run(&mut |_, _| Instant::now() >= look);
        same &= ids(&mut client) == first;
    }
    for (mut c, _) in pairs {
        let _ = c.kill();
        let _ = c.wait();
    }
    (
        start.elapsed().as_secs_f64(),
        server.stats().detection(),
        same,
    )
}
