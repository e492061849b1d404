//! mcptap-store's integration tests, in one binary: round trips, crashes, decoding, imports from
//! other tools, independent readers, and streaming.
#![allow(clippy::unwrap_used)]

mod bodies;
mod common;
mod crash;
mod decode;
mod heads;
mod import;
mod peers;
mod roundtrip;
mod streaming;
mod v3form;
