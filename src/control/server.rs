//! The controller's ZeroMQ server: one ROUTER socket (`tcp://` or `ipc://`), many clients at
//! once, one JSON request and one JSON reply per message. Everything but the last frame is the
//! routing envelope and goes back unchanged, so libzmq REQ/DEALER clients interoperate.
//!
//! The state machine runs on the server's own thread (a current-thread tokio runtime); a timer
//! ticks it every `dead_after / 10` to declare silent pairs dead promptly.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;
use zeromq::{RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use super::protocol::decode;
use super::state::{Change, Config, Controller};

/// A running controller.
pub struct ControllerServer {
    endpoint: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ControllerServer {
    /// Binds `endpoint` (e.g. `tcp://127.0.0.1:7100`, port 0 for any) and serves until stopped.
    pub fn start(endpoint: &str, config: Config) -> Result<ControllerServer, String> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let endpoint = endpoint.to_string();
        let thread = std::thread::Builder::new()
            .name("zc-controller".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot start a runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(serve(endpoint, config, ready_tx, stop_rx));
            })
            .map_err(|e| format!("cannot start the controller thread: {e}"))?;
        let bound = ready_rx
            .recv()
            .map_err(|_| "the controller thread died".to_string())??;
        Ok(ControllerServer {
            endpoint: bound,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The bound endpoint (with the real port when 0 was asked for).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether the server thread is still serving.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
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

async fn serve(
    endpoint: String,
    config: Config,
    ready: mpsc::Sender<Result<String, String>>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut socket = RouterSocket::new();
    let bound = match socket.bind(&endpoint).await {
        Ok(e) => e.to_string(),
        Err(e) => {
            let _ = ready.send(Err(format!("cannot bind {endpoint}: {e}")));
            return;
        }
    };
    let tick_every = (config.dead_after / 10).max(Duration::from_millis(5));
    let mut controller = Controller::new(config);
    let _ = ready.send(Ok(bound));
    let mut ticker = tokio::time::interval(tick_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => {
                for change in controller.tick(Instant::now()) {
                    log_change(&change);
                }
            }
            msg = socket.recv() => {
                let Ok(msg) = msg else { continue };
                let mut frames = msg.into_vecdeque();
                let Some(body) = frames.pop_back() else { continue };
                let reply = match decode(&body) {
                    Ok(req) => controller
                        .handle(Instant::now(), req)
                        .unwrap_or_else(|e| e.to_json()),
                    Err(e) => e.to_json(),
                };
                frames.push_back(Bytes::from(reply.to_string()));
                if let Ok(out) = ZmqMessage::try_from(frames) {
                    // A client that went away just loses its reply.
                    let _ = socket.send(out).await;
                }
            }
        }
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
