//! A pair: one or more shards (a UDP socket each, sharing the port), each running ingest and
//! fanout on one thread through the direct bus or on two threads joined by the in-process
//! bus; an optional Prometheus metrics endpoint; an optional agent that registers with a
//! controller. This is where the layers are wired together; the logic lives in `scene`,
//! `udp_ingest`, `ipc_bus` and `fanout`.

mod admin;
pub mod agent;
mod sessions;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use sessions::{SessionEntry, SessionsError, SessionsFile};

use crate::fanout::{DirectFanout, Fanout, Sender};
use crate::ipc_bus::inproc::InprocBus;
use crate::ipc_bus::{Publisher, Topic};
use crate::net::metrics::MetricsServer;
use crate::net::{bind_udp_shards, shard_of, SocketOptions};
use crate::replication::stream::StreamHub;
use crate::replication::{Replica, ReplicaStatus};
use crate::scene::Batch;
use crate::scene::{self, Engine};
use crate::security::KeyPair;
use crate::stats::{PairStats, StatsSet};
use crate::udp_ingest::{self, Ingest, ProbeIdentity, SessionControl};
use admin::Health;

/// Batches the bus may hold between ingest and fanout before ingest waits.
const BUS_CAPACITY: usize = 1024;

/// Everything a pair needs to start.
#[derive(Clone, Debug)]
pub struct PairConfig {
    /// UDP endpoint devices send to.
    pub listen: SocketAddr,
    pub socket: SocketOptions,
    pub scene: scene::Config,
    /// Where to serve Prometheus metrics over HTTP (`GET /metrics`), if anywhere.
    pub metrics: Option<SocketAddr>,
    /// How ingest and fanout share the CPU.
    pub threading: Threading,
    /// Spin on the socket instead of sleeping in epoll: lowest latency, one core at 100%.
    pub busy_poll: bool,
    /// Shards: sockets sharing the port (SO_REUSEPORT), each with its own thread(s) and scene
    /// state; the kernel steers every datagram by its scene, so a scene lives in one shard.
    pub shards: usize,
    /// The replication stream (standbys, a remote fanout half); one shard only.
    pub replication: Option<ReplicationConfig>,
}

/// Where the pair streams its events and who may subscribe.
#[derive(Clone, Debug)]
pub struct ReplicationConfig {
    /// `tcp://HOST:PORT` (port 0: any) for standbys, `ipc:///path` for a fanout half.
    pub listen: Vec<String>,
    /// Subscribers must present it (the stream carries session keys).
    pub token: String,
    /// With a key pair, `tcp://` streams are encrypted (Noise) and subscribers must know its
    /// public key (the agent registers it as the pair's `bus_key`).
    pub key: Option<KeyPair>,
}

/// How a pair runs its ingest and fanout halves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Threading {
    /// One thread takes each burst from recvmmsg through the engine to sendmmsg (direct bus).
    #[default]
    Fused,
    /// Ingest and fanout on two threads joined by the in-process channel bus.
    Split,
    /// Ingest only: the fanout half is another process (`zonecast fanout`) that subscribes to
    /// the replication stream over `ipc://`.
    Remote,
}

impl Default for PairConfig {
    fn default() -> PairConfig {
        PairConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7200)),
            socket: SocketOptions::default(),
            scene: scene::Config::default(),
            metrics: None,
            threading: Threading::default(),
            busy_poll: false,
            shards: 1,
            replication: None,
        }
    }
}

/// Why a pair could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum PairError {
    Bind(io::Error),
    Metrics(String),
    Sessions(SessionsError),
    Bus(String),
}

impl std::fmt::Display for PairError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PairError::Bind(e) => write!(f, "cannot bind the UDP endpoint: {e}"),
            PairError::Metrics(e) => write!(f, "cannot serve metrics: {e}"),
            PairError::Sessions(e) => write!(f, "{e}"),
            PairError::Bus(e) => write!(f, "replication stream: {e}"),
        }
    }
}

impl std::error::Error for PairError {}

/// A running pair.
pub struct Pair {
    udp: SocketAddr,
    health: Arc<Health>,
    metrics: Option<MetricsServer>,
    stats: Arc<StatsSet>,
    stop: Arc<AtomicBool>,
    sessions: SessionControl,
    threads: Vec<JoinHandle<()>>,
    replica: Option<Arc<ReplicaStatus>>,
    bus: Vec<String>,
    agent: Option<Arc<agent::AgentStatus>>,
    probes: Arc<ProbeIdentity>,
}

