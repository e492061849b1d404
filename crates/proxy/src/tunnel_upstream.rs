//! An HTTP/1.1 tunnel's own upstream connection.
//!
//! Requests on an HTTP/1.1 client connection come one after the other and all go to the
//! tunnel's origin, so each tunnel keeps one upstream connection for itself (as mitmproxy pairs
//! connections) instead of going through the shared pool: no pool lookup, and no task spawned
//! per request to hand the connection back. When the tunnel ends its connection waits in a
//! small idle set for the next tunnel to the same origin, so a client that opens a tunnel per
//! request still reuses one upstream connection.

use crate::message::BoxError;
use crate::tap::Tap;
use crate::target::Origin;
use crate::upstream::{Connector, UpstreamInfo};
use futures_util::FutureExt as _;
use http::{Request, Response};
use hyper::body::Incoming;
use mcptap_flow::{now_micros, Micros};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// The request body as the upstream connection holds it. Boxed: hyper's client allocates its
/// request queue (a tokio channel block of 32 slots) when the connection opens, each slot the
/// size of a request, and a request holding a [`Tap`] inline made that block ~20 KB per
/// upstream connection, held as long as the connection (an idle SSE stream's included).
type UpBody = Pin<Box<Tap<Incoming>>>;

/// Tags the response to the first request on a connection this tunnel opened: when the
/// connection was ready (connected, TLS and HTTP handshakes done). HAR's `timings.connect`; a
/// reused connection has none (HAR: -1).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewConnection(pub Micros);

/// The upstream side of one HTTP/1.1 tunnel.
#[derive(Debug)]
pub(crate) struct TunnelUpstream {
    origin: Origin,
    /// The connection, between requests.
    own: Mutex<Option<Dedicated>>,
    /// Where it goes when the tunnel ends.
    idle: Arc<IdleH1>,
}

impl Drop for TunnelUpstream {
    fn drop(&mut self) {
        let kept = self.own.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(d) = kept {
            self.idle.put(&self.origin, d);
        }
    }
}

impl TunnelUpstream {
    pub(crate) fn new(origin: Origin, idle: Arc<IdleH1>) -> TunnelUpstream {
        TunnelUpstream {
            origin,
            own: Mutex::new(None),
            idle,
        }
    }

    /// The tunnel's origin.
    pub(crate) fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Sends `req` (origin-form URI) to this tunnel's origin on the tunnel's own upstream
    /// connection, opening one when there is none or the last one closed.
    pub(crate) async fn send(
        &self,
        connector: &Connector,
        req: Request<Tap<Incoming>>,
    ) -> Result<Response<Incoming>, BoxError> {
        let mut req = req.map(Box::pin);
        let origin = &self.origin;
        let own = self.own.lock().unwrap_or_else(|e| e.into_inner()).take();
        // The tunnel's own connection, else one an ended tunnel left (a few tries at most).
        let mut candidates = own
            .into_iter()
            .chain(std::iter::from_fn(|| self.idle.take(origin)));
        for _ in 0..3 {
            let Some(mut d) = candidates.next() else {
                break;
            };
            // Ready once the previous response has been read; an error means it closed.
            if d.sender.ready().await.is_err() {
                continue;
            }
            match d.sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.keep(d, resp)),
                // Not sent: the upstream closed the idle connection. Try another.
                Err(mut e) => match e.take_message() {
                    Some(r) => req = r,
                    None => return Err(e.into_error().into()),
                },
            }
        }
        // Boxed: connecting (TCP, TLS and HTTP handshakes) is rare on a tunnel and its state
        // is ~3 KB, which every request's exchange future would otherwise carry.
        Box::pin(self.open(connector, req)).await
    }

    /// Opens the tunnel's own connection to its origin and sends `req` on it.
    async fn open(
        &self,
        connector: &Connector,
        req: Request<UpBody>,
    ) -> Result<Response<Incoming>, BoxError> {
        let origin = &self.origin;
        let uri = origin.uri(http::uri::PathAndQuery::from_static("/"))?;
        let io = connector.clone().connect(uri).await?;
        let info = io.inner().info().clone();
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(io)
            .await?;
        let ready = now_micros();
        let span = tracing::debug_span!("upstream_h1", origin = %origin.shown);
        tokio::spawn(tracing::Instrument::instrument(run(conn), span));
        let mut d = Dedicated { sender, info };
        let mut resp = d.sender.send_request(req).await?;
        resp.extensions_mut().insert(NewConnection(ready));
        Ok(self.keep(d, resp))
    }

    /// Keeps `d` for the next request and tags `resp` with what its connection negotiated.
    fn keep(&self, d: Dedicated, mut resp: Response<Incoming>) -> Response<Incoming> {
        resp.extensions_mut().insert(d.info.clone());
        *self.own.lock().unwrap_or_else(|e| e.into_inner()) = Some(d);
        resp
    }
}

/// The task of an upstream connection: drives it until it closes. A `map`, not an `async`
/// block awaiting it, which would keep the connection twice in the task for as long as it
/// lives (the captured value and the one being awaited; ~0.6 KB each).
fn run<IO>(
    conn: hyper::client::conn::http1::Connection<IO, UpBody>,
) -> impl std::future::Future<Output = ()> + Send
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    conn.map(|res| {
        if let Err(e) = res {
            tracing::debug!("upstream connection: {e}");
        }
    })
}

