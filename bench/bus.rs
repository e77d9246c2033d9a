//! Bus transport latency: one batch (one relay event, as ingest publishes per burst) from
//! publish to receipt, over the in-process channel, ZeroMQ ipc:// and tcp:// (plain and
//! CurveZMQ), and the replication stream (what a split pair and a standby use) over ipc:// and
//! tcp:// (plain and Noise), on
//! loopback, measured in the same run. Publisher and subscriber are threads of this process;
//! each batch carries its send time. Prints p50/p99/p99.9/max per transport and the added
//! latency over in-process.
//!
//! Usage: cargo bench --bench bus -- [--count 20000] [--hz 5000] [--report]
//!   (`--report` also writes docs/bench/bus.md, included in docs/BENCHMARKS.md)

#[path = "args.rs"]
mod args;

use std::time::{Duration, Instant};

use args::arg;
use hdrhistogram::Histogram;
use zonecast::ipc_bus::inproc::InprocBus;
use zonecast::ipc_bus::zmq::{ZmqPublisher, ZmqSubscriber};
use zonecast::ipc_bus::{BusError, Publisher, Subscriber, Topic};
use zonecast::net::unix_ns;
use zonecast::net::zeromq::Curve;
use zonecast::replication::stream::{LinkSubscriber, Role, StreamHub, StreamLink};
use zonecast::scene::{Batch, EventKind};
use zonecast::security::KeyPair;
use zonecast::wire::Kind;

fn batch(seq: u64) -> Batch {
    let mut b = Batch::default();
    let mut data = [0u8; 76];
    data[..8].copy_from_slice(&unix_ns().to_le_bytes());
    data[8..16].copy_from_slice(&seq.to_le_bytes());
    b.push(EventKind::Relay(Kind::ObjectUpdate), 1, 7, None, &data);
    b
}

/// Publishes `count` batches at `hz` and records publish→receive latency on the subscriber.
fn measure(
    mut p: Box<dyn Publisher>,
    mut s: Box<dyn Subscriber + Send>,
    count: u64,
    hz: f64,
) -> Histogram<u64> {
    // Warm up until the subscription is live (ZeroMQ's slow joiner).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = p.publish(batch(u64::MAX));
        if s.recv(Duration::from_millis(20)).ok().flatten().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "subscriber never connected");
    }
    while s.recv(Duration::from_millis(50)).ok().flatten().is_some() {}
    let receiver = std::thread::spawn(move || {
        let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("bounds");
        let mut got = 0;
        while got < count {
            match s.recv(Duration::from_secs(2)) {
                Ok(Some(b)) => {
                    let now = unix_ns();
                    for (_, d) in b.iter() {
                        let sent = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
                        let _ = h.record(now.saturating_sub(sent).max(1));
                        got += 1;
                    }
                }
                _ => break,
            }
        }
        h
    });
    let period = Duration::from_secs_f64(1.0 / hz);
    let mut next = Instant::now();
    for seq in 0..count {
        while Instant::now() < next {
            std::hint::spin_loop();
        }
        let _ = p.publish(batch(seq));
        next += period;
    }
    receiver.join().expect("receiver")
}

/// The replication stream's hub as a publisher, serviced every 2 ms as the ingest loop does.
struct HubPublisher {
    hub: StreamHub,
    next_service: Instant,
}

impl Publisher for HubPublisher {
    fn publish(&mut self, mut batch: Batch) -> Result<Batch, BusError> {
        let now = Instant::now();
        if now >= self.next_service {
            self.next_service = now + Duration::from_millis(2);
            if self.hub.service(now) {
                self.hub.send_checkpoint(&batch);
            }
        }
        self.hub.send(&batch);
        batch.clear();
        Ok(batch)
    }
}

/// The replication stream at `endpoint`; with `key`, encrypted (Noise).
fn stream(
    endpoint: &str,
    key: Option<KeyPair>,
) -> (Box<dyn Publisher>, Box<dyn Subscriber + Send>) {
    let public = key.as_ref().map(KeyPair::public);
    let hub = StreamHub::bind(&[endpoint.to_string()], "bench", key).expect("bind stream");
    let ep = hub.endpoints()[0].clone();
    let link = StreamLink::connect(&ep, Role::Fanout, "bench", public, None).expect("link");
    let p = HubPublisher {
        hub,
        next_service: Instant::now(),
    };
    let s = LinkSubscriber {
        link,
        malformed: Default::default(),
    };
    (Box::new(p), Box::new(s))
}

