//! The controller replica set in the seeded simulation: three real `replica::Node`s (each
//! around a real `Controller`) with a disk each (what they persisted: snapshot + batches,
//! rebuilt on restart exactly as the server's `recover` does), a lock model drawn from the
//! seed (a file lock, freed when its holder dies; or an etcd-like lease with a TTL that the
//! holder renews and that lapses while it is cut off), follow asks and answers over a lossy,
//! delaying network (at most one ask out per passive: a late answer to an abandoned ask is
//! dropped, as a lazy-pirate REQ socket does), a writer registering devices and a pair
//! heartbeating, both through the endpoint list with `not_active` redirects. Faults, one at a
//! time: kill -9 and restart of a replica, isolation of a replica (from its peers and the
//! lock), graceful step-down of the active. The server loop's rules are mirrored here (replies
//! released by `Node::released`, `may_campaign` before the lock, step-down waits for the
//! passives). Invariants, after every step:
//! - one active per term, and never two replicas deciding (role active) at once;
//! - log matching: two replicas' batches with the same seq and term are the same batch;
//! - no acknowledged write lost: every acknowledged device is known to every replica that
//!   takes over afterwards, and to all of them at the end;
//! - a fenced old active changes nothing: no replica applies a batch from a term below one it
//!   has seen (the node refuses it; checked through log matching and terms only growing);
//! - the pair keeps its identity and its scene across every hand-over;
//! - at the end, with no faults for a while, one active and every passive caught up.
//!
//! Runs with every seed (`--no-replicas` leaves it out). What it found and what changed for
//! it: an active that lost the lock released replies held for its passives (they are now
//! answered `not_active`, `Node::take_demotion`); a passive in sync with an older term campaigned at once (in sync now means with the
//! lock's last term); a replica holding nothing took over a set that was led, forgetting
//! the region (it never does now), and a stale replica without the last term's batches
//! went before one with them (it now waits twice as long).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use zonecast::control::limits::Source;
use zonecast::control::protocol::{ErrorCode, FollowAnswer};
use zonecast::control::replica::{AckMode, Node, Persist, Role, Served};
use zonecast::control::store::{Batch, Snapshot};
use zonecast::control::{Config, ControlError, Controller, Load, Reply, Request};

use crate::world::SeededRandom;

const N: usize = 3;
const TOKEN: &str = "sim";
const TICK: u64 = 5_000;
const LOCK_EVERY: u64 = 20_000;
const CONTROLLER_TICK: u64 = 25_000;
const PARK: u64 = 200_000;
const LEAVE_WAIT: u64 = 2_000_000;
const CLIENT_TIMEOUT: u64 = 100_000;
const FOLLOW_TIMEOUT: u64 = 500_000;
const FAULTS_UNTIL: u64 = 10_000_000;
const QUIET: u64 = 8_000_000;

/// What a run did, for the summary.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub takeovers: u64,
    pub acked: u64,
    pub faults: u64,
}

#[derive(Default, Clone)]
struct Disk {
    snapshot: Option<Snapshot>,
    batches: Vec<Batch>,
}

enum Msg {
    Ask {
        id: u64,
        req: Request,
    },
    Answer {
        id: u64,
        answer: Result<FollowAnswer, ControlError>,
    },
    /// A client's request (writer 0, pair 1) and its reply.
    Call {
        client: usize,
        id: u64,
        req: Request,
    },
    Reply {
        client: usize,
        id: u64,
        reply: Result<Reply, ControlError>,
    },
}

enum Ev {
    /// Boxed: a message holds a request, much larger than the other events.
    Deliver {
        to: usize,
        from: usize,
        msg: Box<Msg>,
    },
    Tick(usize),
    Client(usize),
    Fault,
    Restart(usize),
    Heal(usize),
}

/// A client of the replica set: lazy pirate over the endpoint list.
struct Client {
    target: usize,
    out: Option<(u64, u64)>,
    next_id: u64,
}

/// A reply held until its batch is released: (batch, to, client, id, reply).
type PendingReply = (u64, usize, usize, u64, Result<Reply, ControlError>);

