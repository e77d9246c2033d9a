//! The pair's agent: a thread around the assignment tracker (`replication::assignment`, pure,
//! where every decision is). It sends the tracker's calls through the control client, feeds
//! back the typed answers, passes session and replication commands to ingest, logs the
//! tracker's notes, and computes the load figures heartbeats carry.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::control::client::{ControlClient, RequestError};
use crate::control::Load;
use crate::logs::Throttle;
use crate::replication::assignment::{Answer, Call, Local, Note, Tracker, TrackerConfig};
use crate::replication::ReplicaStatus;
use crate::security::PublicKey;
use crate::stats::StatsSet;
use crate::udp_ingest::{ProbeIdentity, SessionControl};

/// How the pair presents itself to the controller.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Controller endpoint, e.g. `tcp://127.0.0.1:7100`.
    pub control: String,
    /// The controller's public key: the control link runs CurveZMQ (`None`: plain).
    pub controller_key: Option<PublicKey>,
    /// Its identity, stream and drain grace, as the tracker needs them.
    pub tracker: TrackerConfig,
}

/// What the agent knows, shared for display.
#[derive(Debug, Default)]
pub struct AgentStatus {
    /// Pair id given by the controller (0: not registered).
    pub pair: AtomicU32,
    pub registered: AtomicBool,
    /// The pair drained, deregistered and stopped on purpose.
    pub drained: AtomicBool,
    /// Asked to leave (SIGTERM): drain to the standby or deregister, by this many
    /// milliseconds from the request (0: not asked). See `Tracker::leave`.
    pub leave_within_ms: AtomicU64,
    /// Why the agent stopped for good (a refusal retrying cannot fix), if it did.
    pub fatal: Mutex<Option<String>>,
}