impl Pair {
    /// Binds, admits `sessions` and starts the ingest and fanout threads of every shard.
    pub fn start(config: &PairConfig, sessions: &[SessionEntry]) -> Result<Pair, PairError> {
        let shards = config.shards.max(1);
        if shards > 1 && config.replication.is_some() {
            return Err(PairError::Bus(
                "a sharded pair cannot stream its state (use one shard)".into(),
            ));
        }
        if config.threading == Threading::Remote && config.replication.is_none() {
            return Err(PairError::Bus(
                "an ingest-only pair needs a stream for its fanout half".into(),
            ));
        }
        let sockets =
            bind_udp_shards(config.listen, &config.socket, shards).map_err(PairError::Bind)?;
        let udp = sockets[0].local_addr().map_err(PairError::Bind)?;
        let stats = Arc::new(StatsSet {
            shards: (0..shards)
                .map(|_| Arc::new(PairStats::default()))
                .collect(),
        });
        let health = Arc::new(Health::default());
        if let Ok(mut u) = health.udp.lock() {
            *u = udp.to_string();
        }
        let metrics = match config.metrics {
            Some(addr) => Some(
                MetricsServer::start(addr, admin::admin(stats.clone(), health.clone()))
                    .map_err(PairError::Metrics)?,
            ),
            None => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(ProbeIdentity::default());
        let mut threads = Vec::new();
        let mut controls = Vec::new();
        let mut replica = None;
        let mut bus = Vec::new();
        for (i, socket) in sockets.into_iter().enumerate() {
            let mine: Vec<&SessionEntry> = sessions
                .iter()
                .filter(|s| shard_of(s.scene, shards) == i)
                .collect();
            let shard = Shard {
                index: i,
                socket,
                stats: stats.shards[i].clone(),
                stop: stop.clone(),
                probes: probes.clone(),
                health: health.clone(),
            };
            let (control, handles, rep) = shard.start(config, &mine)?;
            if let Some((status, endpoints)) = rep {
                replica = Some(status);
                bus = endpoints;
            }
            controls.push(control);
            threads.extend(handles);
        }
        if let Ok(mut b) = health.bus.lock() {
            b.clone_from(&bus);
        }
        Ok(Pair {
            udp,
            health,
            metrics,
            stats,
            stop,
            sessions: SessionControl::join(controls),
            threads,
            replica,
            bus,
            agent: None,
            probes,
        })
    }

    /// The bound replication stream endpoints (real ports), in the configured order.
    pub fn bus_endpoints(&self) -> &[String] {
        &self.bus
    }

    /// The UDP endpoint devices send to.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp
    }

    /// The metrics endpoint, if serving.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.addr())
    }

    /// Where to send session changes (admit, revoke) to the running pair.
    pub fn sessions(&self) -> SessionControl {
        self.sessions.clone()
    }

    /// The counters of every shard (`snapshot()` adds them up).
    pub fn stats(&self) -> &Arc<StatsSet> {
        &self.stats
    }

    /// Whether the pair stopped because it drained (on purpose).
    pub fn drained(&self) -> bool {
        self.agent.as_ref().is_some_and(|a| a.drained.load(Relaxed))
    }

    /// Asks the agent to leave (SIGTERM): drain to the standby or deregister within `within`,
    /// then stop (see `Tracker::leave`). False when there is no agent (static sessions).
    pub fn leave(&self, within: Duration) -> bool {
        match &self.agent {
            Some(a) => {
                let ms = u64::try_from(within.as_millis()).unwrap_or(u64::MAX).max(1);
                a.leave_within_ms.store(ms, Relaxed);
                true
            }
            None => false,
        }
    }

    /// Why the agent stopped for good, if it did (a registration refused as unauthorized).
    pub fn fatal(&self) -> Option<String> {
        self.agent
            .as_ref()
            .and_then(|a| a.fatal.lock().ok().and_then(|f| f.clone()))
    }

    /// Whether both halves are still running.
    pub fn is_running(&self) -> bool {
        self.threads.iter().all(|t| !t.is_finished())
    }

    /// Starts the agent that registers this pair with a controller and applies its assignment.
    pub fn register(
        &mut self,
        config: agent::AgentConfig,
    ) -> std::io::Result<Arc<agent::AgentStatus>> {
        self.probes
            .configure(&config.tracker.token, config.tracker.requires_fanout);
        let (status, thread) = agent::spawn(
            config,
            self.probes.clone(),
            self.sessions(),
            self.stats.clone(),
            self.replica.clone(),
            self.stop.clone(),
        )?;
        self.threads.push(thread);
        self.agent = Some(status.clone());
        if let Ok(mut a) = self.health.agent.lock() {
            *a = Some(status.clone());
        }
        Ok(status)
    }

    /// Stops both threads and waits for them.
    pub fn stop(mut self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

/// Starts a shard thread; one that ends while the pair is not stopping marks it failed
/// (`/live` says so).
fn spawn(
    name: &str,
    health: &Arc<Health>,
    stop: &Arc<AtomicBool>,
    f: impl FnOnce() + Send + 'static,
) -> JoinHandle<()> {
    let (health, stop) = (health.clone(), stop.clone());
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            f();
            if !stop.load(Relaxed) {
                health.failed.store(true, Relaxed);
            }
        })
        .expect("the OS refused to start a thread")
}