struct Replica {
    node: Option<Node>,
    disk: Disk,
    pending: Vec<PendingReply>,
    parked: Vec<(u64, u64, usize, u64)>,
    asking: Option<(u64, u64)>,
    next_ask: u64,
    next_lock: u64,
    next_tick: u64,
    leave_by: Option<u64>,
    /// Lease model: this replica's own idea of holding the lock until then.
    valid_until: u64,
    renew_at: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum LockKind {
    File,
    Lease { ttl: u64 },
}

struct Lock {
    kind: LockKind,
    term: u64,
    holder: Option<usize>,
    /// Lease model: etcd lets the lease go then.
    expires: u64,
}

struct Sim {
    rng: ChaCha8Rng,
    now: u64,
    start: Instant,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: BTreeMap<usize, Ev>,
    next_ev: usize,
    seq: u64,
    replicas: Vec<Replica>,
    isolated: [bool; N],
    lock: Lock,
    drop_p: f64,
    clients: [Client; 2],
    scene: u32,
    pair: u32,
    acked: BTreeSet<u32>,
    terms: BTreeMap<u64, usize>,
    batches: BTreeMap<(u64, u64), String>,
    verbose: bool,
    fault_busy_until: u64,
    out: Outcome,
}

fn config() -> Config {
    let mut c = Config::new(TOKEN);
    c.dead_after = Duration::from_secs(2);
    c.register.per_sec = 1e9;
    c.register.burst = u32::MAX;
    c
}

pub fn run(seed: u64, verbose: bool) -> Result<Outcome, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_c0de);
    let kind = if rng.gen_bool(0.5) {
        LockKind::File
    } else {
        LockKind::Lease {
            ttl: rng.gen_range(1..=2) * 1_000_000,
        }
    };
    let drop_p = [0.0, 0.01, 0.05][rng.gen_range(0..3)];
    let mut sim = Sim {
        rng,
        now: 0,
        start: Instant::now(),
        queue: BinaryHeap::new(),
        events: BTreeMap::new(),
        next_ev: 0,
        seq: 0,
        replicas: (0..N).map(|_| Replica::new()).collect(),
        isolated: [false; N],
        lock: Lock {
            kind,
            term: 0,
            holder: None,
            expires: 0,
        },
        drop_p,
        clients: [0, 1].map(|i| Client {
            target: i % N,
            out: None,
            next_id: 1,
        }),
        scene: 0,
        pair: 0,
        acked: BTreeSet::new(),
        terms: BTreeMap::new(),
        batches: BTreeMap::new(),
        verbose,
        fault_busy_until: 0,
        out: Outcome::default(),
    };
    sim.log(|| format!("lock {kind:?}, drop {drop_p}"));
    for i in 0..N {
        sim.boot(i);
        sim.at(0, Ev::Tick(i));
    }
    sim.setup()?;
    sim.at(sim.now + 1_000, Ev::Client(0));
    sim.at(sim.now + 2_000, Ev::Client(1));
    sim.at(sim.now + 500_000, Ev::Fault);
    let end = FAULTS_UNTIL + QUIET;
    while let Some(Reverse((t, _, id))) = sim.queue.pop() {
        if t > end {
            break;
        }
        sim.now = t;
        let ev = sim.events.remove(&id).expect("event");
        sim.step(ev)?;
        sim.check()?;
    }
    sim.final_check()?;
    Ok(sim.out)
}

impl Replica {
    fn new() -> Replica {
        Replica {
            node: None,
            disk: Disk::default(),
            pending: Vec::new(),
            parked: Vec::new(),
            asking: None,
            next_ask: 0,
            next_lock: 0,
            next_tick: 0,
            leave_by: None,
            valid_until: 0,
            renew_at: 0,
        }
    }
}

fn endpoint(i: usize) -> String {
    format!("tcp://c{i}")
}

fn index(endpoint: &str) -> Option<usize> {
    endpoint.strip_prefix("tcp://c")?.parse().ok()
}

impl Sim {
    fn log(&self, what: impl FnOnce() -> String) {
        if self.verbose {
            println!("{:>10} {}", self.now, what());
        }
    }

