//! What the controller writes down and replays: after each request (or tick) `commit` yields
//! the [`Entry`]s that changed (a row of a table, or the counters in [`Meta`]); `apply` replays
//! them, on a restart from the log or on a passive following the active; an [`Image`] is the
//! whole durable state at once (a snapshot, a passive's first sync, a disaster-recovery file).
//! Soft state (heartbeat times, loads, mirror reports) is not durable: a [`LiveView`] carries
//! it to passives so their `cluster.status` and a take-over start from what the active knew.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Controller, DeviceRec, Liveness, PairLive, PairRec, SceneRec, Table};
use crate::control::protocol::{Load, MirrorState};
use crate::control::random::Random;
use crate::control::Config;

/// The controller's counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// The leadership term these records were last written under (fencing: see
    /// `Controller::take_over`).
    pub term: u64,
    pub epoch: u64,
    pub next_pair: u32,
    pub next_scene: u32,
    pub next_device: u32,
}

/// One durable change. Opaque outside the state machine: written, read and applied whole.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry(Row);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Row {
    Meta(Meta),
    Pair { id: u32, rec: Option<PairRec> },
    Scene { id: u32, rec: Option<SceneRec> },
    Device { id: u32, rec: Option<DeviceRec> },
}

/// The whole durable state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Image {
    meta: Meta,
    pairs: BTreeMap<u32, PairRec>,
    scenes: BTreeMap<u32, SceneRec>,
    devices: BTreeMap<u32, DeviceRec>,
}

impl Image {
    /// The term the image was written under.
    pub fn term(&self) -> u64 {
        self.meta.term
    }

    /// Counts for a log line: (pairs, scenes, devices).
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.pairs.len(), self.scenes.len(), self.devices.len())
    }
}

/// The soft state of every pair, as the active sees it now.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveView(BTreeMap<u32, LivePair>);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct LivePair {
    /// Milliseconds since its last heartbeat.
    age_ms: u64,
    load: Load,
    standby_state: Option<MirrorState>,
}

impl Controller {
    /// A controller resuming from `image` (a snapshot with the log replayed over it).
    pub fn from_image(config: Config, random: Box<dyn Random>, image: Image) -> Controller {
        let mut c = Controller::with_random(config, random);
        c.restore(image);
        c
    }

    /// Replaces the durable state with `image` (a passive's full sync); soft state about
    /// pairs the image no longer has is dropped.
    pub fn restore(&mut self, image: Image) {
        self.meta = image.meta.clone();
        self.committed = image.meta;
        self.pairs = Table::from_rows(image.pairs);
        self.scenes = Table::from_rows(image.scenes);
        self.devices = Table::from_rows(image.devices);
        let pairs = &self.pairs;
        self.live.retain(|id, _| pairs.contains_key(id));
    }

    /// The whole durable state.
    pub fn image(&self) -> Image {
        Image {
            meta: self.meta.clone(),
            pairs: self.pairs.rows().clone(),
            scenes: self.scenes.rows().clone(),
            devices: self.devices.rows().clone(),
        }
    }

    /// The durable changes since the last commit, in an order `apply` replays exactly.
    pub fn commit(&mut self) -> Vec<Entry> {
        let mut out = Vec::new();
        if self.meta != self.committed {
            self.committed = self.meta.clone();
            out.push(Entry(Row::Meta(self.meta.clone())));
        }
        out.extend(
            (self.pairs.changes().into_iter()).map(|(id, rec)| Entry(Row::Pair { id, rec })),
        );
        out.extend(
            (self.scenes.changes().into_iter()).map(|(id, rec)| Entry(Row::Scene { id, rec })),
        );
        out.extend(
            (self.devices.changes().into_iter()).map(|(id, rec)| Entry(Row::Device { id, rec })),
        );
        out
    }

    /// Replays entries another controller (or an earlier life of this one) committed.
    pub fn apply(&mut self, entries: &[Entry]) {
        for Entry(row) in entries {
            match row.clone() {
                Row::Meta(m) => {
                    self.meta = m.clone();
                    self.committed = m;
                }
                Row::Pair { id, rec } => {
                    if rec.is_none() {
                        self.live.remove(&id);
                    }
                    self.pairs.put(id, rec);
                }
                Row::Scene { id, rec } => self.scenes.put(id, rec),
                Row::Device { id, rec } => self.devices.put(id, rec),
            }
        }
    }

    /// The leadership term of the records.
    pub fn term(&self) -> u64 {
        self.meta.term
    }

    /// Becomes the deciding controller under `term` at `now`: the term is recorded (the next
    /// commit logs it, so replicas and pairs see it), and every pair not heard from since gets
    /// a full heartbeat window from now, so a hand-over or restart declares no one dead.
    /// A term not above the records' own is refused: an old leader must not write again.
    pub fn take_over(&mut self, now: Instant, term: u64) -> bool {
        if term <= self.meta.term && self.meta.term > 0 {
            return false;
        }
        self.meta.term = term;
        self.since = now;
        self.last_tick = None;
        for live in self.live.values_mut() {
            live.liveness.unheard();
        }
        true
    }

    /// The pairs' soft state for passives.
    pub fn live_view(&self, now: Instant) -> LiveView {
        LiveView(
            self.pairs
                .keys()
                .map(|id| {
                    let live = self.live.get(id).cloned().unwrap_or_default();
                    let pair = LivePair {
                        age_ms: self.heartbeat_age(now, *id).as_millis() as u64,
                        load: live.load,
                        standby_state: live.standby_state,
                    };
                    (*id, pair)
                })
                .collect(),
        )
    }

    /// Takes the active's view of the pairs' soft state (on a passive).
    pub fn apply_live(&mut self, now: Instant, view: &LiveView) {
        self.live = view
            .0
            .iter()
            .map(|(id, l)| {
                let mut liveness = Liveness::default();
                liveness.last_heartbeat = now.checked_sub(Duration::from_millis(l.age_ms));
                let live = PairLive {
                    liveness,
                    load: l.load.clone(),
                    standby_state: l.standby_state,
                    // Moves in their grace are not carried over (see `moves.rs`).
                    moves: Vec::new(),
                };
                (*id, live)
            })
            .collect();
    }
}
