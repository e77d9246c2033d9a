//! The replication stream's peer protocol, both ends, as pure state machines (no sockets, no
//! clock: `now` comes in). Byte layout: `stream/mod.rs` and docs/PROTOCOL.md, part 3.
//!
//! [`HubPeer`] is one subscriber as its hub sees it: it must say hello (role and cluster token)
//! within [`HELLO_DEADLINE`], then only heartbeat; it gets a checkpoint before any live batch;
//! it is dropped with a bye when it falls [`MAX_BACKLOG`] behind, and refused for a wrong
//! token, an unexpected frame, more than [`MAX_INPUT`] unread bytes or silence before hello.
//! A fanout half's heartbeat carries its send totals ([`FanoutTotals`]), so the ingest half
//! (which registers the pair) reports what the pair sends.
//! [`LinkSession`] is the subscriber's side: its hello, a heartbeat every [`HEARTBEAT`], and what
//! each frame from the hub means (a batch, a bye, or something malformed). The drivers in
//! `stream/` only move bytes and consult these.

use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use crate::ipc_bus::codec::decode;
use crate::scene::Batch;

/// Largest frame either side accepts (a checkpoint of a full scene is well below).
pub const MAX_FRAME: usize = 64 << 20;
/// Bytes a hub queues for one slow subscriber before it says bye and drops it.
pub const MAX_BACKLOG: usize = 32 << 20;
/// How often a subscriber says it is alive.
pub const HEARTBEAT: Duration = Duration::from_millis(50);
/// How long a new connection has to complete its handshake and say hello.
pub const HELLO_DEADLINE: Duration = Duration::from_secs(5);
/// Plaintext a subscriber may have buffered unread (hellos and heartbeats are a few bytes).
pub const MAX_INPUT: usize = 4096;

const HELLO: &[u8; 2] = b"ZH";
const BEAT: &[u8; 2] = b"ZK";
const BYE: &[u8; 2] = b"ZY";

/// A fanout half's totals since it started, carried by its heartbeats: `"ZK" | datagrams
/// u64 LE | updates u64 LE | bytes u64 LE` (a bare `"ZK"` carries none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FanoutTotals {
    pub datagrams: u64,
    pub updates: u64,
    pub bytes: u64,
}

impl FanoutTotals {
    const LEN: usize = 2 + 3 * 8;

    fn encode(&self) -> Vec<u8> {
        let mut f = BEAT.to_vec();
        for v in [self.datagrams, self.updates, self.bytes] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f
    }

    fn decode(f: &[u8]) -> Option<FanoutTotals> {
        if f.len() != Self::LEN || &f[..2] != BEAT {
            return None;
        }
        let v =
            |i: usize| u64::from_le_bytes(f[2 + 8 * i..10 + 8 * i].try_into().unwrap_or_default());
        Some(FanoutTotals {
            datagrams: v(0),
            updates: v(1),
            bytes: v(2),
        })
    }
}

/// What a subscriber is to the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The fanout half of a split pair: the pair is healthy only while it is connected.
    Fanout = 1,
    /// A standby pair mirroring this one.
    Standby = 2,
    /// A pair serving other zones of a scene this one serves (the region bus): it gets only
    /// what proxies and device hand-overs need (checkpoints' objects, accepted writes,
    /// hand-overs, forwarded stragglers), never the sessions of devices that stay.
    Neighbour = 3,
}

impl Role {
    /// Whether an event of `kind` goes to a subscriber of this role.
    pub fn gets(self, kind: crate::scene::EventKind) -> bool {
        use crate::scene::EventKind as K;
        match self {
            Role::Neighbour => matches!(
                kind,
                K::Checkpoint | K::Object | K::Synced | K::Relay(_) | K::Handover | K::Forwarded
            ),
            Role::Fanout | Role::Standby => true,
        }
    }
}

/// Why a hub closes a subscriber's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The first frame was not a hello with a known role and the right token.
    BadHello,
    /// After the hello, a frame that is not a heartbeat.
    Unexpected,
    /// More unread input than a subscriber ever needs, or a frame over [`MAX_FRAME`].
    TooMuch,
    /// No hello within [`HELLO_DEADLINE`].
    Silent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    AwaitingHello,
    Greeted {
        role: Role,
        /// Waiting for its checkpoint; live batches only after it.
        wants_checkpoint: bool,
    },
}

