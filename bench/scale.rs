//! Scale benchmark: one scene, many devices at a fixed density, each sending its avatar at
//! 20 Hz, each with an interest sphere holding about 30 others; the pair relays only what
//! each device's area holds. Reports delivered updates/s, latency at sampled receivers, the
//! pair's CPU time per delivered update and its memory, and the same scene with interest off
//! (everything to everyone) for contrast.
//!
//! The load generator is one thread on core 0 with **one multiplexed UDP socket**: every
//! device's datagrams are sealed under its own key and sent from it with sendmmsg, so the pair
//! sends every device's share back to that one socket. The generator verifies and times the
//! datagrams of `--probes` sampled receivers only and counts the rest, so it can drive
//! thousands of devices; the pair (`zonecast pair`, one thread) is on core 1. Baseline,
//! measured in the same run under the same load: a second socket of the generator sends
//! timestamped datagrams straight to the first 200 times a second (the loopback floor).
//!
//! Usage: cargo bench --bench scale -- [--devices 250,1000,4000] [--hz 20] [--secs 5]
//!   [--neighbours 30] [--radius 10] [--probes 32] [--contrast 250] [--report]
//!   (--report also writes docs/bench/scale.md, included in docs/BENCHMARKS.md)

#[path = "args.rs"]
mod args;
#[path = "relay/servers.rs"]
#[allow(dead_code)]
mod servers;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use args::arg;
use hdrhistogram::Histogram;
use zonecast::client::Area;
use zonecast::net::mmsg::{RecvBatch, SendBatch};
use zonecast::net::unix_ns;
use zonecast::pair::SessionsFile;
use zonecast::wire::bundle;
use zonecast::wire::{
    seal, Datagram, Direction, Fields, HeaderFields, Kind, ObjectBody, SessionKey, HEADER_LEN,
    MASK_TRANSLATION,
};

/// What one run measured.
struct Row {
    devices: u32,
    interest: bool,
    sent_per_s: f64,
    delivered_per_s: f64,
    expected_per_s: f64,
    datagrams_per_s: f64,
    cpu_share: f64,
    ns_per_delivery: f64,
    rss_mib: f64,
    latency: Histogram<u64>,
    floor: Histogram<u64>,
    received: u64,
}

impl Row {
    /// Object updates each datagram carried on average (bundling).
    fn per_datagram(&self) -> f64 {
        self.delivered_per_s / self.datagrams_per_s.max(1.0)
    }

    /// The pair's CPU nanoseconds per datagram it sent.
    fn ns_per_datagram(&self) -> f64 {
        self.cpu_share * 1e9 / self.datagrams_per_s.max(1.0)
    }
}

struct Setup {
    hz: f64,
    secs: f64,
    neighbours: f64,
    radius: f32,
    probes: u32,
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let list = argv
        .iter()
        .position(|a| a == "--devices")
        .and_then(|i| argv.get(i + 1))
        .map_or("250,1000,4000".to_string(), String::clone);
    let counts: Vec<u32> = list
        .split(',')
        .map(|c| {
            c.parse()
                .expect("--devices takes numbers separated by commas")
        })
        .collect();
    let setup = Setup {
        hz: arg("--hz", 20.0),
        secs: arg("--secs", 5.0),
        neighbours: arg("--neighbours", 30.0),
        radius: arg("--radius", 10.0) as f32,
        probes: arg("--probes", 32.0) as u32,
    };
    let contrast = arg("--contrast", 250.0) as u32;
    let mut rows = Vec::new();
    for &n in &counts {
        rows.push(run(n, true, &setup));
        print_row(rows.last().expect("a row"));
    }
    if contrast > 0 {
        rows.push(run(contrast, false, &setup));
        print_row(rows.last().expect("a row"));
    }
    let cost = |r: &Row| r.ns_per_delivery;
    let with: Vec<&Row> = rows.iter().filter(|r| r.interest).collect();
    if let (Some(first), Some(last)) = (with.first(), with.last()) {
        println!(
            "cost per delivered update, {} -> {} devices: x{:.2}",
            first.devices,
            last.devices,
            cost(last) / cost(first).max(1e-9)
        );
    }
    if argv.iter().any(|a| a == "--report") {
        write_report(&rows, &setup);
    }
}

