//! The controller's loop: requests in bursts, a tick, one commit per burst made durable
//! before its replies go out, follow asks held until there is news, the passive's follow
//! link, the lock, and the graceful hand-over.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::follow::Follow;
use super::io::{self, Incoming};
use super::probe::Probes;
use super::{log_change, ServerOptions, BURST, LEAVE_WAIT, LOCK_EVERY, PARK};
use crate::control::client::RequestError;
use crate::control::limits::Source;
use crate::control::protocol::{decode, Reply, Request};
use crate::control::replica::lock::Lock;
use crate::control::replica::{Node, Persist, Role, Served};
use crate::control::stats::ControlStats;
use crate::control::store::{Batch, Store};
use crate::control::ProbeOutcome;

/// A reply waiting for the batch it depends on to be released.
struct Pending {
    seq: u64,
    envelope: Vec<zmq::Message>,
    body: Vec<u8>,
    /// The request's op (`ControlStats::op_index`) and when its burst was taken: the
    /// latency histogram gets receipt to reply.
    op: usize,
    received: Instant,
}

/// A follow ask held until there is a batch after `after`, or `until`.
struct Parked {
    after: u64,
    until: Instant,
    envelope: Vec<zmq::Message>,
}

pub struct Server {
    socket: zmq::Socket,
    monitor: zmq::Socket,
    node: Node,
    store: Option<Store>,
    lock: Option<Box<dyn Lock>>,
    follow: Follow,
    token: Option<String>,
    tick_every: Duration,
    probes: Probes,
    stats: Arc<ControlStats>,
    stop: Arc<AtomicBool>,
    leave: Arc<AtomicBool>,
    pending: VecDeque<Pending>,
    parked: Vec<Parked>,
    next_tick: Instant,
    next_lock: Instant,
    /// No follow ask before this (after a refusal or an error).
    next_follow: Instant,
    /// A leaving active lets go of the lock by then at the latest.
    leave_by: Option<Instant>,
    /// When a passive last applied a follow answer (its readiness).
    last_followed: Option<Instant>,
}

impl Drop for Server {
    fn drop(&mut self) {
        io::unwatch(&mut self.socket, &self.monitor);
    }
}

