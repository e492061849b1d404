//! The root CA: generated on first use, parsed and checked on every later start.
//!
//! A CA file that cannot be used must fail loudly and name itself, before any client connects:
//! otherwise every handshake fails later with an "unknown issuer" far from the cause. So a loaded
//! CA is checked for what clients will check (it is a CA, may sign certificates, has not
//! expired, its key belongs to it), and finally a probe leaf is minted and verified the way a
//! client would verify it.

use crate::files::pem_encode;
use crate::leaf::{random_serial, LeafIssuer};
use crate::CaError;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData as _,
};
use rustls::client::danger::ServerCertVerifier as _;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::RootCertStore;
use rustls_pki_types::pem::{PemObject as _, SectionKind};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use std::path::Path;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// The CA certificate's subject common name.
pub(crate) const CA_COMMON_NAME: &str = "mcptap CA";

/// The CA certificate's subject organisation.
pub(crate) const CA_ORGANIZATION: &str = "mcptap";

/// How long a new CA is valid.
const CA_LIFETIME: Duration = Duration::days(3650);

/// How far a new CA's validity starts before now, for clients whose clocks are behind.
const CA_BACKDATE: Duration = Duration::days(1);

/// A CA expiring sooner than this is reported (leaves never outlive their CA).
const CA_EXPIRY_WARNING: Duration = Duration::days(30);

/// The name the self-check leaf is issued for (`.invalid` is reserved and never resolves).
const PROBE_HOST: &str = "probe.mcptap.invalid";

/// A newly generated CA, ready to be written out.
pub(crate) struct NewRoot {
    /// The private key (PKCS#8 PEM) followed by the certificate (PEM): the key file.
    pub key_file: String,
    /// The certificate alone (PEM).
    pub cert_file: String,
}

/// Generates a CA: an EC P-256 key and a self-signed certificate.
pub(crate) fn generate(provider: &CryptoProvider, now: OffsetDateTime) -> Result<NewRoot, CaError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(CaError::crypto("generate the CA key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, CA_ORGANIZATION);
    params.distinguished_name = dn;
    // Path length 0: this CA signs leaves only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - CA_BACKDATE;
    params.not_after = now + CA_LIFETIME;
    params.serial_number = Some(random_serial(provider)?);
    let cert = params
        .self_signed(&key)
        .map_err(CaError::crypto("sign the CA certificate"))?;
    let cert_file = pem_encode("CERTIFICATE", cert.der());
    let key_file = format!("{}{cert_file}", key.serialize_pem());
    Ok(NewRoot {
        key_file,
        cert_file,
    })
}

/// Parses the key file: one PKCS#8 private key and one certificate, in either order (mcptap
/// and mitmproxy write the key first). Other PEM sections are ignored.
pub(crate) fn parse_key_file(
    path: &Path,
    bytes: &[u8],
) -> Result<(KeyPair, CertificateDer<'static>), CaError> {
    let corrupt = |reason: String| CaError::corrupt(path, reason);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(corrupt("the file is empty".into()));
    }
    let mut keys = Vec::new();
    let mut certs = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
        let (kind, der) = section.map_err(|e| corrupt(format!("malformed PEM: {e}")))?;
        match kind {
            SectionKind::PrivateKey => keys.push(der),
            SectionKind::Certificate => certs.push(CertificateDer::from(der)),
            SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                return Err(corrupt(
                    "the private key is in the legacy PKCS#1/SEC1 format; convert it to PKCS#8 \
                     with `openssl pkcs8 -topk8 -nocrypt`"
                        .into(),
                ))
            }
            _ => {}
        }
    }
    let key_der = match keys.as_slice() {
        [key] => key,
        [] => {
            let encrypted = bytes
                .windows(b"ENCRYPTED PRIVATE KEY".len())
                .any(|w| w == b"ENCRYPTED PRIVATE KEY");
            return Err(corrupt(if encrypted {
                "the private key is encrypted; mcptap needs it unencrypted (PKCS#8)".into()
            } else {
                "it holds no private key (expected a PEM \"PRIVATE KEY\" section)".into()
            }));
        }
        more => {
            return Err(corrupt(format!(
                "it holds {} private keys; expected one",
                more.len()
            )))
        }
    };
    let cert =
        match certs.len() {
            1 => certs.swap_remove(0),
            0 => return Err(corrupt(
                "it holds no certificate (expected a PEM \"CERTIFICATE\" section after the key)"
                    .into(),
            )),
            n => return Err(corrupt(format!("it holds {n} certificates; expected one"))),
        };
    let key = KeyPair::try_from(&PrivatePkcs8KeyDer::from(key_der.as_slice()))
        .map_err(|e| corrupt(format!("the private key cannot be used: {e}")))?;
    Ok((key, cert))
}

