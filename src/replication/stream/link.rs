//! The subscribing side of the replication stream: a thread that connects (and reconnects) to
//! a hub, completes the Noise handshake when it knows the hub's key, and runs a
//! [`LinkSession`] (hello, heartbeats, what each frame means) over the connection, passing
//! batches on, in order, through a bounded queue (a full queue stops reading, which backs up
//! to the hub).

use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError};

use super::transport::{Conn, Got, Socket};
use super::{Endpoint, Role, HELLO_DEADLINE};
use crate::ipc_bus::{BusError, Subscriber};
use crate::replication::peer::{FanoutTotals, FromHub, LinkEvent, LinkSession};
use crate::scene::Batch;
use crate::security::noise::Channel;
use crate::security::PublicKey;
use crate::stats::PairStats;

/// The subscribing side. See the module doc.
pub struct StreamLink {
    rx: Receiver<LinkEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StreamLink {
    /// Starts linking to `endpoint` as `role`, presenting `token`; with `server_key`, a
    /// `tcp://` stream is encrypted and only a hub holding that key is accepted. `wake` is
    /// called after each event is queued.
    pub fn connect(
        endpoint: &str,
        role: Role,
        token: &str,
        server_key: Option<PublicKey>,
        wake: Option<Box<dyn Fn() + Send>>,
    ) -> Result<StreamLink, BusError> {
        StreamLink::connect_reporting(endpoint, role, token, server_key, wake, None)
    }

    /// [`connect`](StreamLink::connect) for a fanout half: its heartbeats carry the send
    /// totals in `report`, so the ingest half reports what the pair sends.
    pub fn connect_reporting(
        endpoint: &str,
        role: Role,
        token: &str,
        server_key: Option<PublicKey>,
        wake: Option<Box<dyn Fn() + Send>>,
        report: Option<Arc<PairStats>>,
    ) -> Result<StreamLink, BusError> {
        let endpoint = Endpoint::parse(endpoint)?;
        if LinkSession::new(role, token, Instant::now()).is_none() {
            return Err(BusError::Transport("token longer than 255 bytes".into()));
        }
        let token = token.to_string();
        let key = match endpoint {
            Endpoint::Tcp(_) => server_key,
            Endpoint::Ipc(_) => None,
        };
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
                    let Some(mut conn) = dial(&endpoint, key.as_ref()) else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let Some(session) = LinkSession::new(role, &token, Instant::now()) else {
                        return;
                    };
                    let end = run_link(&mut conn, session, &halt, &emit, report.as_deref());
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

/// Connects and, for an encrypted stream, sends the first handshake record.
fn dial(endpoint: &Endpoint, key: Option<&PublicKey>) -> Option<Conn> {
    let socket = match endpoint {
        Endpoint::Tcp(a) => {
            let s = TcpStream::connect(a).ok()?;
            let _ = s.set_nodelay(true);
            Socket::Tcp(s)
        }
        Endpoint::Ipc(p) => Socket::Unix(UnixStream::connect(p).ok()?),
    };
    socket.set_read_timeout(Duration::from_millis(10)).ok()?;
    let Some(key) = key else {
        return Some(Conn::new(socket, None));
    };
    let (channel, first) = Channel::initiator(key).ok()?;
    let mut conn = Conn::new(socket, Some(channel));
    // Raw: the handshake record is not sealed.
    conn.send_raw(&first).ok()?;
    Some(conn)
}

/// Runs one connection until it ends; returns how it ended.
fn run_link(
    conn: &mut Conn,
    mut session: LinkSession,
    halt: &AtomicBool,
    emit: &dyn Fn(LinkEvent) -> bool,
    report: Option<&PairStats>,
) -> LinkEvent {
    let mut input = Vec::with_capacity(64 << 10);
    let mut buf = vec![0u8; 64 << 10];
    let deadline = Instant::now() + HELLO_DEADLINE;
    while !conn.is_ready() {
        match conn.read_into(&mut buf, &mut input) {
            Ok(Got::Data | Got::Idle) if Instant::now() < deadline && !halt.load(Relaxed) => {}
            _ => return LinkEvent::Lost,
        }
    }
    if conn
        .send(session.hello())
        .and_then(|_| conn.flush())
        .is_err()
    {
        return LinkEvent::Lost;
    }
    if !emit(LinkEvent::Up) {
        return LinkEvent::Lost;
    }
    while !halt.load(Relaxed) {
        let totals = report.map(|s| FanoutTotals {
            datagrams: s.fanout_datagrams.load(Relaxed),
            updates: s.fanout_updates.load(Relaxed),
            bytes: s.fanout_bytes.load(Relaxed),
        });
        if let Some(beat) = session.poll_beat(Instant::now(), totals) {
            if conn.send(&beat).and_then(|_| conn.flush()).is_err() {
                return LinkEvent::Lost;
            }
        }
        match conn.read_into(&mut buf, &mut input) {
            Ok(Got::Data | Got::Idle) => {}
            Ok(Got::Closed) => return LinkEvent::Lost,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return LinkEvent::Malformed,
            Err(_) => return LinkEvent::Lost,
        }
        while let Some(f) = session.next_frame(&mut input) {
            match f {
                FromHub::Malformed => return LinkEvent::Malformed,
                FromHub::Bye => return LinkEvent::Bye,
                FromHub::Batch(batch) => {
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
    pub malformed: Arc<AtomicU64>,
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
