//! ZeroMQ transports of the bus (`ipc://` and `tcp://`), behind the same traits as the
//! in-process one: a PUB socket on the publishing side, a SUB socket with one prefix
//! subscription per topic on the other (see `codec` for the message format).
//!
//! Each side runs its socket on a thread of its own (a current-thread tokio runtime) and talks
//! to the caller through a bounded queue: a publisher whose queue is full drops the batch and
//! counts its events, so a slow or absent subscriber never blocks ingest. The SUB side
//! reconnects by itself when the publisher restarts; foreign or malformed messages are dropped
//! and counted. Binding an `ipc://` path whose socket file is stale (nobody listening) removes
//! the file first; a live one is refused.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError};
use zeromq::{PubSocket, Socket, SocketRecv, SocketSend, SubSocket, ZmqMessage};

use super::codec::{decode, encode, scene_topic, Messages, CONTROL_TOPIC};
use super::{clear_stale_ipc, Batch, BusError, Publisher, Subscriber, Topic};

fn runtime() -> Result<tokio::runtime::Runtime, BusError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BusError::Transport(format!("runtime: {e}")))
}

/// The publishing side over ZeroMQ PUB.
pub struct ZmqPublisher {
    tx: Option<tokio::sync::mpsc::Sender<Messages>>,
    endpoint: String,
    dropped: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl ZmqPublisher {
    /// Binds `endpoint`; `queue` batches may wait for the socket before publishing drops.
    pub fn bind(endpoint: &str, queue: usize) -> Result<ZmqPublisher, BusError> {
        clear_stale_ipc(endpoint)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Messages>(queue.max(1));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let endpoint = endpoint.to_string();
        let rt = runtime()?;
        let thread = std::thread::Builder::new()
            .name("zc-bus-pub".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut socket = PubSocket::new();
                    match socket.bind(&endpoint).await {
                        Ok(bound) => {
                            let _ = ready_tx.send(Ok(bound.to_string()));
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("cannot bind {endpoint}: {e}")));
                            return;
                        }
                    }
                    while let Some(messages) = rx.recv().await {
                        for (topic, payload) in messages {
                            let mut m = ZmqMessage::from(topic);
                            m.push_back(Bytes::from(payload));
                            let _ = socket.send(m).await;
                        }
                    }
                });
            })
            .map_err(|e| BusError::Transport(e.to_string()))?;
        let bound = ready_rx
            .recv()
            .map_err(|_| BusError::Transport("the bus thread died".into()))?
            .map_err(BusError::Transport)?;
        Ok(ZmqPublisher {
            tx: Some(tx),
            endpoint: bound,
            dropped: Arc::new(AtomicU64::new(0)),
            thread: Some(thread),
        })
    }

    /// The bound endpoint (with the real port when 0 was asked for).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Events dropped because the queue to the socket was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

impl Publisher for ZmqPublisher {
    fn publish(&mut self, mut batch: Batch) -> Result<Batch, BusError> {
        let tx = self.tx.as_ref().ok_or(BusError::Closed)?;
        if !batch.is_empty() {
            match tx.try_send(encode(&batch)) {
                Ok(()) => {}
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                    self.dropped.fetch_add(batch.len() as u64, Relaxed);
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                    return Err(BusError::Closed)
                }
            }
        }
        batch.clear();
        Ok(batch)
    }
}

impl Drop for ZmqPublisher {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The receiving side over ZeroMQ SUB.
pub struct ZmqSubscriber {
    rx: Receiver<Batch>,
    malformed: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ZmqSubscriber {
    /// Connects to `endpoint` (retrying until the publisher is there) for `topics`.
    pub fn connect(
        endpoint: &str,
        topics: &[Topic],
        queue: usize,
    ) -> Result<ZmqSubscriber, BusError> {
        let (tx, rx) = bounded(queue.max(1));
        let malformed = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let prefixes: Vec<String> = if topics.contains(&Topic::All) {
            vec![String::new()]
        } else {
            let mut p: Vec<String> = topics
                .iter()
                .filter_map(|t| match t {
                    Topic::Scene(s) => Some(scene_topic(*s)),
                    Topic::All => None,
                })
                .collect();
            p.push(CONTROL_TOPIC.to_string());
            p
        };
        let (endpoint, bad, lost, halt) = (
            endpoint.to_string(),
            malformed.clone(),
            dropped.clone(),
            stop.clone(),
        );
        let rt = runtime()?;
        let thread = std::thread::Builder::new()
            .name("zc-bus-sub".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut socket = SubSocket::new();
                    while socket.connect(&endpoint).await.is_err() {
                        if halt.load(Relaxed) {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    for p in &prefixes {
                        let _ = socket.subscribe(p).await;
                    }
                    while !halt.load(Relaxed) {
                        let next =
                            tokio::time::timeout(Duration::from_millis(100), socket.recv()).await;
                        let msg = match next {
                            Err(_) => continue,
                            Ok(Err(_)) => {
                                // No peer right now (it restarted): the socket reconnects.
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                continue;
                            }
                            Ok(Ok(m)) => m,
                        };
                        let frames = msg.into_vec();
                        let mut batch = Batch::default();
                        let ok = frames.len() == 2 && decode(&frames[1], &mut batch).is_ok();
                        if !ok {
                            bad.fetch_add(1, Relaxed);
                            continue;
                        }
                        if tx.try_send(batch).is_err() {
                            lost.fetch_add(1, Relaxed);
                        }
                    }
                });
            })
            .map_err(|e| BusError::Transport(e.to_string()))?;
        Ok(ZmqSubscriber {
            rx,
            malformed,
            dropped,
            stop,
            thread: Some(thread),
        })
    }

    /// Messages refused as foreign or malformed.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Relaxed)
    }

    /// Messages dropped because the consumer's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

impl Subscriber for ZmqSubscriber {
    fn recv(&mut self, timeout: Duration) -> Result<Option<Batch>, BusError> {
        match self.rx.recv_timeout(timeout) {
            Ok(b) => Ok(Some(b)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(BusError::Closed),
        }
    }

    fn recycle(&mut self, _batch: Batch) {}
}

impl Drop for ZmqSubscriber {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