fn print_row(r: &Row) {
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    println!(
        "{:>5} devices interest {:>3}: sent {:>8.0}/s delivered {:>9.0}/s (expected ~{:>9.0}) in {:>8.0} datagrams/s ({:.2} per datagram); pair CPU {:>5.1}% = {:>6.0} ns per delivered update, RSS {:>6.1} MiB; latency p50 {:>7.1}us p99 {:>7.1}us p99.9 {:>7.1}us ({} samples); loopback floor p50 {:>5.1}us p99 {:>6.1}us; generator got {} datagrams",
        r.devices,
        if r.interest { "on" } else { "off" },
        r.sent_per_s,
        r.delivered_per_s,
        r.expected_per_s,
        r.datagrams_per_s,
        r.per_datagram(),
        r.cpu_share * 100.0,
        r.ns_per_delivery,
        r.rss_mib,
        q(&r.latency, 0.5),
        q(&r.latency, 0.99),
        q(&r.latency, 0.999),
        r.latency.len(),
        q(&r.floor, 0.5),
        q(&r.floor, 0.99),
        r.received,
    );
}

/// A small deterministic generator (xorshift64*): the same scene layout every run.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32
    }
}

struct Dev {
    id: u32,
    key: SessionKey,
    home: [f32; 3],
    seq: u64,
}

