//! Failure detection for one pair (pure: `now` comes in): heartbeat arrivals, the adaptive
//! window, suspicion and the direct probe that confirms it.
//!
//! The rules (docs/PROTOCOL.md, "Failure detection"):
//! - **Window.** A pair is silent when neither a heartbeat nor a probe answer came for its
//!   window: twice the longest of its last [`GAPS`] heartbeat gaps, never below `dead_after`
//!   nor above `dead_after_max`. A pair whose heartbeats arrive late under load widens its own
//!   window within a few heartbeats; a quiet one narrows back as the long gaps age out.
//! - **Suspicion.** A pair is suspect when its standby reports the stream lost (a crash is
//!   seen at once by whoever holds a connection to the process) or its heartbeat is two
//!   intervals overdue. A suspect is probed: one authenticated UDP datagram to its data port,
//!   answered by its ingest thread.
//! - **Confirmation.** A probe refused (ICMP port unreachable: no process holds the port),
//!   answered by another pair, or answered "not serving" is a death at once: the fast path
//!   of a crash. A probe answered is proof of life like a heartbeat (it is no gap sample): a
//!   suspect that answers is not failed over. A probe lost says nothing.
//! - **Limit.** A pair whose agent has not heartbeated for `dead_after_max` is dead even if
//!   its data path answers probes: it can take no orders (sessions, moves) any more.
//! - **Own stalls.** Time the controller itself was stalled (its tick came late) is not
//!   counted against anyone: [`Liveness::credit`].

use std::time::{Duration, Instant};

/// Heartbeat gaps remembered per pair (about 6 s at 50 ms).
pub const GAPS: usize = 128;

/// What a direct probe of a suspect found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The pair answered: its data path is alive and it serves.
    Answered,
    /// ICMP port unreachable: no process holds the pair's port.
    Refused,
    /// Something answered that is not this pair serving (another pair on the port, or a split
    /// pair's ingest whose fanout half is gone).
    NotServing,
    /// No answer in time (a silent host, or a very slow one): no conclusion.
    TimedOut,
}

/// Why a pair was declared dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Nothing heard within its window (milliseconds).
    Silent { window_ms: u64 },
    /// A probe confirmed what a suspicion said.
    Probe(ProbeOutcome),
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Silent { window_ms } => write!(f, "silent for its window ({window_ms} ms)"),
            Cause::Probe(ProbeOutcome::Refused) => write!(f, "its port is closed (probe refused)"),
            Cause::Probe(o) => write!(f, "probe: {o:?}"),
        }
    }
}

/// The settings detection reads (from the controller's config).
#[derive(Clone, Copy, Debug)]
pub struct Windows {
    pub interval: Duration,
    pub dead_after: Duration,
    pub dead_after_max: Duration,
}

/// What the detector says about a pair now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Fine,
    /// Suspect and no probe in flight: probe it.
    Probe,
    Dead(Cause),
}

/// One pair's liveness as the controller observes it.
#[derive(Clone, Debug)]
pub struct Liveness {
    /// `None`: not heard since this controller took over (its window starts then).
    pub last_heartbeat: Option<Instant>,
    /// The last probe answer.
    last_answer: Option<Instant>,
    /// Heartbeat gaps in microseconds, a ring of the last [`GAPS`].
    gaps: Box<[u32; GAPS]>,
    filled: usize,
    next: usize,
    /// Its standby lost the stream without a goodbye.
    pub suspect: bool,
    /// When the probe in flight was sent.
    probing: Option<Instant>,
    /// When the last probe ended (one per heartbeat interval at most).
    probed: Option<Instant>,
    /// A probe confirmed the pair is gone.
    confirmed: Option<ProbeOutcome>,
}

impl Default for Liveness {
    fn default() -> Liveness {
        Liveness {
            last_heartbeat: None,
            last_answer: None,
            gaps: Box::new([0; GAPS]),
            filled: 0,
            next: 0,
            suspect: false,
            probing: None,
            probed: None,
            confirmed: None,
        }
    }
}

