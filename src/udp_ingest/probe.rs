//! Answering the controller's probes (`wire::probe`) from the ingest loop: one datagram in,
//! one out, only for probes whose tag verifies under the cluster's probe key. The answer says
//! which pair this is (the agent sets the id once registered) and whether it serves: a split
//! pair's ingest does not while its fanout half is away.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::OnceLock;

use crate::wire::probe::{read_probe, write_ack, ProbeKey, PROBE_LEN};

/// Who this pair is, for its probe answers; shared by the agent (writes) and every ingest
/// shard (reads).
#[derive(Default)]
pub struct ProbeIdentity {
    /// Set when the pair registers with a controller (no key: probes are not answered).
    key: OnceLock<ProbeKey>,
    pair: AtomicU32,
    requires_fanout: AtomicBool,
}

impl ProbeIdentity {
    /// The cluster token probes are signed with, and whether serving needs a fanout half.
    pub fn configure(&self, token: &str, requires_fanout: bool) {
        let _ = self.key.set(ProbeKey::from_token(token));
        self.requires_fanout.store(requires_fanout, Relaxed);
    }

    /// The id the controller gave this pair (0: not registered).
    pub fn set_pair(&self, pair: u32) {
        self.pair.store(pair, Relaxed);
    }

    /// The answer to the probe in `bytes`, if it is an authentic one; `fanout_alive`: the
    /// fanout half is connected (read only when this pair needs one).
    pub fn answer(&self, bytes: &[u8], fanout_alive: impl Fn() -> bool) -> Option<[u8; PROBE_LEN]> {
        let key = self.key.get()?;
        let probe = read_probe(key, bytes)?;
        let serving = !self.requires_fanout.load(Relaxed) || fanout_alive();
        Some(write_ack(key, &probe, self.pair.load(Relaxed), serving))
    }
}
