//! Forwarding one HTTP exchange, as a pipeline of named steps: **route** (where it goes),
//! **record** the request head, the **hooks** of this mode (reverse rewriting, token injection;
//! [`crate::hook`]), **send** it upstream with its body streaming through a tap, **record** the
//! response head, then the response hooks and the tap that streams the body back. Every failure
//! becomes an answer (`4xx`/`5xx` with the cause in plain text) and a failed flow
//! ([`crate::tap::fail_with`]).

use crate::context::ConnCtx;
use crate::hook::{Exchange, Hook, Outgoing, Reply};
use crate::message::{
    empty, flow_headers, flow_version, is_upgrade_request, request_head, strip_hop_by_hop,
    text_response, BoxError, ProxyBody,
};
use crate::route::Route;
use crate::shared::Shared;
use crate::tap::{fail, fail_with, Recorder, Tap};
use crate::tunnel_upstream::NewConnection;
use crate::upstream::UpstreamInfo;
use http::header::{self, HeaderValue};
use http::{request, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use mcptap_flow::{now_micros, Direction, ErrorKind, Flow, FlowError, FlowId};
use std::sync::Arc;
use tracing::Instrument;

/// Handles one request that is not a CONNECT.
pub(crate) async fn forward(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = now_micros();
    let id = shared.ids.next();
    let route = match crate::route::route(shared.reverse.as_deref(), &ctx, &req) {
        Ok(r) => r,
        Err(msg) => return reject(&shared, &ctx, id, &req, started, msg),
    };
    let rec = record_request(&shared, &ctx, id, &req, &route, started);
    // Dropped with this handler (the client went away): the flow ends at once, as aborted.
    let _awaiting = rec.awaiting_head();
    let mut ex = Exchange {
        ctx: &ctx,
        rec: &rec,
        route,
        body_limit: shared.body_limit,
    };
    let (outbound, client_upgrade) = match request_hooks(&shared, &mut ex, req).await {
        Ok(o) => o,
        Err(error) => return fail_with(&rec, error),
    };
    let resp = match send(&shared, &ctx, &rec, outbound).await {
        Ok(r) => r,
        Err(error) => {
            tracing::debug!(flow = id.0, "exchange failed: {}", error.message);
            return fail_with(&rec, error);
        }
    };
    let is_sse = record_response_head(&rec, &resp);
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            return switch_protocols(&ctx, &rec, client_upgrade, resp);
        }
    }
    response_hooks(&shared, &mut ex, resp, is_sse).await
}

/// A request ready to go upstream.
struct Outbound {
    parts: request::Parts,
    body: Outgoing,
    /// The client asked to switch protocols (the upstream connection must be HTTP/1.1).
    upgrade: bool,
    /// The HTTP version the client spoke.
    client_version: Version,
}

/// The request side: hop-by-hop headers go, the hooks see the head, the request takes its
/// upstream URI, the body gets its tap and the hooks see it. Also returns the client's side of
/// a protocol upgrade it asked for (WebSocket).
async fn request_hooks(
    shared: &Shared,
    ex: &mut Exchange<'_>,
    mut req: Request<Incoming>,
) -> Result<(Outbound, Option<hyper::upgrade::OnUpgrade>), FlowError> {
    let upgrade = is_upgrade_request(&req);
    let client_version = req.version();
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    prepare_head(&mut parts, upgrade);
    shared.hooks.request(ex, &mut parts).await;
    parts.uri = std::mem::take(&mut ex.route.uri);
    parts.version = Version::HTTP_11;
    let body = Tap::new(
        body,
        ex.rec.clone(),
        Direction::Request,
        shared.body_limit,
        false,
    );
    let body = shared
        .hooks
        .request_body(ex, &mut parts, Outgoing::Stream(body))
        .await?;
    let outbound = Outbound {
        parts,
        body,
        upgrade,
        client_version,
    };
    Ok((outbound, client_upgrade))
}