/// Parses the certificate-only file: exactly one certificate.
pub(crate) fn parse_cert_file(
    path: &Path,
    bytes: &[u8],
) -> Result<CertificateDer<'static>, CaError> {
    let corrupt = |reason: String| CaError::corrupt(path, reason);
    let mut certs = Vec::new();
    for cert in CertificateDer::pem_slice_iter(bytes) {
        certs.push(cert.map_err(|e| corrupt(format!("malformed PEM: {e}")))?);
    }
    match certs.len() {
        1 => Ok(certs.swap_remove(0)),
        0 => Err(corrupt("it holds no certificate".into())),
        n => Err(corrupt(format!("it holds {n} certificates; expected one"))),
    }
}

/// Checks that `key` and `cert` (read from `path`) make a usable CA, and returns the issuer of
/// its leaves.
pub(crate) fn open(
    path: &Path,
    key: KeyPair,
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
    now: OffsetDateTime,
) -> Result<LeafIssuer, CaError> {
    let corrupt = |reason: String| CaError::corrupt(path, reason);
    let (_, x509) = x509_parser::parse_x509_certificate(&cert)
        .map_err(|e| corrupt(format!("the certificate cannot be parsed: {e}")))?;
    match x509.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        Ok(_) => return Err(corrupt("the certificate is not a CA certificate".into())),
        Err(e) => return Err(corrupt(format!("bad basicConstraints extension: {e}"))),
    }
    match x509.key_usage() {
        Ok(Some(ku)) if !ku.value.key_cert_sign() => {
            return Err(corrupt(
                "the certificate's keyUsage does not allow signing certificates".into(),
            ))
        }
        Ok(_) => {}
        Err(e) => return Err(corrupt(format!("bad keyUsage extension: {e}"))),
    }
    if key.subject_public_key_info() != x509.public_key().raw {
        return Err(corrupt(
            "the private key does not belong to the certificate".into(),
        ));
    }
    let not_after = x509.validity().not_after.to_datetime();
    if not_after <= now {
        return Err(CaError::Expired {
            path: path.to_owned(),
            not_after,
        });
    }
    if not_after - now < CA_EXPIRY_WARNING {
        tracing::warn!(
            "the CA certificate in {} expires on {not_after}; leaf certificates will not \
             outlive it",
            path.display()
        );
    }
    let issuer = Issuer::from_ca_cert_der(&cert, key)
        .map_err(|e| corrupt(format!("the certificate cannot issue certificates: {e}")))?;
    let leaves = LeafIssuer::new(provider, issuer, cert, not_after)?;
    probe(path, &leaves, now)?;
    Ok(leaves)
}

/// Mints a leaf and verifies it as a client trusting only this CA would, so a CA that rcgen
/// cannot faithfully issue from (say, a subject name it re-encodes differently) fails now.
fn probe(path: &Path, leaves: &LeafIssuer, now: OffsetDateTime) -> Result<(), CaError> {
    let corrupt = |reason: String| CaError::corrupt(path, reason);
    let host = crate::host::CertHost::Dns(PROBE_HOST.to_owned());
    let leaf = leaves.mint(&host, now)?;
    let mut roots = RootCertStore::empty();
    roots
        .add(leaves.ca_der().clone())
        .map_err(|e| corrupt(format!("the certificate cannot be a trust anchor: {e}")))?;
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), leaves.provider().clone())
            .build()
            .map_err(|e| corrupt(format!("the certificate cannot be a trust anchor: {e}")))?;
    let name = ServerName::try_from(PROBE_HOST).map_err(|e| corrupt(e.to_string()))?;
    verifier
        .verify_server_cert(&leaf.der, &[], &name, &[], UnixTime::now())
        .map_err(|e| {
            corrupt(format!(
                "certificates it issues would be rejected by clients: {e}"
            ))
        })?;
    Ok(())
}
