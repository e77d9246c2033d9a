//! One simulated cluster run from one seed: a controller (the real state machine, seeded
//! randomness), a few pairs and devices, a fault phase drawn from the seed (crashes and
//! restarts, host partitions, stream cuts, freezes, drains and SIGTERMs (a pair draining
//! itself), lossy and duplicating links), then
//! a quiet phase in which the cluster must settle. Virtual time in microseconds; every
//! decision comes from the seed, so a seed replays exactly.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use zonecast::client::Area;
use zonecast::control::protocol::{DeviceLocation, Reply, Request};
use zonecast::control::random::Random;
use zonecast::control::{Config, Controller};
use zonecast::replication::assignment::TrackerConfig;
use zonecast::wire::SessionKey;
use zonecast::zones::Grid;

use crate::check::{Books, REHOME_BOUND};
use crate::detect::DETECT_BOUND;
use crate::device::{position, Device};
use crate::net::{us, Net, Node, Payload, Profile};
use crate::pair::Pair;

pub const TOKEN: &str = "sim";
pub const REGION: &str = "r";
/// How often the controller ticks (its server does every dead_after / 10).
const CONTROLLER_TICK: u64 = 25_000;
/// How often a device moves its object.
const UPDATE_EVERY: u64 = 40_000;
/// The quiet phase, and the window at its end in which nothing may change.
const SETTLE: u64 = 4_000_000;
const STABLE: u64 = 1_500_000;
/// Radius of the odd devices' interest spheres (the objects' circle has radius 50).
const INTEREST_RADIUS: f32 = 40.0;

/// What a run may be asked to do besides its seed.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Print every step.
    pub verbose: bool,
}

/// What a run did, for the summary.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub virtual_us: u64,
    pub messages: u64,
    pub faults: u64,
    pub promotions: u64,
    pub handovers: u64,
    pub crashes: u64,
    pub rehome_checks: u64,
    pub confirmed: u64,
    pub detect_checks: u64,
    pub stalls: u64,
}

/// The controller's randomness, from the seed.
pub struct SeededRandom(pub ChaCha8Rng);

impl Random for SeededRandom {
    fn fill(&mut self, out: &mut [u8]) {
        self.0.fill_bytes(out);
    }
}

#[derive(Clone, Debug)]
pub enum Fault {
    Crash(usize),
    Restart(usize),
    /// Cut a pair slot's host off from everything for a while.
    Isolate(usize, u64),
    /// Cut the streams between two pair slots for a while.
    CutStreams(usize, usize, u64),
    /// SIGSTOP a pair slot for a while.
    Freeze(usize, u64),
    /// An operator drains a pair slot.
    Drain(usize),
    /// SIGTERM to a pair slot: it drains itself (or deregisters) within 10 s.
    Terminate(usize),
    /// Check that the devices of a crash at this time are re-homed.
    CheckRehome {
        crashed: usize,
        devices: Vec<usize>,
    },
    /// The controller process gets no CPU for a while (requests wait in its socket).
    StallController(u64),
    /// A pair slot's host is loaded for a while: its heartbeats and probe answers are late.
    Slow(usize, u64),
    /// Check that the crash of this incarnation at this time was acted on.
    CheckDeclared {
        crashed: usize,
        at: u64,
    },
}

pub struct World {
    pub rng: ChaCha8Rng,
    pub base: Instant,
    pub now: u64,
    pub net: Net,
    pub controller: Controller,
    next_tick: u64,
    /// Every pair process ever started (incarnations); `slots[s]` is the slot's current one.
    pub pairs: Vec<Pair>,
    pub slots: Vec<usize>,
    pub devices: Vec<Device>,
    pub scenes: Vec<u32>,
    faults: Vec<(u64, Fault)>,
    /// The last fault start time, for the re-homing check's quiet window.
    pub last_fault: u64,
    pub next_call: u64,
    pub next_link: u64,
    pub books: Books,
    pub verbose: bool,
    pub outcome: Outcome,
    /// Keys of every engine's hash tables in this run.
    hash_seed: u64,
    /// Probes in flight: pair id -> sent at.
    pub probes: std::collections::BTreeMap<u32, u64>,
    /// The controller runs nothing before this.
    pub stalled_until: u64,
    /// Pair incarnations that may be declared dead until the given time (frozen, cut off).
    pub excused: std::collections::BTreeMap<usize, u64>,
    /// The first scene is split into two zones (x < 0, x >= 0) spread over the pairs (every
    /// third seed): its devices with areas walk between them while faults run.
    pub zoned: Option<u32>,
    /// Walking devices walk (the fault phase); they stand still while the cluster settles.
    pub walking: bool,
    /// When a lossy network became lossless (the quiet phase), if it did.
    pub lossless_since: Option<u64>,
}

