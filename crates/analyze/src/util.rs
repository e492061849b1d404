//! What the rules share: a flow's challenges, forms and JSON bodies, PKCE, and the "is this host
//! reachable from elsewhere" test. The OAuth parsers themselves (URLs, form and percent codecs,
//! `WWW-Authenticate` challenges, expiry) are `mcptap_flow::oauth`, the same the engine's
//! injector uses; they are re-exported here under the names the rules know.
//!
//! Everything here is total: malformed input yields `None` or an empty value, never a panic,
//! because flows come from peers and from other tools' HAR files.

use base64::Engine as _;
pub(crate) use mcptap_flow::oauth::{expires_in, form_pairs, parse_challenges, Challenge, Url};
use mcptap_flow::{redact, Flow};
use serde_json::Value;
use std::net::IpAddr;

/// Trims one trailing slash from a path (`/mcp/` → `/mcp`, `/` → ``).
pub(crate) fn trim_slash(path: &str) -> &str {
    path.strip_suffix('/').unwrap_or(path)
}

/// The SDKs' rule for a protected-resource `resource` value: same origin, and its path is a
/// prefix of the endpoint's path on a segment boundary (trailing slashes ignored).
pub(crate) fn resource_covers(resource: &Url, endpoint: &Url) -> bool {
    if resource.origin() != endpoint.origin() {
        return false;
    }
    let r = trim_slash(&resource.path);
    let e = trim_slash(&endpoint.path);
    r.is_empty() || e == r || e.starts_with(&format!("{r}/"))
}

/// The challenges of a flow's response.
pub(crate) fn challenges(flow: &Flow) -> Vec<Challenge> {
    match &flow.response {
        Some(r) => parse_challenges(r.headers.get_all("www-authenticate")),
        None => Vec::new(),
    }
}

/// The request's `Authorization` scheme and credential fingerprint (works on raw and redacted
/// captures).
pub(crate) fn authorization(flow: &Flow) -> Option<(String, String)> {
    let v = flow.request.headers.get("authorization")?;
    let v = v.trim();
    let (scheme, cred) = v.split_once(' ').unwrap_or((v, ""));
    let cred = cred.trim();
    Some((scheme.to_owned(), redact::fingerprint_of(cred)))
}

/// The fingerprint of the bearer credential the client sent, if any (a non-empty one).
pub(crate) fn bearer_fp(flow: &Flow) -> Option<String> {
    let v = flow.request.headers.get("authorization")?.trim();
    let (scheme, cred) = v.split_once(' ')?;
    let cred = cred.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !cred.is_empty() {
        Some(redact::fingerprint_of(cred))
    } else {
        None
    }
}

/// The request body as JSON, if it parses.
pub(crate) fn request_json(flow: &Flow) -> Option<Value> {
    let s = flow.request.body.as_str()?.trim();
    if !(s.starts_with('{') || s.starts_with('[')) {
        return None;
    }
    serde_json::from_str(s).ok()
}

/// The response body as JSON, if it parses.
pub(crate) fn response_json(flow: &Flow) -> Option<Value> {
    let s = flow.response.as_ref()?.body.as_str()?.trim();
    if !(s.starts_with('{') || s.starts_with('[')) {
        return None;
    }
    serde_json::from_str(s).ok()
}

/// The request body as form pairs, if it looks like a form.
pub(crate) fn request_form(flow: &Flow) -> Option<Vec<(String, String)>> {
    let ct = flow
        .request
        .headers
        .get("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    let s = flow.request.body.as_str()?.trim();
    if s.is_empty() {
        return None;
    }
    let looks_form = ct.contains("x-www-form-urlencoded")
        || (!s.starts_with('{') && !s.starts_with('[') && s.contains('='));
    looks_form.then(|| form_pairs(s))
}

/// The first value of `name` in form pairs.
pub(crate) fn form_get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The response's content type, lower case, parameters dropped.
pub(crate) fn response_content_type(flow: &Flow) -> String {
    flow.response
        .as_ref()
        .and_then(|r| r.headers.get("content-type"))
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// True when the response body looks like HTML (content type or a leading `<`).
pub(crate) fn response_is_html(flow: &Flow) -> bool {
    let ct = response_content_type(flow);
    if ct.contains("html") {
        return true;
    }
    flow.response
        .as_ref()
        .and_then(|r| r.body.as_str())
        .is_some_and(|b| b.trim_start().starts_with('<'))
}

/// A response header value.
pub(crate) fn response_header<'a>(flow: &'a Flow, name: &str) -> Option<&'a str> {
    flow.response.as_ref().and_then(|r| r.headers.get(name))
}

