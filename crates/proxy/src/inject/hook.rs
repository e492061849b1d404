//! Inject mode's hook in forwarding one request: whether a request without `Authorization` gets
//! the captured token (refreshed first with `--inject-refresh` when none is usable), and what
//! its flow records either way (`injected`, or `not_injected` with the reason). The rules
//! themselves are in the parent module.

use super::{check_authority, Injector, Skip};
use crate::hook::{Exchange, Hook};
use crate::refresh::Refresher;
use crate::tap::Recorder;
use http::header::{self, HeaderValue};
use mcptap_flow::{now_micros, Injection};
use std::sync::Arc;

/// The token-injection hook.
#[derive(Debug)]
pub(crate) struct InjectToken {
    injector: Arc<Injector>,
    refresher: Refresher,
}

impl InjectToken {
    pub(crate) fn new(injector: Arc<Injector>, refresher: Refresher) -> InjectToken {
        InjectToken {
            injector,
            refresher,
        }
    }
}

impl Hook for InjectToken {
    async fn request(&self, ex: &mut Exchange<'_>, parts: &mut http::request::Parts) {
        inject(&self.refresher, &self.injector, ex.rec, parts).await;
    }
}

/// Adds the token to `parts` when every rule allows it, else records why not. `parts` is the
/// request on its way upstream, its URI still the client's; the `Host` headers checked are the
/// ones the client sent (as recorded). Nothing else of it is changed.
async fn inject(
    refresher: &Refresher,
    injector: &Arc<Injector>,
    rec: &Recorder,
    parts: &mut http::request::Parts,
) {
    if parts.headers.contains_key(header::AUTHORIZATION) {
        return; // never replaced, not even a wrong one
    }
    let (url, hosts) = rec.with(|f| {
        let hosts: Vec<String> = f
            .request
            .headers
            .get_all("host")
            .map(str::to_owned)
            .collect();
        (f.request.url.clone(), hosts)
    });
    // The names the request gives its origin: its Host headers as the client sent them, and the
    // authority of an absolute-form or HTTP/2 target. Each must be where the request goes.
    let authority = parts.uri.authority().map(|a| a.as_str().to_owned());
    let named = hosts.iter().map(String::as_str).chain(authority.as_deref());
    let picked = match check_authority(&url, named) {
        Err(skip) => Err(skip),
        Ok(()) => match injector.pick(&url, now_micros()) {
            // --inject-refresh: no usable token, but maybe a refreshable one.
            Err(Skip::NoToken) if injector.refreshes() => {
                crate::refresh::refresh_for(refresher, injector, &url)
                    .await
                    .ok_or(Skip::NoToken)
            }
            other => other,
        },
    };
    let id = rec.with(|f| f.id);
    match picked.and_then(|pick| {
        HeaderValue::from_str(&pick.header)
            .map(|v| (pick, v))
            .map_err(|_| Skip::Unsendable)
    }) {
        Ok((pick, value)) => {
            parts.headers.insert(header::AUTHORIZATION, value);
            rec.with(|f| {
                f.injected = Some(Injection {
                    fingerprint: pick.fingerprint,
                    token_flow: Some(pick.token_flow),
                })
            });
        }
        Err(skip) => {
            // What the client may well do on purpose stays quiet; a request that the path or
            // Host rules turned away is worth a look.
            match &skip {
                Skip::NotAResource | Skip::NoToken | Skip::Insecure => {
                    tracing::debug!(flow = id.0, "not injecting: {skip}")
                }
                _ => tracing::warn!(flow = id.0, "not injecting: {skip}"),
            }
            rec.with(|f| f.not_injected = Some(skip.to_string()));
        }
    }
}
