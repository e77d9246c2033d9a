//! Staying connected through pair failures: a device that hears nothing from its pair for a
//! while asks the controller where it is homed now (`device.locate`) and, if that changed,
//! moves there and joins again. Keepalives are sent often enough to notice silence quickly.

use std::time::{Duration, Instant};

use super::{ClientError, Device};
use crate::control::client::{ControlClient, Location};

/// Keepalive and re-homing policy for one device.
pub struct Roaming {
    control: ControlClient,
    /// Send a keepalive this often (it is answered, so silence means trouble).
    pub keepalive_every: Duration,
    /// Ask the controller after this long without a verified datagram from the pair.
    pub silent_after: Duration,
    /// Ask at most this often while the silence lasts.
    pub locate_every: Duration,
    next_keepalive: Instant,
    next_locate: Instant,
}

impl Roaming {
    /// Fast defaults: keepalive every 50 ms, locate after 150 ms of silence, every 50 ms.
    pub fn new(control: ControlClient) -> Roaming {
        let now = Instant::now();
        Roaming {
            control: control
                .with_timeout(Duration::from_millis(200))
                .with_retries(1),
            keepalive_every: Duration::from_millis(50),
            silent_after: Duration::from_millis(150),
            locate_every: Duration::from_millis(50),
            next_keepalive: now,
            next_locate: now,
        }
    }

    /// Call often (at least every `keepalive_every`). Sends a keepalive when due and, after a
    /// silence, locates the device; returns the new location when the device moved.
    pub fn poll(
        &mut self,
        dev: &mut Device,
        now: Instant,
    ) -> Result<Option<Location>, ClientError> {
        if now >= self.next_keepalive {
            // A join the pair dropped (its session had not arrived yet) is sent again.
            match dev.join_pending_since() {
                Some(t) if now.saturating_duration_since(t) >= self.keepalive_every => {
                    dev.join(dev.interest_radius())?;
                }
                _ => {
                    dev.keepalive()?;
                }
            }
            self.next_keepalive = now + self.keepalive_every;
        }
        let silent = dev
            .last_heard()
            .is_none_or(|t| now.saturating_duration_since(t) >= self.silent_after);
        if !silent || now < self.next_locate {
            return Ok(None);
        }
        self.next_locate = now + self.locate_every;
        // An unreachable controller or a scene without a live pair: try again later.
        let Ok(loc) = self.control.locate(dev.session().device) else {
            return Ok(None);
        };
        if loc.udp == dev.session().pair {
            return Ok(None);
        }
        dev.redirect(loc.udp, loc.epoch)?;
        Ok(Some(loc))
    }

    /// When `poll` next has something to do.
    pub fn next_wake(&self, dev: &Device) -> Instant {
        let locate = dev
            .last_heard()
            .map(|t| (t + self.silent_after).max(self.next_locate))
            .unwrap_or(self.next_locate);
        self.next_keepalive.min(locate)
    }
}
