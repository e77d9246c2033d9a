//! Replication inside the ingest loop (a thin driver): the hub that streams this pair's events
//! to its fanout half and its standbys, and one link per primary this pair stands by for, each
//! feeding a [`Mirror`] core (which decides the mirror's life cycle and applies its events).
//!
//! Everything here runs on the ingest thread between bursts, so the hub writes each batch in
//! the order the engine produced it and a mirror is applied in the order its primary produced
//! it. Link threads only read sockets; they wake the loop through its waker.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::Waker;

use super::held::Held;
use super::mirror::Mirror;
use super::neighbours::Neighbours;
use super::stream::{Role, StreamHub, StreamLink};
use crate::control::MirrorState;
use crate::ipc_bus::BusError;
use crate::scene::{self, Batch, Engine};
use crate::security::PublicKey;
use crate::stats::PairStats;

/// How often the hub accepts subscribers and reads their heartbeats.
const SERVICE_EVERY: Duration = Duration::from_millis(2);
/// A fanout half silent this long no longer counts as alive.
pub const FANOUT_DEAD_AFTER: Duration = Duration::from_millis(250);

/// What the agent and the metrics see of replication.
#[derive(Debug)]
pub struct ReplicaStatus {
    /// A fanout half is connected and heard recently (split pairs).
    pub fanout_alive: AtomicBool,
    /// Mirror state by primary pair id.
    pub mirrors: Mutex<BTreeMap<u32, MirrorState>>,
    /// Scenes this pair adopted from a drain's handover in a stream, until a `Drop` or `Reset`
    /// takes them away: the agent tells its tracker, so an assignment that no longer gives
    /// them to this pair drops them (they moved on while it was declared dead).
    pub handed_in: Mutex<BTreeSet<u32>>,
    /// Devices whose anchor crossed into another pair's zone (device -> zone), until they are
    /// moved or cross back: the agent reports them to the controller.
    pub crossings: Mutex<BTreeMap<u32, u32>>,
    /// Signalled when a mirror changes state, so the agent can report a lost primary at once.
    pub changed: crossbeam_channel::Sender<()>,
    pub changes: crossbeam_channel::Receiver<()>,
}

impl Default for ReplicaStatus {
    fn default() -> ReplicaStatus {
        let (changed, changes) = crossbeam_channel::bounded(1);
        ReplicaStatus {
            fanout_alive: AtomicBool::new(false),
            mirrors: Mutex::new(BTreeMap::new()),
            handed_in: Mutex::new(BTreeSet::new()),
            crossings: Mutex::new(BTreeMap::new()),
            changed,
            changes,
        }
    }
}

/// A link to one primary's stream and the mirror it feeds.
struct Linked {
    link: StreamLink,
    endpoint: String,
    key: Option<PublicKey>,
    mirror: Mirror,
}

/// The replication side of one ingest loop.
pub struct Replica {
    hub: StreamHub,
    token: String,
    scene: scene::Config,
    mirrors: BTreeMap<u32, Linked>,
    status: Arc<ReplicaStatus>,
    stats: Arc<PairStats>,
    waker: Arc<Waker>,
    next_service: Instant,
    scratch: Batch,
    held: Held,
    neighbours: Neighbours,
    /// Devices another pair is handing over here, and since when: their datagrams are held
    /// until the hand-over arrives (or [`EXPECT_FOR`] passes).
    expected: BTreeMap<u32, Instant>,
}

/// How long datagrams of an expected device are held for at most, altogether.
const EXPECT_FOR: Duration = Duration::from_secs(5);

impl Replica {
    pub fn new(
        hub: StreamHub,
        token: String,
        scene: scene::Config,
        status: Arc<ReplicaStatus>,
        stats: Arc<PairStats>,
        waker: Arc<Waker>,
    ) -> Replica {
        Replica {
            hub,
            token,
            scene,
            mirrors: BTreeMap::new(),
            status,
            stats,
            waker,
            next_service: Instant::now(),
            scratch: Batch::default(),
            held: Held::default(),
            neighbours: Neighbours::default(),
            expected: BTreeMap::new(),
        }
    }