/// One subscriber as its hub sees it.
#[derive(Clone, Debug)]
pub struct HubPeer {
    state: State,
    accepted: Instant,
    last_heard: Instant,
    totals: Option<FanoutTotals>,
}

impl HubPeer {
    pub fn new(now: Instant) -> HubPeer {
        HubPeer {
            state: State::AwaitingHello,
            accepted: now,
            last_heard: now,
            totals: None,
        }
    }

    /// Its role, once it said hello.
    pub fn role(&self) -> Option<Role> {
        match self.state {
            State::Greeted { role, .. } => Some(role),
            State::AwaitingHello => None,
        }
    }

    /// Takes every complete frame off `input` (plaintext from the subscriber).
    pub fn handle_input(
        &mut self,
        now: Instant,
        input: &mut Vec<u8>,
        token: &str,
    ) -> Result<(), Refusal> {
        if input.len() > MAX_INPUT {
            return Err(Refusal::TooMuch);
        }
        while let Some(f) = take_frame(input).map_err(|()| Refusal::TooMuch)? {
            self.handle_frame(now, &f, token)?;
        }
        Ok(())
    }

    fn handle_frame(&mut self, now: Instant, f: &[u8], token: &str) -> Result<(), Refusal> {
        match self.state {
            State::AwaitingHello => {
                let role = parse_hello(f, token).ok_or(Refusal::BadHello)?;
                self.state = State::Greeted {
                    role,
                    wants_checkpoint: true,
                };
                self.last_heard = now;
                Ok(())
            }
            State::Greeted { .. } if f == BEAT => {
                self.last_heard = now;
                Ok(())
            }
            State::Greeted {
                role: Role::Fanout, ..
            } if FanoutTotals::decode(f).is_some() => {
                self.last_heard = now;
                self.totals = FanoutTotals::decode(f);
                Ok(())
            }
            State::Greeted { .. } => Err(Refusal::Unexpected),
        }
    }

    /// The hello deadline: a connection silent since it was accepted is refused.
    pub fn handle_tick(&self, now: Instant) -> Result<(), Refusal> {
        let silent = now.saturating_duration_since(self.accepted) > HELLO_DEADLINE;
        if self.state == State::AwaitingHello && silent {
            return Err(Refusal::Silent);
        }
        Ok(())
    }

    /// Greeted and waiting for a checkpoint.
    pub fn wants_checkpoint(&self) -> bool {
        matches!(
            self.state,
            State::Greeted {
                wants_checkpoint: true,
                ..
            }
        )
    }

    /// Whether a batch of this kind goes to it now: a checkpoint to a peer waiting for one,
    /// a live batch to one past its checkpoint. Marks the checkpoint sent.
    pub fn take(&mut self, checkpoint: bool) -> bool {
        match &mut self.state {
            State::Greeted {
                wants_checkpoint, ..
            } if *wants_checkpoint == checkpoint => {
                *wants_checkpoint = false;
                true
            }
            _ => false,
        }
    }

    /// The totals its last heartbeat carried (a fanout half).
    pub fn totals(&self) -> Option<FanoutTotals> {
        self.totals
    }

    /// Whether it said hello as `role` and was heard within `within`.
    pub fn live_as(&self, role: Role, now: Instant, within: Duration) -> bool {
        self.role() == Some(role) && now.saturating_duration_since(self.last_heard) <= within
    }

    /// With `pending` bytes not yet taken by its socket: false once that is too far behind
    /// (the hub then says bye and drops it).
    pub fn keeps_up(pending: usize) -> bool {
        pending <= MAX_BACKLOG
    }
}

/// The frame a hub sends before closing a stream on purpose.
pub fn bye_frame() -> Vec<u8> {
    frame(BYE)
}

/// What a frame from the hub means to a subscriber.
#[derive(Debug)]
pub enum FromHub {
    Batch(Batch),
    Bye,
    Malformed,
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
    /// The stream broke without a bye: the publisher died, the network failed, or the
    /// handshake failed (a wrong key). The link reconnects.
    Lost,
    /// A frame could not be decoded: counted, the link reconnects for a fresh checkpoint.
    Malformed,
}

