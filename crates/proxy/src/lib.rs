//! mcptap's engine: an explicit HTTPS intercepting proxy.
//!
//! Clients send `CONNECT` (or absolute-form `http://` requests); TLS is terminated with a leaf
//! certificate from a [`CertSource`], the upstream gets its own verified TLS connection, and
//! bodies stream through taps that copy a bounded prefix into the flow. Everything the engine
//! learns leaves it as [`FlowEvent`](mcptap_flow::FlowEvent)s on a bounded channel
//! ([`events`]); it knows nothing of terminals or disks.
//!
//! Inside, one connection goes down a one-way chain of modules — `listener` (proxy listener,
//! proxy authentication) → `connect` (CONNECT) → `tls` (ALPN dispatch) → `serve` (HTTP/1.1,
//! HTTP/2) → `forward` (route → hooks → send → record) → `upstream` / `tunnel_upstream` and the
//! `tap` — and no module imports from one that calls it (`layering.rs` tests it). Leaves shared
//! by all: `target` (targets, origins, URLs), `message` (answers, recorded heads, hop-by-hop
//! headers), `context` (the per-connection context). Modes plug in through the `hook` trait:
//! `auth`, `reverse`, [`inject`]. `docs/architecture.md` draws the whole.
#![deny(missing_docs)]

mod auth;
mod capture_pool;
mod connect;
mod context;
pub mod events;
mod exec;
mod forward;
mod hook;
pub mod inject;
#[cfg(test)]
mod layering;
pub mod limits;
mod listener;
mod message;
mod refresh;
pub mod reverse;
mod route;
mod serve;
mod shared;
pub mod shutdown;
mod splice;
mod spool;
mod tap;
mod target;
mod tls;
mod trust;
mod tunnel_upstream;
pub mod upstream;

pub use events::{EventReceiver, EventSender};
pub use limits::Limits;
pub use message::BoxError;
pub use shared::CertSource;
pub use spool::Spools;
pub use trust::{TrustError, UpstreamTrust};
pub use upstream::UpstreamProxy;

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioTimer;
use regex::RegexSet;
use shared::Shared;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub use mcptap_flow::DEFAULT_BODY_LIMIT;

