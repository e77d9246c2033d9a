//! Batched datagram I/O with recvmmsg(2) and sendmmsg(2).
//!
//! Both batches own their buffers, address slots and message headers, allocated once; the
//! kernel writes into or reads from them in place, so a burst of datagrams costs one syscall
//! and no allocation. The header arrays hold raw pointers into the batch's own heap buffers,
//! which never move after construction (the Vecs are never resized).

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use socket2::SockAddr;

/// Receive buffer per datagram: larger than the protocol maximum so that an oversized
/// datagram is seen (and counted) as oversized rather than silently cut.
pub const RECV_BUF: usize = 2048;
/// Send buffer per datagram.
pub const SEND_BUF: usize = crate::wire::MAX_DATAGRAM;

/// Converts a kernel socket address; `None` for families other than IPv4/IPv6.
fn to_socket_addr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, and storage is larger.
            let sin: &libc::sockaddr_in = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                port,
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// One received datagram.
pub struct Received<'a> {
    pub from: Option<SocketAddr>,
    pub bytes: &'a [u8],
    /// The datagram was larger than [`RECV_BUF`] and was cut.
    pub truncated: bool,
}

/// Buffers, address slots, iovecs and message headers for `count` datagrams of `BUF` bytes,
/// allocated once and wired together; what recvmmsg and sendmmsg both need.
struct Slots<const BUF: usize> {
    bufs: Vec<[u8; BUF]>,
    addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers only point into the slots' own heap allocations, which move with them.
unsafe impl<const BUF: usize> Send for Slots<BUF> {}

impl<const BUF: usize> Slots<BUF> {
    fn new(count: usize) -> Slots<BUF> {
        let count = count.max(1);
        let mut s = Slots {
            bufs: vec![[0u8; BUF]; count],
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
            addrs: vec![unsafe { mem::zeroed() }; count],
            iovecs: Vec::with_capacity(count),
            hdrs: Vec::with_capacity(count),
        };
        for i in 0..count {
            s.iovecs.push(libc::iovec {
                iov_base: s.bufs[i].as_mut_ptr().cast(),
                iov_len: BUF,
            });
        }
        for i in 0..count {
            // SAFETY: mmsghdr is plain old data; the pointers are set right below.
            let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
            h.msg_hdr.msg_name = (&mut s.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_iov = &mut s.iovecs[i];
            h.msg_hdr.msg_iovlen = 1;
            s.hdrs.push(h);
        }
        s
    }
}

/// A reusable recvmmsg batch.
pub struct RecvBatch {
    slots: Slots<RECV_BUF>,
    filled: usize,
}

impl RecvBatch {
    pub fn new(count: usize) -> RecvBatch {
        RecvBatch {
            slots: Slots::new(count),
            filled: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.hdrs.len()
    }

    /// Receives up to `capacity` datagrams without blocking. `WouldBlock` when none is queued.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for h in &mut self.slots.hdrs {
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        loop {
            // SAFETY: hdrs points at buffers owned by self, sized as declared.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    self.slots.hdrs.as_mut_ptr(),
                    self.slots.hdrs.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                self.filled = n as usize;
                return Ok(self.filled);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                self.filled = 0;
                return Err(err);
            }
        }
    }

    /// The `i`-th datagram of the last `recv`.
    pub fn get(&self, i: usize) -> Received<'_> {
        let h = &self.slots.hdrs[i];
        let len = (h.msg_len as usize).min(RECV_BUF);
        Received {
            from: to_socket_addr(&self.slots.addrs[i]),
            bytes: &self.slots.bufs[i][..len],
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        }
    }

    pub fn len(&self) -> usize {
        self.filled
    }

    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }
}

/// What a flush did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    pub sent: u64,
    /// UDP payload bytes of the datagrams sent.
    pub bytes: u64,
    /// Dropped because the socket's send buffer stayed full.
    pub buffer_full: u64,
    /// Dropped because the kernel refused that one destination (unreachable, refused, ...).
    pub refused: u64,
}

/// A reusable sendmmsg batch.
pub struct SendBatch {
    slots: Slots<SEND_BUF>,
    queued: usize,
}

/// How long a flush waits, in total, for a full send buffer to drain before dropping.
const FULL_WAIT_MS: i32 = 2;

impl SendBatch {
    pub fn new(count: usize) -> SendBatch {
        SendBatch {
            slots: Slots::new(count),
            queued: 0,
        }
    }

    pub fn is_full(&self) -> bool {
        self.queued == self.slots.hdrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// The buffer of the next datagram; call `commit` once it is written. The caller flushes
    /// first when the batch is full.
    pub fn next_buf(&mut self) -> &mut [u8; SEND_BUF] {
        let last = self.slots.bufs.len() - 1;
        &mut self.slots.bufs[self.queued.min(last)]
    }

    /// Queues the datagram written into `next_buf` for `to`.
    pub fn commit(&mut self, len: usize, to: SocketAddr) {
        let to = SockAddr::from(to);
        let i = self.queued;
        if i == self.slots.hdrs.len() {
            return;
        }
        let alen = (to.len() as usize).min(mem::size_of::<libc::sockaddr_storage>());
        // SAFETY: copying alen bytes from a valid sockaddr into our storage slot.
        unsafe {
            std::ptr::copy_nonoverlapping(
                to.as_ptr().cast::<u8>(),
                (&mut self.slots.addrs[i] as *mut libc::sockaddr_storage).cast::<u8>(),
                alen,
            );
        }
        self.slots.iovecs[i].iov_len = len.min(SEND_BUF);
        self.slots.hdrs[i].msg_hdr.msg_namelen = alen as libc::socklen_t;
        self.queued += 1;
    }

    /// Sends everything queued. Never blocks longer than a couple of milliseconds: a full send
    /// buffer drops the rest of the batch, a refused destination drops only its datagram.
    pub fn flush(&mut self, fd: RawFd) -> FlushReport {
        let mut report = FlushReport::default();
        let mut at = 0;
        let mut waited = 0;
        while at < self.queued {
            // SAFETY: hdrs[at..queued] point at buffers owned by self.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.slots.hdrs[at..].as_mut_ptr(),
                    (self.queued - at) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                let done = at + n as usize;
                report.bytes += self.slots.iovecs[at..done]
                    .iter()
                    .map(|v| v.iov_len as u64)
                    .sum::<u64>();
                at = done;
                report.sent += n as u64;
                continue;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) if waited < FULL_WAIT_MS => {
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, 1) };
                    waited += 1;
                }
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                    report.buffer_full += (self.queued - at) as u64;
                    break;
                }
                _ => {
                    report.refused += 1;
                    at += 1;
                }
            }
        }
        self.queued = 0;
        report
    }
}
