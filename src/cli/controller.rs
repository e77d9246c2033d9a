//! `zonecast controller`: run the control plane (its operator commands are in `operator.rs`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use zonecast::control::server::{ControllerServer, ServerOptions};
use zonecast::control::Config;
use zonecast::net::metrics::{MetricsServer, Render};
use zonecast::net::zeromq::{leaves_host, Curve};
use zonecast::security::KeyPair;
use zonecast::wire::SessionKey;

/// Default control endpoint.
pub const DEFAULT_CONTROL: &str = "tcp://127.0.0.1:7100";

#[derive(Args)]
pub struct ControllerArgs {
    /// Endpoint to bind: tcp://HOST:PORT or ipc://PATH.
    #[arg(long, default_value = DEFAULT_CONTROL)]
    control: String,
    /// Cluster token for operator and pair ops (generated and printed when absent).
    #[arg(long, env = "ZONECAST_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Require this token from devices that register (registration is open otherwise).
    #[arg(long, env = "ZONECAST_DEVICE_TOKEN", hide_env_values = true)]
    device_token: Option<String>,
    /// How often pairs heartbeat.
    #[arg(long, default_value_t = 50)]
    heartbeat_ms: u64,
    /// A pair silent this long is declared dead and its scenes move.
    #[arg(long, default_value_t = 250)]
    dead_after_ms: u64,
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

/// The controller settings for `token`, with the heartbeat and death windows given.
pub fn controller_config(token: String, heartbeat_ms: u64, dead_after_ms: u64) -> Config {
    let mut config = Config::new(token);
    config.heartbeat_interval = Duration::from_millis(heartbeat_ms.max(5));
    config.dead_after = Duration::from_millis(dead_after_ms.max(heartbeat_ms.max(5) * 2));
    // Epochs keep growing across controller restarts.
    config.first_epoch = zonecast::net::unix_ns() / 1_000_000;
    config
}

pub fn run_controller(a: ControllerArgs) -> Result<(), String> {
    let (token, generated) = match a.token {
        Some(t) if !t.is_empty() => (t, false),
        _ => (SessionKey::random().to_hex(), true),
    };
    let mut config = controller_config(token.clone(), a.heartbeat_ms, a.dead_after_ms);
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
    let options = ServerOptions {
        curve: key.clone().map_or(Curve::Off, Curve::Server),
    };
    let server = ControllerServer::start(&a.control, config, options)?;
    let metrics = match a.metrics {
        Some(addr) => {
            let stats = server.stats();
            let render: Render = Arc::new(move || stats.to_prometheus());
            Some(MetricsServer::start(addr, render)?)
        }
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
                eprintln!(
                    "zonecast controller: warning: {} is reachable from other hosts and NOT encrypted: tokens and session keys cross the network in clear; run with --key (docs/SECURITY.md)",
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
    while server.is_running() {
        std::thread::sleep(Duration::from_millis(200));
    }
    Err("the controller stopped".into())
}
