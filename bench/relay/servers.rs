//! The servers a benchmark run talks to, started and stopped by the benchmark itself, each
//! pinned to its own core: a `zonecast pair` process, or Debian's `nats-server`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

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

/// A child process killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub metrics: Option<SocketAddr>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `zonecast pair` serving the sessions in `sessions`, with `extra` arguments.
pub fn zonecast_pair(sessions: &Path, cpu: Option<usize>, extra: &[String]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zonecast"));
    cmd.args([
        "pair",
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
    Server {
        addr: field("udp="),
        metrics: Some(field("metrics=http://")),
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
