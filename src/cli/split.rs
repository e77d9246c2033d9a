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
use zonecast::net::metrics::{Admin, MetricsServer};
use zonecast::net::{bind_udp, SocketOptions};
use zonecast::pair::Threading;
use zonecast::replication::stream::{LinkSubscriber, Role, StreamLink};
use zonecast::stats::PairStats;

use super::pair::PairArgs;
use super::Failure;

#[derive(Args)]
pub struct IngestArgs {
    /// Where the fanout half subscribes: ipc:///path (a stale socket file is replaced).
    #[arg(long)]
    fanout_bus: String,
    #[command(flatten)]
    pair: PairArgs,
}

impl IngestArgs {
    pub fn validate(&self) -> Result<(), Failure> {
        if !self.fanout_bus.starts_with("ipc://") {
            return Err(Failure::usage("--fanout-bus must be ipc:///path"));
        }
        self.pair.validate()
    }
}

/// A fanout half's `/status` (after the build fields).
#[derive(serde::Serialize)]
struct FanoutStatus<'a> {
    bus: &'a str,
    datagrams_out: u64,
    updates_out: u64,
    refused: u64,
}

pub fn run_ingest(a: IngestArgs) -> Result<(), Failure> {
    a.validate()?;
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
    /// Serve Prometheus metrics (this half's sends) and /live, /ready, /status at
    /// http://ADDR/.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Exit (status 1) if the ingest half's socket is not there within this long of the
    /// start; once connected, a lost ingest half is waited for (it may be restarting).
    #[arg(long, default_value_t = 1_000)]
    wait_for_ingest_ms: u64,
}

impl FanoutArgs {
    pub fn validate(&self) -> Result<(), Failure> {
        if !self.bus.starts_with("ipc://") || self.bus.len() <= "ipc://".len() {
            return Err(Failure::usage(
                "--bus must be ipc:///path (the ingest half's --fanout-bus)",
            ));
        }
        if self.send_buffer == 0 {
            return Err(Failure::usage("--send-buffer must be above 0"));
        }
        Ok(())
    }

    /// Waits for the ingest half's socket file.
    fn wait_for_ingest(&self) -> Result<(), Failure> {
        use std::os::unix::fs::FileTypeExt;
        let path = self.bus.trim_start_matches("ipc://");
        let by = std::time::Instant::now() + Duration::from_millis(self.wait_for_ingest_ms);
        loop {
            if std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                return Ok(());
            }
            if std::time::Instant::now() >= by {
                return Err(Failure::from(format!(
                    "no ingest half at {}: no socket at {path} after {} ms (start `zonecast ingest --fanout-bus {}` first)",
                    self.bus, self.wait_for_ingest_ms, self.bus
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn run_fanout(a: FanoutArgs) -> Result<(), Failure> {
    a.validate()?;
    a.wait_for_ingest()?;
    let options = SocketOptions {
        send_buffer: a.send_buffer,
        ..SocketOptions::default()
    };
    let socket = bind_udp(a.listen, &options).map_err(|e| e.to_string())?;
    let from = socket.local_addr().map_err(|e| e.to_string())?;
    let stats = Arc::new(PairStats::default());
    let link = StreamLink::connect_reporting(
        &a.bus,
        Role::Fanout,
        &a.token,
        None,
        None,
        Some(stats.clone()),
    )
    .map_err(|e| e.to_string())?;
    let malformed = Arc::new(AtomicU64::new(0));
    let fanout = Fanout {
        socket,
        subscriber: LinkSubscriber {
            link,
            malformed: malformed.clone(),
        },
        stats: stats.clone(),
    };
    let _admin = match a.metrics {
        Some(addr) => {
            let (m, st) = (stats.clone(), stats.clone());
            let bus = a.bus.clone();
            let admin = Admin {
                metrics: Arc::new(move || m.snapshot().to_prometheus()),
                live: Arc::new(|| Ok(())),
                // Its ingest half's socket was there at the start; the link redials it.
                ready: Arc::new(|| Ok(())),
                status: Arc::new(move || {
                    let s = st.snapshot();
                    let doc = FanoutStatus {
                        bus: &bus,
                        datagrams_out: s.fanout_datagrams,
                        updates_out: s.fanout_updates,
                        refused: s.fanout_refused,
                    };
                    zonecast::net::metrics::status_json("fanout", &doc)
                }),
            };
            Some(MetricsServer::start(addr, admin)?)
        }
        None => None,
    };
    let shown = _admin.as_ref().map_or("off".to_string(), |m| {
        format!("http://{}/metrics", m.addr())
    });
    println!("zonecast fanout: bus={} udp={from} metrics={shown}", a.bus);
    let every = Duration::from_secs(a.stats_every_secs);
    if !every.is_zero() {
        std::thread::spawn(move || loop {
            std::thread::sleep(every);
            let s = stats.snapshot();
            tracing::info!(
                datagrams_out = s.fanout_datagrams,
                updates = s.fanout_updates,
                refused = s.fanout_refused,
                malformed_frames = malformed.load(std::sync::atomic::Ordering::Relaxed),
                "counters"
            );
        });
    }
    Ok(fanout.run().map_err(|e| e.to_string())?)
}
