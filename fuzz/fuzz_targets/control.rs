//! Fuzz target `control`: see `zonecast::fuzz::control` (src/fuzz/mod.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zonecast::fuzz::control(data));
