//! `zonecast controller`: run the control plane (its operator commands are in `operator.rs`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::path::Path;

use clap::{Args, Subcommand, ValueEnum};
use zonecast::control::client::ControlClient;
use zonecast::control::protocol::Request;
use zonecast::control::replica::lock::{self, FileLock, Lock};
use zonecast::control::replica::AckMode;
use zonecast::control::server::{ControllerServer, ServerOptions};
use zonecast::control::stats::ControlStats;
use zonecast::control::store::{self, Snapshot, Store};
use zonecast::control::Config;
use zonecast::net::metrics::{Admin, MetricsServer};
use zonecast::net::zeromq::{leaves_host, Curve};
use zonecast::security::KeyPair;
use zonecast::wire::SessionKey;

use super::signals::Signals;
use super::Failure;

/// Default control endpoint.
pub const DEFAULT_CONTROL: &str = "tcp://127.0.0.1:7100";

/// Default data directory of `zonecast controller`.
pub const DEFAULT_DATA_DIR: &str = "zonecast-data/controller";

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ControllerArgs {
    #[command(subcommand)]
    action: Option<ControllerAction>,
    /// Endpoint to bind: tcp://HOST:PORT or ipc://PATH.
    #[arg(long, default_value = DEFAULT_CONTROL)]
    control: String,
    /// Where the state (scenes, pairs, devices with their session keys) is kept: an
    /// append-only log and a snapshot, mode 0600 in a 0700 directory. A restarted controller
    /// resumes from it.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Keep the state in memory only (a restart forgets everything: tests and demos).
    #[arg(long, conflicts_with = "restore")]
    memory: bool,
    /// The lock that makes one replica of several active: a file (flock; every replica on
    /// the host names the same one), `etcd://HOST:2379[,HOST:2379...]/PREFIX[?ttl=SECONDS]`
    /// (an etcd lease and election across hosts; build with `--features etcd`), or `none`
    /// for a lone controller. Default: the file `controller.lock` next to the data directory.
    #[arg(long)]
    lock: Option<String>,
    /// When a write is acknowledged: `replica` (default) once a passive replica holds it too
    /// (or, with no live passive, once the local log does); `local` once the local log does.
    #[arg(long, value_enum, default_value = "replica")]
    ack: Ack,
    /// Replace the data directory's state with this snapshot file (`zonecast controller
    /// snapshot --out FILE`) before starting: disaster recovery, see the README's runbook.
    #[arg(long)]
    restore: Option<PathBuf>,
    /// Cluster token for operator and pair ops (generated and printed when absent).
    #[arg(long, env = "ZONECAST_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Require this token from devices that register (registration is open otherwise).
    #[arg(long, env = "ZONECAST_DEVICE_TOKEN", hide_env_values = true)]
    device_token: Option<String>,
    /// How often pairs heartbeat.
    #[arg(long, default_value_t = 50)]
    heartbeat_ms: u64,
    /// The shortest death window: a pair silent this long (no heartbeat, no answer to a
    /// probe) is declared dead and its scenes move. A pair whose heartbeats arrive late gets
    /// a wider window (twice its longest recent gap); a crash confirmed by a probe is acted
    /// on at once.
    #[arg(long, default_value_t = 250)]
    dead_after_ms: u64,
    /// The widest death window, however late a pair's heartbeats have been; also how long a
    /// pair may go without heartbeating while it still answers probes.
    #[arg(long, default_value_t = 2000)]
    dead_after_max_ms: u64,
    /// This controller's key pair (`zonecast keygen`; BASE.key_secret): every client must
    /// then talk CurveZMQ and know the public key. Plain without it.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Serve Prometheus metrics (requests, errors and limits, connections) at
    /// http://ADDR/metrics.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Device registrations per second one source address (IPv4, or IPv6 /64) gets.
    #[arg(long, default_value_t = 20.0)]
    register_rate: f64,
    /// Device registrations one source address may make at once.
    #[arg(long, default_value_t = 100)]
    register_burst: u32,
    /// Devices one scene may hold (`scene_full` beyond).
    #[arg(long, default_value_t = 10_000)]
    max_devices_per_scene: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum Ack {
    Replica,
    Local,
}

#[derive(Subcommand)]
enum ControllerAction {
    /// Save the whole state of a running replica (any of them) to a file (mode 0600: it
    /// holds session keys).
    Snapshot {
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
        /// Control endpoint(s) of the replica(s), comma-separated.
        #[arg(long, default_value = DEFAULT_CONTROL)]
        control: String,
        #[arg(long, env = "ZONECAST_TOKEN", hide_env_values = true)]
        token: String,
        /// The controller's public key (Z85), when it runs CURVE.
        #[arg(long, value_parser = crate::cli::keygen::public_key)]
        controller_key: Option<zonecast::security::PublicKey>,
    },
}

/// The controller settings for `token`, with the heartbeat and death windows given.
pub fn controller_config(
    token: String,
    heartbeat_ms: u64,
    dead_after_ms: u64,
    dead_after_max_ms: u64,
) -> Config {
    let mut config = Config::new(token);
    config.heartbeat_interval = Duration::from_millis(heartbeat_ms.max(5));
    config.dead_after = Duration::from_millis(dead_after_ms.max(heartbeat_ms.max(5) * 2));
    config.dead_after_max = Duration::from_millis(dead_after_max_ms).max(config.dead_after);
    // Epochs keep growing across controller restarts.
    config.first_epoch = zonecast::net::unix_ns() / 1_000_000;
    config
}

impl ControllerArgs {
    /// Refuses values no controller can run with (exit status 2), before anything starts.
    pub fn validate(&self) -> Result<(), Failure> {
        let bad = |m: String| Err(Failure::usage(m));
        if self.heartbeat_ms < 5 {
            return bad(format!(
                "--heartbeat-ms {} is too short: at least 5",
                self.heartbeat_ms
            ));
        }
        if self.dead_after_ms < 2 * self.heartbeat_ms {
            return bad(format!(
                "--dead-after-ms ({}) must cover at least two heartbeats (--heartbeat-ms {}): {} or more",
                self.dead_after_ms,
                self.heartbeat_ms,
                2 * self.heartbeat_ms
            ));
        }
        if self.dead_after_max_ms < self.dead_after_ms {
            return bad(format!(
                "--dead-after-max-ms ({}) must not be below --dead-after-ms ({})",
                self.dead_after_max_ms, self.dead_after_ms
            ));
        }
        if !self.register_rate.is_finite() || self.register_rate < 0.0 {
            return bad(
                "--register-rate must be a number of registrations per second, 0 or more".into(),
            );
        }
        if self.register_burst == 0 || self.max_devices_per_scene == 0 {
            return bad("--register-burst and --max-devices-per-scene must be at least 1".into());
        }
        if !self.control.starts_with("tcp://") && !self.control.starts_with("ipc://") {
            return bad(format!(
                "--control `{}`: give tcp://HOST:PORT or ipc://PATH",
                self.control
            ));
        }
        Ok(())
    }
}

pub fn run_controller(a: ControllerArgs) -> Result<(), Failure> {
    if let Some(ControllerAction::Snapshot {
        out,
        control,
        token,
        controller_key,
    }) = a.action
    {
        return Ok(save_snapshot(&out, &control, token, controller_key)?);
    }
    a.validate()?;
    let signals = Signals::install()?;
    let data_dir = (!a.memory).then_some(a.data_dir.clone());
    if let (Some(file), Some(dir)) = (&a.restore, &data_dir) {
        restore(file, dir)?;
    }
    let (token, generated) = match (a.token, &data_dir) {
        (Some(t), _) if !t.is_empty() => (t, false),
        (_, Some(dir)) => kept_token(dir)?,
        _ => (SessionKey::random().to_hex(), true),
    };
    let mut config = controller_config(
        token.clone(),
        a.heartbeat_ms,
        a.dead_after_ms,
        a.dead_after_max_ms,
    );
    config.device_token = a.device_token;
    config.register.per_sec = a.register_rate.max(0.0);
    config.register.burst = a.register_burst.max(1);
    config.max_devices_per_scene = a.max_devices_per_scene;
    let key = a
        .key
        .as_deref()
        .map(KeyPair::load)
        .transpose()
        .map_err(|e| e.to_string())?;
    config.encrypted = key.is_some();
    let lock: Option<Box<dyn Lock>> = match (a.lock.as_deref(), &data_dir) {
        (Some(spec), _) => lock::from_spec(spec).map_err(Failure::usage)?,
        (None, None) => None,
        (None, Some(dir)) => Some(Box::new(FileLock::new(&default_lock(dir)))),
    };
    let options = ServerOptions {
        curve: key.clone().map_or(Curve::Off, Curve::Server),
        data_dir,
        lock,
        ack: match a.ack {
            Ack::Replica => AckMode::Replica,
            Ack::Local => AckMode::Local,
        },
    };
    let server = ControllerServer::start(&a.control, config, options)?;
    let metrics = match a.metrics {
        Some(addr) => Some(MetricsServer::start(
            addr,
            admin(server.stats(), server.endpoint()),
        )?),
        None => None,
    };
    let shown = metrics.as_ref().map_or("off".to_string(), |m| {
        format!("http://{}/metrics", m.addr())
    });
    match &key {
        Some(k) => println!(
            "zonecast controller: control={} curve={} metrics={shown}",
            server.endpoint(),
            k.public()
        ),
        None => {
            println!(
                "zonecast controller: control={} metrics={shown}",
                server.endpoint()
            );
            if leaves_host(server.endpoint()) {
                tracing::warn!(
                    "{} is reachable from other hosts and NOT encrypted: tokens and session keys cross the network in clear; run with --key (docs/SECURITY.md)",
                    server.endpoint()
                );
            }
        }
    }
    if generated {
        println!(
            "zonecast controller: token={token} (generated; set ZONECAST_TOKEN to choose one)"
        );
    }
    let _ = std::io::stdout().flush();
    while server.is_running() && !signals.received() {
        std::thread::sleep(Duration::from_millis(20));
    }
    if signals.received() {
        // Graceful: stop deciding, let the passives catch up, release the lock.
        server.leave();
        tracing::info!("stopped");
        return Ok(());
    }
    Err("the controller stopped".into())
}

/// The controller's `/status` (after the build fields).
#[derive(serde::Serialize)]
struct ControllerStatus<'a> {
    control: &'a str,
    active: bool,
    ready: bool,
    term: u64,
    epoch: u64,
    pairs: u64,
    pairs_alive: u64,
    scenes: u64,
    devices: u64,
}

