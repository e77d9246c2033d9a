//! Pairs joining, heartbeating and leaving: `pair.register` (with its replication stream
//! checked), `pair.heartbeat` (load, mirror reports, the assignment when it changed) and
//! `pair.deregister`.

use std::net::SocketAddr;
use std::time::Instant;

use super::{err, Change, Controller, Liveness, PairLive, PairRec};
use crate::control::protocol::{
    ControlError, ErrorCode, HeartbeatReply, Load, MirrorReport, MirrorState, Moved,
    PairDeregistered, PairRegistered,
};
use crate::security::PublicKey;

/// A pair's replication stream as registered: checked endpoint and key.
pub(super) struct Stream {
    bus: Option<String>,
    key: Option<String>,
}

impl Stream {
    /// A `tcp://HOST:PORT` endpoint others can reach, and a valid Z85 key, required when the
    /// controller is `encrypted` (the stream carries session keys).
    pub(super) fn check(
        bus: Option<String>,
        key: Option<String>,
        encrypted: bool,
    ) -> Result<Stream, ControlError> {
        let Some(b) = bus else {
            return Ok(Stream {
                bus: None,
                key: None,
            });
        };
        let ok = b
            .strip_prefix("tcp://")
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .is_some_and(|a| !a.ip().is_unspecified() && a.port() != 0);
        if !ok {
            return Err(err(
                ErrorCode::InvalidValue,
                format!("bus `{b}` is not tcp://HOST:PORT with a reachable address"),
            ));
        }
        let key = match key {
            Some(k) => Some(
                PublicKey::from_z85(&k)
                    .map_err(|e| err(ErrorCode::InvalidValue, format!("bus_key: {e}")))?
                    .to_z85(),
            ),
            None if encrypted => {
                return Err(err(
                    ErrorCode::InvalidValue,
                    "this controller is encrypted: a pair's replication stream must be too (it carries session keys); register a bus_key",
                ))
            }
            None => None,
        };
        Ok(Stream { bus: Some(b), key })
    }
}

impl Controller {
    pub(super) fn pair_register(
        &mut self,
        now: Instant,
        region: String,
        udp: &str,
        capacity: u32,
        version: String,
        stream: Stream,
    ) -> Result<PairRegistered, ControlError> {
        let region = region.trim().to_string();
        if region.is_empty() || region.len() > 64 {
            return Err(err(
                ErrorCode::InvalidValue,
                "region (1-64 characters) is required",
            ));
        }
        let udp: SocketAddr = udp.parse().map_err(|_| {
            err(
                ErrorCode::InvalidValue,
                format!("udp `{udp}` is not HOST:PORT"),
            )
        })?;
        if udp.ip().is_unspecified() || udp.port() == 0 {
            return Err(err(
                ErrorCode::InvalidValue,
                "udp must be a reachable address and port",
            ));
        }
        if capacity == 0 {
            return Err(err(ErrorCode::InvalidValue, "capacity must be at least 1"));
        }
        let id = self.meta.next_pair;
        self.meta.next_pair += 1;
        self.pairs.insert(
            id,
            PairRec {
                region: region.clone(),
                udp,
                capacity,
                version,
                alive: true,
                assigned_epoch: 0,
                bus: stream.bus,
                bus_key: stream.key,
                standby: None,
                draining: false,
                handovers: Vec::new(),
            },
        );
        self.live.insert(
            id,
            PairLive {
                liveness: Liveness::heard_first(now),
                ..PairLive::default()
            },
        );
        self.assign_orphans(&region);
        self.refresh_standbys();
        Ok(PairRegistered {
            pair: id,
            epoch: self.meta.epoch,
            heartbeat_ms: self.config.heartbeat_interval.as_millis() as u64,
            dead_after_ms: self.config.dead_after.as_millis() as u64,
        })
    }

    pub(super) fn pair_heartbeat(
        &mut self,
        now: Instant,
        pair: u32,
        epoch: u64,
        load: Load,
        mirrors: &[MirrorReport],
    ) -> Result<HeartbeatReply, ControlError> {
        for m in mirrors {
            if self
                .pairs
                .get(&m.pair)
                .is_some_and(|p| p.standby == Some(pair))
            {
                let primary = self.live(m.pair);
                primary.standby_state = Some(m.state);
                primary.liveness.suspect |= m.state == MirrorState::Lost;
            }
        }
        let p = self
            .pairs
            .get(&pair)
            .ok_or_else(|| err(ErrorCode::UnknownPair, format!("no pair {pair}: register")))?;
        if !p.alive {
            self.revive(pair);
        }
        let live = self.live(pair);
        live.liveness.heartbeat(now);
        live.load = load;
        let assigned = self.pairs[&pair].assigned_epoch;
        let assignment = (epoch != assigned).then(|| self.assignment(pair));
        Ok(HeartbeatReply {
            epoch: assigned,
            term: self.meta.term,
            assignment,
        })
    }

    /// A pair declared dead heartbeats: it was alive after all (a stall, a partition). It
    /// comes back under its own id with what it serves now: its scenes moved when it was
    /// declared dead (a new epoch, so its next assignment drops them and they stay with
    /// whoever took them), scenes of its region left without a pair come to it, and it gets
    /// a standby again. Its own long silence becomes a gap sample, which widens its window.
    fn revive(&mut self, pair: u32) {
        let Some(p) = self.pairs.get_mut(&pair) else {
            return;
        };
        p.alive = true;
        let region = p.region.clone();
        self.bump_handover_targets(pair);
        self.assign_orphans(&region);
        self.refresh_standbys();
        self.bump(Some(pair));
        self.noted.push(Change::PairRevived { pair });
    }

    pub(super) fn pair_deregister(&mut self, pair: u32) -> Result<PairDeregistered, ControlError> {
        if !self.pairs.contains_key(&pair) {
            return Err(err(ErrorCode::UnknownPair, format!("no pair {pair}")));
        }
        if let Some(p) = self.pairs.get_mut(&pair) {
            p.alive = false;
        }
        self.bump_handover_targets(pair);
        let moved = self.move_scenes_off(pair);
        let standby = self.pairs.remove(&pair).and_then(|p| p.standby);
        self.live.remove(&pair);
        self.bump(standby);
        self.refresh_standbys();
        Ok(PairDeregistered {
            pair,
            moved: moved
                .into_iter()
                .map(|(scene, pair)| Moved { scene, pair })
                .collect(),
            epoch: self.meta.epoch,
        })
    }
}
