//! One stream connection as the hub and the link use it: a TCP or Unix socket, plain or under
//! a Noise channel (`security::noise`), with what was read but not yet decrypted and what was
//! sealed but not yet written. Frames (see the module above) are plaintext; this layer only
//! moves bytes.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::security::noise::Channel;

/// Ciphertext a connection may hold before it is a whole record (a record is at most
/// 2 + 65535 bytes).
const MAX_WIRE: usize = 2 + crate::security::noise::MAX_RECORD;

pub(super) enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    fn io(&mut self) -> &mut dyn ReadWrite {
        match self {
            Socket::Tcp(s) => s,
            Socket::Unix(s) => s,
        }
    }

    pub(super) fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_nonblocking(on),
            Socket::Unix(s) => s.set_nonblocking(on),
        }
    }

    pub(super) fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_read_timeout(Some(t)),
            Socket::Unix(s) => s.set_read_timeout(Some(t)),
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// What one read brought.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Got {
    /// Bytes arrived (plaintext may still be empty: a partial record, a handshake step).
    Data,
    /// Nothing to read now.
    Idle,
    /// The peer closed the stream.
    Closed,
}

pub(super) struct Conn {
    socket: Socket,
    channel: Option<Channel>,
    /// Ciphertext read but not yet a whole record.
    wire: Vec<u8>,
    /// Bytes (sealed when encrypted) the socket has not taken yet.
    pending: Vec<u8>,
    /// Reused buffer for sealing.
    sealed: Vec<u8>,
}

impl Conn {
    pub(super) fn new(socket: Socket, channel: Option<Channel>) -> Conn {
        Conn {
            socket,
            channel,
            wire: Vec::new(),
            pending: Vec::new(),
            sealed: Vec::new(),
        }
    }

    /// Whether frames can flow (always for a plain connection).
    pub(super) fn is_ready(&self) -> bool {
        self.channel.as_ref().is_none_or(Channel::is_ready)
    }

    /// Bytes waiting for the socket.
    pub(super) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Reads once into `buf` and appends the plaintext to `plain`; a handshake answer is
    /// queued for writing. A record that does not decrypt is an `InvalidData` error.
    pub(super) fn read_into(&mut self, buf: &mut [u8], plain: &mut Vec<u8>) -> io::Result<Got> {
        let n = match self.socket.io().read(buf) {
            Ok(0) => return Ok(Got::Closed),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Got::Idle)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Got::Idle),
            Err(e) => return Err(e),
        };
        let Some(channel) = &mut self.channel else {
            plain.extend_from_slice(&buf[..n]);
            return Ok(Got::Data);
        };
        self.wire.extend_from_slice(&buf[..n]);
        let mut reply = Vec::new();
        channel
            .open(&mut self.wire, plain, &mut reply)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        // What is left is less than one record.
        debug_assert!(self.wire.len() < MAX_WIRE);
        if !reply.is_empty() {
            self.send_raw(&reply)?;
        }
        Ok(Got::Data)
    }

    /// Seals `bytes` when encrypted and writes what the socket takes now, queueing the rest.
    pub(super) fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.channel {
            Some(channel) => {
                let mut sealed = std::mem::take(&mut self.sealed);
                sealed.clear();
                let result = channel
                    .seal(bytes, &mut sealed)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
                    .and_then(|_| self.send_raw(&sealed));
                self.sealed = sealed;
                result
            }
            None => self.send_raw(bytes),
        }
    }

    /// Raw bytes (never sealed: a handshake record) after whatever is pending.
    pub(super) fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.pending.is_empty() {
            let n = write_some(self.socket.io(), bytes)?;
            self.pending.extend_from_slice(&bytes[n..]);
        } else {
            self.pending.extend_from_slice(bytes);
        }
        Ok(())
    }

    /// Writes what it can of the pending bytes.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            let n = write_some(self.socket.io(), &self.pending)?;
            self.pending.drain(..n);
        }
        Ok(())
    }
}

/// Writes as much of `bytes` as the socket takes now (all of it on a blocking socket).
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
