//! Bundles: several object datagrams' bodies for one device in one datagram (server to
//! device). Fanout bundles only what is already queued for a device in the same burst, so
//! bundling never delays an update; it saves a syscall and a tag per extra update under load.
//!
//! Body: entries back to back, each `kind (u8) | reserved (u8) | len (u16 LE) | object body`,
//! where kind is ObjectUpdate, ObjectOverwrite, ObjectDelete or (revision 2) ObjectLeft.

use super::{Kind, WireError};

/// Bytes in front of each entry.
pub const ENTRY_HEAD: usize = 4;

/// Writes entries into a bundle body.
pub struct BundleWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    count: usize,
}

impl<'a> BundleWriter<'a> {
    /// A writer over `buf` (the body area of a datagram).
    pub fn new(buf: &'a mut [u8]) -> BundleWriter<'a> {
        BundleWriter {
            buf,
            len: 0,
            count: 0,
        }
    }

    /// Whether an entry with a body of `len` bytes still fits.
    pub fn fits(&self, len: usize) -> bool {
        self.len + ENTRY_HEAD + len <= self.buf.len()
    }

    /// Appends an entry; false (and nothing written) if it does not fit.
    pub fn push(&mut self, kind: Kind, body: &[u8]) -> bool {
        if !self.fits(body.len()) || body.len() > u16::MAX as usize {
            return false;
        }
        let at = self.len;
        self.buf[at] = kind as u8;
        self.buf[at + 1] = 0;
        self.buf[at + 2..at + 4].copy_from_slice(&(body.len() as u16).to_le_bytes());
        self.buf[at + ENTRY_HEAD..at + ENTRY_HEAD + body.len()].copy_from_slice(body);
        self.len += ENTRY_HEAD + body.len();
        self.count += 1;
        true
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn count(&self) -> usize {
        self.count
    }
}

/// Iterates the entries of a bundle body: (kind, object body). Yields an error and stops on a
/// malformed entry.
pub fn entries(body: &[u8]) -> Entries<'_> {
    Entries { rest: body }
}

pub struct Entries<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<(Kind, &'a [u8]), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = self.rest;
        let fail = |e| Some(Err(e));
        if r.len() < ENTRY_HEAD {
            self.rest = &[];
            return fail(WireError::Truncated);
        }
        let len = usize::from(u16::from_le_bytes([r[2], r[3]]));
        let kind = Kind::from_u8(r[0]).filter(|k| k.is_object() || *k == Kind::ObjectLeft);
        let Some(kind) = kind.filter(|_| r[1] == 0) else {
            self.rest = &[];
            return fail(WireError::Malformed);
        };
        if r.len() < ENTRY_HEAD + len {
            self.rest = &[];
            return fail(WireError::Truncated);
        }
        self.rest = &r[ENTRY_HEAD + len..];
        Some(Ok((kind, &r[ENTRY_HEAD..ENTRY_HEAD + len])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let mut buf = [0u8; 20];
        let mut w = BundleWriter::new(&mut buf);
        assert!(w.push(Kind::ObjectUpdate, &[1, 2, 3]));
        assert!(w.push(Kind::ObjectDelete, &[4]));
        assert!(!w.push(Kind::ObjectUpdate, &[0; 9]), "does not fit");
        assert_eq!((w.count(), w.len()), (2, 12));
        let got: Vec<_> = entries(&buf[..12]).map(Result::unwrap).collect();
        assert_eq!(
            got,
            vec![
                (Kind::ObjectUpdate, &[1u8, 2, 3][..]),
                (Kind::ObjectDelete, &[4u8][..])
            ]
        );
        // A cut entry and a non-object kind are errors.
        assert!(entries(&buf[..11]).any(|e| e.is_err()));
        let mut bad = buf;
        bad[0] = Kind::Snapshot as u8;
        assert!(entries(&bad[..12]).next().unwrap().is_err());
    }
}