/// The controller's admin endpoint: its metrics; live while its loop goes round (it does
/// at least every 50 ms); ready while active or following the active; `/status` as JSON.
fn admin(stats: Arc<ControlStats>, endpoint: &str) -> Admin {
    let (m, l, r) = (stats.clone(), stats.clone(), stats.clone());
    let endpoint = endpoint.to_string();
    Admin {
        metrics: Arc::new(move || m.to_prometheus()),
        live: Arc::new(move || match l.loop_age() {
            Some(age) if age > Duration::from_secs(5) => {
                Err(format!("the loop last ran {} ms ago", age.as_millis()))
            }
            _ => Ok(()),
        }),
        ready: Arc::new(move || {
            let g = r.gauges();
            if g.synced {
                Ok(())
            } else {
                Err("passive, not following an active controller yet".into())
            }
        }),
        status: Arc::new(move || {
            let g = stats.gauges();
            let doc = ControllerStatus {
                control: &endpoint,
                active: g.active,
                ready: g.synced,
                term: g.term,
                epoch: g.epoch,
                pairs: g.pairs,
                pairs_alive: g.pairs_alive,
                scenes: g.scenes,
                devices: g.devices,
            };
            zonecast::net::metrics::status_json("controller", &doc)
        }),
    }
}

/// The lock file next to a data directory (replicas on one host share it).
pub fn default_lock(data_dir: &Path) -> PathBuf {
    let parent = data_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    parent.join("controller.lock")
}

