//! Shared test support: loopback servers, a test PKI, third-party peers.
#![allow(dead_code)]

pub mod client;
pub mod npm;
pub mod peers;
pub mod pki;
pub mod proxy;
pub mod python;
pub mod ts_server;
pub mod upstream;