/// A subscriber's side of one connection: its hello and heartbeats.
#[derive(Clone, Debug)]
pub struct LinkSession {
    hello: Vec<u8>,
    next_beat: Instant,
}

impl LinkSession {
    /// A session that greets as `role` with `token` (at most 255 bytes).
    pub fn new(role: Role, token: &str, now: Instant) -> Option<LinkSession> {
        let len = u8::try_from(token.len()).ok()?;
        let mut hello = HELLO.to_vec();
        hello.extend_from_slice(&[1, role as u8, len]);
        hello.extend_from_slice(token.as_bytes());
        Some(LinkSession {
            hello: frame(&hello),
            next_beat: now,
        })
    }

    /// The framed hello, sent first.
    pub fn hello(&self) -> &[u8] {
        &self.hello
    }

    /// A framed heartbeat if one is due, carrying `totals` if given (a fanout half).
    pub fn poll_beat(&mut self, now: Instant, totals: Option<FanoutTotals>) -> Option<Vec<u8>> {
        if now < self.next_beat {
            return None;
        }
        self.next_beat = now + HEARTBEAT;
        Some(match totals {
            Some(t) => frame(&t.encode()),
            None => frame(BEAT),
        })
    }

    /// When the next heartbeat is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_beat
    }

    /// Takes the next complete frame off `input`, if there is one.
    pub fn next_frame(&self, input: &mut Vec<u8>) -> Option<FromHub> {
        match take_frame(input) {
            Err(()) => Some(FromHub::Malformed),
            Ok(None) => None,
            Ok(Some(f)) if f.as_slice() == BYE => Some(FromHub::Bye),
            Ok(Some(f)) => {
                let mut batch = Batch::default();
                Some(match decode(&f, &mut batch) {
                    Ok(()) => FromHub::Batch(batch),
                    Err(_) => FromHub::Malformed,
                })
            }
        }
    }
}

/// Splits a complete frame off the front of `input`; `Err` for a declared length over
/// [`MAX_FRAME`].
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

/// `len u32 LE | payload`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

