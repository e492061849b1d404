//! HAR 1.2: the streaming writer ([`HarWriter`]) and the tolerant reader ([`read_har`]).
//!
//! Mapping of a [`Flow`](mcptap_flow::Flow) to an entry:
//!
//! * `startedDateTime`: ISO 8601 UTC with milliseconds; `time` and `timings` in milliseconds with
//!   microsecond decimals, from the flow's timings: `blocked`, `dns`, `ssl` are `-1` (not
//!   measured apart); `connect` is until the upstream connection was ready; `send`, `wait`,
//!   `receive` follow; they add up to `time`.
//! * Bodies: UTF-8 text as `text`; a response body that is not UTF-8 as base64 with
//!   `"encoding": "base64"` (the spec's way, which every tool reads). HAR's `postData` holds text
//!   only, so a request body that is not UTF-8 goes where HTTP Toolkit puts it:
//!   `request._content` `{size, mimeType, text, encoding: "base64"}` with
//!   `request._requestBodyStatus: "discarded:not-representable"` (HTTP Toolkit reads it back;
//!   the file stays valid for strict HAR 1.2 readers). Bodies are stored decoded (see
//!   [`decode_body`](crate::decode_body)): `bodySize` is the size on the wire; `content.size`
//!   is the size of the content as stored (decoded and redacted) for a decoded body, else the
//!   size on the wire (the whole body, even when only a prefix was captured); `compression` is
//!   the difference when positive. Exact values are in `_mcptap`.
//! * Headers: `{name, value}`. A value that was not UTF-8 on the wire (obs-text, e.g. Latin-1)
//!   has its lossy text (U+FFFD) in `value`, the plain string every reader shows, and its exact
//!   bytes in `_mcptapValueBase64` (standard base64), which mcptap reads back only while `value`
//!   is still their text; a redacted value has no `_mcptapValueBase64`.
//! * A flow with no response (failed before one arrived) gets the response Chrome and mitmproxy
//!   write for it: status 0, empty `httpVersion`, and the error in `response._error`.
//! * A tunnel is a `CONNECT` entry with URL `https://host:port/`, as mitmproxy writes it.
//! * `_mcptap` (per entry) holds what HAR has no field for, so that mcptap reads its own files back
//!   losslessly: flow id, kind, state, exact timings in microseconds, TLS on both sides, error,
//!   tunnel byte counts, injection marker, redaction notes (fingerprints and JWT claims), body
//!   metadata (wire length, truncation, end state, original encoding) and the SSE events with
//!   their arrival times. `log._mcptap` holds the session metadata and any journal warnings.

mod read;
pub(crate) mod scan;
mod write;

pub(crate) use read::{read_entry_at, read_har_early, read_har_placed, EntryPlace};
pub use read::{read_har, read_har_bytes, read_har_each, HarImport};
pub use write::{write_entry, HarWriter, LogExtra};

use mcptap_flow::redact::SecretNote;
use mcptap_flow::{
    BodyState, FlowError, FlowKind, FlowState, Injection, SseEvent, Timings, TlsInfo, TunnelStats,
};
use serde::{Deserialize, Serialize};

/// Everything about a flow that HAR has no field for (`entry._mcptap`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct McptapEntry {
    pub id: u64,
    #[serde(default)]
    pub kind: FlowKind,
    #[serde(default)]
    pub state: FlowState,
    /// The request URL when the HAR `url` had to differ (tunnels: `host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_tls: Option<std::sync::Arc<TlsInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_tls: Option<std::sync::Arc<TlsInfo>>,
    #[serde(default)]
    pub timings: Timings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<FlowError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injected: Option<Injection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_injected: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_mcptap: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretNote>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw_secrets: bool,
    #[serde(default)]
    pub request_body: BodyMeta,
    /// Present when the flow has a response (a status-0 HAR response means none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<BodyMeta>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub synthetic: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sse: Vec<SseEvent>,
}

/// A captured body's metadata (its bytes are in the standard HAR fields).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct BodyMeta {
    pub total_len: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    #[serde(default)]
    pub state: BodyState,
    /// The `Content-Encoding` the stored bytes were decoded from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
}

/// Canonical reason phrases (HAR wants `statusText`; flows do not keep the one sent).
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// Scheme, host (without IPv6 brackets) and port of an absolute URL; `host:port` (a CONNECT
/// target) is accepted too.
pub(crate) fn split_url(url: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (url[..i].to_ascii_lowercase(), &url[i + 3..]),
        None => (String::new(), url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
        let close = stripped.find(']')?;
        let host = &stripped[..close];
        let port = stripped[close + 1..].strip_prefix(':');
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let default = match scheme.as_str() {
        "http" | "ws" => 80,
        _ => 443,
    };
    let port = match port {
        Some(p) if !p.is_empty() => p.parse().ok()?,
        _ => default,
    };
    Some((scheme, host.to_owned(), port))
}

/// `name=value` pairs of a URL's query, decoded.
pub(crate) fn query_pairs(url: &str) -> Vec<(String, String)> {
    let Some(q) = url.find('?') else {
        return Vec::new();
    };
    let end = url[q..].find('#').map_or(url.len(), |i| q + i);
    form_pairs(&url.as_bytes()[q + 1..end])
}

/// `name=value` pairs of a form body, decoded.
pub(crate) fn form_pairs(s: &[u8]) -> Vec<(String, String)> {
    s.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&b| b == b'=') {
            Some(i) => (
                mcptap_flow::redact::form_decode(&p[..i]),
                mcptap_flow::redact::form_decode(&p[i + 1..]),
            ),
            None => (mcptap_flow::redact::form_decode(p), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("https://a.example/x?y"),
            Some(("https".into(), "a.example".into(), 443))
        );
        assert_eq!(
            split_url("http://u:p@[::1]:8080/"),
            Some(("http".into(), "::1".into(), 8080))
        );
        assert_eq!(split_url("h:8443"), Some((String::new(), "h".into(), 8443)));
        assert_eq!(split_url("https:///x"), None);
        assert_eq!(split_url("https://h:99999/"), None);
        assert_eq!(
            query_pairs("https://h/p?a=1&b=x%20y+z&c#f=2"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y z".into()),
                ("c".into(), String::new())
            ]
        );
    }
}
