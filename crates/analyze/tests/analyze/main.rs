//! The analyzer's tests: one binary. `common` holds the fixture DSL.
#![allow(clippy::unwrap_used)] // test helpers panic on malformed fixtures by design

mod common;
mod findings;
mod healthy;
mod live;
mod prompt;
mod render;
mod scale;
