//! OAuth as mcptap reads it, in one place: the engine's injector and the analyzer both use
//! these, so they cannot disagree about what a capture says.
//!
//! - form and percent codecs ([`form_decode`], [`percent_decode`], [`percent_encode`],
//!   [`form_pairs`], [`form_value`]);
//! - `WWW-Authenticate` challenges and their parameters ([`parse_challenges`]);
//! - URLs as OAuth compares them ([`Url`], [`canonical`]) and the well-known metadata paths
//!   ([`WellKnown`]);
//! - token responses and when their tokens expire ([`expires_in`], [`expires_at`]);
//! - JWT claims ([`decode_jwt`], [`JwtInfo::num`]).
//!
//! Everything here is total: malformed input yields `None` or an empty value, never a panic,
//! because flows come from peers and from other tools' HAR files.

pub use crate::redact::{decode_jwt, JwtInfo};
use crate::Micros;
use serde_json::Value;

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; a malformed
/// escape is kept as it is; bytes that are not UTF-8 become U+FFFD.
pub fn form_decode(b: &[u8]) -> String {
    percent_decode(b, true)
}

/// `%XX` is a byte, and `+` a space when `plus_is_space` (forms; in a URL's userinfo it is a
/// `+`); a malformed escape is kept as it is; bytes that are not UTF-8 become U+FFFD.
pub fn percent_decode(b: &[u8], plus_is_space: bool) -> String {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
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

/// Percent-encodes everything but RFC 3986 unreserved characters (spaces as `%20`, valid in
/// both URLs and form bodies).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The parts of an absolute URL that OAuth compares: scheme and host lower-cased, the default
/// port left out, the path as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
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
            let port = match v6[end + 1..].strip_prefix(':').filter(|p| !p.is_empty()) {
                Some(p) => Some(p.parse().ok()?),
                None => None,
            };
            (v6[..end].to_ascii_lowercase(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                    // A port beyond 65535 is no port: the URL is refused, never read as if it
                    // named the default one.
                    (h.to_ascii_lowercase(), Some(p.parse().ok()?))
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
        let mut out = String::with_capacity(self.scheme.len() + self.host.len() + 10);
        self.push_origin(&mut out);
        out
    }

    /// Origin and path, no query: how endpoints are keyed.
    pub fn endpoint(&self) -> String {
        // Built by hand: the live analyzer asks for several per flow (`format!` was ~1 % of
        // the recorder's time relaying small MCP flows).
        let mut out =
            String::with_capacity(self.scheme.len() + self.host.len() + self.path.len() + 10);
        self.push_origin(&mut out);
        out.push_str(&self.path);
        out
    }

    fn push_origin(&self, out: &mut String) {
        out.push_str(&self.scheme);
        out.push_str("://");
        let v6 = self.host.contains(':');
        if v6 {
            out.push('[');
        }
        out.push_str(&self.host);
        if v6 {
            out.push(']');
        }
        if let Some(p) = self.port {
            use std::fmt::Write as _;
            let _ = write!(out, ":{p}");
        }
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

/// The well-known metadata documents OAuth discovery fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WellKnown {
    /// Protected-resource metadata (RFC 9728).
    ProtectedResource,
    /// Authorization-server metadata (RFC 8414).
    AuthorizationServer,
    /// OpenID Connect discovery.
    OpenidConfiguration,
}

impl WellKnown {
    /// Every kind, protected resource first.
    pub const ALL: [WellKnown; 3] = [
        WellKnown::ProtectedResource,
        WellKnown::AuthorizationServer,
        WellKnown::OpenidConfiguration,
    ];

    /// The well-known path (`/.well-known/oauth-protected-resource`).
    pub const fn path(self) -> &'static str {
        match self {
            WellKnown::ProtectedResource => "/.well-known/oauth-protected-resource",
            WellKnown::AuthorizationServer => "/.well-known/oauth-authorization-server",
            WellKnown::OpenidConfiguration => "/.well-known/openid-configuration",
        }
    }

    /// The metadata a request `path` fetches: one that holds a well-known path anywhere (path
    /// insertion puts it first, `<issuer>/.well-known/openid-configuration` after the issuer's
    /// path).
    pub fn of_path(path: &str) -> Option<WellKnown> {
        WellKnown::ALL.into_iter().find(|w| path.contains(w.path()))
    }

    /// The metadata the URL `url` fetches (its path only is looked at).
    pub fn of_url(url: &str) -> Option<WellKnown> {
        WellKnown::of_path(&Url::parse(url)?.path)
    }

    /// Authorization-server metadata (RFC 8414 or OpenID Connect discovery).
    pub fn is_server_metadata(self) -> bool {
        self != WellKnown::ProtectedResource
    }
}

/// `scheme://host[:port]/path` lowercased in scheme and host, without query, fragment or default
/// port; the path as sent (a trailing slash is significant and kept). How endpoints and
/// resources are keyed.
pub fn canonical(url: &str) -> Option<String> {
    Url::parse(url).map(|u| u.endpoint())
}

/// Decodes `application/x-www-form-urlencoded` text into pairs (also used for queries).
pub fn form_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k.as_bytes()), form_decode(v.as_bytes()))
        })
        .collect()
}

