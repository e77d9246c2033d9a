//! Datagrams that reach a pair before the scene they belong to does (pure: `now` comes in).
//!
//! In a drain, the old pair redirects its devices to its standby when it hands a scene over,
//! and the standby takes the scene (sessions, objects, replay windows) when the `Handover`
//! event arrives on the old pair's stream. Under load a device can follow its redirect faster
//! than that: its datagrams reach the new pair while the new pair knows nothing of it yet (and,
//! had it admitted the session afresh, what it accepted would be overwritten when the scene
//! arrives). So a datagram from a device the serving engine does not know, but that one of
//! this pair's mirrors does (its tag checked under the mirrored session's key), is held here,
//! and fed to the serving engine, in arrival order, once the engine knows the device (the
//! scene was adopted at the handover, or promoted in a failover). Held at most [`HOLD_FOR`],
//! at most [`MAX_HELD`] datagrams; beyond, dropped and counted (as `unknown_device` drops,
//! the reason they were held, and in the `held_*` stats). Found by the drain test under
//! load and by the simulation.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::scene::{Batch, DropReason, Engine};
use crate::wire::Datagram;

/// How long a datagram waits for its scene.
pub const HOLD_FOR: Duration = Duration::from_secs(1);
/// How many datagrams wait at most.
pub const MAX_HELD: usize = 4096;

/// What a release did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Fed to the serving engine.
    pub fed: u64,
    /// Waited too long: dropped.
    pub expired: u64,
}

/// The held datagrams, oldest first.
#[derive(Debug, Default)]
pub struct Held {
    queue: VecDeque<(Instant, SocketAddr, Vec<u8>)>,
    /// Datagrams refused because the queue was full.
    pub overflow: u64,
}

impl Held {
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Keeps `bytes` from `from` (false, counted, if the queue is full).
    pub fn hold(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> bool {
        if self.queue.len() >= MAX_HELD {
            self.overflow += 1;
            return false;
        }
        self.queue.push_back((now, from, bytes.to_vec()));
        true
    }

    /// Feeds `serving` the held datagrams of devices it now knows, in arrival order; drops
    /// those that waited longer than [`HOLD_FOR`]. Output goes to `out`.
    pub fn release(&mut self, now: Instant, serving: &mut Engine, out: &mut Batch) -> Released {
        let mut r = Released::default();
        if self.queue.is_empty() {
            return r;
        }
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for (at, from, bytes) in self.queue.drain(..) {
            let known = Datagram::parse(&bytes).is_ok_and(|d| serving.device(d.device()).is_some());
            if known {
                let _ = serving.handle(now, from, &bytes, out);
                r.fed += 1;
            } else if now.saturating_duration_since(at) > HOLD_FOR {
                // Dropped in the end for the reason it was held: the device is unknown here.
                serving.count_drop(DropReason::UnknownDevice);
                r.expired += 1;
            } else {
                kept.push_back((at, from, bytes));
            }
        }
        self.queue = kept;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene;
    use crate::wire::{seal, Direction, HeaderFields, JoinBody, Kind, SessionKey, HEADER_LEN};
    use zerocopy::IntoBytes;

    fn join(device: u32, key: &SessionKey) -> Vec<u8> {
        let body = JoinBody {
            interest_radius: 0.0f32.into(),
            reserved: 0.into(),
        };
        let mut buf = vec![0u8; 256];
        buf[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(body.as_bytes());
        let fields = HeaderFields {
            kind: Kind::Join,
            device,
            scene: 1,
            seq: 5,
            timestamp_ns: 1,
        };
        let n = seal(&mut buf, &fields, 8, key, Direction::ToServer).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn a_held_datagram_is_fed_once_its_device_is_known_and_expires_otherwise() {
        let t0 = Instant::now();
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let key = SessionKey::new([3; 32]);
        let mut engine = Engine::new(scene::Config::default());
        let mut out = Batch::default();
        let mut held = Held::default();
        assert!(held.hold(t0, from, &join(7, &key)));
        assert!(held.hold(t0, from, &join(8, &key)));
        assert_eq!(held.release(t0, &mut engine, &mut out), Released::default());
        engine.admit(t0, 7, 1, key.clone(), &mut out);
        out.clear();
        let r = held.release(t0 + Duration::from_millis(10), &mut engine, &mut out);
        assert_eq!((r.fed, r.expired, held.len()), (1, 0, 1));
        assert!(engine.device(7).unwrap().joined, "the join was fed");
        let r = held.release(t0 + HOLD_FOR * 2, &mut engine, &mut out);
        assert_eq!((r.fed, r.expired, held.len()), (0, 1, 0));
        assert_eq!(engine.drops().get(DropReason::UnknownDevice), 1);
        for _ in 0..MAX_HELD {
            assert!(held.hold(t0, from, &[0]));
        }
        assert!(!held.hold(t0, from, &[0]));
        assert_eq!(held.overflow, 1);
    }
}
