//! Subcommands of the `zonecast` binary. Each returns `Result<(), Failure>`: a message meant
//! for a person and the exit status it ends with (see [`Failure`]).

pub mod config;
pub mod controller;
pub mod device;
pub mod keygen;
pub mod logging;
pub mod operator;
pub mod pair;
pub mod sessions;
pub mod signals;
pub mod split;
pub mod up;

use std::time::Duration;

/// Exit status: a run that failed after it started (a thread stopped, an I/O error).
pub const EXIT_FAILED: i32 = 1;
/// Exit status: invalid usage or configuration (clap's own code for usage errors too).
pub const EXIT_USAGE: i32 = 2;
/// Exit status: the controller refused for good (a wrong token, a value it rejects).
pub const EXIT_REFUSED: i32 = 3;

/// Why a command ended unsuccessfully, and the exit status that says so. A plain `String`
/// error is a run-time failure ([`EXIT_FAILED`]).
#[derive(Debug)]
pub struct Failure {
    pub status: i32,
    pub message: String,
}

impl Failure {
    /// Invalid usage or configuration: retrying the same command cannot succeed.
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            status: EXIT_USAGE,
            message: message.into(),
        }
    }

    /// Refused for good by the controller.
    pub fn refused(message: impl Into<String>) -> Failure {
        Failure {
            status: EXIT_REFUSED,
            message: message.into(),
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            status: EXIT_FAILED,
            message,
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        Failure::from(message.to_string())
    }
}

/// Formats a duration in microseconds with one decimal.
pub fn micros(d: Duration) -> String {
    format!("{:.1}us", d.as_nanos() as f64 / 1000.0)
}

/// Numbers separated by commas (`1.5,0,-2`), for flags that take a vector; each part's error
/// names it.
pub fn parse_floats(s: &str) -> Result<Vec<f32>, String> {
    s.split(',')
        .map(|p| p.trim().parse::<f32>().map_err(|e| format!("{p:?}: {e}")))
        .collect()
}
