//! Where the controller's randomness comes from (session keys): the operating system's CSPRNG in
//! production, a seeded generator in tests and the simulation, so that one seed replays one
//! run exactly. The controller never reads OS randomness any other way.

use crate::wire::SessionKey;

/// A source of random bytes.
pub trait Random: Send {
    fn fill(&mut self, out: &mut [u8]);

    /// A fresh session key.
    fn session_key(&mut self) -> SessionKey {
        let mut raw = [0u8; 32];
        self.fill(&mut raw);
        SessionKey::new(raw)
    }
}

/// The operating system's CSPRNG (getrandom).
#[derive(Clone, Copy, Debug, Default)]
pub struct OsRandom;

impl Random for OsRandom {
    fn fill(&mut self, out: &mut [u8]) {
        getrandom::getrandom(out).expect("the operating system's random source failed");
    }
}
