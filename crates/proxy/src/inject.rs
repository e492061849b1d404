//! Inject mode (`--inject-token`): when an MCP client obtained a token but sends a request to
//! the MCP endpoint without `Authorization`, add the token it was issued, so the server's answer
//! shows who is at fault.
//!
//! The rules keep tokens from leaking (see `docs/inject.md`): only a *missing* header is filled,
//! only for a request whose URL is the protected resource named in the server's metadata (same
//! scheme, host, port and path, or a path below it), only with a Bearer token that the
//! authorization server named by that metadata issued *for that resource*, never expired, never
//! over plain HTTP except to loopback. Refresh tokens are never used. Raw tokens live only in
//! this process's memory; flows record the fingerprint.

use mcptap_flow::{redact, Flow, FlowId, Micros};
use std::collections::HashMap;
use std::sync::Mutex;

/// Tokens expiring within this margin are not injected (clock skew, request latency).
const EXPIRY_SKEW_US: i64 = 60 * 1_000_000;

/// A token seen issued by a token endpoint.
#[derive(Debug, Clone)]
struct Issued {
    token: String,
    fingerprint: String,
    flow: FlowId,
    issued_at: Micros,
    /// `None` when neither `expires_in` nor a JWT `exp` told.
    expires_at: Option<Micros>,
    /// The authorization server (issuer from its metadata, else the token endpoint's origin).
    issuer: String,
    /// `resource` sent in the token request, canonicalised.
    resource: Option<String>,
    scope: Option<Vec<String>>,
}

/// Protected-resource metadata seen for a resource.
#[derive(Debug, Clone, Default)]
struct Resource {
    authorization_servers: Vec<String>,
    /// The scope of the last challenge for this resource.
    challenged_scope: Option<Vec<String>>,
}

#[derive(Debug, Default)]
struct State {
    tokens: Vec<Issued>,
    /// Canonical resource URL → what its metadata said.
    resources: HashMap<String, Resource>,
    /// Token endpoint URL → issuer, from authorization-server metadata.
    token_endpoints: HashMap<String, String>,
}

/// Why a bare request was not given a token (for the log; not recorded with secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// No protected-resource metadata names this URL.
    NotAResource,
    /// A token exists for this resource but differs by a trailing slash only.
    SlashOnly(String),
    /// No unexpired Bearer token was issued for this resource by its authorization server.
    NoToken,
    /// Plain HTTP to a host that is not loopback.
    Insecure,
}

/// What was injected.
#[derive(Debug, Clone)]
pub struct Pick {
    /// The `Authorization` value to add.
    pub header: String,
    /// Fingerprint of the token.
    pub fingerprint: String,
    /// The flow that issued it.
    pub token_flow: FlowId,
}

/// Watches OAuth traffic and hands out tokens for bare MCP requests.
#[derive(Debug, Default)]
pub struct Injector {
    state: Mutex<State>,
}

/// `scheme://host[:port]/path` lowercased in scheme and host, without query, fragment, default
/// port; the path as sent (a trailing slash is significant and kept).
pub fn canonical(url: &str) -> Option<String> {
    let uri: http::Uri = url.trim().parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let port = match (uri.port_u16(), scheme.as_str()) {
        (Some(443), "https") | (Some(80), "http") | (None, _) => String::new(),
        (Some(p), _) => format!(":{p}"),
    };
    let path = uri.path();
    let path = if path.is_empty() { "/" } else { path };
    Some(format!("{scheme}://{host}{port}{path}"))
}

fn origin_of(url: &str) -> Option<String> {
    let c = canonical(url)?;
    let after = c.find("://")? + 3;
    let end = c[after..].find('/').map(|i| after + i).unwrap_or(c.len());
    Some(c[..end].to_owned())
}

fn trim_slash(s: &str) -> &str {
    s.trim_end_matches('/')
}

