//! The controller's state machine (pure: no sockets, no clock; `now` comes in).
//!
//! It owns regions (implicit: the names pairs and scenes use), scenes, pairs, devices and the
//! **epoch**, a counter that increases with every assignment change. A scene is served by one
//! pair, chosen as the least loaded live pair of the scene's region; its devices are homed on
//! that pair. A pair whose heartbeat is older than `dead_after` is declared dead at the next
//! `tick`, and its scenes move to the least loaded live pair left in the region. Each pair
//! learns its assignment (scenes and device sessions) from heartbeat replies; a pair that was
//! declared dead is answered `stale_epoch` and must drop everything and register again, so a
//! partitioned old owner cannot keep serving a scene that moved.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::limits::{RegisterLimiter, RegisterLimits, Source};
use super::protocol::{ok, ControlError, ErrorCode, Load, MirrorReport, Request};
use crate::security::PublicKey;
use crate::wire::SessionKey;

/// Controller settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Required by operator and pair ops.
    pub token: String,
    /// Required by device.register when set; registration is open otherwise.
    pub device_token: Option<String>,
    /// How often pairs are asked to heartbeat.
    pub heartbeat_interval: Duration,
    /// A pair silent this long is dead.
    pub dead_after: Duration,
    /// How long a dead pair stays listed (and told `stale_epoch`) before it is forgotten.
    pub forget_after: Duration,
    /// First epoch (the server seeds it from the clock so epochs grow across restarts).
    pub first_epoch: u64,
    /// How fast one source may register devices.
    pub register: RegisterLimits,
    /// Devices one scene may hold (registration is refused with `scene_full` beyond).
    pub max_devices_per_scene: usize,
    /// The control plane is encrypted: a pair's replication stream must be too (it carries
    /// the session keys), so `pair.register` with a `bus` needs a `bus_key`.
    pub encrypted: bool,
}

impl Config {
    pub fn new(token: impl Into<String>) -> Config {
        Config {
            token: token.into(),
            device_token: None,
            heartbeat_interval: Duration::from_millis(50),
            dead_after: Duration::from_millis(250),
            forget_after: Duration::from_secs(60),
            first_epoch: 1,
            register: RegisterLimits::default(),
            max_devices_per_scene: 10_000,
            encrypted: false,
        }
    }
}

#[derive(Clone, Debug)]
struct PairRec {
    region: String,
    udp: SocketAddr,
    capacity: u32,
    version: String,
    last_heartbeat: Instant,
    load: Load,
    alive: bool,
    /// Epoch of the last change to this pair's scenes or sessions.
    assigned_epoch: u64,
    /// Replication stream endpoint; a pair without one gets no standby.
    bus: Option<String>,
    /// The stream's Noise public key (Z85), when it is encrypted.
    bus_key: Option<String>,
    /// The pair mirroring this one, and its last word on the mirror.
    standby: Option<u32>,
    standby_state: String,
    /// Its standby lost the stream without a goodbye: dead unless a heartbeat comes soon.
    suspect: bool,
    /// Draining: takes no new scenes; hands its scenes over, then deregisters.
    draining: bool,
    /// Scenes this pair handed over in a drain: (scene, new pair, epoch of the move).
    handovers: Vec<(u32, u32, u64)>,
}

#[derive(Clone, Debug)]
struct SceneRec {
    name: String,
    region: String,
    pair: Option<u32>,
}

#[derive(Clone, Debug)]
struct DeviceRec {
    scene: u32,
    key: String,
    name: Option<String>,
}

/// Something the controller decided on its own (for the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// `pair` missed its heartbeats; each scene went to a new pair, or to none.
    PairDead {
        pair: u32,
        moved: Vec<(u32, Option<u32>)>,
    },
    /// A dead pair was forgotten.
    PairForgotten { pair: u32 },
}

/// The controller's whole state.
pub struct Controller {
    config: Config,
    epoch: u64,
    pairs: BTreeMap<u32, PairRec>,
    scenes: BTreeMap<u32, SceneRec>,
    devices: BTreeMap<u32, DeviceRec>,
    next_pair: u32,
    next_scene: u32,
    next_device: u32,
    limiter: RegisterLimiter,
}

