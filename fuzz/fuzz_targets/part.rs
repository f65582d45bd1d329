#![no_main]
//! See `sync_core::fuzz::part`: the same function the stable property tests run.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sync_core::fuzz::part(data));
