//! The pair's agent: registers the pair with the controller, heartbeats every
//! `heartbeat_ms` with load figures, and turns the assignment in heartbeat replies into session
//! admits and revokes for ingest.
//!
//! While the controller does not answer, the pair keeps relaying on its last assignment. When
//! the controller says the pair is stale (declared dead, or unknown after a controller
//! restart), the agent revokes every session it admitted, so the pair stops serving scenes
//! that moved, and registers again as a new pair.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::control::client::{ControlClient, RequestError};
use crate::control::{ErrorCode, Load};
use crate::security::PublicKey;
use crate::stats::StatsSet;
use crate::udp_ingest::{MirrorState, ReplicaStatus, SessionCommand, SessionControl};
use crate::wire::SessionKey;

/// How the pair presents itself to the controller.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Controller endpoint, e.g. `tcp://127.0.0.1:7100`.
    pub control: String,
    /// The controller's public key: the control link runs CurveZMQ (`None`: plain).
    pub controller_key: Option<PublicKey>,
    pub token: String,
    pub region: String,
    /// The UDP endpoint devices are told to use.
    pub advertise: SocketAddr,
    pub capacity: u32,
    pub version: String,
    /// The replication stream standbys connect to (`tcp://HOST:PORT`), if any.
    pub bus: Option<String>,
    /// The stream's Noise public key, when it is encrypted.
    pub bus_key: Option<PublicKey>,
    /// A split pair's ingest: healthy (heartbeating) only while its fanout half is connected.
    pub requires_fanout: bool,
    /// How long a drained pair forwards stragglers before it deregisters and stops.
    pub drain_grace: Duration,
}

/// What the agent knows, shared for display.
#[derive(Debug, Default)]
pub struct AgentStatus {
    /// Pair id given by the controller (0: not registered).
    pub pair: AtomicU32,
    pub registered: AtomicBool,
    /// The pair drained, deregistered and stopped on purpose.
    pub drained: AtomicBool,
}

/// Starts the agent thread; it runs until `stop` is set.
pub fn spawn(
    config: AgentConfig,
    sessions: SessionControl,
    stats: Arc<StatsSet>,
    replica: Option<Arc<ReplicaStatus>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(Arc<AgentStatus>, JoinHandle<()>)> {
    let status = Arc::new(AgentStatus::default());
    let shared = status.clone();
    let handle = std::thread::Builder::new()
        .name("zc-agent".into())
        .spawn(move || {
            let mut agent = match Agent::new(config, sessions, stats, shared, replica) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("zonecast pair: agent cannot start: {e}");
                    return;
                }
            };
            while !stop.load(Relaxed) {
                let wait = agent.step();
                if agent.drained() {
                    stop.store(true, Relaxed);
                    break;
                }
                // A mirror that changes state (a primary lost) is reported at once.
                match &agent.replica {
                    Some(r) => {
                        let _ = r.changes.recv_timeout(wait);
                    }
                    None => std::thread::sleep(wait),
                }
            }
        })?;
    Ok((status, handle))
}

struct Agent {
    config: AgentConfig,
    client: ControlClient,
    sessions: SessionControl,
    stats: Arc<StatsSet>,
    status: Arc<AgentStatus>,
    pair: Option<u32>,
    epoch: u64,
    interval: Duration,
    /// Sessions admitted on the controller's word: device -> (scene, key hex).
    admitted: BTreeMap<u32, (u32, String)>,
    last_rates: (Instant, u64, u64),
    outage_logged: bool,
    replica: Option<Arc<ReplicaStatus>>,
    /// Scenes served, pairs mirrored (id -> stream), scenes handed over.
    scenes: BTreeSet<u32>,
    mirrors: BTreeMap<u32, (String, Option<PublicKey>)>,
    handed_over: BTreeSet<u32>,
    /// When the last scene was handed over in a drain.
    drained_at: Option<Instant>,
    fanout_logged: bool,
}

