//! A live progress line on stderr, rewritten about once a second.

use std::io::Write;
use std::time::{Duration, Instant};

use super::workload::Outcome;

pub struct Progress {
    label: String,
    next: Instant,
}

impl Progress {
    pub fn new(label: impl Into<String>) -> Progress {
        Progress {
            label: label.into(),
            next: Instant::now() + Duration::from_secs(1),
        }
    }

    pub fn tick(&mut self, o: &Outcome, start: Instant) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + Duration::from_secs(1);
        eprint!(
            "\r  {:<28} t={:>4.1}s delivered {:>9}/{:<9} p50 {:>7.1}us p99 {:>8.1}us   ",
            self.label,
            now.saturating_duration_since(start).as_secs_f64(),
            o.delivered,
            o.expected,
            o.us(0.5),
            o.us(0.99)
        );
        let _ = std::io::stderr().flush();
    }

    /// Clears the line.
    pub fn done(&self) {
        eprint!("\r{:100}\r", "");
    }
}
