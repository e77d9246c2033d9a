//! A simulated device: the real roaming policy (`client::RoamPolicy`), real sealed datagrams
//! (`wire::seal`), and what a device does with what its pair tells it: follow redirects,
//! re-join, remember the newest update it saw of every object.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use zerocopy::IntoBytes;
use zonecast::client::{Area, RoamPolicy};
use zonecast::wire::{
    seal, Direction, Fields, HeaderFields, JoinBody, Kind, ObjectBody, SessionKey, HEADER_LEN,
    MASK_TRANSLATION, MAX_DATAGRAM,
};

pub struct Device {
    pub id: u32,
    pub scene: u32,
    pub key: SessionKey,
    pub addr: SocketAddr,
    /// The pair it talks to, and the epoch it follows.
    pub pair: SocketAddr,
    pub epoch: u64,
    pub seq: u64,
    pub policy: RoamPolicy,
    /// When its pair last answered its own datagrams (keepalive ack, snapshot).
    pub last_answered: Option<Instant>,
    pub join_pending: Option<Instant>,
    /// A snapshot answered its last join at its current pair.
    pub joined: bool,
    /// The locate in flight: (call id, give-up time µs).
    pub locate: Option<(u64, u64)>,
    pub next_update: u64,
    /// Updates it sent of its own object.
    pub written: u64,
    /// The newest sequence seen per (scene, object), and when (µs).
    pub seen: BTreeMap<(u32, u64), (u64, u64)>,
    /// Its interest area (revision 2), or `None`: everything.
    pub area: Option<Area>,
    /// In a scene whose zones two pairs serve, a device with an area walks with its object
    /// (its anchor follows it) while faults run, crossing between the pairs' halves.
    pub walks: bool,
}

/// Radius of the circle every device's object moves on, around the origin.
pub const CIRCLE: f32 = 50.0;

/// Where device `id`'s object is after its `written`-th update: on the circle, each device
/// from its own angle at its own speed (0.02 to 0.08 rad per update), so objects walk in and
/// out of the fixed interest spheres.
pub fn position(id: u32, written: u64) -> [f32; 3] {
    let a = written as f32 * 0.02 * (1 + id % 4) as f32 + id as f32;
    [CIRCLE * a.cos(), CIRCLE * a.sin(), 0.0]
}

impl Device {
    /// A sealed datagram of `kind` with `body`, numbered next.
    pub fn datagram(&mut self, kind: Kind, body: &[u8], now_ns: u64) -> Vec<u8> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        buf[HEADER_LEN..HEADER_LEN + body.len()].copy_from_slice(body);
        let fields = HeaderFields {
            kind,
            device: self.id,
            scene: self.scene,
            seq: self.seq,
            timestamp_ns: now_ns,
        };
        self.seq += 1;
        let len = seal(
            &mut buf,
            &fields,
            body.len(),
            &self.key,
            Direction::ToServer,
        )
        .expect("a small body fits");
        buf.truncate(len);
        buf
    }

    pub fn join(&mut self, now: Instant, now_ns: u64) -> Vec<u8> {
        self.join_pending = Some(now);
        self.joined = false;
        match self.area {
            Some(area) => {
                let mut body = vec![0u8; area.len()];
                area.emit(&mut body).expect("sized");
                self.datagram(Kind::Join, &body, now_ns)
            }
            None => {
                let body = JoinBody {
                    interest_radius: 0.0f32.into(),
                    reserved: 0.into(),
                };
                self.datagram(Kind::Join, body.as_bytes(), now_ns)
            }
        }
    }

    /// Moves its own object (object id = device id) one step.
    pub fn update(&mut self, now_ns: u64) -> Vec<u8> {
        self.written += 1;
        let fields = Fields {
            translation: position(self.id, self.written),
            ..Fields::default()
        };
        let body = ObjectBody::new(u64::from(self.id), MASK_TRANSLATION, fields, &[]);
        let mut b = vec![0u8; body.len()];
        body.emit(&mut b).expect("sized");
        self.datagram(Kind::ObjectUpdate, &b, now_ns)
    }

    /// A keepalive, carrying its anchor when it has an area (as the client does).
    pub fn keepalive(&mut self, now_ns: u64) -> Vec<u8> {
        match self.area {
            Some(area) => {
                let mut body = [0u8; 12];
                zonecast::wire::interest::emit_anchor(area.anchor, &mut body).expect("sized");
                self.datagram(Kind::Keepalive, &body, now_ns)
            }
            None => self.datagram(Kind::Keepalive, &[], now_ns),
        }
    }

    /// Moves its anchor to where its object is now; the keepalive that tells its pair.
    pub fn walk(&mut self, now_ns: u64) -> Option<Vec<u8>> {
        let area = self.area.as_mut()?;
        area.anchor = position(self.id, self.written);
        Some(self.keepalive(now_ns))
    }

    /// Switches to the pair at `to` (a redirect or a locate) and joins there.
    pub fn move_to(&mut self, to: SocketAddr, epoch: u64, now: Instant, now_ns: u64) -> Vec<u8> {
        self.pair = to;
        self.epoch = self.epoch.max(epoch);
        self.join(now, now_ns)
    }
}
