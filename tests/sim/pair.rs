//! A simulated pair process: the real assignment tracker, scene engine and mirror cores; the
//! hub's subscribers with the real peer core's checkpoint gating; what the agent thread, the
//! ingest loop and fanout do around them, without sockets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use zonecast::control::client::RequestError;
use zonecast::replication::assignment::{Answer, Call, Local, Tracker, TrackerConfig};
use zonecast::replication::mirror::Mirror;
use zonecast::replication::peer::HubPeer;
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
}

/// One subscriber of a pair's hub.
pub struct Sub {
    pub standby: usize,
    pub link: u64,
    pub core: HubPeer,
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
}

impl Pair {
    pub fn new(
        slot: usize,
        config: TrackerConfig,
        scene: scene::Config,
        base: Instant,
    ) -> Pair {
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
        }
    }

    /// Applies one session command the way ingest does; engine output goes to `out`.
    /// Returns the scenes adopted from a mirror (promotions), with the primary they came from.
    pub fn apply(
        &mut self,
        now: Instant,
        cmd: SessionCommand,
        out: &mut Batch,
    ) -> Option<(u32, u32)> {
        match cmd {
            SessionCommand::Admit { device, scene, key } => {
                self.engine.admit(now, device, scene, key, out)
            }
            SessionCommand::Revoke { device } => self.engine.revoke(device, out),
            SessionCommand::Reset => self.engine.reset(out),
            SessionCommand::Handover { scene, to, epoch } => {
                self.engine.handover(scene, to, epoch, out)
            }
            SessionCommand::Mirror { pair, endpoint, .. } => {
                self.mirrors.entry(pair).or_insert(Linked {
                    mirror: Mirror::new(self.scene.clone()),
                    bus: endpoint,
                    link: None,
                    redial_at: 0,
                    clean: false,
                });
            }
            SessionCommand::Unmirror { pair } => {
                self.mirrors.remove(&pair);
            }
            SessionCommand::Promote { scene, to, epoch } => {
                for (primary, m) in self.mirrors.iter_mut() {
                    if m.mirror.promote(&mut self.engine, scene, now, to, epoch, out) {
                        return Some((scene, *primary));
                    }
                }
            }
        }
        None
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
