//! `cargo +nightly fuzz run redact`: see `mcptap_fuzz::redact`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcptap_fuzz::redact(data));
