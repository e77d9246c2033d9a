//! UDP ingest: the thin loop that feeds received datagrams to the scene engine and publishes
//! what it accepts (to the replication stream first, then the bus), and applies the
//! session commands the pair's agent queues (`replication::SessionCommand`).
//!
//! Per wake-up: one recvmmsg per burst of up to `BURST` datagrams, one `Instant::now()` per
//! burst, one bus publish per burst, or per [`DEEP`] bursts while the socket stays backlogged
//! (a full burst means more are queued: publishing them together lets fanout bundle each
//! recipient's share of all of them, which is what lets a loaded pair catch up instead of
//! paying a datagram per update; an idle or lightly loaded pair publishes every burst at once).
//! No allocation, lock or log line per datagram; counters are published with relaxed stores
//! once per burst.

mod probe;

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::ipc_bus::{BusError, Publisher};
use crate::net::mmsg::RecvBatch;
use crate::net::shard_of;
use crate::replication::{Replica, SessionCommand};
use crate::scene::{Batch, DropReason, Engine};
use crate::stats::PairStats;
use crate::wire::probe::is_probe;

pub use probe::ProbeIdentity;

/// Datagrams taken per recvmmsg call.
pub const BURST: usize = 64;
/// Full bursts gathered into one publish while the socket is backlogged.
pub const DEEP: usize = 8;

/// Why the ingest loop stopped.
#[derive(Debug)]
#[non_exhaustive]
pub enum IngestError {
    Io(io::Error),
    Bus(BusError),
}

impl std::fmt::Display for IngestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IngestError::Io(e) => write!(f, "ingest socket: {e}"),
            IngestError::Bus(e) => write!(f, "ingest bus: {e}"),
        }
    }
}

impl std::error::Error for IngestError {}

impl From<io::Error> for IngestError {
    fn from(e: io::Error) -> Self {
        IngestError::Io(e)
    }
}

impl From<BusError> for IngestError {
    fn from(e: BusError) -> Self {
        IngestError::Bus(e)
    }
}

/// The ingest half of a pair.
pub struct Ingest<P: Publisher> {
    pub socket: UdpSocket,
    pub engine: Engine,
    pub publisher: P,
    pub stats: Arc<PairStats>,
    pub stop: Arc<AtomicBool>,
    /// How often eviction and tombstone expiry run.
    pub tick: Duration,
    /// Session changes from the pair's agent (the controller's assignment).
    pub commands: Receiver<SessionCommand>,
    /// Never sleep: poll the socket in a loop (lowest latency, a core at 100%).
    pub busy_poll: bool,
    /// The replication stream and mirrors, when this pair has them.
    pub replica: Option<Replica>,
    /// Who answers the controller's probes.
    pub probes: Arc<ProbeIdentity>,
}

/// The sending side of the command queues of a pair's ingest shards: queues each command for
/// the shard that serves its scene (a revoke goes to every shard) and wakes the loops.
#[derive(Clone)]
pub struct SessionControl {
    shards: Vec<(Sender<SessionCommand>, Arc<Waker>)>,
}

impl SessionControl {
    /// One control over several shards, in shard order.
    pub fn join(parts: Vec<SessionControl>) -> SessionControl {
        SessionControl {
            shards: parts.into_iter().flat_map(|p| p.shards).collect(),
        }
    }

    /// Queues `commands`; false if ingest has stopped.
    pub fn send(&self, commands: impl IntoIterator<Item = SessionCommand>) -> bool {
        let n = self.shards.len();
        let mut ok = true;
        for c in commands {
            let targets = match &c {
                SessionCommand::Admit { scene, .. }
                | SessionCommand::Promote { scene, .. }
                | SessionCommand::Handover { scene, .. }
                | SessionCommand::Drop { scene } => shard_of(*scene, n)..shard_of(*scene, n) + 1,
                SessionCommand::Revoke { .. }
                | SessionCommand::Reset
                | SessionCommand::Mirror { .. }
                | SessionCommand::Unmirror { .. }
                | SessionCommand::Follow { .. }
                | SessionCommand::Unfollow { .. }
                | SessionCommand::MoveDevice { .. }
                | SessionCommand::Expect { .. } => 0..n,
                SessionCommand::Zones { scene, .. } => shard_of(*scene, n)..shard_of(*scene, n) + 1,
            };
            for i in targets {
                ok &= self.shards[i].0.send(c.clone()).is_ok();
            }
        }
        for (_, waker) in &self.shards {
            ok &= waker.wake().is_ok();
        }
        ok
    }
}