/// The first value of `key` in a form body (`None` when it is not UTF-8 or has no such key).
pub fn form_value(body: &[u8], key: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| form_decode(v.as_bytes()))
    })
}

/// `expires_in` of a token response, in seconds, accepting numbers and numeric strings (some
/// servers send strings).
pub fn expires_in(doc: &Value) -> Option<i64> {
    match doc.get("expires_in")? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<f64>().ok().map(|f| f as i64),
        _ => None,
    }
}

/// When a token issued at `issued_at` expires: `expires_in` seconds later, else at the `exp`
/// claim of the token when it is a JWT.
pub fn expires_at(
    expires_in: Option<i64>,
    jwt: Option<&JwtInfo>,
    issued_at: Micros,
) -> Option<Micros> {
    expires_in
        .map(|s| issued_at.saturating_add(s.saturating_mul(1_000_000)))
        .or_else(|| {
            jwt.and_then(|j| j.num("exp"))
                .map(|e| e.saturating_mul(1_000_000))
        })
}

/// The access token of a token response that a resource takes as `Authorization: Bearer`: a
/// non-empty `access_token` with `token_type` `Bearer`, and not a redaction marker (DPoP and
/// other schemes, empty tokens and redacted captures give `None`).
pub fn bearer_access_token(doc: &Value) -> Option<&str> {
    let token = doc.get("access_token")?.as_str()?;
    (is_bearer_response(doc) && !token.is_empty() && crate::redact::parse_redacted(token).is_none())
        .then_some(token)
}

