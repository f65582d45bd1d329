#![no_main]
//! See `sync_core::fuzz::enroll_json`: the same function the stable property tests run.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sync_core::fuzz::enroll_json(data));
