//! A standby's mirror of one primary, as a pure state machine: its life cycle (connecting,
//! syncing, synced, lost, diverged) and the mirror engine it keeps, fed by what the link to the
//! primary's stream reports. No sockets, no clock (`now` comes in).
//!
//! - `Up`: connected and greeted, a checkpoint follows: **syncing**.
//! - a batch: each event is applied to the mirror engine (`Engine::mirror`, the primary's own
//!   rules); `Synced` (the end of a checkpoint) makes it **synced**; a datagram the primary
//!   forwards (it drains) goes to the *serving* engine as if received; a `Handover` event moves
//!   the scene from the mirror into the serving engine (the drain's hand-over, in stream order).
//! - `Bye` (the primary closed on purpose): **connecting**, the link re-dials.
//! - `Lost` (the stream broke without a bye): a mirror that was in sync holds everything the
//!   primary streamed before it died and becomes **lost** (it may be adopted); one that was not
//!   goes back to connecting.
//! - a checkpoint in the middle of a synced stream: the primary was fenced off by the
//!   controller and reset (`Engine::reset`); its identity is over (it registers again as a new
//!   pair). The mirror keeps what it held, like after a crash (**lost**: the controller may
//!   have moved the primary's scenes here, to be promoted from it), and follows nothing more
//!   from that stream. Found by the seeded simulation: a standby that heard of its promotion
//!   after its fenced primary did had wiped the scene along with it.
//! - an event the mirror cannot apply, or a malformed frame: the state is suspect, it is
//!   **diverged**; [`Mirror::poll_redial`] tells the driver to dial again, and the checkpoint
//!   that follows replaces the state.
//!
//! **Catching up after a takeover.** The controller fails a primary over when its heartbeats
//! stop, which is not proof that it stopped: a pair that was frozen, overloaded or cut off from
//! the controller only may still accept writes for a while (until its next heartbeat tells it
//! it is stale), and its stream may lag the takeover by a few milliseconds. Devices may already
//! have seen those writes. So after [`Mirror::promote`], writes of the promoted scenes that
//! still arrive on the stream go to the *serving* engine (`Engine::catch_up`: the usual order
//! rules, then relayed), and a mirror the assignment drops after a promotion
//! ([`Mirror::retire`]) keeps its link for [`CATCH_UP`] or until the stream ends. Found by the
//! seeded simulation (tests/sim): without it, a standby promoted while its primary was frozen
//! lost writes devices had seen.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::peer::LinkEvent;
use crate::control::MirrorState;
use crate::scene::{self, Batch, Engine, EventKind};
use crate::wire::{parse_exact, Datagram, Direction, RedirectBody};

/// How long a mirror dropped after a promotion keeps following its old primary's stream.
pub const CATCH_UP: Duration = Duration::from_secs(1);

/// What one link event did, for the driver's counters and reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// The state it moved to, if it changed.
    pub changed: Option<MirrorState>,
    /// A frame could not be decoded.
    pub malformed: bool,
    /// Events the mirror could not apply.
    pub diverged: u64,
    /// Late writes of promoted scenes applied to the serving engine.
    pub caught_up: u64,
    /// The stream ended (lost, bye or malformed, or the primary reset): a retiring mirror is
    /// done.
    pub ended: bool,
    /// Scenes adopted into the serving engine from a handover in the stream (a drain's
    /// target): the pair serves them now, whatever its tracker was told.
    pub adopted: Vec<u32>,
}

/// One mirror.
pub struct Mirror {
    state: MirrorState,
    engine: Engine,
    /// An event did not fit: dial again for a fresh checkpoint.
    diverged: bool,
    /// Scenes promoted out of this mirror into the serving engine.
    promoted: BTreeSet<u32>,
    /// Dropped by the assignment after a promotion: follows the stream until then.
    retire_at: Option<Instant>,
    /// The primary reset (it was fenced off): nothing more is taken from its stream.
    primary_reset: bool,
    /// Devices the primary handed over to another pair (see `scene::zoning`).
    moved: BTreeSet<u32>,
}

impl Mirror {
    pub fn new(config: scene::Config) -> Mirror {
        Mirror {
            state: MirrorState::Connecting,
            engine: Engine::new(config),
            diverged: false,
            promoted: BTreeSet::new(),
            retire_at: None,
            primary_reset: false,
            moved: BTreeSet::new(),
        }
    }

    pub fn state(&self) -> MirrorState {
        self.state
    }

    /// Whether the mirror holds `scene`.
    pub fn holds(&self, scene: u32) -> bool {
        self.engine.holds(scene)
    }

    /// Whether `bytes` is a datagram of a device this mirror has a session for, authentic
    /// under that session's key (one the serving engine may have to hold for a while).
    pub fn knows(&self, bytes: &[u8]) -> bool {
        let Ok(dg) = Datagram::parse(bytes) else {
            return false;
        };
        self.engine
            .device(dg.device())
            .is_some_and(|s| dg.verify(&s.key, Direction::ToServer).is_ok())
    }

