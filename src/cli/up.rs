//! `zonecast up`: a whole local cluster in one process, for newcomers and demos: two
//! controller replicas (an active and a passive behind a file lock, their state in a fresh
//! directory under the system's temporary directory), two pairs registered in region
//! `local`, a demo scene, and simulated devices registered through the control plane, moving
//! objects on circles. Prints what runs where, then live rates every second.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use zonecast::client::{Area, Device, Event, Poller, Roaming, Session};
use zonecast::control::client::ControlClient;
use zonecast::control::protocol::{Discovered, Request, SceneCreated};
use zonecast::control::replica::lock::FileLock;
use zonecast::control::replica::AckMode;
use zonecast::control::server::{ControllerServer, ServerOptions};
use zonecast::net::unix_ns;
use zonecast::net::zeromq::Curve;
use zonecast::pair::agent::AgentConfig;
use zonecast::pair::{Pair, PairConfig, ReplicationConfig};
use zonecast::replication::assignment::TrackerConfig;
use zonecast::security::KeyPair;
use zonecast::stats::StatsSnapshot;
use zonecast::wire::{Fields, SessionKey, MASK_ROTATION, MASK_TRANSLATION};
use zonecast::zones::Grid;

use super::controller::controller_config;
use super::micros;

const REGION: &str = "local";

#[derive(Args)]
pub struct UpArgs {
    /// Control endpoint of the controller.
    #[arg(long, default_value = super::controller::DEFAULT_CONTROL)]
    control: String,
    /// UDP endpoint of the first pair; the second takes the next port (port 0: any free ports).
    #[arg(long, default_value = "127.0.0.1:7201")]
    listen: SocketAddr,
    /// Metrics endpoint of the first pair; the second takes the next port.
    #[arg(long, default_value = "127.0.0.1:9201")]
    metrics: SocketAddr,
    /// Simulated devices (0: only the cluster).
    #[arg(long, default_value_t = 4)]
    devices: u32,
    /// Updates per second each simulated device sends.
    #[arg(long, default_value_t = 20.0)]
    hz: f64,
    /// Stop after this many seconds (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    duration_secs: u64,
    /// Encrypt what would leave the host in a real cluster: CurveZMQ on the control plane
    /// (a fresh controller key pair, printed) and Noise on the pairs' replication streams.
    #[arg(long)]
    secure: bool,
}

/// `tcp://HOST:PORT` with port 0 (any free port); other endpoints unchanged.
fn any_port(endpoint: &str) -> String {
    match endpoint.rsplit_once(':') {
        Some((host, _)) if endpoint.starts_with("tcp://") => format!("{host}:0"),
        _ => format!("{endpoint}-2"),
    }
}

/// Waits until the controller at `endpoint` is active (it takes the lock within milliseconds).
fn wait_active(endpoint: &str, key: Option<zonecast::security::PublicKey>) -> Result<(), String> {
    let mut client = ControlClient::new(endpoint)
        .map_err(|e| e.to_string())?
        .with_server_key(key);
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let found: Result<Discovered, _> = client.call(&Request::Discovery {});
        if found.is_ok_and(|d| d.role == "active") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!(
        "the controller at {endpoint} did not become active"
    ))
}

/// The address after `a` (same address when the port is 0: any free port).
fn next_port(a: SocketAddr) -> SocketAddr {
    let mut b = a;
    if a.port() != 0 {
        b.set_port(a.port().wrapping_add(1));
    }
    b
}

