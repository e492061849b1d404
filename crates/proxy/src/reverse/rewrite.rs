//! Reverse mode's hook: the upstream sees its own name in `Host` and what the client asked for
//! in `X-Forwarded-*`; with `--rewrite-metadata`, `resource` parameters naming the public origin
//! go back to the upstream's (request side), and OAuth metadata and `WWW-Authenticate`
//! challenges naming the upstream are rewritten to the public origin (response side). The flow
//! keeps what the client sent and what the upstream answered, marked `x-mcptap-rewritten`.

use super::{
    add_forwarded, is_metadata_path, rewrite_origins, rewrite_resource_params, ReverseConfig,
    MAX_REWRITTEN_FORM,
};
use crate::hook::{Exchange, Hook, Outgoing, Reply};
use crate::message::{flow_headers, BoxError, ProxyBody};
use crate::tap::{fail, Recorder, Tap};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{request, response, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use mcptap_flow::{Direction, ErrorKind, FlowError};
use std::sync::Arc;

/// The reverse-mode hook.
#[derive(Debug)]
pub(crate) struct ReverseRewrite {
    config: Arc<ReverseConfig>,
}

impl ReverseRewrite {
    pub(crate) fn new(config: Arc<ReverseConfig>) -> ReverseRewrite {
        ReverseRewrite { config }
    }

    /// With `--rewrite-metadata`: the public origin of this exchange.
    fn rewriting<'a>(&self, ex: &'a Exchange<'_>) -> Option<&'a str> {
        ex.route
            .public
            .as_deref()
            .filter(|_| self.config.rewrite_metadata)
    }
}

impl Hook for ReverseRewrite {
    async fn request(&self, ex: &mut Exchange<'_>, parts: &mut request::Parts) {
        // The upstream sees its own name in Host, and what the client asked for in X-Forwarded-*.
        let public_host = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        add_forwarded(
            &mut parts.headers,
            ex.ctx.client_addr.ip(),
            ex.ctx.scheme(),
            public_host.as_deref(),
        );
        if let Some(a) = ex.route.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                parts.headers.insert(header::HOST, v);
            }
        }
        // `resource` in the query (an authorization request).
        let Some(public) = self.rewriting(ex) else {
            return;
        };
        let uri = &ex.route.uri;
        let Some(q) = uri.query().filter(|q| q.contains("resource=")) else {
            return;
        };
        let Some(new_q) = rewrite_resource_params(q, &self.config, public) else {
            return;
        };
        let mut up = uri.clone().into_parts();
        if let Ok(pq) = format!("{}?{new_q}", uri.path()).parse() {
            up.path_and_query = Some(pq);
            if let Ok(u) = Uri::from_parts(up) {
                ex.route.uri = u;
                mark_request_rewritten(ex.rec);
            }
        }
    }

    /// `resource` in a small form body (a token or refresh request): read whole and rewritten.
    async fn request_body(
        &self,
        ex: &mut Exchange<'_>,
        parts: &mut request::Parts,
        body: Outgoing,
    ) -> Result<Outgoing, FlowError> {
        let Some(public) = self.rewriting(ex) else {
            return Ok(body);
        };
        let body = match body {
            Outgoing::Stream(b) if is_small_form(&parts.headers, &b) => b,
            other => return Ok(other),
        };
        let bytes = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => return Err(crate::upstream::flow_error(&*e)),
        };
        let text = String::from_utf8_lossy(&bytes);
        let bytes = match rewrite_resource_params(&text, &self.config, public) {
            Some(new) => {
                mark_request_rewritten(ex.rec);
                Bytes::from(new)
            }
            None => bytes,
        };
        parts
            .headers
            .insert(header::CONTENT_LENGTH, bytes.len().into());
        Ok(Outgoing::Whole(bytes))
    }

    async fn response(
        &self,
        ex: &mut Exchange<'_>,
        parts: response::Parts,
        body: Incoming,
    ) -> Reply {
        match self.rewriting(ex) {
            Some(public) => Reply::Done(
                rewrite_metadata(
                    &self.config,
                    public,
                    ex.route.public_path().unwrap_or("/"),
                    parts,
                    body,
                    ex.rec.clone(),
                    ex.body_limit,
                )
                .await,
            ),
            None => Reply::Pass(parts, body),
        }
    }
}

/// OAuth metadata and `WWW-Authenticate` challenges that name the upstream are rewritten to the
/// public origin. Metadata bodies are small JSON documents and are read whole (bounded);
/// everything else streams as usual.
async fn rewrite_metadata(
    rev: &ReverseConfig,
    public: &str,
    path: &str,
    mut parts: response::Parts,
    body: Incoming,
    rec: Arc<Recorder>,
    limit: usize,
) -> Response<ProxyBody> {
    let origins = rev.origins();
    let mut changed = false;
    let challenges: Vec<HeaderValue> = parts
        .headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| {
            let text = String::from_utf8_lossy(v.as_bytes());
            let new = rewrite_origins(&text, &origins, public);
            if new != text {
                changed = true;
            }
            HeaderValue::from_str(&new).unwrap_or_else(|_| v.clone())
        })
        .collect();
    if changed {
        parts.headers.remove(header::WWW_AUTHENTICATE);
        for c in challenges {
            parts.headers.append(header::WWW_AUTHENTICATE, c);
        }
    }
    let json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    if !(is_metadata_path(path) && json && parts.status.is_success()) {
        if changed {
            mark_rewritten(&rec, &parts);
        }
        let body = Tap::new(body, rec, Direction::Response, limit, false);
        return Response::from_parts(parts, body.boxed());
    }
    let bytes = match http_body_util::Limited::new(body, 1 << 20).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return fail(
                &rec,
                ErrorKind::UpstreamProtocol,
                format!("cannot read metadata to rewrite it: {e}"),
                None,
            )
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let new = rewrite_origins(&text, &origins, public);
    if new != text {
        changed = true;
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    if changed {
        mark_rewritten(&rec, &parts);
    }
    let body = Tap::new(
        Full::new(Bytes::from(new)).map_err(|never| -> BoxError { match never {} }),
        rec,
        Direction::Response,
        limit,
        false,
    );
    Response::from_parts(parts, body.boxed())
}

/// Records (in the flow only, never on the wire) that mcptap rewrote this response.
fn mark_rewritten(rec: &Recorder, parts: &response::Parts) {
    let headers = flow_headers(&parts.headers);
    rec.with(|f| {
        if let Some(r) = f.response.as_mut() {
            r.headers = headers;
            r.headers.push("x-mcptap-rewritten", "metadata");
        }
    });
}

/// A form body small enough to read whole (a token request).
fn is_small_form(headers: &HeaderMap, body: &Tap<Incoming>) -> bool {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| mcptap_flow::media_type_is(ct, "application/x-www-form-urlencoded"));
    form && http_body::Body::size_hint(body)
        .upper()
        .is_some_and(|n| n <= MAX_REWRITTEN_FORM)
}

/// Records (in the flow only) that mcptap rewrote the request's `resource` for the upstream.
fn mark_request_rewritten(rec: &Recorder) {
    rec.with(|f| {
        if f.request.headers.get("x-mcptap-rewritten").is_none() {
            f.request.headers.push("x-mcptap-rewritten", "resource");
        }
    });
}