/// Upstream connections of ended HTTP/1.1 tunnels, kept for new tunnels to the same origin (a
/// client that opens a tunnel per request still reuses one upstream connection). Bounded in
/// number and age; the oldest go first.
#[derive(Debug, Default)]
pub(crate) struct IdleH1 {
    conns: Mutex<std::collections::VecDeque<Idle>>,
}

#[derive(Debug)]
struct Idle {
    since: std::time::Instant,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    conn: Dedicated,
}

impl IdleH1 {
    /// Idle connections kept at most, over all origins.
    const MAX: usize = 64;
    /// How long one is kept.
    const FOR: std::time::Duration = std::time::Duration::from_secs(60);

    fn put(&self, origin: &Origin, conn: Dedicated) {
        // Only a connection between exchanges can serve another (a response cut short by the
        // client leaves it unusable).
        if !conn.sender.is_ready() {
            return;
        }
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.push_back(Idle {
            since: std::time::Instant::now(),
            scheme: origin.scheme.clone(),
            authority: origin.authority.clone(),
            conn,
        });
        while conns.len() > Self::MAX {
            conns.pop_front();
        }
    }

    /// The most recently kept open connection to `origin`.
    fn take(&self, origin: &Origin) -> Option<Dedicated> {
        self.take_at(origin, std::time::Instant::now())
    }

    fn take_at(&self, origin: &Origin, now: std::time::Instant) -> Option<Dedicated> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        // Oldest first: drop what has been kept too long, or was closed meanwhile.
        while conns.front().is_some_and(|c| {
            now.saturating_duration_since(c.since) > Self::FOR || c.conn.sender.is_closed()
        }) {
            conns.pop_front();
        }
        let at = conns.iter().rposition(|c| {
            c.authority == origin.authority
                && c.scheme == origin.scheme
                && !c.conn.sender.is_closed()
        })?;
        conns.remove(at).map(|c| c.conn)
    }
}

/// An upstream HTTP/1.1 connection, and what was negotiated on it.
#[derive(Debug)]
struct Dedicated {
    sender: hyper::client::conn::http1::SendRequest<UpBody>,
    info: UpstreamInfo,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Target;
    use hyper_util::rt::TokioIo;
    use std::time::{Duration, Instant};

    /// A real HTTP/1.1 client connection over an in-memory pipe; the other end is returned so
    /// the test decides when the "upstream" closes.
    async fn conn() -> (Dedicated, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(4096);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, UpBody>(TokioIo::new(ours))
                .await
                .unwrap();
        tokio::spawn(conn);
        sender.ready().await.unwrap();
        let info = UpstreamInfo {
            tls: None,
            peer: "127.0.0.1:9".parse().unwrap(),
        };
        (Dedicated { sender, info }, theirs)
    }

    fn origin(host: &str) -> Origin {
        Origin::of(&Target {
            host: host.to_owned(),
            port: 443,
            tls: true,
        })
        .unwrap()
    }

    /// The connection task holds its connection once: no larger than the connection itself
    /// and what `map` adds.
    #[tokio::test]
    async fn the_connection_task_holds_its_connection_once() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let (_sender, conn) =
            hyper::client::conn::http1::handshake::<_, UpBody>(TokioIo::new(ours))
                .await
                .unwrap();
        let alone = std::mem::size_of_val(&conn);
        let task = run(conn);
        let size = std::mem::size_of_val(&task);
        assert!(size <= alone + 16, "task {size} bytes, connection {alone}");
    }

    #[tokio::test]
    async fn idle_connections_are_bounded_per_origin_fresh_and_open() {
        let idle = IdleH1::default();
        let mut peers = Vec::new();
        for i in 0..IdleH1::MAX + 6 {
            let (d, peer) = conn().await;
            peers.push(peer);
            idle.put(&origin(&format!("h{i}.example")), d);
        }
        assert_eq!(idle.conns.lock().unwrap().len(), IdleH1::MAX);
        assert!(
            idle.take(&origin("h0.example")).is_none(),
            "the oldest went first"
        );
        let last = format!("h{}.example", IdleH1::MAX + 5);
        assert!(idle.take(&origin(&last)).is_some());
        assert!(idle.take(&origin(&last)).is_none(), "handed out once");
        // Same host, other port: another origin.
        let other_port = Origin::of(&Target {
            host: "h10.example".to_owned(),
            port: 8443,
            tls: true,
        })
        .unwrap();
        assert!(idle.take(&other_port).is_none());

        // An upstream that closed meanwhile is not handed out.
        drop(std::mem::replace(&mut peers[20], tokio::io::duplex(1).0));
        let closed = origin("h20.example");
        for _ in 0..100 {
            let gone = idle
                .conns
                .lock()
                .unwrap()
                .iter()
                .any(|c| c.authority == closed.authority && c.conn.sender.is_closed());
            if gone {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(idle.take(&closed).is_none());
        assert!(idle.take(&origin("h21.example")).is_some());

        // Past the idle time, nothing is handed out.
        let later = Instant::now() + IdleH1::FOR + Duration::from_secs(1);
        assert!(idle.take_at(&origin("h30.example"), later).is_none());
        assert!(idle.conns.lock().unwrap().is_empty());
    }
}