pub fn run(a: UpArgs) -> Result<(), String> {
    let token = SessionKey::random().to_hex();
    let controller_key = a.secure.then(KeyPair::generate);
    let public = controller_key.as_ref().map(KeyPair::public);
    let mut config = controller_config(token.clone(), 50, 250, 2000);
    config.encrypted = a.secure;
    let data = std::env::temp_dir().join(format!("zonecast-up-{}", std::process::id()));
    let mut controllers = Vec::new();
    // The first replica takes the lock (it starts first); the second follows it, on any port.
    for (i, endpoint) in [a.control.as_str(), &any_port(&a.control)]
        .into_iter()
        .enumerate()
    {
        let options = ServerOptions {
            curve: controller_key.clone().map_or(Curve::Off, Curve::Server),
            data_dir: Some(data.join(format!("controller-{}", i + 1))),
            lock: Some(Box::new(FileLock::new(&data.join("controller.lock")))),
            ack: AckMode::Replica,
        };
        controllers.push(ControllerServer::start(endpoint, config.clone(), options)?);
        if i == 0 {
            wait_active(controllers[0].endpoint(), public)?;
        }
    }
    let control = controllers
        .iter()
        .map(|c| c.endpoint().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let connect = || {
        ControlClient::new(&control)
            .map(|c| c.with_server_key(public))
            .map_err(|e| e.to_string())
    };
    let mut pairs = Vec::new();
    let (mut listen, mut metrics) = (a.listen, a.metrics);
    for _ in 0..2 {
        // Each pair streams its state so the other stands by for it.
        let stream_key = a.secure.then(KeyPair::generate);
        let config = PairConfig {
            listen,
            metrics: Some(metrics),
            replication: Some(ReplicationConfig {
                listen: vec![format!("tcp://{}", SocketAddr::new(listen.ip(), 0))],
                token: token.clone(),
                key: stream_key.clone(),
            }),
            ..PairConfig::default()
        };
        let mut pair = Pair::start(&config, &[]).map_err(|e| e.to_string())?;
        let status = pair
            .register(AgentConfig {
                control: control.clone(),
                controller_key: public,
                tracker: TrackerConfig {
                    token: token.clone(),
                    region: REGION.into(),
                    advertise: pair.udp_addr(),
                    capacity: 10_000,
                    version: env!("CARGO_PKG_VERSION").into(),
                    bus: pair.bus_endpoints().first().cloned(),
                    bus_key: stream_key.as_ref().map(KeyPair::public),
                    requires_fanout: false,
                    drain_grace: Duration::from_secs(2),
                },
            })
            .map_err(|e| e.to_string())?;
        pairs.push((pair, status));
        listen = next_port(listen);
        metrics = next_port(metrics);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pairs
        .iter()
        .any(|(_, s)| !s.registered.load(std::sync::atomic::Ordering::Relaxed))
    {
        if Instant::now() > deadline {
            return Err("the pairs did not register with the controller".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut client = connect()?;
    // Two zones, the halves x < 0 and x >= 0: each pair serves one, and the simulated
    // devices, walking a circle through both, are handed from one pair to the other.
    let mut create = Request::scene_create(Some(token.clone()), "demo".into(), REGION.into());
    if let Request::SceneCreate { grid, .. } = &mut create {
        *grid = Some(Grid {
            origin: [-HALF, 0.0, -HALF],
            cell: [HALF, 0.0, 2.0 * HALF],
            counts: [2, 1, 1],
        });
    }
    let created: SceneCreated = client.call(&create).map_err(|e| e.to_string())?;
    let scene = created.scene.id;

    println!("zonecast up: a local cluster in one process");
    println!(
        "  controllers {control}   (active, passive; state in {})   token {token}",
        data.display()
    );
    let key_arg = match public {
        Some(k) => {
            println!("  encrypted   CurveZMQ (controller key {k}), Noise on replication streams");
            format!(" --controller-key '{k}'")
        }
        None => String::new(),
    };
    for (pair, status) in &pairs {
        let id = status.pair.load(std::sync::atomic::Ordering::Relaxed);
        let m = pair
            .metrics_addr()
            .map(|m| format!("http://{m}/metrics"))
            .unwrap_or_default();
        println!(
            "  pair {id}      udp {}   region {REGION}   metrics {m}",
            pair.udp_addr()
        );
    }
    let halves = match created.scene.pairs.as_slice() {
        [west, east] => format!("x < 0 on pair {west}, x >= 0 on pair {east}"),
        _ => "one pair".into(),
    };
    println!("  scene {scene}     `demo` in region {REGION}: two zones, {halves}");
    println!("  devices     {} simulated at {} Hz", a.devices, a.hz);
    let me = command_name();
    println!("  join in     {me} device --control {control} --scene {scene}{key_arg}");
    // The simulated objects circle the origin at radius 10: a sphere of 4 around (10, 1, 0)
    // sees each one pass, and hears when it leaves.
    println!(
        "  nearby      {me} device --control {control} --scene {scene}{key_arg} --anchor 10,1,0 --radius 4"
    );
    println!("  look        {me} status --control {control} --token {token}{key_arg}");
    let mut devices = Vec::new();
    let mut roaming = Vec::new();
    for i in 0..a.devices {
        let reg = client
            .register_device_at(scene, Some("simulated"), None, Some(walker_at(0.0, i)))
            .map_err(|e| e.to_string())?;
        let mut d = Device::connect(Session {
            device: reg.location.device,
            scene,
            key: reg.key,
            pair: reg.location.udp,
        })
        .map_err(|e| e.to_string())?;
        d.set_epoch(reg.location.epoch);
        devices.push(d);
        roaming.push(Roaming::new(connect()?));
    }
    // Sessions reach the pair with its next heartbeat: join once they are there.
    std::thread::sleep(Duration::from_millis(120));
    for (i, d) in devices.iter_mut().enumerate() {
        let area = Area::sphere(walker_at(0.0, i as u32), SEES);
        d.join_area(area).map_err(|e| e.to_string())?;
    }
    let pairs: Vec<Pair> = pairs.into_iter().map(|(p, _)| p).collect();
    simulate(
        &controllers,
        &pairs,
        &mut devices,
        &mut roaming,
        a.hz,
        a.duration_secs,
    )
}

/// Drives the simulated devices and prints one line per second until the duration ends.
fn simulate(
    controllers: &[ControllerServer],
    pairs: &[Pair],
    devices: &mut [Device],
    roaming: &mut [Roaming],
    hz: f64,
    duration_secs: u64,
) -> Result<(), String> {
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / hz.max(0.1));
    let mut next_send = start;
    let mut next_line = start + Duration::from_secs(1);
    let mut next_anchor = start;
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| e.to_string())?;
    let mut received = 0u64;
    let mut last = StatsSnapshot::default();
    let mut poller = Poller::new(devices);
    loop {
        let now = Instant::now();
        if duration_secs > 0 && now >= start + Duration::from_secs(duration_secs) {
            return Ok(());
        }
        if !controllers.iter().any(|c| c.is_running()) || pairs.iter().any(|p| !p.is_running()) {
            return Err("a part of the cluster stopped".into());
        }
        for (d, r) in devices.iter_mut().zip(roaming.iter_mut()) {
            r.poll(d, now).map_err(|e| e.to_string())?;
        }
        if now >= next_send && !devices.is_empty() {
            let t = start.elapsed().as_secs_f32();
            let report = now >= next_anchor;
            for (i, d) in devices.iter_mut().enumerate() {
                let phase = t + i as f32;
                let at = walker_at(t, i as u32);
                let fields = Fields {
                    translation: at,
                    rotation: [0.0, (phase / 2.0).sin(), 0.0, (phase / 2.0).cos()],
                    ..Fields::default()
                };
                let object = u64::from(d.session().device);
                d.update(object, MASK_TRANSLATION | MASK_ROTATION, &fields, &[])
                    .map_err(|e| e.to_string())?;
                if report {
                    // The device walks with its object: its interest follows, and when it
                    // crosses x = 0 it is handed to the pair serving the other half.
                    d.move_anchor(at).map_err(|e| e.to_string())?;
                }
            }
            if report {
                next_anchor += ANCHOR_EVERY;
            }
            next_send += period;
        }
        for d in devices.iter_mut() {
            while let Some(e) = d.try_recv().map_err(|e| e.to_string())? {
                if let Event::Update(r) = e {
                    received += 1;
                    let ns = unix_ns().saturating_sub(r.origin_timestamp_ns).max(1);
                    let _ = latency.record(ns);
                }
            }
        }
        if now >= next_line {
            let s = sum(pairs);
            println!(
                "t={:>4}s  ingest {:>6}/s  fanout {:>6} updates/s in {:>6} datagrams/s  dropped {}  joined {}  objects {}  moved {}  |  devices received {:>6}/s  p50 {}  p99 {}",
                start.elapsed().as_secs(),
                s.ingest_accepted - last.ingest_accepted,
                s.fanout_updates - last.fanout_updates,
                s.fanout_datagrams - last.fanout_datagrams,
                s.ingest_drops.total(),
                s.joined,
                s.objects,
                s.devices_moved_out,
                received,
                micros(Duration::from_nanos(latency.value_at_quantile(0.5))),
                micros(Duration::from_nanos(latency.value_at_quantile(0.99))),
            );
            last = s;
            received = 0;
            latency.reset();
            next_line += Duration::from_secs(1);
        }
        let mut wake = next_send.min(next_line);
        for (d, r) in devices.iter().zip(roaming.iter()) {
            wake = wake.min(r.next_wake(d));
        }
        poller.wait(wake.saturating_duration_since(Instant::now()));
    }
}

/// Half the demo scene's width: its zones are x in [-HALF, 0) and [0, HALF).
const HALF: f32 = 20.0;
/// How far a simulated device sees (its neighbours on the circle are 9.6 apart).
const SEES: f32 = 12.0;
/// How often a simulated device reports its anchor.
const ANCHOR_EVERY: Duration = Duration::from_millis(100);

/// Where simulated device `i` is at `t` seconds: on a circle of radius 10 around the origin,
/// one radian behind the one before it (so each crosses x = 0 twice a lap).
fn walker_at(t: f32, i: u32) -> [f32; 3] {
    let phase = t + i as f32;
    [phase.cos() * 10.0, 1.0, phase.sin() * 10.0]
}

/// The counters of every pair added up.
fn sum(pairs: &[Pair]) -> StatsSnapshot {
    let mut total = StatsSnapshot::default();
    for p in pairs {
        total.add(&p.stats().snapshot());
    }
    total
}

/// How to run this binary again from a shell: `zonecast` when that is what PATH finds (after
/// `cargo install --path .`), else this executable's full path (e.g. under `target/release`).
fn command_name() -> String {
    let me = std::env::current_exe().ok();
    let on_path = std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            let candidate = d.join("zonecast");
            candidate.is_file()
                && me.as_ref().is_some_and(|m| {
                    std::fs::canonicalize(&candidate).ok() == std::fs::canonicalize(m).ok()
                })
        })
    });
    match me {
        Some(m) if !on_path => m.display().to_string(),
        _ => "zonecast".into(),
    }
}
