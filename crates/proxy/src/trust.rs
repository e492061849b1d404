//! Which upstream certificates mcptap trusts, and the rustls client configs built on that.
//!
//! The `--upstream-ca` files are read when the proxy starts, so a missing or broken file stops
//! it with a clear error. The system's roots (Mozilla's bundled list plus the platform's store,
//! ~300 certificates parsed into trust anchors) are loaded when the first upstream certificate
//! is verified: an idle proxy, or one that only tunnels, never pays for them. Every client
//! config shares one verifier, so they are loaded once.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use rustls::{Error, SignatureScheme};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// How mcptap decides whether to trust an upstream's certificate.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTrust {
    /// Extra PEM files whose certificates are trusted as roots (`--upstream-ca`).
    pub extra_ca_files: Vec<PathBuf>,
    /// Skip verification entirely (`-k/--ssl-insecure`).
    pub insecure: bool,
    /// Leave out the system's native roots (tests use this to trust only their own CA).
    pub no_system_roots: bool,
}

/// Why the upstream trust store could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// An `--upstream-ca` file could not be read.
    #[error("cannot read upstream CA file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An `--upstream-ca` file held no usable certificate.
    #[error("upstream CA file {path} holds no PEM certificate")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A certificate was rejected.
    #[error("upstream CA file {path}: {source}")]
    BadCert {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Error,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[source] Error),
}

/// Reads every certificate in a PEM file.
pub fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let data = std::fs::read(path).map_err(|source| TrustError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut data.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TrustError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The `--upstream-ca` roots, read at start, and the system's, added on first use.
#[derive(Debug)]
struct LazyRoots {
    extra: RootCertStore,
    system: bool,
    loaded: OnceLock<Loaded>,
}

/// The roots once loaded.
#[derive(Debug)]
struct Loaded {
    /// How many trust anchors there are.
    count: usize,
    /// rustls's own verifier over them; `None` when there is none at all (then nothing can
    /// be trusted).
    webpki: Option<Arc<WebPkiServerVerifier>>,
}

impl LazyRoots {
    fn new(trust: &UpstreamTrust) -> Result<LazyRoots, TrustError> {
        let mut extra = RootCertStore::empty();
        for path in &trust.extra_ca_files {
            for cert in read_pem_certs(path)? {
                extra.add(cert).map_err(|source| TrustError::BadCert {
                    path: path.clone(),
                    source,
                })?;
            }
        }
        Ok(LazyRoots {
            extra,
            system: !trust.no_system_roots,
            loaded: OnceLock::new(),
        })
    }

    /// Loads the system's roots the first time.
    fn load(&self, provider: &Arc<CryptoProvider>) -> &Loaded {
        self.loaded.get_or_init(|| {
            let mut roots = self.extra.clone();
            if self.system {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                let native = rustls_native_certs::load_native_certs();
                for e in &native.errors {
                    tracing::debug!("skipping a system root certificate: {e}");
                }
                let (added, ignored) = roots.add_parsable_certificates(native.certs);
                tracing::debug!("system roots loaded: {added} added, {ignored} ignored");
            }
            let count = roots.len();
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .ok();
            Loaded { count, webpki }
        })
    }
}

/// Verifies upstream certificates against [`LazyRoots`], or accepts any with `-k`
/// (`roots: None`), always checking the handshake signatures. One per proxy: every client
/// config built from it shares its roots.
#[derive(Debug)]
pub(crate) struct UpstreamVerifier {
    roots: Option<LazyRoots>,
    provider: Arc<CryptoProvider>,
}

impl UpstreamVerifier {
    /// Reads the `--upstream-ca` files (the system's roots wait for the first verification).
    pub(crate) fn new(trust: &UpstreamTrust) -> Result<Arc<UpstreamVerifier>, TrustError> {
        let roots = if trust.insecure {
            None
        } else {
            Some(LazyRoots::new(trust)?)
        };
        Ok(Arc::new(UpstreamVerifier {
            roots,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }))
    }

    /// A rustls client config offering `alpn`, verifying with this verifier.
    pub(crate) fn client_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
    ) -> Result<Arc<ClientConfig>, TrustError> {
        let mut cfg = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TrustError::Rustls)?
            .dangerous()
            .with_custom_certificate_verifier(self.clone())
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(cfg))
    }
}

