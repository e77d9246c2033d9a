//! Fuzz target `client_events`: see `zonecast::fuzz::client_events` (src/fuzz/mod.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zonecast::fuzz::client_events(data));