/// The cluster token generated on a first start and kept in the data directory (mode 0600),
/// so a restarted controller accepts the pairs and operators it had.
fn kept_token(dir: &Path) -> Result<(String, bool), String> {
    let path = dir.join("token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        if !t.trim().is_empty() {
            return Ok((t.trim().to_string(), false));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let token = SessionKey::random().to_hex();
    let mut f = store::secret_file(&path, true).map_err(|e| e.to_string())?;
    f.write_all(token.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((token, true))
}

/// `zonecast controller snapshot --out FILE`.
fn save_snapshot(
    out: &Path,
    control: &str,
    token: String,
    key: Option<zonecast::security::PublicKey>,
) -> Result<(), String> {
    let mut client = ControlClient::new(control)
        .map_err(|e| e.to_string())?
        .with_server_key(key)
        .with_timeout(Duration::from_secs(10));
    let snapshot: Snapshot = client
        .call(&Request::ControllerSnapshot { token: Some(token) })
        .map_err(|e| e.to_string())?;
    store::write_snapshot(out, &snapshot.image, snapshot.seq).map_err(|e| e.to_string())?;
    let (pairs, scenes, devices) = snapshot.image.counts();
    println!(
        "zonecast controller: saved batch {} (term {}): {pairs} pairs, {scenes} scenes, {devices} devices to {}",
        snapshot.seq,
        snapshot.image.term(),
        out.display()
    );
    Ok(())
}

/// `--restore FILE`: the data directory's state becomes the file's.
fn restore(file: &Path, dir: &Path) -> Result<(), String> {
    let snapshot = store::read_snapshot(file)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{}: no such snapshot", file.display()))?;
    let (mut store, _) = Store::open(dir).map_err(|e| e.to_string())?;
    // Numbered after whatever the directory held, so no replica mistakes it for old history.
    let seq = store.seq().max(snapshot.seq) + 1;
    store
        .replace(&snapshot.image, seq)
        .map_err(|e| e.to_string())?;
    let (pairs, scenes, devices) = snapshot.image.counts();
    tracing::info!(
        "restored {pairs} pairs, {scenes} scenes, {devices} devices from {} into {}",
        file.display(),
        dir.display()
    );
    Ok(())
}
