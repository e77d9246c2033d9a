//! The simulated network: one queue of timed deliveries, ordered by (time, sequence) so that a
//! seed replays exactly. Control messages and datagrams are delayed, dropped, duplicated (a
//! lazy-pirate retry reaching the controller twice) and so reordered, per the seed's fault
//! profile; partitions cut a node off; stream links are FIFO like TCP.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use zonecast::control::protocol::{Reply, Request};
use zonecast::control::ControlError;
use zonecast::replication::peer::LinkEvent;

/// A node of the simulated cluster. Pairs are named by incarnation: a restarted pair is a new
/// process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Node {
    Controller,
    Pair(usize),
    Device(usize),
}

/// What a device is told by its pair (fanout, abstracted from sealed datagrams).
#[derive(Clone, Debug)]
pub enum ToDevice {
    /// A relayed update of another device's object.
    Update {
        scene: u32,
        object: u64,
        seq: u64,
    },
    Snapshot,
    KeepaliveAck,
    Redirect {
        to: std::net::SocketAddr,
        epoch: u64,
    },
    /// A reject saying the device is not joined there.
    NotJoined,
}

/// What travels.
#[derive(Debug)]
pub enum Payload {
    /// A control request; `call` identifies the caller's attempt.
    Request {
        call: u64,
        req: Request,
    },
    /// The controller's answer, with the scenes it assigned to the asking pair when it
    /// answered (for the fencing invariant).
    Reply {
        call: u64,
        reply: Result<Reply, ControlError>,
        assigned_then: Option<BTreeSet<u32>>,
    },
    /// A sealed datagram from a device's address.
    Datagram {
        from: std::net::SocketAddr,
        bytes: Vec<u8>,
    },
    ToDevice(ToDevice),
    /// An event on the stream link `link` of a standby.
    Stream {
        link: u64,
        event: LinkEvent,
    },
    /// The controller's probe of pair `pair` (a UDP datagram to its port).
    Probe {
        pair: u32,
    },
    /// A live process's answer, as the pair it is registered as (0: none).
    ProbeAck {
        pair: u32,
        answer_as: u32,
    },
    /// ICMP port unreachable from the host of a crashed pair.
    ProbeRefused {
        pair: u32,
    },
}

#[derive(Debug)]
pub struct Delivery {
    pub to: Node,
    pub from: Node,
    pub payload: Payload,
}

/// How unreliable this seed's network is.
#[derive(Clone, Debug)]
pub struct Profile {
    pub drop: f64,
    pub duplicate: f64,
    pub control_delay: (u64, u64),
    pub datagram_delay: (u64, u64),
    pub stream_delay: (u64, u64),
}

impl Profile {
    pub fn perfect() -> Profile {
        Profile {
            drop: 0.0,
            duplicate: 0.0,
            control_delay: (500, 2_000),
            datagram_delay: (100, 500),
            stream_delay: (50, 300),
        }
    }
}

pub struct Net {
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    slots: BTreeMap<usize, Delivery>,
    next_slot: usize,
    seq: u64,
    pub profile: Profile,
    /// Nodes cut off from everything (both ways), until the given time (µs).
    pub isolated: BTreeMap<Node, u64>,
    /// Pair pairs whose streams are cut, until the given time (µs).
    pub cut: BTreeMap<(usize, usize), u64>,
    /// Nodes on a loaded host until the given time: what their processes send (requests,
    /// probe answers) leaves up to the given lag (µs) late.
    pub slow: BTreeMap<Node, (u64, u64)>,
    /// Last delivery time per stream link (FIFO).
    link_tail: BTreeMap<u64, u64>,
    pub sent: u64,
    pub dropped: u64,
}

impl Net {
    pub fn new(profile: Profile) -> Net {
        Net {
            queue: BinaryHeap::new(),
            slots: BTreeMap::new(),
            next_slot: 0,
            seq: 0,
            profile,
            isolated: BTreeMap::new(),
            cut: BTreeMap::new(),
            slow: BTreeMap::new(),
            link_tail: BTreeMap::new(),
            sent: 0,
            dropped: 0,
        }
    }

    fn push(&mut self, at: u64, d: Delivery) {
        let slot = self.next_slot;
        self.next_slot += 1;
        self.seq += 1;
        self.slots.insert(slot, d);
        self.queue.push(Reverse((at, self.seq, slot)));
    }

