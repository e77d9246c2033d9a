//! Replication and the pair's cluster side: the pure cores that decide, and the thin drivers
//! that move bytes.
//!
//! Pure (handle_*(now, input) / poll_*(); no sockets, threads, clock reads or OS randomness):
//! - [`assignment`]: the pair's life cycle with the controller and what its assignment means
//!   (register, heartbeat, apply, fence, drain), emitting [`SessionCommand`]s;
//! - [`mirror`]: a standby's mirror of one primary (connecting, syncing, synced, lost,
//!   diverged) and the mirror engine it keeps;
//! - [`peer`]: the replication stream's peer protocol at both ends (hello and token, role,
//!   heartbeats and their deadline, checkpoint first, backlog limit, bye vs lost);
//! - [`held`]: datagrams of devices that arrive before their scene does (a drain's target).
//!
//! Drivers: [`stream`] (the hub and links over TCP/Unix sockets, Noise on tcp), [`replica`]
//! (the hub and the mirrors on the ingest thread), [`neighbours`] (the region bus: links to
//! the pairs serving other zones of shared scenes, feeding proxies). The agent thread around [`assignment`] is
//! `pair/agent.rs`. The seeded simulation (`tests/sim/`) runs these cores with the controller
//! and scene engines on a virtual clock.

pub mod assignment;
mod command;
pub mod held;
pub mod mirror;
pub mod neighbours;
pub mod peer;
pub mod replica;
pub mod stream;

pub use command::SessionCommand;
pub use replica::{Replica, ReplicaStatus};
