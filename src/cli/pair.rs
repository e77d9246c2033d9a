//! `zonecast pair`: serve the sessions of a file or a controller's assignment until killed
//! (or drained); `zonecast pair drain`: hand a pair's scenes over to its standby.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use zonecast::control::client::RequestError;
use zonecast::control::protocol::{PairDraining, Request};
use zonecast::control::ErrorCode;
use zonecast::net::SocketOptions;
use zonecast::pair::agent::AgentConfig;
use zonecast::pair::{Pair, PairConfig, ReplicationConfig, SessionsFile, Threading};
use zonecast::replication::assignment::TrackerConfig;
use zonecast::scene;
use zonecast::security::KeyPair;

use super::operator::OperatorArgs;
use super::signals::Signals;
use super::Failure;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct PairCli {
    #[command(subcommand)]
    action: Option<PairAction>,
    #[command(flatten)]
    run: PairArgs,
}

#[derive(Subcommand)]
enum PairAction {
    /// Move every scene of a pair, state and devices included, to its standby; the pair
    /// forwards stragglers for its grace period, then deregisters and exits. For rolling
    /// upgrades.
    Drain {
        /// The pair's id (see `zonecast status`).
        #[arg(long)]
        pair: u32,
        /// Keep asking this long while the standby is still catching up.
        #[arg(long, default_value_t = 10)]
        wait_secs: u64,
        #[command(flatten)]
        op: OperatorArgs,
    },
}

pub fn run_cli(c: PairCli) -> Result<(), Failure> {
    match c.action {
        None => run(c.run, Threading::Fused, Vec::new()),
        Some(PairAction::Drain {
            pair,
            wait_secs,
            op,
        }) => drain(pair, wait_secs, &op).map_err(Failure::from),
    }
}

impl PairCli {
    /// The values `zonecast config check` can judge without running.
    pub fn validate(&self) -> Result<(), Failure> {
        self.run.validate()
    }
}