impl Agent {
    fn new(
        config: AgentConfig,
        sessions: SessionControl,
        stats: Arc<StatsSet>,
        status: Arc<AgentStatus>,
        replica: Option<Arc<ReplicaStatus>>,
    ) -> std::io::Result<Agent> {
        let interval = Duration::from_millis(50);
        let client = ControlClient::new(&config.control)?
            .with_server_key(config.controller_key)
            .with_timeout(interval * 2)
            .with_retries(1);
        Ok(Agent {
            config,
            client,
            sessions,
            stats,
            status,
            pair: None,
            epoch: 0,
            interval,
            admitted: BTreeMap::new(),
            last_rates: (Instant::now(), 0, 0),
            outage_logged: false,
            replica,
            scenes: BTreeSet::new(),
            mirrors: BTreeMap::new(),
            handed_over: BTreeSet::new(),
            drained_at: None,
            fanout_logged: false,
        })
    }

    fn mirror_lost(&self) -> bool {
        self.replica.as_ref().is_some_and(|r| {
            r.mirrors
                .lock()
                .is_ok_and(|m| m.values().any(|s| *s == MirrorState::Lost))
        })
    }

    fn drained(&self) -> bool {
        self.status.drained.load(Relaxed)
    }

    /// A split pair's ingest without its fanout half is not a working pair: it stops
    /// heartbeating, so the controller fails it over, and registers anew once whole again.
    fn whole(&mut self) -> bool {
        if !self.config.requires_fanout {
            return true;
        }
        let alive = self
            .replica
            .as_ref()
            .is_some_and(|r| r.fanout_alive.load(Relaxed));
        if alive == self.fanout_logged {
            self.fanout_logged = !alive;
            eprintln!(
                "zonecast ingest: fanout half {}",
                if alive {
                    "connected"
                } else {
                    "missing: not heartbeating"
                }
            );
        }
        alive
    }

    /// One register or heartbeat exchange; returns how long to wait before the next.
    fn step(&mut self) -> Duration {
        if !self.whole() {
            return self.interval;
        }
        if let (Some(at), Some(pair)) = (self.drained_at, self.pair) {
            if at.elapsed() >= self.config.drain_grace {
                let _ = self.client.request(&json!({
                    "op": "pair.deregister",
                    "token": self.config.token,
                    "pair": pair,
                }));
                eprintln!("zonecast pair: drained; deregistered pair {pair}, stopping");
                self.status.drained.store(true, Relaxed);
                return Duration::ZERO;
            }
        }
        let result = match self.pair {
            None => self.register(),
            Some(pair) => self.heartbeat(pair),
        };
        match result {
            Ok(()) => {
                if self.outage_logged {
                    eprintln!("zonecast pair: controller reachable again");
                    self.outage_logged = false;
                }
                // While a primary this pair mirrors looks dead, ask for the takeover often:
                // the controller moves its scenes here as soon as its heartbeat is overdue.
                if self.mirror_lost() {
                    self.interval / 5
                } else {
                    self.interval
                }
            }
            Err(RequestError::Refused(e))
                if matches!(e.code, ErrorCode::StaleEpoch | ErrorCode::UnknownPair) =>
            {
                eprintln!("zonecast pair: {e}; dropping every assigned session");
                self.apply(&[]);
                self.scenes.clear();
                self.handed_over.clear();
                self.drained_at = None;
                for pair in std::mem::take(&mut self.mirrors).into_keys() {
                    self.sessions.send([SessionCommand::Unmirror { pair }]);
                }
                self.pair = None;
                self.epoch = 0;
                self.status.registered.store(false, Relaxed);
                Duration::ZERO
            }
            Err(RequestError::Unavailable(e)) => {
                if !self.outage_logged {
                    eprintln!("zonecast pair: {e}; relaying on the last assignment");
                    self.outage_logged = true;
                }
                self.interval
            }
            Err(e) => {
                eprintln!("zonecast pair: {e}");
                Duration::from_secs(1)
            }
        }
    }

