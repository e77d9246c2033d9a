//! The publishing side of the replication stream: listens, authenticates subscribers and
//! writes every batch to each, from the caller's thread, without blocking it.
//!
//! Driven by its owner: [`StreamHub::service`] accepts, completes Noise handshakes, reads
//! hellos and heartbeats, flushes backlogs and drops the dead; [`StreamHub::send`] writes.
//! What a subscriber may send is tiny (a hello, heartbeats): more than [`MAX_INPUT`] buffered
//! bytes, a malformed frame, a wrong token or no hello within `HELLO_DEADLINE` closes it,
//! counted as refused.

use std::io;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use super::transport::{Conn, Got, Socket};
use super::{
    frame, take_frame, Endpoint, Role, BEAT, BYE, HELLO, HELLO_DEADLINE, MAX_BACKLOG, MAX_PEERS,
};
use crate::ipc_bus::codec::encode_into;
use crate::ipc_bus::{clear_stale_ipc, BusError};
use crate::net::zeromq::leaves_host;
use crate::scene::Batch;
use crate::security::noise::Channel;
use crate::security::KeyPair;

/// Plaintext a subscriber may have buffered (hellos and heartbeats are a few bytes).
const MAX_INPUT: usize = 4096;

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
    role: Option<Role>,
    input: Vec<u8>,
    accepted: Instant,
    last_heard: Instant,
    /// Hello accepted; waits for its checkpoint before live batches.
    wants_checkpoint: bool,
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
                        eprintln!(
                            "zonecast: warning: the replication stream {at} is reachable from other hosts and NOT encrypted (it carries session keys); configure keys (docs/SECURITY.md)"
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
            counters: HubCounters::default(),
        })
    }

    /// The bound endpoints (real ports), in the order given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub fn counters(&self) -> HubCounters {
        HubCounters {
            peers: self.peers.iter().filter(|p| p.role.is_some()).count() as u64,
            ..self.counters
        }
    }

    /// Whether a subscriber of `role` is connected and was heard within `within`.
    pub fn has_live(&self, role: Role, now: Instant, within: Duration) -> bool {
        self.peers
            .iter()
            .any(|p| p.role == Some(role) && now.saturating_duration_since(p.last_heard) <= within)
    }

    /// Accepts and authenticates subscribers, reads their heartbeats, flushes backlogs, drops
    /// the dead. Returns true if a new subscriber waits for a checkpoint.
    pub fn service(&mut self, now: Instant) -> bool {
        self.accept(now);
        let mut buf = [0u8; 4096];
        for p in &mut self.peers {
            let silent =
                p.role.is_none() && now.saturating_duration_since(p.accepted) > HELLO_DEADLINE;
            if read_peer(p, &mut buf, &self.token, now).is_err() || silent {
                self.counters.refused += 1;
                p.dead = true;
            }
            if !p.dead && p.conn.flush().is_err() {
                p.dead = true;
            }
        }
        self.peers.retain(|p| !p.dead);
        self.peers.iter().any(|p| p.wants_checkpoint)
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
                    role: None,
                    input: Vec::new(),
                    accepted: now,
                    last_heard: now,
                    wants_checkpoint: false,
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
        self.frame.clear();
        self.frame.extend_from_slice(&[0; 4]);
        encode_into(batch, &mut self.frame);
        let len = (self.frame.len() - 4) as u32;
        self.frame[..4].copy_from_slice(&len.to_le_bytes());
        for p in &mut self.peers {
            if p.role.is_none() || p.wants_checkpoint != checkpoint {
                continue;
            }
            p.wants_checkpoint = false;
            if p.conn.send(&self.frame).is_err() {
                p.dead = true;
            } else if p.conn.pending() > MAX_BACKLOG {
                p.dead = true;
                self.counters.overflows += 1;
                let _ = p.conn.send(&frame(BYE));
            }
        }
        if self.peers.iter().any(|p| p.dead) {
            self.peers.retain(|p| !p.dead);
        }
    }
}

impl Drop for StreamHub {
    fn drop(&mut self) {
        for p in &mut self.peers {
            if p.role.is_some() {
                let _ = p.conn.send(&frame(BYE));
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

/// Reads what `p` sent and acts on its frames; an error means it must be refused.
fn read_peer(p: &mut Peer, buf: &mut [u8], token: &str, now: Instant) -> Result<(), ()> {
    loop {
        match p.conn.read_into(buf, &mut p.input) {
            Ok(Got::Data) if p.input.len() <= MAX_INPUT => {}
            // Subscribers only send hellos and heartbeats.
            Ok(Got::Data) => return Err(()),
            Ok(Got::Idle) => break,
            Ok(Got::Closed) => {
                p.dead = true;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(()),
            Err(_) => {
                p.dead = true;
                break;
            }
        }
    }
    loop {
        let f = match take_frame(&mut p.input) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(()) => return Err(()),
        };
        if f.as_slice() == BEAT && p.role.is_some() {
            p.last_heard = now;
        } else if p.role.is_none() {
            let role = parse_hello(&f, token).ok_or(())?;
            p.role = Some(role);
            p.last_heard = now;
            p.wants_checkpoint = true;
        } else {
            return Err(());
        }
    }
}

fn parse_hello(f: &[u8], token: &str) -> Option<Role> {
    if f.len() < 5 || &f[..2] != HELLO || f[2] != 1 {
        return None;
    }
    let role = match f[3] {
        1 => Role::Fanout,
        2 => Role::Standby,
        _ => return None,
    };
    let presented = f.get(5..5 + usize::from(f[4]))?;
    bool::from(presented.ct_eq(token.as_bytes())).then_some(role)
}