/// How the proxy behaves. Built by the CLI from validated arguments; tests build it directly.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Bytes of each body copied into its flow.
    pub body_limit: usize,
    /// CONNECT targets matching any of these are tunnelled without decryption
    /// (matched against `host:port` and `host`).
    pub ignore_hosts: Vec<String>,
    /// Upstream certificate trust.
    pub upstream_trust: UpstreamTrust,
    /// How long mcptap waits for each side ([`Limits`]).
    pub limits: Limits,
    /// How long shutdown waits for exchanges in flight.
    pub shutdown_deadline: Duration,
    /// Send upstream connections through this proxy (`--upstream-proxy`).
    pub upstream_proxy: Option<UpstreamProxy>,
    /// Reverse mode: forward everything to a fixed upstream instead of acting as a proxy.
    pub reverse: Option<reverse::ReverseConfig>,
    /// Explicit mode: require `Proxy-Authorization: Basic` with these `user:pass` credentials.
    pub proxy_auth: Option<String>,
    /// Inject mode: add the captured token to bare MCP requests (see [`inject`]).
    pub inject_token: bool,
    /// With `inject_token`: when no unexpired token qualifies, refresh one with the client's
    /// refresh token (`--inject-refresh`; rotates the client's copy on rotating servers).
    pub inject_refresh: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit: DEFAULT_BODY_LIMIT,
            ignore_hosts: Vec::new(),
            upstream_trust: UpstreamTrust::default(),
            limits: Limits::default(),
            shutdown_deadline: Duration::from_secs(3),
            upstream_proxy: None,
            reverse: None,
            proxy_auth: None,
            inject_token: false,
            inject_refresh: false,
        }
    }
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listen address is taken.
    #[error("{addr} is already in use")]
    AddrInUse {
        /// The address.
        addr: SocketAddr,
    },
    /// Binding failed otherwise.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An `--ignore-hosts` pattern is not a valid regex.
    #[error("invalid --ignore-hosts pattern: {0}")]
    IgnoreHosts(#[source] regex::Error),
    /// The upstream trust store could not be built.
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// A bound proxy, ready to serve.
pub struct Proxy {
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown_deadline: Duration,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

fn pooled_client<B>(connector: upstream::Connector) -> Client<upstream::Connector, B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    Client::builder(exec::SpanExecutor)
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

impl Proxy {
    /// Binds the listener and prepares the upstream client. Events go to `events`.
    pub async fn bind(
        config: ProxyConfig,
        ca: Arc<dyn CertSource>,
        events: EventSender,
    ) -> Result<Proxy, ProxyError> {
        let ignore_hosts = if config.ignore_hosts.is_empty() {
            None
        } else {
            Some(RegexSet::new(&config.ignore_hosts).map_err(ProxyError::IgnoreHosts)?)
        };
        let verifier = trust::UpstreamVerifier::new(&config.upstream_trust)?;
        let tls = verifier.client_config(&[b"h2", b"http/1.1"])?;
        let tls_h1 = verifier.client_config(&[b"http/1.1"])?;
        let via = config.upstream_proxy.clone();
        let insecure = config.upstream_trust.insecure;
        let connect = config.limits.connect;
        let connector = upstream::Connector::new(tls, connect, via.clone()).unverified(insecure);
        let connector_h1 = upstream::Connector::new(tls_h1, connect, via).unverified(insecure);
        let listener = TcpListener::bind(config.listen).await.map_err(|source| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                ProxyError::AddrInUse {
                    addr: config.listen,
                }
            } else {
                ProxyError::Bind {
                    addr: config.listen,
                    source,
                }
            }
        })?;
        let reverse = config.reverse.map(Arc::new);
        let ids = tap::FlowIds::default();
        let client_own: upstream::OwnClient = pooled_client(connector_h1.clone());
        let observer = config
            .inject_token
            .then(|| Arc::new(inject::Injector::with_refresh(config.inject_refresh)));
        let hooks = (
            config.proxy_auth.as_deref().map(auth::ProxyAuth::new),
            reverse.clone().map(reverse::ReverseRewrite::new),
            observer.clone().map(|injector| {
                let refresher = refresh::Refresher {
                    client: client_own.clone(),
                    events: events.clone(),
                    ids: ids.clone(),
                    reverse: reverse.clone(),
                    body_limit: config.body_limit,
                };
                inject::hook::InjectToken::new(injector, refresher)
            }),
        );
        Ok(Proxy {
            listener,
            shared: Arc::new(Shared {
                ca,
                client: pooled_client(connector.clone()),
                client_h1: pooled_client(connector_h1.clone()),
                client_own,
                connector,
                connector_h1,
                idle_h1: Arc::default(),
                events,
                ids,
                body_limit: config.body_limit,
                limits: config.limits,
                ignore_hosts,
                reverse,
                observer,
                hooks,
            }),
            shutdown_deadline: config.shutdown_deadline,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `signal` resolves, then drains for at most the shutdown deadline.
    pub async fn serve(self, signal: impl Future<Output = ()>) {
        let shutdown = shutdown::Shutdown::new();
        let mut signal = std::pin::pin!(signal);
        // The capture pool's own timer: idle buffers go back to the OS after a burst.
        let mut release = tokio::time::interval(Duration::from_secs(1));
        release.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let shared = self.shared.clone();
                        let guard = shutdown.guard();
                        let span = tracing::debug_span!("conn", %peer);
                        tokio::spawn(tracing::Instrument::instrument(
                            listener::serve_listener_conn(shared, stream, guard),
                            span,
                        ));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = release.tick() => capture_pool::release_idle(),
                () = &mut signal => break,
            }
        }
        drop(self.listener);
        let events = self.shared.events.clone();
        shutdown
            .run_then(self.shutdown_deadline, move || events.mark_stopping())
            .await;
    }
}
