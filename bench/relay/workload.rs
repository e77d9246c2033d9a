//! What one measurement runs and what it yields, shared by every mode.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use zonecast::net::unix_ns;
use zonecast::wire::{Fields, ObjectBody, MASK_PAYLOAD, MASK_TRANSLATION};

/// The workload: identical for the raw floor, zonecast and NATS.
#[derive(Clone, Debug)]
pub struct Workload {
    pub devices: u32,
    /// Devices are spread round-robin over scenes 1..=scenes.
    pub scenes: u32,
    /// Updates per second each device sends.
    pub hz: f64,
    /// Application payload bytes per update.
    pub payload: usize,
    pub secs: f64,
    pub warmup_secs: f64,
    /// Extra devices that join and send nothing (slow-device experiment); they read (and are
    /// not counted) when `extra_reads`, else they never read and their socket buffers fill.
    pub stuck: u32,
    pub extra_reads: bool,
    /// The generator polls its sockets without sleeping (UDP modes), so the receiving core
    /// never has to be woken: shows the relay's own latency without the VM's wake-up cost.
    pub spin: bool,
}

impl Workload {
    pub fn scene_of(&self, device_index: usize) -> u32 {
        1 + (device_index as u32 % self.scenes.max(1))
    }

    /// How many sending devices receive the updates of device `i`: the others of its scene.
    pub fn receivers(&self, i: usize) -> u64 {
        (0..self.devices as usize)
            .filter(|j| *j != i && self.scene_of(*j) == self.scene_of(i))
            .count() as u64
    }

    /// The field mask of every update: translation, plus the payload when there is one.
    pub fn mask(&self) -> u8 {
        if self.payload > 0 {
            MASK_TRANSLATION | MASK_PAYLOAD
        } else {
            MASK_TRANSLATION
        }
    }

    /// Datagrams per second the receivers should get: each update reaches every other live
    /// member of its scene.
    pub fn offered_per_sec(&self) -> f64 {
        let mut members = vec![0u32; self.scenes.max(1) as usize];
        for i in 0..self.devices as usize {
            members[(self.scene_of(i) - 1) as usize] += 1;
        }
        members
            .iter()
            .map(|m| f64::from(*m) * f64::from(m.saturating_sub(1)) * self.hz)
            .sum()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "devices": self.devices, "scenes": self.scenes, "hz_per_device": self.hz,
            "payload_bytes": self.payload, "secs": self.secs, "warmup_secs": self.warmup_secs,
            "extra_devices": self.stuck, "extra_devices_read": self.extra_reads,
            "generator_spins": self.spin,
        })
    }
}

/// The update device `id` sends at scheduled offset `x` seconds, origin stamped as a relay
/// would stamp it (the raw floor and NATS carry it without a relay).
pub fn update<'a>(id: u32, x: f32, mask: u8, payload: &'a [u8]) -> ObjectBody<'a> {
    let fields = Fields {
        translation: [x, 0.0, 0.0],
        ..Fields::default()
    };
    let mut b = ObjectBody::new(u64::from(id), mask, fields, payload);
    b.origin_device = id;
    b.origin_timestamp_ns = unix_ns();
    b
}

/// What one measurement produced.
pub struct Outcome {
    pub latency: Histogram<u64>,
    pub delivered: u64,
    pub expected: u64,
    pub elapsed: Duration,
    /// Drops counted by the server, by reason (zonecast only).
    pub server_drops: Value,
}

impl Outcome {
    pub fn new(elapsed: Duration) -> Outcome {
        Outcome {
            latency: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds"),
            delivered: 0,
            expected: 0,
            elapsed,
            server_drops: Value::Null,
        }
    }

    pub fn us(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn delivered_per_sec(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn delivered_ratio(&self) -> f64 {
        self.delivered as f64 / self.expected.max(1) as f64
    }

    pub fn to_json(&self) -> Value {
        json!({
            "p50_us": self.us(0.5), "p90_us": self.us(0.9), "p99_us": self.us(0.99),
            "p999_us": self.us(0.999), "max_us": self.latency.max() as f64 / 1000.0,
            "delivered": self.delivered, "expected": self.expected,
            "delivered_per_sec": self.delivered_per_sec(),
            "server_drops": self.server_drops,
        })
    }

    /// The latency CDF as (microseconds, fraction) points.
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        let total = self.latency.len().max(1) as f64;
        let mut seen = 0u64;
        self.latency
            .iter_recorded()
            .map(|v| {
                seen += v.count_at_value();
                (v.value_iterated_to() as f64 / 1000.0, seen as f64 / total)
            })
            .collect()
    }
}
