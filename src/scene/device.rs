//! One device session as ingest sees it: key, scene, address, liveness, replay window.

use std::net::SocketAddr;
use std::time::Instant;

use super::{Arrival, ReplayWindow};
use crate::wire::interest::Area;
use crate::wire::SessionKey;

/// A device admitted to a pair.
#[derive(Debug)]
pub struct DeviceSession {
    pub scene: u32,
    pub key: SessionKey,
    /// Where its last authenticated datagram came from.
    pub addr: Option<SocketAddr>,
    pub joined: bool,
    /// Silent longer than `quiet_after`: fanout skips it until it is heard again.
    pub quiet: bool,
    pub last_seen: Instant,
    /// What it wants to receive (everything until it says otherwise).
    pub area: Area,
    /// When a device with a bounded area is next sent its complete view (see
    /// `Config::view_refresh`); set by the first tick that sees it joined.
    pub refresh_at: Option<Instant>,
    pub replay: ReplayWindow,
    /// Set while the device's scene has moved to another pair and this one hands the
    /// device's datagrams over (a drain's grace period). Boxed: rare, and sessions are many.
    pub forward: Option<Box<Forward>>,
    /// Set while the device arrives from a drained pair, whose forwarded stragglers its own
    /// direct datagrams may overtake (see `arrival`). Boxed: rare.
    pub arrival: Option<Box<Arrival>>,
    /// The zone its anchor crossed into (another pair's), once reported (see `zoning`).
    pub crossing: Option<u32>,
}

/// Where a moved device's datagrams go, and when it was last told.
#[derive(Clone, Debug)]
pub struct Forward {
    /// The new pair's UDP endpoint, sent to the device in redirects.
    pub to: SocketAddr,
    pub epoch: u64,
    pub last_redirect: Option<Instant>,
    /// Only this device moved (it crossed a zone border), not its whole scene (a drain).
    pub device_move: bool,
}

impl Forward {
    /// Redirects are repeated at most every 20 ms while the device keeps sending here.
    const REDIRECT_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

    /// Whether to send the device a redirect now (and notes that one was sent).
    pub fn redirect_due(&mut self, now: Instant) -> bool {
        let due = self
            .last_redirect
            .is_none_or(|at| now.saturating_duration_since(at) >= Self::REDIRECT_EVERY);
        if due {
            self.last_redirect = Some(now);
        }
        due
    }
}

impl DeviceSession {
    pub fn new(scene: u32, key: SessionKey, now: Instant) -> DeviceSession {
        DeviceSession {
            scene,
            key,
            addr: None,
            joined: false,
            quiet: false,
            last_seen: now,
            area: Area::EVERYTHING,
            refresh_at: None,
            replay: ReplayWindow::default(),
            forward: None,
            arrival: None,
            crossing: None,
        }
    }
}