    /// A datagram the serving engine refused for an unknown device: kept if a mirror knows
    /// the device (it is arriving ahead of its scene, see `held`). True if kept.
    pub fn hold(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> bool {
        // (An expected device's datagram is checked when it is fed, under the session the
        // hand-over brings.) So is a device that wrote on a pair this one follows: it may be
        // handed over here, its redirect outrunning the hand-over on that pair's stream.
        let expected = || {
            crate::wire::Datagram::parse(bytes).is_ok_and(|d| {
                self.expected.contains_key(&d.device()) || self.neighbours.knows(d.device())
            })
        };
        if !expected() && !self.mirrors.values().any(|m| m.mirror.knows(bytes)) {
            return false;
        }
        let kept = self.held.hold(now, from, bytes);
        self.stats.held_overflow.store(self.held.overflow, Relaxed);
        kept
    }

    /// Streams `batch` to the hub's subscribers (before fanout sends anything of it).
    pub fn send(&mut self, batch: &Batch) {
        self.hub.send(batch);
    }

    /// Starts mirroring `pair` from its stream at `endpoint`, encrypted with `key` when
    /// given (a no-op if already).
    pub fn mirror(&mut self, pair: u32, endpoint: &str, key: Option<PublicKey>) {
        match self.mirrors.get(&pair) {
            Some(m) if m.mirror.retiring() => {
                self.mirrors.remove(&pair);
            }
            Some(_) => return,
            None => {}
        }
        match self.link(endpoint, key) {
            Ok(link) => {
                let m = Linked {
                    link,
                    endpoint: endpoint.to_string(),
                    key,
                    mirror: Mirror::new(self.scene.clone()),
                };
                self.mirrors.insert(pair, m);
                self.report(pair, Some(MirrorState::Connecting));
            }
            Err(e) => tracing::warn!("cannot mirror pair {pair} at {endpoint}: {e}"),
        }
    }

    fn link(&self, endpoint: &str, key: Option<PublicKey>) -> Result<StreamLink, BusError> {
        connect(&self.waker, &self.token, endpoint, key, Role::Standby)
    }

    /// Follows `pair` (it serves other zones of `scenes`) on the region bus.
    pub fn follow(
        &mut self,
        pair: u32,
        me: u32,
        endpoint: &str,
        key: Option<PublicKey>,
        scenes: Vec<u32>,
    ) {
        let (waker, token) = (&self.waker, &self.token);
        self.neighbours
            .follow(pair, me, endpoint, key, scenes, |endpoint, key, role| {
                connect(waker, token, endpoint, key, role)
                    .map_err(|e| tracing::warn!("cannot follow pair {pair} at {endpoint}: {e}"))
                    .ok()
            });
    }

    /// `device` is being handed over here: hold its datagrams until it arrives.
    pub fn expect(&mut self, device: u32, now: Instant) {
        self.expected.insert(device, now);
    }

    /// `device` was handed over to another pair: its crossing is no longer news.
    pub fn moved(&self, device: u32) {
        if let Ok(mut c) = self.status.crossings.lock() {
            c.remove(&device);
        }
    }

    /// Stops following `pair` on the region bus.
    pub fn unfollow(&mut self, pair: u32, now: Instant, engine: &mut Engine) {
        self.neighbours.unfollow(pair, now, engine);
    }

    /// Stops mirroring `pair` and forgets its state; one a scene was promoted out of first
    /// follows the stream a little longer, to catch the old primary's late writes up.
    pub fn unmirror(&mut self, pair: u32, now: Instant) {
        let Some(m) = self.mirrors.get_mut(&pair) else {
            return;
        };
        if m.mirror.retire(now) {
            self.mirrors.remove(&pair);
        }
        self.report(pair, None);
    }

    /// The pair was fenced off and its engine reset: mirrors still catching up the scenes it
    /// took over stop (those scenes are not its own any more); the others go with the
    /// tracker's unmirrors.
    /// Whether a fanout half (a subscriber on `ipc://`) is connected.
    pub fn fanout_alive(&self) -> bool {
        self.status.fanout_alive.load(Relaxed)
    }

    pub fn reset(&mut self) {
        self.mirrors.retain(|_, m| !m.mirror.retiring());
        self.forget_handed_in(None);
    }

    /// `scene` (every scene: `None`) is no longer served here: it no longer counts as adopted
    /// from a handover.
    pub fn forget_handed_in(&self, scene: Option<u32>) {
        if let Ok(mut s) = self.status.handed_in.lock() {
            match scene {
                Some(scene) => {
                    s.remove(&scene);
                }
                None => s.clear(),
            }
        }
    }

    /// Takes `scene` over from whichever mirror holds it (a failover), redirecting its
    /// devices to `to`; mirrors of the pairs still `serving` zones of it are left alone
    /// (they serve their part). Without one, nothing happens: the scene starts afresh from
    /// the sessions the assignment admits.
    #[allow(clippy::too_many_arguments)]
    pub fn promote(
        &mut self,
        engine: &mut Engine,
        scene: u32,
        to: SocketAddr,
        epoch: u64,
        serving: &[u32],
        now: Instant,
        out: &mut Batch,
    ) {
        if let Some(m) = self
            .mirrors
            .iter_mut()
            .filter(|(p, _)| !serving.contains(p))
            .map(|(_, m)| m)
            .find(|m| m.mirror.holds(scene))
        {
            m.mirror.promote(engine, scene, now, to, epoch, out);
        }
    }

    /// Applies what the links brought and services the hub. Events this pair must act on
    /// (datagrams forwarded by a draining pair, adopted sessions and redirects) go to `out`.
    pub fn service(&mut self, now: Instant, engine: &mut Engine, out: &mut Batch) {
        self.neighbours.service(now, engine, out, &self.stats);
        self.expected.retain(|d, at| {
            engine.device(*d).is_none() && now.saturating_duration_since(*at) < EXPECT_FOR
        });
        let crossings = engine.take_crossings();
        if !crossings.is_empty() {
            if let Ok(mut c) = self.status.crossings.lock() {
                for (device, zone) in crossings {
                    match zone {
                        Some(z) => c.insert(device, z),
                        None => c.remove(&device),
                    };
                }
            }
            let _ = self.status.changed.try_send(());
        }
        let mut changed = Vec::new();
        let mut done = Vec::new();
        for (pair, m) in self.mirrors.iter_mut() {
            while let Some(ev) = m.link.try_next() {
                let step = m.mirror.handle_link(now, ev, engine, out);
                if !step.adopted.is_empty() {
                    if let Ok(mut s) = self.status.handed_in.lock() {
                        s.extend(&step.adopted);
                    }
                }
                if step.caught_up > 0 {
                    self.stats
                        .mirror_caught_up
                        .fetch_add(step.caught_up, Relaxed);
                }
                if m.mirror.retiring() {
                    if step.ended {
                        done.push(*pair);
                        break;
                    }
                    continue;
                }
                if step.malformed {
                    self.stats.mirror_malformed.fetch_add(1, Relaxed);
                }
                if step.diverged > 0 {
                    self.stats.mirror_diverged.fetch_add(step.diverged, Relaxed);
                }
                if let Some(state) = step.changed {
                    changed.push((*pair, state));
                }
            }
            if m.mirror.retired(now) {
                done.push(*pair);
            }
        }
        for pair in done {
            self.mirrors.remove(&pair);
        }
        let released = self.held.release(now, engine, out);
        if released.fed + released.expired > 0 {
            self.stats.held_fed.fetch_add(released.fed, Relaxed);
            self.stats.held_expired.fetch_add(released.expired, Relaxed);
        }
        let redial: Vec<u32> = self
            .mirrors
            .iter_mut()
            .filter(|(_, m)| !m.mirror.retiring())
            .filter_map(|(p, m)| m.mirror.poll_redial().then_some(*p))
            .collect();
        for pair in redial {
            // The state is suspect: dial again, the checkpoint that follows replaces it.
            let (endpoint, key) = (
                self.mirrors[&pair].endpoint.clone(),
                self.mirrors[&pair].key,
            );
            if let (Ok(link), Some(m)) = (self.link(&endpoint, key), self.mirrors.get_mut(&pair)) {
                m.link = link;
                changed.push((pair, m.mirror.state()));
            }
        }
        if !changed.is_empty() {
            let synced = self
                .mirrors
                .values()
                .filter(|m| !m.mirror.retiring() && m.mirror.state() == MirrorState::Synced);
            self.stats
                .mirrors_synced
                .store(synced.count() as u64, Relaxed);
        }
        for (pair, state) in changed {
            self.report(pair, Some(state));
        }
        if now < self.next_service {
            return;
        }
        self.next_service = now + SERVICE_EVERY;
        let hub = &mut self.hub;
        if hub.service(now) {
            self.scratch.clear();
            engine.checkpoint(&mut self.scratch);
            hub.send_checkpoint(&self.scratch);
        }
        let live = hub.has_live(Role::Fanout, now, FANOUT_DEAD_AFTER);
        self.status.fanout_alive.store(live, Relaxed);
        // An ingest-only pair sends nothing itself: its fanout half's totals are the pair's.
        if let Some(t) = hub.fanout_totals() {
            self.stats.fanout_datagrams.store(t.datagrams, Relaxed);
            self.stats.fanout_updates.store(t.updates, Relaxed);
            self.stats.fanout_bytes.store(t.bytes, Relaxed);
        }
        let c = hub.counters();
        self.stats.bus_subscribers.store(c.peers, Relaxed);
        self.stats.bus_refused.store(c.refused, Relaxed);
        self.stats.bus_overflows.store(c.overflows, Relaxed);
    }

    fn report(&self, pair: u32, state: Option<MirrorState>) {
        if let Ok(mut m) = self.status.mirrors.lock() {
            match state {
                Some(s) => m.insert(pair, s),
                None => m.remove(&pair),
            };
        }
        let _ = self.status.changed.try_send(());
    }
}

/// A link to the stream at `endpoint` as `role`, waking the ingest loop on each event.
fn connect(
    waker: &Arc<Waker>,
    token: &str,
    endpoint: &str,
    key: Option<PublicKey>,
    role: Role,
) -> Result<StreamLink, BusError> {
    let waker = waker.clone();
    let wake: Box<dyn Fn() + Send> = Box::new(move || {
        let _ = waker.wake();
    });
    StreamLink::connect(endpoint, role, token, key, Some(wake))
}
