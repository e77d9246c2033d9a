//! A controller replica (pure: `now` comes in, no sockets, no disk). One replica of a set is
//! **active**: it holds the lock under a term, decides (serves writes, ticks), and numbers each
//! group of durable changes as a [`Batch`]; the others are **passive**: they follow the active
//! (`replica.follow`, a long poll whose next ask acknowledges what the last answer brought),
//! apply its batches to their own state and log, and serve the read-only ops (`scene.list`,
//! `scene.get`, `device.locate`, `cluster.status`, `discovery`); writes get `not_active`
//! naming the active. A replica that gets the lock takes over under a higher term
//! (`take_over`); an answer or order from a lower term than one already seen is refused.
//!
//! The server (`control::server`) drives it: it persists what `commit` and `on_follow` return
//! before anything depends on them, and releases each reply once `released` covers the batch
//! it depends on (with [`AckMode::Replica`], once a passive holds that batch too).

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod lock;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::limits::Source;
use super::protocol::{
    ControlError, ControllerStatus, Discovered, FollowAnswer, Reply, Request, SteppingDown,
};
use super::store::{Batch, Snapshot};
use super::{Change, Controller};

/// Batches kept in memory for passives that fall behind (older: a snapshot).
pub const HISTORY: usize = 16_384;
/// Batches one follow answer carries at most.
const MAX_BATCHES: usize = 4096;
/// A passive not heard from for this long no longer counts for acknowledgements or status
/// (plus the lock's lapse, see [`Node::set_lock_lapse`]).
pub const FOLLOWER_TIMEOUT: Duration = Duration::from_secs(1);
/// A follow ask the active holds this long at most when it has nothing new (the passive
/// learns the active is alive, and gets the pairs' soft state): a passive in sync hears
/// from the active at least this often.
pub const PARK: Duration = Duration::from_millis(200);
/// Margin between a passive's own idea of being in sync and the active's idea of it.
const SYNC_MARGIN: Duration = Duration::from_millis(100);

/// When a write's reply may go out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AckMode {
    /// Once the active's own log holds it (fsynced).
    #[default]
    Local,
    /// Once the active's log and the log of every live passive (heard from within the
    /// follower timeout) hold it. With no live passive, as `Local` (the active keeps
    /// serving; `cluster.status` shows no follower).
    Replica,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Active,
    Passive,
    /// Was active, handing over: decides nothing, waits for its passives to catch up.
    Leaving,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Passive => "passive",
            Role::Leaving => "leaving",
        }
    }
}

/// What serving a request came to. (One per request, moved once: its size does not matter.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Served {
    Reply(Result<Reply, ControlError>),
    /// A follow with nothing new yet: answer it when a batch comes (or, empty, after a while).
    Park {
        after: u64,
    },
}

/// What a passive must write down from a follow answer, in order, before acknowledging it.
#[derive(Debug)]
pub enum Persist {
    Replace(Snapshot),
    Append(Batch),
}

struct Follower {
    /// The last batch it acknowledged (0 until its history matches ours).
    acked: u64,
    seen: Instant,
}

/// One controller replica.
pub struct Node {
    controller: Controller,
    endpoint: String,
    role: Role,
    ack: AckMode,
    /// The last batch this replica holds, and the term it was written under.
    seq: u64,
    seq_term: u64,
    /// Recent batches, and the (seq, term) of the one just before them.
    history: VecDeque<Batch>,
    base: (u64, u64),
    followers: BTreeMap<String, Follower>,
    /// The active's endpoint as far as this replica knows.
    active: Option<String>,
    /// The highest term seen from anyone.
    known_term: u64,
    /// How long a silent passive still counts as live (for acknowledgements).
    follower_timeout: Duration,
    /// When this replica (a passive) last applied an answer from the active, and that
    /// active's term.
    synced_at: Option<Instant>,
    synced_term: u64,
    /// Since when this replica has wanted the lock while out of sync.
    stale_since: Option<Instant>,
    /// Set when this replica stops leading: the last batch every live passive held then.
    /// Replies waiting on later batches must not claim success (see [`Node::take_demotion`]).
    demoted: Option<u64>,
    /// What this replica decided as the active but had not committed when it stopped
    /// leading: its own last batch, still to persist (the next `commit` returns it).
    tail: Option<Batch>,
}

