//! Reverse mode: mcptap listens as if it were the MCP server and forwards every request to a
//! fixed upstream (or to another one by path prefix), for clients whose proxy settings cannot be
//! changed — Claude.ai connectors call a public URL from their own servers.
//!
//! The `Host` header is rewritten to the upstream's (as mitmproxy does), `X-Forwarded-*` and
//! `Forwarded` tell the upstream what the client asked for, and, when asked to, absolute URLs in
//! OAuth metadata that name the upstream are rewritten to the public origin so the client's view
//! stays consistent — and the `resource` the client then sends is rewritten back, so the
//! upstream's view stays consistent too.

use http::header::{HeaderMap, HeaderValue};
use http::Uri;

pub(crate) mod rewrite;
pub(crate) use rewrite::ReverseRewrite;

/// Where reverse mode sends requests.
#[derive(Debug, Clone)]
pub struct ReverseConfig {
    /// The default upstream (`https://mcp.example.com` or with a base path).
    pub upstream: Uri,
    /// Other upstreams by path prefix (`/oauth` → `https://auth.example.com`); the longest
    /// matching prefix wins. The request path is kept whole (the prefix is not stripped).
    pub routes: Vec<(String, Uri)>,
    /// Rewrite upstream URLs in OAuth metadata and `WWW-Authenticate` to the public origin.
    pub rewrite_metadata: bool,
}

/// Parses an upstream URL for reverse mode: `http(s)://host[:port][/base]`.
pub fn parse_upstream(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{url:?}: needs http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{url:?}: no host"));
    }
    Ok(uri)
}

/// Parses `--route /prefix=URL`.
pub fn parse_route(spec: &str) -> Result<(String, Uri), String> {
    let (prefix, url) = spec
        .split_once('=')
        .ok_or_else(|| format!("--route {spec:?}: expected /prefix=URL"))?;
    if !prefix.starts_with('/') {
        return Err(format!("--route {spec:?}: the prefix must start with /"));
    }
    Ok((prefix.to_owned(), parse_upstream(url)?))
}

impl ReverseConfig {
    /// The upstream for `path`.
    pub(crate) fn route(&self, path: &str) -> &Uri {
        self.routes
            .iter()
            .filter(|(p, _)| path_has_prefix(path, p))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, u)| u)
            .unwrap_or(&self.upstream)
    }

    /// Every upstream origin (`https://host[:port]`), for metadata rewriting.
    pub(crate) fn origins(&self) -> Vec<String> {
        std::iter::once(&self.upstream)
            .chain(self.routes.iter().map(|(_, u)| u))
            .map(origin)
            .collect()
    }
}

fn path_has_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/') || rest.starts_with('?') || prefix.is_empty())
}

/// `scheme://authority` of `uri`, without a default port.
pub(crate) fn origin(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("https");
    let host = uri.host().unwrap_or("");
    match uri.port_u16() {
        Some(p) if !(scheme == "https" && p == 443 || scheme == "http" && p == 80) => {
            format!("{scheme}://{host}:{p}")
        }
        _ => format!("{scheme}://{host}"),
    }
}

/// The upstream URI for a request path on `upstream` (its base path prefixed).
pub(crate) fn target(upstream: &Uri, path_and_query: &str) -> Result<Uri, String> {
    let base = upstream.path().trim_end_matches('/');
    format!("{}{base}{path_and_query}", origin(upstream))
        .parse()
        .map_err(|e| format!("invalid upstream URL: {e}"))
}

/// Adds `X-Forwarded-For/-Proto/-Host` and `Forwarded` for the upstream.
pub(crate) fn add_forwarded(
    headers: &mut HeaderMap,
    client_ip: std::net::IpAddr,
    proto: &str,
    host: Option<&str>,
) {
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {client_ip}"),
        None => client_ip.to_string(),
    };
    let for_token = match client_ip {
        std::net::IpAddr::V6(_) => format!("\"[{client_ip}]\""),
        std::net::IpAddr::V4(_) => client_ip.to_string(),
    };
    let mut fwd = format!("for={for_token};proto={proto}");
    if let Some(h) = host {
        fwd.push_str(&format!(";host=\"{h}\""));
    }
    let fwd = match headers.get("forwarded").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {fwd}"),
        None => fwd,
    };
    let set = |headers: &mut HeaderMap, name: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(name, v);
        }
    };
    set(headers, "x-forwarded-for", xff);
    set(headers, "x-forwarded-proto", proto.to_owned());
    if let Some(h) = host {
        set(headers, "x-forwarded-host", h.to_owned());
    }
    set(headers, "forwarded", fwd);
}

/// True for the paths whose JSON names OAuth endpoints and resources.
pub(crate) fn is_metadata_path(path: &str) -> bool {
    mcptap_flow::oauth::WellKnown::of_path(path).is_some()
}

/// Replaces every upstream origin in `text` by `public`.
pub(crate) fn rewrite_origins(text: &str, upstreams: &[String], public: &str) -> String {
    let mut out = text.to_owned();
    for o in upstreams {
        if o != public {
            out = out.replace(o.as_str(), public);
        }
    }
    out
}

