//! Logging helpers shared by every layer: events go through `tracing` (the binary installs the
//! subscriber: `--log`/`RUST_LOG` filters, text or JSON lines, see `cli/logging.rs`), never one
//! per datagram; a warning that can repeat (a controller that stays down, a peer that keeps
//! sending garbage) goes through a [`Throttle`] so it is logged at most once per period, with
//! the count of those it held back.

use std::time::{Duration, Instant};

/// At most one log line per `every`; counts the ones it held back.
#[derive(Clone, Debug)]
pub struct Throttle {
    every: Duration,
    next: Option<Instant>,
    held: u64,
}

impl Throttle {
    pub const fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            next: None,
            held: 0,
        }
    }

    /// `Some(held back since the last one)` when a line may be logged at `now`, else `None`
    /// (and this one is counted).
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|n| now < n) {
            self.held += 1;
            return None;
        }
        self.next = Some(now + self.every);
        Some(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_lets_one_line_through_per_period_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(10));
        assert_eq!(t.allow(t0), Some(0));
        assert_eq!(t.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.allow(t0 + Duration::from_secs(9)), None);
        assert_eq!(t.allow(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(t.allow(t0 + Duration::from_secs(11)), None);
    }
}
