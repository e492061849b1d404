//! Forwarding one HTTP exchange: record the request head, stream the request body up through a
//! tap, stream the response back through another, and turn every upstream failure into an
//! answer (`502` with the cause in plain text) and a failed flow.

use crate::tap::{BoxError, Recorder, Tap};
use crate::tunnel_upstream::TunnelUpstream;
use crate::upstream::UpstreamInfo;
use crate::Shared;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use mcptap_flow::{
    now_micros, Direction, ErrorKind, Flow, FlowError, FlowId, Header, Headers, HttpVersion,
    TlsInfo,
};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The body type every response to the client has.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Where requests on a client connection go, and what is known about that connection.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    pub client_addr: SocketAddr,
    /// `client_addr` as recorded in flows (formatted once per connection, not per request).
    pub client_addr_text: String,
    /// The CONNECT target, for connections inside a tunnel; `None` on the proxy listener itself.
    pub target: Option<Target>,
    /// TLS between the client and mcptap.
    pub client_tls: Option<Arc<TlsInfo>>,
    /// Shutdown guard of the connection (cloned into tasks it spawns).
    pub guard: crate::shutdown::Guard,
    /// A tunnel's upstream origin (prepared once per connection) and the tunnel's own HTTP/1.1
    /// connection to it.
    pub upstream: Option<TunnelUpstream>,
}

impl ConnCtx {
    /// The context of a connection accepted from `client_addr`.
    pub(crate) fn new(
        shared: &Shared,
        client_addr: SocketAddr,
        target: Option<Target>,
        client_tls: Option<Arc<TlsInfo>>,
        guard: crate::shutdown::Guard,
    ) -> ConnCtx {
        ConnCtx {
            client_addr,
            client_addr_text: client_addr.to_string(),
            upstream: target
                .as_ref()
                .and_then(Origin::of)
                .map(|o| TunnelUpstream::new(o, shared.idle_h1.clone())),
            target,
            client_tls,
            guard,
        }
    }
}

/// Scheme and authority of a tunnel's upstream, and its origin as shown in flow URLs
/// (`https://host:8443`, the default port left out).
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    shown: String,
}

impl Origin {
    pub(crate) fn of(t: &Target) -> Option<Origin> {
        let (scheme, uri_scheme) = if t.tls {
            ("https", http::uri::Scheme::HTTPS)
        } else {
            ("http", http::uri::Scheme::HTTP)
        };
        let authority = if t.port == default_port(scheme) {
            url_host(&t.host)
        } else {
            format!("{}:{}", url_host(&t.host), t.port)
        };
        Some(Origin {
            scheme: uri_scheme,
            authority: authority.parse().ok()?,
            shown: format!("{scheme}://{authority}"),
        })
    }

    /// The URI of `pq` at this origin.
    pub(crate) fn uri(
        &self,
        pq: http::uri::PathAndQuery,
    ) -> Result<Uri, http::uri::InvalidUriParts> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(pq);
        Uri::from_parts(parts)
    }
}

/// A CONNECT target.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub host: String,
    pub port: u16,
    /// True when the client spoke TLS inside the tunnel (so the upstream gets TLS too).
    pub tls: bool,
}

