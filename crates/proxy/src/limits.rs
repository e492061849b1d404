//! Time limits: how long mcptap waits for each side before it gives up on an exchange and
//! records why. "My client times out" is what users come to debug, so every limit that fires
//! ends the flow with the phase it was waiting in and the limit ([`mcptap_flow::TimeLimit`]);
//! none of them cuts a stream that is still sending (an SSE keep-alive comment is traffic).

use mcptap_flow::{ErrorKind, FlowError, Phase, TimeLimit};
use std::time::Duration;

/// The limits, one per phase of an exchange (`--connect-timeout`, `--tls-handshake-timeout`,
/// `--response-timeout`, `--idle-body-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// DNS + TCP connect, and then the TLS handshake, to an upstream (each).
    pub connect: Duration,
    /// From the client's CONNECT being answered to its TLS handshake being done (or, for a
    /// plain tunnel, its first byte).
    pub tls_handshake: Duration,
    /// From the request being sent upstream to the response head (connecting included).
    pub response_head: Duration,
    /// Between two frames of a body that has started, in either direction, counted only while
    /// mcptap is waiting for the sender (not while the receiver is slow to read).
    pub idle_body: Duration,
}

impl Limits {
    /// `--connect-timeout`: an upstream that does not accept in 10 s is not coming.
    pub const CONNECT: Duration = Duration::from_secs(10);
    /// `--tls-handshake-timeout`: a client that opened a tunnel and sends nothing for 10 s.
    pub const TLS_HANDSHAKE: Duration = Duration::from_secs(10);
    /// `--response-timeout`: tool calls may take a while before their first byte; two minutes
    /// is longer than MCP clients wait by default.
    pub const RESPONSE_HEAD: Duration = Duration::from_secs(120);
    /// `--idle-body-timeout`: MCP servers send SSE keep-alives every 15–30 s; five minutes of
    /// silence on a started body is a stall.
    pub const IDLE_BODY: Duration = Duration::from_secs(300);
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect: Limits::CONNECT,
            tls_handshake: Limits::TLS_HANDSHAKE,
            response_head: Limits::RESPONSE_HEAD,
            idle_body: Limits::IDLE_BODY,
        }
    }
}

/// `d` as a person reads it: `300ms`, `10s`, `1.5s`, `2m`.
pub(crate) fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// The error recorded when the limit for `phase` fired.
pub(crate) fn exceeded(
    kind: ErrorKind,
    phase: Phase,
    limit: Duration,
    message: String,
    flag: &str,
) -> FlowError {
    FlowError {
        kind,
        message,
        hint: Some(format!(
            "mcptap's limit; raise it with {flag} (now {})",
            human(limit)
        )),
        limit: Some(TimeLimit {
            phase,
            after_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        for (ms, text) in [
            (300, "300ms"),
            (10_000, "10s"),
            (1_500, "1.5s"),
            (120_000, "2m"),
            (300_000, "5m"),
        ] {
            assert_eq!(human(Duration::from_millis(ms)), text);
        }
    }
}
