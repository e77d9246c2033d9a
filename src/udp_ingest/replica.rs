//! Replication inside the ingest loop: the hub that streams this pair's events to its fanout
//! half and its standbys, and the links through which this pair mirrors the pairs it stands
//! by for (one mirror engine each), adopting their scenes on a failover or a handover.
//!
//! Everything here runs on the ingest thread between bursts, so the hub writes each batch in
//! the order the engine produced it and a mirror is applied in the order its primary produced
//! it. Link threads only read sockets; they wake the loop through its waker.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::Waker;

use crate::ipc_bus::stream::{LinkEvent, Role, StreamHub, StreamLink};
use crate::scene::{self, Engine};
use crate::scene::{Batch, EventKind};
use crate::security::PublicKey;
use crate::stats::PairStats;
use crate::wire::{parse_exact, RedirectBody};

/// How often the hub accepts subscribers and reads their heartbeats.
const SERVICE_EVERY: Duration = Duration::from_millis(2);
/// A fanout half silent this long no longer counts as alive.
pub const FANOUT_DEAD_AFTER: Duration = Duration::from_millis(250);

/// Where a mirror stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MirrorState {
    /// Dialing the primary (or re-dialing after it said bye).
    Connecting,
    /// Connected; the checkpoint has not arrived whole yet.
    Syncing,
    /// Holds the primary's state and follows it event by event.
    Synced,
    /// The stream broke without a bye: the primary died or the network failed. The mirror
    /// keeps what it had (it may be adopted) and the link keeps re-dialing.
    Lost,
}

impl MirrorState {
    pub fn name(self) -> &'static str {
        match self {
            MirrorState::Connecting => "connecting",
            MirrorState::Syncing => "syncing",
            MirrorState::Synced => "synced",
            MirrorState::Lost => "lost",
        }
    }
}

/// What the agent and the metrics see of replication.
#[derive(Debug)]
pub struct ReplicaStatus {
    /// A fanout half is connected and heard recently (split pairs).
    pub fanout_alive: AtomicBool,
    /// Mirror state by primary pair id.
    pub mirrors: Mutex<BTreeMap<u32, MirrorState>>,
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
            changed,
            changes,
        }
    }
}

struct Mirror {
    link: StreamLink,
    endpoint: String,
    key: Option<PublicKey>,
    engine: Engine,
    state: MirrorState,
    /// An event did not fit the mirror: dial again for a fresh checkpoint.
    diverged: bool,
}

