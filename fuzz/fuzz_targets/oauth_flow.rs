//! `cargo +nightly fuzz run oauth_flow`: see `mcptap_fuzz::oauth_flow`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcptap_fuzz::oauth_flow(data));
