//! The publishing side of the replication stream: listens, and for each subscriber completes
//! the Noise handshake (encrypted `tcp://`), feeds what it sends to its [`HubPeer`] core and
//! writes every batch to it, from the caller's thread, without blocking it.
//!
//! Driven by its owner: [`StreamHub::service`] accepts, reads, flushes backlogs and drops
//! peers their core refused; [`StreamHub::send`] writes. Each refusal is counted.

use std::io;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use super::transport::{Conn, Got, Socket};
use super::{Endpoint, Role, MAX_PEERS};
use crate::ipc_bus::codec::encode_into;
use crate::ipc_bus::{clear_stale_ipc, BusError};
use crate::net::zeromq::leaves_host;
use crate::replication::peer::{bye_frame, HubPeer};
use crate::scene::Batch;
use crate::security::noise::Channel;
use crate::security::KeyPair;

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
}

/// Counters of a hub.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubCounters {
    /// Subscribers currently receiving.
    pub peers: u64,
    /// Connections closed for a wrong token or key, a malformed frame, silence before hello,
    /// or because the hub already held `MAX_PEERS`.
    pub refused: u64,
    /// Subscribers dropped for falling `MAX_BACKLOG` behind.
    pub overflows: u64,
}

struct Peer {
    conn: Conn,
    core: HubPeer,
    input: Vec<u8>,
    dead: bool,
}

/// The publishing side. See the module doc.
pub struct StreamHub {
    listeners: Vec<Listener>,
    endpoints: Vec<String>,
    peers: Vec<Peer>,
    token: String,
    key: Option<KeyPair>,
    frame: Vec<u8>,
    /// The frame neighbours get (see [`Role::gets`]), and the batch it is encoded from.
    shared_frame: Vec<u8>,
    shared: Batch,
    counters: HubCounters,
}

impl StreamHub {
    /// Binds every endpoint (`tcp://HOST:PORT`, port 0 for any; `ipc:///path`, a stale socket
    /// file is replaced, a live one refused). Subscribers must present `token`; with `key`,
    /// `tcp://` subscribers must also complete a Noise handshake with it. Binding a `tcp://`
    /// address other hosts can reach without a key prints a warning.
    pub fn bind(
        endpoints: &[String],
        token: &str,
        key: Option<KeyPair>,
    ) -> Result<StreamHub, BusError> {
        let mut listeners = Vec::new();
        let mut bound = Vec::new();
        let fail = |e: &str, err: io::Error| BusError::Transport(format!("cannot bind {e}: {err}"));
        for e in endpoints {
            match Endpoint::parse(e)? {
                Endpoint::Tcp(addr) => {
                    let l = TcpListener::bind(&addr).map_err(|err| fail(e, err))?;
                    l.set_nonblocking(true).map_err(|err| fail(e, err))?;
                    let at = format!("tcp://{}", l.local_addr().map_err(|err| fail(e, err))?);
                    if key.is_none() && leaves_host(&at) {
                        tracing::warn!(
                            "the replication stream {at} is reachable from other hosts and NOT encrypted (it carries session keys); configure keys (docs/SECURITY.md)"
                        );
                    }
                    bound.push(at);
                    listeners.push(Listener::Tcp(l));
                }
                Endpoint::Ipc(path) => {
                    clear_stale_ipc(e)?;
                    let l = UnixListener::bind(&path).map_err(|err| fail(e, err))?;
                    l.set_nonblocking(true).map_err(|err| fail(e, err))?;
                    bound.push(e.clone());
                    listeners.push(Listener::Unix(l, path));
                }
            }
        }
        Ok(StreamHub {
            listeners,
            endpoints: bound,
            peers: Vec::new(),
            token: token.to_string(),
            key,
            frame: Vec::with_capacity(64 << 10),
            shared_frame: Vec::new(),
            shared: Batch::default(),
            counters: HubCounters::default(),
        })
    }