/// Form bodies up to this size are read whole to rewrite their `resource`; larger ones (never a
/// token request) stream through unchanged.
pub(crate) const MAX_REWRITTEN_FORM: u64 = 64 * 1024;

/// `--rewrite-metadata`, request side. A client that read rewritten metadata names the public
/// origin in its `resource` parameters (RFC 8707: authorize query, token and refresh forms);
/// the upstream knows itself by its own origin and binds tokens to what it is told. Moves every
/// `resource` value under `public` to the upstream origin that serves its path — the inverse of
/// the metadata rewrite. `pairs` is `k=v&k=v` text; `None` when nothing changed.
pub(crate) fn rewrite_resource_params(
    pairs: &str,
    rev: &ReverseConfig,
    public: &str,
) -> Option<String> {
    let mut changed = false;
    let out: Vec<String> = pairs
        .split('&')
        .map(|pair| {
            let Some(("resource", raw)) = pair.split_once('=') else {
                return pair.to_owned();
            };
            let value = mcptap_flow::oauth::form_decode(raw.as_bytes());
            let Some(rest) = value.strip_prefix(public) else {
                return pair.to_owned();
            };
            if !(rest.is_empty() || rest.starts_with('/')) {
                return pair.to_owned();
            }
            let path = rest.split(['?', '#']).next().unwrap_or("");
            let upstream = origin(rev.route(if path.is_empty() { "/" } else { path }));
            if upstream == public {
                return pair.to_owned();
            }
            changed = true;
            format!(
                "resource={}",
                mcptap_flow::oauth::percent_encode(&format!("{upstream}{rest}"))
            )
        })
        .collect();
    changed.then(|| out.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_parameters_naming_the_public_origin_go_back_to_the_upstream() {
        let cfg = ReverseConfig {
            upstream: parse_upstream("http://127.0.0.1:8000").unwrap(),
            routes: vec![parse_route("/oauth=https://auth.internal").unwrap()],
            rewrite_metadata: true,
        };
        let public = "https://mcp.example.com";
        assert_eq!(
            rewrite_resource_params(
                "grant_type=refresh_token&resource=https%3A%2F%2Fmcp.example.com%2Fmcp&scope=a+b",
                &cfg,
                public
            )
            .as_deref(),
            Some("grant_type=refresh_token&resource=http%3A%2F%2F127.0.0.1%3A8000%2Fmcp&scope=a+b")
        );
        // A resource under a routed prefix goes to that route's origin.
        assert_eq!(
            rewrite_resource_params("resource=https://mcp.example.com/oauth/x", &cfg, public)
                .as_deref(),
            Some("resource=https%3A%2F%2Fauth.internal%2Foauth%2Fx")
        );
        // Another origin, a longer host with the same prefix, other parameters: untouched.
        for q in [
            "resource=https%3A%2F%2Fother.example%2Fmcp",
            "resource=https://mcp.example.com.evil/mcp",
            "redirect_uri=https%3A%2F%2Fmcp.example.com%2Fcb&code=x",
            "",
        ] {
            assert_eq!(rewrite_resource_params(q, &cfg, public), None, "{q}");
        }
    }

    #[test]
    fn routes_pick_the_longest_prefix_on_segment_boundaries() {
        let cfg = ReverseConfig {
            upstream: parse_upstream("https://mcp.example.com").unwrap(),
            routes: vec![
                parse_route("/oauth=https://auth.example.com").unwrap(),
                parse_route("/oauth/v2=https://auth2.example.com:8443/base").unwrap(),
            ],
            rewrite_metadata: false,
        };
        assert_eq!(origin(cfg.route("/mcp")), "https://mcp.example.com");
        assert_eq!(
            origin(cfg.route("/oauth/token")),
            "https://auth.example.com"
        );
        assert_eq!(origin(cfg.route("/oauthx")), "https://mcp.example.com");
        assert_eq!(
            origin(cfg.route("/oauth/v2/token")),
            "https://auth2.example.com:8443"
        );
        let t = target(cfg.route("/oauth/v2/token"), "/oauth/v2/token?a=1").unwrap();
        assert_eq!(
            t.to_string(),
            "https://auth2.example.com:8443/base/oauth/v2/token?a=1"
        );
        assert!(parse_route("oauth=https://x").is_err());
        assert!(parse_upstream("ftp://x").is_err());
    }

    #[test]
    fn origins_in_metadata_are_rewritten() {
        let text = r#"{"resource":"https://internal:9000/mcp","authorization_servers":["https://internal:9000"]}"#;
        let out = rewrite_origins(
            text,
            &["https://internal:9000".into()],
            "https://public.example",
        );
        assert_eq!(
            out,
            r#"{"resource":"https://public.example/mcp","authorization_servers":["https://public.example"]}"#
        );
    }

    #[test]
    fn forwarded_headers_are_appended() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        add_forwarded(
            &mut h,
            "127.0.0.1".parse().unwrap(),
            "https",
            Some("public.example"),
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "public.example");
        assert_eq!(
            h["forwarded"],
            "for=127.0.0.1;proto=https;host=\"public.example\""
        );
    }
}
