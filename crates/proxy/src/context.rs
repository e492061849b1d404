//! What is known about one client connection: who it is, the CONNECT target it tunnels to (if
//! any), the TLS it spoke to mcptap, its shutdown guard, and the tunnel's own upstream.

use crate::shutdown::Guard;
use crate::target::{Origin, Target};
use crate::tunnel_upstream::{IdleH1, TunnelUpstream};
use mcptap_flow::{Flow, FlowId, TlsInfo};
use std::net::SocketAddr;
use std::sync::Arc;

/// Where requests on a client connection go, and what is known about that connection.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    pub client_addr: SocketAddr,
    /// `client_addr` as recorded in flows (formatted once per connection, not per request).
    pub client_addr_text: String,
    /// The CONNECT target, for connections inside a tunnel; `None` on the proxy listener itself.
    pub target: Option<Target>,
    /// TLS between the client and mcptap.
    pub client_tls: Option<Arc<TlsInfo>>,
    /// Shutdown guard of the connection (cloned into tasks it spawns).
    pub guard: Guard,
    /// A tunnel's upstream origin (prepared once per connection) and the tunnel's own HTTP/1.1
    /// connection to it.
    pub upstream: Option<TunnelUpstream>,
}

impl ConnCtx {
    /// The context of a connection accepted from `client_addr`; a tunnel's upstream connection,
    /// when it ends, waits in `idle`.
    pub(crate) fn new(
        idle: &Arc<IdleH1>,
        client_addr: SocketAddr,
        target: Option<Target>,
        client_tls: Option<Arc<TlsInfo>>,
        guard: Guard,
    ) -> ConnCtx {
        ConnCtx {
            client_addr,
            client_addr_text: client_addr.to_string(),
            upstream: target
                .as_ref()
                .and_then(Origin::of)
                .map(|o| TunnelUpstream::new(o, idle.clone())),
            target,
            client_tls,
            guard,
        }
    }

    /// A new flow on this connection, to `host:port`, started at `started`: who the client is
    /// and the TLS it spoke filled in, the request left to the caller.
    pub(crate) fn flow(&self, id: FlowId, host: String, port: u16, started: i64) -> Flow {
        Flow {
            id,
            client_addr: Some(self.client_addr_text.clone()),
            host,
            port,
            client_tls: self.client_tls.clone(),
            timings: mcptap_flow::Timings {
                started,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// The scheme the client spoke to mcptap.
    pub(crate) fn scheme(&self) -> &'static str {
        if self.client_tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}
