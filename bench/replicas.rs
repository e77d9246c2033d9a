//! Controller hand-over benchmark: how long writes go unanswered after kill -9 of the active
//! controller replica, with the file lock and with an etcd lease, over many kills.
//!
//! Two `zonecast controller` processes with their own data directories behind one lock; a
//! writer (the lazy-pirate client pairs and the CLI use, with both endpoints) creates scenes
//! back to back. Each round waits until the passive follows the active with no lag, SIGKILLs
//! the active, and measures from the kill to the first write acknowledged by the new active;
//! then restarts the killed replica on its data directory (it comes back passive) for the
//! next round. **file**: `flock` on a shared file (the kernel frees it at once); **etcd**: one
//! etcd member on loopback (Debian's `etcd-server`, raft timers as in tests/etcd.rs), a lease
//! of `--ttl` seconds (the holder's lease must run out). The baseline, in the same run: the
//! write round trip with both replicas up (p50/p99/p99.9), and the last write before each
//! kill. The etcd mode needs the `etcd` feature and the `etcd` binary; without them it is
//! skipped with a message.
//!
//! Usage: cargo bench --features etcd --bench replicas -- [--kills 20] [--ttl 2]
//!   [--lock both|file|etcd] [--report]   (also writes docs/bench/replicas.md, included in
//!   docs/BENCHMARKS.md)

#[path = "args.rs"]
mod args;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use args::arg;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use zonecast::control::client::ControlClient;

const TOKEN: &str = "bench-token";

/// A child process, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn replica(endpoint: &str, data: &Path, lock: &str) -> Proc {
    let log = std::fs::File::create(data.with_extension("log")).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_zonecast"))
        .args(["controller", "--control", endpoint, "--token", TOKEN])
        .arg("--data-dir")
        .arg(data)
        .args(["--lock", lock])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("zonecast controller starts");
    Proc(child)
}

fn etcd(dir: &Path) -> Option<(Proc, u16)> {
    let (client, peer) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .args(["--name", "e0", "--data-dir"])
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("e0={peer_url}")])
        .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
        .args(["--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some((Proc(child), client))
}

fn ask(endpoint: &str, req: &Value) -> Option<Value> {
    ControlClient::new(endpoint)
        .ok()?
        .with_timeout(Duration::from_millis(300))
        .with_retries(1)
        .request(req)
        .ok()
}

/// Which replica is active (by discovery), if exactly one says so.
fn active(endpoints: &[String]) -> Option<usize> {
    let roles: Vec<bool> = endpoints
        .iter()
        .map(|e| ask(e, &json!({"op": "discovery"})).is_some_and(|d| d["role"] == "active"))
        .collect();
    match roles.iter().filter(|a| **a).count() {
        1 => roles.iter().position(|a| *a),
        _ => None,
    }
}

/// Whether the active at `endpoint` sees a passive with no lag, heard from lately.
fn passive_in_sync(endpoint: &str) -> bool {
    let Some(st) = ask(endpoint, &json!({"op": "cluster.status", "token": TOKEN})) else {
        return false;
    };
    st["controllers"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            c["role"] == "passive"
                && c["lag"] == 0
                && c["seen_ms"].as_u64().unwrap_or(u64::MAX) < 300
        })
    })
}

fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The writer: scene.create with a fresh name each time.
struct Writer {
    client: ControlClient,
    n: u64,
}

impl Writer {
    fn new(endpoints: &[String]) -> Writer {
        let client = ControlClient::new(&endpoints.join(","))
            .expect("client")
            .with_timeout(Duration::from_millis(100))
            .with_retries(1);
        Writer { client, n: 0 }
    }

    /// One write attempt: whether it was acknowledged.
    fn write(&mut self) -> bool {
        self.n += 1;
        let req = json!({"op": "scene.create", "token": TOKEN,
            "name": format!("s{}", self.n), "region": "r"});
        self.client.request(&req).is_ok()
    }
}

fn us_hist() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("bounds")
}

