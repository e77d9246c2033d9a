//! The replication stream: the bus carried over one TCP (`tcp://host:port`) or Unix
//! (`ipc:///path`) stream per subscriber, used where losing or reordering an event is not an
//! option: between the halves of a split pair and from a pair to its standby.
//!
//! Why not ZeroMQ PUB/SUB here (the [`zmq`](super::zmq) transport carries the same batches):
//! PUB drops whatever is published before a subscription has landed and gives the subscriber
//! no way to ask for the state it missed, and the `zeromq` crate queues messages in user space,
//! so a publisher killed with `kill -9` takes its last messages with it. Here the publishing
//! thread writes each batch into the kernel itself, *before* fanout sends the datagrams it
//! produced, so whatever devices have seen, the kernel will still deliver to the standby after
//! the publisher dies; a new subscriber gets a checkpoint of the whole state first
//! (`Engine::checkpoint`), in stream order with the live events that follow.
//!
//! Frames are `len u32 LE | payload`. Subscriber to hub: hello `"ZH" | 1 | role u8 |
//! token_len u8 | token` (the cluster token: the stream carries session keys), then heartbeat
//! `"ZK"` every 50 ms. Hub to subscriber: batches (the `codec` payload, `"ZB" | 1 | events`),
//! starting with a checkpoint, and `"ZY"` (bye) before the hub closes a stream on purpose
//! (the subscriber fell too far behind, or the hub is stopping), so that the subscriber can
//! tell a deliberate close from the death of the publisher.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError};
use subtle::ConstantTimeEq;

use super::codec::{decode, encode_into};
use super::{clear_stale_ipc, Batch, BusError, Subscriber};

/// Largest frame either side accepts (a checkpoint of a full scene is well below).
pub const MAX_FRAME: usize = 64 << 20;
/// Bytes a hub queues for one slow subscriber before it says bye and drops it.
pub const MAX_BACKLOG: usize = 32 << 20;
/// How often a subscriber says it is alive.
pub const HEARTBEAT: Duration = Duration::from_millis(50);

const HELLO: &[u8; 2] = b"ZH";
const BEAT: &[u8; 2] = b"ZK";
const BYE: &[u8; 2] = b"ZY";

/// What a subscriber is to the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The fanout half of a split pair: the pair is healthy only while it is connected.
    Fanout = 1,
    /// A standby pair mirroring this one.
    Standby = 2,
}

/// A parsed `tcp://` or `ipc://` endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(String),
    Ipc(std::path::PathBuf),
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Endpoint, BusError> {
        if let Some(a) = s.strip_prefix("tcp://") {
            return Ok(Endpoint::Tcp(a.to_string()));
        }
        if let Some(p) = s.strip_prefix("ipc://") {
            if !p.is_empty() {
                return Ok(Endpoint::Ipc(p.into()));
            }
        }
        Err(BusError::Transport(format!(
            "`{s}` is not tcp://HOST:PORT or ipc:///PATH"
        )))
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn io(&mut self) -> &mut dyn ReadWrite {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(on),
            Stream::Unix(s) => s.set_nonblocking(on),
        }
    }

    fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(Some(t)),
            Stream::Unix(s) => s.set_read_timeout(Some(t)),
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Counters of a hub.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubCounters {
    /// Subscribers currently receiving.
    pub peers: u64,
    /// Connections closed for a wrong token or a malformed frame.
    pub refused: u64,
    /// Subscribers dropped for falling `MAX_BACKLOG` behind.
    pub overflows: u64,
}

struct Peer {
    stream: Stream,
    role: Option<Role>,
    input: Vec<u8>,
    backlog: Vec<u8>,
    last_heard: Instant,
    /// Hello accepted; waits for its checkpoint before live batches.
    wants_checkpoint: bool,
    dead: bool,
}

impl Peer {
    /// Writes `bytes` after whatever is queued; false if the peer is gone or overflowed.
    fn send(&mut self, bytes: &[u8]) -> bool {
        if self.backlog.is_empty() {
            match write_some(self.stream.io(), bytes) {
                Ok(n) if n == bytes.len() => return true,
                Ok(n) => self.backlog.extend_from_slice(&bytes[n..]),
                Err(_) => return false,
            }
        } else {
            self.backlog.extend_from_slice(bytes);
        }
        self.backlog.len() <= MAX_BACKLOG
    }

    fn flush(&mut self) -> bool {
        if self.backlog.is_empty() {
            return true;
        }
        match write_some(self.stream.io(), &self.backlog) {
            Ok(n) => {
                self.backlog.drain(..n);
                true
            }
            Err(_) => false,
        }
    }
}

