//! `--proxy-auth`: explicit mode asks every request on the proxy listener (CONNECT included)
//! for `Proxy-Authorization: Basic` with the configured credentials, and answers `407`
//! otherwise. Requests inside an admitted tunnel are not asked again.

use crate::hook::Hook;
use crate::message::{text_response, ProxyBody};
use http::{Request, Response};
use hyper::body::Incoming;

/// The proxy-authentication hook.
#[derive(Debug)]
pub(crate) struct ProxyAuth {
    /// The expected `Proxy-Authorization` value (`Basic …`).
    expected: String,
}

impl ProxyAuth {
    /// Expects the `user:pass` `credentials`.
    pub(crate) fn new(credentials: &str) -> ProxyAuth {
        use base64::Engine as _;
        ProxyAuth {
            expected: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            ),
        }
    }
}

impl Hook for ProxyAuth {
    /// A `407` unless the request carries the expected credentials.
    fn admit(&self, req: &Request<Incoming>) -> Option<Response<ProxyBody>> {
        let given = req
            .headers()
            .get(http::header::PROXY_AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given.is_some_and(|g| basic_matches(g, &self.expected)) {
            return None;
        }
        let mut resp = text_response(
            http::StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            "mcptap: proxy authentication required (--proxy-auth)\n",
        );
        resp.headers_mut().insert(
            http::header::PROXY_AUTHENTICATE,
            http::HeaderValue::from_static("Basic realm=\"mcptap\""),
        );
        Some(resp)
    }
}

/// True when `given` is `<scheme> <credentials>` with the scheme `expected` has (compared
/// without regard to case, RFC 9110 §11.1) and exactly its credentials; spaces may repeat.
fn basic_matches(given: &str, expected: &str) -> bool {
    let split = |s: &str| -> Option<(String, String)> {
        let (scheme, cred) = s.trim().split_once(' ')?;
        Some((scheme.to_ascii_lowercase(), cred.trim_start().to_owned()))
    };
    match (split(given), split(expected)) {
        (Some((gs, gc)), Some((es, ec))) => {
            // Compared in full whatever the first difference (no early exit on the secret).
            let same = gc.len() == ec.len()
                && gc
                    .bytes()
                    .zip(ec.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0;
            gs == es && same
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::basic_matches;

    #[test]
    fn the_scheme_is_case_insensitive_and_the_credentials_exact() {
        let expected = "Basic dTpw";
        assert!(basic_matches("Basic dTpw", expected));
        assert!(basic_matches("basic   dTpw", expected));
        assert!(!basic_matches("Basic dTpX", expected));
        assert!(!basic_matches("Basic dTp", expected));
        assert!(!basic_matches("Bearer dTpw", expected));
        assert!(!basic_matches("dTpw", expected));
    }
}
