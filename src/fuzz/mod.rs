//! The bodies of zonecast's fuzz targets: every parser that faces the network, each driven the
//! way the process that owns it drives it, with the invariants it must keep asserted (a
//! panic here is a finding). Two drivers call them: the cargo-fuzz targets in `fuzz/`
//! (coverage-guided, long runs; see `fuzz/README.md`) and `tests/fuzz_smoke.rs` (the committed
//! seed inputs plus seeded random mutations, on every `scripts/test`). Deterministic: no clock
//! beyond one `Instant` per input, no OS randomness.
//!
//! - [`datagram`]: datagram parse + engine handling. Ops sealed under a session key the engine
//!   admitted reach the body parsers (join, objects, bundles) and the replay window.
//! - [`client_events`]: a device's decoding of what a pair sends it (sealed the same way).
//! - [`control`]: control request decoding + the controller's handling, one request per line;
//!   and reply decoding + the pair's assignment tracker, for lines after a `#replies` line.
//! - [`stream`]: the replication stream's frames (both ends), the batch codec (round trip) and a
//!   standby's mirror applying the decoded batches.
//! - [`sessions_file`]: `--sessions` file parsing (round trip).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::client::Event as DeviceEvent;
use crate::control::client::decode_reply;
use crate::control::limits::Source;
use crate::control::protocol::{decode, PairRegistered};
use crate::control::random::Random;
use crate::control::{Config as ControlConfig, Controller};
use crate::ipc_bus::codec;
use crate::pair::SessionsFile;
use crate::replication::assignment::{Answer, Local, Tracker, TrackerConfig};
use crate::replication::mirror::Mirror;
use crate::replication::peer::{FromHub, HubPeer, LinkEvent, LinkSession, Role};
use crate::scene::{self, Batch, Engine};
pub mod seeds;

use crate::wire::{seal, Datagram, Direction, HeaderFields, Kind, SessionKey, HEADER_LEN, TAG_LEN};

/// The sessions the engine under test admits: (device, scene, key byte).
const DEVICES: [(u32, u32, u8); 3] = [(1, 1, 0x11), (2, 1, 0x22), (3, 2, 0x33)];
/// The cluster token the control and stream targets use.
pub const TOKEN: &str = "fuzz";

/// The engines' settings: the defaults, with a fixed hash seed (runs replay exactly).
fn engine_config() -> scene::Config {
    scene::Config {
        hash_seed: Some(7),
        ..scene::Config::default()
    }
}

/// Reads an input front to back; past its end every read is `None`.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }

    /// Up to `n` bytes (fewer at the end).
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

/// A sealed datagram built from the input: kind, sender, seq, optional scene, body.
/// Every datagram kind, by the input byte that picks it (13 and 14 are the controller's probes,
/// not device datagrams).
const KINDS: [u8; 14] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15, 16];

