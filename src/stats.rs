//! Counters a pair exposes, below ingest, fanout and pair (which all use them and so no longer
//! import each other): written by the ingest and fanout threads of each shard with relaxed
//! atomic stores once per burst (never per datagram), read (summed over shards) by the metrics
//! endpoint, the agent and `up`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::net::histogram::{Histogram, HistogramSnapshot};
use crate::scene::{DropCounts, DropReason};

/// Live counters of one pair.
#[derive(Debug, Default)]
pub struct PairStats {
    pub ingest_datagrams: AtomicU64,
    pub ingest_accepted: AtomicU64,
    ingest_drops: [AtomicU64; DropReason::ALL.len()],
    pub sessions: AtomicU64,
    pub joined: AtomicU64,
    pub objects: AtomicU64,
    pub fanout_datagrams: AtomicU64,
    /// Object updates sent (a bundle datagram carries several).
    pub fanout_updates: AtomicU64,
    pub fanout_buffer_full: AtomicU64,
    pub fanout_refused: AtomicU64,
    /// Events for a device fanout has no session for (a bug if ever non-zero).
    pub fanout_no_session: AtomicU64,
    /// Subscribers of the replication stream (a fanout half, standbys).
    pub bus_subscribers: AtomicU64,
    /// Replication stream connections refused (wrong token, garbage).
    pub bus_refused: AtomicU64,
    /// Stream subscribers dropped for falling too far behind.
    pub bus_overflows: AtomicU64,
    /// Streams of other pairs this pair follows for the zones of shared scenes (the region bus).
    pub region_links: AtomicU64,
    /// Proxy updates applied from other pairs' streams (objects in zones they serve).
    pub region_applied: AtomicU64,
    /// Proxy updates refused (an object id a local object holds, a full scene, malformed).
    pub region_refused: AtomicU64,
    /// Times a followed stream started over (lost, closed or malformed: a fresh checkpoint).
    pub region_resyncs: AtomicU64,
    /// Devices handed over to another pair (their anchor crossed into its zone).
    pub devices_moved_out: AtomicU64,
    /// Devices taken over from another pair (their anchor crossed into a zone served here).
    pub devices_moved_in: AtomicU64,
    /// Frames from a mirrored primary that could not be decoded (the link reconnects).
    pub mirror_malformed: AtomicU64,
    /// Replicated events a mirror could not apply (it dials again for a fresh checkpoint).
    pub mirror_diverged: AtomicU64,
    /// Late writes of a scene taken over from a mirror, caught up from the old primary.
    pub mirror_caught_up: AtomicU64,
    /// The controller's probes answered (it checks on a pair it suspects).
    pub probes_answered: AtomicU64,
    /// Datagrams of devices that arrived ahead of their scene: fed once it arrived, expired,
    /// refused for want of room.
    pub held_fed: AtomicU64,
    pub reordered_in_order: AtomicU64,
    pub reordered_gave_up: AtomicU64,
    pub held_expired: AtomicU64,
    pub held_overflow: AtomicU64,
    /// Primaries this pair mirrors in sync.
    pub mirrors_synced: AtomicU64,
    /// UDP payload bytes received and sent.
    pub ingest_bytes: AtomicU64,
    pub fanout_bytes: AtomicU64,
    /// Per burst: from its datagrams' receipt to its last datagram sent (fused) or handed to
    /// the fanout thread (split, ingest-only).
    pub burst_latency: Histogram,
}

/// A plain copy of the counters at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub ingest_datagrams: u64,
    pub ingest_accepted: u64,
    pub ingest_drops: DropCounts,
    pub sessions: u64,
    pub joined: u64,
    pub objects: u64,
    pub fanout_datagrams: u64,
    pub fanout_updates: u64,
    pub fanout_buffer_full: u64,
    pub fanout_refused: u64,
    pub fanout_no_session: u64,
    pub bus_subscribers: u64,
    pub bus_refused: u64,
    pub bus_overflows: u64,
    pub region_links: u64,
    pub region_applied: u64,
    pub region_refused: u64,
    pub region_resyncs: u64,
    pub devices_moved_out: u64,
    pub devices_moved_in: u64,
    pub mirror_malformed: u64,
    pub mirror_diverged: u64,
    pub mirror_caught_up: u64,
    pub probes_answered: u64,
    pub held_fed: u64,
    pub reordered_in_order: u64,
    pub reordered_gave_up: u64,
    pub held_expired: u64,
    pub held_overflow: u64,
    pub mirrors_synced: u64,
    pub ingest_bytes: u64,
    pub fanout_bytes: u64,
    pub burst_latency: HistogramSnapshot,
}