pub(crate) fn text_response(status: StatusCode, text: impl Into<String>) -> Response<ProxyBody> {
    let mut resp = Response::new(full(text.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

pub(crate) fn full(text: String) -> ProxyBody {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub(crate) fn next_id(shared: &Shared) -> FlowId {
    FlowId(shared.next_id.fetch_add(1, Ordering::Relaxed))
}

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

/// `host` as it goes in a URL (IPv6 literals bracketed).
pub(crate) fn url_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

pub(crate) fn default_port(scheme: &str) -> u16 {
    if scheme == "https" {
        443
    } else {
        80
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

fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
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

fn is_upgrade_request<B>(req: &Request<B>) -> bool {
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

/// The upstream URI for a request: absolute-form on the proxy listener, or the CONNECT target
/// plus the request's path inside a tunnel.
fn upstream_uri(
    ctx: &ConnCtx,
    req: &Request<Incoming>,
) -> Result<(Uri, String, u16, String), String> {
    if let (Some(t), Some(o)) = (
        &ctx.target,
        ctx.upstream.as_ref().map(TunnelUpstream::origin),
    ) {
        // Inside a tunnel: the origin is the connection's; only the path changes per request.
        let pq = req
            .uri()
            .path_and_query()
            .filter(|p| !p.as_str().is_empty())
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let mut shown = String::with_capacity(o.shown.len() + pq.as_str().len());
        shown.push_str(&o.shown);
        shown.push_str(pq.as_str());
        let uri = o
            .uri(pq)
            .map_err(|e| format!("invalid request target: {e}"))?;
        return Ok((uri, t.host.clone(), t.port, shown));
    }
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    let (scheme, host, port) = match &ctx.target {
        Some(t) => (if t.tls { "https" } else { "http" }, t.host.clone(), t.port),
        None => {
            let uri = req.uri();
            let scheme = match uri.scheme_str() {
                Some(s @ ("http" | "https")) => s,
                Some(other) => return Err(format!("unsupported scheme {other:?}")),
                None => {
                    return Err(
                        "mcptap is a proxy: send absolute-form requests (http://host/path) or \
                         CONNECT, e.g. with HTTPS_PROXY=http://<this address>"
                            .to_owned(),
                    )
                }
            };
            let authority = uri.authority().ok_or("the request URL has no host")?;
            let (host, port) =
                crate::target::host_port(authority.as_str(), Some(default_port(scheme)))
                    .map_err(|why| format!("bad request target {uri}: {why}"))?;
            (scheme, host, port)
        }
    };
    let authority = if port == default_port(scheme) {
        url_host(&host)
    } else {
        format!("{}:{port}", url_host(&host))
    };
    let uri: Uri = format!("{scheme}://{authority}{path}")
        .parse()
        .map_err(|e| format!("invalid request target: {e}"))?;
    let shown = display_url(&uri);
    Ok((uri, host, port, shown))
}

fn display_url(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let host = uri.host().unwrap_or("");
    let port = uri.port_u16();
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    match port {
        Some(p) if p != default_port(scheme) => format!("{scheme}://{host}:{p}{path}"),
        _ => format!("{scheme}://{host}{path}"),
    }
}

/// Handles one request that is not a CONNECT.
pub(crate) async fn forward(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = now_micros();
    let id = next_id(&shared);
    let reverse = shared.reverse.clone();
    let routed = match &reverse {
        Some(rev) => reverse_uri(rev, &ctx, &req),
        None => upstream_uri(&ctx, &req).map(|(u, h, p, shown)| (u, h, p, shown, None)),
    };
    let (uri, host, port, shown_url, public_origin) = match routed {
        Ok(u) => u,
        Err(msg) => {
            record_rejected(&shared, &ctx, id, &req, started, &msg);
            return text_response(StatusCode::BAD_REQUEST, msg + "\n");
        }
    };

    let flow = Flow {
        id,
        client_addr: Some(ctx.client_addr_text.clone()),
        host,
        port,
        client_tls: ctx.client_tls.clone(),
        request: mcptap_flow::Request {
            method: req.method().as_str().to_owned(),
            url: shown_url,
            version: flow_version(req.version()),
            headers: flow_headers(req.headers()),
            body: Default::default(),
        },
        timings: mcptap_flow::Timings {
            started,
            ..Default::default()
        },
        ..Default::default()
    };
    let idle = Some(shared.limits.idle_body);
    let rec =
        Recorder::start_with_idle_limit(flow, shared.events.clone(), shared.injector.clone(), idle);
    // Dropped with this handler (the client went away): the flow ends at once, as aborted.
    let _awaiting = rec.awaiting_head();
    // Only reverse mode's metadata rewriting needs the path after the request is gone.
    let path = reverse
        .as_ref()
        .filter(|r| r.rewrite_metadata)
        .map(|_| req.uri().path().to_owned())
        .unwrap_or_default();

    let upgrade = is_upgrade_request(&req);
    let client_version = req.version();
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    // An h2 client sends :authority instead of Host; keep what it asked for.
    if !parts.headers.contains_key(header::HOST) {
        if let Some(a) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                parts.headers.insert(header::HOST, v);
            }
        }
    }
    strip_hop_by_hop(&mut parts.headers, upgrade);
    if reverse.is_some() {
        // The upstream sees its own name in Host, and what the client asked for in X-Forwarded-*.
        let public_host = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let proto = if ctx.client_tls.is_some() {
            "https"
        } else {
            "http"
        };
        crate::reverse::add_forwarded(
            &mut parts.headers,
            ctx.client_addr.ip(),
            proto,
            public_host.as_deref(),
        );
        if let Some(a) = uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                parts.headers.insert(header::HOST, v);
            }
        }
    }
    if let Some(injector) = &shared.injector {
        crate::inject::hook::inject(&shared, injector, &rec, &mut parts).await;
    }
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let body = Tap::new(
        body,
        rec.clone(),
        Direction::Request,
        shared.body_limit,
        false,
    );
    // Reverse mode with --rewrite-metadata: `resource` parameters naming the public origin go
    // back to the upstream's (the flow keeps what the client sent).
    let rewrite = reverse
        .as_deref()
        .filter(|r| r.rewrite_metadata)
        .zip(public_origin.as_deref());
    let mut outgoing = Outgoing::Stream(body);
    if let Some((rev, public)) = rewrite {
        if let Some(q) = parts.uri.query().filter(|q| q.contains("resource=")) {
            if let Some(new_q) = crate::reverse::rewrite_resource_params(q, rev, public) {
                let mut up = parts.uri.clone().into_parts();
                if let Ok(pq) = format!("{}?{new_q}", parts.uri.path()).parse() {
                    up.path_and_query = Some(pq);
                    if let Ok(u) = Uri::from_parts(up) {
                        parts.uri = u;
                        mark_request_rewritten(&rec);
                    }
                }
            }
        }
        if let Outgoing::Stream(body) = outgoing {
            outgoing = if is_small_form(&parts.headers, &body) {
                let bytes = match body.collect().await {
                    Ok(c) => c.to_bytes(),
                    Err(e) => return fail_with(&rec, crate::upstream::flow_error(&*e)),
                };
                let text = String::from_utf8_lossy(&bytes);
                let bytes = match crate::reverse::rewrite_resource_params(&text, rev, public) {
                    Some(new) => {
                        mark_request_rewritten(&rec);
                        Bytes::from(new)
                    }
                    None => bytes,
                };
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, bytes.len().into());
                Outgoing::Whole(bytes)
            } else {
                Outgoing::Stream(body)
            };
        }
    }

    // Speak to the upstream what the client spoke to us (as mitmproxy does): an HTTP/1.1
    // client gets an HTTP/1.1 upstream, an HTTP/2 client may get HTTP/2. Upgrades need 1.1.
    let client = if upgrade || client_version < Version::HTTP_2 {
        &shared.client_h1
    } else {
        &shared.client
    };
    let own = ctx
        .upstream
        .as_ref()
        .filter(|_| !upgrade && client_version < Version::HTTP_2 && reverse.is_none());
    let sent = crate::upstream::head_within(shared.limits.response_head, &rec, async {
        match (outgoing, own) {
            (Outgoing::Stream(body), Some(own)) => {
                // On its own connection the request goes in origin form, as a client sends it.
                if !parts.headers.contains_key(header::HOST) {
                    if let Ok(v) = HeaderValue::from_str(own.origin().authority.as_str()) {
                        parts.headers.insert(header::HOST, v);
                    }
                }
                let pq = parts
                    .uri
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
                parts.uri = Uri::from(pq);
                own.send(&shared, Request::from_parts(parts, body)).await
            }
            (Outgoing::Stream(body), None) => client
                .request(Request::from_parts(parts, body))
                .await
                .map_err(BoxError::from),
            // Read whole (and recorded by its tap already): mcptap's own client sends the bytes.
            (Outgoing::Whole(bytes), _) => {
                let up_req = Request::from_parts(parts, Tap::passthrough(Full::new(bytes)));
                shared
                    .client_own
                    .request(up_req)
                    .await
                    .map_err(BoxError::from)
            }
        }
    })
    .await;
    let mut resp = match sent {
        Ok(r) => r,
        Err(error) => {
            tracing::debug!(flow = id.0, "exchange failed: {}", error.message);
            return fail_with(&rec, error);
        }
    };

    let info = resp.extensions().get::<UpstreamInfo>().cloned();
    let connected = resp
        .extensions()
        .get::<crate::tunnel_upstream::NewConnection>()
        .map(|c| c.0);
    let status = resp.status();
    let head = mcptap_flow::Response {
        status: status.as_u16(),
        version: flow_version(resp.version()),
        headers: flow_headers(resp.headers()),
        ..Default::default()
    };
    let is_sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| mcptap_flow::media_type_is(ct, "text/event-stream"));
    rec.with(|f| {
        if let Some(info) = &info {
            f.upstream_tls = info.tls.clone();
        }
        f.timings.connected = connected;
    });
    rec.response_head(head);

    if status == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let rec2 = rec.clone();
            let guard = ctx.guard.clone();
            tokio::spawn(async move {
                splice_upgrade(client_upgrade, upstream_upgrade, rec2, guard).await;
            });
            let (mut parts, _body) = resp.into_parts();
            parts.version = Version::HTTP_11;
            return Response::from_parts(parts, empty());
        }
    }

    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    parts.version = Version::HTTP_11;
    if let (Some(rev), Some(public)) = (reverse.as_deref(), public_origin.as_deref()) {
        if rev.rewrite_metadata {
            return rewrite_metadata(rev, public, &path, parts, body, rec, shared.body_limit).await;
        }
    }
    let body = Tap::new(body, rec, Direction::Response, shared.body_limit, is_sse);
    Response::from_parts(parts, body.boxed())
}

