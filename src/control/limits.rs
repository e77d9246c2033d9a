//! Abuse limits on device registration, the one op anyone may send: a token bucket per
//! source address and a bounded table of sources (pure: `now` comes in, no clock, no sockets).
//!
//! A source is the peer's IPv4 address or IPv6 /64 (one host's or one LAN's worth of
//! addresses; a NAT'd venue shares one bucket, which is why the default burst is generous);
//! `ipc://` peers are one local source. The table holds at most `max_sources` buckets: when it
//! is full, buckets that have refilled completely (the same as no bucket) are dropped, and if
//! every one is still in use, new sources share one overflow bucket, so a flood from many
//! addresses is bounded in memory and in rate without evicting the sources already limited.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Where a request came from, as far as limits are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// Not an IP peer (`ipc://`), or the transport did not say.
    Local,
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
}

impl Source {
    /// The source of a peer address as libzmq reports it (`Peer-Address`), if any.
    pub fn from_peer(address: Option<&str>) -> Source {
        match address.and_then(|a| a.trim_matches(['[', ']']).parse::<IpAddr>().ok()) {
            Some(IpAddr::V4(v4)) => Source::V4(v4.octets()),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.octets()),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    Source::V6(prefix)
                }
            },
            None => Source::Local,
        }
    }
}

/// Registration limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RegisterLimits {
    /// Registrations per second one source gets, sustained.
    pub per_sec: f64,
    /// Registrations one source may make at once.
    pub burst: u32,
    /// Sources tracked at once.
    pub max_sources: usize,
}

impl Default for RegisterLimits {
    fn default() -> RegisterLimits {
        RegisterLimits {
            per_sec: 20.0,
            burst: 100,
            max_sources: 16_384,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(limits: &RegisterLimits, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(limits.burst),
            at: now,
        }
    }

    fn refill(&mut self, limits: &RegisterLimits, now: Instant) {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + secs * limits.per_sec).min(f64::from(limits.burst));
        self.at = now;
    }

    /// Takes one token, or says how long until there is one.
    fn take(&mut self, limits: &RegisterLimits, now: Instant) -> Result<(), Duration> {
        self.refill(limits, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if limits.per_sec <= 0.0 {
            return Err(Duration::MAX);
        }
        Err(Duration::from_secs_f64(
            (1.0 - self.tokens) / limits.per_sec,
        ))
    }
}

/// Token buckets by source.
#[derive(Debug)]
pub struct RegisterLimiter {
    limits: RegisterLimits,
    buckets: HashMap<Source, Bucket>,
    overflow: Option<Bucket>,
}

impl RegisterLimiter {
    pub fn new(limits: RegisterLimits) -> RegisterLimiter {
        RegisterLimiter {
            limits,
            buckets: HashMap::new(),
            overflow: None,
        }
    }

    /// Sources with a bucket now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    /// Admits one registration from `source`, or says how long until it would be admitted.
    pub fn admit(&mut self, now: Instant, source: Source) -> Result<(), Duration> {
        let limits = self.limits;
        if !self.buckets.contains_key(&source) && self.buckets.len() >= limits.max_sources {
            self.buckets.retain(|_, b| {
                b.refill(&limits, now);
                b.tokens < f64::from(limits.burst)
            });
            if self.buckets.len() >= limits.max_sources {
                let shared = self
                    .overflow
                    .get_or_insert_with(|| Bucket::full(&limits, now));
                return shared.take(&limits, now);
            }
        }
        self.buckets
            .entry(source)
            .or_insert_with(|| Bucket::full(&limits, now))
            .take(&limits, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_sec: f64, burst: u32, max_sources: usize) -> RegisterLimiter {
        RegisterLimiter::new(RegisterLimits {
            per_sec,
            burst,
            max_sources,
        })
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let mut l = limits(10.0, 5, 100);
        let t0 = Instant::now();
        let a = Source::V4([10, 0, 0, 1]);
        for _ in 0..5 {
            assert!(l.admit(t0, a).is_ok());
        }
        let wait = l.admit(t0, a).unwrap_err();
        assert!(wait > Duration::from_millis(99) && wait <= Duration::from_millis(100));
        // Another source is not affected.
        assert!(l.admit(t0, Source::V4([10, 0, 0, 2])).is_ok());
        // 100 ms later: one more.
        let t1 = t0 + Duration::from_millis(100);
        assert!(l.admit(t1, a).is_ok());
        assert!(l.admit(t1, a).is_err());
    }

    #[test]
    fn the_table_stays_bounded_and_overflow_sources_share_one_bucket() {
        let mut l = limits(1.0, 2, 3);
        let t0 = Instant::now();
        for i in 0..3u8 {
            assert!(l.admit(t0, Source::V4([1, 1, 1, i])).is_ok());
        }
        // Full of sources still in use: newcomers share the overflow bucket (burst 2).
        assert!(l.admit(t0, Source::V4([2, 0, 0, 1])).is_ok());
        assert!(l.admit(t0, Source::V4([2, 0, 0, 2])).is_ok());
        assert!(l.admit(t0, Source::V4([2, 0, 0, 3])).is_err());
        assert_eq!(l.tracked(), 3);
        // Once the tracked sources have refilled, they make room again.
        let later = t0 + Duration::from_secs(5);
        assert!(l.admit(later, Source::V4([3, 0, 0, 1])).is_ok());
        assert_eq!(l.tracked(), 1);
    }

    #[test]
    fn sources_come_from_peer_addresses() {
        assert_eq!(
            Source::from_peer(Some("192.0.2.7")),
            Source::V4([192, 0, 2, 7])
        );
        assert_eq!(
            Source::from_peer(Some("::ffff:192.0.2.7")),
            Source::V4([192, 0, 2, 7])
        );
        let a = Source::from_peer(Some("2001:db8:1:2::5"));
        let b = Source::from_peer(Some("2001:db8:1:2:ffff::9"));
        assert_eq!(a, b, "one /64 is one source");
        assert_eq!(Source::from_peer(None), Source::Local);
        assert_eq!(Source::from_peer(Some("")), Source::Local);
    }
}