/// The response side: hop-by-hop headers go, then a hook takes the response or its body streams
/// back through a tap.
async fn response_hooks(
    shared: &Shared,
    ex: &mut Exchange<'_>,
    resp: Response<Incoming>,
    is_sse: bool,
) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    parts.version = Version::HTTP_11;
    match shared.hooks.response(ex, parts, body).await {
        Reply::Done(resp) => resp,
        Reply::Pass(parts, body) => {
            let rec = ex.rec.clone();
            let body = Tap::new(body, rec, Direction::Response, shared.body_limit, is_sse);
            Response::from_parts(parts, body.boxed())
        }
    }
}

/// Starts the flow with the request head as the client sent it.
fn record_request(
    shared: &Shared,
    ctx: &ConnCtx,
    id: FlowId,
    req: &Request<Incoming>,
    route: &Route,
    started: i64,
) -> Arc<Recorder> {
    let flow = Flow {
        request: request_head(req, route.shown.clone()),
        ..ctx.flow(id, route.host.clone(), route.port, started)
    };
    let idle = Some(shared.limits.idle_body);
    Recorder::start_with_idle_limit(flow, shared.events.clone(), shared.observer.clone(), idle)
}

/// The head as it goes upstream: `Host` kept from an HTTP/2 `:authority`, hop-by-hop headers
/// gone (`Upgrade` kept for an upgrade).
fn prepare_head(parts: &mut request::Parts, upgrade: bool) {
    // An h2 client sends :authority instead of Host; keep what it asked for.
    if !parts.headers.contains_key(header::HOST) {
        if let Some(a) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                parts.headers.insert(header::HOST, v);
            }
        }
    }
    strip_hop_by_hop(&mut parts.headers, upgrade);
}

/// Sends the request upstream and waits (within `--response-timeout`) for the response head.
///
/// Speaks to the upstream what the client spoke to us (as mitmproxy does): an HTTP/1.1 client
/// gets an HTTP/1.1 upstream (its tunnel's own connection when it has one), an HTTP/2 client
/// may get HTTP/2. Upgrades need 1.1.
async fn send(
    shared: &Shared,
    ctx: &ConnCtx,
    rec: &Recorder,
    request: Outbound,
) -> Result<Response<Incoming>, FlowError> {
    let Outbound {
        mut parts,
        body: outgoing,
        upgrade,
        client_version,
    } = request;
    let client = if upgrade || client_version < Version::HTTP_2 {
        &shared.client_h1
    } else {
        &shared.client
    };
    let own = ctx
        .upstream
        .as_ref()
        .filter(|_| !upgrade && client_version < Version::HTTP_2 && shared.reverse.is_none());
    // Pinned here, not moved into `head_within`: an async fn keeps its argument and the pinned
    // local apart, so the sending (the largest state of an exchange) would be held twice.
    let sending = std::pin::pin!(async {
        match (outgoing, own) {
            (Outgoing::Stream(body), Some(own)) => {
                // On its own connection the request goes in origin form, as a client sends it.
                if !parts.headers.contains_key(header::HOST) {
                    if let Ok(v) = HeaderValue::from_str(own.origin().authority.as_str()) {
                        parts.headers.insert(header::HOST, v);
                    }
                }
                let pq = parts
                    .uri
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
                parts.uri = Uri::from(pq);
                own.send(&shared.connector_h1, Request::from_parts(parts, body))
                    .await
            }
            (Outgoing::Stream(body), None) => client
                .request(Request::from_parts(parts, body))
                .await
                .map_err(BoxError::from),
            // Read whole (and recorded by its tap already): mcptap's own client sends the bytes.
            (Outgoing::Whole(bytes), _) => {
                let up_req = Request::from_parts(parts, Tap::passthrough(Full::new(bytes)));
                shared
                    .client_own
                    .request(up_req)
                    .await
                    .map_err(BoxError::from)
            }
        }
    });
    crate::upstream::head_within(shared.limits.response_head, rec, sending).await
}

