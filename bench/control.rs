//! Control-plane cost, plain vs encrypted, in one run: round-trip latency of one client
//! (p50/p99/p99.9) and requests per second of several clients in parallel, for the request a
//! cluster sends most (`pair.heartbeat`, 20 per second per pair), through the lazy-pirate REQ
//! client pairs use. Three servers on loopback, each measured the same way:
//! **echo**: a bare libzmq ROUTER that answers every request with a fixed reply (the floor:
//! ZeroMQ alone); **plain**: the controller; **curve**: the controller with CurveZMQ;
//! **durable**: the controller with a data directory (heartbeats write nothing: the same cost
//! as plain is expected). Then writes (`device.register`, one new device with its session key
//! each) from the same clients, in memory against fsynced to a data directory (group commit:
//! one fsync per burst of requests), in the same run. Last, **process**: `zonecast
//! controller` as a process of its own with a data directory, whose CPU time (its loop and
//! libzmq's I/O thread, from /proc) over the throughput phase gives the heartbeats one core
//! sustains (served / CPU-seconds), as the clients on the same 2 cores bound the rate seen.
//!
//! Usage: cargo bench --bench control -- [--requests 5000] [--clients 4] [--secs 3] [--report]
//!   (`--report` also writes docs/bench/control.md, included in docs/BENCHMARKS.md)

#[path = "args.rs"]
mod args;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use args::arg;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use zonecast::control::client::ControlClient;
use zonecast::control::server::{ControllerServer, ServerOptions, LIMITS};
use zonecast::control::Config;
use zonecast::net::zeromq::{self, Curve};
use zonecast::security::{KeyPair, PublicKey};

const TOKEN: &str = "bench";

/// A server under test and what a client sends it.
struct Target {
    endpoint: String,
    key: Option<PublicKey>,
    request: Value,
    _controller: Option<ControllerServer>,
    _echo: Option<Echo>,
    process: Option<Process>,
}

/// A `zonecast controller` child, killed on drop.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    /// CPU time used so far (user + system, every thread), from /proc/PID/stat.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id())).expect("stat");
        // Fields after the command name (which is in parentheses): utime is the 12th, stime
        // the 13th.
        let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|v| v.parse().expect("ticks"))
            .collect();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Duration::from_secs_f64((f[0] + f[1]) as f64 / hz)
    }
}

/// A libzmq ROUTER answering every message with a fixed reply, on its own thread.
struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn echo() -> Target {
    let socket =
        zeromq::socket(zmq::ROUTER, &LIMITS, &Curve::Off, "tcp://127.0.0.1:0").expect("socket");
    socket.bind("tcp://127.0.0.1:0").expect("bind");
    let endpoint = socket
        .get_last_endpoint()
        .expect("endpoint")
        .expect("utf-8");
    let stop = Arc::new(AtomicBool::new(false));
    let halt = stop.clone();
    let thread = std::thread::spawn(move || {
        let reply = br#"{"ok":true,"epoch":1}"#;
        while !halt.load(Relaxed) {
            if socket.poll(zmq::POLLIN, 50).unwrap_or(0) == 0 {
                continue;
            }
            while let Ok(mut frames) = socket.recv_multipart(zmq::DONTWAIT) {
                frames.pop();
                frames.push(reply.to_vec());
                let _ = socket.send_multipart(frames, zmq::DONTWAIT);
            }
        }
    });
    Target {
        endpoint,
        key: None,
        request: json!({"op": "discovery"}),
        _controller: None,
        process: None,
        _echo: Some(Echo {
            stop,
            thread: Some(thread),
        }),
    }
}

/// The controller with one registered pair, whose heartbeat is the request.
fn controller(encrypted: bool) -> Target {
    controller_in(encrypted, None)
}

/// A controller (CURVE or plain), its state in `data_dir` or in memory.
fn controller_in(encrypted: bool, data_dir: Option<std::path::PathBuf>) -> Target {
    let key = encrypted.then(KeyPair::generate);
    let public = key.as_ref().map(KeyPair::public);
    let mut config = Config::new(TOKEN);
    // The one pair is a stand-in (nothing listens on its UDP port), heartbeated only while
    // heartbeats are measured: a long interval and window, so it is never overdue, probed
    // (its closed port would refuse) and declared dead in the other rows.
    config.heartbeat_interval = Duration::from_secs(30);
    config.dead_after = Duration::from_secs(60);
    config.encrypted = encrypted;
    // Registrations at full speed from one address, into one scene.
    config.register.per_sec = 1e9;
    config.register.burst = u32::MAX;
    config.max_devices_per_scene = usize::MAX;
    let options = ServerOptions {
        curve: key.map_or(Curve::Off, Curve::Server),
        data_dir,
        ..ServerOptions::default()
    };
    let server = ControllerServer::start("tcp://127.0.0.1:0", config, options).expect("start");
    let endpoint = server.endpoint().to_string();
    Target {
        _controller: Some(server),
        ..with_pair(endpoint, public)
    }
}

