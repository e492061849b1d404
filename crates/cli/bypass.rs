//! Reverse mode without `--rewrite-metadata`: a challenge or metadata that names another origin
//! than the one the client used to reach mcptap sends the client's next requests around the
//! proxy, and the capture then ends after a flow or two with no hint. This watch says so the
//! moment it is seen, once per origin, and names the option that fixes it.

use mcptap_flow::Flow;
use std::collections::HashSet;

/// The metadata fields whose URLs a client goes on to request.
const FOLLOWED_FIELDS: &[&str] = &[
    "authorization_servers",
    "issuer",
    "authorization_endpoint",
    "token_endpoint",
    "registration_endpoint",
    "revocation_endpoint",
    "jwks_uri",
];

/// Remembers which foreign origins were already reported.
#[derive(Debug, Default)]
pub struct BypassWatch {
    warned: HashSet<String>,
}

impl BypassWatch {
    /// The warning for a finished flow whose answer sends the client elsewhere, if it names an
    /// origin not reported yet.
    pub fn check(&mut self, flow: &Flow) -> Option<String> {
        let public = origin(&flow.request.url)?;
        let resp = flow.response.as_ref()?;
        let mut found: Vec<(String, &'static str)> = Vec::new();
        for v in resp.headers.get_all("www-authenticate") {
            for u in urls_in(v) {
                found.push((u, "its WWW-Authenticate challenge"));
            }
        }
        let json = resp
            .headers
            .get("content-type")
            .is_some_and(|c| c.contains("json"));
        if json && flow.request.url.contains("/.well-known/") {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&resp.body.bytes) {
                for field in FOLLOWED_FIELDS {
                    let vals: Vec<&str> = match v.get(field) {
                        Some(serde_json::Value::String(s)) => vec![s.as_str()],
                        Some(serde_json::Value::Array(a)) => {
                            a.iter().filter_map(|x| x.as_str()).collect()
                        }
                        _ => continue,
                    };
                    for s in vals {
                        found.push((s.to_owned(), "its metadata"));
                    }
                }
            }
        }
        for (url, whence) in found {
            let Some(other) = origin(&url) else { continue };
            if same_origin(&other, &public) || !self.warned.insert(other.clone()) {
                continue;
            }
            return Some(format!(
                "mcptap: warning: {} {whence} sends the client to {other}, not to {public} where \
                 it reached mcptap: its next requests there bypass the proxy and will not show. \
                 Restart with --rewrite-metadata (and --route PREFIX=URL for a separate \
                 authorization server).",
                flow.id
            ));
        }
        None
    }
}

/// `scheme://host[:port]` of an absolute http(s) URL, lower-cased, without a default port.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?.to_ascii_lowercase();
    if authority.is_empty() {
        return None;
    }
    let default = if scheme == "https" { ":443" } else { ":80" };
    let authority = authority.strip_suffix(default).unwrap_or(&authority);
    Some(format!("{scheme}://{authority}"))
}

/// Equal origins, counting the loopback spellings (`localhost`, `127.0.0.1`, `[::1]`) as one.
fn same_origin(a: &str, b: &str) -> bool {
    let norm = |o: &str| {
        o.replace("://localhost", "://127.0.0.1")
            .replace("://[::1]", "://127.0.0.1")
    };
    norm(a) == norm(b)
}

/// The absolute http(s) URLs in a header value (quoted or bare).
fn urls_in(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = v;
    while let Some(i) = rest.find("http") {
        let tail = &rest[i..];
        if tail.starts_with("http://") || tail.starts_with("https://") {
            let end = tail
                .find(|c: char| c == '"' || c == ',' || c.is_whitespace())
                .unwrap_or(tail.len());
            out.push(tail[..end].to_owned());
            rest = &tail[end..];
        } else {
            rest = &tail[4..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcptap_flow::*;

    fn flow(url: &str, headers: &[(&str, &str)], body: &str) -> Flow {
        Flow {
            id: FlowId(3),
            request: Request {
                method: "GET".into(),
                url: url.into(),
                ..Default::default()
            },
            response: Some(Response {
                status: 401,
                headers: headers.iter().copied().collect(),
                body: CapturedBody::complete(body.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_challenge_naming_the_upstream_is_said_once() {
        let mut w = BypassWatch::default();
        let f = flow(
            "http://127.0.0.1:9000/mcp",
            &[(
                "www-authenticate",
                r#"Bearer resource_metadata="https://mcp.internal:8443/.well-known/oauth-protected-resource/mcp""#,
            )],
            "",
        );
        let warning = w.check(&f).expect("a warning");
        assert!(
            warning.contains("#3 its WWW-Authenticate challenge sends the client to https://mcp.internal:8443, not to http://127.0.0.1:9000")
                && warning.contains("--rewrite-metadata"),
            "{warning}"
        );
        assert_eq!(w.check(&f), None, "once per origin");
    }

    #[test]
    fn metadata_naming_the_public_origin_is_fine_and_another_is_not() {
        let mut w = BypassWatch::default();
        let ok = flow(
            "https://localhost:9000/.well-known/oauth-protected-resource/mcp",
            &[("content-type", "application/json")],
            r#"{"resource":"https://mcp.internal/mcp","authorization_servers":["https://127.0.0.1:9000"]}"#,
        );
        assert_eq!(w.check(&ok), None);
        let bad = flow(
            "https://localhost:9000/.well-known/oauth-authorization-server",
            &[("content-type", "application/json")],
            r#"{"issuer":"https://localhost:9000","token_endpoint":"https://auth.example.com:443/token"}"#,
        );
        assert!(w.check(&bad).unwrap().contains("https://auth.example.com,"));
    }
}
