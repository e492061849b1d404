//! The seam of forwarding (in the spirit of hudsucker's `HttpHandler`): one small trait whose
//! methods all default to doing nothing, implemented by each mode that changes an exchange —
//! proxy authentication ([`crate::auth`]), reverse rewriting ([`crate::reverse`]), token
//! injection and refresh ([`crate::inject`]). `forward()` calls the steps in order; a mode
//! overrides only the steps it takes part in.
//!
//! Hooks are composed statically (`Option<H>` and tuples are hooks too), so a proxy without a
//! mode pays a branch per step, never a boxed future.

use crate::context::ConnCtx;
use crate::message::ProxyBody;
use crate::route::Route;
use crate::tap::{Recorder, Tap};
use bytes::Bytes;
use http::{request, response, Request, Response};
use hyper::body::Incoming;
use mcptap_flow::FlowError;
use std::future::Future;
use std::sync::Arc;

/// One exchange as the hooks see it.
pub(crate) struct Exchange<'a> {
    /// The client connection.
    pub ctx: &'a ConnCtx,
    /// The flow being recorded.
    pub rec: &'a Arc<Recorder>,
    /// Where the request goes (a hook may change the upstream URI's query).
    pub route: Route,
    /// Bytes of each body kept in the flow.
    pub body_limit: usize,
}

/// A request body on its way upstream: streamed through its tap, or read whole first.
// One per request: boxing the tap would allocate on the hot path.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Outgoing {
    Stream(Tap<Incoming>),
    /// Read whole (and recorded by its tap already); mcptap's own client sends the bytes.
    Whole(Bytes),
}

/// What a hook made of the upstream's response.
pub(crate) enum Reply {
    /// Not this hook's: the next one (or the default tap) gets it.
    Pass(response::Parts, Incoming),
    /// The answer to the client, body and recording settled.
    Done(Response<ProxyBody>),
}

/// A step of forwarding that may look at or change an exchange. Called in this order:
/// [`admit`](Hook::admit) (proxy listener only), [`request`](Hook::request),
/// [`request_body`](Hook::request_body), [`response`](Hook::response).
pub(crate) trait Hook: Send + Sync + 'static {
    /// A request on the proxy listener itself (CONNECT or absolute-form), before anything is
    /// recorded: `Some(answer)` refuses it.
    fn admit(&self, _req: &Request<Incoming>) -> Option<Response<ProxyBody>> {
        None
    }

    /// The request head on its way upstream: hop-by-hop headers gone, its URI still the
    /// client's (the upstream's is `ex.route.uri`).
    fn request(
        &self,
        _ex: &mut Exchange<'_>,
        _parts: &mut request::Parts,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The request body, already tapped; a hook may read it whole and replace it. An error ends
    /// the flow with that error.
    fn request_body(
        &self,
        _ex: &mut Exchange<'_>,
        _parts: &mut request::Parts,
        body: Outgoing,
    ) -> impl Future<Output = Result<Outgoing, FlowError>> + Send {
        async { Ok(body) }
    }

    /// The upstream's response (hop-by-hop headers gone, head recorded), before it goes back.
    fn response(
        &self,
        _ex: &mut Exchange<'_>,
        parts: response::Parts,
        body: Incoming,
    ) -> impl Future<Output = Reply> + Send {
        async { Reply::Pass(parts, body) }
    }
}

/// An absent hook costs nothing; a present one's futures are boxed, so that the exchange future
/// (boxed whole for every request) does not carry the largest hook's state inline.
impl<H: Hook> Hook for Option<H> {
    fn admit(&self, req: &Request<Incoming>) -> Option<Response<ProxyBody>> {
        self.as_ref()?.admit(req)
    }

    async fn request(&self, ex: &mut Exchange<'_>, parts: &mut request::Parts) {
        if let Some(h) = self {
            Box::pin(h.request(ex, parts)).await;
        }
    }

    async fn request_body(
        &self,
        ex: &mut Exchange<'_>,
        parts: &mut request::Parts,
        body: Outgoing,
    ) -> Result<Outgoing, FlowError> {
        match self {
            Some(h) => Box::pin(h.request_body(ex, parts, body)).await,
            None => Ok(body),
        }
    }

    async fn response(
        &self,
        ex: &mut Exchange<'_>,
        parts: response::Parts,
        body: Incoming,
    ) -> Reply {
        match self {
            Some(h) => Box::pin(h.response(ex, parts, body)).await,
            None => Reply::Pass(parts, body),
        }
    }
}

impl<A: Hook, B: Hook, C: Hook> Hook for (A, B, C) {
    fn admit(&self, req: &Request<Incoming>) -> Option<Response<ProxyBody>> {
        self.0
            .admit(req)
            .or_else(|| self.1.admit(req))
            .or_else(|| self.2.admit(req))
    }

    async fn request(&self, ex: &mut Exchange<'_>, parts: &mut request::Parts) {
        self.0.request(ex, parts).await;
        self.1.request(ex, parts).await;
        self.2.request(ex, parts).await;
    }

    async fn request_body(
        &self,
        ex: &mut Exchange<'_>,
        parts: &mut request::Parts,
        body: Outgoing,
    ) -> Result<Outgoing, FlowError> {
        let body = self.0.request_body(ex, parts, body).await?;
        let body = self.1.request_body(ex, parts, body).await?;
        self.2.request_body(ex, parts, body).await
    }

    async fn response(
        &self,
        ex: &mut Exchange<'_>,
        parts: response::Parts,
        body: Incoming,
    ) -> Reply {
        let (parts, body) = match self.0.response(ex, parts, body).await {
            Reply::Pass(p, b) => (p, b),
            done => return done,
        };
        let (parts, body) = match self.1.response(ex, parts, body).await {
            Reply::Pass(p, b) => (p, b),
            done => return done,
        };
        self.2.response(ex, parts, body).await
    }
}
