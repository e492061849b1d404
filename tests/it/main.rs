//! mcptap's integration tests: one binary, real servers on loopback, real TLS.
#![allow(clippy::unwrap_used)]

mod bodies;
mod chain;
mod cli;
mod common;
mod conformance;
mod e2e_peers;
mod engine;
mod examples;
mod fault;
mod html_report;
mod inject;
mod journal;
mod mcp;
mod peers_direct;
mod probe;
mod reverse;
mod run;
mod snapshots;
mod targets;
mod tui;