impl Node {
    /// A passive replica holding `controller`'s state as of batch `seq`; it serves once it
    /// takes over or follows an active.
    pub fn new(controller: Controller, endpoint: &str, seq: u64, ack: AckMode) -> Node {
        let term = controller.term();
        Node {
            controller,
            endpoint: endpoint.to_string(),
            role: Role::Passive,
            ack,
            seq,
            seq_term: term,
            history: VecDeque::new(),
            base: (seq, term),
            followers: BTreeMap::new(),
            active: None,
            known_term: term,
            follower_timeout: FOLLOWER_TIMEOUT,
            synced_at: None,
            synced_term: 0,
            stale_since: None,
            demoted: None,
            tail: None,
        }
    }

    /// How long after its holder dies the lock can be free (a file lock: at once; an etcd
    /// lease: its TTL, twice over, as a new etcd leader renews every lease once). A passive
    /// counts as live for that long more, so one that was in sync when the active died is
    /// still in sync, by the active's reckoning, when the lock comes free.
    pub fn set_lock_lapse(&mut self, lapse: Duration) {
        self.follower_timeout = FOLLOWER_TIMEOUT + lapse;
    }

    /// Whether this passive may try the lock now (`lock_term`: the last term the lock
    /// recorded; `free`: nobody holds it). Acknowledged writes are on the active and on
    /// every passive it counted as live (`released`), and a passive whose last answer from
    /// the active is more recent than `follower_timeout - PARK - margin` was counted live by
    /// then: such a passive, taking over, holds every acknowledged write, so it campaigns at
    /// once. So does any replica of
    /// a set whose lock was never held (nothing to lose). Any other (restarted, or cut off
    /// from the active for a while) waits `2 * follower_timeout` first, giving one in sync the
    /// lock; after that it takes over with what it has (availability after a disaster:
    /// writes acknowledged while it was away are then on the old active's disk only, see
    /// the README's runbook). One holding batches of the lock's last term waits only
    /// `follower_timeout`, so it goes before those that hold none; one holding nothing at
    /// all never takes over a set that was led. Stale replicas do not compare their
    /// progress with each other's beyond that (they do not know each other).
    pub fn may_campaign(&mut self, now: Instant, lock_term: u64, free: bool) -> bool {
        if self.role != Role::Passive || !free {
            // Only time with the lock free counts as waiting.
            self.stale_since = None;
            return false;
        }
        let window = self.follower_timeout.saturating_sub(PARK + SYNC_MARGIN);
        let in_sync = self.synced_term == lock_term
            && self
                .synced_at
                .is_some_and(|t| now.saturating_duration_since(t) < window);
        if lock_term > 0 && self.seq == 0 {
            // It holds nothing of a set that was led: taking over would forget the region.
            // It waits for a replica that holds state (or an operator's `--restore`).
            return false;
        }
        if lock_term == 0 || in_sync {
            self.stale_since = None;
            return true;
        }
        // One holding batches of the lock's last term (it led then, or followed who did)
        // has what acknowledged writes of that term have and the others lack: it goes first.
        let wait = if self.seq_term == lock_term {
            self.follower_timeout
        } else {
            2 * self.follower_timeout
        };
        let since = *self.stale_since.get_or_insert(now);
        now.saturating_duration_since(since) >= wait
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn term(&self) -> u64 {
        self.controller.term()
    }

    /// The highest term this replica has seen.
    pub fn known_term(&self) -> u64 {
        self.known_term
    }

    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The active's endpoint, as far as this replica knows.
    pub fn active(&self) -> Option<&str> {
        self.active.as_deref()
    }

    /// What the lock says about the active (a passive learns where to follow from it).
    pub fn learn_active(&mut self, term: u64, endpoint: Option<String>) {
        if term >= self.known_term && self.role == Role::Passive {
            self.known_term = term;
            self.active = endpoint.filter(|e| *e != self.endpoint);
        }
    }

    /// Becomes the active under `term` (it holds the lock). Returns the batch recording the
    /// new term, to persist before serving; `None` if `term` is not above every term seen.
    pub fn take_over(&mut self, now: Instant, term: u64) -> Option<Batch> {
        if term <= self.known_term || !self.controller.take_over(now, term) {
            return None;
        }
        self.known_term = term;
        self.role = Role::Active;
        self.active = Some(self.endpoint.clone());
        self.followers.clear();
        self.synced_at = None;
        self.stale_since = None;
        self.commit()
    }

    /// Stops deciding (graceful hand-over): writes are refused from now on.
    pub fn step_down(&mut self) {
        if self.role == Role::Active {
            self.role = Role::Leaving;
        }
    }

    /// A leaving active lets go: it follows whoever takes the lock next, and it holds
    /// everything it wrote, so it counts as in sync (it may take the lock back if no other
    /// replica in sync does).
    pub fn release_lead(&mut self, now: Instant) {
        let term = self.term();
        self.become_passive(now);
        self.synced_at = Some(now);
        self.synced_term = term;
    }

    /// Follows whoever holds the lock next (after a hand-over, or when fenced).
    pub fn become_passive(&mut self, now: Instant) {
        if self.role != Role::Passive {
            // Changes decided in the current burst still go to this replica's own log (its
            // history then differs from the next active's, which sends it a snapshot).
            if let Some(b) = self.commit() {
                self.tail = Some(b);
            }
            let released = self.released(now);
            self.demoted = Some(self.demoted.map_or(released, |d| d.min(released)));
        }
        self.role = Role::Passive;
        self.active = None;
        self.followers.clear();
    }

    /// After this replica stopped leading: the last batch known held by every passive that
    /// counted then. A reply waiting on a later batch must not report success (whoever
    /// leads next may not hold that batch, and the write may vanish): the server answers
    /// it `not_active` instead ("may not have taken effect; retry against the active").
    /// Returns it once.
    pub fn take_demotion(&mut self) -> Option<u64> {
        self.demoted.take()
    }

    /// Whether every live passive holds everything this replica wrote (a leaving active
    /// may release the lock).
    pub fn caught_up(&self, now: Instant) -> bool {
        self.live_followers(now).all(|f| f.acked >= self.seq)
    }

    /// Whether any passive was heard from lately.
    pub fn has_followers(&self, now: Instant) -> bool {
        self.live_followers(now).next().is_some()
    }

    fn live_followers(&self, now: Instant) -> impl Iterator<Item = &Follower> {
        let timeout = self.follower_timeout;
        self.followers
            .values()
            .filter(move |f| now.saturating_duration_since(f.seen) < timeout)
    }

    /// Serves one request.
    pub fn serve(&mut self, now: Instant, source: Source, req: Request) -> Served {
        use Request::*;
        let writable = self.role == Role::Active;
        let result = match req {
            Discovery {} => Ok(Reply::from(self.discovered())),
            // The state checks the token.
            ClusterStatus { .. } => self.controller.handle(now, req).map(|r| match r {
                Reply::Status(mut s) => {
                    s.controllers = self.controllers(now);
                    Reply::Status(s)
                }
                other => other,
            }),
            ReplicaFollow {
                token,
                name,
                after,
                after_term,
                term,
            } => {
                if let Err(e) = self.controller.operator(&token) {
                    return Served::Reply(Err(e));
                }
                return self.follow(now, name, after, after_term, term);
            }
            ControllerStepDown { token } => self.controller.operator(&token).and_then(|_| {
                if !writable {
                    return Err(self.not_active());
                }
                self.step_down();
                Ok(Reply::from(SteppingDown {
                    term: self.term(),
                    seq: self.seq,
                }))
            }),
            ControllerSnapshot { token } => self.controller.operator(&token).map(|_| {
                Reply::from(Snapshot {
                    seq: self.seq,
                    image: self.controller.image(),
                })
            }),
            SceneList { .. } | SceneGet { .. } | DeviceLocate { .. } => {
                self.controller.handle_from(now, source, req)
            }
            _ if !writable => Err(self.not_active()),
            _ => self.controller.handle_from(now, source, req),
        };
        Served::Reply(result)
    }

    /// The answer to a request whose reply waited on a batch the passives may not hold
    /// when this replica stopped leading.
    pub fn unconfirmed() -> ControlError {
        ControlError::not_active(
            None,
            "this controller stopped leading before its passives held this change; it may not \
             have taken effect: retry against the active",
        )
    }

    fn not_active(&self) -> ControlError {
        let msg = match (&self.active, self.role) {
            (_, Role::Leaving) => "this controller is handing over; retry shortly".to_string(),
            (Some(a), _) => format!("this controller is passive; the active is {a}"),
            (None, _) => "this controller is passive and no active is known yet".to_string(),
        };
        ControlError::not_active(
            self.active.clone().filter(|_| self.role == Role::Passive),
            msg,
        )
    }

    fn discovered(&self) -> Discovered {
        Discovered {
            role: self.role.as_str().into(),
            epoch: self.controller.epoch(),
            term: self.known_term,
            active: self.active.clone(),
        }
    }

    fn controllers(&self, now: Instant) -> Vec<ControllerStatus> {
        let mut out = vec![ControllerStatus {
            endpoint: self.endpoint.clone(),
            role: self.role.as_str().into(),
            term: self.term(),
            seq: self.seq,
            lag: 0,
            seen_ms: 0,
        }];
        for (name, f) in &self.followers {
            out.push(ControllerStatus {
                endpoint: name.clone(),
                role: Role::Passive.as_str().into(),
                term: self.term(),
                seq: f.acked,
                lag: self.seq.saturating_sub(f.acked),
                seen_ms: now.saturating_duration_since(f.seen).as_millis() as u64,
            });
        }
        if self.role == Role::Passive {
            if let Some(a) = &self.active {
                out.push(ControllerStatus {
                    endpoint: a.clone(),
                    role: Role::Active.as_str().into(),
                    term: self.known_term,
                    seq: self.seq,
                    lag: 0,
                    seen_ms: 0,
                });
            }
        }
        out
    }

    /// The term of our batch `seq`, if we still know it.
    fn term_at(&self, seq: u64) -> Option<u64> {
        if seq == self.base.0 {
            return Some(self.base.1);
        }
        let first = self.history.front()?.seq;
        let i = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.history.get(i).map(|b| b.term)
    }

    fn follow(
        &mut self,
        now: Instant,
        name: String,
        after: u64,
        after_term: u64,
        term: u64,
    ) -> Served {
        if term > self.known_term {
            // Someone saw a newer term: this replica is an old active and must not lead.
            self.known_term = term;
            if self.role != Role::Passive {
                self.become_passive(now);
            }
        }
        if self.role == Role::Passive {
            return Served::Reply(Err(self.not_active()));
        }
        let matches = after <= self.seq && self.term_at(after) == Some(after_term);
        let f = self.followers.entry(name).or_insert(Follower {
            acked: 0,
            seen: now,
        });
        f.seen = now;
        if matches {
            f.acked = f.acked.max(after);
            if after == self.seq {
                return Served::Park { after };
            }
        }
        Served::Reply(Ok(Reply::from(self.follow_answer(now, after, matches))))
    }

    /// What a passive that holds batch `after` is missing (everything, as a snapshot, if its
    /// history does not match ours). `matches` was decided when the ask came; a parked ask's
    /// `after` may have fallen below the history kept since, and then it gets a snapshot too.
    pub fn follow_answer(&self, now: Instant, after: u64, matches: bool) -> FollowAnswer {
        let incremental = matches && after >= self.base.0;
        let (snapshot, from) = if incremental {
            (None, after)
        } else {
            let snapshot = Snapshot {
                seq: self.seq,
                image: self.controller.image(),
            };
            (Some(snapshot), self.seq)
        };
        let batches = self
            .history
            .iter()
            .filter(|b| b.seq > from)
            .take(MAX_BATCHES)
            .cloned()
            .collect();
        FollowAnswer {
            term: self.term(),
            seq: self.seq,
            snapshot,
            batches,
            live: self.controller.live_view(now),
        }
    }

    /// The request a passive sends to follow the active.
    pub fn follow_request(&self, token: Option<String>) -> Request {
        Request::ReplicaFollow {
            token,
            name: self.endpoint.clone(),
            after: self.seq,
            after_term: self.seq_term,
            term: self.known_term,
        }
    }

    /// Takes a follow answer (on a passive): what to persist, in order, or why it is refused
    /// (an answer from an older term than one seen; batches that do not follow ours).
    pub fn on_follow(
        &mut self,
        now: Instant,
        answer: FollowAnswer,
    ) -> Result<Vec<Persist>, String> {
        if self.role != Role::Passive {
            return Err("not following: this replica is not passive".into());
        }
        if answer.term < self.known_term {
            return Err(format!(
                "an answer from term {} after term {} was seen: refused",
                answer.term, self.known_term
            ));
        }
        self.known_term = answer.term;
        let mut out = Vec::new();
        if let Some(s) = answer.snapshot {
            self.controller.restore(s.image.clone());
            self.seq = s.seq;
            self.seq_term = self.controller.term();
            self.history.clear();
            self.base = (self.seq, self.seq_term);
            out.push(Persist::Replace(s));
        }
        for b in answer.batches {
            if b.seq <= self.seq {
                continue;
            }
            if b.seq != self.seq + 1 {
                return Err(format!("batch {} does not follow {}", b.seq, self.seq));
            }
            self.controller.apply(&b.entries);
            self.push(b.clone());
            out.push(Persist::Append(b));
        }
        self.controller.apply_live(now, &answer.live);
        self.synced_at = Some(now);
        self.synced_term = answer.term;
        Ok(out)
    }

    /// Declares silent pairs dead (the active only: passives decide nothing).
    /// Pairs to probe now (the active's duty; a passive probes no one).
    pub fn due_probes(&mut self, now: Instant) -> Vec<(u32, std::net::SocketAddr)> {
        if self.role == Role::Active {
            self.controller.due_probes(now)
        } else {
            Vec::new()
        }
    }

    /// What a probe found (an active's; ignored on a passive).
    pub fn probe_ended(&mut self, now: Instant, pair: u32, outcome: crate::control::ProbeOutcome) {
        if self.role == Role::Active {
            self.controller.probe_ended(now, pair, outcome);
        }
    }

    pub fn tick(&mut self, now: Instant) -> Vec<Change> {
        if self.role == Role::Active {
            self.controller.tick(now)
        } else {
            Vec::new()
        }
    }

    /// The durable changes since the last commit as the next batch, if there are any.
    pub fn commit(&mut self) -> Option<Batch> {
        if let Some(b) = self.tail.take() {
            return Some(b);
        }
        if self.role != Role::Active {
            return None;
        }
        let entries = self.controller.commit();
        if entries.is_empty() {
            return None;
        }
        let batch = Batch {
            seq: self.seq + 1,
            term: self.controller.term(),
            entries,
        };
        self.push(batch.clone());
        Some(batch)
    }

    fn push(&mut self, batch: Batch) {
        self.seq = batch.seq;
        self.seq_term = batch.term;
        self.history.push_back(batch);
        while self.history.len() > HISTORY {
            if let Some(b) = self.history.pop_front() {
                self.base = (b.seq, b.term);
            }
        }
    }

    /// Replies depending on batches up to this one may go out (given they are in our own
    /// log): all of ours with `AckMode::Local` or no live passive, else what every live
    /// passive acknowledged (so whichever passive in sync takes over holds it, see
    /// `may_campaign`). A new active does not wait for passives to start following: its
    /// replies (heartbeats among them) must not stall while it has none; a write it alone
    /// holds is lost only if it fails before a passive follows and a stale replica then takes
    /// over (a replica that followed it holds the new term's batches and goes first).
    pub fn released(&self, now: Instant) -> u64 {
        match self.ack {
            AckMode::Local => self.seq,
            AckMode::Replica => self
                .live_followers(now)
                .map(|f| f.acked)
                .min()
                .unwrap_or(self.seq),
        }
    }
}
