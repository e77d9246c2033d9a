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

/// Which of `shards` sockets the kernel steers a datagram of `scene` to: the steering program
/// reads the low byte of the scene field (byte 8 of the payload, little-endian), modulo
/// `shards`, so consecutive scene ids land on consecutive shards.
pub fn shard_of(scene: u32, shards: usize) -> usize {
    ((scene & 0xff) % shards.max(1) as u32) as usize
}

/// Binds `shards` non-blocking UDP sockets to one address with SO_REUSEPORT and attaches a
/// classic BPF program that steers each datagram by its scene, so every datagram of a scene
/// reaches the same socket (and so the same scene state). One socket needs no steering.
pub fn bind_udp_shards(
    addr: SocketAddr,
    opts: &SocketOptions,
    shards: usize,
) -> io::Result<Vec<UdpSocket>> {
    if shards <= 1 {
        return Ok(vec![bind_udp(addr, opts)?]);
    }
    let shared = SocketOptions {
        reuse_port: true,
        ..opts.clone()
    };
    let first = bind_udp(addr, &shared)?;
    let bound = first.local_addr()?;
    attach_scene_steering(&first, shards)?;
    let mut sockets = vec![first];
    for _ in 1..shards {
        sockets.push(bind_udp(bound, &shared)?);
    }
    Ok(sockets)
}

/// `ldb [8]; mod #shards; ret a` as SO_ATTACH_REUSEPORT_CBPF (the program sees the UDP
/// payload). A datagram too short to hold byte 8 makes the program return 0: shard 0 drops it.
fn attach_scene_steering(socket: &UdpSocket, shards: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    const LD_B_ABS: u16 = 0x30;
    const ALU_MOD_K: u16 = 0x94;
    const RET_A: u16 = 0x16;
    let mut filter = [
        libc::sock_filter {
            code: LD_B_ABS,
            jt: 0,
            jf: 0,
            k: 8,
        },
        libc::sock_filter {
            code: ALU_MOD_K,
            jt: 0,
            jf: 0,
            k: shards as u32,
        },
        libc::sock_filter {
            code: RET_A,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prog points at a valid filter array that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_scenes_spread_over_shards() {
        let hits: Vec<usize> = (1..=8).map(|s| shard_of(s, 4)).collect();
        assert_eq!(hits, vec![1, 2, 3, 0, 1, 2, 3, 0]);
        assert_eq!(shard_of(7, 1), 0);
    }
}
