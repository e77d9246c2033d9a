//! `zonecast ingest` and `zonecast fanout`: a pair as two processes. Ingest receives, checks
//! and orders datagrams and streams every event over `ipc://`; fanout subscribes and sends.
//! The controller sees one pair (ingest registers it), healthy only while the fanout half is
//! connected: without it, ingest stops heartbeating and the pair is failed over.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use zonecast::fanout::Fanout;
use zonecast::net::{bind_udp, SocketOptions};
use zonecast::pair::Threading;
use zonecast::replication::stream::{LinkSubscriber, Role, StreamLink};
use zonecast::stats::PairStats;

use super::pair::PairArgs;

#[derive(Args)]
pub struct IngestArgs {
    /// Where the fanout half subscribes: ipc:///path (a stale socket file is replaced).
    #[arg(long)]
    fanout_bus: String,
    #[command(flatten)]
    pair: PairArgs,
}

pub fn run_ingest(a: IngestArgs) -> Result<(), String> {
    if !a.fanout_bus.starts_with("ipc://") {
        return Err("--fanout-bus must be ipc:///path".into());
    }
    super::pair::run(a.pair, Threading::Remote, vec![a.fanout_bus])
}

#[derive(Args)]
pub struct FanoutArgs {
    /// The ingest half's stream, ipc:///path.
    #[arg(long)]
    bus: String,
    /// Cluster token (the stream carries session keys).
    #[arg(long, env = "ZONECAST_TOKEN", hide_env_values = true)]
    token: String,
    /// UDP address to send from (devices accept the pair's datagrams from any address: they
    /// are authenticated).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Socket send buffer request, bytes.
    #[arg(long, default_value_t = 4 << 20)]
    send_buffer: usize,
    /// Print a counters line to stderr this often (0: never).
    #[arg(long, default_value_t = 10)]
    stats_every_secs: u64,
}

pub fn run_fanout(a: FanoutArgs) -> Result<(), String> {
    let options = SocketOptions {
        send_buffer: a.send_buffer,
        ..SocketOptions::default()
    };
    let socket = bind_udp(a.listen, &options).map_err(|e| e.to_string())?;
    let from = socket.local_addr().map_err(|e| e.to_string())?;
    let link = StreamLink::connect(&a.bus, Role::Fanout, &a.token, None, None)
        .map_err(|e| e.to_string())?;
    let malformed = Arc::new(AtomicU64::new(0));
    let stats = Arc::new(PairStats::default());
    let fanout = Fanout {
        socket,
        subscriber: LinkSubscriber {
            link,
            malformed: malformed.clone(),
        },
        stats: stats.clone(),
    };
    println!("zonecast fanout: bus={} udp={from}", a.bus);
    let every = Duration::from_secs(a.stats_every_secs);
    if !every.is_zero() {
        std::thread::spawn(move || loop {
            std::thread::sleep(every);
            let s = stats.snapshot();
            eprintln!(
                "zonecast fanout: out={} updates={} refused={} malformed_frames={}",
                s.fanout_datagrams,
                s.fanout_updates,
                s.fanout_refused,
                malformed.load(std::sync::atomic::Ordering::Relaxed)
            );
        });
    }
    fanout.run().map_err(|e| e.to_string())
}
