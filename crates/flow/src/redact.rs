//! Secret fingerprints: the same secret always gets the same short, non-reversible name, so
//! saved sessions can be shared and analysis can still tell whether the token sent is the token
//! issued.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One secret that was replaced by its fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretNote {
    /// [`fingerprint`] of the raw value.
    pub fingerprint: String,
    /// Length of the raw value in bytes.
    pub len: usize,
    /// Where it was: `request.header.authorization`, `response.json.access_token`,
    /// `request.form.code`, `request.query.code`, …
    pub place: String,
    /// What the value said, when it was a JWT (never its signature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtInfo>,
}

/// The readable parts of a JWT: its header and the claims that matter for OAuth debugging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JwtInfo {
    /// `alg`, `kid`, `typ` from the JOSE header.
    pub header: serde_json::Map<String, serde_json::Value>,
    /// `iss`, `aud`, `exp`, `iat`, `nbf`, `scope`, `scp`, `client_id`, `azp`, `sub` (if present).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

const JWT_HEADER_KEYS: &[&str] = &["alg", "kid", "typ"];
const JWT_CLAIM_KEYS: &[&str] = &[
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "scope",
    "scp",
    "client_id",
    "azp",
    "sub",
];

/// Decodes the header and the claims that matter of a compact JWS (`xxx.yyy.zzz`); `None` when
/// `token` is not one. The signature is never kept.
pub fn decode_jwt(token: &str) -> Option<JwtInfo> {
    let mut parts = token.split('.');
    let (h, c, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let part = |s: &str, keys: &[&str]| -> Option<serde_json::Map<String, serde_json::Value>> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .ok()?;
        match serde_json::from_slice::<serde_json::Value>(&raw).ok()? {
            serde_json::Value::Object(m) => Some(
                m.into_iter()
                    .filter(|(k, _)| keys.contains(&k.as_str()))
                    .collect(),
            ),
            _ => None,
        }
    };
    Some(JwtInfo {
        header: part(h, JWT_HEADER_KEYS)?,
        claims: part(c, JWT_CLAIM_KEYS)?,
    })
}

/// The first 12 hex digits of the SHA-256 of `secret`.
pub fn fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(12);
    for b in &digest[..6] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// What a redacted secret is written as: `[redacted sha256:<fingerprint> len=<n>]`.
pub fn redacted(secret: &str) -> String {
    format!(
        "[redacted sha256:{} len={}]",
        fingerprint(secret),
        secret.len()
    )
}

/// If `value` is a redaction marker, the fingerprint inside it.
pub fn parse_redacted(value: &str) -> Option<&str> {
    let rest = value.strip_prefix("[redacted sha256:")?;
    let end = rest.find(' ')?;
    Some(&rest[..end])
}

/// The fingerprint of a value that may already be redacted: a raw secret is hashed, a marker
/// yields the fingerprint it carries. Lets analysis compare raw and redacted captures alike.
pub fn fingerprint_of(value: &str) -> String {
    match parse_redacted(value) {
        Some(fp) => fp.to_owned(),
        None => fingerprint(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_header_and_claims_are_kept_signature_is_not() {
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let token = format!(
            "{}.{}.{}",
            enc(r#"{"alg":"RS256","kid":"k1"}"#),
            enc(r#"{"iss":"https://as","aud":"https://rs/mcp","exp":10,"email":"x@y"}"#),
            enc("signature")
        );
        let info = decode_jwt(&token).unwrap();
        assert_eq!(info.header["kid"], "k1");
        assert_eq!(info.claims["aud"], "https://rs/mcp");
        assert!(!info.claims.contains_key("email"));
        assert!(decode_jwt("opaque-token").is_none());
        assert!(decode_jwt("a.b.c").is_none());
    }

    #[test]
    fn fingerprints_are_stable_and_parse_back() {
        let fp = fingerprint("secret-token");
        assert_eq!(fp.len(), 12);
        assert_eq!(fp, fingerprint("secret-token"));
        assert_ne!(fp, fingerprint("secret-token2"));
        let marker = redacted("secret-token");
        assert_eq!(marker, format!("[redacted sha256:{fp} len=12]"));
        assert_eq!(parse_redacted(&marker), Some(fp.as_str()));
        assert_eq!(fingerprint_of(&marker), fp);
        assert_eq!(fingerprint_of("secret-token"), fp);
    }
}
