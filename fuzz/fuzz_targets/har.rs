//! `cargo +nightly fuzz run har`: see `mcptap_fuzz::har`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcptap_fuzz::har(data));
