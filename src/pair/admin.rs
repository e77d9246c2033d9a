//! What a pair serves on its admin endpoint (`net::metrics`): its counters, `/live` (every
//! thread still runs), `/ready` (serving: with a controller, registered and not leaving;
//! with static sessions, as soon as it runs) and `/status` (JSON: identity, registration,
//! counters).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::agent::AgentStatus;
use crate::net::metrics::{status_json, Admin};
use crate::stats::StatsSet;

/// Shared between the pair, its threads and the admin endpoint.
#[derive(Debug, Default)]
pub struct Health {
    /// A shard thread ended without being asked to.
    pub failed: AtomicBool,
    /// The agent, once the pair registers (static sessions: none).
    pub agent: Mutex<Option<Arc<AgentStatus>>>,
    /// The UDP endpoint and the stream endpoints, for `/status`.
    pub udp: Mutex<String>,
    pub bus: Mutex<Vec<String>>,
}

impl Health {
    fn agent(&self) -> Option<Arc<AgentStatus>> {
        self.agent.lock().ok().and_then(|a| a.clone())
    }

    fn ready(&self) -> Result<(), String> {
        if self.failed.load(Relaxed) {
            return Err("a pair thread stopped".into());
        }
        let Some(a) = self.agent() else {
            return Ok(());
        };
        if a.leave_within_ms.load(Relaxed) > 0 || a.drained.load(Relaxed) {
            return Err("leaving".into());
        }
        if !a.registered.load(Relaxed) {
            return Err("not registered with the controller yet".into());
        }
        Ok(())
    }
}

/// The admin endpoint of a pair whose counters are `stats`.
/// A pair's `/status` (after the build fields; docs/OPERATIONS.md shows a sample).
#[derive(Serialize)]
struct PairStatus {
    udp: String,
    bus: Vec<String>,
    ready: bool,
    not_ready: Option<String>,
    controller: Option<Registration>,
    sessions: u64,
    joined: u64,
    objects: u64,
    datagrams_in: u64,
    accepted: u64,
    dropped: u64,
    datagrams_out: u64,
    mirrors_synced: u64,
}

/// What the agent holds of the controller's registration.
#[derive(Serialize)]
struct Registration {
    pair: u32,
    registered: bool,
    leaving: bool,
}

pub fn admin(stats: Arc<StatsSet>, health: Arc<Health>) -> Admin {
    let s = stats.clone();
    let live = health.clone();
    let ready = health.clone();
    Admin {
        metrics: Arc::new(move || s.snapshot().to_prometheus()),
        live: Arc::new(move || match live.failed.load(Relaxed) {
            false => Ok(()),
            true => Err("a pair thread stopped".into()),
        }),
        ready: Arc::new(move || ready.ready()),
        status: Arc::new(move || {
            let s = stats.snapshot();
            let agent = health.agent();
            let ready = health.ready();
            let doc = PairStatus {
                udp: health.udp.lock().map(|u| u.clone()).unwrap_or_default(),
                bus: health.bus.lock().map(|b| b.clone()).unwrap_or_default(),
                ready: ready.is_ok(),
                not_ready: ready.err(),
                controller: agent.as_ref().map(|a| Registration {
                    pair: a.pair.load(Relaxed),
                    registered: a.registered.load(Relaxed),
                    leaving: a.leave_within_ms.load(Relaxed) > 0,
                }),
                sessions: s.sessions,
                joined: s.joined,
                objects: s.objects,
                datagrams_in: s.ingest_datagrams,
                accepted: s.ingest_accepted,
                dropped: s.ingest_drops.total(),
                datagrams_out: s.fanout_datagrams,
                mirrors_synced: s.mirrors_synced,
            };
            status_json("pair", &doc)
        }),
    }
}
