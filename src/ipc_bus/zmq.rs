//! ZeroMQ transports of the bus (`ipc://` and `tcp://`), behind the same traits as the
//! in-process one: a libzmq PUB socket on the publishing side, a SUB socket with one prefix
//! subscription per topic on the other (see `codec` for the message format), plain or CURVE
//! (`net::zeromq::Curve`: the publisher is the CURVE server).
//!
//! libzmq does the I/O on its own thread: `publish` hands each message to it without waiting,
//! and a subscriber more than `queue` messages behind loses messages (ZeroMQ PUB semantics: a
//! slow or absent subscriber never blocks ingest; where nothing may be lost, the replication
//! stream is used instead). The SUB side reconnects by itself when the publisher restarts;
//! foreign or malformed messages are dropped and counted. Both sides bound what a peer can make
//! them hold before they read it (`net::zeromq::Limits`): a publisher only ever receives
//! subscriptions, so anything larger than [`MAX_SUBSCRIPTION`] cuts the sender off. Binding an
//! `ipc://` path whose socket file is stale (nobody listening) removes the file first; a live
//! one is refused.

use std::time::{Duration, Instant};

use super::codec::{decode, encode, scene_topic, CONTROL_TOPIC};
use super::{clear_stale_ipc, Batch, BusError, Publisher, Subscriber, Topic};
use crate::net::zeromq::{self, Curve, Limits};

/// Largest message a publisher accepts from a subscriber (subscriptions are topic prefixes).
pub const MAX_SUBSCRIPTION: usize = 1024;
/// Largest batch message a subscriber accepts.
pub const MAX_BATCH: usize = 16 << 20;

fn transport(what: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Transport(format!("{what}: {e}"))
}

/// The publishing side over ZeroMQ PUB.
pub struct ZmqPublisher {
    socket: zmq::Socket,
    endpoint: String,
    dropped: u64,
}

impl ZmqPublisher {
    /// Binds `endpoint`; each subscriber may fall `queue` messages behind before it loses some.
    pub fn bind(endpoint: &str, queue: usize, curve: &Curve) -> Result<ZmqPublisher, BusError> {
        clear_stale_ipc(endpoint)?;
        let limits = Limits {
            max_message: MAX_SUBSCRIPTION,
            rcv_hwm: 64,
            snd_hwm: queue.clamp(1, i32::MAX as usize) as i32,
        };
        let socket = zeromq::socket(zmq::PUB, &limits, curve, endpoint)
            .map_err(|e| transport("socket", e))?;
        socket
            .bind(endpoint)
            .map_err(|e| transport(&format!("cannot bind {endpoint}"), e))?;
        let endpoint = match socket.get_last_endpoint() {
            Ok(Ok(e)) => e,
            _ => endpoint.to_string(),
        };
        Ok(ZmqPublisher {
            socket,
            endpoint,
            dropped: 0,
        })
    }

    /// The bound endpoint (with the real port when 0 was asked for).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Events libzmq refused to take (the socket is closing).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl Publisher for ZmqPublisher {
    fn publish(&mut self, mut batch: Batch) -> Result<Batch, BusError> {
        if !batch.is_empty() {
            for (topic, payload) in encode(&batch) {
                let sent = self
                    .socket
                    .send(topic.as_bytes(), zmq::SNDMORE | zmq::DONTWAIT)
                    .and_then(|_| self.socket.send(payload, zmq::DONTWAIT));
                if sent.is_err() {
                    self.dropped += batch.len() as u64;
                    break;
                }
            }
        }
        batch.clear();
        Ok(batch)
    }
}

/// The receiving side over ZeroMQ SUB.
pub struct ZmqSubscriber {
    socket: zmq::Socket,
    malformed: u64,
}

impl ZmqSubscriber {
    /// Connects to `endpoint` (libzmq retries until the publisher is there) for `topics`;
    /// `queue` messages may wait for `recv`.
    pub fn connect(
        endpoint: &str,
        topics: &[Topic],
        queue: usize,
        curve: &Curve,
    ) -> Result<ZmqSubscriber, BusError> {
        let limits = Limits {
            max_message: MAX_BATCH,
            rcv_hwm: queue.clamp(1, i32::MAX as usize) as i32,
            snd_hwm: 64,
        };
        let socket = zeromq::socket(zmq::SUB, &limits, curve, endpoint)
            .map_err(|e| transport("socket", e))?;
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
        for p in &prefixes {
            socket
                .set_subscribe(p.as_bytes())
                .map_err(|e| transport("subscribe", e))?;
        }
        socket
            .connect(endpoint)
            .map_err(|e| transport(&format!("cannot connect {endpoint}"), e))?;
        Ok(ZmqSubscriber {
            socket,
            malformed: 0,
        })
    }

    /// Messages refused as foreign or malformed.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }
}

impl Subscriber for ZmqSubscriber {
    fn recv(&mut self, timeout: Duration) -> Result<Option<Batch>, BusError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ready = self
                .socket
                .poll(zmq::POLLIN, left.as_millis() as i64)
                .map_err(|e| transport("poll", e))?;
            if ready == 0 {
                return Ok(None);
            }
            let frames = match self.socket.recv_multipart(zmq::DONTWAIT) {
                Ok(f) => f,
                Err(zmq::Error::EAGAIN) => continue,
                Err(e) => return Err(transport("receive", e)),
            };
            let mut batch = Batch::default();
            if frames.len() == 2 && decode(&frames[1], &mut batch).is_ok() {
                return Ok(Some(batch));
            }
            self.malformed += 1;
        }
    }

    fn recycle(&mut self, _batch: Batch) {}
}
