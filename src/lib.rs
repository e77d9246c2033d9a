//! zonecast: a low-latency relay for shared real-time spaces. See ARCHITECTURE.md.
//!
//! Layers, from the wire up: [`wire`] (datagram formats, pure), [`scene`] (relay rules, pure),
//! [`ipc_bus`] (pub-sub between ingest and fanout), [`udp_ingest`] and [`fanout`] (the thin I/O
//! loops), [`pair`] (wires them into a server), [`client`] (the device library).

pub mod client;
pub mod control;
pub mod fanout;
pub mod ipc_bus;
pub mod net;
pub mod pair;
pub mod scene;
pub mod security;
pub mod stats;
pub mod udp_ingest;
pub mod wire;
