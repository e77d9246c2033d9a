//! Subcommands of the `zonecast` binary. Each returns `Result<(), String>` with a message
//! meant for a person.

pub mod controller;
pub mod device;
pub mod keygen;
pub mod operator;
pub mod pair;
pub mod sessions;
pub mod split;
pub mod up;

use std::time::Duration;

/// Formats a duration in microseconds with one decimal.
pub fn micros(d: Duration) -> String {
    format!("{:.1}us", d.as_nanos() as f64 / 1000.0)
}