    fn instant(&self) -> Instant {
        self.start + Duration::from_micros(self.now)
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        let id = self.next_ev;
        self.next_ev += 1;
        self.events.insert(id, ev);
        self.queue.push(Reverse((t, self.seq, id)));
    }

    /// Sends over the simulated network: replica links are lossy and cut by isolation;
    /// clients reach every replica (they live where the operator's test does).
    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        let between_replicas = matches!(msg, Msg::Ask { .. } | Msg::Answer { .. });
        if between_replicas && (self.isolated[from] || self.isolated[to]) {
            return;
        }
        if between_replicas && self.rng.gen_bool(self.drop_p) {
            return;
        }
        let delay = self.rng.gen_range(50..2_000);
        let msg = Box::new(msg);
        self.at(self.now + delay, Ev::Deliver { to, from, msg });
    }

    /// (Re)starts replica `i` from its disk, as the server's `recover` does.
    fn boot(&mut self, i: usize) {
        let disk = self.replicas[i].disk.clone();
        let random = Box::new(SeededRandom(ChaCha8Rng::seed_from_u64(self.rng.next_u64())));
        let mut controller = match &disk.snapshot {
            Some(s) => Controller::from_image(config(), random, s.image.clone()),
            None => Controller::with_random(config(), random),
        };
        for b in &disk.batches {
            controller.apply(&b.entries);
        }
        let seq = disk
            .batches
            .last()
            .map(|b| b.seq)
            .or(disk.snapshot.as_ref().map(|s| s.seq))
            .unwrap_or(0);
        let mut node = Node::new(controller, &endpoint(i), seq, AckMode::Replica);
        if let LockKind::Lease { ttl } = self.lock.kind {
            node.set_lock_lapse(Duration::from_micros(2 * ttl));
        }
        let r = &mut self.replicas[i];
        *r = Replica {
            disk,
            node: Some(node),
            ..Replica::new()
        };
    }

    fn persist(&mut self, i: usize, p: Persist) -> Result<(), String> {
        match p {
            Persist::Replace(s) => {
                let d = &mut self.replicas[i].disk;
                d.snapshot = Some(s);
                d.batches.clear();
            }
            Persist::Append(b) => {
                let text = serde_json::to_string(&b.entries).expect("entries");
                if let Some(seen) = self.batches.get(&(b.seq, b.term)) {
                    if *seen != text {
                        return Err(format!(
                            "log matching: replica {i} holds another batch {} of term {}",
                            b.seq, b.term
                        ));
                    }
                } else {
                    self.batches.insert((b.seq, b.term), text);
                }
                self.replicas[i].disk.batches.push(b);
            }
        }
        Ok(())
    }

    fn commit(&mut self, i: usize) -> Result<(), String> {
        let batch = self.replicas[i].node.as_mut().and_then(Node::commit);
        if let Some(b) = batch {
            self.persist(i, Persist::Append(b))?;
        }
        Ok(())
    }

    /// Sets up a scene and a pair serving it on the first active.
    fn setup(&mut self) -> Result<(), String> {
        while self.actives().next().is_none() {
            let Some(Reverse((t, _, id))) = self.queue.pop() else {
                return Err("no event".into());
            };
            self.now = t;
            let ev = self.events.remove(&id).expect("event");
            self.step(ev)?;
        }
        let a = self.actives().next().expect("active");
        let now = self.instant();
        let beat = self.heartbeat_request(1);
        let node = self.replicas[a].node.as_mut().expect("up");
        let served = |node: &mut Node, req| match node.serve(now, Source::Local, req) {
            Served::Reply(Ok(r)) => r.to_json(),
            other => panic!("setup: {other:?}"),
        };
        let tok = Some(TOKEN.to_string());
        let pair = served(
            node,
            Request::PairRegister {
                token: tok.clone(),
                region: "r".into(),
                udp: "127.0.0.1:9".into(),
                capacity: 100,
                version: "sim".into(),
                bus: None,
                bus_key: None,
            },
        )["pair"]
            .as_u64()
            .expect("pair") as u32;
        assert_eq!(pair, 1, "the first pair");
        served(node, beat);
        let scene = served(node, Request::scene_create(tok, "s".into(), "r".into()))["scene"]["id"]
            .as_u64()
            .expect("scene") as u32;
        self.pair = pair;
        self.scene = scene;
        self.clients[1].target = a;
        self.clients[0].target = a;
        self.commit(a)
    }

    fn heartbeat_request(&self, pair: u32) -> Request {
        Request::PairHeartbeat {
            token: Some(TOKEN.into()),
            pair,
            epoch: 0,
            load: Load::default(),
            mirrors: Vec::new(),
            crossings: Vec::new(),
        }
    }

    fn actives(&self) -> impl Iterator<Item = usize> + '_ {
        (0..N).filter(|i| {
            self.replicas[*i]
                .node
                .as_ref()
                .is_some_and(|n| n.role() == Role::Active)
        })
    }

    fn step(&mut self, ev: Ev) -> Result<(), String> {
        match ev {
            Ev::Tick(i) => {
                if self.replicas[i].node.is_some() {
                    self.tick(i)?;
                    self.at(self.now + TICK, Ev::Tick(i));
                }
            }
            Ev::Deliver { to, from, msg } => self.deliver(to, from, *msg)?,
            Ev::Client(c) => {
                self.client_tick(c);
                let every = if c == 0 { 10_000 } else { 50_000 };
                self.at(self.now + every, Ev::Client(c));
            }
            Ev::Fault => self.fault(),
            Ev::Restart(i) => {
                self.log(|| format!("restart {i}"));
                self.boot(i);
                self.at(self.now + TICK, Ev::Tick(i));
            }
            Ev::Heal(i) => {
                self.log(|| format!("heal {i}"));
                self.isolated[i] = false;
            }
        }
        Ok(())
    }

    fn fault(&mut self) {
        if self.now >= FAULTS_UNTIL {
            return;
        }
        if self.now >= self.fault_busy_until {
            self.out.faults += 1;
            let i = self.rng.gen_range(0..N);
            let up = self.replicas[i].node.is_some();
            match self.rng.gen_range(0..3) {
                0 if up => {
                    let down = self.rng.gen_range(50_000..3_000_000);
                    self.log(|| format!("kill -9 {i} for {down} us"));
                    self.replicas[i].node = None;
                    if self.lock.kind == LockKind::File && self.lock.holder == Some(i) {
                        self.lock.holder = None;
                    }
                    self.at(self.now + down, Ev::Restart(i));
                    self.fault_busy_until = self.now + down;
                }
                1 => {
                    let d = self.rng.gen_range(100_000..4_000_000);
                    self.log(|| format!("isolate {i} for {d} us"));
                    self.isolated[i] = true;
                    self.at(self.now + d, Ev::Heal(i));
                    self.fault_busy_until = self.now + d;
                }
                _ => {
                    let active = self.actives().next();
                    if let Some(a) = active {
                        self.log(|| format!("step down {a}"));
                        if let Some(n) = self.replicas[a].node.as_mut() {
                            n.step_down();
                        }
                    }
                }
            }
            // Time to recover before the next fault.
            self.fault_busy_until += self.rng.gen_range(0..2_000_000);
        }
        let next = self.rng.gen_range(100_000..1_500_000);
        self.at(self.now + next, Ev::Fault);
    }

    /// One turn of replica `i`'s server loop.
    fn tick(&mut self, i: usize) -> Result<(), String> {
        let now = self.instant();
        let t = self.now;
        if t >= self.replicas[i].next_tick {
            self.replicas[i].next_tick = t + CONTROLLER_TICK;
            let node = self.replicas[i].node.as_mut().expect("up");
            node.tick(now);
            self.commit(i)?;
        }
        self.answer_parked(i);
        self.release(i);
        self.renew(i);
        if t >= self.replicas[i].next_lock {
            self.replicas[i].next_lock = t + LOCK_EVERY;
            self.lock_duties(i)?;
        }
        self.ask(i);
        Ok(())
    }

    /// As the server's `fail_unconfirmed`: replies waiting on batches the passives may not
    /// hold when replica `i` stopped leading are answered `not_active`.
    fn fail_unconfirmed(&mut self, i: usize) {
        let r = &mut self.replicas[i];
        let Some(held) = r.node.as_mut().and_then(Node::take_demotion) else {
            return;
        };
        for p in r.pending.iter_mut().filter(|p| p.0 > held) {
            p.4 = Err(Node::unconfirmed());
        }
    }

    fn release(&mut self, i: usize) {
        self.fail_unconfirmed(i);
        let now = self.instant();
        let r = &mut self.replicas[i];
        let Some(node) = r.node.as_ref() else {
            return;
        };
        let released = node.released(now);
        let (due, held): (Vec<_>, Vec<_>) = std::mem::take(&mut r.pending)
            .into_iter()
            .partition(|p| p.0 <= released);
        r.pending = held;
        for (_, from, client, id, reply) in due {
            self.send(i, from, Msg::Reply { client, id, reply });
        }
    }

    fn answer_parked(&mut self, i: usize) {
        let now = self.instant();
        let t = self.now;
        let r = &mut self.replicas[i];
        let Some(node) = r.node.as_ref() else {
            return;
        };
        let seq = node.seq();
        let active = node.role() != Role::Passive;
        let (due, held): (Vec<_>, Vec<_>) = std::mem::take(&mut r.parked)
            .into_iter()
            .partition(|p| !active || p.0 < seq || t >= p.1);
        r.parked = held;
        let answers: Vec<_> = due
            .into_iter()
            .map(|(after, _, from, id)| {
                let answer = if active {
                    Ok(node.follow_answer(now, after, true))
                } else {
                    Err(ControlError::not_active(None, "no longer active"))
                };
                (from, id, answer)
            })
            .collect();
        for (from, id, answer) in answers {
            self.send(i, from, Msg::Answer { id, answer });
        }
    }

    fn ask(&mut self, i: usize) {
        let t = self.now;
        let r = &mut self.replicas[i];
        let Some(node) = r.node.as_ref() else {
            return;
        };
        if node.role() != Role::Passive || t < r.next_ask {
            return;
        }
        if let Some((_, deadline)) = r.asking {
            if t < deadline {
                return;
            }
            r.asking = None; // abandoned: a late answer is dropped
        }
        let Some(active) = node.active().and_then(index) else {
            return;
        };
        let req = node.follow_request(Some(TOKEN.into()));
        let id = self.rng.next_u64();
        self.replicas[i].asking = Some((id, t + FOLLOW_TIMEOUT));
        self.send(i, active, Msg::Ask { id, req });
    }

    /// The lease model: the holder renews every ttl / 3 while it reaches etcd.
    fn renew(&mut self, i: usize) {
        let LockKind::Lease { ttl } = self.lock.kind else {
            return;
        };
        let t = self.now;
        if self.lock.holder != Some(i) || t < self.replicas[i].renew_at || self.isolated[i] {
            return;
        }
        if t >= self.lock.expires || self.replicas[i].valid_until <= t {
            return; // lapsed: never revived
        }
        self.lock.expires = t + ttl;
        self.replicas[i].valid_until = t + ttl - ttl / 5;
        self.replicas[i].renew_at = t + ttl / 3;
    }

    fn held(&self, i: usize) -> bool {
        match self.lock.kind {
            LockKind::File => self.lock.holder == Some(i),
            LockKind::Lease { .. } => {
                self.lock.holder == Some(i) && self.now < self.replicas[i].valid_until
            }
        }
    }

    /// The lock's record as replica `i` can read it: (term, holder), or `None` (unreachable).
    fn record(&mut self, i: usize) -> Option<(u64, Option<usize>)> {
        if let LockKind::Lease { .. } = self.lock.kind {
            if self.isolated[i] {
                return None;
            }
            if self.now >= self.lock.expires {
                self.lock.holder = None;
            }
        }
        Some((self.lock.term, self.lock.holder))
    }

    fn lock_duties(&mut self, i: usize) -> Result<(), String> {
        let now = self.instant();
        let t = self.now;
        let role = self.replicas[i].node.as_ref().expect("up").role();
        match role {
            Role::Leaving => {
                let by = *self.replicas[i].leave_by.get_or_insert(t + LEAVE_WAIT);
                let node = self.replicas[i].node.as_mut().expect("up");
                if node.caught_up(now) || t >= by {
                    node.release_lead(now);
                    self.fail_unconfirmed(i);
                    self.replicas[i].leave_by = None;
                    if self.lock.holder == Some(i) {
                        self.lock.holder = None;
                    }
                    self.replicas[i].next_lock = t + 300_000;
                    self.log(|| format!("{i} released the lock"));
                }
            }
            Role::Active => {
                if !self.held(i) {
                    self.log(|| format!("{i} lost the lock"));
                    let node = self.replicas[i].node.as_mut().expect("up");
                    node.become_passive(now);
                    self.commit(i)?;
                    self.fail_unconfirmed(i);
                }
            }
            Role::Passive => {
                let Some((term, holder)) = self.record(i) else {
                    return Ok(());
                };
                let free = holder.is_none_or(|h| h == i);
                let node = self.replicas[i].node.as_mut().expect("up");
                if !node.may_campaign(now, term, free) {
                    node.learn_active(term, holder.map(endpoint));
                    return Ok(());
                }
                let new_term = term.max(node.known_term()) + 1;
                let Some(batch) = node.take_over(now, new_term) else {
                    return Ok(());
                };
                self.lock.term = new_term;
                self.lock.holder = Some(i);
                if let LockKind::Lease { ttl } = self.lock.kind {
                    self.lock.expires = t + ttl;
                    self.replicas[i].valid_until = t + ttl - ttl / 5;
                    self.replicas[i].renew_at = t + ttl / 3;
                }
                self.log(|| format!("{i} active under term {new_term}"));
                self.out.takeovers += 1;
                if let Some(prev) = self.terms.insert(new_term, i) {
                    return Err(format!("term {new_term} taken by {prev} and {i}"));
                }
                self.persist(i, Persist::Append(batch))?;
                // It must hold every acknowledged write.
                let missing = self.missing(i);
                if let Some(d) = missing {
                    return Err(format!(
                        "replica {i} took over under term {new_term} without acknowledged device {d}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// An acknowledged device replica `i` does not know.
    fn missing(&mut self, i: usize) -> Option<u32> {
        let now = self.instant();
        let node = self.replicas[i].node.as_mut()?;
        self.acked.iter().copied().find(|d| {
            !matches!(
                node.serve(now, Source::Local, Request::DeviceLocate { device: *d }),
                Served::Reply(Ok(_))
            )
        })
    }

    fn deliver(&mut self, to: usize, from: usize, msg: Msg) -> Result<(), String> {
        let now = self.instant();
        match msg {
            Msg::Reply { client, id, reply } => {
                self.on_reply(client, from, id, reply);
                return Ok(());
            }
            _ if self.replicas[to].node.is_none() => return Ok(()),
            Msg::Ask { id, req } => {
                let node = self.replicas[to].node.as_mut().expect("up");
                match node.serve(now, Source::Local, req) {
                    Served::Park { after } => {
                        self.replicas[to]
                            .parked
                            .push((after, self.now + PARK, from, id));
                    }
                    Served::Reply(r) => {
                        let answer = r.map(|r| match r {
                            Reply::Followed(a) => *a,
                            other => panic!("follow: {other:?}"),
                        });
                        self.send(to, from, Msg::Answer { id, answer });
                    }
                }
            }
            Msg::Answer { id, answer } => {
                let r = &mut self.replicas[to];
                if r.asking.map(|a| a.0) != Some(id) {
                    return Ok(()); // an abandoned ask's answer
                }
                r.asking = None;
                match answer {
                    Ok(a) => {
                        let node = r.node.as_mut().expect("up");
                        match node.on_follow(now, a) {
                            Ok(persist) => {
                                for p in persist {
                                    self.persist(to, p)?;
                                }
                            }
                            Err(e) => {
                                self.log(|| format!("{to} refused an answer: {e}"));
                                self.replicas[to].next_ask = self.now + 100_000;
                            }
                        }
                    }
                    Err(_) => self.replicas[to].next_ask = self.now + 50_000,
                }
            }
            Msg::Call { client, id, req } => {
                let node = self.replicas[to].node.as_mut().expect("up");
                let Served::Reply(reply) = node.serve(now, Source::Local, req) else {
                    return Err("a client call parked".into());
                };
                self.commit(to)?;
                let seq = self.replicas[to].node.as_ref().expect("up").seq();
                self.replicas[to]
                    .pending
                    .push((seq, from, client, id, reply));
                self.answer_parked(to);
                self.release(to);
            }
        }
        Ok(())
    }

    fn client_tick(&mut self, c: usize) {
        let t = self.now;
        if c == 0 && t > FAULTS_UNTIL + QUIET - 2_000_000 {
            return; // the writer stops so the passives can be seen caught up
        }
        if let Some((_, deadline)) = self.clients[c].out {
            if t < deadline {
                return;
            }
            // Silence: the next endpoint of the list.
            self.clients[c].target = (self.clients[c].target + 1) % N;
        }
        let id = self.clients[c].next_id;
        self.clients[c].next_id += 1;
        self.clients[c].out = Some((id, t + CLIENT_TIMEOUT));
        let req = if c == 0 {
            Request::DeviceRegister {
                token: None,
                scene: self.scene,
                name: None,
                anchor: None,
            }
        } else {
            self.heartbeat_request(self.pair)
        };
        let to = self.clients[c].target;
        // Clients are processes of their own: index N + c on the network.
        self.send(N + c, to, Msg::Call { client: c, id, req });
    }

    fn on_reply(&mut self, c: usize, from: usize, id: u64, reply: Result<Reply, ControlError>) {
        if self.clients[c].out.map(|o| o.0) != Some(id) {
            return;
        }
        self.clients[c].out = None;
        match reply {
            Ok(r) => {
                self.clients[c].target = from;
                if c == 0 {
                    if let Some(d) = r.to_json()["device"].as_u64() {
                        self.acked.insert(d as u32);
                        self.out.acked += 1;
                    }
                }
            }
            Err(e) if e.code == ErrorCode::NotActive => {
                self.clients[c].target = match e.active.as_deref().and_then(index) {
                    Some(a) => a,
                    None => (from + 1) % N,
                };
            }
            Err(e) => self.log(|| format!("client {c}: {e}")),
        }
    }

    fn check(&mut self) -> Result<(), String> {
        let actives: Vec<usize> = self.actives().collect();
        if actives.len() > 1 {
            // Two deciding at once is a split brain only if both believe they hold the lock.
            let holding: Vec<usize> = actives.iter().copied().filter(|a| self.held(*a)).collect();
            if holding.len() > 1 {
                return Err(format!("replicas {holding:?} are active at once"));
            }
        }
        for a in actives {
            let node = self.replicas[a].node.as_ref().expect("up");
            let c = node.controller();
            if c.assigned(self.scene) != Some(self.pair) || !c.is_alive(self.pair) {
                return Err(format!(
                    "active {a} (term {}) lost the pair's scene (assigned {:?}, alive {})",
                    node.term(),
                    c.assigned(self.scene),
                    c.is_alive(self.pair)
                ));
            }
        }
        Ok(())
    }

    fn final_check(&mut self) -> Result<(), String> {
        let actives: Vec<usize> = self.actives().collect();
        let [a] = actives[..] else {
            return Err(format!("{} actives after the quiet phase", actives.len()));
        };
        let seq = self.replicas[a].node.as_ref().expect("up").seq();
        for i in 0..N {
            let Some(node) = self.replicas[i].node.as_ref() else {
                return Err(format!("replica {i} is down after the quiet phase"));
            };
            if node.seq() != seq {
                return Err(format!(
                    "replica {i} at batch {} after the quiet phase, the active at {seq}",
                    node.seq()
                ));
            }
            if let Some(d) = self.missing(i) {
                return Err(format!("replica {i} lost acknowledged device {d}"));
            }
        }
        if self.acked.is_empty() {
            return Err("no write was acknowledged".into());
        }
        Ok(())
    }
}
