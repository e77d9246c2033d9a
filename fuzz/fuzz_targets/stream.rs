//! Fuzz target `stream`: see `zonecast::fuzz::stream` (src/fuzz/mod.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zonecast::fuzz::stream(data));
