//! The controller's counters: requests by op, error replies by code, messages dropped unread,
//! and connection events from libzmq's socket monitor. Written by the server thread, read by
//! the metrics endpoint (relaxed atomics: each counter is exact, a scrape is not a snapshot).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::protocol::{ErrorCode, OPS};
use super::{Cause, Change, ProbeOutcome};
use crate::net::histogram::Histogram;

/// Why a message got no reply at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Its routing envelope is not a REQ/DEALER envelope (too many or too large frames):
    /// echoing it back would reflect the sender's bytes.
    Envelope,
}

/// What libzmq's monitor reports about connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connection {
    Accepted,
    /// Closed by the peer, or by libzmq for breaking a bound (frame, message or frame count)
    /// or the protocol after the handshake.
    Closed,
    /// The ZMTP greeting or handshake was malformed.
    HandshakeProtocol,
    /// CURVE authentication failed (a client with the wrong server key, or plain ZMTP to an
    /// encrypted controller).
    HandshakeAuth,
    /// The handshake did not finish in time, or failed for another reason.
    HandshakeOther,
}

impl Connection {
    const ALL: [Connection; 5] = [
        Connection::Accepted,
        Connection::Closed,
        Connection::HandshakeProtocol,
        Connection::HandshakeAuth,
        Connection::HandshakeOther,
    ];

    fn name(self) -> &'static str {
        match self {
            Connection::Accepted => "accepted",
            Connection::Closed => "closed",
            Connection::HandshakeProtocol => "handshake_failed_protocol",
            Connection::HandshakeAuth => "handshake_failed_auth",
            Connection::HandshakeOther => "handshake_failed_other",
        }
    }
}

/// The counters.
#[derive(Debug, Default)]
pub struct ControlStats {
    /// By op, in `OPS` order; the last slot counts bodies that named no known op.
    requests: [AtomicU64; OPS.len() + 1],
    errors: [AtomicU64; ErrorCode::ALL.len()],
    dropped_envelope: AtomicU64,
    connections: [AtomicU64; Connection::ALL.len()],
    /// Pairs declared dead: confirmed by a probe, silent for their window.
    deaths: [AtomicU64; 2],
    revivals: AtomicU64,
    stalls: AtomicU64,
    /// Probes by outcome, in `PROBE_OUTCOMES` order.
    probes: [AtomicU64; 4],
    /// Receipt to reply (durable and acknowledged as `--ack` says), by op.
    latency: [Histogram; OPS.len() + 1],
    /// Scenes moved off a dead pair (failovers).
    failovers: AtomicU64,
    gauges: [AtomicU64; 8],
    /// When the loop last published its gauges (Unix ms): a wedged loop is not live.
    loop_at_ms: AtomicU64,
}

/// What the controller holds now, published by its loop after each burst.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Serving (holds the lock).
    pub active: bool,
    /// Active, or a passive that follows the active (it has everything the active wrote,
    /// give or take the batch in flight).
    pub synced: bool,
    pub term: u64,
    pub epoch: u64,
    pub pairs: u64,
    pub pairs_alive: u64,
    pub scenes: u64,
    pub devices: u64,
}

/// What failure detection did (see [`ControlStats::detection`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Detection {
    /// Deaths a probe confirmed (a closed port, or not serving).
    pub deaths_confirmed: u64,
    /// Deaths of pairs silent for their window.
    pub deaths_silent: u64,
    /// Pairs declared dead that came back (each a false failover).
    pub revivals: u64,
    /// Times the controller's own loop was stalled past a heartbeat interval.
    pub stalls: u64,
    pub probes_answered: u64,
    pub probes_refused: u64,
    pub probes_timed_out: u64,
}

const PROBE_OUTCOMES: [(ProbeOutcome, &str); 4] = [
    (ProbeOutcome::Answered, "answered"),
    (ProbeOutcome::Refused, "refused"),
    (ProbeOutcome::NotServing, "not_serving"),
    (ProbeOutcome::TimedOut, "timed_out"),
];

