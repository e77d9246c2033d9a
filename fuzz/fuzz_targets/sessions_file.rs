//! Fuzz target `sessions_file`: see `zonecast::fuzz::sessions_file` (src/fuzz/mod.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zonecast::fuzz::sessions_file(data));
