//! The names a leaf certificate is issued for, normalised.
//!
//! The proxy asks for a certificate with whatever the client sent: an SNI name, or, when there
//! is none (IP literals), the CONNECT target. Clients compare DNS names case-insensitively and
//! without a trailing dot, and check IP addresses only against IP SANs, so the host is
//! normalised here once: that decides both what goes into the certificate and the cache key
//! (`Example.COM.` and `example.com` share one certificate).

use crate::CaError;
use rustls_pki_types::DnsName;
use std::fmt;
use std::net::IpAddr;

/// A host a leaf certificate can be issued for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum CertHost {
    /// A DNS name: lower case, no trailing dot.
    Dns(String),
    /// An IP address (given as `127.0.0.1`, `::1` or `[::1]`).
    Ip(IpAddr),
}

impl CertHost {
    /// Normalises `raw`: strips `[]` around an IPv6 address and one trailing dot, lowercases,
    /// then accepts an IP address or a valid DNS name (no port, no spaces, no wildcards).
    pub(crate) fn parse(raw: &str) -> Result<CertHost, CaError> {
        let invalid = |reason| CaError::InvalidHost {
            host: raw.to_owned(),
            reason,
        };
        let unbracketed = raw
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(raw);
        let host = unbracketed.strip_suffix('.').unwrap_or(unbracketed);
        if host.is_empty() {
            return Err(invalid("the host is empty"));
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(CertHost::Ip(ip));
        }
        let host = host.to_ascii_lowercase();
        if host.contains('*') {
            return Err(invalid("wildcard names are not issued"));
        }
        match DnsName::try_from(host.as_str()) {
            Ok(_) => Ok(CertHost::Dns(host)),
            Err(_) => Err(invalid("not a valid DNS name or IP address")),
        }
    }
}

impl fmt::Display for CertHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertHost::Dns(name) => f.write_str(name),
            CertHost::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn normalises_names_and_addresses() {
        let dns = |s: &str| CertHost::Dns(s.to_owned());
        let cases = [
            ("localhost", dns("localhost")),
            ("Example.COM", dns("example.com")),
            ("example.com.", dns("example.com")),
            ("mcp.example-1.dev", dns("mcp.example-1.dev")),
            ("127.0.0.1", CertHost::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST))),
            ("::1", CertHost::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST))),
            ("[::1]", CertHost::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST))),
            (
                "0:0:0:0:0:0:0:1",
                CertHost::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ),
            (
                "[FE80::AB]",
                CertHost::Ip("fe80::ab".parse().expect("literal address")),
            ),
        ];
        for (raw, want) in cases {
            let got = CertHost::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(got, want, "{raw}");
        }
    }

    #[test]
    fn rejects_what_cannot_be_in_a_certificate() {
        for raw in [
            "",
            ".",
            "[]",
            "example.com:443",
            "exa mple.com",
            "*.example.com",
            "fe80::1%eth0",
            "bücher.example",
            "a..b",
        ] {
            match CertHost::parse(raw) {
                Err(e) => assert!(e.is_invalid_host(), "{raw}: {e}"),
                Ok(h) => panic!("{raw:?} was accepted as {h:?}"),
            }
        }
    }

    #[test]
    fn displays_the_normalised_form() {
        let host = CertHost::parse("[0:0::1]").expect("valid address");
        assert_eq!(host.to_string(), "::1");
        let host = CertHost::parse("LocalHost.").expect("valid name");
        assert_eq!(host.to_string(), "localhost");
    }
}
