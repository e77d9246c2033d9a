//! zonecast: a low-latency relay for shared real-time spaces. See ARCHITECTURE.md.
//!
//! Layers, from the wire up: [`wire`] (datagram formats, pure), [`scene`] (relay rules and
//! their output events, pure), [`ipc_bus`] (pub-sub between ingest and fanout), [`stats`]
//! (counters), [`udp_ingest`] and [`fanout`] (the thin I/O loops), [`replication`] (the pair's
//! cluster side: pure cores and stream drivers), [`control`] (the controller, pure, and its
//! ZeroMQ server and client), [`pair`] (wires them into a server), [`client`] (the device
//! library), [`zones`] (scene geometry and zone assignment, pure); [`net`] and [`security`]
//! serve them all.

pub mod client;
pub mod control;
pub mod fanout;
#[doc(hidden)]
pub mod fuzz;
pub mod ipc_bus;
pub mod logs;
pub mod net;
pub mod pair;
pub mod replication;
pub mod scene;
pub mod security;
pub mod stats;
pub mod udp_ingest;
pub mod wire;
pub mod zones;