impl PairStats {
    /// Publishes the ingest engine's cumulative drop counts.
    pub fn store_drops(&self, drops: &DropCounts) {
        for r in DropReason::ALL {
            self.ingest_drops[r as usize].store(drops.get(r), Relaxed);
        }
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let mut drops = DropCounts::default();
        for r in DropReason::ALL {
            drops.set(r, self.ingest_drops[r as usize].load(Relaxed));
        }
        StatsSnapshot {
            ingest_datagrams: self.ingest_datagrams.load(Relaxed),
            ingest_accepted: self.ingest_accepted.load(Relaxed),
            ingest_drops: drops,
            sessions: self.sessions.load(Relaxed),
            joined: self.joined.load(Relaxed),
            objects: self.objects.load(Relaxed),
            fanout_datagrams: self.fanout_datagrams.load(Relaxed),
            fanout_updates: self.fanout_updates.load(Relaxed),
            fanout_buffer_full: self.fanout_buffer_full.load(Relaxed),
            fanout_refused: self.fanout_refused.load(Relaxed),
            fanout_no_session: self.fanout_no_session.load(Relaxed),
            bus_subscribers: self.bus_subscribers.load(Relaxed),
            bus_refused: self.bus_refused.load(Relaxed),
            bus_overflows: self.bus_overflows.load(Relaxed),
            region_links: self.region_links.load(Relaxed),
            region_applied: self.region_applied.load(Relaxed),
            region_refused: self.region_refused.load(Relaxed),
            region_resyncs: self.region_resyncs.load(Relaxed),
            devices_moved_out: self.devices_moved_out.load(Relaxed),
            devices_moved_in: self.devices_moved_in.load(Relaxed),
            mirror_malformed: self.mirror_malformed.load(Relaxed),
            mirror_diverged: self.mirror_diverged.load(Relaxed),
            mirror_caught_up: self.mirror_caught_up.load(Relaxed),
            probes_answered: self.probes_answered.load(Relaxed),
            held_fed: self.held_fed.load(Relaxed),
            reordered_in_order: self.reordered_in_order.load(Relaxed),
            reordered_gave_up: self.reordered_gave_up.load(Relaxed),
            held_expired: self.held_expired.load(Relaxed),
            held_overflow: self.held_overflow.load(Relaxed),
            mirrors_synced: self.mirrors_synced.load(Relaxed),
            ingest_bytes: self.ingest_bytes.load(Relaxed),
            fanout_bytes: self.fanout_bytes.load(Relaxed),
            burst_latency: self.burst_latency.snapshot(),
        }
    }
}

/// The counters of every shard of a pair; a snapshot adds them up.
#[derive(Debug, Default)]
pub struct StatsSet {
    pub shards: Vec<Arc<PairStats>>,
}

impl StatsSet {
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut total = StatsSnapshot::default();
        for s in &self.shards {
            total.add(&s.snapshot());
        }
        total
    }
}