fn sealed(input: &mut Input<'_>, dir: Direction, scene_from_input: bool) -> Option<Vec<u8>> {
    let kind = Kind::from_u8(KINDS[usize::from(input.byte()?) % KINDS.len()])?;
    let who = input.byte()?;
    let (device, scene, key) = DEVICES[usize::from(who % 3)];
    // A quarter of them claim another device id under that key: a forgery to refuse.
    let device = if who & 0xc0 == 0xc0 {
        device + 7
    } else {
        device
    };
    let seq = u64::from(input.u16()?);
    let scene = match scene_from_input {
        true => u32::from(input.byte()?),
        false => scene,
    };
    let len = usize::from(input.u16()? % 1200);
    let body = input.take(len);
    let mut buf = vec![0u8; HEADER_LEN + body.len() + TAG_LEN];
    buf[HEADER_LEN..HEADER_LEN + body.len()].copy_from_slice(body);
    let fields = HeaderFields {
        kind,
        device,
        scene,
        seq,
        timestamp_ns: seq * 1000,
    };
    let n = seal(
        &mut buf,
        &fields,
        body.len(),
        &SessionKey::new([key; 32]),
        dir,
    )
    .ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Datagrams into an engine serving [`DEVICES`]. Ops: `0` raw bytes, `1`/`2` a sealed
/// datagram, `3` time passes and the engine ticks. Every output batch must survive the bus
/// codec unchanged, and every datagram is either accepted or a counted drop.
pub fn datagram(data: &[u8]) {
    let _ = datagram_engine(data);
}

/// [`datagram`], returning the engine at the end (to check how deep an input reaches).
pub fn datagram_engine(data: &[u8]) -> Engine {
    let config = engine_config();
    let mut engine = Engine::new(config);
    let mut out = Batch::default();
    for (device, scene, key) in DEVICES {
        engine.admit(
            Instant::now(),
            device,
            scene,
            SessionKey::new([key; 32]),
            &mut out,
        );
    }
    let mut handled = 0u64;
    drive(&mut engine, data, &mut out, |engine, out| {
        handled += 1;
        assert_eq!(engine.accepted() + engine.drops().total(), handled);
        assert!(engine.joined() <= engine.sessions());
        assert_codec_round_trip(out);
        out.clear();
    });
    engine
}

/// Runs the ops of a [`datagram`] input on `engine`; `after` sees each handled datagram's
/// result.
fn drive(
    engine: &mut Engine,
    data: &[u8],
    out: &mut Batch,
    mut after: impl FnMut(&Engine, &mut Batch),
) {
    let mut now = Instant::now();
    let mut input = Input(data);
    while let Some(op) = input.byte() {
        let from = SocketAddr::from(([127, 0, 0, 1], 4000 + u16::from(op >> 4)));
        let bytes = match op & 3 {
            0 => {
                let n = usize::from(input.u16().unwrap_or(0) % 1500);
                input.take(n).to_vec()
            }
            1 | 2 => match sealed(&mut input, Direction::ToServer, op & 8 != 0) {
                Some(b) => b,
                None => break,
            },
            _ => {
                now += Duration::from_millis(u64::from(input.byte().unwrap_or(0)) * 16);
                engine.tick(now, out);
                continue;
            }
        };
        let _ = engine.handle(now, from, &bytes, out);
        after(engine, out);
    }
}

/// The bus codec gives back exactly the batch it was given.
fn assert_codec_round_trip(batch: &Batch) {
    let mut back = Batch::default();
    for (_, payload) in codec::encode(batch) {
        codec::decode(&payload, &mut back).expect("the codec refused its own encoding");
    }
    assert_eq!(back.len(), batch.len());
    for ((a, da), (b, db)) in batch.iter().zip(back.iter()) {
        assert_eq!(
            (a.kind, a.scene, a.device, a.addr, da),
            (b.kind, b.scene, b.device, b.addr, db)
        );
    }
}

/// What a device makes of datagrams from its pair: byte 0 even, the rest raw; odd, sealed
/// datagrams built from the rest, each `op | kind | who | seq u16 | len u16 | body` as in
/// [`datagram`] (which must verify, then decode or be refused cleanly).
pub fn client_events(data: &[u8]) {
    let _ = client_events_decoded(data);
}

/// [`client_events`], returning how many events were decoded (to check how deep an input
/// reaches).
pub fn client_events_decoded(data: &[u8]) -> usize {
    let mut input = Input(data);
    let Some(mode) = input.byte() else { return 0 };
    let mut events = std::collections::VecDeque::new();
    if mode & 1 == 0 {
        let key = SessionKey::new([DEVICES[0].2; 32]);
        if let Ok(dg) = Datagram::parse(input.0) {
            if dg.verify(&key, Direction::ToDevice).is_ok() {
                let _ = DeviceEvent::decode_into(&dg, &mut events);
            }
        }
        return events.len();
    }
    let mut decoded = 0;
    // Each datagram: an op byte (as in [`datagram`]; its value is not used), then its fields.
    while input.byte().is_some() {
        let Some(bytes) = sealed(&mut input, Direction::ToDevice, false) else {
            break;
        };
        let Ok(dg) = Datagram::parse(&bytes) else {
            continue;
        };
        // A forged device id has no key here: it must not verify.
        let key = DEVICES.iter().find(|d| d.0 == dg.device());
        let authentic = key.is_some_and(|d| {
            dg.verify(&SessionKey::new([d.2; 32]), Direction::ToDevice)
                .is_ok()
        });
        let before = events.len();
        if authentic && DeviceEvent::decode_into(&dg, &mut events).is_err() {
            assert_eq!(
                events.len(),
                before,
                "a refused datagram left events behind"
            );
        }
        decoded += events.len();
        events.clear();
    }
    decoded
}

/// Deterministic bytes for the controller's keys (splitmix64).
struct Counter(u64);

impl Random for Counter {
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let z = (z ^ (z >> 31)).to_le_bytes();
            chunk.copy_from_slice(&z[..chunk.len()]);
        }
    }
}

/// Control-plane bodies, one per line, 10 ms apart, from a few sources. Before a line that
/// is exactly `#replies`, each line is a request: decoded as the server decodes it, then
/// handled by a controller (cluster token [`TOKEN`]); a refused request must change nothing
/// the controller shows. After it, each line is a reply as the pair's agent decodes it, fed
/// to a registered assignment tracker as the answer to its next call.
pub fn control(data: &[u8]) {
    let _ = control_depth(data);
}

