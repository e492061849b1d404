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

/// Loads the CA from `confdir`, creating it on first use (and saying so).
pub fn load(confdir: &Path) -> anyhow::Result<Arc<LoadedCa>> {
    let ca = mcptap_ca::Ca::load_or_create(confdir)
        .with_context(|| format!("cannot use the mcptap CA in {}", confdir.display()))?;
    if ca.created() {
        eprintln!(
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