impl World {
    pub fn instant(&self) -> Instant {
        self.base + Duration::from_micros(self.now)
    }

    pub fn now_ns(&self) -> u64 {
        1_700_000_000_000_000_000 + self.now * 1000
    }

    /// The controller ticks at once (a probe confirmed a death).
    pub fn force_tick(&mut self) {
        self.next_tick = self.now;
    }

    pub fn log(&self, what: impl FnOnce() -> String) {
        if self.verbose {
            println!("{:>9.3} ms  {}", self.now as f64 / 1000.0, what());
        }
    }

    /// Starts a new pair process in `slot`.
    pub fn start_pair(&mut self, slot: usize) {
        let inc = self.pairs.len();
        let addr: SocketAddr = format!("10.0.{slot}.1:{}", 7000 + inc).parse().unwrap();
        let bus = format!("tcp://10.0.{slot}.1:{}", 8000 + inc);
        let config = TrackerConfig {
            token: TOKEN.into(),
            region: REGION.into(),
            advertise: addr,
            capacity: 100,
            version: "sim".into(),
            bus: Some(bus),
            bus_key: None,
            requires_fanout: false,
            drain_grace: Duration::from_millis(300),
        };
        let scene = zonecast::scene::Config {
            hash_seed: Some(self.hash_seed),
            ..Default::default()
        };
        let pair = Pair::new(slot, config, scene, self.instant());
        self.pairs.push(pair);
        if slot < self.slots.len() {
            self.slots[slot] = inc;
        } else {
            self.slots.push(inc);
        }
        self.log(|| format!("pair #{inc} starts in slot {slot} at {addr}"));
    }

    /// Starts `slot` again. A region that had no live pair left is not quiet until the new
    /// one settles: re-homing is only bounded while a live pair exists.
    fn restart(&mut self, slot: usize) {
        if !self.slots.iter().any(|i| self.pairs[*i].alive) {
            self.last_fault = self.now;
        }
        self.start_pair(slot);
    }

    /// The pair incarnation listening at `addr`, if alive.
    pub fn pair_at(&self, addr: SocketAddr) -> Option<usize> {
        self.pairs
            .iter()
            .position(|p| p.addr == addr)
            .filter(|i| self.pairs[*i].alive)
    }

    /// The pair incarnation with controller id `id`.
    pub fn pair_with_id(&self, id: u32) -> Option<usize> {
        self.pairs.iter().rposition(|p| p.id == Some(id))
    }

    pub fn pair_by_bus(&self, bus: &str) -> Option<usize> {
        self.pairs.iter().position(|p| p.bus == bus)
    }

    /// The device listening at `addr`.
    pub fn device_at(&self, addr: SocketAddr) -> Option<usize> {
        self.devices.iter().position(|d| d.addr == addr)
    }

    /// A request straight to the controller (an operator at its console, or setup).
    pub fn operator(&mut self, req: Request) -> Result<Reply, zonecast::control::ControlError> {
        let now = self.instant();
        self.controller.handle(now, req)
    }