impl ControlStats {
    /// The index of `op` in the per-op counters (the last one: unknown).
    pub fn op_index(op: Option<&str>) -> usize {
        op.and_then(|op| OPS.iter().position(|o| *o == op))
            .unwrap_or(OPS.len())
    }

    pub fn request(&self, op: Option<&str>) {
        self.requests[Self::op_index(op)].fetch_add(1, Relaxed);
    }

    /// A reply to a request of op `op` (an `op_index`) went out `d` after its receipt.
    pub fn latency(&self, op: usize, d: std::time::Duration) {
        if let Some(h) = self.latency.get(op) {
            h.observe(d);
        }
    }

    pub fn set_gauges(&self, g: Gauges) {
        let values = [
            u64::from(g.active),
            u64::from(g.synced),
            g.term,
            g.epoch,
            g.pairs,
            g.pairs_alive,
            g.scenes,
            g.devices,
        ];
        for (a, v) in self.gauges.iter().zip(values) {
            a.store(v, Relaxed);
        }
        self.loop_at_ms
            .store(crate::net::unix_ns() / 1_000_000, Relaxed);
    }

    /// How long ago the loop last went round (`None`: never yet).
    pub fn loop_age(&self) -> Option<std::time::Duration> {
        let at = self.loop_at_ms.load(Relaxed);
        (at > 0).then(|| {
            std::time::Duration::from_millis((crate::net::unix_ns() / 1_000_000).saturating_sub(at))
        })
    }

    pub fn gauges(&self) -> Gauges {
        let v = |i: usize| self.gauges[i].load(Relaxed);
        Gauges {
            active: v(0) == 1,
            synced: v(1) == 1,
            term: v(2),
            epoch: v(3),
            pairs: v(4),
            pairs_alive: v(5),
            scenes: v(6),
            devices: v(7),
        }
    }