impl Liveness {
    /// Heard at `now` (registration: no gap yet).
    pub fn heard_first(now: Instant) -> Liveness {
        Liveness {
            last_heartbeat: Some(now),
            ..Liveness::default()
        }
    }

    /// A heartbeat arrived at `now`: a gap sample, and every suspicion is cleared.
    pub fn heartbeat(&mut self, now: Instant) {
        if let Some(last) = self.last_heartbeat {
            let gap = now.saturating_duration_since(last).as_micros();
            self.gaps[self.next] = gap.min(u128::from(u32::MAX)) as u32;
            self.next = (self.next + 1) % GAPS;
            self.filled = (self.filled + 1).min(GAPS);
        }
        self.last_heartbeat = Some(now);
        self.suspect = false;
        self.confirmed = None;
    }

    /// Forgets when it was last heard (a new active: every window starts at its take-over);
    /// the gaps stay, they describe the pair.
    pub fn unheard(&mut self) {
        self.last_heartbeat = None;
        self.last_answer = None;
        self.suspect = false;
        self.probing = None;
        self.confirmed = None;
    }

    /// The window for this pair now.
    pub fn window(&self, w: &Windows) -> Duration {
        let longest = self.gaps[..self.filled].iter().copied().max().unwrap_or(0);
        (Duration::from_micros(u64::from(longest)) * 2).clamp(w.dead_after, w.dead_after_max)
    }

    /// How long no heartbeat came (since `since` when none did since the take-over).
    pub fn silence(&self, now: Instant, since: Instant) -> Duration {
        now.saturating_duration_since(self.last_heartbeat.unwrap_or(since))
    }

    /// What to do about this pair at `now`.
    pub fn verdict(&self, now: Instant, since: Instant, w: &Windows) -> Verdict {
        if let Some(o) = self.confirmed {
            return Verdict::Dead(Cause::Probe(o));
        }
        let silence = self.silence(now, since);
        let window = self.window(w);
        let heard = self.last_heartbeat.unwrap_or(since);
        let proof = self.last_answer.map_or(heard, |a| a.max(heard));
        if now.saturating_duration_since(proof) > window || silence > w.dead_after_max {
            let window_ms = window.as_millis() as u64;
            return Verdict::Dead(Cause::Silent { window_ms });
        }
        let overdue = silence > w.interval * 2;
        let rested = self
            .probed
            .is_none_or(|t| now.saturating_duration_since(t) >= w.interval);
        // A suspect that answered a probe since its suspicion arose is not probed again
        // before its next interval.
        if (self.suspect || overdue) && self.probing.is_none() && rested {
            return Verdict::Probe;
        }
        Verdict::Fine
    }

    /// A probe was sent at `now`.
    pub fn probe_sent(&mut self, now: Instant) {
        self.probing = Some(now);
    }

    /// What the probe in flight found, at `now`.
    pub fn probe_ended(&mut self, now: Instant, outcome: ProbeOutcome) {
        if self.probing.take().is_none() {
            return;
        }
        self.probed = Some(now);
        match outcome {
            ProbeOutcome::Answered => {
                self.last_answer = Some(now);
                self.suspect = false;
            }
            ProbeOutcome::Refused | ProbeOutcome::NotServing => self.confirmed = Some(outcome),
            ProbeOutcome::TimedOut => {}
        }
    }