/// Reverse mode: the upstream URI for a request, the upstream's host and port, the URL as the
/// client asked for it, and the public origin.
#[allow(clippy::type_complexity)]
fn reverse_uri(
    rev: &crate::reverse::ReverseConfig,
    ctx: &ConnCtx,
    req: &Request<Incoming>,
) -> Result<(Uri, String, u16, String, Option<String>), String> {
    if req.method() == Method::CONNECT {
        return Err("mcptap is in reverse mode: CONNECT is not accepted here".to_owned());
    }
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    let upstream = rev.route(req.uri().path());
    let uri = crate::reverse::target(upstream, pq)?;
    let host = uri
        .host()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let scheme = uri.scheme_str().unwrap_or("https");
    let port = uri.port_u16().unwrap_or(default_port(scheme));
    let public_scheme = if ctx.client_tls.is_some() {
        "https"
    } else {
        "http"
    };
    let public_host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_else(|| "localhost".to_owned());
    let public = format!("{public_scheme}://{public_host}");
    Ok((uri, host, port, format!("{public}{pq}"), Some(public)))
}

/// Reverse mode with `--rewrite-metadata`: OAuth metadata and `WWW-Authenticate` challenges that
/// name the upstream are rewritten to the public origin. Metadata bodies are small JSON
/// documents and are read whole (bounded); everything else streams as usual.
async fn rewrite_metadata(
    rev: &crate::reverse::ReverseConfig,
    public: &str,
    path: &str,
    mut parts: http::response::Parts,
    body: Incoming,
    rec: Arc<Recorder>,
    limit: usize,
) -> Response<ProxyBody> {
    let origins = rev.origins();
    let mut changed = false;
    let challenges: Vec<HeaderValue> = parts
        .headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| {
            let text = String::from_utf8_lossy(v.as_bytes());
            let new = crate::reverse::rewrite_origins(&text, &origins, public);
            if new != text {
                changed = true;
            }
            HeaderValue::from_str(&new).unwrap_or_else(|_| v.clone())
        })
        .collect();
    if changed {
        parts.headers.remove(header::WWW_AUTHENTICATE);
        for c in challenges {
            parts.headers.append(header::WWW_AUTHENTICATE, c);
        }
    }
    let json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    if !(crate::reverse::is_metadata_path(path) && json && parts.status.is_success()) {
        if changed {
            mark_rewritten(&rec, &parts);
        }
        let body = Tap::new(body, rec, Direction::Response, limit, false);
        return Response::from_parts(parts, body.boxed());
    }
    let bytes = match http_body_util::Limited::new(body, 1 << 20).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return fail(
                &rec,
                ErrorKind::UpstreamProtocol,
                format!("cannot read metadata to rewrite it: {e}"),
                None,
            )
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let new = crate::reverse::rewrite_origins(&text, &origins, public);
    if new != text {
        changed = true;
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    if changed {
        mark_rewritten(&rec, &parts);
    }
    let body = Tap::new(
        Full::new(Bytes::from(new)).map_err(|never| -> BoxError { match never {} }),
        rec,
        Direction::Response,
        limit,
        false,
    );
    Response::from_parts(parts, body.boxed())
}