fn run(n: u32, interest: bool, s: &Setup) -> Row {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let sessions = SessionsFile::generate(1, n, 1);
    let path = dir.path().join("sessions.json");
    std::fs::write(&path, sessions.to_json()).expect("sessions file");
    let cell = format!("{},{},0", s.radius, s.radius);
    let extra = vec!["--interest-cell".to_string(), cell];
    let server = servers::zonecast_pair("pair", &path, Some(1), &extra);
    servers::pin(0);
    // Side of the square that puts `neighbours` devices inside a circle of `radius` on average.
    let side = s.radius * (std::f32::consts::PI * n as f32 / s.neighbours as f32).sqrt();
    let mut rng = Rng(0x5eed_0000 + u64::from(n));
    let mut devs: Vec<Dev> = sessions
        .devices
        .iter()
        .map(|e| Dev {
            id: e.device,
            key: e.session_key().expect("generated key"),
            home: [rng.unit() * side, rng.unit() * side, 0.0],
            seq: unix_ns() / 1000,
        })
        .collect();
    let probe_every = (n / s.probes.max(1)).max(1);
    let probes: HashMap<u32, SessionKey> = devs
        .iter()
        .filter(|d| d.id % probe_every == 0)
        .map(|d| (d.id, d.key.clone()))
        .collect();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("generator socket");
    socket.set_nonblocking(true).expect("nonblocking");
    force_recv_buffer(&socket, 64 << 20);
    let floor_tx = UdpSocket::bind("127.0.0.1:0").expect("floor socket");
    let me = socket.local_addr().expect("local address");
    let pair = server.addr;
    let mut out = SendBatch::new(64);
    let mut rx = RecvBatch::new(64);

    // Join every device (its area: a sphere around its home, or everything) until each one has
    // its first snapshot.
    let mut joined = vec![false; devs.len()];
    let deadline = Instant::now() + Duration::from_secs(30);
    while joined.iter().any(|j| !j) {
        assert!(Instant::now() < deadline, "devices could not join");
        for (d, _) in devs.iter_mut().zip(&joined).filter(|(_, j)| !**j) {
            let area = Area::sphere(d.home, s.radius);
            let body = if interest {
                let mut b = vec![0u8; area.len()];
                area.emit(&mut b).expect("room");
                b
            } else {
                vec![0u8; 8]
            };
            queue(&mut out, d, Kind::Join, &body, pair, socket.as_raw_fd());
        }
        out.flush(socket.as_raw_fd());
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            if rx.recv(socket.as_raw_fd()).unwrap_or(0) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            for k in 0..rx.len() {
                let b = rx.get(k).bytes;
                if b.len() > HEADER_LEN && b[3] == Kind::Snapshot as u8 {
                    let id = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                    if let Some(j) = (id as usize).checked_sub(1).and_then(|i| joined.get_mut(i)) {
                        *j = true;
                    }
                }
            }
        }
    }

    // Send at `hz` per device, phases spread; measure after a second of warm-up.
    let period = Duration::from_secs_f64(1.0 / s.hz);
    let start = Instant::now();
    let warm = start + Duration::from_secs(1);
    let end = warm + Duration::from_secs_f64(s.secs);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
    let mut floor = latency.clone();
    let mut next_floor = start;
    let mut before = None;
    let (mut sent, mut received) = (0u64, 0u64);
    // Sends in phase order: send k is device k % n in round k / n, due at
    // start + period * (k / n + (k % n) / n) = start + period * k / n.
    let mut cursor = 0u64;
    let due = |k: u64| start + period.mul_f64(k as f64 / f64::from(n));
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if before.is_none() && now >= warm {
            before = Some(sample(&server, sent, received));
            latency.reset();
            floor.reset();
        }
        while due(cursor) <= now {
            let i = (cursor % u64::from(n)) as usize;
            cursor += 1;
            let d = &mut devs[i];
            // The avatar wanders a little around its home: density stays fixed.
            let t = start.elapsed().as_secs_f32() + i as f32;
            let fields = Fields {
                translation: [d.home[0] + t.sin(), d.home[1] + t.cos(), 0.0],
                ..Fields::default()
            };
            let body = ObjectBody::new(u64::from(d.id), MASK_TRANSLATION, fields, &[]);
            let mut b = [0u8; 64];
            let len = body.emit(&mut b).expect("room");
            queue(
                &mut out,
                d,
                Kind::ObjectUpdate,
                &b[..len],
                pair,
                socket.as_raw_fd(),
            );
            sent += 1;
        }
        out.flush(socket.as_raw_fd());
        if now >= next_floor {
            let _ = floor_tx.send_to(&floor_datagram(), me);
            next_floor += Duration::from_millis(5);
        }
        let got = rx.recv(socket.as_raw_fd()).unwrap_or(0);
        for k in 0..got {
            let b = rx.get(k).bytes;
            let now_ns = unix_ns();
            if b.len() == 10 && &b[..2] == b"FL" {
                let ts = u64::from_le_bytes(b[2..10].try_into().expect("8 bytes"));
                let _ = floor.record(now_ns.saturating_sub(ts).max(1));
                continue;
            }
            received += 1;
            if b.len() < HEADER_LEN {
                continue;
            }
            let id = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            let Some(key) = probes.get(&id) else {
                continue;
            };
            let Ok(dg) = Datagram::parse(b) else { continue };
            if dg.verify(key, Direction::ToDevice).is_err() {
                continue;
            }
            let mut record = |body: &[u8]| {
                if let Ok(o) = ObjectBody::parse(body) {
                    let _ = latency.record(now_ns.saturating_sub(o.origin_timestamp_ns).max(1));
                }
            };
            match dg.kind() {
                Kind::Bundle => {
                    for (kind, body) in bundle::entries(dg.body()).flatten() {
                        if kind == Kind::ObjectUpdate {
                            record(body);
                        }
                    }
                }
                Kind::ObjectUpdate => record(dg.body()),
                _ => {}
            }
        }
        if got == 0 {
            // Nothing queued: wait for the next send or a datagram, whichever comes first.
            let wake = due(cursor).min(end).min(next_floor);
            let wait = wake.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                wait_readable(&socket, wait.min(Duration::from_millis(2)));
            }
        }
    }
    let after = sample(&server, sent, received);
    let b = before.expect("warm-up ended");
    let secs = after.at.duration_since(b.at).as_secs_f64();
    let delivered = (after.updates - b.updates) as f64;
    let cpu = after.cpu_secs - b.cpu_secs;
    Row {
        devices: n,
        interest,
        sent_per_s: (after.sent - b.sent) as f64 / secs,
        delivered_per_s: delivered / secs,
        expected_per_s: if interest {
            f64::from(n) * s.neighbours * s.hz
        } else {
            f64::from(n) * f64::from(n - 1) * s.hz
        },
        datagrams_per_s: (after.datagrams - b.datagrams) as f64 / secs,
        cpu_share: cpu / secs,
        ns_per_delivery: cpu * 1e9 / delivered.max(1.0),
        rss_mib: rss_kib(server.child.id()) / 1024.0,
        latency,
        floor,
        received: after.received - b.received,
    }
}

/// Seals one datagram of device `d` into the next send slot (flushing when full).
fn queue(out: &mut SendBatch, d: &mut Dev, kind: Kind, body: &[u8], to: SocketAddr, fd: i32) {
    if out.is_full() {
        out.flush(fd);
    }
    let buf = out.next_buf();
    buf[HEADER_LEN..HEADER_LEN + body.len()].copy_from_slice(body);
    d.seq += 1;
    let fields = HeaderFields {
        kind,
        device: d.id,
        scene: 1,
        seq: d.seq,
        timestamp_ns: unix_ns(),
    };
    if let Ok(n) = seal(buf, &fields, body.len(), &d.key, Direction::ToServer) {
        out.commit(n, to);
    }
}

fn floor_datagram() -> [u8; 10] {
    let mut b = [0u8; 10];
    b[..2].copy_from_slice(b"FL");
    b[2..].copy_from_slice(&unix_ns().to_le_bytes());
    b
}