    /// The controller was stalled for `d` (its tick came that late): nobody is blamed for it.
    pub fn credit(&mut self, d: Duration) {
        for t in [&mut self.last_heartbeat, &mut self.last_answer]
            .into_iter()
            .flatten()
        {
            *t += d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Windows = Windows {
        interval: Duration::from_millis(50),
        dead_after: Duration::from_millis(250),
        dead_after_max: Duration::from_secs(2),
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_steady_pair_keeps_the_floor_window_and_dies_past_it() {
        let t0 = Instant::now();
        let mut l = Liveness::heard_first(t0);
        let mut t = t0;
        for _ in 0..10 {
            t += ms(50);
            l.heartbeat(t);
        }
        assert_eq!(l.window(&W), ms(250));
        assert_eq!(l.verdict(t + ms(100), t0, &W), Verdict::Fine);
        assert_eq!(l.verdict(t + ms(101), t0, &W), Verdict::Probe);
        l.probe_sent(t + ms(101));
        assert_eq!(l.verdict(t + ms(250), t0, &W), Verdict::Fine);
        assert_eq!(
            l.verdict(t + ms(251), t0, &W),
            Verdict::Dead(Cause::Silent { window_ms: 250 })
        );
    }

    #[test]
    fn late_heartbeats_widen_the_window_and_it_narrows_when_they_age_out() {
        let t0 = Instant::now();
        let mut l = Liveness::heard_first(t0);
        let mut t = t0 + ms(400);
        l.heartbeat(t);
        assert_eq!(l.window(&W), ms(800));
        for _ in 0..GAPS - 1 {
            t += ms(50);
            l.heartbeat(t);
        }
        assert_eq!(l.window(&W), ms(800), "the long gap is still remembered");
        t += ms(50);
        l.heartbeat(t);
        assert_eq!(l.window(&W), ms(250));
        t += ms(10_000);
        l.heartbeat(t);
        assert_eq!(l.window(&W), W.dead_after_max, "never above the ceiling");
    }

    #[test]
    fn a_refused_probe_is_death_at_once_and_an_answer_is_proof_of_life() {
        let t0 = Instant::now();
        let mut l = Liveness::heard_first(t0);
        l.suspect = true;
        assert_eq!(l.verdict(t0 + ms(1), t0, &W), Verdict::Probe);
        l.probe_sent(t0 + ms(1));
        assert_eq!(
            l.verdict(t0 + ms(2), t0, &W),
            Verdict::Fine,
            "one in flight"
        );
        l.probe_ended(t0 + ms(2), ProbeOutcome::Answered);
        assert!(!l.suspect);
        // Heartbeats stop, probes answer: alive, up to the ceiling.
        let mut t = t0 + ms(2);
        while t < t0 + ms(1900) {
            t += ms(100);
            assert_eq!(l.verdict(t, t0, &W), Verdict::Probe, "{t:?}");
            l.probe_sent(t);
            l.probe_ended(t, ProbeOutcome::Answered);
        }
        assert_eq!(
            l.verdict(t0 + ms(2001), t0, &W),
            Verdict::Dead(Cause::Silent { window_ms: 250 })
        );
        // A crash: refused.
        let mut l = Liveness::heard_first(t0);
        l.suspect = true;
        l.probe_sent(t0);
        l.probe_ended(t0 + ms(1), ProbeOutcome::Refused);
        assert_eq!(
            l.verdict(t0 + ms(1), t0, &W),
            Verdict::Dead(Cause::Probe(ProbeOutcome::Refused))
        );
        // A late answer to no probe in flight changes nothing; a heartbeat clears everything.
        l.heartbeat(t0 + ms(2));
        l.probe_ended(t0 + ms(3), ProbeOutcome::Refused);
        assert_eq!(l.verdict(t0 + ms(3), t0, &W), Verdict::Fine);
    }

    #[test]
    fn a_lost_probe_falls_back_to_the_window_and_probes_at_most_once_an_interval() {
        let t0 = Instant::now();
        let mut l = Liveness::heard_first(t0);
        l.suspect = true;
        l.probe_sent(t0);
        l.probe_ended(t0 + ms(50), ProbeOutcome::TimedOut);
        assert!(l.suspect, "still suspect");
        assert_eq!(l.verdict(t0 + ms(60), t0, &W), Verdict::Fine, "resting");
        assert_eq!(l.verdict(t0 + ms(100), t0, &W), Verdict::Probe);
        assert_eq!(
            l.verdict(t0 + ms(251), t0, &W),
            Verdict::Dead(Cause::Silent { window_ms: 250 })
        );
    }

    #[test]
    fn a_stall_of_the_controller_is_credited() {
        let t0 = Instant::now();
        let mut l = Liveness::heard_first(t0);
        l.credit(ms(1000));
        assert_eq!(l.verdict(t0 + ms(1100), t0, &W), Verdict::Fine);
        assert_eq!(l.silence(t0 + ms(1100), t0), ms(100));
    }
}
