//! A simulated pair process: the real assignment tracker, scene engine and mirror cores; the
//! hub's subscribers with the real peer core's checkpoint gating; what the agent thread, the
//! ingest loop and fanout do around them, without sockets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use zonecast::control::client::RequestError;
use zonecast::replication::assignment::{Answer, Call, Local, Tracker, TrackerConfig};
use zonecast::replication::held::Held;
use zonecast::replication::mirror::{Mirror, CATCH_UP};
use zonecast::replication::peer::{HubPeer, Role};
use zonecast::replication::SessionCommand;
use zonecast::scene::{self, Batch, Engine};

/// How long the agent waits for one answer (its control client's timeout).
pub const CALL_TIMEOUT: Duration = Duration::from_millis(100);
/// How often a link re-dials after it ended.
pub const REDIAL: Duration = Duration::from_millis(20);
/// How often ingest ticks the engine.
pub const ENGINE_TICK: Duration = Duration::from_millis(20);

/// A standby's link to one primary's stream.
pub struct Linked {
    pub mirror: Mirror,
    /// The stream endpoint the assignment named.
    pub bus: String,
    /// The link id in use, while connected; the next dial time otherwise.
    pub link: Option<u64>,
    pub redial_at: u64,
    /// Synced, and no partition has eaten stream data since: it holds everything the primary
    /// streamed on this link.
    pub clean: bool,
    /// Scenes promoted out of it (checked when it is dropped, after its catch-up).
    pub promoted: Vec<u32>,
    /// Retiring (dropped by the assignment after a promotion) until this time.
    pub retire_at: Option<u64>,
}

/// What applying a command did that the invariants care about.
pub enum Applied {
    Nothing,
    /// A scene taken over from a mirror.
    Promoted,
    /// A mirror dropped now, with the scenes once promoted out of it.
    Dropped {
        primary: u32,
        promoted: Vec<u32>,
    },
    /// A neighbour link no longer wanted (its subscriber goes).
    Unlinked(Option<u64>),
}

/// One subscriber of a pair's hub.
pub struct Sub {
    pub standby: usize,
    pub link: u64,
    pub core: HubPeer,
    /// A standby, or a neighbour (it gets only what `Role::gets` lets through).
    pub role: Role,
}

/// A link to the stream of a pair serving other zones of a shared scene (the region bus).
pub struct Neighbour {
    pub bus: String,
    pub me: u32,
    pub scenes: Vec<u32>,
    pub link: Option<u64>,
    pub redial_at: u64,
}

pub struct Pair {
    /// The region's pair slot this process runs in (a restart keeps the slot).
    pub slot: usize,
    pub addr: SocketAddr,
    pub bus: String,
    pub alive: bool,
    /// Frozen (SIGSTOP) until this time: nothing runs, deliveries wait.
    pub frozen_until: u64,
    pub tracker: Tracker,
    pub engine: Engine,
    pub mirrors: BTreeMap<u32, Linked>,
    pub subs: Vec<Sub>,
    /// The call in flight: (call id, call, give-up time).
    pub call: Option<(u64, Call, u64)>,
    pub next_tick: u64,
    /// The controller's pair id, as the tracker knows it.
    pub id: Option<u32>,
    /// How it died: crashed (state gone) rather than cut off or frozen.
    pub crashed_at: Option<u64>,
    /// Scene rules, with the run's fixed hash seed (so engines iterate the same every run).
    pub scene: scene::Config,
    /// Datagrams of devices ahead of their scene (as ingest holds them).
    pub held: Held,
    /// Scenes adopted from a drain's handover in a stream (as `ReplicaStatus::handed_in`).
    pub handed_in: BTreeSet<u32>,
    /// Pairs followed on the region bus, by controller id.
    pub neighbours: BTreeMap<u32, Neighbour>,
    /// Crossings not yet moved (as `ReplicaStatus::crossings`).
    pub crossings: BTreeMap<u32, u32>,
    /// Devices being handed over here (their datagrams are held).
    pub expected: BTreeSet<u32>,
}

impl Pair {
    pub fn new(slot: usize, config: TrackerConfig, scene: scene::Config, base: Instant) -> Pair {
        let addr = config.advertise;
        let bus = config.bus.clone().unwrap_or_default();
        Pair {
            slot,
            addr,
            bus,
            alive: true,
            frozen_until: 0,
            tracker: Tracker::new(config, base),
            engine: Engine::new(scene.clone()),
            mirrors: BTreeMap::new(),
            subs: Vec::new(),
            call: None,
            next_tick: 0,
            id: None,
            crashed_at: None,
            scene,
            held: Held::default(),
            handed_in: BTreeSet::new(),
            neighbours: BTreeMap::new(),
            crossings: BTreeMap::new(),
            expected: BTreeSet::new(),
        }
    }

    /// What the agent reads before a call.
    pub fn local(&self) -> Local {
        Local {
            load: Default::default(),
            mirrors: self
                .mirrors
                .iter()
                .map(|(p, m)| (*p, m.mirror.state()))
                .collect(),
            fanout_alive: false,
            served: self.handed_in.iter().copied().collect(),
            crossings: self.crossings.clone(),
        }
    }

