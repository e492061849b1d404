//! Minting leaf certificates and wrapping them in rustls server configs.
//!
//! The proxy needs a certificate for every host a client connects to, on the handshake's
//! critical path. As mitmproxy and hudsucker do, one leaf key pair is generated when the CA is
//! opened and reused for every leaf, so minting is only filling in parameters and one signature
//! by the CA key. What goes into a leaf is what clients check: the host as a DNS or IP SAN
//! (clients connecting to an IP address look only at IP SANs), serverAuth, a validity short
//! enough for clients' lifetime limits and back-dated for clock skew, a random serial (browsers
//! reject two certificates with one issuer and serial), and the CA's key identifier.

use crate::host::CertHost;
use crate::CaError;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::crypto::CryptoProvider;
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// How far a leaf's validity starts before now, for clients whose clocks are behind.
pub(crate) const LEAF_BACKDATE: Duration = Duration::days(2);

/// How long a leaf is valid from now: well under the ~397 days clients accept.
pub(crate) const LEAF_LIFETIME: Duration = Duration::days(30);

/// The longest common name X.509 allows; longer names go only into the SAN.
const MAX_COMMON_NAME: usize = 64;

/// TLS sessions kept for resumption, shared by all leaf configs. rustls refuses to resume a
/// session under a different SNI, so sharing one store across hosts is safe, and it keeps
/// thousands of cached configs from each reserving a store of their own.
const SESSION_CACHE_SIZE: usize = 1024;

/// A freshly minted leaf certificate.
pub(crate) struct Leaf {
    pub der: CertificateDer<'static>,
    pub not_after: OffsetDateTime,
}

/// Issues leaf certificates signed by the CA, and server configs presenting them.
pub(crate) struct LeafIssuer {
    provider: Arc<CryptoProvider>,
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    ca_not_after: OffsetDateTime,
    leaf_key: KeyPair,
    leaf_signer: Arc<dyn SigningKey>,
    sessions: Arc<dyn StoresServerSessions>,
}

impl LeafIssuer {
    /// Generates the leaf key pair that every leaf of this issuer shares.
    pub(crate) fn new(
        provider: Arc<CryptoProvider>,
        issuer: Issuer<'static, KeyPair>,
        ca_der: CertificateDer<'static>,
        ca_not_after: OffsetDateTime,
    ) -> Result<LeafIssuer, CaError> {
        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(CaError::crypto("generate the leaf key"))?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let leaf_signer = provider
            .key_provider
            .load_private_key(der)
            .map_err(CaError::Rustls)?;
        Ok(LeafIssuer {
            provider,
            issuer,
            ca_der,
            ca_not_after,
            leaf_key,
            leaf_signer,
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
        })
    }

    /// The CA certificate (DER).
    pub(crate) fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// The crypto provider every config uses (ring).
    pub(crate) fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    /// Signs a leaf certificate for `host`, valid from [`LEAF_BACKDATE`] before `now` for
    /// [`LEAF_LIFETIME`] (never past the CA's own expiry).
    pub(crate) fn mint(&self, host: &CertHost, now: OffsetDateTime) -> Result<Leaf, CaError> {
        let name = host.to_string();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if name.len() <= MAX_COMMON_NAME {
            dn.push(DnType::CommonName, name.as_str());
        }
        params.distinguished_name = dn;
        params.subject_alt_names = vec![match host {
            CertHost::Dns(dns) => {
                SanType::DnsName(dns.clone().try_into().map_err(|_| CaError::InvalidHost {
                    host: name.clone(),
                    reason: "not an ASCII name",
                })?)
            }
            CertHost::Ip(ip) => SanType::IpAddress(*ip),
        }];
        params.not_before = now - LEAF_BACKDATE;
        params.not_after = (now + LEAF_LIFETIME).min(self.ca_not_after);
        params.serial_number = Some(random_serial(&self.provider)?);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(CaError::crypto("sign a leaf certificate"))?;
        Ok(Leaf {
            der: cert.der().clone(),
            not_after: params.not_after,
        })
    }

    /// A server config presenting `leaf` (followed by the CA certificate) and offering `alpn`.
    pub(crate) fn server_config(
        &self,
        leaf: &Leaf,
        alpn: &[Vec<u8>],
    ) -> Result<Arc<ServerConfig>, CaError> {
        let chain = vec![leaf.der.clone(), self.ca_der.clone()];
        let certified = CertifiedKey::new(chain, self.leaf_signer.clone());
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(CaError::Rustls)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        config.alpn_protocols = alpn.to_vec();
        config.max_fragment_size = Some(crate::TLS_RECORD_MAX);
        config.session_storage = self.sessions.clone();
        Ok(Arc::new(config))
    }
}

/// A random, positive serial number of 16 bytes (126 random bits), as CAs are asked to use.
pub(crate) fn random_serial(provider: &CryptoProvider) -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    provider
        .secure_random
        .fill(&mut bytes)
        .map_err(|e| CaError::Rustls(e.into()))?;
    // Clear the sign bit (serials are positive) and set the next one, so the encoding never
    // starts with a zero byte and every serial has the same length.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}