/// Writes as much of `bytes` as the socket takes now.
fn write_some(w: &mut dyn ReadWrite, bytes: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < bytes.len() {
        match w.write(&bytes[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Splits complete frames off the front of `input`.
fn take_frame(input: &mut Vec<u8>) -> Result<Option<Vec<u8>>, ()> {
    if input.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes([input[0], input[1], input[2], input[3]]) as usize;
    if len > MAX_FRAME {
        return Err(());
    }
    if input.len() < 4 + len {
        return Ok(None);
    }
    let frame = input[4..4 + len].to_vec();
    input.drain(..4 + len);
    Ok(Some(frame))
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

/// The publishing side: listens, authenticates subscribers and writes every batch to each,
/// from the caller's thread, without blocking it. Driven by its owner: [`StreamHub::service`]
/// accepts, reads hellos and heartbeats and flushes backlogs; [`StreamHub::send`] writes.
pub struct StreamHub {
    listeners: Vec<Listener>,
    endpoints: Vec<String>,
    peers: Vec<Peer>,
    token: String,
    frame: Vec<u8>,
    counters: HubCounters,
}

impl StreamHub {
    /// Binds every endpoint (`tcp://HOST:PORT`, port 0 for any; `ipc:///path`, a stale socket
    /// file is replaced, a live one refused). Subscribers must present `token`.
    pub fn bind(endpoints: &[String], token: &str) -> Result<StreamHub, BusError> {
        let mut listeners = Vec::new();
        let mut bound = Vec::new();
        let fail = |e: &str, err: io::Error| BusError::Transport(format!("cannot bind {e}: {err}"));
        for e in endpoints {
            match Endpoint::parse(e)? {
                Endpoint::Tcp(addr) => {
                    let l = TcpListener::bind(&addr).map_err(|err| fail(e, err))?;
                    l.set_nonblocking(true).map_err(|err| fail(e, err))?;
                    bound.push(format!(
                        "tcp://{}",
                        l.local_addr().map_err(|err| fail(e, err))?
                    ));
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
        for l in &self.listeners {
            loop {
                let s = match l {
                    Listener::Tcp(l) => l.accept().map(|(s, _)| {
                        let _ = s.set_nodelay(true);
                        Stream::Tcp(s)
                    }),
                    Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
                };
                let Ok(stream) = s else { break };
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                self.peers.push(Peer {
                    stream,
                    role: None,
                    input: Vec::new(),
                    backlog: Vec::new(),
                    last_heard: now,
                    wants_checkpoint: false,
                    dead: false,
                });
            }
        }
        let mut buf = [0u8; 4096];
        for p in &mut self.peers {
            loop {
                match p.stream.io().read(&mut buf) {
                    Ok(0) => {
                        p.dead = true;
                        break;
                    }
                    Ok(n) if p.input.len() + n <= 4096 => p.input.extend_from_slice(&buf[..n]),
                    Ok(_) => {
                        // Subscribers only send hellos and heartbeats.
                        self.counters.refused += 1;
                        p.dead = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        p.dead = true;
                        break;
                    }
                }
            }
            while let Ok(Some(f)) = take_frame(&mut p.input) {
                if f.as_slice() == BEAT && p.role.is_some() {
                    p.last_heard = now;
                } else if p.role.is_none() {
                    match parse_hello(&f, &self.token) {
                        Some(role) => {
                            p.role = Some(role);
                            p.last_heard = now;
                            p.wants_checkpoint = true;
                        }
                        None => {
                            self.counters.refused += 1;
                            p.dead = true;
                        }
                    }
                } else {
                    self.counters.refused += 1;
                    p.dead = true;
                }
            }
            if p.input.len() >= 4 && take_frame(&mut p.input).is_err() {
                self.counters.refused += 1;
                p.dead = true;
            }
            if !p.dead && !p.flush() {
                p.dead = true;
            }
        }
        self.peers.retain(|p| !p.dead);
        self.peers.iter().any(|p| p.wants_checkpoint)
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
            if !p.send(&self.frame) {
                p.dead = true;
                self.counters.overflows += 1;
                let _ = write_some(p.stream.io(), &frame(BYE));
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
            let _ = p.flush();
            let _ = write_some(p.stream.io(), &frame(BYE));
        }
        for l in &self.listeners {
            if let Listener::Unix(_, path) = l {
                let _ = std::fs::remove_file(path);
            }
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

/// What a link reports to its consumer.
#[derive(Debug)]
pub enum LinkEvent {
    /// Connected and greeted; a checkpoint is on its way.
    Up,
    /// The next batch, in publish order (the first after `Up` is a checkpoint).
    Batch(Batch),
    /// The publisher closed the stream on purpose (`bye`); the link reconnects.
    Bye,
    /// The stream broke without a bye: the publisher died or the network failed. The link
    /// reconnects.
    Lost,
    /// A frame could not be decoded: counted, the link reconnects for a fresh checkpoint.
    Malformed,
}

/// The subscribing side: a thread that connects (and reconnects) to a hub, greets it, sends
/// heartbeats and passes batches on, in order, through a bounded queue (a full queue stops
/// reading, which backs up to the hub).
pub struct StreamLink {
    rx: Receiver<LinkEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StreamLink {
    /// Starts linking to `endpoint` as `role`; `wake` is called after each event is queued.
    pub fn connect(
        endpoint: &str,
        role: Role,
        token: &str,
        wake: Option<Box<dyn Fn() + Send>>,
    ) -> Result<StreamLink, BusError> {
        let endpoint = Endpoint::parse(endpoint)?;
        if token.len() > 255 {
            return Err(BusError::Transport("token longer than 255 bytes".into()));
        }
        let mut hello = HELLO.to_vec();
        hello.extend_from_slice(&[1, role as u8, token.len() as u8]);
        hello.extend_from_slice(token.as_bytes());
        let (tx, rx) = bounded(4096);
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let thread = std::thread::Builder::new()
            .name("zc-link".into())
            .spawn(move || {
                let emit = |e: LinkEvent| {
                    let ok = tx.send(e).is_ok();
                    if let Some(w) = &wake {
                        w();
                    }
                    ok
                };
                while !halt.load(Relaxed) {
                    let Some(mut s) = dial(&endpoint) else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let end = run_link(&mut s, &hello, &halt, &emit);
                    if halt.load(Relaxed) || !emit(end) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
            .map_err(|e| BusError::Transport(e.to_string()))?;
        Ok(StreamLink {
            rx,
            stop,
            thread: Some(thread),
        })
    }

    /// The next event, if one is queued.
    pub fn try_next(&self) -> Option<LinkEvent> {
        self.rx.try_recv().ok()
    }

    /// Waits up to `timeout` for the next event.
    pub fn next(&self, timeout: Duration) -> Option<LinkEvent> {
        self.rx.recv_timeout(timeout).ok()
    }
}

impl Drop for StreamLink {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        // Unblock a thread waiting on a full queue.
        while self.rx.try_recv().is_ok() {}
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn dial(endpoint: &Endpoint) -> Option<Stream> {
    let s = match endpoint {
        Endpoint::Tcp(a) => {
            let s = TcpStream::connect(a).ok()?;
            let _ = s.set_nodelay(true);
            Stream::Tcp(s)
        }
        Endpoint::Ipc(p) => Stream::Unix(UnixStream::connect(p).ok()?),
    };
    s.set_read_timeout(Duration::from_millis(10)).ok()?;
    Some(s)
}

/// Runs one connection until it ends; returns how it ended.
fn run_link(
    s: &mut Stream,
    hello: &[u8],
    halt: &AtomicBool,
    emit: &dyn Fn(LinkEvent) -> bool,
) -> LinkEvent {
    if s.io().write_all(&frame(hello)).is_err() {
        return LinkEvent::Lost;
    }
    if !emit(LinkEvent::Up) {
        return LinkEvent::Lost;
    }
    let mut input = Vec::with_capacity(64 << 10);
    let mut buf = vec![0u8; 64 << 10];
    let mut next_beat = Instant::now();
    while !halt.load(Relaxed) {
        if Instant::now() >= next_beat {
            if s.io().write_all(&frame(BEAT)).is_err() {
                return LinkEvent::Lost;
            }
            next_beat = Instant::now() + HEARTBEAT;
        }
        match s.io().read(&mut buf) {
            Ok(0) => return LinkEvent::Lost,
            Ok(n) => input.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return LinkEvent::Lost,
        }
        loop {
            match take_frame(&mut input) {
                Err(()) => return LinkEvent::Malformed,
                Ok(None) => break,
                Ok(Some(f)) if f.as_slice() == BYE => return LinkEvent::Bye,
                Ok(Some(f)) => {
                    let mut batch = Batch::default();
                    if decode(&f, &mut batch).is_err() {
                        return LinkEvent::Malformed;
                    }
                    if !emit(LinkEvent::Batch(batch)) {
                        return LinkEvent::Lost;
                    }
                }
            }
        }
    }
    LinkEvent::Lost
}

/// A link as a bus [`Subscriber`] (batches only; connection changes are absorbed: the
/// checkpoint after a reconnect resets the consumer's state).
pub struct LinkSubscriber {
    pub link: StreamLink,
    /// Frames refused as malformed (each forces a reconnect and a checkpoint).
    pub malformed: Arc<std::sync::atomic::AtomicU64>,
}

impl Subscriber for LinkSubscriber {
    fn recv(&mut self, timeout: Duration) -> Result<Option<Batch>, BusError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.link.rx.recv_timeout(left) {
                Ok(LinkEvent::Batch(b)) => return Ok(Some(b)),
                Ok(LinkEvent::Malformed) => {
                    self.malformed.fetch_add(1, Relaxed);
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => return Err(BusError::Closed),
            }
        }
    }

    fn recycle(&mut self, _batch: Batch) {}
}
