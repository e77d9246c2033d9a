//! Relay latency benchmark: D devices in one scene, each sending R updates per second for T
//! seconds, measured twice in the same run on the same harness:
//! - `raw`: the devices send the same sealed datagrams straight to each other (no relay), the
//!   floor any relay on this machine is compared against;
//! - `relay`: the devices send to an in-process pair, which relays to the others.
//!
//! One-way latency is the receiver's clock minus the sender timestamp inside the update (same
//! host clock), recorded in an HdrHistogram after a warm-up. One thread drives every device
//! (ppoll on all sockets, sends on schedule), as a game client loop would.
//!
//! Usage: cargo bench --bench relay -- [--devices 8] [--hz 1000] [--secs 5] [--warmup-secs 1]
//!        [--payload 0] [--runs 1]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use zonecast::client::{Device, Event, Poller, Session};
use zonecast::net::unix_ns;
use zonecast::pair::{Pair, PairConfig, SessionsFile};
use zonecast::wire::{
    seal, Direction, Fields, HeaderFields, Kind, ObjectBody, SessionKey, HEADER_LEN, MASK_PAYLOAD,
    MASK_TRANSLATION, MAX_DATAGRAM,
};

struct Args {
    devices: u32,
    hz: f64,
    secs: f64,
    warmup_secs: f64,
    payload: usize,
    runs: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        devices: 8,
        hz: 1000.0,
        secs: 5.0,
        warmup_secs: 1.0,
        payload: 0,
        runs: 1,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = || argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--devices" => a.devices = value().parse().expect("--devices N"),
            "--hz" => a.hz = value().parse().expect("--hz F"),
            "--secs" => a.secs = value().parse().expect("--secs F"),
            "--warmup-secs" => a.warmup_secs = value().parse().expect("--warmup-secs F"),
            "--payload" => a.payload = value().parse().expect("--payload BYTES"),
            "--runs" => a.runs = value().parse().expect("--runs N"),
            // cargo bench passes --bench; ignore flags we don't know.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    assert!(a.devices >= 2, "need at least two devices");
    a
}

/// What one measurement produced.
struct Outcome {
    latency: Histogram<u64>,
    delivered: u64,
    expected: u64,
    elapsed: Duration,
}

/// How a device's update leaves it.
enum Path {
    /// Straight to every other device (address, id, key, index), sealed for each.
    Raw {
        peers: Vec<(SocketAddr, u32, SessionKey, usize)>,
    },
    /// To the pair.
    Relay,
}

fn main() {
    let a = parse_args();
    println!(
        "relay benchmark: {} devices x {} Hz, {} s (+{} s warm-up), payload {} B, {} run(s)",
        a.devices, a.hz, a.secs, a.warmup_secs, a.payload, a.runs
    );
    let mut rows: Vec<(&str, Outcome)> = Vec::new();
    for run in 0..a.runs {
        // Alternate the order so neither mode always runs on a warmer machine.
        let order = if run % 2 == 0 {
            ["raw", "relay"]
        } else {
            ["relay", "raw"]
        };
        for mode in order {
            let o = measure(&a, mode == "relay");
            print_row(mode, &o);
            rows.push((mode, o));
        }
    }
    let median = |mode: &str, q: f64| {
        let mut v: Vec<u64> = rows
            .iter()
            .filter(|(m, _)| *m == mode)
            .map(|(_, o)| o.latency.value_at_quantile(q))
            .collect();
        v.sort();
        v[v.len() / 2] as f64
    };
    println!(
        "relay/raw (median of runs): p50 x{:.2}  p99 x{:.2}  p99.9 x{:.2}",
        median("relay", 0.5) / median("raw", 0.5),
        median("relay", 0.99) / median("raw", 0.99),
        median("relay", 0.999) / median("raw", 0.999),
    );
}

fn print_row(mode: &str, o: &Outcome) {
    let us = |q: f64| o.latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{mode:>6}: p50 {:>8.1}us  p99 {:>8.1}us  p99.9 {:>8.1}us  max {:>8.1}us  delivered {}/{} ({:.3}%)  {:.0} datagrams/s received",
        us(0.5),
        us(0.99),
        us(0.999),
        o.latency.max() as f64 / 1000.0,
        o.delivered,
        o.expected,
        100.0 * o.delivered as f64 / o.expected.max(1) as f64,
        o.delivered as f64 / o.elapsed.as_secs_f64(),
    );
}

fn measure(a: &Args, relay: bool) -> Outcome {
    let sessions = SessionsFile::generate(1, a.devices, 1);
    let pair = if relay {
        let config = PairConfig {
            listen: "127.0.0.1:0".parse().expect("literal"),
            ..PairConfig::default()
        };
        Some(Pair::start(&config, &sessions.devices).expect("pair starts"))
    } else {
        None
    };
    let pair_addr = pair
        .as_ref()
        .map(|p| p.udp_addr())
        .unwrap_or_else(|| "127.0.0.1:9".parse().expect("literal"));
    let mut devices: Vec<Device> = sessions
        .devices
        .iter()
        .map(|s| {
            Device::connect(Session {
                device: s.device,
                scene: s.scene,
                key: s.session_key().expect("generated key"),
                pair: pair_addr,
            })
            .expect("device socket")
        })
        .collect();
    let mut paths: Vec<Path> = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        if relay {
            paths.push(Path::Relay);
            continue;
        }
        let peers = devices
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, p)| {
                let s = p.session();
                (p.local_addr().expect("bound"), s.device, s.key.clone(), j)
            })
            .collect();
        let _ = d;
        paths.push(Path::Raw { peers });
    }
    if relay {
        for d in devices.iter_mut() {
            d.join(0.0).expect("join");
            // The snapshot answers the join.
            match d.recv(Duration::from_secs(5)).expect("recv") {
                Some(Event::Snapshot { .. }) => {}
                other => panic!("expected a snapshot, got {other:?}"),
            }
        }
    }
    let outcome = drive(a, &mut devices, &mut paths);
    if let Some(p) = pair {
        let s = p.stats().snapshot();
        if s.ingest_drops.total() + s.fanout_buffer_full + s.fanout_refused > 0 {
            println!(
                "        pair drops: ingest {} fanout buffer_full {} refused {}",
                s.ingest_drops.total(),
                s.fanout_buffer_full,
                s.fanout_refused
            );
        }
        p.stop();
    }
    outcome
}

