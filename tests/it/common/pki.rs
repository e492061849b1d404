//! A throwaway PKI made at test time: an upstream CA and a server certificate for the loopback
//! names, written to a temp dir so that third-party peers (Python, Node) can load them too.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::PathBuf;
use std::sync::Arc;

/// An upstream CA and one leaf for `localhost`, `127.0.0.1` and `::1`.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub ca_der: CertificateDer<'static>,
    pub leaf_pem: String,
    pub leaf_der: CertificateDer<'static>,
    pub leaf_key_pem: String,
    pub leaf_key_der: Vec<u8>,
}

impl TestPki {
    pub fn new() -> TestPki {
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.distinguished_name
            .push(DnType::CommonName, "mcptap test upstream CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca, ca_key);

        let leaf_key = KeyPair::generate().expect("leaf key");
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf params");
        leaf.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        leaf.subject_alt_names
            .push(SanType::IpAddress("::1".parse().expect("ip")));
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf cert");

        let dir = tempfile::tempdir().expect("tempdir");
        let pki = TestPki {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().clone(),
            leaf_pem: leaf_cert.pem(),
            leaf_der: leaf_cert.der().clone(),
            leaf_key_pem: leaf_key.serialize_pem(),
            leaf_key_der: leaf_key.serialize_der(),
            dir,
        };
        std::fs::write(pki.ca_path(), &pki.ca_pem).expect("write ca");
        std::fs::write(pki.leaf_path(), &pki.leaf_pem).expect("write leaf");
        std::fs::write(pki.key_path(), &pki.leaf_key_pem).expect("write key");
        pki
    }

    /// PEM file of the upstream CA.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("upstream-ca.pem")
    }
    /// PEM file of the server certificate.
    pub fn leaf_path(&self) -> PathBuf {
        self.dir.path().join("server-cert.pem")
    }
    /// PEM file of the server key.
    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("server-key.pem")
    }

    /// A rustls server config for the leaf, offering `alpn`.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key_der.clone()));
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.leaf_der.clone()], key)
            .expect("server config");
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }
}

/// A rustls client config trusting exactly `roots`, offering `alpn`.
pub fn client_config(
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).expect("add root");
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// Reads the first certificate of a PEM file.
pub fn read_cert_der(path: &std::path::Path) -> CertificateDer<'static> {
    let pem = std::fs::read(path).expect("read cert");
    let cert = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .expect("a certificate")
        .expect("valid PEM");
    cert
}
