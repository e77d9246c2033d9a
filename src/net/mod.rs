//! Socket plumbing shared by ingest, fanout, the control plane and the client: socket2 set-up
//! and batched recvmmsg/sendmmsg over caller-owned, reused buffers (Linux); the libzmq context
//! and socket bounds ([`zeromq`]); the Prometheus endpoint ([`metrics`]).

pub mod histogram;
pub mod metrics;
pub mod mmsg;
mod socket;
pub mod zeromq;

pub use socket::{bind_udp, bind_udp_shards, shard_of, SocketOptions};

/// Wall clock in nanoseconds since the Unix epoch (the wire's timestamp unit).
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