impl StatsSnapshot {
    /// Adds `o` to these counters.
    pub fn add(&mut self, o: &StatsSnapshot) {
        self.ingest_datagrams += o.ingest_datagrams;
        self.ingest_accepted += o.ingest_accepted;
        self.ingest_drops.merge(&o.ingest_drops);
        self.sessions += o.sessions;
        self.joined += o.joined;
        self.objects += o.objects;
        self.fanout_datagrams += o.fanout_datagrams;
        self.fanout_updates += o.fanout_updates;
        self.fanout_buffer_full += o.fanout_buffer_full;
        self.fanout_refused += o.fanout_refused;
        self.fanout_no_session += o.fanout_no_session;
        self.bus_subscribers += o.bus_subscribers;
        self.bus_refused += o.bus_refused;
        self.bus_overflows += o.bus_overflows;
        self.region_links += o.region_links;
        self.region_applied += o.region_applied;
        self.region_refused += o.region_refused;
        self.region_resyncs += o.region_resyncs;
        self.devices_moved_out += o.devices_moved_out;
        self.devices_moved_in += o.devices_moved_in;
        self.mirror_malformed += o.mirror_malformed;
        self.mirror_diverged += o.mirror_diverged;
        self.mirror_caught_up += o.mirror_caught_up;
        self.probes_answered += o.probes_answered;
        self.held_fed += o.held_fed;
        self.reordered_in_order += o.reordered_in_order;
        self.reordered_gave_up += o.reordered_gave_up;
        self.held_expired += o.held_expired;
        self.held_overflow += o.held_overflow;
        self.mirrors_synced += o.mirrors_synced;
        self.ingest_bytes += o.ingest_bytes;
        self.fanout_bytes += o.fanout_bytes;
        self.burst_latency.add(&o.burst_latency);
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn to_prometheus(&self) -> String {
        let mut s = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, rows: &[(&str, u64)]| {
            let _ = writeln!(
                s,
                "# HELP zonecast_{name} {help}\n# TYPE zonecast_{name} {kind}"
            );
            for (labels, v) in rows {
                let _ = writeln!(s, "zonecast_{name}{labels} {v}");
            }
        };
        metric(
            "ingest_datagrams_total",
            "counter",
            "Datagrams received.",
            &[("", self.ingest_datagrams)],
        );
        metric(
            "ingest_bytes_total",
            "counter",
            "UDP payload bytes received.",
            &[("", self.ingest_bytes)],
        );
        metric(
            "fanout_bytes_total",
            "counter",
            "UDP payload bytes sent.",
            &[("", self.fanout_bytes)],
        );
        metric(
            "ingest_accepted_total",
            "counter",
            "Datagrams accepted.",
            &[("", self.ingest_accepted)],
        );
        let labels: Vec<String> = DropReason::ALL
            .iter()
            .map(|r| format!("{{reason=\"{}\"}}", r.name()))
            .collect();
        let rows: Vec<(&str, u64)> = DropReason::ALL
            .iter()
            .zip(&labels)
            .map(|(r, l)| (l.as_str(), self.ingest_drops.get(*r)))
            .collect();
        metric(
            "ingest_dropped_total",
            "counter",
            "Datagrams dropped by ingest, by reason.",
            &rows,
        );
        metric(
            "sessions",
            "gauge",
            "Device sessions admitted.",
            &[("", self.sessions)],
        );
        metric(
            "devices_joined",
            "gauge",
            "Devices joined to a scene.",
            &[("", self.joined)],
        );
        metric(
            "objects",
            "gauge",
            "Objects held, tombstones included.",
            &[("", self.objects)],
        );
        metric(
            "fanout_datagrams_total",
            "counter",
            "Datagrams sent.",
            &[("", self.fanout_datagrams)],
        );
        metric(
            "fanout_updates_total",
            "counter",
            "Object updates sent to devices (a bundle datagram carries several).",
            &[("", self.fanout_updates)],
        );
        metric(
            "fanout_dropped_total",
            "counter",
            "Datagrams fanout could not send, by reason.",
            &[
                ("{reason=\"buffer_full\"}", self.fanout_buffer_full),
                ("{reason=\"refused\"}", self.fanout_refused),
                ("{reason=\"no_session\"}", self.fanout_no_session),
            ],
        );
        metric(
            "bus_subscribers",
            "gauge",
            "Subscribers of the replication stream (a fanout half, standbys).",
            &[("", self.bus_subscribers)],
        );
        metric(
            "bus_refused_total",
            "counter",
            "Replication stream connections refused (wrong token, garbage).",
            &[("", self.bus_refused)],
        );
        metric(
            "bus_overflows_total",
            "counter",
            "Stream subscribers dropped for falling too far behind.",
            &[("", self.bus_overflows)],
        );
        metric(
            "region_links",
            "gauge",
            "Streams of other pairs this pair follows for the zones of shared scenes (the region bus).",
            &[("", self.region_links)],
        );
        metric(
            "region_applied_total",
            "counter",
            "Proxy updates applied from other pairs' streams (objects in zones they serve).",
            &[("", self.region_applied)],
        );
        metric(
            "region_refused_total",
            "counter",
            "Proxy updates refused (an object id a local object holds, a full scene, malformed).",
            &[("", self.region_refused)],
        );
        metric(
            "region_resyncs_total",
            "counter",
            "Times a followed stream started over (lost, closed or malformed: a fresh checkpoint).",
            &[("", self.region_resyncs)],
        );
        metric(
            "devices_moved_out_total",
            "counter",
            "Devices handed over to another pair (their anchor crossed into its zone).",
            &[("", self.devices_moved_out)],
        );
        metric(
            "devices_moved_in_total",
            "counter",
            "Devices taken over from another pair (their anchor crossed into a zone served here).",
            &[("", self.devices_moved_in)],
        );
        metric(
            "mirror_malformed_total",
            "counter",
            "Frames from a mirrored primary that could not be decoded (the link reconnects).",
            &[("", self.mirror_malformed)],
        );
        metric(
            "mirror_diverged_total",
            "counter",
            "Replicated events a mirror could not apply (it dials again for a fresh checkpoint).",
            &[("", self.mirror_diverged)],
        );
        metric(
            "mirror_caught_up_total",
            "counter",
            "Writes of a scene taken over from a mirror that its old primary still streamed after the takeover, applied here.",
            &[("", self.mirror_caught_up)],
        );
        metric(
            "probes_answered_total",
            "counter",
            "Probes from the controller answered (it checks on a pair it suspects before failing it over).",
            &[("", self.probes_answered)],
        );
        metric(
            "held_total",
            "counter",
            "Datagrams of devices that arrived ahead of their scene (a drain's target), by outcome.",
            &[
                ("{outcome=\"fed\"}", self.held_fed),
                ("{outcome=\"expired\"}", self.held_expired),
                ("{outcome=\"overflow\"}", self.held_overflow),
            ],
        );
        metric(
            "reordered_total",
            "counter",
            "Direct datagrams of devices arriving from a drained pair that waited for the forwarded ones sent before them: fed in order once the gap filled, or after it was given up (lost on the way to the old pair).",
            &[
                ("{outcome=\"in_order\"}", self.reordered_in_order),
                ("{outcome=\"gave_up\"}", self.reordered_gave_up),
            ],
        );
        metric(
            "mirrors_synced",
            "gauge",
            "Primaries this pair mirrors in sync.",
            &[("", self.mirrors_synced)],
        );
        s.push_str(
            "# HELP zonecast_burst_latency_seconds Per burst of datagrams: from receipt to the last datagram sent (fused pair) or handed to fanout (split pair).\n# TYPE zonecast_burst_latency_seconds histogram\n",
        );
        self.burst_latency
            .render(&mut s, "zonecast_burst_latency_seconds", "");
        s
    }
}