/// The poll ingest will wait on, with its command queue: socket and waker registered.
pub fn prepare(socket: &mut UdpSocket) -> io::Result<Prepared> {
    let poll = Poll::new()?;
    poll.registry()
        .register(socket, SOCKET, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = crossbeam_channel::unbounded();
    let control = SessionControl {
        shards: vec![(tx, waker.clone())],
    };
    Ok(Prepared {
        poll,
        control,
        commands: rx,
        waker,
    })
}

/// What [`prepare`] sets up for one ingest loop.
pub struct Prepared {
    pub poll: Poll,
    pub control: SessionControl,
    pub commands: Receiver<SessionCommand>,
    /// Wakes the loop (commands, replication links).
    pub waker: Arc<Waker>,
}

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);

impl<P: Publisher> Ingest<P> {
    /// Runs until `stop` is set or the bus closes. `batch` carries events produced before the
    /// loop started (initial sessions); it is published first.
    pub fn run(mut self, mut poll: Poll, batch: Batch) -> Result<(), IngestError> {
        let mut events = Events::with_capacity(4);
        let mut rx = RecvBatch::new(BURST);
        let mut batch = self.publish(batch)?;
        let mut received = 0u64;
        let mut bytes = 0u64;
        let mut next_tick = Instant::now() + self.tick;
        let fd = self.socket.as_raw_fd();
        let mut idle = false;
        while !self.stop.load(Relaxed) {
            if self.busy_poll {
                // Spinning: yield when idle so the kernel's softirq thread and our other
                // threads on this core still run (loopback delivery can be deferred to them).
                if idle {
                    std::thread::yield_now();
                }
            } else {
                let wait = next_tick.saturating_duration_since(Instant::now());
                if let Err(e) = poll.poll(&mut events, Some(wait)) {
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e.into());
                    }
                }
            }
            idle = true;
            if let Some(r) = self.replica.as_mut() {
                r.service(Instant::now(), &mut self.engine, &mut batch);
            }
            while let Ok(cmd) = self.commands.try_recv() {
                self.apply(cmd, &mut batch);
            }
            if !batch.is_empty() {
                batch = self.publish(batch)?;
            }
            let mut errors = 0;
            // Bursts gathered since the last publish, and when the first was received.
            let mut held = 0;
            let mut first = None;
            loop {
                let n = match rx.recv(fd) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // A pending socket error (e.g. an ICMP report) is consumed by the call that
                    // returns it: try again, or queued datagrams would wait for the next edge.
                    Err(_) if errors < 8 => {
                        errors += 1;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                let now = Instant::now();
                if n > 0 {
                    first.get_or_insert(now);
                    held += 1;
                }
                idle &= n == 0;
                for i in 0..n {
                    let d = rx.get(i);
                    received += 1;
                    bytes += d.bytes.len() as u64;
                    match d.from {
                        _ if d.truncated => self.engine.count_drop(DropReason::Oversized),
                        // The controller checking on a suspect: answered here, at once.
                        Some(from) if is_probe(d.bytes) => self.answer_probe(from, d.bytes),
                        Some(from) => {
                            let r = self.engine.handle(now, from, d.bytes, &mut batch);
                            // A device ahead of its scene (a drain's target): held, not lost.
                            if r == Err(DropReason::UnknownDevice)
                                && self
                                    .replica
                                    .as_mut()
                                    .is_some_and(|rep| rep.hold(now, from, d.bytes))
                            {
                                self.engine.uncount_drop(DropReason::UnknownDevice);
                            }
                        }
                        // Not an IP source: cannot happen on a UDP/IP socket.
                        None => self.engine.count_drop(DropReason::Malformed),
                    }
                }
                let backlog = n == rx.capacity();
                if !backlog || held >= DEEP {
                    self.flush(&mut batch, &mut held, &mut first)?;
                }
                self.stats.ingest_bytes.store(bytes, Relaxed);
                self.publish_counters(received);
                if !backlog {
                    break;
                }
            }
            // A backlog that ended in WouldBlock (or an error) leaves bursts held.
            self.flush(&mut batch, &mut held, &mut first)?;
            let now = Instant::now();
            if now >= next_tick {
                self.engine.tick(now, &mut batch);
                if !batch.is_empty() {
                    batch = self.publish(batch)?;
                }
                self.publish_counters(received);
                self.stats
                    .sessions
                    .store(self.engine.sessions() as u64, Relaxed);
                self.stats
                    .joined
                    .store(self.engine.joined() as u64, Relaxed);
                self.stats
                    .objects
                    .store(self.engine.objects() as u64, Relaxed);
                next_tick = now + self.tick;
            }
        }
        Ok(())
    }

    /// Publishes the bursts gathered in `batch`, if any, and times them from the first one's
    /// receipt (receive to sent when fused, to handed to the fanout thread when split).
    fn flush(
        &mut self,
        batch: &mut Batch,
        held: &mut usize,
        first: &mut Option<Instant>,
    ) -> Result<(), IngestError> {
        if !batch.is_empty() {
            *batch = self.publish(std::mem::take(batch))?;
        }
        if let Some(at) = first.take() {
            self.stats.burst_latency.observe(at.elapsed());
        }
        *held = 0;
        Ok(())
    }

    /// Streams `batch` to replicas first (into the kernel), then hands it to fanout: whatever
    /// devices are sent, a standby will have received.
    fn publish(&mut self, batch: Batch) -> Result<Batch, IngestError> {
        if let Some(r) = self.replica.as_mut() {
            r.send(&batch);
        }
        Ok(self.publisher.publish(batch)?)
    }

    fn apply(&mut self, cmd: SessionCommand, batch: &mut Batch) {
        match cmd {
            SessionCommand::Admit { device, scene, key } => {
                self.engine.admit(Instant::now(), device, scene, key, batch)
            }
            SessionCommand::Revoke { device } => self.engine.revoke(device, batch),
            SessionCommand::Drop { scene } => {
                self.engine.drop_scene(scene, batch);
                if let Some(r) = self.replica.as_ref() {
                    r.forget_handed_in(Some(scene));
                }
            }
            SessionCommand::Reset => {
                self.engine.reset(batch);
                if let Some(r) = self.replica.as_mut() {
                    r.reset();
                }
            }
            SessionCommand::Handover { scene, to, epoch } => {
                self.engine.handover(scene, to, epoch, batch)
            }
            SessionCommand::Mirror {
                pair,
                endpoint,
                key,
            } => {
                if let Some(r) = self.replica.as_mut() {
                    r.mirror(pair, &endpoint, key);
                }
            }
            SessionCommand::Unmirror { pair } => {
                if let Some(r) = self.replica.as_mut() {
                    r.unmirror(pair, Instant::now());
                }
            }
            SessionCommand::Follow {
                pair,
                me,
                endpoint,
                key,
                scenes,
            } => {
                if let Some(r) = self.replica.as_mut() {
                    r.follow(pair, me, &endpoint, key, scenes);
                }
            }
            SessionCommand::Zones { scene, zoning } => self.engine.set_zoning(scene, zoning),
            SessionCommand::MoveDevice {
                device,
                pair,
                to,
                epoch,
            } => {
                self.engine.move_device(device, pair, to, epoch, batch);
                if let Some(r) = self.replica.as_ref() {
                    r.moved(device);
                }
            }
            SessionCommand::Expect { device } => {
                if let Some(r) = self.replica.as_mut() {
                    r.expect(device, Instant::now());
                }
            }
            SessionCommand::Unfollow { pair, adopt } => {
                if let Some(r) = self.replica.as_mut() {
                    r.unfollow(pair, Instant::now(), &mut self.engine);
                }
                if adopt {
                    self.engine.proxy_adopt(pair, batch);
                }
            }
            SessionCommand::Promote {
                scene,
                to,
                epoch,
                serving,
            } => {
                if let Some(r) = self.replica.as_mut() {
                    let now = Instant::now();
                    r.promote(&mut self.engine, scene, to, epoch, &serving, now, batch);
                }
            }
        }
    }

    /// Answers an authentic probe (a forged one is a `bad_tag` drop).
    fn answer_probe(&mut self, from: std::net::SocketAddr, bytes: &[u8]) {
        let replica = &self.replica;
        let fanout = || replica.as_ref().is_some_and(|r| r.fanout_alive());
        match self.probes.answer(bytes, fanout) {
            Some(ack) => {
                self.stats.probes_answered.fetch_add(1, Relaxed);
                let _ = self.socket.send_to(&ack, from);
            }
            None => self.engine.count_drop(DropReason::BadTag),
        }
    }

    fn publish_counters(&self, received: u64) {
        self.stats.ingest_datagrams.store(received, Relaxed);
        self.stats
            .ingest_accepted
            .store(self.engine.accepted(), Relaxed);
        self.stats.store_drops(self.engine.drops());
        let (in_order, gave_up) = self.engine.reordered();
        self.stats.reordered_in_order.store(in_order, Relaxed);
        self.stats.reordered_gave_up.store(gave_up, Relaxed);
        let (out, into) = self.engine.moves();
        self.stats.devices_moved_out.store(out, Relaxed);
        self.stats.devices_moved_in.store(into, Relaxed);
    }
}
