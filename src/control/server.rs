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
//! The state machine runs on the server's own thread; the loop waits on the socket (and on
//! libzmq's monitor of it, for connection counters) and ticks the state machine every
//! `dead_after / 10` to declare silent pairs dead promptly.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::limits::Source;
use super::protocol::decode;
use super::state::{Change, Config, Controller};
use super::stats::{Connection, ControlStats, Dropped};
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

/// How the server listens.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// `Curve::Server(key pair)` to require CurveZMQ of every client.
    pub curve: Curve,
}

/// A running controller.
pub struct ControllerServer {
    endpoint: String,
    stats: Arc<ControlStats>,
    stop: Arc<AtomicBool>,
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
        let monitor = watch(&socket)?;
        let stats = Arc::new(ControlStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (s, halt) = (stats.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("zc-controller".into())
            .spawn(move || {
                let _ = ready_tx.send(());
                serve(socket, monitor, Controller::new(config), &s, &halt);
            })
            .map_err(|e| format!("cannot start the controller thread: {e}"))?;
        ready_rx
            .recv()
            .map_err(|_| "the controller thread died".to_string())?;
        Ok(ControllerServer {
            endpoint: bound,
            stats,
            stop,
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

/// A PAIR socket receiving libzmq's monitor events for `socket`.
fn watch(socket: &zmq::Socket) -> Result<zmq::Socket, String> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let address = format!(
        "inproc://zc-controller-monitor-{}",
        NEXT.fetch_add(1, Relaxed)
    );
    let events = zmq::SocketEvent::ACCEPTED as i32
        | zmq::SocketEvent::DISCONNECTED as i32
        | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as i32
        | zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as i32
        | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as i32;
    socket
        .monitor(&address, events)
        .map_err(|e| format!("cannot monitor the control socket: {e}"))?;
    let monitor = zeromq::context()
        .socket(zmq::PAIR)
        .and_then(|m| m.connect(&address).map(|_| m))
        .map_err(|e| format!("cannot monitor the control socket: {e}"))?;
    Ok(monitor)
}

fn serve(
    socket: zmq::Socket,
    monitor: zmq::Socket,
    mut controller: Controller,
    stats: &ControlStats,
    stop: &AtomicBool,
) {
    let tick_every = (controller.config().dead_after / 10).max(Duration::from_millis(5));
    let mut next_tick = Instant::now() + tick_every;
    while !stop.load(Relaxed) {
        let wait = next_tick
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(50));
        let mut items = [
            socket.as_poll_item(zmq::POLLIN),
            monitor.as_poll_item(zmq::POLLIN),
        ];
        if zmq::poll(&mut items, wait.as_millis() as i64).is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
        for _ in 0..BURST {
            match receive(&socket) {
                Some(frames) => serve_one(&socket, frames, &mut controller, stats),
                None => break,
            }
        }
        while let Some(event) = monitor_event(&monitor) {
            stats.connection(event);
        }
        let now = Instant::now();
        if now >= next_tick {
            for change in controller.tick(now) {
                log_change(&change);
            }
            next_tick = now + tick_every;
        }
    }
}

/// The next whole message, if one is queued. libzmq delivers a message's frames together,
/// and never more than `MAX_FRAMES` of them (plus the routing id it prepends).
fn receive(socket: &zmq::Socket) -> Option<Vec<zmq::Message>> {
    let first = socket.recv_msg(zmq::DONTWAIT).ok()?;
    let mut more = first.get_more();
    let mut frames = vec![first];
    while more {
        let Ok(f) = socket.recv_msg(0) else { break };
        more = f.get_more();
        if frames.len() <= zeromq::MAX_FRAMES {
            frames.push(f);
        }
    }
    Some(frames)
}

fn serve_one(
    socket: &zmq::Socket,
    mut frames: Vec<zmq::Message>,
    controller: &mut Controller,
    stats: &ControlStats,
) {
    // [routing id, envelope..., body]
    let envelope = frames.get(1..frames.len().saturating_sub(1)).unwrap_or(&[]);
    let envelope_bytes: usize = envelope.iter().map(|f| f.len()).sum();
    if frames.len() < 2
        || envelope.len() > MAX_ENVELOPE_FRAMES
        || envelope_bytes > MAX_ENVELOPE_BYTES
    {
        stats.dropped(Dropped::Envelope);
        return;
    }
    let Some(mut body) = frames.pop() else { return };
    let source = Source::from_peer(body.gets("Peer-Address"));
    let reply = match decode(&body) {
        Ok(req) => {
            stats.request(Some(req.op()));
            controller.handle_from(Instant::now(), source, req)
        }
        Err(e) => {
            stats.request(None);
            Err(e)
        }
    };
    let reply = match reply {
        Ok(r) => r.to_json(),
        Err(e) => {
            stats.error(e.code);
            e.to_json()
        }
    };
    for f in frames {
        // A client that went away (or whose queue is full) just loses its reply.
        if socket.send(f, zmq::SNDMORE | zmq::DONTWAIT).is_err() {
            return;
        }
    }
    let _ = socket.send(reply.to_string().as_bytes(), zmq::DONTWAIT);
}

/// The next monitor event, if one is queued.
fn monitor_event(monitor: &zmq::Socket) -> Option<Connection> {
    loop {
        let head = monitor.recv_msg(zmq::DONTWAIT).ok()?;
        // Second frame: the endpoint, unused.
        while monitor.get_rcvmore().unwrap_or(false) {
            let _ = monitor.recv_msg(0);
        }
        if head.len() < 2 {
            continue;
        }
        let event = zmq::SocketEvent::from_raw(u16::from_le_bytes([head[0], head[1]]));
        let counted = match event {
            zmq::SocketEvent::ACCEPTED => Connection::Accepted,
            zmq::SocketEvent::DISCONNECTED => Connection::Closed,
            zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL => Connection::HandshakeProtocol,
            zmq::SocketEvent::HANDSHAKE_FAILED_AUTH => Connection::HandshakeAuth,
            zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL => Connection::HandshakeOther,
            _ => continue,
        };
        return Some(counted);
    }
}

fn log_change(change: &Change) {
    match change {
        Change::PairDead { pair, moved } => {
            let moved: Vec<String> = moved
                .iter()
                .map(|(scene, to)| match to {
                    Some(p) => format!("scene {scene} -> pair {p}"),
                    None => format!("scene {scene} -> no live pair"),
                })
                .collect();
            eprintln!(
                "zonecast controller: pair {pair} is dead; {}",
                moved.join(", ")
            );
        }
        Change::PairForgotten { pair } => {
            eprintln!("zonecast controller: forgot dead pair {pair}");
        }
    }
}