/// [`control`], returning (requests the controller served, commands the tracker emitted).
pub fn control_depth(data: &[u8]) -> (usize, usize) {
    let (mut served, mut commands) = (0, 0);
    let t0 = Instant::now();
    let mut now = t0;
    let mut config = ControlConfig::new(TOKEN);
    config.register.burst = 1000;
    let mut controller = Controller::with_random(config, Box::new(Counter(1)));
    let mut lines = data.split(|&b| b == b'\n');
    for (i, line) in lines.by_ref().enumerate() {
        if line == b"#replies" {
            break;
        }
        now += Duration::from_millis(10);
        let source = Source::V4([10, 0, 0, (i % 3) as u8]);
        let Ok(req) = decode(line) else { continue };
        let before = controller.epoch();
        match controller.handle_from(now, source, req) {
            Ok(_) => served += 1,
            Err(_) => assert_eq!(
                controller.epoch(),
                before,
                "a refused request changed the epoch"
            ),
        }
    }
    let mut tracker = Tracker::new(
        TrackerConfig {
            token: TOKEN.into(),
            region: "eu".into(),
            advertise: SocketAddr::from(([127, 0, 0, 1], 7000)),
            capacity: 100,
            version: "fuzz".into(),
            bus: None,
            bus_key: None,
            requires_fanout: false,
            drain_grace: Duration::from_millis(100),
        },
        now,
    );
    let local = Local::default();
    if tracker.poll_call(now, &local).is_some() {
        let registered = PairRegistered {
            pair: 1,
            epoch: 1,
            heartbeat_ms: 50,
            dead_after_ms: 250,
        };
        tracker.handle_answer(now, Ok(Answer::Registered(registered)), &local);
    }
    for line in lines {
        now += Duration::from_millis(60);
        let Some(call) = tracker.poll_call(now, &local) else {
            continue;
        };
        let answer = decode_reply(line).and_then(|fields| Answer::from_fields(&call, fields));
        tracker.handle_answer(now, answer, &local);
        commands += tracker.take_commands().len();
        let _ = tracker.take_notes();
    }
    (served, commands)
}

/// The replication stream, both ends. Byte 0 selects: `0` a hub reading a subscriber (the
/// rest arrives in chunks whose sizes come from it), `1` a subscriber reading frames from a
/// hub and a standby's mirror applying each batch, `2` one bus payload decoded (round trip)
/// and mirrored.
pub fn stream(data: &[u8]) {
    let _ = stream_depth(data);
}

/// [`stream`], returning how far it got: `1` for a hub that heard a hello, the sessions the
/// mirror holds otherwise.
pub fn stream_depth(data: &[u8]) -> usize {
    let t0 = Instant::now();
    let mut input = Input(data);
    match input.byte().map(|b| b % 3) {
        Some(0) => {
            let mut peer = HubPeer::new(t0);
            let mut buffered = Vec::new();
            while let Some(n) = input.byte() {
                buffered.extend_from_slice(input.take(usize::from(n)));
                if peer.handle_input(t0, &mut buffered, TOKEN).is_err() {
                    return 0;
                }
            }
            usize::from(peer.role().is_some() && peer.wants_checkpoint())
        }
        Some(1) => {
            let link = LinkSession::new(Role::Standby, TOKEN, t0).expect("a short token");
            let mut bytes = input.0.to_vec();
            let mut mirror = Mirrored::new(t0);
            while let Some(from_hub) = link.next_frame(&mut bytes) {
                match from_hub {
                    FromHub::Batch(batch) => mirror.apply(batch),
                    FromHub::Bye | FromHub::Malformed => break,
                }
            }
            mirror.mirror.engine().sessions()
        }
        Some(_) => {
            let mut batch = Batch::default();
            if codec::decode(input.0, &mut batch).is_err() {
                return 0;
            }
            assert_codec_round_trip(&batch);
            let mut mirror = Mirrored::new(t0);
            mirror.apply(batch);
            mirror.mirror.engine().sessions()
        }
        None => 0,
    }
}

/// A standby's mirror with the serving engine beside it, fed decoded batches.
struct Mirrored {
    now: Instant,
    mirror: Mirror,
    serving: Engine,
    out: Batch,
}

impl Mirrored {
    fn new(now: Instant) -> Mirrored {
        let config = engine_config();
        let mut mirror = Mirror::new(config.clone());
        let mut serving = Engine::new(config);
        let mut out = Batch::default();
        mirror.handle_link(now, LinkEvent::Up, &mut serving, &mut out);
        Mirrored {
            now,
            mirror,
            serving,
            out,
        }
    }

    fn apply(&mut self, batch: Batch) {
        self.now += Duration::from_millis(1);
        let event = LinkEvent::Batch(batch);
        self.mirror
            .handle_link(self.now, event, &mut self.serving, &mut self.out);
        assert_codec_round_trip(&self.out);
        self.out.clear();
    }
}

/// A sessions file: what parses must write back to what parses the same.
pub fn sessions_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = SessionsFile::parse(text) {
        let again = SessionsFile::parse(&file.to_json()).expect("its own output refused");
        assert_eq!(again.to_json(), file.to_json());
    }
}