impl Server {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        socket: zmq::Socket,
        monitor: zmq::Socket,
        node: Node,
        store: Option<Store>,
        options: ServerOptions,
        stats: Arc<ControlStats>,
        stop: Arc<AtomicBool>,
        leave: Arc<AtomicBool>,
    ) -> Server {
        let mut node = node;
        if let Some(lock) = &options.lock {
            node.set_lock_lapse(lock.lapse());
        }
        let config = node.controller().config();
        let now = Instant::now();
        Server {
            tick_every: (config.dead_after / 10).max(Duration::from_millis(5)),
            probes: Probes::new(
                &config.token,
                (config.dead_after / 2).max(config.heartbeat_interval),
            ),
            token: Some(config.token.clone()),
            socket,
            monitor,
            store,
            lock: options.lock,
            follow: Follow::new(options.curve.as_client()),
            node,
            stats,
            stop,
            leave,
            pending: VecDeque::new(),
            parked: Vec::new(),
            next_tick: now,
            next_lock: now,
            next_follow: now,
            leave_by: None,
            last_followed: None,
        }
    }

    /// Becomes active at once when there is no lock (a lone controller); with a lock, the
    /// first look at it happens in the loop.
    pub fn start(&mut self, now: Instant) -> Result<(), String> {
        if self.lock.is_none() {
            let term = self.node.known_term() + 1;
            let batch = self.node.take_over(now, term);
            self.persist(batch)?;
        }
        Ok(())
    }

    pub fn serve(&mut self) {
        while !self.stop.load(Relaxed) {
            self.wait();
            let now = Instant::now();
            let mut replies = Vec::new();
            for _ in 0..BURST {
                match io::receive(&self.socket, &self.stats) {
                    Some(Some(incoming)) => {
                        if let Some(r) = self.request(now, incoming) {
                            replies.push(r);
                        }
                    }
                    Some(None) => {}
                    None => break,
                }
            }
            while let Some(event) = io::monitor_event(&self.monitor) {
                self.stats.connection(event);
            }
            let now = Instant::now();
            if let Err(e) = self.follow_answer(now) {
                tracing::warn!("{e}");
                return;
            }
            // A probe that confirms a suspicion is acted on at once, not at the next tick.
            let mut confirmed = false;
            for (pair, outcome) in self.probes.collect(now) {
                self.stats.probe(outcome);
                confirmed |= matches!(outcome, ProbeOutcome::Refused | ProbeOutcome::NotServing);
                self.node.probe_ended(now, pair, outcome);
            }
            if now >= self.next_tick || confirmed {
                for change in self.node.tick(now) {
                    self.stats.change(&change);
                    log_change(&change);
                }
                self.next_tick = now + self.tick_every;
            }
            for (pair, addr) in self.node.due_probes(now) {
                if let Some(outcome) = self.probes.send(now, pair, addr) {
                    self.stats.probe(outcome);
                    self.node.probe_ended(now, pair, outcome);
                    self.next_tick = now;
                }
            }
            let batch = self.node.commit();
            if let Err(e) = self.persist(batch) {
                // A controller that cannot make its decisions durable must not answer them.
                tracing::error!("stopping: {e}");
                return;
            }
            let seq = self.node.seq();
            self.pending
                .extend(replies.into_iter().map(|(envelope, body, op)| Pending {
                    seq,
                    envelope,
                    body,
                    op,
                    received: now,
                }));
            self.publish_gauges(now);
            self.answer_parked(now);
            self.release(now);
            if now >= self.next_lock {
                self.next_lock = now + LOCK_EVERY;
                if self.lock_duties(now) {
                    return;
                }
            }
            self.ask_active(now);
        }
    }

    /// Waits for a request, a follow answer or the next timer.
    fn wait(&self) {
        let now = Instant::now();
        let mut until = self.next_tick.min(self.next_lock);
        if let Some(d) = self.probes.deadline() {
            until = until.min(d);
        }
        for p in &self.parked {
            until = until.min(p.until);
        }
        if !self.pending.is_empty() {
            // Replies waiting for a passive's acknowledgement: look again soon.
            until = until.min(now + Duration::from_millis(1));
        }
        let wait = until
            .saturating_duration_since(now)
            .min(Duration::from_millis(50));
        let mut items = vec![
            self.socket.as_poll_item(zmq::POLLIN),
            self.monitor.as_poll_item(zmq::POLLIN),
        ];
        if let Some(f) = self.follow.socket() {
            items.push(f.as_poll_item(zmq::POLLIN));
        }
        items.extend(self.probes.poll_items());
        // Rounded up: a wait under a millisecond must not become a busy poll.
        let ms = wait.as_micros().div_ceil(1000) as i64;
        if zmq::poll(&mut items, ms).is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Serves one request: its reply body, or `None` when it was parked or dropped.
    fn request(
        &mut self,
        now: Instant,
        mut incoming: Incoming,
    ) -> Option<(Vec<zmq::Message>, Vec<u8>, usize)> {
        let source = Source::from_peer(incoming.body.gets("Peer-Address"));
        let mut follow = false;
        let mut op = ControlStats::op_index(None);
        let served = match decode(&incoming.body) {
            Ok(req) => {
                op = ControlStats::op_index(Some(req.op()));
                self.stats.request(Some(req.op()));
                follow = matches!(req, Request::ReplicaFollow { .. });
                self.node.serve(now, source, req)
            }
            Err(e) => {
                self.stats.request(None);
                Served::Reply(Err(e))
            }
        };
        let reply = match served {
            Served::Park { after } => {
                self.parked.push(Parked {
                    after,
                    until: now + PARK,
                    envelope: incoming.envelope,
                });
                return None;
            }
            Served::Reply(r) => r,
        };
        let json = match reply {
            Ok(r) => r.to_json(),
            Err(e) => {
                self.stats.error(e.code);
                e.to_json()
            }
        };
        let envelope = std::mem::take(&mut incoming.envelope);
        if follow {
            // A follow answer carries only batches already durable here, and it is what
            // brings the acknowledgements other replies wait for: it never waits itself.
            io::send(&self.socket, envelope, json.to_string().as_bytes());
            return None;
        }
        Some((envelope, json.to_string().into_bytes(), op))
    }

    /// Appends a batch to the log and makes it durable.
    fn persist(&mut self, batch: Option<Batch>) -> Result<(), String> {
        let (Some(store), Some(batch)) = (self.store.as_mut(), batch) else {
            return Ok(());
        };
        store
            .append_batch(&batch)
            .and_then(|_| store.sync())
            .map_err(|e| e.to_string())?;
        if store.should_compact() {
            store
                .compact(&self.node.controller().image())
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Answers held follow asks that have news, or whose time is up.
    fn answer_parked(&mut self, now: Instant) {
        let seq = self.node.seq();
        let active = self.node.role() != Role::Passive;
        let (due, held): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| !active || p.after < seq || now >= p.until);
        self.parked = held;
        for p in due {
            let reply = if active {
                Reply::from(self.node.follow_answer(now, p.after, true)).to_json()
            } else {
                crate::control::ControlError::not_active(None, "no longer active").to_json()
            };
            io::send(&self.socket, p.envelope, reply.to_string().as_bytes());
        }
    }

    /// Replies waiting on batches the passives may not hold when this replica stopped
    /// leading get `not_active` instead (replies queued after that moment too: reads
    /// served in the same burst; the client retries them).
    fn fail_unconfirmed(&mut self) {
        let Some(held) = self.node.take_demotion() else {
            return;
        };
        let error = Node::unconfirmed();
        let body = error.to_json().to_string().into_bytes();
        for p in self.pending.iter_mut().filter(|p| p.seq > held) {
            self.stats.error(error.code);
            p.body = body.clone();
        }
    }

    /// The gauges a scrape shows: role, term, epoch, pairs, scenes, devices, in sync.
    fn publish_gauges(&self, now: Instant) {
        let c = self.node.controller();
        let (pairs, alive, scenes, devices) = c.gauges();
        let role = self.node.role();
        let synced = match role {
            Role::Active | Role::Leaving => true,
            // A healthy passive gets an answer at least every PARK.
            Role::Passive => self
                .last_followed
                .is_some_and(|at| now.saturating_duration_since(at) <= PARK * 3),
        };
        self.stats.set_gauges(crate::control::stats::Gauges {
            active: role == Role::Active,
            synced,
            term: self.node.term(),
            epoch: c.epoch(),
            pairs: pairs as u64,
            pairs_alive: alive as u64,
            scenes: scenes as u64,
            devices: devices as u64,
        });
    }

    /// Sends the replies whose batches are released.
    fn release(&mut self, now: Instant) {
        self.fail_unconfirmed();
        let released = self.node.released(now);
        while self.pending.front().is_some_and(|p| p.seq <= released) {
            if let Some(p) = self.pending.pop_front() {
                io::send(&self.socket, p.envelope, &p.body);
                self.stats.latency(p.op, p.received.elapsed());
            }
        }
    }

    /// A passive asks the active for what follows, when one is known and no ask is out.
    fn ask_active(&mut self, now: Instant) {
        if self.node.role() != Role::Passive || now < self.next_follow {
            return;
        }
        let Some(active) = self.node.active().map(str::to_string) else {
            return;
        };
        let ask = self.node.follow_request(self.token.clone());
        if let Err(e) = self.follow.ask(now, &active, &ask) {
            tracing::warn!("cannot follow {active}: {e}");
            self.next_follow = now + Duration::from_millis(100);
        }
    }

    /// Takes the active's answer (a passive): applies it, persists it, then asks again.
    fn follow_answer(&mut self, now: Instant) -> Result<(), String> {
        let Some(answer) = self.follow.answer() else {
            return Ok(());
        };
        let answer = match answer {
            Ok(a) => a,
            Err(RequestError::Refused(_)) => {
                // Not (or no longer) the active: wait for the lock to say who is.
                if self.node.role() == Role::Passive {
                    self.follow.drop_socket();
                }
                self.next_follow = now + Duration::from_millis(50);
                return Ok(());
            }
            Err(e) => {
                tracing::warn!("following: {e}");
                self.follow.drop_socket();
                self.next_follow = now + Duration::from_millis(100);
                return Ok(());
            }
        };
        let persist = match self.node.on_follow(now, answer) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("refused a follow answer: {e}");
                self.follow.drop_socket();
                self.next_follow = now + Duration::from_millis(100);
                return Ok(());
            }
        };
        self.last_followed = Some(now);
        if let Some(store) = self.store.as_mut() {
            for p in &persist {
                match p {
                    Persist::Replace(s) => store.replace(&s.image, s.seq),
                    Persist::Append(b) => store.append_batch(b),
                }
                .map_err(|e| format!("stopping: {e}"))?;
            }
            if !persist.is_empty() {
                store.sync().map_err(|e| format!("stopping: {e}"))?;
            }
        }
        Ok(())
    }

    /// Takes, checks or lets go of the lock. Returns true when the server is to stop.
    fn lock_duties(&mut self, now: Instant) -> bool {
        let leaving = self.leave.load(Relaxed);
        if leaving && self.node.role() == Role::Active {
            tracing::info!(
                "handing over (term {}, batch {})",
                self.node.term(),
                self.node.seq()
            );
            self.node.step_down();
        }
        let Some(lock) = self.lock.as_mut() else {
            return leaving;
        };
        match self.node.role() {
            Role::Leaving => {
                let by = *self.leave_by.get_or_insert(now + LEAVE_WAIT);
                if self.node.caught_up(now) || now >= by {
                    lock.release();
                    self.leave_by = None;
                    self.node.release_lead(now);
                    self.fail_unconfirmed();
                    tracing::info!("released the lock; now passive");
                    // Give the others the first go at the lock (while this one still
                    // counts as in sync, so it can take it back if nobody in sync does).
                    self.next_lock = now + Duration::from_millis(300);
                    return leaving;
                }
            }
            Role::Active => {
                if !lock.held() {
                    tracing::warn!("lost the {}: now passive", lock.describe());
                    self.node.become_passive(now);
                    let batch = self.node.commit();
                    if let Err(e) = self.persist(batch) {
                        tracing::error!("stopping: {e}");
                        return true;
                    }
                    self.fail_unconfirmed();
                }
            }
            Role::Passive if leaving => return true,
            Role::Passive => {
                let (term, holder) = match lock.holder() {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!("{e}");
                        return false;
                    }
                };
                // Ours: won by the lock's own thread (etcd) after `may_campaign` allowed it
                // (the record holds our new term already): take it.
                if holder.as_deref() == Some(self.node.endpoint()) {
                    return self.campaign(now);
                }
                if self.node.may_campaign(now, term, holder.is_none()) {
                    return self.campaign(now);
                } else {
                    self.node.learn_active(term, holder);
                }
            }
        }
        false
    }

    /// Tries the lock (a passive allowed to) and takes over if it gets it. Returns true when
    /// the server is to stop.
    fn campaign(&mut self, now: Instant) -> bool {
        let Some(lock) = self.lock.as_mut() else {
            return false;
        };
        match lock.try_acquire(self.node.endpoint(), self.node.known_term()) {
            Ok(Some(term)) => {
                self.follow.drop_socket();
                let batch = self.node.take_over(now, term);
                if batch.is_none() {
                    lock.release();
                    return false;
                }
                if let Err(e) = self.persist(batch) {
                    tracing::error!("stopping: {e}");
                    return true;
                }
                tracing::info!("active under term {term} (batch {})", self.node.seq());
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("{e}"),
        }
        false
    }
}
