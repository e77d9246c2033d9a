//! The tracker's side of zones across pairs: following the peers that serve the other zones
//! of shared scenes (the region bus), and handing over devices the controller moves.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use super::{SessionCommand, Tracker};
use crate::control::protocol::Assignment;
use crate::scene::Zoning;
use crate::security::PublicKey;

impl Tracker {
    /// Follows the streams of the pairs serving the other zones of shared scenes (a pair
    /// without a stream, or with a key that does not parse, is not followed).
    pub(super) fn follow_peers(&mut self, a: &Assignment) {
        let mut wanted: BTreeMap<u32, Follow> = BTreeMap::new();
        for s in &a.shared {
            for p in &s.peers {
                let Some(bus) = &p.bus else { continue };
                let key = match &p.key {
                    Some(k) => match PublicKey::from_z85(k) {
                        Ok(k) => Some(k),
                        Err(_) => continue,
                    },
                    None => None,
                };
                let f = wanted
                    .entry(p.pair)
                    .or_insert_with(|| (bus.clone(), key, Vec::new()));
                f.2.push(s.scene);
            }
        }
        for pair in self.follows.keys() {
            if !wanted.contains_key(pair) {
                // Its zones came here (it failed or drained): its objects are this pair's.
                let adopt = self.peer_zones.get(pair).is_some_and(|zones| {
                    zones.iter().any(|(scene, zone)| {
                        self.scenes.contains(scene)
                            && self.zones.get(scene).is_none_or(|here| here.contains(zone))
                    })
                });
                self.commands
                    .push(SessionCommand::Unfollow { pair: *pair, adopt });
            }
        }
        self.peer_zones.clear();
        for s in &a.shared {
            for p in &s.peers {
                let zones = self.peer_zones.entry(p.pair).or_default();
                zones.extend(p.zones.iter().map(|z| (s.scene, *z)));
            }
        }
        for (pair, f) in &wanted {
            if self.follows.get(pair) != Some(f) {
                self.commands.push(SessionCommand::Follow {
                    pair: *pair,
                    me: self.pair.unwrap_or(0),
                    endpoint: f.0.clone(),
                    key: f.1,
                    scenes: f.2.clone(),
                });
            }
        }
        self.follows = wanted;
    }

    /// Promotions for shared scenes held here that gained zones (they come from a pair that
    /// failed or drained) and `Zones` for the engine wherever what this pair serves of a
    /// scene changed; remembers the zones.
    pub(super) fn zone_changes(
        &mut self,
        a: &Assignment,
        scenes: &BTreeSet<u32>,
        held: &BTreeSet<u32>,
        epoch: u64,
    ) {
        // A shared scene held here that gained zones: they come from a pair that failed (or
        // drained), and its part of the scene is in a mirror if this pair stood by for it.
        let zones: BTreeMap<u32, Vec<u32>> = a
            .shared
            .iter()
            .map(|s| (s.scene, s.zones.clone()))
            .collect();
        for scene in scenes.intersection(held) {
            let (was, now) = (self.zones.get(scene), zones.get(scene));
            let grew = match (was, now) {
                (Some(_), None) => true,
                (Some(was), Some(now)) => now.iter().any(|z| !was.contains(z)),
                _ => false,
            };
            if grew {
                self.commands.push(SessionCommand::Promote {
                    scene: *scene,
                    to: self.config.advertise,
                    epoch,
                    serving: peers_of(a, *scene),
                });
            }
        }
        for scene in self.zones.keys() {
            if !zones.contains_key(scene) && scenes.contains(scene) {
                self.commands.push(SessionCommand::Zones {
                    scene: *scene,
                    zoning: None,
                });
            }
        }
        for sh in &a.shared {
            if self.zones.get(&sh.scene) != Some(&sh.zones) {
                self.commands.push(SessionCommand::Zones {
                    scene: sh.scene,
                    zoning: Some(Zoning {
                        geometry: sh.geometry.clone(),
                        here: sh.zones.clone(),
                    }),
                });
            }
        }
        self.zones = zones;
    }

    /// Hands over each device the assignment moves (once per move).
    pub(super) fn move_devices(&mut self, a: &Assignment) -> Result<(), String> {
        for m in &a.moves {
            if self.moved.insert((m.device, m.epoch)) {
                let to: SocketAddr = m
                    .udp
                    .parse()
                    .map_err(|_| format!("assignment: device move to `{}`", m.udp))?;
                self.commands.push(SessionCommand::MoveDevice {
                    device: m.device,
                    pair: m.pair,
                    to,
                    epoch: m.epoch,
                });
            }
        }
        self.moved
            .retain(|(d, e)| a.moves.iter().any(|m| m.device == *d && m.epoch == *e));
        Ok(())
    }
}

/// The other pairs serving zones of `scene` (none for a scene served whole).
pub(super) fn peers_of(a: &Assignment, scene: u32) -> Vec<u32> {
    a.shared
        .iter()
        .filter(|s| s.scene == scene)
        .flat_map(|s| s.peers.iter().map(|p| p.pair))
        .collect()
}

/// A followed pair's stream, its key and the scenes shared with it.
pub(super) type Follow = (String, Option<PublicKey>, Vec<u32>);
