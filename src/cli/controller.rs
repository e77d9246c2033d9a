//! `zonecast controller`, `zonecast status` and `zonecast scene`: run the control plane and
//! talk to it as an operator.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use zonecast::control::client::ControlClient;
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

#[derive(Args)]
pub struct OperatorArgs {
    /// Controller endpoint.
    #[arg(long, global = true, default_value = DEFAULT_CONTROL)]
    control: String,
    /// Cluster token.
    #[arg(long, global = true, env = "ZONECAST_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The controller's public key (Z85 or its BASE.key file), if it runs CurveZMQ.
    #[arg(long, global = true, env = "ZONECAST_CONTROLLER_KEY")]
    controller_key: Option<String>,
    /// Print the raw JSON reply.
    #[arg(long, global = true)]
    json: bool,
}

impl OperatorArgs {
    pub fn request(&self, mut req: Value) -> Result<Value, String> {
        req["token"] = json!(self.token);
        let mut client = control_client(&self.control, self.controller_key.as_deref())?;
        client.request(&req).map_err(|e| e.to_string())
    }
}

/// A control client for `endpoint`, CurveZMQ when `controller_key` is given.
pub fn control_client(
    endpoint: &str,
    controller_key: Option<&str>,
) -> Result<ControlClient, String> {
    let key = controller_key.map(super::keygen::public_key).transpose()?;
    Ok(ControlClient::new(endpoint)
        .map_err(|e| e.to_string())?
        .with_server_key(key))
}

#[derive(Args)]
pub struct SceneArgs {
    #[command(subcommand)]
    command: SceneCommand,
    #[command(flatten)]
    op: OperatorArgs,
}

#[derive(Subcommand)]
enum SceneCommand {
    /// Create a scene in a region.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "local")]
        region: String,
    },
    /// List scenes.
    List,
    /// Show one scene.
    Get { id: u32 },
    /// Delete a scene and its device sessions.
    Delete { id: u32 },
}

pub fn run_scene(a: SceneArgs) -> Result<(), String> {
    let req = match &a.command {
        SceneCommand::Create { name, region } => {
            json!({"op": "scene.create", "name": name, "region": region})
        }
        SceneCommand::List => json!({"op": "scene.list"}),
        SceneCommand::Get { id } => json!({"op": "scene.get", "scene": id}),
        SceneCommand::Delete { id } => json!({"op": "scene.delete", "scene": id}),
    };
    let reply = a.op.request(req)?;
    if a.op.json {
        println!("{reply}");
        return Ok(());
    }
    let scenes: Vec<Value> = match reply.get("scenes") {
        Some(Value::Array(list)) => list.clone(),
        _ => reply.get("scene").cloned().into_iter().collect(),
    };
    if scenes.iter().all(Value::is_object) && !scenes.is_empty() {
        print!("{}", scene_table(&scenes));
    } else {
        println!("ok (epoch {})", reply["epoch"]);
    }
    Ok(())
}

pub fn run_status(a: OperatorArgs) -> Result<(), String> {
    let reply = a.request(json!({"op": "cluster.status"}))?;
    if a.json {
        println!("{reply}");
    } else {
        print!("{}", status_table(&reply));
    }
    Ok(())
}

/// `cluster.status` as tables a person can read.
pub fn status_table(s: &Value) -> String {
    let mut out = format!("epoch {}   devices {}\n\nREGION", s["epoch"], s["devices"]);
    out += "       LIVE PAIRS  DEAD PAIRS  SCENES\n";
    for r in s["regions"].as_array().into_iter().flatten() {
        out += &format!(
            "{:<12} {:>10}  {:>10}  {:>6}\n",
            text(&r["name"]),
            text(&r["live_pairs"]),
            text(&r["dead_pairs"]),
            text(&r["scenes"])
        );
    }
    out += "\nPAIR  REGION       UDP                    HEALTH    HB AGE  SCENES  DEVICES  JOINED  IN/S      OUT/S     STANDBY        VERSION\n";
    for p in s["pairs"].as_array().into_iter().flatten() {
        let health = match (p["alive"] == json!(true), p["draining"] == json!(true)) {
            (false, _) => "dead",
            (true, true) => "draining",
            (true, false) => "live",
        };
        let standby = if p["standby"].is_null() {
            "-".to_string()
        } else {
            format!("{} {}", p["standby"], text(&p["standby_state"]))
        };
        out += &format!(
            "{:<5} {:<12} {:<22} {:<9} {:>4}ms  {:<7} {:>7}  {:>6}  {:<9.0} {:<9.0} {:<14} {}\n",
            text(&p["id"]),
            text(&p["region"]),
            text(&p["udp"]),
            health,
            text(&p["heartbeat_age_ms"]),
            list(&p["scenes"]),
            text(&p["devices"]),
            text(&p["load"]["joined"]),
            p["load"]["datagrams_in_per_sec"].as_f64().unwrap_or(0.0),
            p["load"]["datagrams_out_per_sec"].as_f64().unwrap_or(0.0),
            standby,
            text(&p["version"]),
        );
    }
    out += "\n";
    out += &scene_table(s["scenes"].as_array().map(Vec::as_slice).unwrap_or(&[]));
    out
}

fn scene_table(scenes: &[Value]) -> String {
    let mut out = "SCENE  NAME                 REGION       PAIR  DEVICES\n".to_string();
    for sc in scenes {
        let pair = if sc["pair"].is_null() {
            "-".to_string()
        } else {
            sc["pair"].to_string()
        };
        out += &format!(
            "{:<6} {:<20} {:<12} {:<5} {}\n",
            text(&sc["id"]),
            text(&sc["name"]),
            text(&sc["region"]),
            pair,
            text(&sc["devices"])
        );
    }
    out
}

fn text(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

fn list(v: &Value) -> String {
    let items: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(Value::to_string)
        .collect();
    if items.is_empty() {
        "-".into()
    } else {
        items.join(",")
    }
}