/// Starts the agent thread; it runs until `stop` is set (and sets it once drained).
pub fn spawn(
    config: AgentConfig,
    probes: Arc<ProbeIdentity>,
    sessions: SessionControl,
    stats: Arc<StatsSet>,
    replica: Option<Arc<ReplicaStatus>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(Arc<AgentStatus>, JoinHandle<()>)> {
    let status = Arc::new(AgentStatus::default());
    let shared = status.clone();
    // One attempt per call, two heartbeats long: the tracker decides when to try again.
    let client = ControlClient::new(&config.control)?
        .with_server_key(config.controller_key)
        .with_timeout(Duration::from_millis(100))
        .with_retries(1);
    let handle = std::thread::Builder::new()
        .name("zc-agent".into())
        .spawn(move || {
            let mut agent = Agent {
                tracker: Tracker::new(config.tracker, Instant::now()),
                client,
                sessions,
                stats,
                status: shared,
                probes,
                replica,
                last_rates: (Instant::now(), 0, 0),
                failures: Throttle::new(Duration::from_secs(10)),
            };
            let mut leaving = false;
            while !stop.load(Relaxed) {
                let within = agent.status.leave_within_ms.load(Relaxed);
                if within > 0 && !leaving {
                    leaving = true;
                    let now = Instant::now();
                    tracing::info!("leaving: handing this pair's scenes over within {within} ms");
                    agent
                        .tracker
                        .leave(now, now + Duration::from_millis(within));
                }
                agent.step();
                if agent.tracker.is_done() {
                    let fatal = agent.status.fatal.lock().is_ok_and(|f| f.is_some());
                    agent.status.drained.store(!fatal, Relaxed);
                    stop.store(true, Relaxed);
                    break;
                }
                let wait = agent
                    .tracker
                    .poll_timeout()
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                // A mirror that changes state (a primary lost) is reported at once.
                match &agent.replica {
                    Some(r) => {
                        let _ = r.changes.recv_timeout(wait);
                    }
                    None => std::thread::sleep(wait),
                }
            }
        })?;
    Ok((status, handle))
}

struct Agent {
    tracker: Tracker,
    client: ControlClient,
    sessions: SessionControl,
    stats: Arc<StatsSet>,
    status: Arc<AgentStatus>,
    probes: Arc<ProbeIdentity>,
    replica: Option<Arc<ReplicaStatus>>,
    last_rates: (Instant, u64, u64),
    /// Repeated refusals are logged once per 10 s.
    failures: Throttle,
}

impl Agent {
    /// Sends every call that is due, then hands on commands and log lines.
    fn step(&mut self) {
        let local = self.local();
        while let Some(call) = self.tracker.poll_call(Instant::now(), &local) {
            let answer = self.send(&call);
            self.tracker.handle_answer(Instant::now(), answer, &local);
        }
        let commands = self.tracker.take_commands();
        if !commands.is_empty() {
            self.sessions.send(commands);
        }
        for note in self.tracker.take_notes() {
            if let Note::Fatal(reason) = &note {
                if let Ok(mut f) = self.status.fatal.lock() {
                    *f = Some(reason.clone());
                }
            }
            self.log(&note);
        }
        let pair = self.tracker.pair();
        self.status.pair.store(pair.unwrap_or(0), Relaxed);
        self.probes.set_pair(pair.unwrap_or(0));
        self.status.registered.store(pair.is_some(), Relaxed);
    }

    fn send(&mut self, call: &Call) -> Result<Answer, RequestError> {
        let fields = self.client.call(call.request())?;
        Answer::from_fields(call, fields)
    }

    fn local(&mut self) -> Local {
        let mirrors = self
            .replica
            .as_ref()
            .and_then(|r| r.mirrors.lock().ok().map(|m| m.clone()))
            .unwrap_or_default();
        let served = self
            .replica
            .as_ref()
            .and_then(|r| r.handed_in.lock().ok().map(|s| s.iter().copied().collect()))
            .unwrap_or_default();
        let crossings = self
            .replica
            .as_ref()
            .and_then(|r| r.crossings.lock().ok().map(|c| c.clone()))
            .unwrap_or_default();
        Local {
            crossings,
            load: self.load(),
            mirrors: mirrors.into_iter().collect(),
            served,
            fanout_alive: self
                .replica
                .as_ref()
                .is_some_and(|r| r.fanout_alive.load(Relaxed)),
        }
    }

    fn load(&mut self) -> Load {
        let s = self.stats.snapshot();
        let (at, last_in, last_out) = self.last_rates;
        let secs = at.elapsed().as_secs_f64().max(1e-3);
        let load = Load {
            joined: s.joined,
            objects: s.objects,
            datagrams_in_per_sec: (s.ingest_datagrams.saturating_sub(last_in)) as f64 / secs,
            datagrams_out_per_sec: (s.fanout_datagrams.saturating_sub(last_out)) as f64 / secs,
            dropped: s.ingest_drops.total(),
        };
        self.last_rates = (Instant::now(), s.ingest_datagrams, s.fanout_datagrams);
        load
    }

    fn log(&mut self, note: &Note) {
        match note {
            Note::Registered {
                pair,
                region,
                heartbeat,
            } => tracing::info!(
                "registered as pair {pair} in region {region} (heartbeat every {} ms)",
                heartbeat.as_millis()
            ),
            Note::Stale(e) => tracing::warn!("{e}; dropping every assigned session"),
            Note::Unreachable(e) if self.tracker.pair().is_some() => tracing::warn!(
                "controller {} unavailable: {e}; relaying on the last assignment, retrying",
                self.client.endpoint()
            ),
            Note::Unreachable(e) => tracing::warn!(
                "controller {} unavailable: {e}; not registered yet (serving nothing), retrying",
                self.client.endpoint()
            ),
            Note::Reachable => tracing::info!("controller reachable again"),
            Note::Failed(e) => {
                if let Some(held) = self.failures.allow(Instant::now()) {
                    tracing::warn!(held_back = held, "{e}");
                }
            }
            Note::Draining(grace) => tracing::info!(
                "draining: scenes handed over; forwarding stragglers for {} ms",
                grace.as_millis()
            ),
            Note::Drained(pair) => tracing::info!("drained; deregistered pair {pair}, stopping"),
            Note::FanoutMissing => tracing::warn!("fanout half missing: not heartbeating"),
            Note::FanoutBack => tracing::info!("fanout half connected"),
            Note::Leaving(n) => {
                tracing::info!("leaving: drain accepted, {n} scene(s) go to the standby")
            }
            Note::LeavingWithoutStandby(e) => {
                tracing::warn!("leaving without a standby ({e}): deregistering; the controller moves the scenes")
            }
            Note::LeaveTimedOut => {
                tracing::warn!("leaving: the drain did not finish in time; stopping anyway")
            }
            Note::Fatal(e) => tracing::error!("{e}"),
        }
    }
}