/// The pair's counters and CPU time at one instant.
struct Sample {
    at: Instant,
    updates: u64,
    datagrams: u64,
    cpu_secs: f64,
    sent: u64,
    received: u64,
}

fn sample(server: &servers::Server, sent: u64, received: u64) -> Sample {
    let metrics = server.metrics.expect("pair metrics");
    Sample {
        at: Instant::now(),
        updates: servers::metric(metrics, "zonecast_fanout_updates_total"),
        datagrams: servers::metric(metrics, "zonecast_fanout_datagrams_total"),
        cpu_secs: cpu_secs(server.child.id()),
        sent,
        received,
    }
}

/// User plus system CPU seconds of process `pid` (/proc/PID/stat).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based).
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

/// Resident memory of process `pid`, KiB.
fn rss_kib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Asks for a receive buffer beyond rmem_max (root: SO_RCVBUFFORCE), else the largest allowed.
fn force_recv_buffer(socket: &UdpSocket, bytes: i32) {
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: a valid fd and a c_int option value of the right size.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
}

/// Waits until `socket` is readable or `wait` passes.
fn wait_readable(socket: &UdpSocket, wait: Duration) {
    let mut fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut fd, 1, wait.as_millis().max(1) as i32) };
}

fn write_report(rows: &[Row], s: &Setup) {
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    let mut md = String::from("## Scale: interest management (cargo bench --bench scale)\n\n");
    md += &format!(
        "One scene, devices placed uniformly at random on a square sized so that about {:.0} others are within each device's interest radius ({} units); each sends its avatar (a translation update) at {} Hz; {} s measured after 1 s of warm-up. One generator thread on core 0 with one multiplexed socket (it verifies and times the datagrams of {} sampled receivers, counts the rest); one `zonecast pair` on core 1, `--interest-cell {r},{r},0`. Delivered = object updates the pair put into datagrams (`zonecast_fanout_updates_total`); CPU = the pair's user+system time over the window. Baseline: the loopback floor, a datagram from a second socket of the generator to the first, measured in the same run.\n\n",
        s.neighbours, s.radius, s.hz, s.secs, s.probes, r = s.radius
    );
    md += "| devices | interest | sent/s | delivered/s | expected/s | datagrams/s | updates per datagram | pair CPU | ns per delivered update | ns per datagram | pair RSS | p50 | p99 | p99.9 | floor p50 | floor p99 |\n|--:|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n";
    for r in rows {
        md += &format!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.0}% | {:.0} | {:.0} | {:.1} MiB | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs |\n",
            r.devices,
            if r.interest { "on" } else { "off" },
            r.sent_per_s,
            r.delivered_per_s,
            r.expected_per_s,
            r.datagrams_per_s,
            r.per_datagram(),
            r.cpu_share * 100.0,
            r.ns_per_delivery,
            r.ns_per_datagram(),
            r.rss_mib,
            q(&r.latency, 0.5),
            q(&r.latency, 0.99),
            q(&r.latency, 0.999),
            q(&r.floor, 0.5),
            q(&r.floor, 0.99),
        );
    }
    md += "\nHow to read it. *Expected* assumes every device has the average number of neighbours; devices near the square's edges have fewer, so a pair that keeps up delivers a little less (most at 250 devices, whose square has the most edge per area). A pair at 100% CPU is saturated: delivered falls behind expected and latency is queueing. The pair's cost is per **datagram** (seal, and the kernel's loopback path, which charges the sender for the receiver's side too), about the same with interest on or off; what changes is how many updates each datagram carries: everything-to-everyone packs several updates per recipient per burst, interest sends each recipient only its neighbours' few. While its socket stays backlogged the pair gathers up to 8 bursts (512 datagrams) before fanning out (`udp_ingest::DEEP`), so each recipient's share of all of them shares a datagram: that is what lets a loaded pair catch up. Interest is what makes large scenes possible at all: everything to everyone at 1,000 devices would be about 20 million deliveries a second. A `perf` profile of the pair at 1,000 devices (2026-12-04) puts about 85% of its time in the kernel's UDP send and loopback receive path, 4% in sealing (ChaCha20-Poly1305) and 2% in interest evaluation: fewer datagrams (bundling), not less code, is what raises the ceiling on one core.\n";
    std::fs::create_dir_all("docs/bench").expect("docs/bench");
    std::fs::write("docs/bench/scale.md", md).expect("docs/bench/scale.md");
    println!("wrote docs/bench/scale.md");
}
