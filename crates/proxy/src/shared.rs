//! What every connection shares: the certificate source, the upstream clients and connectors,
//! the event channel, the limits and the hooks of this proxy's mode. Built once by
//! [`Proxy::bind`](crate::Proxy::bind); every step reads it, none of the types it names reads it
//! back.

use crate::events::EventSender;
use crate::limits::Limits;
use crate::message::BoxError;
use crate::tap::FlowIds;
use crate::target::url_host;
use crate::tunnel_upstream::IdleH1;
use crate::upstream::{Connector, OwnClient, StreamClient};
use regex::RegexSet;
use std::sync::Arc;

/// Where TLS server configurations for intercepted hosts come from (mcptap's CA).
pub trait CertSource: Send + Sync + 'static {
    /// A ready server config presenting a certificate for `host` (a DNS name or an IP literal),
    /// offering `alpn`.
    fn server_config(
        &self,
        host: &str,
        alpn: &[Vec<u8>],
    ) -> Result<Arc<rustls::ServerConfig>, BoxError>;
}

/// The hooks of a proxy: proxy authentication, reverse rewriting, then token injection (which
/// reads what the client sent, so reverse mode's changes to the head do not matter to it).
pub(crate) type Hooks = (
    Option<crate::auth::ProxyAuth>,
    Option<crate::reverse::ReverseRewrite>,
    Option<crate::inject::hook::InjectToken>,
);

/// What every connection shares.
pub(crate) struct Shared {
    pub ca: Arc<dyn CertSource>,
    pub client: StreamClient,
    /// HTTP/1.1 only: for HTTP/1.1 clients and upgrade requests (WebSocket).
    pub client_h1: StreamClient,
    /// HTTP/1.1, for the requests mcptap sends whole.
    pub client_own: OwnClient,
    pub connector: Connector,
    /// HTTP/1.1 only: the upstream connections of HTTP/1.1 tunnels (see `tunnel_upstream`).
    pub connector_h1: Connector,
    /// Upstream connections of ended HTTP/1.1 tunnels.
    pub idle_h1: Arc<IdleH1>,
    pub events: EventSender,
    pub ids: FlowIds,
    pub body_limit: usize,
    pub limits: Limits,
    pub ignore_hosts: Option<RegexSet>,
    pub reverse: Option<Arc<crate::reverse::ReverseConfig>>,
    /// Inject mode: learns tokens and metadata from every finished flow.
    pub observer: Option<Arc<crate::inject::Injector>>,
    /// Proxy authentication, reverse rewriting, token injection: whichever this mode has.
    pub hooks: Hooks,
}

impl Shared {
    /// `--ignore-hosts`: true when CONNECT to `host:port` is tunnelled without decryption.
    pub(crate) fn is_ignored(&self, host: &str, port: u16) -> bool {
        self.ignore_hosts.as_ref().is_some_and(|set| {
            set.is_match(host) || set.is_match(&format!("{}:{port}", url_host(host)))
        })
    }
}
