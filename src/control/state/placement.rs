//! Where scenes go: created in the least loaded live pair of their region (a gridded scene's
//! zones spread over the region's live pairs, `zones::assign`), moved off a pair that dies or
//! leaves (to its synced standby, which holds their state, or the least loaded pair left),
//! and given to the first pair of a region that had none.

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
        let zones = self.spread(&region, pair, &geometry);
        let rec = SceneRec {
            name,
            region,
            pair,
            geometry,
            zones,
        };
        self.scenes.insert(id, rec);
        self.bump_scene(id);
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
        for p in rec.serving() {
            self.bump(Some(p));
        }
        Ok(SceneDeleted {
            scene,
            epoch: self.meta.epoch,
        })
    }

    /// The zones of a new scene of `region` over its live pairs (`zones::assign`, least loaded
    /// first), as the exceptions to `home`: empty when one pair serves them all. Zones are
    /// spread when the scene is created; a pair registering later gets zones of new scenes
    /// and of failed or drained pairs (moving zones by load is the balancer's, issue 15).
    fn spread(
        &self,
        region: &str,
        home: Option<u32>,
        geometry: &Geometry,
    ) -> BTreeMap<u32, Option<u32>> {
        let Some(home) = home else {
            return BTreeMap::new();
        };
        let mut pairs = vec![home];
        while let Some(p) = self.least_loaded_of(region, &pairs) {
            pairs.push(p);
        }
        crate::zones::assign::assign(geometry, &pairs)
            .into_iter()
            .filter(|(_, p)| *p != home)
            .map(|(z, p)| (z, Some(p)))
            .collect()
    }

    /// Scenes of `region` that had no live pair (or zones that had none) go to the least
    /// loaded one now.
    pub(super) fn assign_orphans(&mut self, region: &str) {
        let orphans: Vec<u32> = self
            .scenes
            .iter()
            .filter(|(_, s)| s.region == region)
            .filter(|(_, s)| s.pair.is_none() || s.zones.values().any(Option::is_none))
            .map(|(id, _)| *id)
            .collect();
        for scene in orphans {
            let pair = self.least_loaded(region, None);
            if let Some(s) = self.scenes.get_mut(&scene) {
                s.replace(None, pair);
            }
            self.bump_scene(scene);
        }
    }

    /// Moves every zone `pair` serves (whole scenes or parts) to its synced standby, else the
    /// least loaded other live pair of the region.
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
                s.replace(Some(pair), to);
            }
            // The pairs that served the scene with it learn of the new peer.
            self.bump_scene(scene);
            moved.push((scene, to));
        }
        moved
    }

    /// The live pair of `region` with the fewest devices per unit of capacity, then the lowest
    /// reported input rate, then the lowest id.
    pub(super) fn least_loaded(&self, region: &str, except: Option<u32>) -> Option<u32> {
        self.least_loaded_of(region, &except.into_iter().collect::<Vec<_>>())
    }

    /// [`Controller::least_loaded`] among the pairs not in `except`.
    fn least_loaded_of(&self, region: &str, except: &[u32]) -> Option<u32> {
        let mut devices: BTreeMap<u32, u64> = BTreeMap::new();
        for d in self.devices.values() {
            if let Some(p) = self.home_of(d) {
                *devices.entry(p).or_default() += 1;
            }
        }
        self.pairs
            .iter()
            .filter(|(id, p)| p.alive && !p.draining && p.region == region && !except.contains(id))
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
