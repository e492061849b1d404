//! Fuzz targets for every parser that takes outside input: a HAR file from any tool, a journal
//! left by a crash, bodies and headers as they crossed the wire (redaction, content decoding,
//! SSE), and the reading of OAuth exchanges (`WWW-Authenticate` challenges, forms, URLs,
//! metadata and token JSON) that `mcptap_flow::oauth` does for both the analyzer and the
//! engine's injector.
//!
//! Each target takes arbitrary bytes and must return without panicking. The same functions run
//! under `cargo fuzz` (the `fuzz/` directory, nightly) and in a short stable smoke run
//! (`tests/smoke.rs`, part of `cargo test`); see `docs/fuzzing.md`.
#![deny(missing_docs)]

use mcptap_flow::{CapturedBody, Direction, Flow, FlowId, Headers, Request, Response};

/// A target: arbitrary bytes in, nothing out, never a panic.
pub type Target = fn(&[u8]);

/// Every target, by the name its `fuzz/fuzz_targets/<name>.rs` and corpus directory have.
pub const TARGETS: &[(&str, Target)] = &[
    ("har", har),
    ("journal", journal),
    ("redact", redact),
    ("oauth_flow", oauth_flow),
];

/// The HAR reader (mcptap's own and other tools' files), then what every imported flow goes
/// through: content decoding and redaction, then the analyzer.
pub fn har(data: &[u8]) {
    let Ok(import) = mcptap_store::har::read_har_bytes(data) else {
        return;
    };
    analyze_prepared(import.flows);
}

/// The journal reader, on a journal of any shape (torn, damaged, reordered), then the same.
pub fn journal(data: &[u8]) {
    let flows = mcptap_store::JournalReader::new(data)
        .take(10_000)
        .filter_map(Result::ok)
        .collect();
    analyze_prepared(flows);
}

/// Redaction and decoding of a request as it came from the wire. The input is split at line
/// ends into a URL, a header name and value, a `Content-Type`, a `Content-Encoding` and a body.
pub fn redact(data: &[u8]) {
    let mut parts = fields(data, 6);
    let body = parts.pop().unwrap_or_default();
    let encoding = text(&parts[4]);
    let content_type = text(&parts[3]);
    let mut headers: Headers = [
        ("content-type", content_type.as_str()),
        ("content-encoding", encoding.as_str()),
    ]
    .into_iter()
    .collect();
    headers.push(text(&parts[1]), text(&parts[2]));
    let mut flow = Flow {
        id: FlowId(1),
        request: Request {
            method: "POST".to_owned(),
            url: text(&parts[0]),
            headers,
            body: CapturedBody::complete(body.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    let url = flow.request.url.clone();
    let _ = mcptap_flow::redact::url_password_span(&url, false);
    let _ = mcptap_flow::redact::url_password_span(&url, true);
    let _ = mcptap_flow::redact::form_decode(&body);
    let _ = mcptap_flow::redact::percent_decode(&body, true);
    let _ = mcptap_flow::sse::parse_all(&body, 0);
    let mut redactor = mcptap_flow::redact::Redactor::new();
    redactor.url(Direction::Request, &mut url.clone());
    mcptap_store::prepare(&mut flow, &mcptap_store::Options::default());
    mcptap_flow::redact::redact_flow(&mut flow);
}

/// The reading of an OAuth exchange built around the input: a `401` whose `WWW-Authenticate`
/// value, a metadata document, a token request form and the URLs involved come from the input
/// (split at line ends). The shared parsers (`mcptap_flow::oauth`) get each piece directly,
/// then the analyzer gets the exchange.
pub fn oauth_flow(data: &[u8]) {
    let parts = fields(data, 5);
    let (challenge, mcp_url, metadata, form, location) = (
        text(&parts[0]),
        text(&parts[1]),
        parts[2].clone(),
        parts[3].clone(),
        text(&parts[4]),
    );
    oauth_parsers(&challenge, &mcp_url, &metadata, &form, &location);
    let mcp = Flow {
        id: FlowId(1),
        request: Request {
            method: "POST".to_owned(),
            url: mcp_url.clone(),
            headers: [("content-type", "application/json")].into_iter().collect(),
            body: CapturedBody::complete(r#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#),
            ..Default::default()
        },
        response: Some(Response {
            status: 401,
            headers: [
                ("www-authenticate", challenge.as_str()),
                ("location", location.as_str()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let meta = Flow {
        id: FlowId(2),
        request: Request {
            method: "GET".to_owned(),
            url: format!("{mcp_url}/.well-known/oauth-protected-resource"),
            ..Default::default()
        },
        response: Some(Response {
            status: 200,
            headers: [("content-type", "application/json")].into_iter().collect(),
            body: CapturedBody::complete(metadata),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = Flow {
        id: FlowId(3),
        request: Request {
            method: "POST".to_owned(),
            url: location,
            headers: [("content-type", "application/x-www-form-urlencoded")]
                .into_iter()
                .collect(),
            body: CapturedBody::complete(form),
            ..Default::default()
        },
        response: Some(Response {
            status: 200,
            headers: [("content-type", "application/json")].into_iter().collect(),
            body: CapturedBody::complete(r#"{"access_token":"a","token_type":"Bearer"}"#),
            ..Default::default()
        }),
        ..Default::default()
    };
    let _ = mcptap_analyze::analyze(&[mcp, meta, token]);
}

/// Every parser of `mcptap_flow::oauth` on the pieces of an exchange.
fn oauth_parsers(challenge: &str, mcp_url: &str, metadata: &[u8], form: &[u8], location: &str) {
    use mcptap_flow::oauth;
    for c in oauth::parse_challenges(challenge.split('\r')) {
        let _ = (
            c.param("scope"),
            c.param("resource_metadata"),
            c.is_bearer(),
        );
    }
    for url in [mcp_url, location] {
        let _ = oauth::canonical(url);
        let _ = oauth::WellKnown::of_url(url);
        if let Some(u) = oauth::Url::parse(url) {
            let _ = (u.origin(), u.endpoint(), u.query_pairs());
            let _ = u.join(location).map(|j| j.endpoint());
        }
    }
    let _ = oauth::form_pairs(&String::from_utf8_lossy(form));
    let _ = oauth::form_value(form, "resource");
    let _ = oauth::percent_decode(form, false);
    let _ = oauth::percent_encode(&String::from_utf8_lossy(form));
    if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(metadata) {
        let jwt = oauth::bearer_access_token(&doc).and_then(oauth::decode_jwt);
        let _ = oauth::expires_at(oauth::expires_in(&doc), jwt.as_ref(), 0);
    }
}

fn analyze_prepared(mut flows: Vec<Flow>) {
    let options = mcptap_store::Options::default();
    for f in &mut flows {
        mcptap_store::prepare(f, &options);
    }
    let _ = mcptap_analyze::analyze(&flows);
}

/// `data` split at line ends into exactly `n` fields (the last one takes the rest; missing
/// ones are empty).
fn fields(data: &[u8], n: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = data
        .splitn(n, |b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    out.resize(n, Vec::new());
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
