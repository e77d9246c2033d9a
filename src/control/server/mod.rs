//! The controller's ZeroMQ server: one libzmq ROUTER socket (`tcp://` or `ipc://`, plain or
//! CURVE), many clients at once, one JSON request and one JSON reply per message. The routing
//! envelope (every frame but the last) goes back unchanged, so libzmq REQ and DEALER clients
//! interoperate.
//!
//! Hostile input is bounded before it is read: libzmq (our patched copy, see `net::zmq`) cuts
//! off a peer whose frame, message or frame count is over [`LIMITS`] before allocating it;
//! a body over `protocol::MAX_REQUEST` gets `too_large`; an envelope that is not what a REQ or
//! DEALER sends (more than [`MAX_ENVELOPE_FRAMES`] frames or [`MAX_ENVELOPE_BYTES`] bytes) is
//! dropped unanswered and counted, so the controller never reflects a sender's bytes back.
//!
//! The replica (`control::replica::Node`, around the state machine) runs on the server's own
//! thread (`run.rs`): it serves a burst of requests, ticks, commits what changed as one batch,
//! appends and fsyncs it (group commit: one fsync for the whole burst), and only then sends
//! the burst's replies (with `AckMode::Replica`, once a passive also holds the batch). A
//! passive follows the active (`follow.rs`); the lock (`replica::lock`) says who is active.

mod follow;
mod io;
mod probe;
mod run;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::replica::lock::Lock;
use super::replica::{AckMode, Node};
use super::state::{Change, Config, Controller};
use super::stats::ControlStats;
use super::store::Store;
use crate::net::zeromq::{self, Curve, Limits};

/// Bounds of the controller's socket: a request body may be 64 KiB (`too_large` beyond), a
/// message 256 KiB (the connection is cut beyond); 8 requests may wait per client.
pub const LIMITS: Limits = Limits {
    max_message: 256 << 10,
    rcv_hwm: 8,
    snd_hwm: 64,
};
/// Envelope frames a request may carry (REQ sends one empty frame; proxies add a few).
pub const MAX_ENVELOPE_FRAMES: usize = 4;
/// Envelope bytes a request may carry.
pub const MAX_ENVELOPE_BYTES: usize = 256;
/// Messages served between two looks at the clock, so ticks stay on time under a flood.
const BURST: usize = 256;

pub use super::replica::PARK;
/// How often a passive tries the lock (and an active checks it still holds it).
const LOCK_EVERY: Duration = Duration::from_millis(20);
/// How long a leaving active waits for its passives to catch up before it lets go anyway.
pub const LEAVE_WAIT: Duration = Duration::from_secs(2);

/// How the server listens, where it keeps its state, and how it shares the lead.
#[derive(Default)]
pub struct ServerOptions {
    /// `Curve::Server(key pair)` to require CurveZMQ of every client.
    pub curve: Curve,
    /// The data directory (`None`: state in memory only, lost with the process).
    pub data_dir: Option<PathBuf>,
    /// The replicas' lock (`None`: this controller is the only one, always active).
    pub lock: Option<Box<dyn Lock>>,
    /// When a write's reply may go out (see `AckMode`).
    pub ack: AckMode,
}

/// A running controller.
pub struct ControllerServer {
    endpoint: String,
    stats: Arc<ControlStats>,
    stop: Arc<AtomicBool>,
    leave: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControllerServer {
    /// Binds `endpoint` (e.g. `tcp://127.0.0.1:7100`, port 0 for any) and serves until stopped.
    pub fn start(
        endpoint: &str,
        config: Config,
        options: ServerOptions,
    ) -> Result<ControllerServer, String> {
        let socket = zeromq::socket(zmq::ROUTER, &LIMITS, &options.curve, endpoint)?;
        socket
            .bind(endpoint)
            .map_err(|e| format!("cannot bind {endpoint}: {e}"))?;
        let bound = match socket.get_last_endpoint() {
            Ok(Ok(e)) => e,
            _ => endpoint.to_string(),
        };
        let (node, store) = recover(config, &bound, &options)?;
        // Nothing fallible between here and the server, whose drop stops the monitor.
        let monitor = io::watch(&socket)?;
        let stats = Arc::new(ControlStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let leave = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let server = run::Server::new(
            socket,
            monitor,
            node,
            store,
            options,
            stats.clone(),
            stop.clone(),
            leave.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("zc-controller".into())
            .spawn(move || {
                let mut server = server;
                if let Err(e) = server.start(Instant::now()) {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
                let _ = ready_tx.send(Ok(()));
                server.serve();
            })
            .map_err(|e| format!("cannot start the controller thread: {e}"))?;
        ready_rx
            .recv()
            .map_err(|_| "the controller thread died".to_string())??;
        Ok(ControllerServer {
            endpoint: bound,
            stats,
            stop,
            leave,
            thread: Some(thread),
        })
    }

    /// The bound endpoint (with the real port when 0 was asked for).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn stats(&self) -> Arc<ControlStats> {
        self.stats.clone()
    }

    /// Whether the server thread is still serving.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Graceful hand-over, then stop (what SIGTERM does): the active stops deciding, waits up
    /// to [`LEAVE_WAIT`] for its passives to hold everything, releases the lock and returns;
    /// a passive just stops.
    pub fn leave(mut self) {
        self.leave.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ControllerServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The replica this controller starts as: its state read back from the data directory (the
/// snapshot, then the log; a cut tail reported), or empty.
fn recover(
    config: Config,
    endpoint: &str,
    options: &ServerOptions,
) -> Result<(Node, Option<Store>), String> {
    let ack = options.ack;
    let Some(dir) = &options.data_dir else {
        return Ok((Node::new(Controller::new(config), endpoint, 0, ack), None));
    };
    let (store, found) = Store::open(dir).map_err(|e| e.to_string())?;
    if let Some(cut) = &found.truncated {
        tracing::warn!("the log's tail was torn or corrupt: {cut}");
    }
    let mut controller = match found.snapshot {
        Some(s) => Controller::from_image(config, Box::new(super::random::OsRandom), s.image),
        None => Controller::new(config),
    };
    for b in &found.batches {
        controller.apply(&b.entries);
    }
    let (pairs, scenes, devices) = controller.image().counts();
    tracing::info!(
        "{} holds {pairs} pairs, {scenes} scenes, {devices} devices (batch {}, term {})",
        dir.display(),
        store.seq(),
        controller.term()
    );
    let seq = store.seq();
    Ok((Node::new(controller, endpoint, seq, ack), Some(store)))
}

fn log_change(change: &Change) {
    match change {
        Change::PairDead { pair, cause, moved } => {
            let moved: Vec<String> = moved
                .iter()
                .map(|(scene, to)| match to {
                    Some(p) => format!("scene {scene} -> pair {p}"),
                    None => format!("scene {scene} -> no live pair"),
                })
                .collect();
            tracing::warn!("pair {pair} is dead ({cause}); {}", moved.join(", "));
        }
        Change::PairRevived { pair } => {
            tracing::warn!("pair {pair}, declared dead, heartbeats again: back under its id")
        }
        Change::Stalled { ms } => {
            tracing::warn!("this controller was stalled for {ms} ms; no pair is blamed for it")
        }
        Change::PairForgotten { pair } => {
            tracing::warn!("forgot dead pair {pair}");
        }
    }
}