    fn register(&mut self) -> Result<(), RequestError> {
        let reply = self.client.request(&json!({
            "op": "pair.register",
            "token": self.config.token,
            "region": self.config.region,
            "udp": self.config.advertise.to_string(),
            "capacity": self.config.capacity,
            "version": self.config.version,
            "bus": self.config.bus,
            "bus_key": self.config.bus_key.map(|k| k.to_z85()),
        }))?;
        let pair = reply["pair"]
            .as_u64()
            .ok_or_else(|| RequestError::BadReply("no `pair`".into()))? as u32;
        if let Some(ms) = reply["heartbeat_ms"].as_u64() {
            self.interval = Duration::from_millis(ms.clamp(5, 10_000));
        }
        self.pair = Some(pair);
        self.epoch = 0;
        self.status.pair.store(pair, Relaxed);
        self.status.registered.store(true, Relaxed);
        eprintln!(
            "zonecast pair: registered as pair {pair} in region {} (heartbeat every {} ms)",
            self.config.region,
            self.interval.as_millis()
        );
        self.heartbeat(pair)
    }

    fn heartbeat(&mut self, pair: u32) -> Result<(), RequestError> {
        let load = self.load();
        let mirrors: Vec<Value> = self
            .replica
            .as_ref()
            .and_then(|r| r.mirrors.lock().ok().map(|m| m.clone()))
            .unwrap_or_default()
            .iter()
            .map(|(pair, state)| json!({ "pair": pair, "state": state.name() }))
            .collect();
        let reply = self.client.request(&json!({
            "op": "pair.heartbeat",
            "token": self.config.token,
            "pair": pair,
            "epoch": self.epoch,
            "load": load,
            "mirrors": mirrors,
        }))?;
        let epoch = reply["epoch"].as_u64();
        if let Some(assignment) = reply.get("assignment") {
            self.take_over(assignment, epoch.unwrap_or(0))?;
            let sessions = parse_sessions(assignment)?;
            self.apply(&sessions);
            self.follow_mirrors(assignment);
            if assignment["draining"].as_bool() == Some(true)
                && self.scenes.is_empty()
                && self.drained_at.is_none()
            {
                eprintln!(
                    "zonecast pair: draining: scenes handed over; forwarding stragglers for {} ms",
                    self.config.drain_grace.as_millis()
                );
                self.drained_at = Some(Instant::now());
            }
        }
        if let Some(epoch) = epoch {
            self.epoch = epoch;
        }
        Ok(())
    }

    /// Scenes new to this pair are taken over from a mirror when one holds them (a failover:
    /// the devices are redirected here under `epoch`), except those still `incoming` from a
    /// draining pair; scenes this pair hands over in a drain are forwarded to their new pair.
    /// Both happen before sessions are admitted, so the mirrored sessions (replay windows
    /// included) are the ones kept.
    fn take_over(&mut self, assignment: &Value, epoch: u64) -> Result<(), RequestError> {
        let bad = |what: &str| RequestError::BadReply(format!("assignment: {what}"));
        if !assignment["scenes"].is_array() {
            return Err(bad("no scenes"));
        }
        let scenes = ids(&assignment["scenes"]);
        let incoming = ids(&assignment["incoming"]);
        // A scene arriving by handover is adopted when the handover reaches the mirror; should
        // the draining pair die first, it stops being incoming and is promoted then.
        let scenes: BTreeSet<u32> = scenes.difference(&incoming).copied().collect();
        let mut commands = Vec::new();
        for scene in scenes.difference(&self.scenes) {
            let to = self.config.advertise;
            commands.push(SessionCommand::Promote {
                scene: *scene,
                to,
                epoch,
            });
        }
        for h in assignment["handovers"].as_array().into_iter().flatten() {
            let (Some(scene), Some(to), Some(epoch)) = (
                h["scene"].as_u64().map(|s| s as u32),
                h["udp"].as_str().and_then(|u| u.parse().ok()),
                h["epoch"].as_u64(),
            ) else {
                return Err(bad("handover"));
            };
            if self.handed_over.insert(scene) {
                commands.push(SessionCommand::Handover { scene, to, epoch });
            }
        }
        if !commands.is_empty() {
            self.sessions.send(commands);
        }
        self.scenes = scenes;
        Ok(())
    }

