//! The first step of forwarding: where a request goes. On the proxy listener an absolute-form
//! request names its upstream; inside a tunnel the tunnel's origin is the upstream and only the
//! path changes per request; in reverse mode the path picks one of the configured upstreams.

use crate::context::ConnCtx;
use crate::reverse::ReverseConfig;
use crate::target::{bare_host, default_port, display_url, url_host};
use crate::tunnel_upstream::TunnelUpstream;
use http::header;
use http::{Method, Request, Uri};

/// Where one request goes, and how its flow shows it.
#[derive(Debug)]
pub(crate) struct Route {
    /// The upstream URI.
    pub uri: Uri,
    /// The upstream's host (IPv6 brackets removed) and port, as recorded.
    pub host: String,
    pub port: u16,
    /// The URL as recorded in the flow: what the client asked for.
    pub shown: String,
    /// Reverse mode: the public origin the client addressed (`https://public.example`).
    pub public: Option<String>,
}

impl Route {
    /// Reverse mode: the path the client asked for under the public origin.
    pub(crate) fn public_path(&self) -> Option<&str> {
        let pq = self.shown.strip_prefix(self.public.as_deref()?)?;
        pq.split('?').next()
    }
}

/// The route of `req`, or why it cannot be forwarded (the client's fault).
pub(crate) fn route<B>(
    reverse: Option<&ReverseConfig>,
    ctx: &ConnCtx,
    req: &Request<B>,
) -> Result<Route, String> {
    match reverse {
        Some(rev) => reverse_route(rev, ctx, req),
        None => proxy_route(ctx, req),
    }
}

/// The path and query of `req` (`/` when it has none).
fn path_and_query<B>(req: &Request<B>) -> &str {
    req.uri()
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/")
}

/// Absolute-form on the proxy listener, or the CONNECT target plus the request's path inside a
/// tunnel.
fn proxy_route<B>(ctx: &ConnCtx, req: &Request<B>) -> Result<Route, String> {
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
        return Ok(Route {
            uri,
            host: t.host.clone(),
            port: t.port,
            shown,
            public: None,
        });
    }
    let path = path_and_query(req);
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
    Ok(Route {
        uri,
        host,
        port,
        shown,
        public: None,
    })
}

/// Reverse mode: the upstream that serves the path, and the public origin the client used.
fn reverse_route<B>(rev: &ReverseConfig, ctx: &ConnCtx, req: &Request<B>) -> Result<Route, String> {
    if req.method() == Method::CONNECT {
        return Err("mcptap is in reverse mode: CONNECT is not accepted here".to_owned());
    }
    let pq = path_and_query(req);
    let upstream = rev.route(req.uri().path());
    let uri = crate::reverse::target(upstream, pq)?;
    let host = bare_host(&uri);
    let scheme = uri.scheme_str().unwrap_or("https");
    let port = uri.port_u16().unwrap_or(default_port(scheme));
    let public_host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_else(|| "localhost".to_owned());
    let public = format!("{}://{public_host}", ctx.scheme());
    Ok(Route {
        uri,
        host,
        port,
        shown: format!("{public}{pq}"),
        public: Some(public),
    })
}
