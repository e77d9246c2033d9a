//! Standbys and drains: every pair with a replication stream gets a standby in its region
//! that mirrors it; a drain hands a pair's scenes to its synced standby with their state.

use std::collections::BTreeMap;

use super::{err, Controller};
use crate::control::protocol::{ControlError, ErrorCode, MirrorState, Moved, PairDraining};

impl Controller {
    pub(super) fn pair_drain(&mut self, pair: u32) -> Result<PairDraining, ControlError> {
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
                        s.replace(Some(pair), Some(target));
                    }
                    self.bump_scene(scene);
                    let epoch = self.meta.epoch;
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
        let moved = self.pairs[&pair]
            .handovers
            .iter()
            .map(|(scene, to, _)| Moved {
                scene: *scene,
                pair: Some(*to),
            })
            .collect();
        Ok(PairDraining {
            pair,
            draining: true,
            moved,
            epoch: self.meta.epoch,
        })
    }

    /// The standby of `pair` if it is alive and its mirror is in sync.
    pub(super) fn synced_standby(&self, pair: u32) -> Option<u32> {
        let p = self.pairs.get(&pair)?;
        let s = p.standby?;
        let sp = self.pairs.get(&s)?;
        // `lost`: it was in sync when the stream broke, so it holds everything the primary sent.
        let state = self.live.get(&pair).and_then(|l| l.standby_state);
        let in_sync = matches!(state, Some(MirrorState::Synced | MirrorState::Lost));
        (sp.alive && !sp.draining && in_sync).then_some(s)
    }

    /// Gives every live, non-draining pair with a replication stream a standby: another live,
    /// non-draining pair of its region, the one with the fewest standby duties (then the
    /// lowest id). A standby is kept while it stays eligible; a draining pair keeps its
    /// standby, which is where its stragglers are forwarded. Each change is a new epoch for
    /// the standbys concerned (their mirror lists change).
    pub(super) fn refresh_standbys(&mut self) {
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
                }
                let live = self.live(id);
                live.standby_state = None;
                live.liveness.suspect = false;
                self.bump(old);
                self.bump(wanted);
            }
        }
    }
}
