//! Staying connected through pair failures: a device that hears nothing from its pair for a
//! while asks the controller where it is homed now (`device.locate`) and, if that changed,
//! moves there and joins again. Keepalives are sent often enough to notice silence quickly.
//!
//! When to do what is [`RoamPolicy`] (pure: `now` and what the device knows come in; the
//! seeded simulation runs it too); [`Roaming`] applies it to a [`Device`] and a control client.

use std::time::{Duration, Instant};

use super::{ClientError, Device};
use crate::control::client::{ControlClient, Location};

/// What a device should do now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoamAction {
    /// Send a keepalive.
    pub keepalive: bool,
    /// Send the unanswered join again (instead of a keepalive).
    pub rejoin: bool,
    /// Ask the controller where the device is homed.
    pub locate: bool,
}

/// Keepalive and re-homing timing for one device.
#[derive(Clone, Debug)]
pub struct RoamPolicy {
    /// Send a keepalive this often (it is answered, so silence means trouble).
    pub keepalive_every: Duration,
    /// Ask the controller after this long without an answer from the pair to the device's
    /// own datagrams (a keepalive ack, a snapshot). Relays do not count: after a failover
    /// whose redirect was lost, the new pair relays to the device while the device still sends
    /// to the dead one; only its unanswered keepalives tell it so.
    pub silent_after: Duration,
    /// Ask at most this often while the silence lasts.
    pub locate_every: Duration,
    next_keepalive: Instant,
    next_locate: Instant,
}

impl RoamPolicy {
    /// Fast defaults: keepalive every 50 ms, locate after 100 ms of silence (the first
    /// keepalive after the pair went away is the one left unanswered), every 50 ms. A device
    /// that reads only every 100 ms (a busy game loop) may then locate during a drain and
    /// reach the new pair before its forwarded stragglers do: the new pair puts them back in
    /// order (`scene/arrival.rs`), so nothing is lost.
    pub fn new(now: Instant) -> RoamPolicy {
        RoamPolicy {
            keepalive_every: Duration::from_millis(50),
            silent_after: Duration::from_millis(100),
            locate_every: Duration::from_millis(50),
            next_keepalive: now,
            next_locate: now,
        }
    }

    /// What is due at `now`, for a device last answered by its pair at `last_answered` whose
    /// join has gone unanswered since `join_pending`.
    pub fn poll(
        &mut self,
        now: Instant,
        last_answered: Option<Instant>,
        join_pending: Option<Instant>,
    ) -> RoamAction {
        let mut action = RoamAction::default();
        if now >= self.next_keepalive {
            // A join the pair dropped (its session had not arrived yet) is sent again.
            match join_pending {
                Some(t) if now.saturating_duration_since(t) >= self.keepalive_every => {
                    action.rejoin = true
                }
                _ => action.keepalive = true,
            }
            self.next_keepalive = now + self.keepalive_every;
        }
        let silent =
            last_answered.is_none_or(|t| now.saturating_duration_since(t) >= self.silent_after);
        if silent && now >= self.next_locate {
            self.next_locate = now + self.locate_every;
            action.locate = true;
        }
        action
    }

    /// When `poll` next has something to do.
    pub fn next_wake(&self, last_answered: Option<Instant>) -> Instant {
        let locate = last_answered
            .map(|t| (t + self.silent_after).max(self.next_locate))
            .unwrap_or(self.next_locate);
        self.next_keepalive.min(locate)
    }
}

/// [`RoamPolicy`] applied to a device, with its control client.
pub struct Roaming {
    control: ControlClient,
    pub policy: RoamPolicy,
}

impl Roaming {
    pub fn new(control: ControlClient) -> Roaming {
        Roaming {
            control: control
                .with_timeout(Duration::from_millis(200))
                .with_retries(1),
            policy: RoamPolicy::new(Instant::now()),
        }
    }

    /// Call often (at least every `keepalive_every`). Sends a keepalive when due and, after a
    /// silence, locates the device; returns the new location when the device moved.
    pub fn poll(
        &mut self,
        dev: &mut Device,
        now: Instant,
    ) -> Result<Option<Location>, ClientError> {
        let action = self
            .policy
            .poll(now, dev.last_answered(), dev.join_pending_since());
        if action.rejoin {
            dev.rejoin()?;
        } else if action.keepalive {
            dev.keepalive()?;
        }
        if !action.locate {
            return Ok(None);
        }
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

    /// Ends the device's membership for good: a Leave datagram to its pair (the others see it
    /// leave at once) and `device.deregister` (the controller forgets its session and key).
    /// A controller that does not answer leaves the registration to expire with the scene.
    pub fn leave(&mut self, dev: &mut Device) -> Result<(), ClientError> {
        dev.leave()?;
        let req = crate::control::protocol::Request::DeviceDeregister {
            device: dev.session().device,
            key: dev.session().key.to_hex(),
        };
        self.control
            .call::<crate::control::protocol::DeviceDeregistered>(&req)
            .map_err(|e| ClientError::Control(e.to_string()))?;
        Ok(())
    }

    /// When `poll` next has something to do.
    pub fn next_wake(&self, dev: &Device) -> Instant {
        self.policy.next_wake(dev.last_answered())
    }
}
