//! Where scenes go: created in the least loaded live pair of their region, moved off a pair
//! that dies or leaves (to its synced standby, which holds their state, or the least loaded
//! pair left), and given to the first pair of a region that had none.

use std::collections::BTreeMap;

use super::{err, unknown_scene, Controller, PairRec, SceneRec};
use crate::control::protocol::{ControlError, ErrorCode, SceneCreated, SceneDeleted};
use crate::zones::Geometry;

impl Controller {
    pub(super) fn scene_create(
        &mut self,
        name: String,
        region: String,
        geometry: Geometry,
    ) -> Result<SceneCreated, ControlError> {
        let name = name.trim().to_string();
        let region = region.trim().to_string();
        if name.is_empty() || region.is_empty() || name.len() > 128 || region.len() > 64 {
            return Err(err(
                ErrorCode::InvalidValue,
                "name (1-128) and region (1-64) are required",
            ));
        }
        geometry
            .validate()
            .map_err(|m| err(ErrorCode::InvalidValue, format!("geometry: {m}")))?;
        if self.scenes.values().any(|s| s.name == name) {
            return Err(err(
                ErrorCode::Conflict,
                format!("a scene named `{name}` exists"),
            ));
        }
        let id = self.meta.next_scene;
        self.meta.next_scene += 1;
        let pair = self.least_loaded(&region, None);
        let rec = SceneRec {
            name,
            region,
            pair,
            geometry,
        };
        self.scenes.insert(id, rec);
        self.bump(pair);
        let scene = self.scene_info(id).ok_or_else(|| unknown_scene(id))?;
        Ok(SceneCreated {
            scene,
            epoch: self.meta.epoch,
        })
    }

    pub(super) fn scene_delete(&mut self, scene: u32) -> Result<SceneDeleted, ControlError> {
        let rec = self.scene(scene)?.clone();
        self.scenes.remove(&scene);
        self.devices.retain(|_, d| d.scene != scene);
        self.bump(rec.pair);
        Ok(SceneDeleted {
            scene,
            epoch: self.meta.epoch,
        })
    }

    /// Scenes of `region` that had no live pair go to the least loaded one now.
    pub(super) fn assign_orphans(&mut self, region: &str) {
        let orphans: Vec<u32> = self
            .scenes
            .iter()
            .filter(|(_, s)| s.region == region && s.pair.is_none())
            .map(|(id, _)| *id)
            .collect();
        for scene in orphans {
            let pair = self.least_loaded(region, None);
            if let Some(s) = self.scenes.get_mut(&scene) {
                s.pair = pair;
            }
            self.bump(pair);
        }
    }

    /// Moves every scene of `pair` to the least loaded other live pair of its region.
    pub(super) fn move_scenes_off(&mut self, pair: u32) -> Vec<(u32, Option<u32>)> {
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
    pub(super) fn least_loaded(&self, region: &str, except: Option<u32>) -> Option<u32> {
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
                let rate = |id: &u32| {
                    self.live
                        .get(id)
                        .map_or(0.0, |l| l.load.datagrams_in_per_sec)
                };
                fill(a, pa)
                    .total_cmp(&fill(b, pb))
                    .then(rate(a).total_cmp(&rate(b)))
                    .then(a.cmp(b))
            })
            .map(|(id, _)| *id)
    }
}