/// Records (in the flow only, never on the wire) that mcptap rewrote this response.
fn mark_rewritten(rec: &Recorder, parts: &http::response::Parts) {
    let headers = flow_headers(&parts.headers);
    rec.with(|f| {
        if let Some(r) = f.response.as_mut() {
            r.headers = headers;
            r.headers.push("x-mcptap-rewritten", "metadata");
        }
    });
}

/// A request body on its way upstream: streamed through its tap, or read whole first.
// A local of `forward`, once per request: boxing the tap would allocate on the hot path.
#[allow(clippy::large_enum_variant)]
enum Outgoing {
    Stream(Tap<Incoming>),
    Whole(Bytes),
}

/// A form body small enough to read whole (a token request).
fn is_small_form(headers: &HeaderMap, body: &Tap<Incoming>) -> bool {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| mcptap_flow::media_type_is(ct, "application/x-www-form-urlencoded"));
    form && http_body::Body::size_hint(body)
        .upper()
        .is_some_and(|n| n <= crate::reverse::MAX_REWRITTEN_FORM)
}

/// Records (in the flow only) that mcptap rewrote the request's `resource` for the upstream.
fn mark_request_rewritten(rec: &Recorder) {
    rec.with(|f| {
        if f.request.headers.get("x-mcptap-rewritten").is_none() {
            f.request.headers.push("x-mcptap-rewritten", "resource");
        }
    });
}

