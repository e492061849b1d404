//! mcptap's engine as a library: an intercepting proxy whose exchanges are printed as they
//! finish, each with whether it carried a Bearer token. The `mcptap` command is this plus the
//! session journal, the analyzer and the views; see `docs/architecture.md`.
//!
//! ```text
//! cargo run --example embed -- [PORT]
//! HTTPS_PROXY=http://127.0.0.1:PORT curl --cacert <the printed CA path> https://example.com/
//! ```
//!
//! The CA is kept in `$TMPDIR/mcptap-example-embed` (created on first run, key mode 0600).

use mcptap_flow::FlowEvent;
use std::sync::Arc;

/// Leaf certificates come from mcptap's CA, minted per host and cached.
struct MintingCa(mcptap_ca::Ca);

impl mcptap_proxy::CertSource for MintingCa {
    fn server_config(
        &self,
        host: &str,
        alpn: &[Vec<u8>],
    ) -> Result<Arc<rustls::ServerConfig>, mcptap_proxy::BoxError> {
        mcptap_ca::ServerConfigSource::server_config(&self.0, host, alpn).map_err(Into::into)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::args().nth(1) {
        Some(p) => p.parse().map_err(|_| format!("not a port: {p}"))?,
        None => 0,
    };
    let ca = mcptap_ca::Ca::load_or_create(&std::env::temp_dir().join("mcptap-example-embed"))?;
    println!("ca {}", ca.cert_path().display());

    let (events, mut rx) = mcptap_proxy::events::channel(4096);
    let config = mcptap_proxy::ProxyConfig {
        listen: ([127, 0, 0, 1], port).into(),
        ..Default::default()
    };
    let proxy = mcptap_proxy::Proxy::bind(config, Arc::new(MintingCa(ca)), events).await?;
    println!("proxy http://{}", proxy.local_addr());

    // The engine never waits for this consumer: if it falls behind, events are dropped and
    // counted (`rx.dropped()`), never the traffic.
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            let (FlowEvent::Completed { flow } | FlowEvent::Failed { flow }) = ev else {
                continue;
            };
            let status = match &flow.response {
                Some(r) => r.status.to_string(),
                None => "no response".to_owned(),
            };
            let auth = match flow.request.headers.get("authorization") {
                Some(v) if v.trim_start().to_ascii_lowercase().starts_with("bearer ") => "Bearer",
                Some(_) => "other auth",
                None => "no auth",
            };
            println!(
                "{} {} {} -> {status} [{auth}]",
                flow.id, flow.request.method, flow.request.url
            );
        }
    });

    proxy
        .serve(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    Ok(())
}
