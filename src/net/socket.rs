//! UDP socket creation with socket2: buffer sizes, optional SO_REUSEPORT, non-blocking.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// Options for a relay socket.
#[derive(Clone, Debug)]
pub struct SocketOptions {
    /// SO_RCVBUF request in bytes (the kernel may clamp it to net.core.rmem_max).
    pub recv_buffer: usize,
    /// SO_SNDBUF request in bytes (clamped to net.core.wmem_max).
    pub send_buffer: usize,
    /// SO_REUSEPORT: several sockets share the port and the kernel spreads datagrams by flow.
    /// Off by default: two pairs started on one port by mistake would silently split traffic.
    pub reuse_port: bool,
}

impl Default for SocketOptions {
    fn default() -> SocketOptions {
        SocketOptions {
            recv_buffer: 4 << 20,
            send_buffer: 4 << 20,
            reuse_port: false,
        }
    }
}

/// Binds a non-blocking UDP socket at `addr`.
pub fn bind_udp(addr: SocketAddr, opts: &SocketOptions) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if opts.reuse_port {
        socket.set_reuse_port(true)?;
    }
    // Buffer sizes are requests; a clamped value is not an error.
    let _ = socket.set_recv_buffer_size(opts.recv_buffer);
    let _ = socket.set_send_buffer_size(opts.send_buffer);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}