/// `zonecast controller` as a process of its own, with a data directory in `dir`.
fn controller_process(dir: &std::path::Path) -> Target {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_zonecast"))
        .args(["controller", "--control", &endpoint, "--token", TOKEN])
        .args([
            "--heartbeat-ms",
            "30000",
            "--dead-after-ms",
            "60000",
            "--dead-after-max-ms",
            "120000",
            "--data-dir",
        ])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("zonecast controller starts");
    Target {
        process: Some(Process(child)),
        ..with_pair(endpoint, None)
    }
}

/// A target at `endpoint` with one pair registered, whose heartbeat is the request.
fn with_pair(endpoint: String, public: Option<PublicKey>) -> Target {
    let mut client = patient(&endpoint, public);
    let pair = client
        .request(
            &json!({"op": "pair.register", "token": TOKEN, "region": "r",
            "udp": "127.0.0.1:9", "capacity": 100, "version": "bench"}),
        )
        .expect("register")["pair"]
        .as_u64()
        .expect("pair id");
    let epoch = client
        .request(&json!({"op": "pair.heartbeat", "token": TOKEN, "pair": pair, "epoch": 0}))
        .expect("heartbeat")["epoch"]
        .as_u64()
        .expect("epoch");
    Target {
        endpoint,
        key: public,
        request: json!({"op": "pair.heartbeat", "token": TOKEN, "pair": pair, "epoch": epoch,
            "load": {"joined": 100, "objects": 100, "datagrams_in_per_sec": 1000.0,
                     "datagrams_out_per_sec": 8000.0, "dropped": 0}}),
        _controller: None,
        _echo: None,
        process: None,
    }
}

/// The same controller, measured with `device.register` instead of heartbeats.
fn registrations(mut t: Target) -> Target {
    let mut c = client(&t);
    let scene = c
        .request(&json!({"op": "scene.create", "token": TOKEN, "name": "bench", "region": "r"}))
        .expect("scene")["scene"]["id"]
        .as_u64()
        .expect("scene id");
    t.request = json!({"op": "device.register", "scene": scene});
    t
}

fn client(t: &Target) -> ControlClient {
    patient(&t.endpoint, t.key)
}

/// A client that waits out a loaded host (CI shares two cores): the set-up and the
/// measured requests slow down instead of aborting the run.
fn patient(endpoint: &str, key: Option<PublicKey>) -> ControlClient {
    ControlClient::new(endpoint)
        .expect("client")
        .with_server_key(key)
        .with_timeout(Duration::from_secs(5))
        .with_retries(5)
}

/// One client, `n` requests back to back: round-trip times.
fn latency(t: &Target, n: u64) -> Histogram<u64> {
    let mut c = client(t);
    for _ in 0..100 {
        c.request(&t.request).expect("warm-up");
    }
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("bounds");
    for _ in 0..n {
        let start = Instant::now();
        c.request(&t.request).expect("request");
        let _ = h.record(start.elapsed().as_nanos().max(1) as u64);
    }
    h
}

