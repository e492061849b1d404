//! Where a request goes, as text and as parts: CONNECT targets, a tunnel's origin, and the URL
//! helpers every step shares (IPv6 literals bracketed, default ports left out). A leaf: it
//! imports nothing from the rest of the engine.
//!
//! Request targets are checked before anything is forwarded: the authority of an absolute-form
//! request or a CONNECT must name a host and, when it writes a port, a port in 1–65535 in
//! digits. A bad one is refused (`400` naming it), never replaced by a default port.

use http::Uri;

/// A CONNECT target.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub host: String,
    pub port: u16,
    /// True when the client spoke TLS inside the tunnel (so the upstream gets TLS too).
    pub tls: bool,
}

/// Scheme and authority of a tunnel's upstream, and its origin as shown in flow URLs
/// (`https://host:8443`, the default port left out).
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    pub shown: String,
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

/// `host` as it goes in a URL (IPv6 literals bracketed).
pub(crate) fn url_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// The port a scheme implies: 443 for `https`, 80 otherwise.
pub(crate) fn default_port(scheme: &str) -> u16 {
    if scheme == "https" {
        443
    } else {
        80
    }
}

/// `uri` as shown in flows: the default port left out.
pub(crate) fn display_url(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let host = uri.host().unwrap_or("");
    let port = uri.port_u16();
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    match port {
        Some(p) if p != default_port(scheme) => format!("{scheme}://{host}:{p}{path}"),
        _ => format!("{scheme}://{host}{path}"),
    }
}

/// The host of `uri` without IPv6 brackets (empty when it has none).
pub(crate) fn bare_host(uri: &Uri) -> String {
    uri.host()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

/// The host (IPv6 brackets removed) and port of `authority` (`host`, `host:port`,
/// `[v6]:port`), or why it is not a valid target. `default` is the port when none is written;
/// `None` requires one (CONNECT, RFC 9110 §9.3.6). An empty port after a colon, port 0, a port
/// beyond 65535 or not in digits, userinfo (`user@host`, RFC 9110 §4.2.4) and an empty host are
/// refused.
pub(crate) fn host_port(authority: &str, default: Option<u16>) -> Result<(String, u16), String> {
    if authority.contains('@') {
        return Err("a request target must not carry userinfo (user@host)".to_owned());
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let end = rest
                .find(']')
                .ok_or("an IPv6 address without its closing bracket")?;
            let after = &rest[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(format!("{after:?} after the IPv6 address")),
            };
            (&rest[..end], port)
        }
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err("no host".to_owned());
    }
    let port = match (port, default) {
        (Some(p), _) => parse_port(p)?,
        (None, Some(d)) => d,
        (None, None) => return Err("no port: CONNECT takes host:port".to_owned()),
    };
    Ok((host.to_owned(), port))
}

fn parse_port(p: &str) -> Result<u16, String> {
    if p.is_empty() {
        return Err("an empty port after the colon".to_owned());
    }
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {p:?} is not a number"));
    }
    match p.parse::<u16>() {
        Ok(0) => Err("port 0 is not a port to connect to (1–65535)".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("port {p} is out of range (1–65535)")),
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn valid_targets_keep_their_port_and_only_an_absent_one_takes_the_default() {
        for (a, d, want) in [
            ("example.com", Some(80), ("example.com", 80)),
            ("example.com:8080", Some(80), ("example.com", 8080)),
            ("example.com:443", None, ("example.com", 443)),
            ("127.0.0.1:1", None, ("127.0.0.1", 1)),
            ("127.0.0.1:65535", None, ("127.0.0.1", 65535)),
            ("[::1]:8443", None, ("::1", 8443)),
            ("[::1]", Some(443), ("::1", 443)),
        ] {
            let (h, p) = host_port(a, d).unwrap();
            assert_eq!((h.as_str(), p), want, "{a}");
        }
    }

    #[test]
    fn bad_ports_and_authorities_are_refused_with_the_reason() {
        for (a, d, why) in [
            ("127.0.0.1:99999", Some(80), "99999 is out of range"),
            ("host:65536", None, "65536 is out of range"),
            ("host:0", None, "port 0"),
            ("host:", Some(80), "empty port"),
            ("host:+80", None, "not a number"),
            ("host:8o", None, "not a number"),
            ("host:4294967297", None, "out of range"),
            ("host", None, "no port"),
            (":443", None, "no host"),
            ("[::1", None, "closing bracket"),
            ("[::1]x", None, "after the IPv6"),
            ("[::1]:", None, "empty port"),
            ("user:pw@host:443", None, "userinfo"),
            ("a:b:c", None, "not a number"),
        ] {
            let err = host_port(a, d).unwrap_err();
            assert!(err.contains(why), "{a}: {err}");
        }
    }
}