    /// The mirrored state (for inspection).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Applies one link event. Forwarded datagrams and hand-overs act on `serving`, whose
    /// output goes to `out`.
    pub fn handle_link(
        &mut self,
        now: Instant,
        event: LinkEvent,
        serving: &mut Engine,
        out: &mut Batch,
    ) -> Step {
        let before = self.state;
        let mut step = Step {
            ended: matches!(
                event,
                LinkEvent::Lost | LinkEvent::Bye | LinkEvent::Malformed
            ),
            ..Step::default()
        };
        if self.primary_reset {
            return step;
        }
        match event {
            LinkEvent::Up => self.state = MirrorState::Syncing,
            LinkEvent::Bye => self.state = MirrorState::Connecting,
            // Only a mirror that was in sync holds what the primary had at its end.
            LinkEvent::Lost if self.state == MirrorState::Synced => self.state = MirrorState::Lost,
            LinkEvent::Lost => self.state = MirrorState::Connecting,
            LinkEvent::Malformed => {
                step.malformed = true;
                self.state = MirrorState::Connecting;
            }
            LinkEvent::Batch(b) => {
                (step.diverged, step.caught_up) =
                    self.apply(now, &b, serving, out, &mut step.adopted);
                step.ended = self.primary_reset;
            }
        }
        if self.state != before {
            step.changed = Some(self.state);
        }
        step
    }

    /// Returns (events that did not fit, late writes caught up).
    fn apply(
        &mut self,
        now: Instant,
        b: &Batch,
        serving: &mut Engine,
        out: &mut Batch,
        adopted: &mut Vec<u32>,
    ) -> (u64, u64) {
        let (mut diverged, mut caught_up) = (0, 0);
        for (e, data) in b.iter() {
            if e.kind == EventKind::Checkpoint && self.state == MirrorState::Synced {
                self.primary_reset = true;
                self.state = MirrorState::Lost;
                break;
            }
            if self.promoted.contains(&e.scene) && e.kind != EventKind::Checkpoint {
                // The scene is served here now: only the old owner's late writes matter.
                if let EventKind::Relay(kind) = e.kind {
                    caught_up += u64::from(serving.catch_up(now, e, kind, data, out));
                }
                continue;
            }
            match e.kind {
                // A device the primary handed over to another pair (it crossed a zone border):
                // gone from the primary, and its stragglers are the new pair's to apply.
                EventKind::Handover if e.device != 0 => {
                    self.engine.forget_moved(e.device);
                    self.moved.insert(e.device);
                }
                EventKind::Forwarded if self.moved.contains(&e.device) => {}
                EventKind::Forwarded => {
                    if let Some(from) = e.addr {
                        let _ = serving.handle_forwarded(now, from, data, out);
                    }
                }
                EventKind::Handover => {
                    if let Ok(r) = parse_exact::<RedirectBody>(data) {
                        let redirect = r.endpoint().ok().map(|to| (to, r.epoch.get()));
                        serving.adopt_handover(&mut self.engine, e.scene, now, redirect, out);
                        adopted.push(e.scene);
                    }
                }
                EventKind::Synced => self.state = MirrorState::Synced,
                _ => {
                    if !self.engine.mirror(now, e, data) {
                        diverged += 1;
                        self.diverged = true;
                    }
                }
            }
        }
        (diverged, caught_up)
    }

    /// True once after the mirror diverged: the driver must dial again (the new link's
    /// checkpoint replaces the state). The mirror is then connecting.
    pub fn poll_redial(&mut self) -> bool {
        if !self.diverged {
            return false;
        }
        self.diverged = false;
        self.state = MirrorState::Connecting;
        true
    }

    /// A failover: moves `scene` from the mirror into `serving` and redirects its devices to
    /// `to` under `epoch`. False if the mirror does not hold it.
    pub fn promote(
        &mut self,
        serving: &mut Engine,
        scene: u32,
        now: Instant,
        to: SocketAddr,
        epoch: u64,
        out: &mut Batch,
    ) -> bool {
        if !self.engine.holds(scene) {
            return false;
        }
        serving.adopt(&mut self.engine, scene, now, Some((to, epoch)), out);
        self.promoted.insert(scene);
        true
    }

    /// The assignment no longer lists this mirror. True: drop it now. False: a scene was
    /// promoted out of it, so it keeps following the stream for [`CATCH_UP`] (or until the
    /// stream ends) to take the old primary's late writes; then [`Mirror::retired`].
    pub fn retire(&mut self, now: Instant) -> bool {
        if self.promoted.is_empty() {
            return true;
        }
        self.retire_at.get_or_insert(now + CATCH_UP);
        false
    }

    /// A retiring mirror whose catch-up window is over.
    pub fn retired(&self, now: Instant) -> bool {
        self.retire_at.is_some_and(|t| now >= t)
    }

