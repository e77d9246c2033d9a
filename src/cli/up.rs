//! `zonecast up`: a whole local setup in one process, for newcomers and demos. Starts a pair
//! on loopback with generated sessions (written to a file so `zonecast device` can join too),
//! runs simulated devices moving objects on circles, and prints live rates every second.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use zonecast::client::{Device, Event, Poller, Session};
use zonecast::net::unix_ns;
use zonecast::pair::{Pair, PairConfig, SessionsFile, StatsSnapshot};
use zonecast::wire::{Fields, MASK_ROTATION, MASK_TRANSLATION};

use super::micros;

/// Sessions provisioned beyond the simulated devices, for people to join with.
const SPARE_SESSIONS: u32 = 2;

#[derive(Args)]
pub struct UpArgs {
    /// UDP endpoint of the pair.
    #[arg(long, default_value = "127.0.0.1:7200")]
    listen: SocketAddr,
    /// Prometheus metrics endpoint.
    #[arg(long, default_value = "127.0.0.1:7201")]
    metrics: SocketAddr,
    /// Simulated devices (0: only the pair).
    #[arg(long, default_value_t = 4)]
    devices: u32,
    /// Updates per second each simulated device sends.
    #[arg(long, default_value_t = 20.0)]
    hz: f64,
    /// Stop after this many seconds (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    duration_secs: u64,
    /// Where to write the sessions file (default: a fresh temporary folder).
    #[arg(long)]
    sessions_out: Option<PathBuf>,
}

pub fn run(a: UpArgs) -> Result<(), String> {
    let sessions = SessionsFile::generate(1, a.devices + SPARE_SESSIONS, 1);
    let path = match a.sessions_out {
        Some(p) => p,
        None => {
            let dir = std::env::temp_dir().join(format!("zonecast-up-{}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            dir.join("sessions.json")
        }
    };
    std::fs::write(&path, sessions.to_json()).map_err(|e| format!("{}: {e}", path.display()))?;
    let config = PairConfig {
        listen: a.listen,
        metrics: Some(a.metrics),
        ..PairConfig::default()
    };
    let pair = Pair::start(&config, &sessions.devices).map_err(|e| e.to_string())?;
    let udp = pair.udp_addr();
    println!("zonecast up");
    println!("  pair      udp {udp}  (ingest + in-process bus + fanout)");
    if let Some(m) = pair.metrics_addr() {
        println!("  metrics   http://{m}/metrics");
    }
    println!("  sessions  {}  scene 1", path.display());
    println!("  devices   {} simulated at {} Hz", a.devices, a.hz);
    for spare in a.devices + 1..=a.devices + SPARE_SESSIONS {
        println!(
            "  join in   zonecast device --pair {udp} --sessions {} --device {spare}",
            path.display()
        );
    }
    let mut devices = Vec::new();
    for s in sessions.devices.iter().take(a.devices as usize) {
        let key = s.session_key().map_err(|e| e.to_string())?;
        let session = Session {
            device: s.device,
            scene: s.scene,
            key,
            pair: udp,
        };
        let mut d = Device::connect(session).map_err(|e| e.to_string())?;
        d.join(0.0).map_err(|e| e.to_string())?;
        devices.push(d);
    }
    simulate(&pair, &mut devices, a.hz, a.duration_secs)
}

/// Drives the simulated devices and prints one line per second until the duration ends.
fn simulate(
    pair: &Pair,
    devices: &mut [Device],
    hz: f64,
    duration_secs: u64,
) -> Result<(), String> {
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / hz.max(0.1));
    let mut next_send = start;
    let mut next_line = start + Duration::from_secs(1);
    let mut next_keepalive = start + Duration::from_secs(1);
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
        if !pair.is_running() {
            return Err("the pair stopped".into());
        }
        if now >= next_send && !devices.is_empty() {
            let t = start.elapsed().as_secs_f32();
            for (i, d) in devices.iter_mut().enumerate() {
                let phase = t + i as f32;
                let fields = Fields {
                    translation: [phase.cos() * 10.0, 1.0, phase.sin() * 10.0],
                    rotation: [0.0, (phase / 2.0).sin(), 0.0, (phase / 2.0).cos()],
                    ..Fields::default()
                };
                let object = u64::from(d.session().device);
                d.update(object, MASK_TRANSLATION | MASK_ROTATION, &fields, &[])
                    .map_err(|e| e.to_string())?;
            }
            next_send += period;
        }
        if now >= next_keepalive {
            for d in devices.iter_mut() {
                d.keepalive().map_err(|e| e.to_string())?;
            }
            next_keepalive += Duration::from_secs(1);
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
            let s = pair.stats().snapshot();
            println!(
                "t={:>4}s  ingest {:>6}/s  fanout {:>6}/s  dropped {}  joined {}  objects {}  |  devices received {:>6}/s  p50 {}  p99 {}",
                start.elapsed().as_secs(),
                s.ingest_accepted - last.ingest_accepted,
                s.fanout_datagrams - last.fanout_datagrams,
                s.ingest_drops.total(),
                s.joined,
                s.objects,
                received,
                micros(Duration::from_nanos(latency.value_at_quantile(0.5))),
                micros(Duration::from_nanos(latency.value_at_quantile(0.99))),
            );
            last = s;
            received = 0;
            latency.reset();
            next_line += Duration::from_secs(1);
        }
        let wake = next_send.min(next_line).min(next_keepalive);
        poller.wait(wake.saturating_duration_since(Instant::now()));
    }
}