/// The replication side of one ingest loop.
pub struct Replica {
    hub: StreamHub,
    token: String,
    scene: scene::Config,
    mirrors: BTreeMap<u32, Mirror>,
    status: Arc<ReplicaStatus>,
    stats: Arc<PairStats>,
    waker: Arc<Waker>,
    next_service: Instant,
    scratch: Batch,
}

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
        }
    }

    /// Streams `batch` to the hub's subscribers (before fanout sends anything of it).
    pub fn send(&mut self, batch: &Batch) {
        self.hub.send(batch);
    }

    /// Starts mirroring `pair` from its stream at `endpoint`, encrypted with `key` when
    /// given (a no-op if already).
    pub fn mirror(&mut self, pair: u32, endpoint: &str, key: Option<PublicKey>) {
        if self.mirrors.contains_key(&pair) {
            return;
        }
        match self.link(endpoint, key) {
            Ok(link) => {
                let m = Mirror {
                    link,
                    endpoint: endpoint.to_string(),
                    key,
                    engine: Engine::new(self.scene.clone()),
                    state: MirrorState::Connecting,
                    diverged: false,
                };
                self.mirrors.insert(pair, m);
                self.report(pair, Some(MirrorState::Connecting));
            }
            Err(e) => eprintln!("zonecast pair: cannot mirror pair {pair} at {endpoint}: {e}"),
        }
    }

    fn link(
        &self,
        endpoint: &str,
        key: Option<PublicKey>,
    ) -> Result<StreamLink, crate::ipc_bus::BusError> {
        let waker = self.waker.clone();
        let wake: Box<dyn Fn() + Send> = Box::new(move || {
            let _ = waker.wake();
        });
        StreamLink::connect(endpoint, Role::Standby, &self.token, key, Some(wake))
    }

    /// Stops mirroring `pair` and forgets its state.
    pub fn unmirror(&mut self, pair: u32) {
        if self.mirrors.remove(&pair).is_some() {
            self.report(pair, None);
        }
    }

    /// Takes `scene` over from whichever mirror holds it (a failover), redirecting its
    /// devices to `to`. Without one, nothing happens: the scene starts afresh from the
    /// sessions the assignment admits.
    pub fn promote(
        &mut self,
        engine: &mut Engine,
        scene: u32,
        to: SocketAddr,
        epoch: u64,
        now: Instant,
        out: &mut Batch,
    ) {
        let holder = self.mirrors.values_mut().find(|m| m.engine.holds(scene));
        if let Some(m) = holder {
            engine.adopt(&mut m.engine, scene, now, Some((to, epoch)), out);
        }
    }

    /// Applies what the links brought and services the hub. Events this pair must act on
    /// (datagrams forwarded by a draining pair, adopted sessions and redirects) go to `out`.
    pub fn service(&mut self, now: Instant, engine: &mut Engine, out: &mut Batch) {
        let mut changed = Vec::new();
        for (pair, m) in self.mirrors.iter_mut() {
            while let Some(ev) = m.link.try_next() {
                let before = m.state;
                match ev {
                    LinkEvent::Up => m.state = MirrorState::Syncing,
                    LinkEvent::Bye => m.state = MirrorState::Connecting,
                    // Only a mirror that was in sync holds what the primary had at its end.
                    LinkEvent::Lost if m.state == MirrorState::Synced => {
                        m.state = MirrorState::Lost
                    }
                    LinkEvent::Lost => m.state = MirrorState::Connecting,
                    LinkEvent::Malformed => {
                        self.stats.mirror_malformed.fetch_add(1, Relaxed);
                        m.state = MirrorState::Connecting;
                    }
                    LinkEvent::Batch(b) => {
                        for (e, data) in b.iter() {
                            match e.kind {
                                EventKind::Forwarded => {
                                    if let Some(from) = e.addr {
                                        let _ = engine.handle(now, from, data, out);
                                    }
                                }
                                EventKind::Handover => {
                                    if let Ok(r) = parse_exact::<RedirectBody>(data) {
                                        let redirect =
                                            r.endpoint().ok().map(|to| (to, r.epoch.get()));
                                        engine.adopt(&mut m.engine, e.scene, now, redirect, out);
                                    }
                                }
                                EventKind::Synced => m.state = MirrorState::Synced,
                                _ => {
                                    if !m.engine.mirror(now, e, data) {
                                        self.stats.mirror_diverged.fetch_add(1, Relaxed);
                                        m.diverged = true;
                                    }
                                }
                            }
                        }
                    }
                }
                if m.state != before {
                    changed.push((*pair, m.state));
                }
            }
        }
        let diverged: Vec<u32> = self
            .mirrors
            .iter()
            .filter(|(_, m)| m.diverged)
            .map(|(p, _)| *p)
            .collect();
        for pair in diverged {
            // The state is suspect: dial again, the checkpoint that follows replaces it.
            let (endpoint, key) = (
                self.mirrors[&pair].endpoint.clone(),
                self.mirrors[&pair].key,
            );
            if let (Ok(link), Some(m)) = (self.link(&endpoint, key), self.mirrors.get_mut(&pair)) {
                m.link = link;
                m.diverged = false;
                m.state = MirrorState::Connecting;
                changed.push((pair, m.state));
            }
        }
        if !changed.is_empty() {
            let synced = self
                .mirrors
                .values()
                .filter(|m| m.state == MirrorState::Synced);
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
