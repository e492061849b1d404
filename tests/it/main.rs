//! mcptap's integration tests: one binary, real servers on loopback, real TLS.
#![allow(clippy::unwrap_used)]

mod common;
