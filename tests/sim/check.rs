//! The invariants the simulation checks, and the bookkeeping they need. Each is a promise the
//! product makes (docs/PROTOCOL.md, "Pair life cycle"):
//!
//! 1. **Fencing.** At most one pair takes a scene under a given epoch; a pair told by the
//!    controller that a scene is no longer its own stops serving it (after a heartbeat answer,
//!    its scenes are a subset of what the controller assigned it when it answered), and a pair
//!    told it is stale keeps no scene and no session.
//! 2. **No accepted state lost.** When a standby takes a scene over from a mirror whose stream
//!    was intact (its primary crashed, or handed the scene over), every update any device saw
//!    from that primary is in the new pair's state.
//! 3. **Bounded re-homing.** After a pair crashes, with no other fault for the bound, every
//!    device homed there is joined at the scene's new pair within [`REHOME_BOUND`].
//! 4. **Settling.** Without faults, assignments stop changing, every device is joined at its
//!    scene's serving pair, and every device hears every other device of its scene: all of
//!    them for a device that receives everything, and for one with an interest area (every
//!    odd device: a sphere the objects walk in and out of) each whose object its area held at
//!    that object's last update and ten updates before. The relay model delivers `Deliver`
//!    lists like fanout, so a standby that took a scene over without rebuilding who sees what
//!    fails here.
//!
//! Failure detection's invariants (5, no false failover; 6, fast confirmation) are in
//! detect.rs, with the probes they depend on.

use std::collections::BTreeMap;
use std::time::Duration;

/// How long devices of a crashed pair may take to be joined elsewhere: the death window
/// (250 ms), a locate after 100 ms of silence, retries, with room for lost messages.
pub const REHOME_BOUND: Duration = Duration::from_millis(1500);

#[derive(Default)]
pub struct Books {
    /// (scene, epoch) -> the pair incarnation that took the scene under it.
    pub claims: BTreeMap<(u32, u64), usize>,
    /// Per pair incarnation: (scene, object) -> the newest seq a device saw relayed by it.
    pub seen_from: BTreeMap<usize, BTreeMap<(u32, u64), u64>>,
    pub promotions: u64,
    pub handovers: u64,
    pub crashes: u64,
    pub rehome_checks: u64,
}

impl Books {
    /// `pair` took `scene` under `epoch`: no other pair may have.
    pub fn claim(&mut self, scene: u32, epoch: u64, pair: usize) -> Result<(), String> {
        match self.claims.insert((scene, epoch), pair) {
            Some(other) if other != pair => Err(format!(
                "fencing: pairs #{other} and #{pair} both took scene {scene} under epoch {epoch}"
            )),
            _ => Ok(()),
        }
    }

    /// `pair` starts serving `scene` (again): what devices saw from it in an earlier tenure
    /// no longer counts (the scene may have been started afresh in between, which the design
    /// allows when no standby was in sync).
    pub fn tenure(&mut self, pair: usize, scene: u32) {
        if let Some(m) = self.seen_from.get_mut(&pair) {
            m.retain(|(s, _), _| *s != scene);
        }
    }

    /// A device saw `seq` of `object` of `scene` relayed by pair incarnation `pair`.
    pub fn saw(&mut self, pair: usize, scene: u32, object: u64, seq: u64) {
        let e = self
            .seen_from
            .entry(pair)
            .or_default()
            .entry((scene, object))
            .or_default();
        *e = (*e).max(seq);
    }

    /// What devices saw of `scene` from `pair`: (object, newest seq).
    pub fn seen(&self, pair: usize, scene: u32) -> Vec<(u64, u64)> {
        self.seen_from
            .get(&pair)
            .map(|m| {
                m.iter()
                    .filter(|((s, _), _)| *s == scene)
                    .map(|((_, o), seq)| (*o, *seq))
                    .collect()
            })
            .unwrap_or_default()
    }
}