/// `kills` rounds of kill -9 of the active behind `lock`: (write round trips with both up,
/// unavailability per kill), in microseconds.
fn run_mode(dir: &Path, lock: &str, kills: usize) -> (Histogram<u64>, Histogram<u64>) {
    let endpoints: Vec<String> = (0..2)
        .map(|_| format!("tcp://127.0.0.1:{}", free_port()))
        .collect();
    let data: Vec<_> = (0..2).map(|i| dir.join(format!("c{i}"))).collect();
    let mut procs: Vec<Proc> = (0..2)
        .map(|i| replica(&endpoints[i], &data[i], lock))
        .collect();
    let mut writer = Writer::new(&endpoints);
    let (mut round_trip, mut gaps) = (us_hist(), us_hist());
    for k in 0..kills {
        let mut a = None;
        wait_for("one active", 60, || {
            a = active(&endpoints);
            a.is_some()
        });
        let a = a.expect("active");
        wait_for("the passive in sync", 60, || passive_in_sync(&endpoints[a]));
        for _ in 0..20 {
            let start = Instant::now();
            if writer.write() {
                let _ = round_trip.record(start.elapsed().as_micros().max(1) as u64);
            }
        }
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(procs[a].0.id() as i32, libc::SIGKILL) };
        let killed = Instant::now();
        let _ = procs[a].0.wait();
        wait_for("a write after the kill", 120, || writer.write());
        let gap = killed.elapsed();
        let _ = gaps.record(gap.as_micros().max(1) as u64);
        println!(
            "  kill {}: writes answered again after {:.1} ms",
            k + 1,
            gap.as_secs_f64() * 1e3
        );
        procs[a] = replica(&endpoints[a], &data[a], lock);
    }
    (round_trip, gaps)
}

fn main() {
    let kills = arg("--kills", 20.0) as usize;
    let ttl = arg("--ttl", 2.0) as u64;
    let argv: Vec<String> = std::env::args().collect();
    let which = argv
        .iter()
        .position(|a| a == "--lock")
        .and_then(|i| argv.get(i + 1))
        .map(String::as_str)
        .unwrap_or("both");
    println!("controller hand-over benchmark: {kills} kills per lock, etcd lease TTL {ttl} s");
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut rows = Vec::new();
    if which == "both" || which == "file" {
        println!("lock file:");
        let d = dir.path().join("file");
        std::fs::create_dir_all(&d).expect("dir");
        let lock = d.join("controller.lock");
        rows.push(("file", run_mode(&d, lock.to_str().expect("utf-8"), kills)));
    }
    if which == "both" || which == "etcd" {
        let d = dir.path().join("etcd");
        std::fs::create_dir_all(&d).expect("dir");
        match (cfg!(feature = "etcd"), etcd(&d)) {
            (true, Some((_etcd, port))) => {
                println!("lock etcd (TTL {ttl} s):");
                let lock = format!("etcd://127.0.0.1:{port}/zc-bench?ttl={ttl}");
                rows.push(("etcd", run_mode(&d, &lock, kills)));
            }
            (false, _) => println!("lock etcd: skipped (build with --features etcd)"),
            (true, None) => {
                println!("lock etcd: skipped (no `etcd` binary: apt-get install etcd-server)")
            }
        }
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let mut md = format!(
        "## Controller hand-over\n\n`cargo bench --features etcd --bench replicas -- --kills {kills} --ttl {ttl} --report`: two `zonecast controller` replicas (own data directories, `--ack replica`) behind one lock; a writer with both endpoints (the lazy-pirate client: 100 ms timeout, then the other replica, `not_active` followed to the active) creates scenes back to back. Each round waits for the passive to follow with no lag, SIGKILLs the active and measures from the kill to the first write acknowledged again, then restarts the killed replica on its data directory. **file**: `flock` (freed by the kernel at once); **etcd**: one etcd member on loopback, lease TTL {ttl} s. Baseline, same run: write round trips with both replicas up (fsynced on both before the answer).\n\n| lock | kills | unavailable p50 | p99 | max | write round trip p50 | p99 | p99.9 |\n|------|------:|----:|----:|----:|----:|----:|----:|\n"
    );
    for (name, (rt, gaps)) in &rows {
        println!(
            "{name}: unavailable after kill -9 over {} kills: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms; write round trip p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms",
            gaps.len(),
            ms(gaps, 0.5),
            ms(gaps, 0.99),
            gaps.max() as f64 / 1000.0,
            ms(rt, 0.5),
            ms(rt, 0.99),
            ms(rt, 0.999)
        );
        md += &format!(
            "| {name} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} ms | {:.2} ms | {:.2} ms |\n",
            gaps.len(),
            ms(gaps, 0.5),
            ms(gaps, 0.99),
            gaps.max() as f64 / 1000.0,
            ms(rt, 0.5),
            ms(rt, 0.99),
            ms(rt, 0.999)
        );
    }
    md += &format!("\nWhat the unavailability is made of. **file**: the kernel frees the `flock` at once; the passive looks at the lock every 20 ms and takes it within that; the rest is the writer's: its request to the dead active times out after 100 ms, then a 25 ms back-off before the other endpoint (about 130 ms, mostly the client's timeout; a shorter one shortens it, at the cost of retries on a slow answer). **etcd**: the lease must lapse first (TTL {ttl} s), then the election: pick the TTL for the failover time wanted against the false take-overs a short lease risks on a loaded etcd host.\n");
    if argv.iter().any(|a| a == "--report") {
        std::fs::create_dir_all("docs/bench").expect("docs/bench");
        std::fs::write("docs/bench/replicas.md", md + "\n").expect("write docs/bench/replicas.md");
    }
}
