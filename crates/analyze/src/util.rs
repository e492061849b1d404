//! Small, dependency-free parsers the rules share: URLs, form bodies, `WWW-Authenticate`
//! challenges, JSON bodies, PKCE, and the "is this host reachable from elsewhere" test.
//!
//! Everything here is total: malformed input yields `None` or an empty value, never a panic,
//! because flows come from peers and from other tools' HAR files.

use base64::Engine as _;
use mcptap_flow::{redact, Flow};
use serde_json::Value;
use std::net::IpAddr;

/// The parts of an absolute URL the rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    /// Lower-case scheme (`https`).
    pub scheme: String,
    /// Lower-case host without brackets.
    pub host: String,
    /// Explicit port, if it differs from the scheme's default.
    pub port: Option<u16>,
    /// Path, `/` when empty.
    pub path: String,
    /// Raw query (without `?`), if any.
    pub query: Option<String>,
}

impl Url {
    /// Parses an absolute `http(s)://` URL.
    pub fn parse(s: &str) -> Option<Url> {
        let s = s.trim();
        let (scheme, rest) = s.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+')
        {
            return None;
        }
        let rest = rest.split('#').next().unwrap_or("");
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..auth_end];
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let tail = &rest[auth_end..];
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']')?;
            let port = v6[end + 1..].strip_prefix(':').and_then(|p| p.parse().ok());
            (v6[..end].to_ascii_lowercase(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                    (h.to_ascii_lowercase(), p.parse().ok())
                }
                Some((h, "")) => (h.to_ascii_lowercase(), None),
                _ => (authority.to_ascii_lowercase(), None),
            }
        };
        if host.is_empty() {
            return None;
        }
        let default = match scheme.as_str() {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        };
        let port = port.filter(|p| Some(*p) != default);
        let (path, query) = match tail.split_once('?') {
            Some((p, q)) => (p, Some(q.to_owned())),
            None => (tail, None),
        };
        let path = if path.is_empty() { "/" } else { path };
        Some(Url {
            scheme,
            host,
            port,
            path: path.to_owned(),
            query,
        })
    }

    /// `scheme://host[:port]`, default port omitted, IPv6 bracketed.
    pub fn origin(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(p) => format!("{}://{}:{}", self.scheme, host, p),
            None => format!("{}://{}", self.scheme, host),
        }
    }

    /// Origin and path, no query: how endpoints are keyed.
    pub fn endpoint(&self) -> String {
        format!("{}{}", self.origin(), self.path)
    }

    /// The effective port (explicit or the scheme's default).
    pub fn effective_port(&self) -> Option<u16> {
        self.port.or(match self.scheme.as_str() {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        })
    }

    /// Query parameters, decoded.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query.as_deref().map(form_pairs).unwrap_or_default()
    }

    /// The first query parameter called `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// Resolves `location` (absolute, absolute-path or relative) against this URL.
    pub fn join(&self, location: &str) -> Option<Url> {
        let location = location.trim();
        if location.contains("://") {
            return Url::parse(location);
        }
        if let Some(rest) = location.strip_prefix("//") {
            return Url::parse(&format!("{}://{}", self.scheme, rest));
        }
        if location.starts_with('/') {
            return Url::parse(&format!("{}{}", self.origin(), location));
        }
        let dir = match self.path.rfind('/') {
            Some(i) => &self.path[..=i],
            None => "/",
        };
        Url::parse(&format!("{}{}{}", self.origin(), dir, location))
    }
}

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

/// Decodes `application/x-www-form-urlencoded` text into pairs (also used for queries).
pub(crate) fn form_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Percent-decodes, turning `+` into a space (form semantics). Invalid escapes stay as written.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// One parsed authentication challenge (`Bearer realm="x", error="invalid_token"`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Challenge {
    /// The scheme, as written.
    pub scheme: String,
    /// Parameters with lower-case names, in order.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// The value of parameter `name` (lower case).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// True for the `Bearer` scheme.
    pub fn is_bearer(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("bearer")
    }
}

