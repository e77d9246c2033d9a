//! The control plane: the controller's state machine (pure), its ZeroMQ server, and the
//! lazy-pirate client used by pairs, devices and the CLI.

pub mod client;
pub mod protocol;
pub mod server;
mod state;

pub use protocol::{ControlError, ErrorCode, Load, MirrorReport, Request};
pub use state::{Change, Config, Controller};

#[cfg(test)]
mod tests;
