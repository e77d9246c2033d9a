//! The controller's state as typed replies: a pair's assignment, a scene, the cluster status.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{unknown_scene, Controller};
use crate::control::protocol::{
    Assignment, ClusterStatus, ControlError, HandoverOrder, MirrorTarget, PairStatus, RegionStatus,
    SceneInfo, SceneShown, SessionGrant, SharedScene, ZonePeer, ZoneServed,
};

impl Controller {
    /// What `pair` must serve: its scenes and their device sessions (those of scenes it
    /// handed over included: it forwards for them until it leaves), the pairs it mirrors
    /// (with their streams), its handovers and whether it drains.
    pub(super) fn assignment(&self, pair: u32) -> Assignment {
        let scenes = self.scenes_of(pair);
        let Some(p) = self.pairs.get(&pair) else {
            return Assignment {
                scenes,
                ..Assignment::default()
            };
        };
        let handed: Vec<u32> = p.handovers.iter().map(|h| h.0).collect();
        // Its own devices: those homed here (by their zone), and every device of the scenes
        // it handed over (it forwards their stragglers).
        let sessions = self
            .devices
            .iter()
            .filter(|(id, d)| {
                self.home_of(d) == Some(pair)
                    || handed.contains(&d.scene)
                    || self.moving_from(pair, **id)
            })
            .map(|(id, d)| SessionGrant {
                device: *id,
                scene: d.scene,
                key: d.key.clone(),
            })
            .collect();
        let mirrors = self
            .pairs
            .iter()
            .filter(|(_, q)| q.alive && q.standby == Some(pair))
            .filter_map(|(id, q)| {
                Some(MirrorTarget {
                    pair: *id,
                    bus: q.bus.clone()?,
                    key: q.bus_key.clone(),
                })
            })
            .collect();
        let handovers = p
            .handovers
            .iter()
            .filter_map(|(scene, to, epoch)| {
                Some(HandoverOrder {
                    scene: *scene,
                    pair: *to,
                    udp: self.pairs.get(to)?.udp.to_string(),
                    epoch: *epoch,
                })
            })
            .collect();
        // Scenes a live draining pair is handing over here: the handover event in its stream,
        // not this assignment, is when to take them (everything it accepted comes before).
        // Only those still assigned here: a scene that moved on meanwhile (this pair was
        // declared dead during the drain) is not coming.
        let incoming = self
            .pairs
            .values()
            .filter(|q| q.alive && q.draining)
            .flat_map(|q| q.handovers.iter())
            .filter(|h| h.1 == pair && self.scenes.get(&h.0).is_some_and(|s| s.served_by(pair)))
            .map(|h| h.0)
            .collect();
        let shared = scenes
            .iter()
            .filter_map(|id| self.shared(*id, pair))
            .collect();
        Assignment {
            scenes,
            sessions,
            mirrors,
            handovers,
            incoming,
            draining: p.draining,
            shared,
            moves: self.moves_of(pair),
            arriving: self.arriving_at(pair),
        }
    }

    /// `scene` as `pair` must know it when other pairs serve some of its zones.
    fn shared(&self, scene: u32, pair: u32) -> Option<SharedScene> {
        let s = self.scenes.get(&scene)?;
        let serving = s.serving();
        if serving.len() < 2 {
            return None;
        }
        let peers = serving
            .iter()
            .filter(|p| **p != pair)
            .map(|p| {
                let rec = self.pairs.get(p);
                ZonePeer {
                    pair: *p,
                    zones: s.zones_of(*p),
                    bus: rec.and_then(|r| r.bus.clone()),
                    key: rec.and_then(|r| r.bus_key.clone()),
                }
            })
            .collect();
        Some(SharedScene {
            scene,
            geometry: s.geometry.clone(),
            zones: s.zones_of(pair),
            peers,
        })
    }

    pub(super) fn scene_info(&self, id: u32) -> Option<SceneInfo> {
        let s = self.scenes.get(&id)?;
        Some(SceneInfo {
            id,
            name: s.name.clone(),
            region: s.region.clone(),
            pair: s.pair,
            devices: self.devices.values().filter(|d| d.scene == id).count(),
            zones: s.geometry.zone_count(),
            pairs: Some(s.serving())
                .filter(|p| p.len() > 1)
                .unwrap_or_default(),
        })
    }

    /// `scene.get`: the scene, its geometry and every zone with the pair serving it.
    pub(super) fn scene_shown(&self, id: u32) -> Result<SceneShown, ControlError> {
        let s = self.scene(id)?;
        let scene = self.scene_info(id).ok_or_else(|| unknown_scene(id))?;
        let zones = s
            .geometry
            .zones()
            .into_iter()
            .map(|z| ZoneServed {
                zone: s.geometry.info(z),
                pair: s.zone_pair(z),
            })
            .collect();
        Ok(SceneShown {
            scene,
            geometry: s.geometry.clone(),
            zones,
        })
    }

    pub(super) fn status(&self, now: Instant) -> ClusterStatus {
        let mut regions: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
        for p in self.pairs.values() {
            let r = regions.entry(&p.region).or_default();
            r.0 += usize::from(p.alive);
            r.1 += usize::from(!p.alive);
        }
        for s in self.scenes.values() {
            regions.entry(&s.region).or_default().2 += 1;
        }
        let regions = regions
            .iter()
            .map(|(name, (live, dead, scenes))| RegionStatus {
                name: name.to_string(),
                live_pairs: *live,
                dead_pairs: *dead,
                scenes: *scenes,
            })
            .collect();
        let pairs = self
            .pairs
            .iter()
            .map(|(id, p)| {
                let live = self.live.get(id);
                let scenes = self.scenes_of(*id);
                let devices = self
                    .devices
                    .values()
                    .filter(|d| self.home_of(d) == Some(*id))
                    .count();
                PairStatus {
                    id: *id,
                    region: p.region.clone(),
                    udp: p.udp.to_string(),
                    capacity: p.capacity,
                    version: p.version.clone(),
                    alive: p.alive,
                    heartbeat_age_ms: self.heartbeat_age(now, *id).as_millis() as u64,
                    window_ms: self.window_of(*id).as_millis() as u64,
                    load: live.map(|l| l.load.clone()).unwrap_or_default(),
                    scenes,
                    devices,
                    bus: p.bus.clone(),
                    bus_key: p.bus_key.clone(),
                    standby: p.standby,
                    standby_state: live.and_then(|l| l.standby_state),
                    draining: p.draining,
                }
            })
            .collect();
        ClusterStatus {
            epoch: self.meta.epoch,
            regions,
            pairs,
            scenes: self
                .scenes
                .keys()
                .filter_map(|id| self.scene_info(*id))
                .collect(),
            devices: self.devices.len(),
            named_devices: self.devices.values().filter(|d| d.name.is_some()).count(),
            controllers: Vec::new(),
        }
    }
}