    fn setup(&mut self, pairs: usize, devices: usize, scenes: usize) -> Result<(), String> {
        for slot in 0..pairs {
            self.start_pair(slot);
        }
        // Let the pairs register and get standbys; on a lossy network that can take longer
        // (seeds 53982, 65412 lost every early heartbeat of both pairs).
        self.run_until(300_000)?;
        while !self.slots.iter().any(|i| {
            let p = &self.pairs[*i];
            p.id.is_some_and(|id| self.controller.is_alive(id))
        }) {
            if self.now > 5_000_000 {
                return Err("setup: no pair registered and alive within 5 s".into());
            }
            self.run_until(self.now + 50_000)?;
        }
        for s in 0..scenes {
            let mut create =
                Request::scene_create(Some(TOKEN.into()), format!("scene-{s}"), REGION.into());
            if let (0, true, Request::SceneCreate { grid, .. }) = (s, self.walking, &mut create) {
                // The objects' circle (radius 50 in the x-y plane) crosses x = 0 twice.
                *grid = Some(Grid {
                    origin: [-60.0, -60.0, 0.0],
                    cell: [60.0, 0.0, 0.0],
                    counts: [2, 1, 1],
                });
            }
            let reply = self
                .operator(create)
                .map_err(|e| format!("setup: scene.create: {e}"))?;
            let Reply::SceneCreated(c) = reply else {
                return Err("setup: scene.create answered oddly".into());
            };
            if s == 0 && self.walking {
                self.zoned = Some(c.scene.id);
            }
            self.scenes.push(c.scene.id);
        }
        for d in 0..devices {
            let scene = self.scenes[d % self.scenes.len()];
            let reply = self
                .operator(Request::DeviceRegister {
                    token: None,
                    scene,
                    name: None,
                    anchor: None,
                })
                .map_err(|e| format!("setup: device.register: {e}"))?;
            let Reply::Location(DeviceLocation {
                device,
                udp,
                epoch,
                key: Some(key),
                ..
            }) = reply
            else {
                return Err("setup: device.register answered oddly".into());
            };
            let addr: SocketAddr = format!("10.1.{d}.1:5000").parse().unwrap();
            let now = self.instant();
            self.devices.push(Device {
                id: device,
                scene,
                key: SessionKey::from_hex(&key).ok_or("setup: key")?,
                addr,
                pair: udp.parse().map_err(|_| "setup: udp")?,
                epoch,
                seq: 1,
                policy: zonecast::client::RoamPolicy::new(now),
                last_answered: None,
                join_pending: None,
                joined: false,
                locate: None,
                next_update: self.now + self.rng.gen_range(0..UPDATE_EVERY),
                written: 0,
                seen: Default::default(),
                // Odd devices see a sphere around a point of the circle the objects move on,
                // so others walk in and out of it; even ones see everything.
                area: (device % 2 == 1).then(|| Area::sphere(position(device, 0), INTEREST_RADIUS)),
                walks: device % 2 == 1 && Some(scene) == self.zoned,
            });
            let (now, ns) = (self.instant(), self.now_ns());
            let d = self.devices.len() - 1;
            let join = self.devices[d].join(now, ns);
            self.send_datagram(d, join);
        }
        Ok(())
    }

    /// Draws the fault phase.
    fn draw_faults(&mut self, slots: usize, until: u64) {
        let n = self.rng.gen_range(2..=7);
        for _ in 0..n {
            let at = self.rng.gen_range(500_000..until);
            let slot = self.rng.gen_range(0..slots);
            let fault = match self.rng.gen_range(0..13) {
                0..=3 => Fault::Crash(slot),
                4 => Fault::Isolate(slot, self.rng.gen_range(100_000..900_000)),
                10 => Fault::StallController(self.rng.gen_range(100_000..1_500_000)),
                11..=12 => Fault::Slow(slot, self.rng.gen_range(200_000..1_500_000)),
                5 => {
                    let other = (slot + 1 + self.rng.gen_range(0..slots - 1)) % slots;
                    Fault::CutStreams(slot, other, self.rng.gen_range(100_000..900_000))
                }
                6..=7 => Fault::Freeze(slot, self.rng.gen_range(100_000..700_000)),
                8 => Fault::Terminate(slot),
                _ => Fault::Drain(slot),
            };
            self.faults.push((at, fault));
        }
        self.faults.sort_by_key(|(t, _)| *t);
    }

    fn due_fault(&mut self) -> Option<Fault> {
        if self.faults.first().is_some_and(|(t, _)| *t <= self.now) {
            Some(self.faults.remove(0).1)
        } else {
            None
        }
    }

    fn schedule(&mut self, at: u64, fault: Fault) {
        let i = self.faults.partition_point(|(t, _)| *t <= at);
        self.faults.insert(i, (at, fault));
    }

