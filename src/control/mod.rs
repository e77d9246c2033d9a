//! The control plane: the controller's state machine (pure), its registration limits (pure),
//! its ZeroMQ server and counters, and the lazy-pirate client used by pairs, devices and the
//! CLI.

pub mod client;
pub mod limits;
pub mod protocol;
pub mod random;
pub mod replica;
pub mod server;
mod state;
pub mod stats;
pub mod store;

pub use protocol::{ControlError, ErrorCode, Load, MirrorReport, MirrorState, Reply, Request};
pub use state::{
    Cause, Change, Config, Controller, Entry, Image, LiveView, ProbeOutcome, MOVE_GRACE,
};

#[cfg(test)]
mod durable_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod zone_tests;