/// Ends a flow with a synthetic error response.
pub(crate) fn fail(
    rec: &Arc<Recorder>,
    kind: ErrorKind,
    message: String,
    hint: Option<String>,
) -> Response<ProxyBody> {
    fail_with(
        rec,
        FlowError {
            kind,
            message,
            hint,
            limit: None,
        },
    )
}

/// Ends a flow with `error` and a synthetic response whose status says whose fault it was:
/// `4xx` for the client's, `5xx` for the upstream's (or mcptap's).
pub(crate) fn fail_with(rec: &Arc<Recorder>, error: FlowError) -> Response<ProxyBody> {
    let status = match error.kind {
        ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::ClientProtocol | ErrorKind::ClientDisconnected => StatusCode::BAD_REQUEST,
        ErrorKind::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorKind::Shutdown => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    let text = match &error.hint {
        Some(h) => format!("mcptap: {}\n({h})\n", error.message),
        None => format!("mcptap: {}\n", error.message),
    };
    let synthetic = mcptap_flow::Response {
        status: status.as_u16(),
        version: HttpVersion::Http11,
        headers: [("content-type", "text/plain; charset=utf-8")]
            .into_iter()
            .collect(),
        body: mcptap_flow::CapturedBody::complete(text.clone()),
        synthetic: true,
        ..Default::default()
    };
    rec.with(|f| f.response = Some(synthetic));
    rec.fail(error);
    text_response(status, text)
}

/// Records a request refused before it could be forwarded (e.g. origin-form on the listener).
fn record_rejected(
    shared: &Shared,
    ctx: &ConnCtx,
    id: FlowId,
    req: &Request<Incoming>,
    started: i64,
    msg: &str,
) {
    let flow = Flow {
        id,
        client_addr: Some(ctx.client_addr_text.clone()),
        host: req.uri().host().unwrap_or("").to_owned(),
        port: req.uri().port_u16().unwrap_or(0),
        client_tls: ctx.client_tls.clone(),
        request: mcptap_flow::Request {
            method: req.method().as_str().to_owned(),
            url: req.uri().to_string(),
            version: flow_version(req.version()),
            headers: flow_headers(req.headers()),
            body: Default::default(),
        },
        timings: mcptap_flow::Timings {
            started,
            ..Default::default()
        },
        ..Default::default()
    };
    let rec = Recorder::start(flow, shared.events.clone(), None);
    let _ = fail(&rec, ErrorKind::ClientProtocol, msg.to_owned(), None);
}

/// After a `101`, copies bytes both ways until either side closes, then ends the flow.
async fn splice_upgrade(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    rec: Arc<Recorder>,
    guard: crate::shutdown::Guard,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            rec.with(|f| {
                f.error = Some(FlowError {
                    kind: ErrorKind::UpstreamProtocol,
                    message: format!("protocol upgrade failed: {e}"),
                    hint: None,
                    limit: None,
                })
            });
            rec.response_part_done();
            return;
        }
    };
    let (stats, _err) = crate::splice::splice(
        hyper_util::rt::TokioIo::new(client),
        hyper_util::rt::TokioIo::new(upstream),
        guard,
    )
    .await;
    rec.with(|f| f.tunnel = Some(stats));
    rec.response_part_done();
}

/// Method check used by the connection layer.
pub(crate) fn is_connect<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT
}
