//! Sliding replay window over sequence numbers (pure). 128 numbers wide: a datagram may arrive
//! up to 127 sequence numbers late and still count once; older ones are taken for replays.

/// Width of the window.
pub const WINDOW: u64 = 128;

/// Which of the last [`WINDOW`] sequence numbers have been seen.
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    top: Option<u64>,
    /// Bit i set: `top - i` was seen.
    seen: u128,
}

impl ReplayWindow {
    /// True (and records it) if `seq` was not seen and is inside the window.
    pub fn accept(&mut self, seq: u64) -> bool {
        let Some(top) = self.top else {
            self.top = Some(seq);
            self.seen = 1;
            return true;
        };
        if seq > top {
            let shift = seq - top;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.top = Some(seq);
            return true;
        }
        let back = top - seq;
        if back >= WINDOW {
            return false;
        }
        let bit = 1u128 << back;
        if self.seen & bit != 0 {
            return false;
        }
        self.seen |= bit;
        true
    }

    /// The highest sequence number seen.
    pub fn top(&self) -> Option<u64> {
        self.top
    }

    /// Bit i set: `top - i` was seen (for replication).
    pub fn seen(&self) -> u128 {
        self.seen
    }

    /// A window in exactly the state `top` and `seen` describe (from a replica).
    pub fn from_parts(top: Option<u64>, seen: u128) -> ReplayWindow {
        ReplayWindow {
            top,
            seen: if top.is_some() { seen } else { 0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_once_and_reordered_inside_window() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(1000));
        assert!(!w.accept(1000));
        assert!(w.accept(1002));
        assert!(w.accept(1001));
        assert!(!w.accept(1001));
        assert!(!w.accept(1002));
        assert_eq!(w.top(), Some(1002));
    }

    #[test]
    fn rejects_below_window_and_survives_large_jumps() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(10));
        assert!(w.accept(10 + WINDOW));
        assert!(!w.accept(10));
        assert!(w.accept(11));
        assert!(w.accept(u64::MAX >> 8));
        assert!(!w.accept(11 + WINDOW));
        assert!(!w.accept(u64::MAX >> 8));
    }
}