/// True when a token response's `token_type` is `Bearer` (compared without regard to case).
pub fn is_bearer_response(doc: &Value) -> bool {
    doc.get("token_type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
}

impl JwtInfo {
    /// A numeric claim (`exp`, `iat`, `nbf`), whole seconds; fractions are cut.
    pub fn num(&self, claim: &str) -> Option<i64> {
        self.claims
            .get(claim)
            .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
    }
}

/// One parsed authentication challenge (`Bearer realm="x", error="invalid_token"`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Challenge {
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
pub fn parse_challenges<'a>(values: impl Iterator<Item = &'a str>) -> Vec<Challenge> {
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
    fn canonical_urls_drop_default_ports_query_and_case_but_keep_the_path() {
        for (url, want) in [
            (
                "HTTPS://Mcp.Example.com:443/MCP/?x=1#f",
                Some("https://mcp.example.com/MCP/"),
            ),
            ("http://127.0.0.1:80", Some("http://127.0.0.1/")),
            ("http://[::1]:8080/mcp", Some("http://[::1]:8080/mcp")),
            ("https://user:pw@h:8443/a", Some("https://h:8443/a")),
            // A port that is no port is refused, never read as the default one.
            ("https://h:99999/mcp", None),
            ("https://[::1]:70000/mcp", None),
            ("mcp.example.com/mcp", None),
        ] {
            assert_eq!(canonical(url).as_deref(), want, "{url}");
        }
    }

    #[test]
    fn percent_and_form_codecs_are_total_and_agree() {
        assert_eq!(form_decode(b"a%2Fb%"), "a/b%");
        assert_eq!(form_decode(b"%zz%4"), "%zz%4");
        assert_eq!(form_decode(b"%41+b"), "A b");
        assert_eq!(percent_decode(b"%41+b", false), "A+b");
        // A sign is not a hex digit.
        assert_eq!(form_decode(b"%+1"), "% 1");
        assert_eq!(form_decode(b"%ff"), "\u{fffd}");
        let s = "https://h/cb?a=1 b&c=ü";
        assert_eq!(form_decode(percent_encode(s).as_bytes()), s);
        assert_eq!(
            form_pairs("grant_type=refresh_token&&scope=a+b&flag"),
            [
                ("grant_type".to_owned(), "refresh_token".to_owned()),
                ("scope".to_owned(), "a b".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
        let body = b"grant_type=authorization_code&resource=https%3A%2F%2Fh%2Fmcp";
        assert_eq!(
            form_value(body, "resource").as_deref(),
            Some("https://h/mcp")
        );
        assert_eq!(form_value(body, "scope"), None);
        assert_eq!(form_value(b"\xff=1", "a"), None);
    }

    #[test]
    fn well_known_paths_are_recognised_by_path_only() {
        use WellKnown::*;
        for (url, want) in [
            (
                "https://h/.well-known/oauth-protected-resource",
                Some(ProtectedResource),
            ),
            (
                "https://h/.well-known/oauth-protected-resource/mcp",
                Some(ProtectedResource),
            ),
            (
                "https://h/.well-known/oauth-authorization-server/t1",
                Some(AuthorizationServer),
            ),
            (
                "https://h/t1/.well-known/openid-configuration",
                Some(OpenidConfiguration),
            ),
            (
                "https://h/mcp?next=/.well-known/oauth-protected-resource",
                None,
            ),
            ("https://h/mcp", None),
        ] {
            assert_eq!(WellKnown::of_url(url), want, "{url}");
        }
        assert!(
            AuthorizationServer.is_server_metadata() && !ProtectedResource.is_server_metadata()
        );
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
        // Names are case-insensitive; a name that merely ends in another is not it.
        let c = parse_challenges(["Bearer SCOPE=read, x_scope=\"no\""].into_iter());
        assert_eq!(c[0].param("scope"), Some("read"));
        assert_eq!(c[0].param("x_scope"), Some("no"));
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
    }

    #[test]
    fn expiry_comes_from_expires_in_else_the_jwt_exp_claim() {
        use base64::Engine as _;
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let jwt = format!(
            "{}.{}.sig",
            enc(r#"{"alg":"none"}"#),
            enc(r#"{"exp":2000.5}"#)
        );
        let claims = decode_jwt(&jwt).unwrap();
        assert_eq!(claims.num("exp"), Some(2000));
        assert_eq!(claims.num("iat"), None);
        for (doc, want) in [
            (serde_json::json!({"expires_in": 3600}), Some(3600)),
            (serde_json::json!({"expires_in": 3600.9}), Some(3600)),
            (serde_json::json!({"expires_in": " 60 "}), Some(60)),
            (serde_json::json!({"expires_in": "60.5"}), Some(60)),
            (serde_json::json!({"expires_in": "soon"}), None),
            (serde_json::json!({"expires_in": null}), None),
            (serde_json::json!({}), None),
        ] {
            assert_eq!(expires_in(&doc), want, "{doc}");
        }
        let issued = 1_000_000;
        assert_eq!(
            expires_at(Some(60), Some(&claims), issued),
            Some(61_000_000)
        );
        assert_eq!(expires_at(None, Some(&claims), issued), Some(2_000_000_000));
        assert_eq!(expires_at(None, None, issued), None);
        assert_eq!(expires_at(Some(i64::MAX), None, issued), Some(i64::MAX));
        assert!(is_bearer_response(
            &serde_json::json!({"token_type": "bearer"})
        ));
        assert!(!is_bearer_response(
            &serde_json::json!({"token_type": "DPoP"})
        ));
        let marker = crate::redact::redacted("secret");
        for (doc, want) in [
            (
                serde_json::json!({"access_token": "t", "token_type": "Bearer"}),
                Some("t"),
            ),
            (
                serde_json::json!({"access_token": "t", "token_type": "DPoP"}),
                None,
            ),
            (serde_json::json!({"access_token": "t"}), None),
            (
                serde_json::json!({"access_token": "", "token_type": "Bearer"}),
                None,
            ),
            (
                serde_json::json!({"access_token": marker, "token_type": "Bearer"}),
                None,
            ),
        ] {
            assert_eq!(bearer_access_token(&doc), want, "{doc}");
        }
    }
}