    /// The time of the next delivery, if any.
    pub fn next_time(&self) -> Option<u64> {
        self.queue.peek().map(|Reverse((t, _, _))| *t)
    }

    /// The next delivery due at or before `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<Delivery> {
        let Reverse((t, _, slot)) = *self.queue.peek()?;
        if t > now {
            return None;
        }
        self.queue.pop();
        self.slots.remove(&slot)
    }

    pub fn is_isolated(&self, n: Node, now: u64) -> bool {
        self.isolated.get(&n).is_some_and(|until| now < *until)
    }

    pub fn is_cut(&self, a: usize, b: usize, now: u64) -> bool {
        let key = (a.min(b), a.max(b));
        self.cut.get(&key).is_some_and(|until| now < *until)
    }

    fn blocked(&self, from: Node, to: Node, now: u64) -> bool {
        self.is_isolated(from, now) || self.is_isolated(to, now)
    }

    /// Delivers `payload` to `to` again at `at` (it waited in a frozen process's socket).
    pub fn requeue(&mut self, at: u64, to: Node, from: Node, payload: Payload) {
        self.push(at, Delivery { to, from, payload });
    }

    /// An unreliable message (control or datagram): delayed, maybe dropped or duplicated.
    pub fn send(&mut self, rng: &mut ChaCha8Rng, now: u64, from: Node, to: Node, payload: Payload) {
        self.sent += 1;
        if self.blocked(from, to, now) || rng.gen_bool(self.profile.drop) {
            self.dropped += 1;
            return;
        }
        let (lo, hi) = match payload {
            Payload::Datagram { .. } | Payload::ToDevice(_) => self.profile.datagram_delay,
            _ => self.profile.control_delay,
        };
        let mut at = now + rng.gen_range(lo..=hi);
        if let Some((until, lag)) = self.slow.get(&from) {
            let late = matches!(payload, Payload::Request { .. } | Payload::ProbeAck { .. });
            if now < *until && late {
                at += rng.gen_range(0..=*lag);
            }
        }
        // A request may arrive twice (a retry whose first copy was not lost after all).
        if let Payload::Request { call, req } = &payload {
            if rng.gen_bool(self.profile.duplicate) {
                let copy = Payload::Request {
                    call: *call,
                    req: req.clone(),
                };
                let later = at + rng.gen_range(lo..=hi);
                self.push(
                    later,
                    Delivery {
                        to,
                        from,
                        payload: copy,
                    },
                );
            }
        }
        self.push(at, Delivery { to, from, payload });
    }

    /// A stream event on `link`, FIFO after everything sent on it before.
    pub fn stream(
        &mut self,
        rng: &mut ChaCha8Rng,
        now: u64,
        from: Node,
        to: Node,
        link: u64,
        event: LinkEvent,
    ) {
        self.sent += 1;
        let (lo, hi) = self.profile.stream_delay;
        let at =
            (now + rng.gen_range(lo..=hi)).max(self.link_tail.get(&link).copied().unwrap_or(0));
        self.link_tail.insert(link, at);
        self.push(
            at,
            Delivery {
                to,
                from,
                payload: Payload::Stream { link, event },
            },
        );
    }

    /// Deliveries to `to` that wait for time `held_until` (a frozen process's socket) are due
    /// at `now` instead, in the order they arrived: the process runs again early.
    pub fn release_held(&mut self, to: Node, held_until: u64, now: u64) {
        let entries: Vec<(u64, u64, usize)> = self.queue.drain().map(|Reverse(e)| e).collect();
        for (at, seq, slot) in entries {
            let held = at == held_until && self.slots.get(&slot).is_some_and(|d| d.to == to);
            let at = if held { now } else { at };
            self.queue.push(Reverse((at, seq, slot)));
        }
    }

    /// Discards what is still in flight on `link` (a partition ate it).
    pub fn discard_link(&mut self, link: u64) {
        let doomed: Vec<usize> = self
            .slots
            .iter()
            .filter(|(_, d)| matches!(d.payload, Payload::Stream { link: l, .. } if l == link))
            .map(|(s, _)| *s)
            .collect();
        for s in doomed {
            self.slots.remove(&s);
        }
        self.queue
            .retain(|Reverse((_, _, s))| self.slots.contains_key(s));
    }
}

/// Microseconds of a duration.
pub fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}
