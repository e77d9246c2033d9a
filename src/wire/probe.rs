//! Probes: the controller's direct check of a suspect pair (docs/PROTOCOL.md, "Probe").
//!
//! A probe is one 48-byte datagram to the pair's data port, the usual 32-byte header (kind
//! 13, `device` = the pair id probed, `seq` = a nonce) and a 16-byte tag; the pair's ingest
//! thread answers with a probe ack (kind 14, `device` = the id it is registered under,
//! `scene` = 1 serving or 2 not serving, `seq` and `timestamp_ns` echoed). Both tags are
//! HMAC-SHA256 over the header, truncated to 16 bytes, under a key derived from the cluster
//! token, so only the controller can probe and only the pair can answer; the kind is inside
//! the tag, so a probe cannot be reflected back as an answer. An answer is no larger than the
//! probe, so a replayed probe reflects one datagram for one, never more.

use ring::hmac;
use subtle::ConstantTimeEq;
use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use super::{Header, HEADER_LEN, MAGIC, TAG_LEN, VERSION};

/// Header byte 3 of a probe (controller to pair).
pub const PROBE: u8 = 13;
/// Header byte 3 of a probe's answer (pair to controller).
pub const PROBE_ACK: u8 = 14;
/// Size of a probe and of its answer.
pub const PROBE_LEN: usize = HEADER_LEN + TAG_LEN;
/// `scene` of an answer from a pair that serves.
pub const SERVING: u32 = 1;
/// `scene` of an answer from a pair that cannot relay (a split pair's ingest whose fanout
/// half is gone).
pub const NOT_SERVING: u32 = 2;

/// The probes' MAC key: HMAC-SHA256 keyed with "zonecast probe v1" over the cluster token.
pub struct ProbeKey(hmac::Key);

impl ProbeKey {
    pub fn from_token(token: &str) -> ProbeKey {
        let label = hmac::Key::new(hmac::HMAC_SHA256, b"zonecast probe v1");
        let derived = hmac::sign(&label, token.as_bytes());
        ProbeKey(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }

    fn tag(&self, header: &[u8]) -> [u8; TAG_LEN] {
        let full = hmac::sign(&self.0, header);
        let mut tag = [0; TAG_LEN];
        tag.copy_from_slice(&full.as_ref()[..TAG_LEN]);
        tag
    }
}

/// A probe of pair `pair`; `nonce` below 2^56, `timestamp_ns` the sender's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub pair: u32,
    pub nonce: u64,
    pub timestamp_ns: u64,
}

/// An answer: who answered, to which probe, and whether it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeAck {
    pub pair: u32,
    pub nonce: u64,
    pub serving: bool,
}

/// Whether `bytes` looks like a probe (a cheap check before [`read_probe`]).
pub fn is_probe(bytes: &[u8]) -> bool {
    bytes.len() == PROBE_LEN && bytes[3] == PROBE
}

fn write(key: &ProbeKey, kind: u8, device: u32, scene: u32, seq: u64, ts: u64) -> [u8; PROBE_LEN] {
    let header = Header {
        magic: MAGIC,
        version: VERSION,
        kind,
        device: U32::new(device),
        scene: U32::new(scene),
        seq: U64::new(seq & super::MAX_SEQ),
        timestamp_ns: U64::new(ts),
        body_len: U16::new(0),
        flags: U16::new(0),
    };
    let mut out = [0; PROBE_LEN];
    out[..HEADER_LEN].copy_from_slice(header.as_bytes());
    out[HEADER_LEN..].copy_from_slice(&key.tag(header.as_bytes()));
    out
}

/// The header of a well-formed, authentic datagram of `kind`, or `None`.
fn read(key: &ProbeKey, kind: u8, bytes: &[u8]) -> Option<Header> {
    if bytes.len() != PROBE_LEN {
        return None;
    }
    let (signed, tag) = bytes.split_at(HEADER_LEN);
    let header = Header::read_from_bytes(signed).ok()?;
    let framed = header.magic == MAGIC
        && header.version == VERSION
        && header.kind == kind
        && header.body_len.get() == 0
        && header.flags.get() == 0;
    (framed && bool::from(key.tag(signed).ct_eq(tag))).then_some(header)
}