fn main() {
    let count = arg("--count", 20000.0) as u64;
    let hz = arg("--hz", 5000.0);
    println!("bus latency: {count} batches at {hz} Hz, one relay event each");
    let dir = std::env::temp_dir().join(format!("zc-bus-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ipc = format!("ipc://{}", dir.join("bus.sock").display());
    let mut rows = Vec::new();
    let stream_ipc = format!("ipc://{}", dir.join("stream.sock").display());
    let transports = [
        "inproc",
        "ipc",
        "tcp",
        "tcp-curve",
        "stream-ipc",
        "stream-tcp",
        "stream-tcp-noise",
    ];
    for name in transports {
        let (p, s): (Box<dyn Publisher>, Box<dyn Subscriber + Send>) = match name {
            "inproc" => {
                let mut bus = InprocBus::new(1024);
                let s = bus.subscribe(&[Topic::All]);
                (Box::new(bus.publisher()), Box::new(s))
            }
            "ipc" => {
                let p = ZmqPublisher::bind(&ipc, 1024, &Curve::Off).expect("bind ipc");
                let s = ZmqSubscriber::connect(&ipc, &[Topic::All], 1024, &Curve::Off)
                    .expect("connect");
                (Box::new(p), Box::new(s))
            }
            "stream-ipc" => stream(&stream_ipc, None),
            "stream-tcp" => stream("tcp://127.0.0.1:0", None),
            "stream-tcp-noise" => stream("tcp://127.0.0.1:0", Some(KeyPair::generate())),
            "tcp-curve" => {
                let key = KeyPair::generate();
                let public = key.public();
                let p = ZmqPublisher::bind("tcp://127.0.0.1:0", 1024, &Curve::Server(key))
                    .expect("bind tcp");
                let ep = p.endpoint().to_string();
                let s = ZmqSubscriber::connect(&ep, &[Topic::All], 1024, &Curve::Client(public))
                    .expect("connect");
                (Box::new(p), Box::new(s))
            }
            _ => {
                let p =
                    ZmqPublisher::bind("tcp://127.0.0.1:0", 1024, &Curve::Off).expect("bind tcp");
                let ep = p.endpoint().to_string();
                let s =
                    ZmqSubscriber::connect(&ep, &[Topic::All], 1024, &Curve::Off).expect("connect");
                (Box::new(p), Box::new(s))
            }
        };
        let h = measure(p, s, count, hz);
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "  {name:>10}: p50 {:>8.1}us  p99 {:>8.1}us  p99.9 {:>8.1}us  max {:>9.1}us  received {}/{count}",
            us(0.5), us(0.99), us(0.999), h.max() as f64 / 1000.0, h.len()
        );
        rows.push((name, us(0.5), us(0.99), us(0.999), h.len()));
    }
    let base = rows[0];
    let mut md = format!(
        "## Bus transports\n\n`cargo bench --bench bus -- --count {count} --hz {hz} --report`: one batch (one relay event, as ingest publishes per burst) from publish to receipt, publisher and subscriber threads of one process, on loopback, every transport in the same run. **ipc**/**tcp**: ZeroMQ PUB/SUB (libzmq, `ipc_bus/zmq.rs`), **tcp-curve** the same encrypted with CurveZMQ; **stream-ipc**/**stream-tcp**: the replication stream a split pair (ipc) and a standby (tcp) use (`ipc_bus/stream/`), **stream-tcp-noise** the same encrypted with Noise (what a standby on another host uses).\n\n| transport | p50 | p99 | p99.9 | added p50 | added p99 | received |\n|-----------|----:|----:|------:|----------:|----------:|---------:|\n"
    );
    for (name, p50, p99, p999, n) in &rows {
        md += &format!(
            "| {name} | {p50:.1} µs | {p99:.1} µs | {p999:.1} µs | +{:.1} µs | +{:.1} µs | {n}/{count} |\n",
            p50 - base.1,
            p99 - base.2
        );
        if name != &base.0 {
            println!(
                "  {name} adds p50 +{:.1}us, p99 +{:.1}us over in-process",
                p50 - base.1,
                p99 - base.2
            );
        }
    }
    if std::env::args().any(|a| a == "--report") {
        std::fs::create_dir_all("docs/bench").expect("docs/bench");
        std::fs::write("docs/bench/bus.md", md + "\n").expect("write docs/bench/bus.md");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
