//! The servers a benchmark run talks to, started and stopped by the benchmark itself, each
//! pinned to its own core: a `zonecast pair` process, or Debian's `nats-server`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use zonecast::replication::stream::{Role, StreamLink};
use zonecast::security::KeyPair;

/// Pins the calling thread (or, before exec, the child) to `cpu`.
pub fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn pinned(cmd: &mut Command, cpu: Option<usize>) {
    if let Some(cpu) = cpu {
        // SAFETY: sched_setaffinity is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                pin(cpu);
                Ok(())
            });
        }
    }
}

/// A child process (and its helpers) killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub metrics: Option<SocketAddr>,
    /// The replication stream endpoints the pair printed.
    pub bus: Vec<String>,
    /// More processes of this server (a split pair's fanout half).
    pub helpers: Vec<Child>,
    /// A standby's subscription to the pair's stream, read by a thread for the run.
    pub subscriber: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.subscriber.take() {
            stop.store(true, Relaxed);
            let _ = thread.join();
        }
        for c in self
            .helpers
            .iter_mut()
            .chain(std::iter::once(&mut self.child))
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Token of the benchmark's replication streams.
pub const TOKEN: &str = "bench-token";

/// A pair streaming its state to a standby: `zonecast pair --bus`, with a subscriber in this
/// process that mirrors the stream's reading side (it reads every batch and drops it).
/// `encrypted`: the pair gets a key pair (`--key`) and the stream runs Noise.
pub fn zonecast_mirrored(
    sessions: &Path,
    cpu: Option<usize>,
    extra: &[String],
    encrypted: bool,
) -> Server {
    let mut args = extra.to_vec();
    args.extend(["--bus", "tcp://127.0.0.1:0", "--token", TOKEN].map(String::from));
    let key = encrypted.then(KeyPair::generate);
    let mut files = None;
    if let Some(k) = &key {
        let dir = sessions.parent().expect("sessions in a folder");
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let base = dir.join(format!("stream-{}", NEXT.fetch_add(1, Relaxed)));
        let (public, secret) = k.save(&base).expect("key files");
        args.extend(["--key".to_string(), secret.display().to_string()]);
        files = Some([public, secret]);
    }
    let mut server = zonecast_pair("pair", sessions, cpu, &args);
    // The pair has read its key by the time it prints its endpoints.
    for f in files.into_iter().flatten() {
        let _ = std::fs::remove_file(f);
    }
    let bus = server
        .bus
        .first()
        .expect("the pair prints its stream")
        .clone();
    let public = key.as_ref().map(KeyPair::public);
    let link = StreamLink::connect(&bus, Role::Standby, TOKEN, public, None).expect("stream link");
    let stop = Arc::new(AtomicBool::new(false));
    let halt = stop.clone();
    let thread = std::thread::spawn(move || {
        while !halt.load(Relaxed) {
            let _ = link.next(Duration::from_millis(50));
        }
    });
    // Ready once the subscriber is taken (and its checkpoint sent).
    wait_subscribed(&server, "the standby link");
    server.subscriber = Some((stop, thread));
    server
}

/// A split pair: `zonecast ingest` and `zonecast fanout` over ipc://, both on `cpu`.
pub fn zonecast_split(sessions: &Path, cpu: Option<usize>, extra: &[String]) -> Server {
    let sock = std::env::temp_dir().join(format!("zc-bench-split-{}.sock", std::process::id()));
    let bus = format!("ipc://{}", sock.display());
    let mut args = extra.to_vec();
    args.extend(["--fanout-bus", &bus, "--token", TOKEN].map(String::from));
    let mut server = zonecast_pair("ingest", sessions, cpu, &args);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zonecast"));
    cmd.args([
        "fanout",
        "--bus",
        &bus,
        "--token",
        TOKEN,
        "--stats-every-secs",
        "0",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    pinned(&mut cmd, cpu);
    server
        .helpers
        .push(cmd.spawn().expect("zonecast fanout starts"));
    // Ready once the fanout half is subscribed.
    wait_subscribed(&server, "the fanout half");
    server
}

/// Waits until the pair of `server` has a stream subscriber (`who`, for the panic message).
fn wait_subscribed(server: &Server, who: &str) {
    let metrics = server.metrics.expect("metrics");
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(metrics, "zonecast_bus_subscribers") < 1 {
        assert!(Instant::now() < deadline, "{who} did not subscribe");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One unlabelled metric of a pair.
pub fn metric(metrics: SocketAddr, name: &str) -> u64 {
    let mut text = String::new();
    if let Ok(mut s) = TcpStream::connect(metrics) {
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
        let _ = s.read_to_string(&mut text);
    }
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// `zonecast <command>` (`pair` or `ingest`) serving the sessions in `sessions`, with
/// `extra` arguments.
pub fn zonecast_pair(
    command: &str,
    sessions: &Path,
    cpu: Option<usize>,
    extra: &[String],
) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zonecast"));
    cmd.args([
        command,
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ])
    .args(["--stats-every-secs", "0"])
    .arg("--sessions")
    .arg(sessions)
    .args(extra)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    pinned(&mut cmd, cpu);
    let mut child = cmd.spawn().expect("zonecast pair starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("pair banner");
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .trim_end_matches("/metrics")
            .parse()
            .expect("address")
    };
    let bus = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("bus="))
        .map(|b| {
            b.split(',')
                .filter(|b| !b.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    Server {
        addr: field("udp="),
        metrics: Some(field("metrics=http://")),
        bus,
        helpers: Vec::new(),
        subscriber: None,
        child,
    }
}

/// Whether Debian's nats-server is installed.
pub fn nats_available() -> bool {
    Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `nats-server` on a free loopback port (one Go thread per core it may use).
pub fn nats_server(cpu: Option<usize>) -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut cmd = Command::new("nats-server");
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .env("GOMAXPROCS", if cpu.is_some() { "1" } else { "2" })
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    pinned(&mut cmd, cpu);
    let child = cmd
        .spawn()
        .expect("nats-server starts (scripts/bench installs it)");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server {
        child,
        addr,
        metrics: None,
        bus: Vec::new(),
        helpers: Vec::new(),
        subscriber: None,
    }
}

/// The pair's drop counters by reason (ingest and fanout), from its metrics endpoint.
pub fn pair_drops(metrics: SocketAddr) -> Value {
    let mut text = String::new();
    if let Ok(mut s) = TcpStream::connect(metrics) {
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
        let _ = s.read_to_string(&mut text);
    }
    let mut out = Map::new();
    for line in text.lines().filter(|l| l.contains("_dropped_total{")) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: u64 = value.parse().unwrap_or(0);
        if value > 0 {
            let name = key
                .trim_start_matches("zonecast_")
                .replace("_dropped_total{reason=\"", ".")
                .replace("\"}", "");
            out.insert(name, value.into());
        }
    }
    Value::Object(out)
}
