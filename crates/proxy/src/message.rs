//! HTTP messages as every step of the engine handles them: the body type of answers to the
//! client, mcptap's own plain-text answers, the recorded form of a head (version, headers), and
//! the headers that describe one hop. A leaf: it imports nothing from the rest of the engine.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use mcptap_flow::{Header, Headers, HttpVersion};

/// The boxed error type bodies carry through the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type every response to the client has.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// mcptap's own answer: `status` with `text` as a plain-text body.
pub(crate) fn text_response(status: StatusCode, text: impl Into<String>) -> Response<ProxyBody> {
    let mut resp = Response::new(full(text.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A whole body of `text`.
pub(crate) fn full(text: String) -> ProxyBody {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub(crate) fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// The recorded form of an HTTP version.
pub(crate) fn flow_version(v: Version) -> HttpVersion {
    match v {
        Version::HTTP_10 | Version::HTTP_09 => HttpVersion::Http10,
        Version::HTTP_2 => HttpVersion::Http2,
        Version::HTTP_3 => HttpVersion::Http3,
        _ => HttpVersion::Http11,
    }
}

/// The recorded form of a header map: UTF-8 values as text (as cheap as before), others as their
/// lossy text plus the exact bytes (obs-text, e.g. Latin-1, is legal in HTTP/1.1 values).
pub(crate) fn flow_headers(map: &HeaderMap) -> Headers {
    map.iter()
        .map(|(n, v)| Header::from_bytes(n.as_str(), v.as_bytes()))
        .collect::<Vec<_>>()
        .into()
}

/// The recorded head of `req` (its body still to come), shown as `url`.
pub(crate) fn request_head<B>(req: &Request<B>, url: String) -> mcptap_flow::Request {
    mcptap_flow::Request {
        method: req.method().as_str().to_owned(),
        url,
        version: flow_version(req.version()),
        headers: flow_headers(req.headers()),
        body: Default::default(),
    }
}

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes the hop-by-hop headers (and those `Connection` names); `TE: trailers` survives, and
/// with `keep_upgrade` so do `Upgrade` and `Connection: upgrade`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Fields named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        if !(keep_upgrade && n == header::UPGRADE) {
            headers.remove(n);
        }
    }
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n) && !(keep_upgrade && *n == header::UPGRADE))
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// An HTTP/1.x request asking to switch protocols (WebSocket).
pub(crate) fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    req.version() <= Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// A `CONNECT` request.
pub(crate) fn is_connect<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT
}
