//! `cargo +nightly fuzz run journal`: see `mcptap_fuzz::journal`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcptap_fuzz::journal(data));
