//! `--inject-refresh`: mcptap refreshes a token itself, with the client's refresh token, at the
//! token endpoint the client used, and records that exchange as a flow of its own (marked
//! `by_mcptap`). The rules for *when* live in [`crate::inject`]; this is the HTTP exchange.

use crate::events::EventSender;
use crate::inject::{endpoint_allowed, Injector, Pick, Refresh, RefreshJob};
use crate::message::{flow_headers, flow_version};
use crate::reverse::ReverseConfig;
use crate::tap::{fail, FlowIds, Recorder, Tap};
use crate::target::{bare_host, default_port};
use crate::upstream::{classify, OwnClient};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use mcptap_flow::{now_micros, Direction, ErrorKind, Flow, FlowId};
use std::sync::Arc;
use std::time::Duration;

/// How long a refresh may take, all included; the bare request waits at most this long.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(10);

/// The marker on flows of refresh exchanges mcptap made.
pub(crate) const MARKER: &str = "inject-refresh";

/// What mcptap needs to make a refresh exchange and record it.
#[derive(Clone)]
pub(crate) struct Refresher {
    /// mcptap's own upstream client.
    pub client: OwnClient,
    pub events: EventSender,
    pub ids: FlowIds,
    /// Reverse mode: refreshes go where the client's request to the endpoint was routed.
    pub reverse: Option<Arc<ReverseConfig>>,
    pub body_limit: usize,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher").finish_non_exhaustive()
    }
}

/// A token for a bare request to `url` got by refreshing, if that is allowed and works. Waits
/// for a refresh another request started with the same refresh token instead of starting a
/// second one.
pub(crate) async fn refresh_for(
    shared: &Refresher,
    injector: &Arc<Injector>,
    url: &str,
) -> Option<Pick> {
    // Twice at most: after waiting for another refresh, its token may not cover this request.
    for _ in 0..2 {
        match injector.plan_refresh(url)? {
            Refresh::Wait(mut rx) => {
                // Closed (Err) when the other refresh ends.
                let _ = tokio::time::timeout(REFRESH_TIMEOUT, rx.changed()).await;
                if let Ok(p) = injector.pick(url, now_micros()) {
                    return Some(p);
                }
            }
            Refresh::Go(job) => {
                // Its own task: the client going away must not cut a refresh short (the server
                // may already have rotated the refresh token; the answer must be learned).
                let (shared, injector, url) = (shared.clone(), injector.clone(), url.to_owned());
                let span = tracing::debug_span!("inject_refresh");
                return tokio::spawn(tracing::Instrument::instrument(
                    async move {
                        let (flow, body) = exchange(&shared, &job).await;
                        injector.refresh_done(job, body.as_deref(), flow, now_micros(), &url)
                    },
                    span,
                ))
                .await
                .ok()
                .flatten();
            }
        }
    }
    None
}

/// Where the refresh goes upstream: the URL the client used, or in reverse mode what the
/// client's request to that URL was routed to.
fn upstream_uri(shared: &Refresher, endpoint: &str) -> Option<Uri> {
    let uri: Uri = endpoint.parse().ok()?;
    match &shared.reverse {
        None => Some(uri),
        Some(rev) => {
            let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            crate::reverse::target(rev.route(uri.path()), pq).ok()
        }
    }
}

/// Makes the refresh request and records it. Returns its flow id and, when the token endpoint
/// answered `200`, the response body.
async fn exchange(shared: &Refresher, job: &RefreshJob) -> (FlowId, Option<Bytes>) {
    let id = shared.ids.next();
    let started = now_micros();
    let uri = upstream_uri(shared, &job.endpoint).filter(|u| endpoint_allowed(&u.to_string()));
    let host = uri.as_ref().map(bare_host).unwrap_or_default();
    let port = uri
        .as_ref()
        .map(|u| {
            u.port_u16()
                .unwrap_or_else(|| default_port(u.scheme_str().unwrap_or("http")))
        })
        .unwrap_or(0);
    let mut req = Request::post(uri.clone().unwrap_or_default())
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        )
        .header(header::ACCEPT, HeaderValue::from_static("application/json"))
        .header(header::USER_AGENT, HeaderValue::from_static("mcptap"));
    if let Some(a) = uri.as_ref().and_then(|u| u.authority()) {
        if let Ok(v) = HeaderValue::from_str(a.as_str()) {
            req = req.header(header::HOST, v);
        }
    }
    if let Some(b) = job
        .basic
        .as_deref()
        .and_then(|b| HeaderValue::from_str(b).ok())
    {
        req = req.header(header::AUTHORIZATION, b);
    }
    let Ok(req) = req.body(()) else {
        return (id, None);
    };
    let (parts, ()) = req.into_parts();
    let flow = Flow {
        id,
        host,
        port,
        request: mcptap_flow::Request {
            method: "POST".to_owned(),
            url: job.endpoint.clone(),
            version: flow_version(http::Version::HTTP_11),
            headers: flow_headers(&parts.headers),
            body: Default::default(),
        },
        timings: mcptap_flow::Timings {
            started,
            ..Default::default()
        },
        by_mcptap: Some(MARKER.to_owned()),
        ..Default::default()
    };
    let rec = Recorder::start(flow, shared.events.clone(), None);
    let Some(uri) = uri else {
        let _ = fail(
            &rec,
            ErrorKind::ClientProtocol,
            "mcptap did not refresh: the token endpoint is neither https nor loopback".to_owned(),
            None,
        );
        return (id, None);
    };
    tracing::info!(
        flow = id.0,
        "--inject-refresh: refreshing the client's token at {}",
        job.endpoint
    );
    let body = Tap::new(
        Full::new(Bytes::from(job.body.clone())),
        rec.clone(),
        Direction::Request,
        shared.body_limit,
        false,
    );
    let mut up = Request::from_parts(parts, body);
    *up.uri_mut() = uri;
    let outcome = tokio::time::timeout(REFRESH_TIMEOUT, async {
        let resp = match shared.client.request(up).await {
            Ok(r) => r,
            Err(e) => {
                let (kind, message, hint) = classify(&e);
                let _ = fail(&rec, kind, message, hint);
                return None;
            }
        };
        let status = resp.status();
        rec.response_head(mcptap_flow::Response {
            status: status.as_u16(),
            version: flow_version(resp.version()),
            headers: flow_headers(resp.headers()),
            ..Default::default()
        });
        let body = Tap::new(
            resp.into_body(),
            rec.clone(),
            Direction::Response,
            shared.body_limit,
            false,
        );
        let bytes = Limited::new(body, 1 << 20).collect().await.ok()?.to_bytes();
        (status == http::StatusCode::OK).then_some(bytes)
    })
    .await;
    match outcome {
        Ok(body) => (id, body),
        Err(_) => {
            let _ = fail(
                &rec,
                ErrorKind::UpstreamTimeout,
                format!(
                    "the refresh took longer than {} s",
                    REFRESH_TIMEOUT.as_secs()
                ),
                None,
            );
            (id, None)
        }
    }
}