fn parse_hello(f: &[u8], token: &str) -> Option<Role> {
    if f.len() < 5 || &f[..2] != HELLO || f[2] != 1 {
        return None;
    }
    let role = match f[3] {
        1 => Role::Fanout,
        2 => Role::Standby,
        3 => Role::Neighbour,
        _ => return None,
    };
    let presented = f.get(5..5 + usize::from(f[4]))?;
    bool::from(presented.ct_eq(token.as_bytes())).then_some(role)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::EventKind;

    const TOKEN: &str = "secret";

    fn greeted(now: Instant) -> HubPeer {
        let mut p = HubPeer::new(now);
        let link = LinkSession::new(Role::Standby, TOKEN, now).unwrap();
        let mut input = link.hello().to_vec();
        p.handle_input(now, &mut input, TOKEN).unwrap();
        assert!(input.is_empty());
        p
    }

    #[test]
    fn a_hello_then_a_checkpoint_then_live_batches_and_heartbeats() {
        let t0 = Instant::now();
        let mut p = greeted(t0);
        assert_eq!(p.role(), Some(Role::Standby));
        assert!(p.wants_checkpoint());
        assert!(!p.take(false), "no live batch before the checkpoint");
        assert!(p.take(true));
        assert!(!p.take(true), "one checkpoint");
        assert!(p.take(false));
        let mut link = LinkSession::new(Role::Standby, TOKEN, t0).unwrap();
        assert!(link.poll_beat(t0, None).is_some());
        assert!(link.poll_beat(t0 + HEARTBEAT / 2, None).is_none());
        let later = t0 + HEARTBEAT * 10;
        let mut input = link.poll_beat(later, None).unwrap();
        p.handle_input(later, &mut input, TOKEN).unwrap();
        assert!(p.live_as(Role::Standby, later, HEARTBEAT));
        assert!(!p.live_as(Role::Fanout, later, HEARTBEAT));
        assert!(!p.live_as(Role::Standby, later + HEARTBEAT * 2, HEARTBEAT));
        assert_eq!(p.handle_tick(later + HELLO_DEADLINE * 2), Ok(()));
    }

    #[test]
    fn a_fanout_halfs_heartbeats_carry_its_totals_and_only_a_fanouts_are_taken() {
        let t0 = Instant::now();
        let mut hub = HubPeer::new(t0);
        let mut link = LinkSession::new(Role::Fanout, TOKEN, t0).unwrap();
        let mut input = link.hello().to_vec();
        hub.handle_input(t0, &mut input, TOKEN).unwrap();
        let totals = FanoutTotals {
            datagrams: 7,
            updates: 9,
            bytes: 1234,
        };
        let mut beat = link.poll_beat(t0, Some(totals)).unwrap();
        hub.handle_input(t0, &mut beat, TOKEN).unwrap();
        assert_eq!(hub.totals(), Some(totals));
        assert!(hub.live_as(Role::Fanout, t0, HEARTBEAT));
        // A standby has no totals to report: from it the long beat is unexpected.
        let mut standby = greeted(t0);
        let mut beat = frame(&totals.encode());
        assert_eq!(
            standby.handle_input(t0, &mut beat, TOKEN),
            Err(Refusal::Unexpected)
        );
    }

    #[test]
    fn wrong_tokens_unknown_roles_extra_frames_and_silence_are_refused() {
        let t0 = Instant::now();
        let wrong = LinkSession::new(Role::Standby, "guess", t0).unwrap();
        let mut input = wrong.hello().to_vec();
        assert_eq!(
            HubPeer::new(t0).handle_input(t0, &mut input, TOKEN),
            Err(Refusal::BadHello)
        );
        let mut bad_role = frame(b"ZH\x01\x09\x06secret");
        assert_eq!(
            HubPeer::new(t0).handle_input(t0, &mut bad_role, TOKEN),
            Err(Refusal::BadHello)
        );
        let mut p = greeted(t0);
        let mut extra = frame(b"ZB\x01");
        assert_eq!(
            p.handle_input(t0, &mut extra, TOKEN),
            Err(Refusal::Unexpected)
        );
        let mut flood = vec![0u8; MAX_INPUT + 1];
        assert_eq!(
            HubPeer::new(t0).handle_input(t0, &mut flood, TOKEN),
            Err(Refusal::TooMuch)
        );
        let mut huge = (MAX_FRAME as u32 + 1).to_le_bytes().to_vec();
        assert_eq!(
            HubPeer::new(t0).handle_input(t0, &mut huge, TOKEN),
            Err(Refusal::TooMuch)
        );
        let quiet = HubPeer::new(t0);
        assert_eq!(quiet.handle_tick(t0 + HELLO_DEADLINE), Ok(()));
        assert_eq!(
            quiet.handle_tick(t0 + HELLO_DEADLINE + Duration::from_millis(1)),
            Err(Refusal::Silent)
        );
        // A partial hello waits; it is not an error.
        let mut half = wrong.hello()[..3].to_vec();
        assert_eq!(HubPeer::new(t0).handle_input(t0, &mut half, TOKEN), Ok(()));
        assert!(LinkSession::new(Role::Fanout, &"x".repeat(256), t0).is_none());
        assert!(HubPeer::keeps_up(MAX_BACKLOG) && !HubPeer::keeps_up(MAX_BACKLOG + 1));
    }

    #[test]
    fn a_subscriber_tells_batches_from_a_bye_and_from_garbage() {
        let link = LinkSession::new(Role::Fanout, TOKEN, Instant::now()).unwrap();
        let mut b = Batch::default();
        b.push(EventKind::Synced, 0, 0, None, &[]);
        let mut payload = Vec::new();
        crate::ipc_bus::codec::encode_into(&b, &mut payload);
        let mut input = [frame(&payload), bye_frame(), frame(b"ZB\x01junk")].concat();
        assert!(matches!(link.next_frame(&mut input), Some(FromHub::Batch(b)) if b.len() == 1));
        assert!(matches!(link.next_frame(&mut input), Some(FromHub::Bye)));
        assert!(matches!(
            link.next_frame(&mut input),
            Some(FromHub::Malformed)
        ));
        assert!(link.next_frame(&mut input).is_none());
        let mut partial = frame(&payload)[..5].to_vec();
        assert!(link.next_frame(&mut partial).is_none());
    }
}