    /// Applies one session command the way ingest does; engine output goes to `out`.
    pub fn apply(
        &mut self,
        now: Instant,
        now_us: u64,
        cmd: SessionCommand,
        out: &mut Batch,
    ) -> Applied {
        match cmd {
            SessionCommand::Admit { device, scene, key } => {
                self.engine.admit(now, device, scene, key, out)
            }
            SessionCommand::Revoke { device } => self.engine.revoke(device, out),
            SessionCommand::Drop { scene } => {
                self.engine.drop_scene(scene, out);
                self.handed_in.remove(&scene);
            }
            SessionCommand::Reset => {
                self.handed_in.clear();
                self.engine.reset(out);
                self.mirrors.retain(|_, m| m.retire_at.is_none());
            }
            SessionCommand::Handover { scene, to, epoch } => {
                self.engine.handover(scene, to, epoch, out)
            }
            SessionCommand::Mirror { pair, endpoint, .. } => {
                if self
                    .mirrors
                    .get(&pair)
                    .is_some_and(|m| m.retire_at.is_some())
                {
                    self.mirrors.remove(&pair);
                }
                self.mirrors.entry(pair).or_insert(Linked {
                    mirror: Mirror::new(self.scene.clone()),
                    bus: endpoint,
                    link: None,
                    redial_at: 0,
                    clean: false,
                    promoted: Vec::new(),
                    retire_at: None,
                });
            }
            SessionCommand::Unmirror { pair } => {
                let Some(m) = self.mirrors.get_mut(&pair) else {
                    return Applied::Nothing;
                };
                if !m.mirror.retire(now) {
                    m.retire_at
                        .get_or_insert(now_us + CATCH_UP.as_micros() as u64);
                    return Applied::Nothing;
                }
                return self.drop_mirror(pair);
            }
            SessionCommand::Follow {
                pair,
                me,
                endpoint,
                scenes,
                ..
            } => {
                let same = self
                    .neighbours
                    .get(&pair)
                    .is_some_and(|n| n.bus == endpoint);
                if same {
                    let n = self.neighbours.get_mut(&pair).unwrap();
                    n.scenes = scenes;
                    n.me = me;
                } else {
                    let n = Neighbour {
                        bus: endpoint,
                        me,
                        scenes,
                        link: None,
                        redial_at: 0,
                    };
                    if let Some(old) = self.neighbours.insert(pair, n) {
                        return Applied::Unlinked(old.link);
                    }
                }
            }
            SessionCommand::Unfollow { pair, adopt } => {
                let link = self.neighbours.remove(&pair).map(|n| {
                    self.engine.proxy_unfollow(now, pair);
                    n.link
                });
                if adopt {
                    self.engine.proxy_adopt(pair, out);
                }
                if let Some(link) = link {
                    return Applied::Unlinked(link);
                }
            }
            SessionCommand::Zones { scene, zoning } => self.engine.set_zoning(scene, zoning),
            SessionCommand::MoveDevice {
                device,
                pair,
                to,
                epoch,
            } => {
                self.engine.move_device(device, pair, to, epoch, out);
                self.crossings.remove(&device);
            }
            SessionCommand::Expect { device } => {
                self.expected.insert(device);
            }
            SessionCommand::Promote {
                scene,
                to,
                epoch,
                serving,
            } => {
                for m in self
                    .mirrors
                    .iter_mut()
                    .filter(|(p, _)| !serving.contains(p))
                    .map(|(_, m)| m)
                {
                    if m.mirror
                        .promote(&mut self.engine, scene, now, to, epoch, out)
                    {
                        m.promoted.push(scene);
                        return Applied::Promoted;
                    }
                }
            }
        }
        Applied::Nothing
    }

    /// Forgets the mirror of `primary`.
    pub fn drop_mirror(&mut self, primary: u32) -> Applied {
        match self.mirrors.remove(&primary) {
            Some(m) => Applied::Dropped {
                primary,
                promoted: m.promoted,
            },
            None => Applied::Nothing,
        }
    }

    /// A datagram, as ingest handles it: one from a device the engine does not know but a
    /// mirror does is held until its scene arrives.
    pub fn receive(&mut self, now: Instant, from: SocketAddr, bytes: &[u8], out: &mut Batch) {
        let r = self.engine.handle(now, from, bytes, out);
        let expected = || {
            zonecast::wire::Datagram::parse(bytes)
                .is_ok_and(|d| self.expected.contains(&d.device()))
        };
        if r == Err(zonecast::scene::DropReason::UnknownDevice)
            && (expected() || self.mirrors.values().any(|m| m.mirror.knows(bytes)))
        {
            self.held.hold(now, from, bytes);
        }
        self.note_crossings();
    }

    /// Takes the engine's crossings into what the agent reports.
    pub fn note_crossings(&mut self) {
        for (device, zone) in self.engine.take_crossings() {
            match zone {
                Some(z) => self.crossings.insert(device, z),
                None => self.crossings.remove(&device),
            };
        }
        let engine = &self.engine;
        self.expected.retain(|d| engine.device(*d).is_none());
    }

    /// Feeds the held datagrams whose devices the engine knows now.
    pub fn release(&mut self, now: Instant, out: &mut Batch) {
        self.held.release(now, &mut self.engine, out);
    }

    /// The answer for the call in flight, if `call` is it.
    pub fn take_call(&mut self, call: u64) -> Option<Call> {
        match &self.call {
            Some((id, _, _)) if *id == call => self.call.take().map(|(_, c, _)| c),
            _ => None,
        }
    }

    /// Feeds the tracker an answer (or a timeout) and returns its commands.
    pub fn answer(
        &mut self,
        now: Instant,
        answer: Result<Answer, RequestError>,
    ) -> Vec<SessionCommand> {
        let local = self.local();
        self.tracker.handle_answer(now, answer, &local);
        self.id = self.tracker.pair();
        let _ = self.tracker.take_notes();
        self.tracker.take_commands()
    }

    /// The scenes its tracker says it serves.
    pub fn scenes(&self) -> BTreeSet<u32> {
        self.tracker.scenes().clone()
    }
}
