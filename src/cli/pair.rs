//! `zonecast pair`: serve the sessions of a file until killed.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use zonecast::net::SocketOptions;
use zonecast::pair::{Pair, PairConfig, SessionsFile};
use zonecast::scene;

#[derive(Args)]
pub struct PairArgs {
    /// UDP endpoint devices send to.
    #[arg(long, default_value = "127.0.0.1:7200")]
    listen: SocketAddr,
    /// Sessions file (see `zonecast sessions`).
    #[arg(long)]
    sessions: PathBuf,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Evict a joined device silent for this long and announce its departure.
    #[arg(long, default_value_t = 10_000)]
    evict_after_ms: u64,
    /// Most objects one scene may hold (at most 65535).
    #[arg(long, default_value_t = 16_384)]
    max_objects_per_scene: usize,
    /// Let several sockets share the UDP port (SO_REUSEPORT).
    #[arg(long)]
    reuse_port: bool,
    /// Socket receive buffer request, bytes.
    #[arg(long, default_value_t = 4 << 20)]
    recv_buffer: usize,
    /// Socket send buffer request, bytes.
    #[arg(long, default_value_t = 4 << 20)]
    send_buffer: usize,
    /// Print a counters line to stderr this often (0: never).
    #[arg(long, default_value_t = 10)]
    stats_every_secs: u64,
}

pub fn run(a: PairArgs) -> Result<(), String> {
    let sessions = SessionsFile::load(&a.sessions).map_err(|e| e.to_string())?;
    let config = PairConfig {
        listen: a.listen,
        socket: SocketOptions {
            recv_buffer: a.recv_buffer,
            send_buffer: a.send_buffer,
            reuse_port: a.reuse_port,
        },
        scene: scene::Config {
            evict_after: Duration::from_millis(a.evict_after_ms.max(1)),
            max_objects_per_scene: a.max_objects_per_scene,
            ..scene::Config::default()
        },
        metrics: a.metrics,
    };
    let pair = Pair::start(&config, &sessions.devices).map_err(|e| e.to_string())?;
    let metrics = pair
        .metrics_addr()
        .map(|m| format!("http://{m}/metrics"))
        .unwrap_or_else(|| "off".into());
    println!(
        "zonecast pair: udp={} metrics={} sessions={}",
        pair.udp_addr(),
        metrics,
        sessions.devices.len()
    );
    let _ = std::io::stdout().flush();
    let every = Duration::from_secs(a.stats_every_secs);
    while pair.is_running() {
        std::thread::sleep(if every.is_zero() {
            Duration::from_secs(1)
        } else {
            every
        });
        if !every.is_zero() {
            let s = pair.stats().snapshot();
            eprintln!(
                "zonecast pair: in={} accepted={} dropped={} out={} joined={} objects={}",
                s.ingest_datagrams,
                s.ingest_accepted,
                s.ingest_drops.total(),
                s.fanout_datagrams,
                s.joined,
                s.objects
            );
        }
    }
    Err("a pair thread stopped".into())
}