    /// The bound endpoints (real ports), in the order given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub fn counters(&self) -> HubCounters {
        HubCounters {
            peers: self
                .peers
                .iter()
                .filter(|p| p.core.role().is_some())
                .count() as u64,
            ..self.counters
        }
    }

    /// The send totals of the connected fanout half, from its last heartbeat.
    pub fn fanout_totals(&self) -> Option<super::FanoutTotals> {
        self.peers
            .iter()
            .filter(|p| p.core.role() == Some(Role::Fanout))
            .find_map(|p| p.core.totals())
    }

    /// Whether a subscriber of `role` is connected and was heard within `within`.
    pub fn has_live(&self, role: Role, now: Instant, within: Duration) -> bool {
        self.peers.iter().any(|p| p.core.live_as(role, now, within))
    }

    /// Accepts, reads what subscribers sent and lets their cores judge it, flushes backlogs,
    /// drops the dead. Returns true if a new subscriber waits for a checkpoint.
    pub fn service(&mut self, now: Instant) -> bool {
        self.accept(now);
        let mut buf = [0u8; 4096];
        for p in &mut self.peers {
            let judged = read(p, &mut buf)
                .and_then(|()| {
                    p.core
                        .handle_input(now, &mut p.input, &self.token)
                        .map_err(|_| ())
                })
                .and_then(|()| p.core.handle_tick(now).map_err(|_| ()));
            if judged.is_err() {
                self.counters.refused += 1;
                p.dead = true;
            }
            if !p.dead && p.conn.flush().is_err() {
                p.dead = true;
            }
        }
        self.peers.retain(|p| !p.dead);
        self.peers.iter().any(|p| p.core.wants_checkpoint())
    }

    fn accept(&mut self, now: Instant) {
        for l in &self.listeners {
            loop {
                let (socket, encrypted) = match l {
                    Listener::Tcp(l) => match l.accept() {
                        Ok((s, _)) => {
                            let _ = s.set_nodelay(true);
                            (Socket::Tcp(s), self.key.is_some())
                        }
                        Err(_) => break,
                    },
                    Listener::Unix(l, _) => match l.accept() {
                        Ok((s, _)) => (Socket::Unix(s), false),
                        Err(_) => break,
                    },
                };
                if self.peers.len() >= MAX_PEERS || socket.set_nonblocking(true).is_err() {
                    self.counters.refused += 1;
                    continue;
                }
                let channel = match (&self.key, encrypted) {
                    (Some(key), true) => match Channel::responder(key) {
                        Ok(c) => Some(c),
                        Err(_) => continue,
                    },
                    _ => None,
                };
                self.peers.push(Peer {
                    conn: Conn::new(socket, channel),
                    core: HubPeer::new(now),
                    input: Vec::new(),
                    dead: false,
                });
            }
        }
    }

    /// Sends `checkpoint` to the subscribers waiting for one; they get live batches after.
    pub fn send_checkpoint(&mut self, checkpoint: &Batch) {
        self.write(checkpoint, true);
    }

    /// Writes `batch` to every subscriber past its checkpoint.
    pub fn send(&mut self, batch: &Batch) {
        if batch.is_empty() || self.peers.is_empty() {
            return;
        }
        self.write(batch, false);
    }

    fn write(&mut self, batch: &Batch, checkpoint: bool) {
        frame_into(batch, &mut self.frame);
        let neighbours = self
            .peers
            .iter()
            .any(|p| p.core.role() == Some(Role::Neighbour));
        if neighbours {
            self.shared.clear();
            for (e, data) in batch.iter().filter(|(e, _)| Role::Neighbour.gets(e.kind)) {
                self.shared.push(e.kind, e.scene, e.device, e.addr, data);
            }
            frame_into(&self.shared, &mut self.shared_frame);
        }
        for p in &mut self.peers {
            if !p.core.take(checkpoint) {
                continue;
            }
            let frame = match p.core.role() {
                Some(Role::Neighbour) if self.shared.is_empty() => continue,
                Some(Role::Neighbour) => &self.shared_frame,
                _ => &self.frame,
            };
            if p.conn.send(frame).is_err() {
                p.dead = true;
            } else if !HubPeer::keeps_up(p.conn.pending()) {
                p.dead = true;
                self.counters.overflows += 1;
                let _ = p.conn.send(&bye_frame());
            }
        }
        if self.peers.iter().any(|p| p.dead) {
            self.peers.retain(|p| !p.dead);
        }
    }
}

/// `batch` as one frame: `len u32 LE | encoded batch`.
fn frame_into(batch: &Batch, frame: &mut Vec<u8>) {
    frame.clear();
    frame.extend_from_slice(&[0; 4]);
    encode_into(batch, frame);
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_le_bytes());
}

impl Drop for StreamHub {
    fn drop(&mut self) {
        for p in &mut self.peers {
            if p.core.role().is_some() {
                let _ = p.conn.send(&bye_frame());
                let _ = p.conn.flush();
            }
        }
        for l in &self.listeners {
            if let Listener::Unix(_, path) = l {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Reads what `p` sent into its input; `Err` for a record that does not decrypt. A closed or
/// broken connection marks it dead (not refused).
fn read(p: &mut Peer, buf: &mut [u8]) -> Result<(), ()> {
    loop {
        match p.conn.read_into(buf, &mut p.input) {
            Ok(Got::Data) if p.input.len() <= crate::replication::peer::MAX_INPUT => {}
            // More than a subscriber ever sends: let the core refuse it.
            Ok(Got::Data) | Ok(Got::Idle) => return Ok(()),
            Ok(Got::Closed) => {
                p.dead = true;
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(()),
            Err(_) => {
                p.dead = true;
                return Ok(());
            }
        }
    }
}
