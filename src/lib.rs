//! zonecast: a low-latency relay for shared real-time spaces. See ARCHITECTURE.md.

pub mod ipc_bus;
pub mod scene;
pub mod wire;