    fn apply_fault(&mut self, fault: Fault) -> Result<(), String> {
        self.log(|| format!("FAULT {fault:?}"));
        let check = matches!(
            fault,
            Fault::CheckRehome { .. } | Fault::Restart(_) | Fault::CheckDeclared { .. }
        );
        if !check {
            self.outcome.faults += 1;
            self.last_fault = self.now;
        }
        match fault {
            Fault::Crash(slot) => {
                let inc = self.slots[slot];
                if !self.pairs[inc].alive {
                    return Ok(());
                }
                let homed: Vec<usize> = (0..self.devices.len())
                    .filter(|d| self.devices[*d].pair == self.pairs[inc].addr)
                    .collect();
                self.crash(inc);
                self.books.crashes += 1;
                self.schedule(
                    self.now + us(DETECT_BOUND),
                    Fault::CheckDeclared {
                        crashed: inc,
                        at: self.now,
                    },
                );
                let back = self.now + self.rng.gen_range(300_000..2_000_000);
                self.schedule(back, Fault::Restart(slot));
                self.schedule(
                    self.now + us(REHOME_BOUND),
                    Fault::CheckRehome {
                        crashed: inc,
                        devices: homed,
                    },
                );
            }
            Fault::Restart(slot) => {
                if !self.pairs[self.slots[slot]].alive {
                    self.restart(slot);
                }
            }
            Fault::Isolate(slot, d) => {
                let inc = self.slots[slot];
                self.excuse(inc, self.now + d);
                self.isolate(inc, d);
            }
            Fault::CutStreams(a, b, d) => self.cut_streams(self.slots[a], self.slots[b], d),
            Fault::Freeze(slot, d) => {
                let inc = self.slots[slot];
                self.pairs[inc].frozen_until = self.now + d;
                self.excuse(inc, self.now + d);
            }
            Fault::StallController(d) => {
                self.stalled_until = self.stalled_until.max(self.now + d);
                self.outcome.stalls += 1;
            }
            Fault::Slow(slot, d) => {
                let inc = self.slots[slot];
                let lag = crate::detect::SLOW_LAG;
                self.net.slow.insert(Node::Pair(inc), (self.now + d, lag));
            }
            Fault::CheckDeclared { crashed, at } => self.check_declared(crashed, at)?,
            Fault::Drain(slot) => {
                if let Some(id) = self.pairs[self.slots[slot]].id {
                    let r = self.operator(Request::PairDrain {
                        token: Some(TOKEN.into()),
                        pair: id,
                    });
                    self.log(|| format!("drain of pair {id}: {:?}", r.is_ok()));
                }
            }
            Fault::Terminate(slot) => {
                let inc = self.slots[slot];
                let now = self.instant();
                self.log(|| format!("SIGTERM to pair #{inc}"));
                self.pairs[inc]
                    .tracker
                    .leave(now, now + Duration::from_secs(10));
            }
            Fault::CheckRehome { crashed, devices } => self.check_rehome(crashed, &devices)?,
        }
        Ok(())
    }

    /// The bounded re-homing invariant, when nothing else went wrong meanwhile.
    fn check_rehome(&mut self, crashed: usize, devices: &[usize]) -> Result<(), String> {
        let since = self.now.saturating_sub(us(REHOME_BOUND));
        let quiet = self.last_fault <= since
            && self.net.profile.drop <= 0.05
            && self.pairs.iter().all(|p| p.frozen_until <= since)
            && self.net.isolated.values().all(|t| *t <= since)
            && self.net.cut.values().all(|t| *t <= since);
        let live = self
            .slots
            .iter()
            .any(|i| self.pairs[*i].alive && *i != crashed);
        if !quiet || !live {
            return Ok(());
        }
        self.books.rehome_checks += 1;
        for d in devices {
            let dev = &self.devices[*d];
            // A walking device may be in the middle of a border hand-over when this runs:
            // settling checks it.
            if dev.walks && self.walking {
                continue;
            }
            let Some(serving) = self.controller.home(dev.id) else {
                continue;
            };
            let Some(inc) = self.pair_with_id(serving).filter(|i| self.pairs[*i].alive) else {
                continue;
            };
            if dev.pair != self.pairs[inc].addr || !dev.joined {
                return Err(format!(
                    "re-homing: {} after pair #{crashed} crashed, device {} is at {} (joined: {}), not joined at scene {}'s pair #{inc} ({})",
                    REHOME_BOUND.as_millis(),
                    dev.id,
                    dev.pair,
                    dev.joined,
                    dev.scene,
                    self.pairs[inc].addr
                ));
            }
        }
        Ok(())
    }

    /// The next thing to happen: a delivery, a node's timer, a fault, the controller's tick.
    fn next_time(&self) -> u64 {
        let mut t = self.next_tick.max(self.stalled_until);
        if let Some(p) = self.probe_deadline() {
            t = t.min(p);
        }
        if let Some(n) = self.net.next_time() {
            t = t.min(n);
        }
        if let Some((f, _)) = self.faults.first() {
            t = t.min(*f);
        }
        for inc in &self.slots {
            t = t.min(self.pair_wake(*inc));
        }
        for d in 0..self.devices.len() {
            t = t.min(self.device_wake(d));
        }
        t.max(self.now)
    }

