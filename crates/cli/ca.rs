//! `mcptap ca`, and loading the CA for the proxy.

use crate::args::CaArgs;
use anyhow::Context as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// The CA as the engine uses it.
pub struct LoadedCa(pub mcptap_ca::Ca);

impl LoadedCa {
    /// Path of the certificate-only PEM file (what clients must trust).
    pub fn cert_path(&self) -> std::path::PathBuf {
        self.0.cert_path().to_path_buf()
    }
}

impl mcptap_proxy::CertSource for LoadedCa {
    fn server_config(
        &self,
        host: &str,
        alpn: &[Vec<u8>],
    ) -> Result<Arc<rustls::ServerConfig>, mcptap_proxy::BoxError> {
        mcptap_ca::ServerConfigSource::server_config(&self.0, host, alpn).map_err(Into::into)
    }
}

/// A fixed certificate chain and key (reverse mode `--cert/--key`), whatever the host.
pub struct FixedCert {
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    configs: std::sync::Mutex<Vec<AlpnConfig>>,
}

/// A server config built for one ALPN list.
type AlpnConfig = (Vec<Vec<u8>>, Arc<rustls::ServerConfig>);

impl FixedCert {
    /// Reads PEM files.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<FixedCert> {
        let pem = std::fs::read(cert).with_context(|| format!("--cert {}", cert.display()))?;
        let chain: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .with_context(|| format!("--cert {}: invalid PEM", cert.display()))?;
        if chain.is_empty() {
            anyhow::bail!("--cert {}: no certificate in it", cert.display());
        }
        let pem = std::fs::read(key).with_context(|| format!("--key {}", key.display()))?;
        let key = rustls_pemfile::private_key(&mut pem.as_slice())
            .with_context(|| format!("--key {}: invalid PEM", key.display()))?
            .with_context(|| format!("--key {}: no private key in it", key.display()))?;
        let fixed = FixedCert {
            chain,
            key,
            configs: std::sync::Mutex::new(Vec::new()),
        };
        // Fail now, not at the first handshake, if the pair does not fit.
        mcptap_proxy::CertSource::server_config(&fixed, "localhost", &[])
            .map_err(|e| anyhow::anyhow!("--cert/--key: {e}"))?;
        Ok(fixed)
    }
}

impl mcptap_proxy::CertSource for FixedCert {
    fn server_config(
        &self,
        _host: &str,
        alpn: &[Vec<u8>],
    ) -> Result<Arc<rustls::ServerConfig>, mcptap_proxy::BoxError> {
        let mut configs = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = configs.iter().find(|(a, _)| a == alpn) {
            return Ok(c.clone());
        }
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        cfg.alpn_protocols = alpn.to_vec();
        let cfg = Arc::new(cfg);
        configs.push((alpn.to_vec(), cfg.clone()));
        Ok(cfg)
    }
}

/// Loads the CA from `confdir`, creating it on first use (and saying so).
pub fn load(confdir: &Path) -> anyhow::Result<Arc<LoadedCa>> {
    let ca = mcptap_ca::Ca::load_or_create(confdir)
        .with_context(|| format!("cannot use the mcptap CA in {}", confdir.display()))?;
    if ca.created() {
        say!(
            "mcptap: created a new CA in {} (clients must trust {})",
            confdir.display(),
            ca.cert_path().display()
        );
    }
    Ok(Arc::new(LoadedCa(ca)))
}

/// How to make common clients trust `cert`.
pub fn trust_instructions(cert: &Path) -> String {
    let c = cert.display();
    format!(
        "mcptap CA certificate: {c}

Clients must trust it to let mcptap decrypt their HTTPS traffic:
  Node.js / Claude Code:  export NODE_EXTRA_CA_CERTS={c}
  Python (httpx, requests, the MCP SDK):
                          export SSL_CERT_FILE=<bundle> REQUESTS_CA_BUNDLE=<bundle>
                          (these replace the whole trust store: use a bundle of the system roots
                          plus this file, e.g. cat /etc/ssl/certs/ca-certificates.crt {c} > bundle.pem)
  curl:                   curl --cacert {c} (or --proxy-cacert for the proxy itself)
  System-wide (Debian/Ubuntu): cp {c} /usr/local/share/ca-certificates/mcptap.crt && update-ca-certificates

Then send traffic through the proxy: export HTTPS_PROXY=http://127.0.0.1:8080
Never use NODE_TLS_REJECT_UNAUTHORIZED=0: it turns off verification for everything.
"
    )
}

/// Runs `mcptap ca`.
pub fn main(args: CaArgs) -> anyhow::Result<ExitCode> {
    let dir = args.confdir.resolve()?;
    let ca = load(&dir)?;
    if args.path {
        println!("{}", ca.cert_path().display());
    } else {
        print!("{}", trust_instructions(&ca.cert_path()));
    }
    Ok(ExitCode::SUCCESS)
}
