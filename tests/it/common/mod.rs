//! Shared test support: loopback servers, a test PKI, third-party peers.
#![allow(dead_code)]

pub mod pki;
