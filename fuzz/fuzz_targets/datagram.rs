//! Fuzz target `datagram`: see `zonecast::fuzz::datagram` (src/fuzz/mod.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zonecast::fuzz::datagram(data));