/// A JSON string field.
pub(crate) fn jstr<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A JSON array of strings (non-strings skipped); empty when absent.
pub(crate) fn jstrs(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// BASE64URL-nopad(SHA-256(verifier)): the S256 code challenge (RFC 7636 §4.2).
#[cfg(test)]
pub(crate) fn s256(verifier: &str) -> String {
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// The first 12 hex digits of the SHA-256 a code challenge encodes, i.e. the fingerprint of the
/// verifier it was made from. Lets PKCE be checked on redacted captures, where only the
/// verifier's fingerprint survives.
pub(crate) fn challenge_fingerprint(challenge: &str) -> Option<String> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(challenge.trim().trim_end_matches('='))
        .ok()?;
    if raw.len() != 32 {
        return None;
    }
    Some(raw[..6].iter().map(|b| format!("{b:02x}")).collect())
}

/// `len=N` from a redaction marker.
pub(crate) fn redacted_len(value: &str) -> Option<usize> {
    redact::parse_redacted(value)?;
    let i = value.find(" len=")?;
    value[i + 5..].trim_end_matches(']').parse().ok()
}

/// True when `host` names this machine or a private network: the kind of address a public
/// client (or a cloud-hosted one such as Claude.ai) cannot reach.
pub(crate) fn host_is_internal(host: &str) -> bool {
    let h = host.trim_matches(['[', ']']).to_ascii_lowercase();
    if h == "localhost"
        || h.ends_with(".localhost")
        || h.ends_with(".local")
        || h.ends_with(".internal")
        || h.ends_with(".lan")
        || h == "0.0.0.0"
    {
        return true;
    }
    match h.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified()
        }
        Ok(IpAddr::V6(v6)) => {
            let seg0 = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (seg0 & 0xfe00) == 0xfc00
                || (seg0 & 0xffc0) == 0xfe80
        }
        Err(_) => false,
    }
}

/// True when `host` is a loopback name or address.
pub(crate) fn host_is_loopback(host: &str) -> bool {
    let h = host.trim_matches(['[', ']']).to_ascii_lowercase();
    h == "localhost"
        || h.ends_with(".localhost")
        || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Seconds with one decimal, for summaries.
pub(crate) fn secs(us: i64) -> String {
    format!("{:.1} s", us as f64 / 1_000_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_prefix_rule() {
        let r =
            |a: &str, b: &str| resource_covers(&Url::parse(a).unwrap(), &Url::parse(b).unwrap());
        assert!(r("https://h/mcp", "https://h/mcp"));
        assert!(r("https://h/mcp/", "https://h/mcp"));
        assert!(r("https://h", "https://h/mcp"));
        assert!(!r("https://h/mcp", "https://h/mcpx"));
        assert!(!r("https://h/mcp", "https://g/mcp"));
        assert!(!r("https://h/api/mcp", "https://h/mcp"));
    }

    #[test]
    fn pkce_s256_matches_rfc7636_example() {
        // RFC 7636 appendix B.
        let v = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(s256(v), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert_eq!(
            challenge_fingerprint(&s256(v)).unwrap(),
            redact::fingerprint(v)
        );
        assert_eq!(redacted_len(&redact::redacted(v)), Some(v.len()));
    }

    #[test]
    fn internal_hosts() {
        for h in [
            "localhost",
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "::1",
            "fd00::1",
            "db.internal",
        ] {
            assert!(host_is_internal(h), "{h}");
        }
        for h in ["example.com", "8.8.8.8", "2001:db8::1"] {
            assert!(!host_is_internal(h), "{h}");
        }
    }
}