    /// Runs until virtual time `until`.
    pub fn run_until(&mut self, until: u64) -> Result<(), String> {
        while self.now < until {
            self.now = self.next_time().min(until);
            while let Some(f) = self.due_fault() {
                self.apply_fault(f)?;
            }
            if self.now >= self.next_tick && self.now >= self.stalled_until {
                let changes = self.controller.tick(self.instant());
                for c in changes {
                    self.log(|| format!("controller: {c:?}"));
                    self.check_death(&c)?;
                }
                self.next_tick = self.now + CONTROLLER_TICK;
                self.send_probes();
            }
            self.expire_probes();
            while let Some(d) = self.net.pop_due(self.now) {
                self.deliver(d)?;
            }
            for inc in self.slots.clone() {
                if self.pair_wake(inc) <= self.now {
                    self.pair_step(inc)?;
                }
            }
            for d in 0..self.devices.len() {
                if self.device_wake(d) <= self.now {
                    self.device_step(d);
                }
            }
        }
        Ok(())
    }

    fn deliver(&mut self, d: crate::net::Delivery) -> Result<(), String> {
        self.outcome.messages += 1;
        match d.to {
            // A stalled controller reads what waited in its socket when it runs again.
            Node::Controller if self.now < self.stalled_until => {
                let at = self.stalled_until;
                self.net.requeue(at, d.to, d.from, d.payload);
                Ok(())
            }
            Node::Controller => {
                match d.payload {
                    p @ (Payload::ProbeAck { .. } | Payload::ProbeRefused { .. }) => {
                        self.controller_probe(p)
                    }
                    p => self.controller_receive(d.from, p),
                }
                self.send_probes();
                Ok(())
            }
            Node::Pair(inc) => self.pair_receive(inc, d.from, d.payload),
            Node::Device(i) => {
                self.device_receive(i, d.from, d.payload);
                Ok(())
            }
        }
    }

    /// The quiet phase: heal everything, restart what is down, then nothing may change.
    fn settle(&mut self) -> Result<(), String> {
        self.walking = false;
        self.faults
            .retain(|(_, f)| matches!(f, Fault::CheckRehome { .. }));
        if self.net.profile.drop > 0.0 {
            self.lossless_since = Some(self.now);
        }
        self.net.profile = Profile::perfect();
        self.net.isolated.clear();
        self.net.cut.clear();
        self.net.slow.clear();
        // A frozen pair runs again now; what waited in its sockets comes first, in order
        // (otherwise a stream's later frames would overtake them: found by seed 80959).
        for inc in 0..self.pairs.len() {
            let until = std::mem::take(&mut self.pairs[inc].frozen_until);
            if until > self.now {
                self.net.release_held(Node::Pair(inc), until, self.now);
            }
        }
        for slot in 0..self.slots.len() {
            if !self.pairs[self.slots[slot]].alive {
                self.restart(slot);
            }
        }
        // A zoned run's walkers may still be crossing when they stop: their moves end a
        // grace later (each end is an assignment change).
        let settle = SETTLE
            + match self.zoned {
                Some(_) => us(zonecast::control::MOVE_GRACE),
                None => 0,
            };
        let start = self.now;
        self.run_until(start + settle - STABLE)?;
        let epoch = self.controller.epoch();
        let from = self.now;
        self.run_until(start + settle)?;
        if self.controller.epoch() != epoch {
            return Err(format!(
                "settling: assignments still changed in the last {} ms without faults (epoch {epoch} -> {})",
                STABLE / 1000,
                self.controller.epoch()
            ));
        }
        self.check_settled(from)
    }

    /// Whether `dev` must have heard `other` lately: always for an everything-device; for an
    /// area, when `other`'s object was inside it at its last update and ten updates before
    /// (so the update that brought it in is not still in flight).
    fn in_view(dev: &Device, other: &Device) -> bool {
        let Some(area) = &dev.area else {
            return true;
        };
        let w = other.written;
        w > 11
            && area.contains(0, position(other.id, w))
            && area.contains(0, position(other.id, w - 10))
    }