fn err(code: ErrorCode, message: impl Into<String>) -> ControlError {
    ControlError::new(code, message)
}

impl Controller {
    pub fn new(config: Config) -> Controller {
        Controller {
            epoch: config.first_epoch.max(1),
            limiter: RegisterLimiter::new(config.register),
            config,
            pairs: BTreeMap::new(),
            scenes: BTreeMap::new(),
            devices: BTreeMap::new(),
            next_pair: 1,
            next_scene: 1,
            next_device: 1,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serves one request from `source`: a device registration first passes the source's
    /// rate limit (every attempt counts, valid or not, so a flood is cheap to refuse).
    pub fn handle_from(
        &mut self,
        now: Instant,
        source: Source,
        req: Request,
    ) -> Result<Value, ControlError> {
        if matches!(req, Request::DeviceRegister { .. }) {
            if let Err(wait) = self.limiter.admit(now, source) {
                let ms = wait.as_millis().min(u128::from(u32::MAX)).max(1);
                let msg = format!("too many registrations from this address; retry in {ms} ms");
                return Err(err(ErrorCode::RateLimited, msg));
            }
        }
        self.handle(now, req)
    }

    /// Serves one request. Errors change nothing.
    pub fn handle(&mut self, now: Instant, req: Request) -> Result<Value, ControlError> {
        use Request::*;
        match req {
            SceneCreate {
                token,
                name,
                region,
            } => {
                self.operator(&token)?;
                self.scene_create(name, region)
            }
            SceneList { token } => {
                self.operator(&token)?;
                let scenes: Vec<Value> =
                    self.scenes.keys().map(|id| self.scene_json(*id)).collect();
                Ok(ok(json!({ "scenes": scenes })))
            }
            SceneGet { token, scene } => {
                self.operator(&token)?;
                self.scene(scene)?;
                Ok(ok(json!({ "scene": self.scene_json(scene) })))
            }
            SceneDelete { token, scene } => {
                self.operator(&token)?;
                self.scene_delete(scene)
            }
            PairRegister {
                token,
                region,
                udp,
                capacity,
                version,
                bus,
                bus_key,
            } => {
                self.operator(&token)?;
                let stream = Stream::check(bus, bus_key, self.config.encrypted)?;
                self.pair_register(now, region, &udp, capacity, version, stream)
            }
            PairHeartbeat {
                token,
                pair,
                epoch,
                load,
                mirrors,
            } => {
                self.operator(&token)?;
                self.pair_heartbeat(now, pair, epoch, load, &mirrors)
            }
            PairDrain { token, pair } => {
                self.operator(&token)?;
                self.pair_drain(pair)
            }
            PairDeregister { token, pair } => {
                self.operator(&token)?;
                self.pair_deregister(pair)
            }
            DeviceRegister { token, scene, name } => {
                if let Some(required) = &self.config.device_token {
                    check_token(required, &token)?;
                }
                self.device_register(scene, name)
            }
            DeviceLocate { device } => {
                let d = self.device(device)?;
                Ok(ok(self.location(device, d.scene)?))
            }
            DeviceDeregister { device, key } => {
                let d = self.device(device)?;
                if !bool::from(d.key.as_bytes().ct_eq(key.trim().as_bytes())) {
                    return Err(err(ErrorCode::Unauthorized, "wrong key for this device"));
                }
                let scene = d.scene;
                self.devices.remove(&device);
                self.bump_scene(scene);
                Ok(ok(json!({ "device": device, "epoch": self.epoch })))
            }
            ClusterStatus { token } => {
                self.operator(&token)?;
                Ok(ok(self.status(now)))
            }
            Discovery {} => Ok(ok(json!({ "role": "active", "epoch": self.epoch }))),
        }
    }

    /// Declares silent pairs dead, moves their scenes, forgets long-dead pairs.
    pub fn tick(&mut self, now: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        let dead: Vec<u32> = self
            .pairs
            .iter()
            .filter(|(_, p)| {
                let age = now.saturating_duration_since(p.last_heartbeat);
                // A primary whose standby saw its stream break is dead once a heartbeat is
                // overdue (two intervals), well before the full window: that is the fast path
                // of a failover. A live primary heartbeats in time and is not moved.
                let suspect_after = self.config.heartbeat_interval * 2;
                p.alive && (age > self.config.dead_after || (p.suspect && age > suspect_after))
            })
            .map(|(id, _)| *id)
            .collect();
        for pair in dead {
            if let Some(p) = self.pairs.get_mut(&pair) {
                p.alive = false;
            }
            let moved = self.move_scenes_off(pair);
            changes.push(Change::PairDead { pair, moved });
        }
        let forget: Vec<u32> = self
            .pairs
            .iter()
            .filter(|(_, p)| {
                !p.alive
                    && now.saturating_duration_since(p.last_heartbeat) > self.config.forget_after
            })
            .map(|(id, _)| *id)
            .collect();
        for pair in forget {
            self.pairs.remove(&pair);
            changes.push(Change::PairForgotten { pair });
        }
        self.refresh_standbys();
        changes
    }

    fn operator(&self, token: &Option<String>) -> Result<(), ControlError> {
        check_token(&self.config.token, token)
    }

    fn scene(&self, scene: u32) -> Result<&SceneRec, ControlError> {
        self.scenes
            .get(&scene)
            .ok_or_else(|| err(ErrorCode::UnknownScene, format!("no scene {scene}")))
    }

    fn device(&self, device: u32) -> Result<&DeviceRec, ControlError> {
        self.devices
            .get(&device)
            .ok_or_else(|| err(ErrorCode::UnknownDevice, format!("no device {device}")))
    }

    fn scene_create(&mut self, name: String, region: String) -> Result<Value, ControlError> {
        let name = name.trim().to_string();
        let region = region.trim().to_string();
        if name.is_empty() || region.is_empty() || name.len() > 128 || region.len() > 64 {
            return Err(err(
                ErrorCode::InvalidValue,
                "name (1-128) and region (1-64) are required",
            ));
        }
        if self.scenes.values().any(|s| s.name == name) {
            return Err(err(
                ErrorCode::Conflict,
                format!("a scene named `{name}` exists"),
            ));
        }
        let id = self.next_scene;
        self.next_scene += 1;
        let pair = self.least_loaded(&region, None);
        self.scenes.insert(id, SceneRec { name, region, pair });
        self.bump(pair);
        Ok(ok(
            json!({ "scene": self.scene_json(id), "epoch": self.epoch }),
        ))
    }

    fn scene_delete(&mut self, scene: u32) -> Result<Value, ControlError> {
        let rec = self.scene(scene)?.clone();
        self.scenes.remove(&scene);
        self.devices.retain(|_, d| d.scene != scene);
        self.bump(rec.pair);
        Ok(ok(json!({ "scene": scene, "epoch": self.epoch })))
    }

    fn pair_register(
        &mut self,
        now: Instant,
        region: String,
        udp: &str,
        capacity: u32,
        version: String,
        stream: Stream,
    ) -> Result<Value, ControlError> {
        let region = region.trim().to_string();
        if region.is_empty() || region.len() > 64 {
            return Err(err(
                ErrorCode::InvalidValue,
                "region (1-64 characters) is required",
            ));
        }
        let udp: SocketAddr = udp.parse().map_err(|_| {
            err(
                ErrorCode::InvalidValue,
                format!("udp `{udp}` is not HOST:PORT"),
            )
        })?;
        if udp.ip().is_unspecified() || udp.port() == 0 {
            return Err(err(
                ErrorCode::InvalidValue,
                "udp must be a reachable address and port",
            ));
        }
        if capacity == 0 {
            return Err(err(ErrorCode::InvalidValue, "capacity must be at least 1"));
        }
        let id = self.next_pair;
        self.next_pair += 1;
        self.pairs.insert(
            id,
            PairRec {
                region: region.clone(),
                udp,
                capacity,
                version,
                last_heartbeat: now,
                load: Load::default(),
                alive: true,
                assigned_epoch: 0,
                bus: stream.bus,
                bus_key: stream.key,
                standby: None,
                standby_state: String::new(),
                suspect: false,
                draining: false,
                handovers: Vec::new(),
            },
        );
        // Scenes of the region that had no live pair go to the least loaded one now.
        let orphans: Vec<u32> = self
            .scenes
            .iter()
            .filter(|(_, s)| s.region == region && s.pair.is_none())
            .map(|(id, _)| *id)
            .collect();
        for scene in orphans {
            let pair = self.least_loaded(&region, None);
            if let Some(s) = self.scenes.get_mut(&scene) {
                s.pair = pair;
            }
            self.bump(pair);
        }
        self.refresh_standbys();
        Ok(ok(json!({
            "pair": id,
            "epoch": self.epoch,
            "heartbeat_ms": self.config.heartbeat_interval.as_millis() as u64,
            "dead_after_ms": self.config.dead_after.as_millis() as u64,
        })))
    }

    fn pair_heartbeat(
        &mut self,
        now: Instant,
        pair: u32,
        epoch: u64,
        load: Load,
        mirrors: &[MirrorReport],
    ) -> Result<Value, ControlError> {
        for m in mirrors {
            if let Some(primary) = self.pairs.get_mut(&m.pair) {
                if primary.standby == Some(pair) {
                    primary.standby_state = m.state.clone();
                    primary.suspect |= m.state == "lost";
                }
            }
        }
        let p = self
            .pairs
            .get_mut(&pair)
            .ok_or_else(|| err(ErrorCode::UnknownPair, format!("no pair {pair}: register")))?;
        if !p.alive {
            let msg = format!("pair {pair} was declared dead; its scenes moved: register again");
            return Err(err(ErrorCode::StaleEpoch, msg));
        }
        p.last_heartbeat = now;
        p.load = load;
        p.suspect = false;
        let assigned = p.assigned_epoch;
        if epoch == assigned {
            return Ok(ok(json!({ "epoch": assigned })));
        }
        Ok(ok(
            json!({ "epoch": assigned, "assignment": self.assignment(pair) }),
        ))
    }

    fn pair_drain(&mut self, pair: u32) -> Result<Value, ControlError> {
        let p = self
            .pairs
            .get(&pair)
            .ok_or_else(|| err(ErrorCode::UnknownPair, format!("no pair {pair}")))?;
        if !p.alive {
            return Err(err(ErrorCode::StaleEpoch, format!("pair {pair} is dead")));
        }
        if !p.draining {
            let scenes = self.scenes_of(pair);
            if !scenes.is_empty() {
                let target = self.synced_standby(pair).ok_or_else(|| {
                    let p = &self.pairs[&pair];
                    if p.bus.is_none() {
                        err(
                            ErrorCode::InvalidValue,
                            format!("pair {pair} has no replication stream: it cannot hand its state over (deregister it instead)"),
                        )
                    } else if self.least_loaded(&p.region, Some(pair)).is_none() {
                        err(
                            ErrorCode::NoPair,
                            format!("no other live pair in region `{}` to take over", p.region),
                        )
                    } else {
                        err(
                            ErrorCode::Conflict,
                            format!("the standby of pair {pair} is not in sync yet; retry shortly"),
                        )
                    }
                })?;
                for scene in scenes {
                    if let Some(s) = self.scenes.get_mut(&scene) {
                        s.pair = Some(target);
                    }
                    self.bump(Some(target));
                    let epoch = self.epoch;
                    if let Some(p) = self.pairs.get_mut(&pair) {
                        p.handovers.push((scene, target, epoch));
                    }
                }
            }
            if let Some(p) = self.pairs.get_mut(&pair) {
                p.draining = true;
            }
            self.bump(Some(pair));
            // It stands by for nobody any more.
            self.refresh_standbys();
        }
        let p = &self.pairs[&pair];
        let moved: Vec<Value> = p
            .handovers
            .iter()
            .map(|(scene, to, _)| json!({ "scene": scene, "pair": to }))
            .collect();
        Ok(ok(
            json!({ "pair": pair, "draining": true, "moved": moved, "epoch": self.epoch }),
        ))
    }

    /// The standby of `pair` if it is alive and its mirror is in sync.
    fn synced_standby(&self, pair: u32) -> Option<u32> {
        let p = self.pairs.get(&pair)?;
        let s = p.standby?;
        let sp = self.pairs.get(&s)?;
        // `lost`: it was in sync when the stream broke, so it holds everything the primary sent.
        let in_sync = matches!(p.standby_state.as_str(), "synced" | "lost");
        (sp.alive && !sp.draining && in_sync).then_some(s)
    }

    /// Gives every live, non-draining pair with a replication stream a standby: another live,
    /// non-draining pair of its region, the one with the fewest standby duties (then the
    /// lowest id). A standby is kept while it stays eligible; a draining pair keeps its
    /// standby, which is where its stragglers are forwarded. Each change is a new epoch for
    /// the standbys concerned (their mirror lists change).
    fn refresh_standbys(&mut self) {
        let ids: Vec<u32> = self.pairs.keys().copied().collect();
        for id in ids {
            let p = &self.pairs[&id];
            let eligible = |s: u32| {
                self.pairs
                    .get(&s)
                    .is_some_and(|q| s != id && q.alive && !q.draining && q.region == p.region)
            };
            let current = p.standby.filter(|s| eligible(*s));
            let wanted = if !p.alive || p.bus.is_none() {
                None
            } else if current.is_some() || p.draining {
                current
            } else {
                let mut duties: BTreeMap<u32, usize> = BTreeMap::new();
                for q in self.pairs.values() {
                    if let Some(s) = q.standby {
                        *duties.entry(s).or_default() += 1;
                    }
                }
                self.pairs
                    .keys()
                    .copied()
                    .filter(|s| eligible(*s))
                    .min_by_key(|s| (duties.get(s).copied().unwrap_or(0), *s))
            };
            let old = p.standby;
            if wanted != old {
                if let Some(p) = self.pairs.get_mut(&id) {
                    p.standby = wanted;
                    p.standby_state.clear();
                    p.suspect = false;
                }
                self.bump(old);
                self.bump(wanted);
            }
        }
    }

    fn pair_deregister(&mut self, pair: u32) -> Result<Value, ControlError> {
        if !self.pairs.contains_key(&pair) {
            return Err(err(ErrorCode::UnknownPair, format!("no pair {pair}")));
        }
        if let Some(p) = self.pairs.get_mut(&pair) {
            p.alive = false;
        }
        let moved = self.move_scenes_off(pair);
        let standby = self.pairs.remove(&pair).and_then(|p| p.standby);
        self.bump(standby);
        self.refresh_standbys();
        let moved: Vec<Value> = moved
            .iter()
            .map(|(scene, to)| json!({ "scene": scene, "pair": to }))
            .collect();
        Ok(ok(
            json!({ "pair": pair, "moved": moved, "epoch": self.epoch }),
        ))
    }

    fn device_register(&mut self, scene: u32, name: Option<String>) -> Result<Value, ControlError> {
        self.scene(scene)?;
        if let Some(n) = &name {
            if n.len() > 128 {
                return Err(err(
                    ErrorCode::InvalidValue,
                    "name is at most 128 characters",
                ));
            }
        }
        let devices = self.devices.values().filter(|d| d.scene == scene).count();
        if devices >= self.config.max_devices_per_scene {
            return Err(err(
                ErrorCode::SceneFull,
                format!("scene {scene} holds {devices} devices, the most this controller allows"),
            ));
        }
        // Refuse before creating anything if no live pair serves the scene.
        self.serving_pair(scene)?;
        let id = self.next_device;
        self.next_device += 1;
        let key = SessionKey::random().to_hex();
        self.devices.insert(
            id,
            DeviceRec {
                scene,
                key: key.clone(),
                name,
            },
        );
        self.bump_scene(scene);
        let mut reply = self.location(id, scene)?;
        reply["key"] = Value::String(key);
        Ok(ok(reply))
    }

    /// Where `device` of `scene` is homed now.
    fn location(&self, device: u32, scene: u32) -> Result<Value, ControlError> {
        let (pair, rec) = self.serving_pair(scene)?;
        Ok(json!({
            "device": device,
            "scene": scene,
            "pair": pair,
            "udp": rec.udp.to_string(),
            "epoch": self.epoch,
        }))
    }

    fn serving_pair(&self, scene: u32) -> Result<(u32, &PairRec), ControlError> {
        let s = self.scene(scene)?;
        s.pair
            .and_then(|id| self.pairs.get(&id).filter(|p| p.alive).map(|p| (id, p)))
            .ok_or_else(|| {
                err(
                    ErrorCode::NoPair,
                    format!("no live pair in region `{}` serves scene {scene}", s.region),
                )
            })
    }

    /// Moves every scene of `pair` to the least loaded other live pair of its region.
    fn move_scenes_off(&mut self, pair: u32) -> Vec<(u32, Option<u32>)> {
        let scenes = self.scenes_of(pair);
        let standby = self.synced_standby(pair);
        let mut moved = Vec::new();
        for scene in scenes {
            let region = self.scenes[&scene].region.clone();
            // The standby holds the scene's state and takes it over; without one in sync,
            // the least loaded pair starts the scene afresh.
            let to = standby.or_else(|| self.least_loaded(&region, Some(pair)));
            if let Some(s) = self.scenes.get_mut(&scene) {
                s.pair = to;
            }
            self.bump(to);
            moved.push((scene, to));
        }
        moved
    }

    /// The live pair of `region` with the fewest devices per unit of capacity, then the lowest
    /// reported input rate, then the lowest id.
    fn least_loaded(&self, region: &str, except: Option<u32>) -> Option<u32> {
        let mut devices: BTreeMap<u32, u64> = BTreeMap::new();
        for d in self.devices.values() {
            if let Some(p) = self.scenes.get(&d.scene).and_then(|s| s.pair) {
                *devices.entry(p).or_default() += 1;
            }
        }
        self.pairs
            .iter()
            .filter(|(id, p)| p.alive && !p.draining && p.region == region && Some(**id) != except)
            .min_by(|(a, pa), (b, pb)| {
                let fill = |id: &u32, p: &PairRec| {
                    devices.get(id).copied().unwrap_or(0) as f64 / f64::from(p.capacity)
                };
                fill(a, pa)
                    .total_cmp(&fill(b, pb))
                    .then(
                        pa.load
                            .datagrams_in_per_sec
                            .total_cmp(&pb.load.datagrams_in_per_sec),
                    )
                    .then(a.cmp(b))
            })
            .map(|(id, _)| *id)
    }

    /// A new epoch for a change that concerns `pair`.
    fn bump(&mut self, pair: Option<u32>) {
        self.epoch += 1;
        if let Some(p) = pair.and_then(|id| self.pairs.get_mut(&id)) {
            p.assigned_epoch = self.epoch;
        }
    }

    fn bump_scene(&mut self, scene: u32) {
        let pair = self.scenes.get(&scene).and_then(|s| s.pair);
        self.bump(pair);
    }

    /// The scenes `pair` serves.
    fn scenes_of(&self, pair: u32) -> Vec<u32> {
        self.scenes
            .iter()
            .filter(|(_, s)| s.pair == Some(pair))
            .map(|(id, _)| *id)
            .collect()
    }

    /// What `pair` must serve: its scenes and their device sessions (those of scenes it
    /// handed over included: it forwards for them until it leaves), the pairs it mirrors
    /// (with their streams), its handovers and whether it drains.
    fn assignment(&self, pair: u32) -> Value {
        let scenes = self.scenes_of(pair);
        let Some(p) = self.pairs.get(&pair) else {
            return json!({ "scenes": scenes, "sessions": [] });
        };
        let handed: Vec<u32> = p.handovers.iter().map(|h| h.0).collect();
        let sessions: Vec<Value> = self
            .devices
            .iter()
            .filter(|(_, d)| scenes.contains(&d.scene) || handed.contains(&d.scene))
            .map(|(id, d)| json!({ "device": id, "scene": d.scene, "key": d.key }))
            .collect();
        let mirrors: Vec<Value> = self
            .pairs
            .iter()
            .filter(|(_, q)| q.alive && q.standby == Some(pair))
            .filter_map(|(id, q)| {
                let mut m = json!({ "pair": id, "bus": q.bus.as_ref()? });
                if let Some(key) = &q.bus_key {
                    m["key"] = json!(key);
                }
                Some(m)
            })
            .collect();
        let handovers: Vec<Value> = p
            .handovers
            .iter()
            .filter_map(|(scene, to, epoch)| {
                let udp = self.pairs.get(to)?.udp.to_string();
                Some(json!({ "scene": scene, "pair": to, "udp": udp, "epoch": epoch }))
            })
            .collect();
        // Scenes a live draining pair is handing over here: the handover event in its stream,
        // not this assignment, is when to take them (everything it accepted comes before).
        let incoming: Vec<u32> = self
            .pairs
            .values()
            .filter(|q| q.alive && q.draining)
            .flat_map(|q| q.handovers.iter())
            .filter(|h| h.1 == pair)
            .map(|h| h.0)
            .collect();
        json!({
            "scenes": scenes,
            "sessions": sessions,
            "mirrors": mirrors,
            "handovers": handovers,
            "incoming": incoming,
            "draining": p.draining,
        })
    }

    fn scene_json(&self, id: u32) -> Value {
        let Some(s) = self.scenes.get(&id) else {
            return Value::Null;
        };
        let devices = self.devices.values().filter(|d| d.scene == id).count();
        json!({ "id": id, "name": s.name, "region": s.region, "pair": s.pair, "devices": devices })
    }

    fn status(&self, now: Instant) -> Value {
        let mut regions: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
        for p in self.pairs.values() {
            let r = regions.entry(&p.region).or_default();
            r.0 += usize::from(p.alive);
            r.1 += usize::from(!p.alive);
        }
        for s in self.scenes.values() {
            regions.entry(&s.region).or_default().2 += 1;
        }
        let regions: Vec<Value> = regions
            .iter()
            .map(|(name, (live, dead, scenes))| {
                json!({ "name": name, "live_pairs": live, "dead_pairs": dead, "scenes": scenes })
            })
            .collect();
        let pairs: Vec<Value> = self
            .pairs
            .iter()
            .map(|(id, p)| {
                let scenes = self.scenes_of(*id);
                let devices = self.devices.values().filter(|d| scenes.contains(&d.scene)).count();
                json!({
                    "id": id,
                    "region": p.region,
                    "udp": p.udp.to_string(),
                    "capacity": p.capacity,
                    "version": p.version,
                    "alive": p.alive,
                    "heartbeat_age_ms": now.saturating_duration_since(p.last_heartbeat).as_millis() as u64,
                    "load": p.load,
                    "scenes": scenes,
                    "devices": devices,
                    "bus": p.bus,
                    "bus_key": p.bus_key,
                    "standby": p.standby,
                    "standby_state": p.standby_state,
                    "draining": p.draining,
                })
            })
            .collect();
        let scenes: Vec<Value> = self.scenes.keys().map(|id| self.scene_json(*id)).collect();
        let named = self.devices.values().filter(|d| d.name.is_some()).count();
        json!({
            "epoch": self.epoch,
            "regions": regions,
            "pairs": pairs,
            "scenes": scenes,
            "devices": self.devices.len(),
            "named_devices": named,
        })
    }
}

/// A pair's replication stream as registered: checked endpoint and key.
struct Stream {
    bus: Option<String>,
    key: Option<String>,
}

impl Stream {
    fn check(
        bus: Option<String>,
        key: Option<String>,
        encrypted: bool,
    ) -> Result<Stream, ControlError> {
        let Some(b) = bus else {
            return Ok(Stream {
                bus: None,
                key: None,
            });
        };
        let ok = b
            .strip_prefix("tcp://")
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .is_some_and(|a| !a.ip().is_unspecified() && a.port() != 0);
        if !ok {
            return Err(err(
                ErrorCode::InvalidValue,
                format!("bus `{b}` is not tcp://HOST:PORT with a reachable address"),
            ));
        }
        let key = match key {
            Some(k) => Some(
                PublicKey::from_z85(&k)
                    .map_err(|e| err(ErrorCode::InvalidValue, format!("bus_key: {e}")))?
                    .to_z85(),
            ),
            None if encrypted => {
                return Err(err(
                    ErrorCode::InvalidValue,
                    "this controller is encrypted: a pair's replication stream must be too (it carries session keys); register a bus_key",
                ))
            }
            None => None,
        };
        Ok(Stream { bus: Some(b), key })
    }
}

/// Compares a presented token with the required one in constant time.
fn check_token(required: &str, presented: &Option<String>) -> Result<(), ControlError> {
    match presented {
        Some(t) if bool::from(t.as_bytes().ct_eq(required.as_bytes())) => Ok(()),
        Some(_) => Err(err(ErrorCode::Unauthorized, "wrong token")),
        None => Err(err(
            ErrorCode::Unauthorized,
            "this op requires the cluster token",
        )),
    }
}
