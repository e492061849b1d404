//! The proxy started in-process on 127.0.0.1:0 with a CA made in a temp dir, plus a collector
//! of every event it emits.

use mcptap_flow::{Flow, FlowEvent};
use mcptap_proxy::{Proxy, ProxyConfig, UpstreamTrust};
use rustls_pki_types::CertificateDer;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

use super::pki::TestPki;

/// Matches a flow whose URL ends with `path` (for [`TestProxy::flow`]).
pub fn has_path(path: &'static str) -> impl Fn(&Flow) -> bool {
    move |f| f.request.url.ends_with(path)
}

pub struct TestProxy {
    pub addr: SocketAddr,
    pub confdir: tempfile::TempDir,
    pub ca_der: CertificateDer<'static>,
    pub ca_path: std::path::PathBuf,
    pub events: Arc<Mutex<Vec<FlowEvent>>>,
    notify: Arc<Notify>,
    stop: Option<oneshot::Sender<()>>,
    pub served: Option<tokio::task::JoinHandle<()>>,
}

impl TestProxy {
    /// Starts a proxy trusting only `pki`'s CA upstream; `tweak` adjusts the config.
    pub async fn start(pki: &TestPki, tweak: impl FnOnce(&mut ProxyConfig)) -> TestProxy {
        let confdir = tempfile::tempdir().unwrap();
        let ca = mcptap::ca::load(confdir.path()).unwrap();
        let ca_path = ca.cert_path();
        let ca_der = super::pki::read_cert_der(&ca_path);
        let mut config = ProxyConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream_trust: UpstreamTrust {
                extra_ca_files: vec![pki.ca_path()],
                insecure: false,
                no_system_roots: true,
            },
            shutdown_deadline: Duration::from_millis(500),
            ..ProxyConfig::default()
        };
        tweak(&mut config);
        let (tx, mut rx) = mcptap_proxy::events::channel(1 << 16);
        let proxy = Proxy::bind(config, ca, tx).await.unwrap();
        let addr = proxy.local_addr();
        let events = Arc::new(Mutex::new(Vec::new()));
        let notify = Arc::new(Notify::new());
        {
            let (events, notify) = (events.clone(), notify.clone());
            tokio::spawn(async move {
                while let Some(ev) = rx.recv().await {
                    events.lock().unwrap().push(ev);
                    notify.notify_waiters();
                }
            });
        }
        let (stop_tx, stop_rx) = oneshot::channel();
        let served = tokio::spawn(proxy.serve(async move {
            let _ = stop_rx.await;
        }));
        TestProxy {
            addr,
            confdir,
            ca_der,
            ca_path,
            events,
            notify,
            stop: Some(stop_tx),
            served: Some(served),
        }
    }

    /// An HTTP/1.1 client to `target` (`localhost:PORT`) through this proxy: a CONNECT
    /// tunnel, TLS trusting mcptap's CA.
    pub async fn client(&self, target: &str) -> super::client::Sender {
        use super::client::{tls_client, Alpn};
        let (s, _) = tls_client(
            self.addr,
            target,
            "localhost",
            std::slice::from_ref(&self.ca_der),
            Alpn::H1,
        )
        .await
        .unwrap();
        s
    }

    /// `GET path` from `target` (`localhost:PORT`) through this proxy ([`TestProxy::client`]).
    pub async fn get(&self, target: &str, path: &str) -> http::Response<hyper::body::Incoming> {
        let mut s = self.client(target).await;
        s.send(super::client::request("GET", target, path, ""))
            .await
            .unwrap()
    }

    /// Waits (at most 10 s) for a finished flow matching `pred`.
    pub async fn flow(&self, pred: impl Fn(&Flow) -> bool) -> Flow {
        self.event(|ev| match ev {
            FlowEvent::Completed { flow } | FlowEvent::Failed { flow } if pred(flow) => {
                Some((**flow).clone())
            }
            _ => None,
        })
        .await
    }

    /// Waits (at most 10 s) for any event `pick` accepts.
    pub async fn event<T>(&self, pick: impl Fn(&FlowEvent) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.notify.notified();
            if let Some(v) = self.events.lock().unwrap().iter().find_map(&pick) {
                return v;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let seen: Vec<String> = self
                    .events
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|e| format!("{e:?}").chars().take(300).collect())
                    .collect();
                panic!("no matching event within 10 s; seen:\n{}", seen.join("\n"));
            }
        }
    }

    /// Asks the proxy to shut down and waits until `serve` returns.
    pub async fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.served.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("serve returns after shutdown")
                .unwrap();
        }
    }
}
