//! One device session as ingest sees it: key, scene, address, liveness, replay window.

use std::net::SocketAddr;
use std::time::Instant;

use super::ReplayWindow;
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
    pub interest_radius: f32,
    pub replay: ReplayWindow,
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
            interest_radius: 0.0,
            replay: ReplayWindow::default(),
        }
    }
}
