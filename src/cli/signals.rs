//! SIGTERM and SIGINT for long-running commands: the first one asks for a graceful stop (a
//! flag the command's loop polls: a pair drains, the controller hands over, a device leaves);
//! a second one ends the process at once with status 128 + the signal's number (143 for
//! SIGTERM, 130 for SIGINT), for an operator who does not want to wait.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};

/// Whether a stop was asked for.
pub struct Signals {
    flag: Arc<AtomicBool>,
}

impl Signals {
    /// Installs the handlers (call once per process).
    pub fn install() -> Result<Signals, String> {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [SIGTERM, SIGINT] {
            // Registered first, so it sees the flag as the previous signal left it.
            signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, flag.clone())
                .and_then(|_| signal_hook::flag::register(signal, flag.clone()))
                .map_err(|e| format!("cannot handle signal {signal}: {e}"))?;
        }
        Ok(Signals { flag })
    }

    /// A first SIGTERM or SIGINT arrived.
    pub fn received(&self) -> bool {
        self.flag.load(Relaxed)
    }
}