    /// Whether it is retiring (no longer part of the assignment).
    pub fn retiring(&self) -> bool {
        self.retire_at.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::SessionKey;

    /// A primary engine with one device session in scene 1, and its checkpoint.
    fn primary(now: Instant) -> (Engine, Batch) {
        let mut p = Engine::new(scene::Config::default());
        let mut out = Batch::default();
        p.admit(now, 7, 1, SessionKey::new([7; 32]), &mut out);
        let mut cp = Batch::default();
        p.checkpoint(&mut cp);
        (p, cp)
    }

    #[test]
    fn a_mirror_syncs_from_a_checkpoint_and_is_lost_only_when_it_was_in_sync() {
        let now = Instant::now();
        let (_, checkpoint) = primary(now);
        let mut serving = Engine::new(scene::Config::default());
        let mut out = Batch::default();
        let mut m = Mirror::new(scene::Config::default());
        assert_eq!(m.state(), MirrorState::Connecting);
        // Lost before it was in sync: it holds nothing worth adopting.
        let s = m.handle_link(now, LinkEvent::Up, &mut serving, &mut out);
        assert_eq!(s.changed, Some(MirrorState::Syncing));
        let s = m.handle_link(now, LinkEvent::Lost, &mut serving, &mut out);
        assert_eq!(s.changed, Some(MirrorState::Connecting));
        m.handle_link(now, LinkEvent::Up, &mut serving, &mut out);
        let s = m.handle_link(now, LinkEvent::Batch(checkpoint), &mut serving, &mut out);
        assert_eq!(s.changed, Some(MirrorState::Synced));
        assert!(m.holds(1) && !serving.holds(1));
        let s = m.handle_link(now, LinkEvent::Lost, &mut serving, &mut out);
        assert_eq!(s.changed, Some(MirrorState::Lost));
        // Promoted: the scene and its session move into the serving engine.
        let to = "127.0.0.1:9".parse().unwrap();
        assert!(m.promote(&mut serving, 1, now, to, 5, &mut out));
        assert!(serving.holds(1) && !m.holds(1));
        assert!(!m.promote(&mut serving, 1, now, to, 5, &mut out));
        // A bye (a deliberate close) is not a death.
        m.handle_link(now, LinkEvent::Up, &mut serving, &mut out);
        let s = m.handle_link(now, LinkEvent::Bye, &mut serving, &mut out);
        assert_eq!(s.changed, Some(MirrorState::Connecting));
    }

    #[test]
    fn a_primary_that_resets_leaves_its_mirror_holding_what_it_had() {
        let now = Instant::now();
        let (mut p, checkpoint) = primary(now);
        let mut serving = Engine::new(scene::Config::default());
        let mut out = Batch::default();
        let mut m = Mirror::new(scene::Config::default());
        m.handle_link(now, LinkEvent::Up, &mut serving, &mut out);
        m.handle_link(now, LinkEvent::Batch(checkpoint), &mut serving, &mut out);
        assert_eq!(m.state(), MirrorState::Synced);
        // Fenced off, the primary forgets everything and says so downstream.
        let mut reset = Batch::default();
        p.reset(&mut reset);
        let s = m.handle_link(now, LinkEvent::Batch(reset), &mut serving, &mut out);
        assert_eq!((s.changed, s.ended), (Some(MirrorState::Lost), true));
        assert!(
            m.holds(1),
            "the mirror wiped the scene with its fenced primary"
        );
        // Nothing from that stream counts any more, not even a fresh checkpoint.
        let mut empty = Batch::default();
        p.checkpoint(&mut empty);
        m.handle_link(now, LinkEvent::Up, &mut serving, &mut out);
        m.handle_link(now, LinkEvent::Batch(empty), &mut serving, &mut out);
        assert_eq!(m.state(), MirrorState::Lost);
        let to = "127.0.0.1:9".parse().unwrap();
        assert!(m.promote(&mut serving, 1, now, to, 5, &mut out));
        assert!(serving.device(7).is_some());
    }

    #[test]
    fn an_event_that_does_not_fit_makes_the_mirror_dial_again() {
        let now = Instant::now();
        let mut serving = Engine::new(scene::Config::default());
        let mut out = Batch::default();
        let mut m = Mirror::new(scene::Config::default());
        m.handle_link(now, LinkEvent::Up, &mut serving, &mut out);
        // A session event for a device the mirror never heard of.
        let mut odd = Batch::default();
        odd.push(
            EventKind::Joined,
            1,
            99,
            Some("127.0.0.1:5".parse().unwrap()),
            &[0; 8],
        );
        let s = m.handle_link(now, LinkEvent::Batch(odd), &mut serving, &mut out);
        assert_eq!(s.diverged, 1);
        assert!(m.poll_redial());
        assert_eq!(m.state(), MirrorState::Connecting);
        assert!(!m.poll_redial(), "once");
        let s = m.handle_link(now, LinkEvent::Malformed, &mut serving, &mut out);
        assert!(s.malformed);
    }
}