    fn check_settled(&self, since: u64) -> Result<(), String> {
        for dev in &self.devices {
            // Its home: the scene's pair, or in a zoned scene the one serving its anchor.
            let home = self
                .controller
                .home(dev.id)
                .ok_or_else(|| format!("settling: device {} has no home", dev.id))?;
            let serving = Some(home)
                .filter(|p| self.controller.is_alive(*p))
                .ok_or_else(|| format!("settling: scene {} has no live pair", dev.scene))?;
            let inc = self
                .pair_with_id(serving)
                .ok_or_else(|| format!("settling: pair {serving} unknown"))?;
            if dev.pair != self.pairs[inc].addr || !dev.joined {
                let session = self.pairs[inc].engine.device(dev.id).map(|d| {
                    format!(
                        "joined {} scene {} addr {:?} forwarded {} arriving {}",
                        d.joined,
                        d.scene,
                        d.addr,
                        d.forward.is_some(),
                        d.arrival.is_some()
                    )
                });
                return Err(format!(
                    "settling: device {} is at {} (joined: {}), scene {} is served by pair #{inc} at {} (its session there: {session:?}; serves the scene: {})",
                    dev.id,
                    dev.pair,
                    dev.joined,
                    dev.scene,
                    self.pairs[inc].addr,
                    self.pairs[inc].engine.holds(dev.scene)
                ));
            }
            for other in self
                .devices
                .iter()
                .filter(|o| o.scene == dev.scene && o.id != dev.id && Self::in_view(dev, o))
            {
                let heard = dev
                    .seen
                    .get(&(dev.scene, u64::from(other.id)))
                    .is_some_and(|(_, at)| *at >= since);
                if !heard {
                    // What the serving pair makes of both: the usual suspects.
                    let state = |id: u32| {
                        self.pairs[inc].engine.device(id).map(|d| {
                            format!(
                                "joined {} quiet {} addr {:?} forwarded {} arriving {}",
                                d.joined,
                                d.quiet,
                                d.addr,
                                d.forward.is_some(),
                                d.arrival.is_some()
                            )
                        })
                    };
                    return Err(format!(
                        "settling: device {} heard nothing from device {} in the last {} ms (at pair #{inc}: device {}: {:?}; device {}: {:?}; {} sent {} updates to {}, joined {}, last answered {:?})",
                        dev.id,
                        other.id,
                        (self.now - since) / 1000,
                        dev.id,
                        state(dev.id),
                        other.id,
                        state(other.id),
                        other.id,
                        other.written,
                        other.pair,
                        other.joined,
                        other.last_answered.map(|t| t.duration_since(self.base))
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Runs seed `seed`: Ok with what happened, or the first violated invariant.
pub fn run(seed: u64, options: &Options) -> Result<Outcome, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let profile = Profile {
        drop: [0.0, 0.01, 0.03, 0.05][rng.gen_range(0..4)],
        duplicate: [0.0, 0.02, 0.05][rng.gen_range(0..3)],
        control_delay: (300, rng.gen_range(1_000..8_000)),
        datagram_delay: (50, rng.gen_range(200..3_000)),
        stream_delay: (50, rng.gen_range(100..2_000)),
    };
    let controller_rng = ChaCha8Rng::seed_from_u64(rng.next_u64());
    let mut config = Config::new(TOKEN);
    config.first_epoch = 1;
    let pairs = rng.gen_range(2..=4);
    let devices = rng.gen_range(2..=5);
    let scenes = rng.gen_range(1..=2);
    let fault_phase = rng.gen_range(2_000_000..5_000_000);
    let mut w = World {
        rng,
        base: Instant::now(),
        now: 0,
        net: Net::new(profile),
        controller: Controller::with_random(config, Box::new(SeededRandom(controller_rng))),
        next_tick: 0,
        pairs: Vec::new(),
        slots: Vec::new(),
        devices: Vec::new(),
        scenes: Vec::new(),
        faults: Vec::new(),
        last_fault: 0,
        next_call: 1,
        next_link: 1,
        books: Books::default(),
        verbose: options.verbose,
        outcome: Outcome::default(),
        hash_seed: seed,
        probes: Default::default(),
        stalled_until: 0,
        excused: Default::default(),
        zoned: None,
        walking: seed.is_multiple_of(3),
        lossless_since: None,
    };
    w.log(|| {
        format!(
            "seed {seed}: {pairs} pairs, {devices} devices, {scenes} scenes, {:?}",
            w.net.profile
        )
    });
    w.setup(pairs, devices, scenes)?;
    let start = w.now;
    w.draw_faults(pairs, start + fault_phase);
    w.run_until(start + fault_phase)?;
    w.settle()?;
    w.outcome.virtual_us = w.now;
    w.outcome.promotions = w.books.promotions;
    w.outcome.handovers = w.books.handovers;
    w.outcome.crashes = w.books.crashes;
    w.outcome.rehome_checks = w.books.rehome_checks;
    Ok(w.outcome)
}