/// Records the response head (and what the upstream connection negotiated). True for an
/// event stream, whose tap reports every event as it passes.
fn record_response_head(rec: &Recorder, resp: &Response<Incoming>) -> bool {
    let info = resp.extensions().get::<UpstreamInfo>();
    let connected = resp.extensions().get::<NewConnection>().map(|c| c.0);
    let head = mcptap_flow::Response {
        status: resp.status().as_u16(),
        version: flow_version(resp.version()),
        headers: flow_headers(resp.headers()),
        ..Default::default()
    };
    let is_sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| mcptap_flow::media_type_is(ct, "text/event-stream"));
    rec.with(|f| {
        if let Some(info) = info {
            f.upstream_tls = info.tls.clone();
        }
        f.timings.connected = connected;
    });
    rec.response_head(head);
    is_sse
}

/// A `101`: answers the client with it and splices both upgraded streams in a task of their own.
fn switch_protocols(
    ctx: &ConnCtx,
    rec: &Arc<Recorder>,
    client_upgrade: hyper::upgrade::OnUpgrade,
    mut resp: Response<Incoming>,
) -> Response<ProxyBody> {
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let rec2 = rec.clone();
    let guard = ctx.guard.clone();
    let span = tracing::debug_span!("upgrade", flow = rec.with(|f| f.id.0));
    tokio::spawn(splice_upgrade(client_upgrade, upstream_upgrade, rec2, guard).instrument(span));
    let (mut parts, _body) = resp.into_parts();
    parts.version = Version::HTTP_11;
    Response::from_parts(parts, empty())
}

/// Refuses a request that cannot be forwarded (e.g. origin-form on the listener): a `400`
/// naming why, and a failed flow.
fn reject(
    shared: &Shared,
    ctx: &ConnCtx,
    id: FlowId,
    req: &Request<Incoming>,
    started: i64,
    msg: String,
) -> Response<ProxyBody> {
    let host = req.uri().host().unwrap_or("").to_owned();
    let port = req.uri().port_u16().unwrap_or(0);
    let flow = Flow {
        request: request_head(req, req.uri().to_string()),
        ..ctx.flow(id, host, port, started)
    };
    let rec = Recorder::start(flow, shared.events.clone(), None);
    let _ = fail(&rec, ErrorKind::ClientProtocol, msg.clone(), None);
    text_response(StatusCode::BAD_REQUEST, msg + "\n")
}

/// After a `101`, copies bytes both ways until either side closes, then ends the flow.
async fn splice_upgrade(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    rec: Arc<Recorder>,
    guard: crate::shutdown::Guard,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            rec.with(|f| {
                f.error = Some(FlowError {
                    kind: ErrorKind::UpstreamProtocol,
                    message: format!("protocol upgrade failed: {e}"),
                    hint: None,
                    limit: None,
                })
            });
            rec.response_part_done();
            return;
        }
    };
    let (stats, _err) = crate::splice::splice(
        hyper_util::rt::TokioIo::new(client),
        hyper_util::rt::TokioIo::new(upstream),
        guard,
    )
    .await;
    rec.with(|f| f.tunnel = Some(stats));
    rec.response_part_done();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn returns3<A, B, C, F>(_: impl Fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every request boxes its exchange future whole, and each state it moves through is
    /// copied in: its size is paid per request (12.2 KB when the upstream connect, the hooks'
    /// own states and a spool's cipher key sat inline; ~3.1 KB with those boxed where they
    /// happen, which is rare). Sizes are the compiler's, the same on every run.
    #[test]
    fn the_exchange_future_stays_small() {
        let forward = returns3(forward);
        assert!(forward <= 4 * 1024, "an exchange: {forward} bytes");
        let tap = std::mem::size_of::<Tap<Incoming>>();
        assert!(tap <= 256, "a body tap: {tap} bytes");
    }
}