/// The single-threaded device loop: send on schedule, receive whatever is ready.
fn drive(a: &Args, devices: &mut [Device], paths: &mut [Path]) -> Outcome {
    let n = devices.len();
    let period = Duration::from_secs_f64(1.0 / a.hz);
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + Duration::from_secs_f64(a.warmup_secs);
    let end = measure_from + Duration::from_secs_f64(a.secs);
    let warmup_x = measure_from.duration_since(start).as_secs_f32();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    let payload = vec![0x42u8; a.payload];
    let mask = if a.payload > 0 {
        MASK_TRANSLATION | MASK_PAYLOAD
    } else {
        MASK_TRANSLATION
    };
    // Device i sends its k-th update at start + k * period + i * period / n.
    let offset = |i: usize| period.mul_f64(i as f64 / n as f64);
    let mut next: Vec<Instant> = (0..n).map(|i| start + offset(i)).collect();
    let mut sent_measured = 0u64;
    let mut delivered = 0u64;
    let mut poller = Poller::new(devices);
    let mut buf = [0u8; MAX_DATAGRAM];
    // Raw mode: each receiver sees one sequence per sender-of-record, as from a pair.
    let mut inbound_seq = vec![unix_ns() / 1000; n];
    let drain_until = end + Duration::from_millis(200);
    loop {
        let now = Instant::now();
        if now >= drain_until {
            break;
        }
        for i in 0..n {
            while next[i] <= now && next[i] < end {
                let x = next[i].duration_since(start).as_secs_f32();
                let fields = Fields {
                    translation: [x, 0.0, 0.0],
                    ..Fields::default()
                };
                // x is the scheduled send time: the receiver uses it to tell warm-up apart.
                if x >= warmup_x {
                    sent_measured += 1;
                }
                match &mut paths[i] {
                    Path::Relay => {
                        let object = u64::from(devices[i].session().device);
                        let _ = devices[i].update(object, mask, &fields, &payload);
                    }
                    Path::Raw { peers } => {
                        let origin = devices[i].session().device;
                        let raw = RawSend {
                            mask,
                            fields: &fields,
                            payload: &payload,
                        };
                        send_raw(&devices[i], origin, peers, &mut inbound_seq, &raw, &mut buf);
                    }
                }
                next[i] += period;
            }
        }
        let wake = next
            .iter()
            .copied()
            .filter(|t| *t < end)
            .min()
            .unwrap_or(drain_until);
        let wait = wake.saturating_duration_since(Instant::now());
        if poller.wait(wait) == 0 {
            continue;
        }
        for (i, dev) in devices.iter_mut().enumerate() {
            if !poller.is_readable(i) {
                continue;
            }
            while let Ok(Some(e)) = dev.try_recv() {
                if let Event::Update(r) = e {
                    if r.fields.translation[0] >= warmup_x {
                        delivered += 1;
                        let ns = unix_ns().saturating_sub(r.origin_timestamp_ns).max(1);
                        let _ = latency.record(ns);
                    }
                }
            }
        }
    }
    Outcome {
        latency,
        delivered,
        expected: sent_measured * (n as u64 - 1),
        elapsed: end - measure_from,
    }
}

/// The update every raw send carries.
struct RawSend<'a> {
    mask: u8,
    fields: &'a Fields,
    payload: &'a [u8],
}

/// The raw floor's send: the same update body, sealed for each peer as fanout would seal it
/// (the peer's key and its next inbound sequence number), sent from the device's own socket.
fn send_raw(
    dev: &Device,
    origin: u32,
    peers: &[(SocketAddr, u32, SessionKey, usize)],
    inbound_seq: &mut [u64],
    update: &RawSend<'_>,
    buf: &mut [u8; MAX_DATAGRAM],
) {
    let ts = unix_ns();
    let mut body = ObjectBody::new(
        u64::from(origin),
        update.mask,
        *update.fields,
        update.payload,
    );
    body.origin_device = origin;
    body.origin_timestamp_ns = ts;
    let Ok(body_len) = body.emit(&mut buf[HEADER_LEN..]) else {
        return;
    };
    for (addr, device, key, index) in peers {
        let f = HeaderFields {
            kind: Kind::ObjectUpdate,
            device: *device,
            scene: 1,
            seq: inbound_seq[*index],
            timestamp_ns: ts,
        };
        inbound_seq[*index] += 1;
        if let Ok(len) = seal(buf, &f, body_len, key, Direction::ToDevice) {
            let _ = dev.socket().send_to(&buf[..len], addr);
        }
    }
}