/// One shard: a socket of the reuse-port group, its scene engine and its threads.
struct Shard {
    index: usize,
    socket: std::net::UdpSocket,
    stats: Arc<PairStats>,
    stop: Arc<AtomicBool>,
    probes: Arc<ProbeIdentity>,
    health: Arc<Health>,
}

impl Shard {
    fn start(
        self,
        config: &PairConfig,
        sessions: &[&SessionEntry],
    ) -> Result<ShardParts, PairError> {
        let send_socket = self.socket.try_clone().map_err(PairError::Bind)?;
        let mut engine = Engine::new(config.scene.clone());
        let mut initial = Batch::default();
        let now = std::time::Instant::now();
        for s in sessions {
            let key = s.session_key().map_err(PairError::Sessions)?;
            engine.admit(now, s.device, s.scene, key, &mut initial);
        }
        let tick = (config.scene.evict_after / 4)
            .clamp(Duration::from_millis(5), Duration::from_millis(50));
        let mut socket = mio::net::UdpSocket::from_std(self.socket);
        let udp_ingest::Prepared {
            poll,
            control,
            commands,
            waker,
        } = udp_ingest::prepare(&mut socket).map_err(PairError::Bind)?;
        let mut rep = None;
        let replica = match &config.replication {
            Some(r) => {
                let hub = StreamHub::bind(&r.listen, &r.token, r.key.clone())
                    .map_err(|e| PairError::Bus(e.to_string()))?;
                let status = Arc::new(ReplicaStatus::default());
                rep = Some((status.clone(), hub.endpoints().to_vec()));
                let scene = config.scene.clone();
                Some(Replica::new(
                    hub,
                    r.token.clone(),
                    scene,
                    status,
                    self.stats.clone(),
                    waker,
                ))
            }
            None => None,
        };
        let stats = self.stats;
        let ingest = |publisher: Box<dyn Publisher>| Ingest {
            socket,
            engine,
            publisher,
            stats: stats.clone(),
            stop: self.stop.clone(),
            tick,
            commands,
            busy_poll: config.busy_poll,
            replica,
            probes: self.probes.clone(),
        };
        let i = self.index;
        let (health, stop) = (self.health.clone(), self.stop.clone());
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| spawn(name, &health, &stop, f);
        let threads = match config.threading {
            Threading::Fused => {
                let direct = DirectFanout {
                    sender: Sender::new(send_socket),
                    stats: stats.clone(),
                };
                let ingest = ingest(Box::new(direct));
                vec![spawn(
                    &format!("zc-pair-{i}"),
                    Box::new(move || {
                        if let Err(e) = ingest.run(poll, initial) {
                            tracing::error!("shard {i} stopped: {e}");
                        }
                    }),
                )]
            }
            Threading::Split => {
                let mut bus = InprocBus::new(BUS_CAPACITY);
                let subscriber = bus.subscribe(&[Topic::All]);
                let ingest = ingest(Box::new(bus.publisher()));
                let fanout = Fanout {
                    socket: send_socket,
                    subscriber,
                    stats: stats.clone(),
                };
                vec![
                    spawn(
                        &format!("zc-ingest-{i}"),
                        Box::new(move || {
                            if let Err(e) = ingest.run(poll, initial) {
                                tracing::error!("shard {i} ingest stopped: {e}");
                            }
                        }),
                    ),
                    spawn(
                        &format!("zc-fanout-{i}"),
                        Box::new(move || {
                            let _ = fanout.run();
                        }),
                    ),
                ]
            }
            Threading::Remote => {
                let ingest = ingest(Box::new(NoFanout));
                vec![spawn(
                    &format!("zc-ingest-{i}"),
                    Box::new(move || {
                        if let Err(e) = ingest.run(poll, initial) {
                            tracing::error!("stopped: {e}");
                        }
                    }),
                )]
            }
        };
        Ok((control, threads, rep))
    }
}

/// What a started shard hands back: its session control, its threads and, when it streams,
/// its replication status and bound stream endpoints.
type ShardParts = (
    SessionControl,
    Vec<JoinHandle<()>>,
    Option<(Arc<ReplicaStatus>, Vec<String>)>,
);

/// The publisher of an ingest whose fanout is another process: the replication stream,
/// written before this, carries everything.
struct NoFanout;

impl Publisher for NoFanout {
    fn publish(&mut self, mut batch: Batch) -> Result<Batch, crate::ipc_bus::BusError> {
        batch.clear();
        Ok(batch)
    }
}