/// Parses every challenge in the `WWW-Authenticate` values (RFC 9110 §11.6.1), tolerating the
/// usual sloppiness (unquoted values, missing commas).
pub(crate) fn parse_challenges<'a>(values: impl Iterator<Item = &'a str>) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    for value in values {
        let mut rest = value.trim();
        while !rest.is_empty() {
            // Any whitespace, as the token below ends at any: a vertical tab or a no-break
            // space left here would never be consumed (found by the fuzz smoke run).
            rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
            if rest.is_empty() {
                break;
            }
            // A token followed by `=` is a parameter of the current challenge; otherwise it is
            // a new scheme.
            let tok_end = rest
                .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
                .unwrap_or(rest.len());
            let token = &rest[..tok_end];
            let after = rest[tok_end..].trim_start_matches(char::is_whitespace);
            if let (Some(val_src), false) = (after.strip_prefix('='), out.is_empty()) {
                // token68 (`Basic abc==`) ends with '=' signs and has no value after it.
                let val_src = val_src.trim_start_matches([' ', '\t']);
                let (val, next) = if let Some(q) = val_src.strip_prefix('"') {
                    let mut v = String::new();
                    let mut chars = q.char_indices();
                    let mut end = q.len();
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => {
                                if let Some((_, n)) = chars.next() {
                                    v.push(n);
                                }
                            }
                            '"' => {
                                end = i + 1;
                                break;
                            }
                            c => v.push(c),
                        }
                    }
                    (v, &q[end.min(q.len())..])
                } else {
                    let e = val_src.find([',', ' ', '\t']).unwrap_or(val_src.len());
                    (val_src[..e].to_owned(), &val_src[e..])
                };
                if let Some(c) = out.last_mut() {
                    c.params.push((token.to_ascii_lowercase(), val));
                }
                rest = next;
            } else if token.is_empty() {
                // A stray `=` where a scheme belongs: skip it (every turn must consume).
                rest = &rest[1..];
            } else {
                out.push(Challenge {
                    scheme: token.to_owned(),
                    params: Vec::new(),
                });
                rest = &rest[tok_end..];
                // Skip a token68 credential-like blob (`Basic realm` is handled as params).
            }
        }
    }
    out
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

/// `expires_in` as seconds, accepting numbers and numeric strings (some servers send strings).
pub(crate) fn expires_in(v: &Value) -> Option<i64> {
    match v.get("expires_in")? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<f64>().ok().map(|f| f as i64),
        _ => None,
    }
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
    fn urls_parse_and_join() {
        let u = Url::parse("HTTPS://Example.COM:443/a/b?x=1&y=a%20b+c#frag").unwrap();
        assert_eq!(u.origin(), "https://example.com");
        assert_eq!(u.path, "/a/b");
        assert_eq!(u.query_param("y").as_deref(), Some("a b c"));
        assert_eq!(u.join("/c").unwrap().endpoint(), "https://example.com/c");
        assert_eq!(u.join("c").unwrap().endpoint(), "https://example.com/a/c");
        assert_eq!(
            u.join("http://other:8080/x").unwrap().origin(),
            "http://other:8080"
        );
        let v6 = Url::parse("http://[::1]:9/cb").unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.origin(), "http://[::1]:9");
        assert!(Url::parse("not a url").is_none());
        assert!(Url::parse("https:///x").is_none());
    }

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
    fn challenges_with_odd_whitespace_or_a_stray_equals_sign_end() {
        // Each of these looped forever, pushing empty challenges (found by fuzzing).
        let cases: [(&str, &[&str]); 4] = [
            ("Bearer realm=\"x\"\u{b}error=invalid_token", &["Bearer"]),
            ("\u{a0}Bearer error=\"e\"", &["Bearer"]),
            ("=abc", &["abc"]),
            (
                "Basic realm=\"x\", \u{c}Bearer\u{b}scope=a",
                &["Basic", "Bearer"],
            ),
        ];
        for (value, schemes) in cases {
            let parsed = parse_challenges(std::iter::once(value));
            let got: Vec<&str> = parsed.iter().map(|c| c.scheme.as_str()).collect();
            assert_eq!(got, schemes, "{value:?}");
        }
        let parsed = parse_challenges(std::iter::once("Bearer realm=\"x\"\u{b}error=e"));
        assert_eq!(parsed[0].param("error"), Some("e"));
    }

    #[test]
    fn challenges_parse_quoted_and_bare_values() {
        let c = parse_challenges(
            [r#"Bearer error="insufficient_scope", scope="a b", resource_metadata="https://h/.well-known/oauth-protected-resource/mcp""#, "Basic realm=x"]
                .into_iter(),
        );
        assert_eq!(c.len(), 2);
        assert!(c[0].is_bearer());
        assert_eq!(c[0].param("scope"), Some("a b"));
        assert_eq!(c[0].param("error"), Some("insufficient_scope"));
        assert_eq!(c[1].scheme, "Basic");
        assert_eq!(c[1].param("realm"), Some("x"));
        let bare = parse_challenges(["Bearer"].into_iter());
        assert_eq!(bare.len(), 1);
        assert!(bare[0].params.is_empty());
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

    #[test]
    fn percent_decoding_is_total() {
        assert_eq!(percent_decode("a%2Fb%"), "a/b%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%41"), "A");
    }
}
