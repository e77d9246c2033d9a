//! `zonecast status` and `zonecast scene`: talk to the controller as an operator, with typed
//! requests and replies (`control::protocol`), and print tables a person can read (or the
//! reply's JSON with `--json`).

use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;
use serde::Serialize;
use zonecast::control::client::{ControlClient, RequestError};
use zonecast::control::protocol::{
    ClusterStatus, Request, SceneCreated, SceneDeleted, SceneInfo, SceneShown, Scenes,
};
use zonecast::zones::Geometry;

use super::controller::DEFAULT_CONTROL;

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
    /// The cluster token to put in a request.
    pub fn token(&self) -> Option<String> {
        self.token.clone()
    }

    /// Sends `req` and decodes its reply.
    pub fn call<R: DeserializeOwned>(&self, req: &Request) -> Result<R, String> {
        self.try_call(req)?.map_err(|e| e.to_string())
    }

    /// Sends `req`: `Err` if no client could be made, else the typed outcome.
    pub fn try_call<R: DeserializeOwned>(
        &self,
        req: &Request,
    ) -> Result<Result<R, RequestError>, String> {
        let mut client = control_client(&self.control, self.controller_key.as_deref())?;
        Ok(client.call(req))
    }

    /// Prints `reply` as JSON if asked; true if it did.
    fn printed_json<R: Serialize>(&self, reply: &R) -> bool {
        if self.json {
            println!("{}", serde_json::to_string(reply).unwrap_or_default());
        }
        self.json
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
        /// Its zones, as JSON: `{"grid": {"origin": [x,y,z], "cell": [sx,sy,sz], "counts":
        /// [nx,ny,nz]}, "layers": [...], "reserved": [{"name": N, "min": [..], "max": [..]}]}`
        /// (docs/PROTOCOL.md, scene.create). Default: the scene is one zone.
        #[arg(long)]
        geometry: Option<String>,
    },
    /// List scenes.
    List,
    /// Show one scene.
    Get { id: u32 },
    /// Delete a scene and its device sessions.
    Delete { id: u32 },
}

pub fn run_scene(a: SceneArgs) -> Result<(), String> {
    let op = &a.op;
    let token = op.token();
    let scenes = match a.command {
        SceneCommand::Create {
            name,
            region,
            geometry,
        } => {
            let g: Geometry = match geometry {
                Some(json) => {
                    serde_json::from_str(&json).map_err(|e| format!("--geometry: {e}"))?
                }
                None => Geometry::default(),
            };
            let r: SceneCreated = op.call(&Request::SceneCreate {
                token,
                name,
                region,
                grid: g.grid,
                layers: g.layers,
                reserved: g.reserved,
            })?;
            if op.printed_json(&r) {
                return Ok(());
            }
            vec![r.scene]
        }
        SceneCommand::List => {
            let r: Scenes = op.call(&Request::SceneList { token })?;
            if op.printed_json(&r) {
                return Ok(());
            }
            r.scenes
        }
        SceneCommand::Get { id } => {
            let r: SceneShown = op.call(&Request::SceneGet { token, scene: id })?;
            if op.printed_json(&r) {
                return Ok(());
            }
            print!("{}", scene_table(std::slice::from_ref(&r.scene)));
            print!("{}", zone_table(&r));
            return Ok(());
        }
        SceneCommand::Delete { id } => {
            let r: SceneDeleted = op.call(&Request::SceneDelete { token, scene: id })?;
            if !op.printed_json(&r) {
                println!("ok (epoch {})", r.epoch);
            }
            return Ok(());
        }
    };
    print!("{}", scene_table(&scenes));
    Ok(())
}

pub fn run_status(a: OperatorArgs) -> Result<(), String> {
    let status: ClusterStatus = a.call(&Request::ClusterStatus { token: a.token() })?;
    if !a.printed_json(&status) {
        print!("{}", status_table(&status));
    }
    Ok(())
}

/// `cluster.status` as tables a person can read.
pub fn status_table(s: &ClusterStatus) -> String {
    let mut out = format!("epoch {}   devices {}\n\nREGION", s.epoch, s.devices);
    out += "       LIVE PAIRS  DEAD PAIRS  SCENES\n";
    for r in &s.regions {
        out += &format!(
            "{:<12} {:>10}  {:>10}  {:>6}\n",
            r.name, r.live_pairs, r.dead_pairs, r.scenes
        );
    }
    out += "\nPAIR  REGION       UDP                    HEALTH    HB AGE  WINDOW  SCENES  DEVICES  JOINED  IN/S      OUT/S     STANDBY        VERSION\n";
    for p in &s.pairs {
        let health = match (p.alive, p.draining) {
            (false, _) => "dead",
            (true, true) => "draining",
            (true, false) => "live",
        };
        let standby = match (p.standby, p.standby_state) {
            (None, _) => "-".to_string(),
            (Some(s), None) => s.to_string(),
            (Some(s), Some(state)) => format!("{s} {}", state.name()),
        };
        let scenes: Vec<String> = p.scenes.iter().map(u32::to_string).collect();
        let scenes = if scenes.is_empty() {
            "-".to_string()
        } else {
            scenes.join(",")
        };
        out += &format!(
            "{:<5} {:<12} {:<22} {:<9} {:>4}ms  {:>4}ms  {:<7} {:>7}  {:>6}  {:<9.0} {:<9.0} {:<14} {}\n",
            p.id,
            p.region,
            p.udp,
            health,
            p.heartbeat_age_ms,
            p.window_ms,
            scenes,
            p.devices,
            p.load.joined,
            p.load.datagrams_in_per_sec,
            p.load.datagrams_out_per_sec,
            standby,
            p.version,
        );
    }
    out += "\n";
    out += &scene_table(&s.scenes);
    out
}

fn scene_table(scenes: &[SceneInfo]) -> String {
    let mut out = "SCENE  NAME                 REGION       PAIR  DEVICES  ZONES\n".to_string();
    for sc in scenes {
        // A scene several pairs serve shows them all, home first.
        let pair = match (&sc.pairs[..], sc.pair) {
            ([], None) => "-".to_string(),
            ([], Some(p)) => p.to_string(),
            (all, _) => all.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
        };
        out += &format!(
            "{:<6} {:<20} {:<12} {:<5} {:<8} {}\n",
            sc.id, sc.name, sc.region, pair, sc.devices, sc.zones
        );
    }
    out
}

/// `scene get`: one line per zone.
fn zone_table(s: &SceneShown) -> String {
    let mut out = "\nZONE        KIND      NAME         CELL         PAIR\n".to_string();
    for z in &s.zones {
        let cell = z
            .zone
            .cell
            .map_or("-".into(), |c| format!("{},{},{}", c[0], c[1], c[2]));
        out += &format!(
            "{:<11} {:<9} {:<12} {:<12} {}\n",
            z.zone.zone,
            z.zone.kind,
            z.zone.name.as_deref().unwrap_or("-"),
            cell,
            z.pair.map_or("-".to_string(), |p| p.to_string())
        );
    }
    out
}