fn drain(pair: u32, wait_secs: u64, op: &OperatorArgs) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    loop {
        let req = Request::PairDrain {
            token: op.token(),
            pair,
        };
        match op.try_call::<PairDraining>(&req)? {
            Ok(reply) => {
                println!(
                    "pair {pair} draining: {} scene(s) handed over (epoch {})",
                    reply.moved.len(),
                    reply.epoch
                );
                return Ok(());
            }
            // The standby is still taking the checkpoint: ask again.
            Err(RequestError::Refused(e))
                if e.code == ErrorCode::Conflict && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[derive(Args)]
pub struct PairArgs {
    /// UDP endpoint devices send to.
    #[arg(long, default_value = "127.0.0.1:7200")]
    listen: SocketAddr,
    /// Sessions file (see `zonecast sessions`): static sessions, with or without a controller.
    /// A pair needs this or --control.
    #[arg(long)]
    sessions: Option<PathBuf>,
    /// Register with this controller and serve what it assigns.
    #[arg(long)]
    control: Option<String>,
    /// Region to register in.
    #[arg(long, default_value = "local")]
    region: String,
    /// Cluster token.
    #[arg(long, env = "ZONECAST_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The controller's public key (Z85 or its BASE.key file): talk CurveZMQ to it, and
    /// encrypt this pair's replication stream (Noise) with --key or a fresh key pair.
    #[arg(long, env = "ZONECAST_CONTROLLER_KEY")]
    controller_key: Option<String>,
    /// This pair's key pair (`zonecast keygen`; BASE.key_secret) for its replication stream:
    /// the stream is encrypted and standbys learn the public key from the controller.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Device sessions this pair offers to serve (the controller balances by it).
    #[arg(long, default_value_t = 10_000)]
    capacity: u32,
    /// UDP endpoint devices are told to use (default: the bound one).
    #[arg(long)]
    advertise: Option<SocketAddr>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Evict a joined device silent for this long and announce its departure.
    #[arg(long, default_value_t = 10_000)]
    evict_after_ms: u64,
    /// Send nothing to a joined device silent this long, until it is heard again (it then gets
    /// a fresh snapshot). Devices keepalive at least every second. At or above
    /// --evict-after-ms, a silent device is evicted without a pause first.
    #[arg(long, default_value_t = 2_000)]
    quiet_after_ms: u64,
    /// Most objects one scene may hold (at most 65535).
    #[arg(long, default_value_t = 16_384)]
    max_objects_per_scene: usize,
    /// Cell size of the interest index: one value for x, y and z, or X,Y,Z; 0 leaves an axis
    /// unsplit (e.g. 32,0,32 for a world on the x-z plane). About the typical interest radius.
    #[arg(long, default_value = "32", value_parser = parse_cell)]
    interest_cell: [f32; 3],
    /// Send a device with an interest area its complete view this often, so a lost notice
    /// cannot leave its view wrong for long (0: never).
    #[arg(long, default_value_t = 5_000)]
    view_refresh_ms: u64,
    /// Let several sockets share the UDP port (SO_REUSEPORT).
    #[arg(long)]
    reuse_port: bool,
    /// Socket receive buffer request, bytes.
    #[arg(long, default_value_t = 4 << 20)]
    recv_buffer: usize,
    /// Socket send buffer request, bytes.
    #[arg(long, default_value_t = 4 << 20)]
    send_buffer: usize,
    /// Run ingest and fanout on two threads joined by the in-process channel bus, instead of
    /// one thread that runs each burst to completion.
    #[arg(long)]
    split_threads: bool,
    /// Spin on the socket instead of sleeping: lowest latency, one core at 100%.
    #[arg(long)]
    busy_poll: bool,
    /// Shards across cores: sockets sharing the port (SO_REUSEPORT) with the kernel steering
    /// each datagram by its scene, each shard with its own thread and scenes.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Print a counters line to stderr this often (0: never).
    #[arg(long, default_value_t = 10)]
    stats_every_secs: u64,
    /// Replication stream standbys subscribe to, tcp://HOST:PORT (port 0: any). With
    /// --control (and one shard) the default is tcp://<listen address>:0; without, none.
    #[arg(long)]
    bus: Option<String>,
    /// Offer no replication stream: this pair gets no standby and cannot be drained.
    #[arg(long, conflicts_with = "bus")]
    no_bus: bool,
    /// After a drain, forward stragglers this long before deregistering and exiting.
    #[arg(long, default_value_t = 2_000)]
    drain_grace_ms: u64,
    /// On SIGTERM or SIGINT, drain (or deregister) and exit within this long; a second
    /// signal exits at once.
    #[arg(long, default_value_t = 10_000)]
    stop_timeout_ms: u64,
}

impl PairArgs {
    /// Refuses values no pair can run with (exit status 2), before anything starts.
    pub fn validate(&self) -> Result<(), Failure> {
        let bad = |m: String| Err(Failure::usage(m));
        if self.capacity == 0 {
            return bad("--capacity must be at least 1 (devices this pair offers to serve)".into());
        }
        if self.evict_after_ms == 0 || self.quiet_after_ms == 0 {
            return bad("--evict-after-ms and --quiet-after-ms must be above 0".into());
        }
        // A quiet window at or past the eviction window is allowed: the device is then evicted
        // without being paused first (e.g. `--evict-after-ms 300` alone, for tests).
        if self
            .interest_cell
            .iter()
            .any(|c| !c.is_finite() || *c < 0.0)
        {
            return bad("--interest-cell sizes must be finite and not negative".into());
        }
        if !(1..=65_535).contains(&self.max_objects_per_scene) {
            return bad("--max-objects-per-scene must be 1 to 65535".into());
        }
        if !(1..=64).contains(&self.shards) {
            return bad("--shards must be 1 to 64".into());
        }
        if self.recv_buffer == 0 || self.send_buffer == 0 {
            return bad("--recv-buffer and --send-buffer must be above 0".into());
        }
        if self.stop_timeout_ms == 0 {
            return bad("--stop-timeout-ms must be above 0".into());
        }
        if let Some(c) = &self.control {
            for e in c.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                zonecast::control::client::check_endpoint(e)
                    .map_err(|m| Failure::usage(format!("--control: {m}")))?;
            }
        }
        if let Some(b) = &self.bus {
            if !b.starts_with("tcp://") && !b.starts_with("ipc://") {
                return bad(format!("--bus `{b}`: give tcp://HOST:PORT or ipc://PATH"));
            }
        }
        Ok(())
    }
}

/// Runs a pair with `threading`; `extra_bus` are more stream endpoints (a fanout half's).
pub fn run(a: PairArgs, threading: Threading, extra_bus: Vec<String>) -> Result<(), Failure> {
    a.validate()?;
    if a.sessions.is_none() && a.control.is_none() {
        return Err(Failure::usage("give --control ENDPOINT (register with a controller) or --sessions FILE (static sessions)"));
    }
    let signals = Signals::install()?;
    let sessions = match &a.sessions {
        Some(path) => SessionsFile::load(path).map_err(|e| e.to_string())?,
        None => SessionsFile::default(),
    };
    let mut config = PairConfig {
        listen: a.listen,
        socket: SocketOptions {
            recv_buffer: a.recv_buffer,
            send_buffer: a.send_buffer,
            reuse_port: a.reuse_port,
        },
        scene: scene::Config {
            evict_after: Duration::from_millis(a.evict_after_ms.max(1)),
            quiet_after: Duration::from_millis(a.quiet_after_ms.max(1)),
            max_objects_per_scene: a.max_objects_per_scene,
            interest_cell: a.interest_cell,
            view_refresh: (a.view_refresh_ms > 0).then(|| Duration::from_millis(a.view_refresh_ms)),
            ..scene::Config::default()
        },
        metrics: a.metrics,
        threading: match threading {
            Threading::Fused if a.split_threads => Threading::Split,
            t => t,
        },
        busy_poll: a.busy_poll,
        shards: a.shards.clamp(1, 64),
        replication: None,
    };
    let mut listen = extra_bus;
    match (&a.bus, a.no_bus, &a.control) {
        (Some(b), _, _) => listen.push(b.clone()),
        // A sharded pair keeps its scenes in several engines: it streams nothing.
        (None, false, Some(_)) if a.shards <= 1 => {
            listen.push(format!("tcp://{}", SocketAddr::new(a.listen.ip(), 0)))
        }
        _ => {}
    }
    let controller_key = a
        .controller_key
        .as_deref()
        .map(super::keygen::public_key)
        .transpose()?;
    // The stream carries session keys: encrypted whenever the control plane is, or when the
    // pair was given its own key. A fresh key pair lives only in memory.
    let stream_key = match (&a.key, &controller_key) {
        (Some(path), _) => Some(KeyPair::load(path).map_err(|e| e.to_string())?),
        (None, Some(_)) => Some(KeyPair::generate()),
        (None, None) => None,
    };
    if !listen.is_empty() {
        let token = a.token.clone().ok_or_else(|| {
            Failure::usage("a replication stream needs --token (or ZONECAST_TOKEN)")
        })?;
        config.replication = Some(ReplicationConfig {
            listen,
            token,
            key: stream_key.clone(),
        });
    }
    let mut pair = Pair::start(&config, &sessions.devices).map_err(|e| e.to_string())?;
    if let Some(control) = &a.control {
        let token = a
            .token
            .clone()
            .ok_or_else(|| Failure::usage("--control needs --token (or ZONECAST_TOKEN)"))?;
        let advertise = a.advertise.unwrap_or(pair.udp_addr());
        if advertise.ip().is_unspecified() {
            return Err(Failure::usage(
                "listening on an unspecified address: give --advertise HOST:PORT",
            ));
        }
        let tracker = TrackerConfig {
            token,
            region: a.region.clone(),
            advertise,
            capacity: a.capacity,
            version: env!("CARGO_PKG_VERSION").into(),
            bus: pair
                .bus_endpoints()
                .iter()
                .find(|e| e.starts_with("tcp://"))
                .map(|e| advertise_bus(e, advertise)),
            bus_key: stream_key.as_ref().map(KeyPair::public),
            requires_fanout: config.threading == Threading::Remote,
            drain_grace: Duration::from_millis(a.drain_grace_ms),
        };
        pair.register(AgentConfig {
            control: control.clone(),
            controller_key,
            tracker,
        })
        .map_err(|e| e.to_string())?;
    }
    let metrics = pair
        .metrics_addr()
        .map(|m| format!("http://{m}/metrics"))
        .unwrap_or_else(|| "off".into());
    println!(
        "zonecast pair: udp={} metrics={} sessions={} bus={}",
        pair.udp_addr(),
        metrics,
        sessions.devices.len(),
        pair.bus_endpoints().join(",")
    );
    let _ = std::io::stdout().flush();
    let every = Duration::from_secs(a.stats_every_secs);
    let mut next_stats = Instant::now() + every;
    let stop_within = Duration::from_millis(a.stop_timeout_ms);
    // Set once a signal asked for a stop: the instant past which the pair stops regardless.
    let mut stop_by: Option<Instant> = None;
    while pair.is_running() {
        std::thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        if signals.received() && stop_by.is_none() {
            stop_by = Some(now + stop_within + Duration::from_millis(500));
            if !pair.leave(stop_within) {
                // Static sessions: nobody to hand them to.
                tracing::info!("stopping on signal");
                break;
            }
        }
        if stop_by.is_some_and(|by| now >= by) {
            tracing::warn!("stopping: the drain did not finish within --stop-timeout-ms");
            break;
        }
        if every.is_zero() || now < next_stats {
            continue;
        }
        next_stats += every;
        let s = pair.stats().snapshot();
        tracing::info!(
            datagrams_in = s.ingest_datagrams,
            accepted = s.ingest_accepted,
            dropped = s.ingest_drops.total(),
            datagrams_out = s.fanout_datagrams,
            joined = s.joined,
            objects = s.objects,
            "counters"
        );
    }
    if let Some(reason) = pair.fatal() {
        return Err(Failure::refused(reason));
    }
    if pair.drained() || stop_by.is_some() {
        pair.stop();
        tracing::info!("stopped");
        return Ok(());
    }
    Err("a pair thread stopped".into())
}

/// The stream endpoint to advertise: the bound one, with the advertised UDP host when bound
/// to an unspecified address.
fn advertise_bus(bound: &str, advertise: SocketAddr) -> String {
    match bound
        .strip_prefix("tcp://")
        .and_then(|a| a.parse::<SocketAddr>().ok())
    {
        Some(a) if a.ip().is_unspecified() => {
            format!("tcp://{}", SocketAddr::new(advertise.ip(), a.port()))
        }
        _ => bound.to_string(),
    }
}

/// `--interest-cell`: `C` (every axis) or `X,Y,Z`.
fn parse_cell(s: &str) -> Result<[f32; 3], String> {
    match super::parse_floats(s)?[..] {
        [c] => Ok([c; 3]),
        [x, y, z] => Ok([x, y, z]),
        _ => Err("one size, or three separated by commas".into()),
    }
}
