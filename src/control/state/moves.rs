//! Devices crossing zone borders: a pair reports a device whose anchor went into a zone
//! another pair serves; the device's home moves there (its zone, durable), the old pair is told
//! to hand it over (`moves`: in its stream, to the new pair, which follows that stream) and
//! keeps the session for [`MOVE_GRACE`] to forward stragglers, and the new pair is told the
//! device is `arriving`: it takes the session from the hand-over, not from its assignment.
//!
//! The grace is soft state (like heartbeats): a controller failover during it ends it early,
//! so stragglers after that are dropped (the device resends nothing; what it sent after its
//! redirect goes to the new pair directly).

use std::time::{Duration, Instant};

use super::Controller;
use crate::control::protocol::{Crossing, DeviceMove};

/// How long a pair forwards a moved device's stragglers.
pub const MOVE_GRACE: Duration = Duration::from_secs(2);

/// One device a pair hands over.
#[derive(Clone, Debug)]
pub(super) struct Move {
    device: u32,
    to: u32,
    epoch: u64,
    at: Instant,
}

impl Controller {
    /// Applies what `pair` reports of its devices' crossings: each device still homed there
    /// whose new zone a live other pair serves moves to it. Anything else (a device that
    /// moved already, an unknown zone, a dead target) changes nothing.
    pub(super) fn cross(&mut self, now: Instant, pair: u32, crossings: &[Crossing]) {
        for c in crossings {
            let Some(d) = self.devices.get(&c.device) else {
                continue;
            };
            if self.home_of(d) != Some(pair) {
                continue;
            }
            let Some(s) = self.scenes.get(&d.scene) else {
                continue;
            };
            if !s.geometry.zones().contains(&c.zone) {
                continue;
            }
            let Some(to) = s
                .zone_pair(c.zone)
                .filter(|to| *to != pair && self.is_alive(*to))
            else {
                continue;
            };
            if let Some(d) = self.devices.get_mut(&c.device) {
                d.zone = Some(c.zone);
            }
            self.bump(Some(to));
            self.bump(Some(pair));
            let epoch = self.meta.epoch;
            let live = self.live(pair);
            live.moves.retain(|m| m.device != c.device);
            live.moves.push(Move {
                device: c.device,
                to,
                epoch,
                at: now,
            });
        }
    }

    /// Ends the graces that are over: the old pair drops the session, the new one takes it
    /// from its assignment if the hand-over never came.
    pub(super) fn expire_moves(&mut self, now: Instant) {
        let mut ended = Vec::new();
        for (pair, l) in self.live.iter_mut() {
            l.moves.retain(|m| {
                let over = now.saturating_duration_since(m.at) >= MOVE_GRACE;
                if over {
                    ended.push((*pair, m.to));
                }
                !over
            });
        }
        for (from, to) in ended {
            self.bump(Some(to));
            self.bump(Some(from));
        }
    }

    /// The devices `pair` hands over now.
    pub(super) fn moves_of(&self, pair: u32) -> Vec<DeviceMove> {
        let Some(l) = self.live.get(&pair) else {
            return Vec::new();
        };
        // A move whose target failed, or whose device is homed elsewhere again, is over.
        l.moves
            .iter()
            .filter(|m| self.is_alive(m.to) && self.home(m.device) == Some(m.to))
            .filter_map(|m| {
                Some(DeviceMove {
                    device: m.device,
                    pair: m.to,
                    udp: self.pairs.get(&m.to)?.udp.to_string(),
                    epoch: m.epoch,
                })
            })
            .collect()
    }

    /// The pairs `pair` hands devices to now.
    pub(super) fn move_targets(&self, pair: u32) -> Vec<u32> {
        self.live
            .get(&pair)
            .map(|l| l.moves.iter().map(|m| m.to).collect())
            .unwrap_or_default()
    }

    /// Devices live pairs are handing over to `pair`.
    pub(super) fn arriving_at(&self, pair: u32) -> Vec<u32> {
        self.live
            .iter()
            .filter(|(from, _)| self.is_alive(**from))
            .flat_map(|(_, l)| l.moves.iter())
            .filter(|m| m.to == pair && self.home(m.device) == Some(pair))
            .map(|m| m.device)
            .collect()
    }

    /// Whether `pair` still forwards for `device`.
    pub(super) fn moving_from(&self, pair: u32, device: u32) -> bool {
        self.moves_of(pair).iter().any(|m| m.device == device)
    }
}