    pub fn error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i].fetch_add(1, Relaxed);
        }
    }

    pub fn dropped(&self, why: Dropped) {
        match why {
            Dropped::Envelope => self.dropped_envelope.fetch_add(1, Relaxed),
        };
    }

    pub fn connection(&self, event: Connection) {
        if let Some(i) = Connection::ALL.iter().position(|c| *c == event) {
            self.connections[i].fetch_add(1, Relaxed);
        }
    }

    /// A change the controller decided on its own (deaths, revivals, its own stalls).
    pub fn change(&self, change: &Change) {
        match change {
            Change::PairDead { cause, moved, .. } => {
                let i = usize::from(!matches!(cause, Cause::Probe(_)));
                self.deaths[i].fetch_add(1, Relaxed);
                let taken = moved.iter().filter(|(_, to)| to.is_some()).count();
                self.failovers.fetch_add(taken as u64, Relaxed);
            }
            Change::PairRevived { .. } => {
                self.revivals.fetch_add(1, Relaxed);
            }
            Change::Stalled { .. } => {
                self.stalls.fetch_add(1, Relaxed);
            }
            Change::PairForgotten { .. } => {}
        }
    }

    /// The failure-detection counters so far.
    pub fn detection(&self) -> Detection {
        let load = |a: &AtomicU64| a.load(Relaxed);
        Detection {
            deaths_confirmed: load(&self.deaths[0]),
            deaths_silent: load(&self.deaths[1]),
            revivals: load(&self.revivals),
            stalls: load(&self.stalls),
            probes_answered: load(&self.probes[0]),
            probes_refused: load(&self.probes[1]),
            probes_timed_out: load(&self.probes[3]),
        }
    }

    /// A probe of a suspect pair ended.
    pub fn probe(&self, outcome: ProbeOutcome) {
        if let Some(i) = PROBE_OUTCOMES.iter().position(|(o, _)| *o == outcome) {
            self.probes[i].fetch_add(1, Relaxed);
        }
    }

    /// Error replies with `code` so far.
    pub fn errors(&self, code: ErrorCode) -> u64 {
        ErrorCode::ALL
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.errors[i].load(Relaxed))
    }

    /// The Prometheus text format.
    pub fn to_prometheus(&self) -> String {
        let mut s = String::with_capacity(4096);
        let requests = OPS.iter().copied().chain(["unknown"]);
        family(
            &mut s,
            "requests_total",
            "Requests by op (`unknown`: no known op).",
            "op",
            requests.zip(&self.requests),
        );
        family(
            &mut s,
            "errors_total",
            "Error replies by code (limits: rate_limited, scene_full, too_large, unauthorized).",
            "code",
            ErrorCode::ALL.iter().map(|c| c.as_str()).zip(&self.errors),
        );
        family(
            &mut s,
            "dropped_total",
            "Messages dropped without a reply, by reason.",
            "reason",
            [("envelope", &self.dropped_envelope)].into_iter(),
        );
        family(&mut s, "connections_total",
            "Connection events from libzmq (closed: includes peers cut off for a size or frame bound).",
            "event", Connection::ALL.iter().map(|c| c.name()).zip(&self.connections));
        family(
            &mut s,
            "pair_deaths_total",
            "Pairs declared dead: a probe confirmed a suspicion (a crash), or silent for their window.",
            "cause",
            ["probe", "silent"].into_iter().zip(&self.deaths),
        );
        family(
            &mut s,
            "pair_revivals_total",
            "Pairs declared dead that heartbeated again and came back under their id (false failovers).",
            "pair",
            [("any", &self.revivals)].into_iter(),
        );
        family(
            &mut s,
            "stalls_total",
            "Times this controller's own loop came late by more than a heartbeat interval (credited to every pair).",
            "controller",
            [("self", &self.stalls)].into_iter(),
        );
        family(
            &mut s,
            "probes_total",
            "Probes of suspect pairs, by outcome.",
            "outcome",
            PROBE_OUTCOMES.iter().map(|(_, n)| *n).zip(&self.probes),
        );
        family(
            &mut s,
            "failovers_total",
            "Scenes moved off a pair declared dead to another live pair.",
            "to",
            [("any", &self.failovers)].into_iter(),
        );
        let g = self.gauges();
        let gauges: [(&str, &str, u64); 8] = [
            (
                "active",
                "1 while this replica is the active controller.",
                u64::from(g.active),
            ),
            (
                "ready",
                "1 while this replica is active, or a passive following the active.",
                u64::from(g.synced),
            ),
            ("term", "The controller term this replica knows.", g.term),
            ("epoch", "The assignment epoch.", g.epoch),
            (
                "pairs",
                "Pairs registered (alive or declared dead).",
                g.pairs,
            ),
            ("pairs_alive", "Pairs registered and alive.", g.pairs_alive),
            ("scenes", "Scenes.", g.scenes),
            ("devices", "Devices registered.", g.devices),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(
                s,
                "# HELP zonecast_control_{name} {help}\n# TYPE zonecast_control_{name} gauge\nzonecast_control_{name} {v}"
            );
        }
        s.push_str("# HELP zonecast_control_request_duration_seconds Requests by op: receipt to reply sent (durable, and acknowledged by a passive with --ack replica).\n# TYPE zonecast_control_request_duration_seconds histogram\n");
        for (op, h) in OPS.iter().copied().chain(["unknown"]).zip(&self.latency) {
            h.snapshot().render(
                &mut s,
                "zonecast_control_request_duration_seconds",
                &format!("op=\"{op}\""),
            );
        }
        s
    }
}

/// One counter family with one label.
fn family<'a>(
    s: &mut String,
    name: &str,
    help: &str,
    label: &str,
    rows: impl Iterator<Item = (&'a str, &'a AtomicU64)>,
) {
    let _ = writeln!(s, "# HELP zonecast_control_{name} {help}");
    let _ = writeln!(s, "# TYPE zonecast_control_{name} counter");
    for (value, c) in rows {
        let _ = writeln!(
            s,
            "zonecast_control_{name}{{{label}=\"{value}\"}} {}",
            c.load(Relaxed)
        );
    }
}