impl ServerCertVerifier for UpstreamVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let loaded = roots.load(&self.provider);
        let verdict = match &loaded.webpki {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => Err(Error::InvalidCertificate(CertificateError::UnknownIssuer)),
        };
        if let Err(e) = &verdict {
            let roots = loaded.count;
            tracing::debug!(
                "upstream certificate of {server_name:?} rejected ({roots} roots): {e}"
            );
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    /// A CA named `name` in a PEM file and a leaf it signed for `upstream.test`.
    fn pki(name: &str) -> (tempfile::NamedTempFile, CertificateDer<'static>) {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["upstream.test".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), ca.pem()).unwrap();
        (file, leaf.der().clone())
    }

    fn verify(v: &UpstreamVerifier, leaf: &CertificateDer<'_>, host: &str) -> Result<(), Error> {
        let name = ServerName::try_from(host.to_owned()).unwrap();
        v.verify_server_cert(leaf, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    fn verifier(trust: &UpstreamTrust) -> Arc<UpstreamVerifier> {
        UpstreamVerifier::new(trust).unwrap()
    }

    #[test]
    fn the_system_roots_are_loaded_by_the_first_verification_not_at_start() {
        let (ca, leaf) = pki("trusted CA");
        let v = verifier(&UpstreamTrust {
            extra_ca_files: vec![ca.path().to_owned()],
            ..UpstreamTrust::default()
        });
        let roots = v.roots.as_ref().unwrap();
        assert_eq!(
            roots.extra.len(),
            1,
            "the --upstream-ca file is read at start"
        );
        assert!(roots.loaded.get().is_none(), "system roots loaded at start");
        verify(&v, &leaf, "upstream.test").unwrap();
        let count = roots.loaded.get().unwrap().count;
        assert!(
            count > 100,
            "the system roots were not added: {count} roots"
        );
        // Loaded once: a second verification reuses them, and the name is still checked.
        let again = verify(&v, &leaf, "other.test").unwrap_err();
        assert!(matches!(again, Error::InvalidCertificate(_)), "{again:?}");
        assert!(std::ptr::eq(
            roots.loaded.get().unwrap(),
            roots.load(&v.provider)
        ));
    }

    #[test]
    fn without_system_roots_only_the_upstream_ca_is_trusted() {
        let (ca, leaf) = pki("trusted CA");
        let (_other_ca, stranger) = pki("another CA");
        let v = verifier(&UpstreamTrust {
            extra_ca_files: vec![ca.path().to_owned()],
            no_system_roots: true,
            ..UpstreamTrust::default()
        });
        verify(&v, &leaf, "upstream.test").unwrap();
        assert_eq!(v.roots.as_ref().unwrap().loaded.get().unwrap().count, 1);
        let err = verify(&v, &stranger, "upstream.test").unwrap_err();
        assert_eq!(
            err,
            Error::InvalidCertificate(CertificateError::UnknownIssuer)
        );
    }

    #[test]
    fn no_root_at_all_trusts_nothing_and_insecure_trusts_anything() {
        let (_ca, leaf) = pki("a CA");
        let none = verifier(&UpstreamTrust {
            no_system_roots: true,
            ..UpstreamTrust::default()
        });
        let err = verify(&none, &leaf, "upstream.test").unwrap_err();
        assert_eq!(
            err,
            Error::InvalidCertificate(CertificateError::UnknownIssuer)
        );
        let any = verifier(&UpstreamTrust {
            insecure: true,
            ..UpstreamTrust::default()
        });
        verify(&any, &leaf, "upstream.test").unwrap();
    }

    #[test]
    fn a_broken_upstream_ca_file_stops_the_start() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "not a certificate").unwrap();
        let trust = UpstreamTrust {
            extra_ca_files: vec![file.path().to_owned()],
            ..UpstreamTrust::default()
        };
        let err = UpstreamVerifier::new(&trust).unwrap_err();
        assert!(matches!(err, TrustError::Empty { .. }), "{err}");
    }
}