pub fn write_probe(key: &ProbeKey, p: &Probe) -> [u8; PROBE_LEN] {
    write(key, PROBE, p.pair, 0, p.nonce, p.timestamp_ns)
}

/// The probe in `bytes` if it is one and authentic.
pub fn read_probe(key: &ProbeKey, bytes: &[u8]) -> Option<Probe> {
    let h = read(key, PROBE, bytes).filter(|h| h.scene.get() == 0)?;
    Some(Probe {
        pair: h.device.get(),
        nonce: h.seq.get(),
        timestamp_ns: h.timestamp_ns.get(),
    })
}

/// The answer to `probe` from the pair registered as `pair` (0: not registered).
pub fn write_ack(key: &ProbeKey, probe: &Probe, pair: u32, serving: bool) -> [u8; PROBE_LEN] {
    let state = if serving { SERVING } else { NOT_SERVING };
    write(key, PROBE_ACK, pair, state, probe.nonce, probe.timestamp_ns)
}

/// The answer in `bytes` if it is one and authentic.
pub fn read_ack(key: &ProbeKey, bytes: &[u8]) -> Option<ProbeAck> {
    let h = read(key, PROBE_ACK, bytes)?;
    let serving = match h.scene.get() {
        SERVING => true,
        NOT_SERVING => false,
        _ => return None,
    };
    Some(ProbeAck {
        pair: h.device.get(),
        nonce: h.seq.get(),
        serving,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worked_example_of_docs_protocol_holds() {
        let key = ProbeKey::from_token("test-token");
        let p = Probe {
            pair: 2,
            nonce: 1,
            timestamp_ns: 0,
        };
        assert_eq!(
            hex::encode(write_probe(&key, &p)),
            "5a43010d020000000000000001000000000000000000000000000000000000007a4653ea6fbf58c40f2baecf0cfbc521"
        );
        assert_eq!(
            hex::encode(write_ack(&key, &p, 2, true)),
            "5a43010e02000000010000000100000000000000000000000000000000000000e2e1d750ab9217027977c57ba26bd41e"
        );
    }

    #[test]
    fn a_probe_and_its_answer_round_trip_and_nothing_else_passes() {
        let key = ProbeKey::from_token("secret");
        let p = Probe {
            pair: 7,
            nonce: 0x00ab_cdef_0123_4567,
            timestamp_ns: 99,
        };
        let probe = write_probe(&key, &p);
        assert!(is_probe(&probe));
        assert_eq!(read_probe(&key, &probe), Some(p));
        let ack = write_ack(&key, &p, 7, true);
        assert!(!is_probe(&ack));
        let expect = ProbeAck {
            pair: 7,
            nonce: p.nonce,
            serving: true,
        };
        assert_eq!(read_ack(&key, &ack), Some(expect));
        assert_eq!(
            read_ack(&key, &write_ack(&key, &p, 3, false)).map(|a| (a.pair, a.serving)),
            Some((3, false))
        );
        // A probe is not an answer and an answer is not a probe.
        assert_eq!(read_ack(&key, &probe), None);
        assert_eq!(read_probe(&key, &ack), None);
        // Another token's key, any flipped bit, any other length: refused.
        assert_eq!(read_probe(&ProbeKey::from_token("other"), &probe), None);
        for i in 0..PROBE_LEN {
            let mut b = probe;
            b[i] ^= 1;
            assert_eq!(read_probe(&key, &b), None, "byte {i}");
        }
        assert_eq!(read_probe(&key, &probe[..PROBE_LEN - 1]), None);
        assert_eq!(read_ack(&key, &[]), None);
    }
}