    /// Mirrors exactly the pairs the assignment lists.
    fn follow_mirrors(&mut self, assignment: &Value) {
        let wanted: BTreeMap<u32, (String, Option<PublicKey>)> = assignment["mirrors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| {
                let key = match m["key"].as_str() {
                    Some(k) => Some(PublicKey::from_z85(k).ok()?),
                    None => None,
                };
                let stream = (m["bus"].as_str()?.to_string(), key);
                Some((m["pair"].as_u64()? as u32, stream))
            })
            .collect();
        let mut commands = Vec::new();
        for (pair, bus) in &self.mirrors {
            if wanted.get(pair) != Some(bus) {
                commands.push(SessionCommand::Unmirror { pair: *pair });
            }
        }
        for (pair, (bus, key)) in &wanted {
            if self.mirrors.get(pair) != Some(&(bus.clone(), *key)) {
                commands.push(SessionCommand::Mirror {
                    pair: *pair,
                    endpoint: bus.clone(),
                    key: *key,
                });
            }
        }
        if !commands.is_empty() {
            self.sessions.send(commands);
        }
        self.mirrors = wanted;
    }

    /// Makes the admitted sessions equal to `wanted`.
    fn apply(&mut self, wanted: &[(u32, u32, String)]) {
        let mut commands = Vec::new();
        let wanted_map: BTreeMap<u32, (u32, String)> = wanted
            .iter()
            .map(|(d, s, k)| (*d, (*s, k.clone())))
            .collect();
        for device in self.admitted.keys() {
            if !wanted_map.contains_key(device) {
                commands.push(SessionCommand::Revoke { device: *device });
            }
        }
        for (device, (scene, key)) in &wanted_map {
            if self.admitted.get(device) == Some(&(*scene, key.clone())) {
                continue;
            }
            if let Some(key) = SessionKey::from_hex(key) {
                commands.push(SessionCommand::Admit {
                    device: *device,
                    scene: *scene,
                    key,
                });
            }
        }
        if !commands.is_empty() {
            self.sessions.send(commands);
        }
        self.admitted = wanted_map;
    }

    fn load(&mut self) -> Load {
        let s = self.stats.snapshot();
        let (at, last_in, last_out) = self.last_rates;
        let secs = at.elapsed().as_secs_f64().max(1e-3);
        let load = Load {
            joined: s.joined,
            objects: s.objects,
            datagrams_in_per_sec: (s.ingest_datagrams.saturating_sub(last_in)) as f64 / secs,
            datagrams_out_per_sec: (s.fanout_datagrams.saturating_sub(last_out)) as f64 / secs,
            dropped: s.ingest_drops.total(),
        };
        self.last_rates = (Instant::now(), s.ingest_datagrams, s.fanout_datagrams);
        load
    }
}

/// The ids in a JSON array (none if it is not one).
fn ids(list: &Value) -> BTreeSet<u32> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_u64().map(|s| s as u32))
        .collect()
}

/// The `sessions` of an assignment: (device, scene, key hex).
fn parse_sessions(assignment: &Value) -> Result<Vec<(u32, u32, String)>, RequestError> {
    let bad = |what: &str| RequestError::BadReply(format!("assignment: {what}"));
    let list = assignment["sessions"]
        .as_array()
        .ok_or_else(|| bad("no sessions"))?;
    list.iter()
        .map(|s| {
            let device = s["device"].as_u64().ok_or_else(|| bad("device"))? as u32;
            let scene = s["scene"].as_u64().ok_or_else(|| bad("scene"))? as u32;
            let key = s["key"].as_str().ok_or_else(|| bad("key"))?.to_string();
            Ok((device, scene, key))
        })
        .collect()
}
