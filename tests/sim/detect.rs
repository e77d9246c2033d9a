//! Failure detection in the simulation: the controller's probes of suspects (answered by a
//! live pair, refused by the host of a crashed one, lost with an isolated host, held by a
//! frozen one), a stalled controller, and the invariants detection keeps:
//!
//! 5. **No false failover.** A live pair is never declared dead unless it was frozen or cut
//!    off (a silent host) within the widest window, or the network loses messages: a stalled
//!    controller, heartbeats up to [`SLOW_LAG`] late, and a standby's cut stream kill no one.
//! 6. **Fast confirmation.** A pair that crashes on a reachable host (its port refuses
//!    probes) is declared dead, its scenes moved, within [`DETECT_BOUND`], well inside the
//!    floor window, when nothing else went wrong meanwhile.

use std::time::Duration;

use zonecast::control::{Change, ProbeOutcome};

use crate::net::{us, Node, Payload};
use crate::world::World;

/// How long the controller waits for a probe's answer (its server: half the floor window).
pub const PROBE_TIMEOUT: u64 = 125_000;
/// How late a slow pair's messages may be (a loaded host): its heartbeats and its probe
/// answers. The design promises no false failover up to here: a heartbeat sent at least
/// every 150 ms (interval + a call timeout) arrives at most 250 ms after the last, the floor
/// window, and a probe answer comes before the probe's timeout.
pub const SLOW_LAG: u64 = 100_000;
/// Crash to death: two heartbeat intervals of silence, a tick, the probe's round trip, and
/// the control delays, with room to spare; the floor window alone would be 250 ms.
pub const DETECT_BOUND: Duration = Duration::from_millis(200);
/// How long after a freeze or isolation ends its pair may still be declared dead for it.
const EXCUSE: u64 = 2_300_000;

impl World {
    /// Sends the probes the controller wants now (it looks after every tick and request, as
    /// its server does each turn of its loop).
    pub fn send_probes(&mut self) {
        if self.now < self.stalled_until {
            return;
        }
        for (pair, addr) in self.controller.due_probes(self.instant()) {
            self.log(|| format!("controller probes pair {pair} at {addr}"));
            self.probes.insert(pair, self.now);
            match self.pairs.iter().position(|p| p.addr == addr) {
                Some(inc) => {
                    let payload = Payload::Probe { pair };
                    self.net.send(
                        &mut self.rng,
                        self.now,
                        Node::Controller,
                        Node::Pair(inc),
                        payload,
                    );
                }
                None => self.probe_answered(pair, ProbeOutcome::Refused),
            }
        }
    }

    /// A probe reaches the host of pair incarnation `inc`: a live process answers as the
    /// pair it is registered as; the kernel of a crashed one refuses.
    pub fn probe_received(&mut self, inc: usize, pair: u32) {
        let payload = if self.pairs[inc].alive {
            let id = self.pairs[inc].tracker.pair().unwrap_or(0);
            Payload::ProbeAck {
                pair,
                answer_as: id,
            }
        } else {
            Payload::ProbeRefused { pair }
        };
        self.net.send(
            &mut self.rng,
            self.now,
            Node::Pair(inc),
            Node::Controller,
            payload,
        );
    }

    /// What came back for the probe of `pair`, if it is still awaited.
    pub fn probe_answered(&mut self, pair: u32, outcome: ProbeOutcome) {
        if self.probes.remove(&pair).is_none() {
            return;
        }
        self.log(|| format!("probe of pair {pair}: {outcome:?}"));
        self.controller.probe_ended(self.instant(), pair, outcome);
        if matches!(outcome, ProbeOutcome::Refused | ProbeOutcome::NotServing) {
            self.outcome.confirmed += 1;
            self.force_tick();
        }
    }

    /// A probe answer, as the controller reads it.
    pub fn controller_probe(&mut self, payload: Payload) {
        match payload {
            Payload::ProbeAck { pair, answer_as } => {
                let outcome = if answer_as == pair {
                    ProbeOutcome::Answered
                } else {
                    ProbeOutcome::NotServing
                };
                self.probe_answered(pair, outcome);
            }
            Payload::ProbeRefused { pair } => self.probe_answered(pair, ProbeOutcome::Refused),
            _ => {}
        }
    }

    /// Probes unanswered for too long.
    pub fn expire_probes(&mut self) {
        if self.now < self.stalled_until {
            return;
        }
        let late: Vec<u32> = self
            .probes
            .iter()
            .filter(|(_, at)| self.now >= **at + PROBE_TIMEOUT)
            .map(|(p, _)| *p)
            .collect();
        for pair in late {
            self.probe_answered(pair, ProbeOutcome::TimedOut);
        }
    }

    pub fn probe_deadline(&self) -> Option<u64> {
        let t = self.probes.values().map(|at| at + PROBE_TIMEOUT).min()?;
        Some(t.max(self.stalled_until))
    }

    /// A pair fault that makes a death legitimate for a while (frozen, cut off).
    pub fn excuse(&mut self, inc: usize, until: u64) {
        let e = self.excused.entry(inc).or_default();
        *e = (*e).max(until + EXCUSE);
    }

    /// Invariant 5, at every death the controller declares.
    pub fn check_death(&mut self, change: &Change) -> Result<(), String> {
        let Change::PairDead { pair, cause, .. } = change else {
            return Ok(());
        };
        let Some(inc) = self.pair_with_id(*pair).filter(|i| self.pairs[*i].alive) else {
            return Ok(());
        };
        // A live pair declared dead: the scenes move again, so re-homing is not bounded from
        // an earlier crash.
        self.last_fault = self.now;
        let excused = self.excused.get(&inc).is_some_and(|t| *t >= self.now);
        // (Losses just before the network became lossless may still explain it: what was
        // lost then is missed for up to the longest window.)
        let window = crate::net::us(self.controller.config().dead_after_max);
        let lossy_lately = self.lossless_since.is_some_and(|t| self.now < t + window);
        if excused || self.net.profile.drop > 0.0 || lossy_lately {
            return Ok(());
        }
        Err(format!(
            "false failover: live pair #{inc} (id {pair}) declared dead ({cause}), neither frozen nor cut off, on a lossless network"
        ))
    }

    /// Invariant 6: the crash of `inc` at `at` was acted on in time.
    pub fn check_declared(&mut self, inc: usize, at: u64) -> Result<(), String> {
        let Some(id) = self.pairs[inc].id else {
            return Ok(());
        };
        let slow = self
            .net
            .slow
            .get(&Node::Pair(inc))
            .is_some_and(|(until, _)| *until > at);
        let quiet = self.last_fault <= at
            && self.net.profile.drop == 0.0
            && self.stalled_until <= at
            && !slow
            && self.excused.get(&inc).is_none_or(|t| *t < at);
        if !quiet {
            return Ok(());
        }
        self.outcome.detect_checks += 1;
        if self.controller.is_alive(id) {
            return Err(format!(
                "detection: pair #{inc} (id {id}) crashed {} ms ago on a reachable host and is still alive",
                us(DETECT_BOUND) / 1000
            ));
        }
        Ok(())
    }
}
