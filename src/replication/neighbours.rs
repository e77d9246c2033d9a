//! The region bus, subscribing side (a thin driver on the ingest thread): one link per pair
//! serving other zones of a scene this pair serves, as a `Neighbour` of its replication
//! stream. What each event means for the proxies is `Engine::follow` (pure, `scene::proxy`).
//!
//! Why the replication stream and not a separate PUB/SUB bus: it already gives each
//! subscriber a checkpoint before live events (a late subscriber gets the current state of
//! the zones, the "zone snapshot"), the origin's order, a bounded backlog (a slow
//! subscriber is cut off and counted, then resubscribes and gets a fresh checkpoint rather
//! than silently missing updates), the cluster token and Noise encryption. The hub sends a
//! neighbour only checkpoint objects and accepted writes, never sessions or keys. The filter
//! is by scene: every object of a shared scene the origin serves becomes a proxy here, and
//! interest decides who is sent what.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::stream::{LinkEvent, Role, StreamLink};
use crate::scene::{Batch, Engine, EventKind};
use crate::security::PublicKey;
use crate::stats::PairStats;

struct Followed {
    /// This pair's id, as the followed pair's hand-overs name it.
    me: u32,
    link: StreamLink,
    endpoint: String,
    key: Option<PublicKey>,
    scenes: Vec<u32>,
}

/// Links to the pairs this one follows. See the module doc.
#[derive(Default)]
pub struct Neighbours {
    followed: BTreeMap<u32, Followed>,
    /// Devices whose writes the followed streams carried: one of them may be handed over
    /// here and follow its redirect before the hand-over arrives, so its datagrams are held
    /// rather than refused (see `Replica::hold`).
    writers: HashSet<u32>,
}

impl Neighbours {
    /// Follows `pair` for `scenes` (a new link unless one to the same stream is up).
    #[allow(clippy::too_many_arguments)]
    pub fn follow(
        &mut self,
        pair: u32,
        me: u32,
        endpoint: &str,
        key: Option<PublicKey>,
        scenes: Vec<u32>,
        connect: impl FnOnce(&str, Option<PublicKey>, Role) -> Option<StreamLink>,
    ) {
        if let Some(f) = self.followed.get_mut(&pair) {
            if f.endpoint == endpoint && f.key == key {
                f.scenes = scenes;
                f.me = me;
                return;
            }
        }
        self.followed.remove(&pair);
        if let Some(link) = connect(endpoint, key, Role::Neighbour) {
            let f = Followed {
                me,
                link,
                endpoint: endpoint.to_string(),
                key,
                scenes,
            };
            self.followed.insert(pair, f);
        }
    }

    /// Whether `device` wrote in a followed stream (it may be handed over here).
    pub fn knows(&self, device: u32) -> bool {
        self.writers.contains(&device)
    }

    /// Stops following `pair`; its proxies go after the grace unless another pair confirms
    /// them (`Engine::proxy_unfollow`).
    pub fn unfollow(&mut self, pair: u32, now: Instant, engine: &mut Engine) {
        if self.followed.remove(&pair).is_some() {
            engine.proxy_unfollow(now, pair);
        }
        if self.followed.is_empty() {
            self.writers.clear();
        }
    }

    /// Applies what the links brought; deliveries to this pair's devices go to `out`.
    pub fn service(
        &mut self,
        now: Instant,
        engine: &mut Engine,
        out: &mut Batch,
        stats: &PairStats,
    ) {
        let (mut applied, mut refused, mut resyncs) = (0, 0, 0);
        for (pair, f) in &mut self.followed {
            while let Some(ev) = f.link.try_next() {
                match ev {
                    LinkEvent::Batch(b) => {
                        for (e, data) in b.iter() {
                            let shared = |s: u32| f.scenes.contains(&s);
                            match engine.follow(now, f.me, *pair, e, data, shared, out) {
                                Ok(()) if matches!(e.kind, EventKind::Relay(_)) => {
                                    self.writers.insert(e.device);
                                    applied += 1
                                }
                                Ok(()) => {}
                                Err(_) => refused += 1,
                            }
                        }
                    }
                    LinkEvent::Up => {}
                    LinkEvent::Bye | LinkEvent::Lost | LinkEvent::Malformed => resyncs += 1,
                }
            }
        }
        stats
            .region_links
            .store(self.followed.len() as u64, Relaxed);
        if applied + refused + resyncs > 0 {
            stats.region_applied.fetch_add(applied, Relaxed);
            stats.region_refused.fetch_add(refused, Relaxed);
            stats.region_resyncs.fetch_add(resyncs, Relaxed);
        }
    }
}