/// `clients` threads sending for `secs`: requests answered per second.
fn throughput(t: &Target, clients: usize, secs: f64) -> f64 {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let done: u64 = std::thread::scope(|s| {
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let mut c = client(t);
                    let mut n = 0u64;
                    while Instant::now() < until {
                        c.request(&t.request).expect("request");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        threads.into_iter().map(|h| h.join().expect("client")).sum()
    });
    done as f64 / secs
}

/// How one row's server is made.
type Make<'a> = Box<dyn Fn() -> Target + 'a>;

fn main() {
    let n = arg("--requests", 5000.0) as u64;
    let clients = arg("--clients", 4.0) as usize;
    let secs = arg("--secs", 3.0);
    println!("control plane: {n} round trips from one client; {clients} clients for {secs} s");
    let mut rows = Vec::new();
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = |name: &str| Some(dir.path().join(name));
    let targets: [(&str, Make); 7] = [
        ("echo", Box::new(echo)),
        ("plain", Box::new(|| controller(false))),
        ("curve", Box::new(|| controller(true))),
        ("durable", Box::new(|| controller_in(false, data("hb")))),
        (
            "register, memory",
            Box::new(|| registrations(controller(false))),
        ),
        (
            "register, fsync",
            Box::new(|| registrations(controller_in(false, data("reg")))),
        ),
        (
            "process",
            Box::new(|| controller_process(&dir.path().join("process"))),
        ),
    ];
    let mut per_core = None;
    for (name, make) in &targets {
        let name = *name;
        let t = make();
        let h = latency(&t, n);
        let cpu_before = t.process.as_ref().map(Process::cpu);
        let rps = throughput(&t, clients, secs);
        if let (Some(p), Some(before)) = (&t.process, cpu_before) {
            let cpu = (p.cpu() - before).as_secs_f64();
            let served = rps * secs;
            println!(
                "  controller process: {:.2} CPU-s for {served:.0} heartbeats: {:.0} per CPU-second ({:.0}% of a core)",
                cpu,
                served / cpu,
                100.0 * cpu / secs
            );
            per_core = Some((served / cpu, 100.0 * cpu / secs));
        }
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "  {name:>16}: p50 {:>7.1}us  p99 {:>7.1}us  p99.9 {:>8.1}us  {rps:>8.0} req/s ({clients} clients)",
            us(0.5),
            us(0.99),
            us(0.999)
        );
        rows.push((name, us(0.5), us(0.99), us(0.999), rps));
    }
    let plain = rows[1];
    let curve = rows[2];
    let (memory, fsync) = (rows[4], rows[5]);
    println!(
        "  registrations fsynced vs in memory: p50 x{:.2}, p99 x{:.2}, throughput x{:.2}",
        fsync.1 / memory.1,
        fsync.2 / memory.2,
        fsync.4 / memory.4
    );
    println!(
        "  curve vs plain: p50 x{:.2}, p99 x{:.2}, throughput x{:.2}",
        curve.1 / plain.1,
        curve.2 / plain.2,
        curve.4 / plain.4
    );
    let mut md = format!(
        "## Control plane\n\n`cargo bench --bench control -- --requests {n} --clients {clients} --secs {secs} --report`: `pair.heartbeat` round trips through the lazy-pirate REQ client pairs use, on loopback, all servers in the same run. **echo**: a bare libzmq ROUTER with a fixed reply (ZeroMQ alone); **plain**: the controller; **curve**: the controller with CurveZMQ; **durable**: the controller with a data directory; **process**: the same as a `zonecast controller` process. **register** rows: `device.register` (a write: a new device and session key each) in memory and fsynced to a data directory (group commit). Latency: one client, back to back; throughput: {clients} clients in parallel (client and controller threads share the machine's cores).\n\n| server | p50 | p99 | p99.9 | requests/s |\n|--------|----:|----:|------:|-----------:|\n"
    );
    for (name, p50, p99, p999, rps) in &rows {
        md += &format!("| {name} | {p50:.1} µs | {p99:.1} µs | {p999:.1} µs | {rps:.0} |\n");
    }
    md += &format!(
        "\nCurveZMQ costs x{:.2} at p50, x{:.2} at p99 and x{:.2} in throughput against plain, in this run.\n",
        curve.1 / plain.1,
        curve.2 / plain.2,
        curve.4 / plain.4
    );
    md += &format!(
        "Registrations fsynced to the data directory cost x{:.2} at p50, x{:.2} at p99 and x{:.2} in throughput against memory only; {:.0} heartbeats/s with a data directory, the controller's one thread serving {clients} clients on this 2-core machine ({:.0} pairs at 20 Hz).\n",
        fsync.1 / memory.1,
        fsync.2 / memory.2,
        fsync.4 / memory.4,
        rows[3].4,
        rows[3].4 / 20.0
    );
    if let Some((hb, busy)) = per_core {
        md += &format!(
            "The controller as a process of its own (**process** row, a data directory) used {busy:.0}% of one core for that rate: **{hb:.0} heartbeats per CPU-second** ({:.0} pairs at 20 Hz on one core; /proc's utime + stime of every thread, its libzmq I/O thread included).\n",
            hb / 20.0
        );
    }
    if std::env::args().any(|a| a == "--report") {
        std::fs::create_dir_all("docs/bench").expect("docs/bench");
        std::fs::write("docs/bench/control.md", md + "\n").expect("write docs/bench/control.md");
    }
}
