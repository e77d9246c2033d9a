//! A device arriving from a drained pair: its stragglers and its direct datagrams put back
//! in the order it sent them (pure: `now` comes in).
//!
//! After a handover the old pair forwards what the device still sends it, over the
//! replication stream, while the device, once it follows the redirect (or locates itself
//! after a silence), sends here directly. The two paths race: a direct datagram can overtake a
//! forwarded one the device sent before it, and the older write would then be refused as
//! stale, i.e. lost (seen by tests/standby.rs's drain test when the device located itself
//! mid-drain). So a device adopted at a handover is *arriving*:
//! - a direct datagram whose sequence number skips some (`seq > top + 1` of the session's
//!   replay window) waits here, with any direct datagram after it;
//! - after each datagram the session accepts (a forwarded one filling the gap), the waiting
//!   ones that are next in sequence are fed, oldest first;
//! - the first waiting datagram waits at most [`GAP_WAIT`] (a datagram the network lost
//!   on its way to the old pair never comes), and at most [`MAX_WAITING`] wait: then all are
//!   fed in sequence order, and the gap is given up;
//! - the first direct datagram the session takes ends the arrival: everything the device
//!   sent the old pair came before it.
//!
//! Only authenticated datagrams wait (the tag is checked first), so a forger cannot fill the
//! queue. A failover arms nothing: a crashed pair forwards nothing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long the oldest waiting datagram waits for the forwarded ones before it.
pub const GAP_WAIT: Duration = Duration::from_millis(50);
/// How many direct datagrams of one device wait at most.
pub const MAX_WAITING: usize = 64;

/// One arriving device's waiting direct datagrams.
#[derive(Debug, Default)]
pub struct Arrival {
    /// (seq, source, bytes), in arrival order.
    waiting: Vec<(u64, SocketAddr, Vec<u8>)>,
    /// When the oldest waiting datagram came.
    since: Option<Instant>,
}

impl Arrival {
    /// Whether a direct datagram numbered `seq` must wait, for a replay window whose highest
    /// sequence number is `top`.
    pub fn must_wait(&self, top: Option<u64>, seq: u64) -> bool {
        !self.waiting.is_empty() || top.is_some_and(|t| seq > t.saturating_add(1))
    }

    /// Keeps a direct datagram; false (nothing kept) if [`MAX_WAITING`] already wait.
    pub fn wait(&mut self, now: Instant, seq: u64, from: SocketAddr, bytes: &[u8]) -> bool {
        if self.waiting.len() >= MAX_WAITING {
            return false;
        }
        self.since.get_or_insert(now);
        self.waiting.push((seq, from, bytes.to_vec()));
        true
    }

    pub fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Whether the oldest waiting datagram has waited its [`GAP_WAIT`] at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.since
            .is_some_and(|at| now.saturating_duration_since(at) >= GAP_WAIT)
    }

    /// The waiting datagrams to feed now, in sequence order: those next after `top` (all of
    /// them if `give_up`). Those left keep waiting.
    pub fn due(&mut self, top: Option<u64>, give_up: bool) -> Vec<(SocketAddr, Vec<u8>)> {
        self.waiting.sort_by_key(|w| w.0);
        let mut next = top.map_or(0, |t| t.saturating_add(1));
        let mut n = 0;
        for w in &self.waiting {
            if !give_up && w.0 > next {
                break;
            }
            next = next.max(w.0.saturating_add(1));
            n += 1;
        }
        let due = self.waiting.drain(..n).map(|(_, f, b)| (f, b)).collect();
        if self.waiting.is_empty() {
            self.since = None;
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_holds_direct_datagrams_until_it_fills_or_the_wait_ends() {
        let t0 = Instant::now();
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut a = Arrival::default();
        assert!(!a.must_wait(Some(9), 10), "next in sequence: taken at once");
        assert!(!a.must_wait(Some(9), 5), "old: the replay window decides");
        assert!(a.must_wait(Some(9), 12), "11 is still on its way");
        assert!(a.wait(t0, 12, from, b"12"));
        assert!(a.must_wait(Some(9), 13), "behind a waiting one: waits too");
        assert!(a.wait(t0, 13, from, b"13"));
        assert!(a.due(Some(10), false).is_empty(), "11 still missing");
        let due = a.due(Some(11), false);
        assert_eq!(
            due.iter().map(|d| &d.1[..]).collect::<Vec<_>>(),
            [b"12", b"13"]
        );
        assert!(!a.is_waiting() && !a.expired(t0 + GAP_WAIT));

        assert!(a.wait(t0, 20, from, b"20"));
        assert!(a.wait(t0, 15, from, b"15"));
        assert!(!a.expired(t0 + GAP_WAIT / 2));
        assert!(a.expired(t0 + GAP_WAIT));
        let due = a.due(Some(11), true);
        assert_eq!(
            due.iter().map(|d| &d.1[..]).collect::<Vec<_>>(),
            [b"15", b"20"]
        );
        for i in 0..MAX_WAITING as u64 {
            assert!(a.wait(t0, 100 + i, from, b"x"));
        }
        assert!(!a.wait(t0, 1000, from, b"x"), "bounded");
    }
}