fn is_loopback_host(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let host = uri
        .host()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn json(bytes: &[u8]) -> Option<serde_json::Value> {
    serde_json::from_slice(bytes).ok()
}

fn form_value(body: &[u8], key: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn scopes(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

/// The `name="value"` (or `name=value`) parameter of a challenge.
fn challenge_param(header: &str, name: &str) -> Option<String> {
    let lower = header.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(name) {
        let at = from + i;
        let before_ok = at == 0
            || !lower.as_bytes()[at - 1].is_ascii_alphanumeric()
                && lower.as_bytes()[at - 1] != b'_';
        let rest = &header[at + name.len()..];
        if before_ok {
            if let Some(v) = rest.trim_start().strip_prefix('=') {
                let v = v.trim_start();
                return Some(match v.strip_prefix('"') {
                    Some(q) => q.split('"').next().unwrap_or("").to_owned(),
                    None => v.split([',', ' ']).next().unwrap_or("").to_owned(),
                });
            }
        }
        from = at + name.len();
    }
    None
}

impl Injector {
    /// A new, empty injector.
    pub fn new() -> Injector {
        Injector::default()
    }

    /// Learns from a finished flow (raw, before redaction): metadata, challenges and issued
    /// tokens.
    pub fn observe(&self, flow: &Flow) {
        let Some(resp) = flow.response.as_ref().filter(|r| !r.synthetic) else {
            return;
        };
        let url = &flow.request.url;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // A challenge names the scope the resource wants.
        if matches!(resp.status, 401 | 403) {
            if let (Some(www), Some(c)) = (resp.headers.get("www-authenticate"), canonical(url)) {
                if let Some(scope) = challenge_param(www, "scope") {
                    st.resources.entry(c).or_default().challenged_scope = Some(scopes(&scope));
                }
            }
            return;
        }
        if resp.status != 200 {
            return;
        }
        if url.contains("/.well-known/oauth-protected-resource") {
            if let Some(doc) = json(&resp.body.bytes) {
                if let (Some(res), Some(servers)) = (
                    doc.get("resource")
                        .and_then(|v| v.as_str())
                        .and_then(canonical),
                    doc.get("authorization_servers").and_then(|v| v.as_array()),
                ) {
                    let entry = st.resources.entry(res).or_default();
                    entry.authorization_servers = servers
                        .iter()
                        .filter_map(|s| s.as_str())
                        .map(|s| trim_slash(s).to_owned())
                        .collect();
                }
            }
            return;
        }
        if url.contains("/.well-known/oauth-authorization-server")
            || url.contains("/.well-known/openid-configuration")
        {
            if let Some(doc) = json(&resp.body.bytes) {
                if let (Some(issuer), Some(te)) = (
                    doc.get("issuer").and_then(|v| v.as_str()),
                    doc.get("token_endpoint")
                        .and_then(|v| v.as_str())
                        .and_then(canonical),
                ) {
                    st.token_endpoints.insert(te, trim_slash(issuer).to_owned());
                }
            }
            return;
        }
        if flow.request.method != "POST" {
            return;
        }
        let Some(doc) = json(&resp.body.bytes) else {
            return;
        };
        let Some(token) = doc.get("access_token").and_then(|v| v.as_str()) else {
            return;
        };
        let bearer = doc
            .get("token_type")
            .and_then(|v| v.as_str())
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer"));
        if !bearer || token.is_empty() || redact::parse_redacted(token).is_some() {
            return; // DPoP or other schemes, empty tokens, redacted input: never injected
        }
        let issued_at = flow.timings.response_head.unwrap_or(flow.timings.started);
        let expires_in = doc.get("expires_in").and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_f64().map(|f| f as i64))
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        });
        let jwt_exp = redact::decode_jwt(token)
            .and_then(|j| j.claims.get("exp").and_then(|e| e.as_i64()))
            .map(|exp| exp * 1_000_000);
        let expires_at = expires_in.map(|s| issued_at + s * 1_000_000).or(jwt_exp);
        let body = &flow.request.body.bytes;
        let endpoint = canonical(url).unwrap_or_default();
        let issuer = st
            .token_endpoints
            .get(&endpoint)
            .cloned()
            .or_else(|| origin_of(url))
            .unwrap_or_default();
        let scope = doc
            .get("scope")
            .and_then(|v| v.as_str())
            .map(scopes)
            .or_else(|| form_value(body, "scope").map(|s| scopes(&s)));
        st.tokens.push(Issued {
            fingerprint: redact::fingerprint(token),
            token: token.to_owned(),
            flow: flow.id,
            issued_at,
            expires_at,
            issuer,
            resource: form_value(body, "resource").and_then(|r| canonical(&r)),
            scope,
        });
        // Bounded: only the newest tokens matter.
        if st.tokens.len() > 256 {
            st.tokens.remove(0);
        }
    }

    /// A token for a bare request to `url` at `now`, or why not.
    pub fn pick(&self, url: &str, now: Micros) -> Result<Pick, Skip> {
        let target = canonical(url).ok_or(Skip::NotAResource)?;
        if target.starts_with("http://") && !is_loopback_host(url) {
            return Err(Skip::Insecure);
        }
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // The resource this URL belongs to: its exact URL or a path prefix at a segment boundary.
        let (resource, meta) = st
            .resources
            .iter()
            .filter(|(r, m)| {
                !m.authorization_servers.is_empty()
                    && (target == **r || target.starts_with(&format!("{}/", trim_slash(r))))
            })
            .max_by_key(|(r, _)| r.len())
            .ok_or_else(|| {
                // Say so when only a trailing slash stands between the URL and a resource.
                match st
                    .resources
                    .keys()
                    .find(|r| trim_slash(r) == trim_slash(&target))
                {
                    Some(r) => Skip::SlashOnly(r.clone()),
                    None => Skip::NotAResource,
                }
            })?;
        let mut slash_only = None;
        let candidate = st
            .tokens
            .iter()
            .rev() // newest first
            .filter(|t| meta.authorization_servers.contains(&t.issuer))
            .filter(|t| match &t.resource {
                Some(r) if r == resource => true,
                Some(r) if trim_slash(r) == trim_slash(resource) => {
                    slash_only = Some(r.clone());
                    false
                }
                Some(_) => false,
                // No `resource` at /token: the metadata's authorization server issued it, and
                // the client had no other resource in mind.
                None => true,
            })
            .filter(|t| t.expires_at.is_none_or(|e| e - EXPIRY_SKEW_US > now))
            .filter(|t| match (&meta.challenged_scope, &t.scope) {
                (Some(want), Some(have)) => want.iter().all(|w| have.contains(w)),
                _ => true,
            })
            .max_by_key(|t| t.issued_at);
        match candidate {
            Some(t) => Ok(Pick {
                header: format!("Bearer {}", t.token),
                fingerprint: t.fingerprint.clone(),
                token_flow: t.flow,
            }),
            None => Err(slash_only.map(Skip::SlashOnly).unwrap_or(Skip::NoToken)),
        }
    }
}

#[cfg(test)]
mod tests;
