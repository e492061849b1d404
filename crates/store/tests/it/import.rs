//! HAR files from other tools, and HAR files that are broken.

use crate::common::{fixture, tempdir};
use mcptap_flow::redact::fingerprint;
use mcptap_flow::{ErrorKind, Flow, FlowState, HttpVersion};
use mcptap_store::har::read_har_bytes;
use mcptap_store::{load, prepare, Options, SourceKind, StoreError};
use std::io::Write;

fn flows(name: &str) -> Vec<Flow> {
    let s = load(&fixture(name))
        .unwrap_or_else(|e| panic!("{name}: {e}: {:?}", std::error::Error::source(&e)));
    assert_eq!(s.kind, SourceKind::Har);
    s.flows
}

fn find<'a>(flows: &'a [Flow], method: &str, url_part: &str) -> &'a Flow {
    flows
        .iter()
        .find(|f| f.request.method == method && f.request.url.contains(url_part))
        .unwrap_or_else(|| panic!("no {method} {url_part}"))
}

fn body(f: &Flow) -> &str {
    f.response.as_ref().unwrap().body.as_str().unwrap()
}

#[test]
fn mitmproxy_real_export() {
    let s = load(&fixture("mitmproxy.har")).unwrap();
    assert_eq!(s.creator.as_deref(), Some("mitmproxy 11.0.2"));
    let flows = s.flows;
    assert_eq!(flows.len(), 9);
    // Timestamps with microseconds and `+00:00`.
    assert!(flows
        .windows(2)
        .all(|w| w[0].timings.started < w[1].timings.started));
    assert!(flows[0].timings.started % 1000 != 0, "microseconds kept");
    let token = find(&flows, "POST", "/token");
    assert_eq!(
        token.request.body.as_str().unwrap().split('&').nth(1),
        Some("code=code-mitm-abc")
    );
    assert!(body(token).contains("at-mitm-fixture-123"));
    let sse = find(&flows, "POST", "/mcp");
    let events = &sse.response.as_ref().unwrap().sse;
    assert_eq!(events.len(), 1, "SSE events parsed from the body");
    assert_eq!(events[0].event.as_deref(), Some("message"));
    let gz = find(&flows, "GET", "/gzip");
    assert_eq!(
        gz.response.as_ref().unwrap().body.encoding.as_deref(),
        Some("gzip")
    );
    assert!(body(gz).starts_with(r#"{"hello": "gzip""#));
    let https = find(&flows, "GET", "https://");
    assert_eq!((https.host.as_str(), https.port), ("127.0.0.1", 18742));
    let refused = find(&flows, "GET", "/refused");
    assert_eq!(refused.state, FlowState::Failed);
    assert!(refused.response.is_none());
    let err = refused.error.as_ref().unwrap();
    assert_eq!(err.kind, ErrorKind::UpstreamConnect);
    assert!(err.message.contains("Connect call failed"));

    // Redacting an import: the token issued and the token sent have one fingerprint.
    let mut flows = flows;
    for f in &mut flows {
        prepare(f, &Options::default());
    }
    let json = serde_json::to_string(&flows).unwrap();
    for secret in [
        "at-mitm-fixture-123",
        "rt-mitm-fixture-456",
        "code-mitm-abc",
        "verifier-mitm",
        "sess-mitm-789",
    ] {
        assert!(!json.contains(secret), "{secret}");
    }
    let fp = fingerprint("at-mitm-fixture-123");
    let places: Vec<&str> = flows
        .iter()
        .flat_map(|f| &f.secrets)
        .filter(|n| n.fingerprint == fp)
        .map(|n| n.place.as_str())
        .collect();
    assert_eq!(
        places,
        ["response.json.access_token", "request.header.authorization"]
    );
    let code: Vec<&str> = flows
        .iter()
        .flat_map(|f| &f.secrets)
        .filter(|n| n.fingerprint == fingerprint("code-mitm-abc"))
        .map(|n| n.place.as_str())
        .collect();
    assert_eq!(code, ["request.query.code", "request.form.code"]);
}

#[test]
fn chromium_real_export_via_playwright() {
    let s = load(&fixture("chromium-playwright.har")).unwrap();
    assert_eq!(s.creator.as_deref(), Some("Playwright 1.65.1"));
    let flows = s.flows;
    assert_eq!(flows.len(), 8);
    let token = find(&flows, "POST", "/token");
    assert!(token
        .request
        .body
        .as_str()
        .unwrap()
        .contains("code=code-chromium-abc"));
    assert!(token
        .request
        .headers
        .get("referer")
        .unwrap()
        .contains("code=code-chromium-abc"));
    let image = find(&flows, "GET", "/image");
    let bytes = &image.response.as_ref().unwrap().body.bytes;
    assert_eq!(bytes.len(), 1024);
    assert_eq!(&bytes[..4], &[0, 1, 2, 3], "base64 content decoded");
    let gz = find(&flows, "GET", "/gzip");
    assert_eq!(
        gz.response.as_ref().unwrap().body.encoding.as_deref(),
        Some("gzip")
    );
    let sse = flows
        .iter()
        .filter(|f| f.request.method == "POST" && f.request.url.ends_with("/mcp"))
        .nth(1)
        .unwrap();
    assert_eq!(sse.response.as_ref().unwrap().sse.len(), 1);
    // Status -1 with `_failureText`: a request that got no response.
    let refused = find(&flows, "GET", "/refused");
    assert_eq!(refused.state, FlowState::Failed);
    let err = refused.error.as_ref().unwrap();
    assert_eq!(
        (err.kind, err.message.as_str()),
        (ErrorKind::UpstreamConnect, "net::ERR_CONNECTION_REFUSED")
    );
}

#[test]
fn chrome_devtools_format() {
    let flows = flows("chrome-devtools.har");
    assert_eq!(flows.len(), 5);
    let doc = &flows[0];
    assert_eq!(doc.request.version, HttpVersion::Http2, "http/2.0");
    assert!(
        doc.request.headers.iter().all(|h| !h.name.starts_with(':')),
        "pseudo-headers are not header fields"
    );
    assert_eq!(
        doc.request.headers.get("cookie"),
        Some("sid=chrome-cookie-1")
    );
    // blocked + dns + connect (ssl is inside connect), then send, wait, receive.
    let t = doc.timings;
    assert_eq!(t.connected, Some(t.started + 52_300));
    assert_eq!(t.request_done, Some(t.started + 52_600));
    assert_eq!(t.response_head, Some(t.started + 102_700));
    assert_eq!(t.finished, Some(t.started + 105_300));
    let mcp = &flows[1];
    assert!(mcp.has_bearer());
    assert_eq!(
        mcp.response.as_ref().unwrap().sse[0].id.as_deref(),
        Some("1")
    );
    let cached = &flows[2];
    assert_eq!(
        cached.request.version,
        HttpVersion::Http11,
        "empty httpVersion"
    );
    assert_eq!(
        &cached.response.as_ref().unwrap().body.bytes[..4],
        b"\x89PNG"
    );
    let ws = &flows[3];
    assert_eq!(ws.status(), Some(101));
    let failed = &flows[4];
    assert_eq!(failed.state, FlowState::Failed);
    assert_eq!(failed.error.as_ref().unwrap().kind, ErrorKind::UpstreamDns);
}

#[test]
fn firefox_devtools_format() {
    let flows = flows("firefox-devtools.har");
    assert_eq!(flows.len(), 3);
    let meta = &flows[0];
    assert_eq!(meta.request.version, HttpVersion::Http2, "HTTP/2");
    // 11:14:07.300+02:00 is 09:14:07.300Z.
    assert_eq!(meta.timings.started, 1_714_641_247_300_000);
    assert_eq!(
        meta.response.as_ref().unwrap().body.encoding.as_deref(),
        Some("gzip")
    );
    let token = &flows[1];
    assert_eq!(
        token.request.body.as_str(),
        Some("grant_type=authorization_code&code=firefox-code-1&code_verifier=firefox-verifier-1&redirect_uri=https%3A%2F%2Fapp.example%2Fcallback"),
        "form params without text become the form body"
    );
    let image = &flows[2];
    let body = &image.response.as_ref().unwrap().body;
    assert!(
        body.bytes.is_empty() && body.truncated && body.total_len == 4186,
        "{body:?}"
    );
}

#[test]
fn http_toolkit_format() {
    let s = load(&fixture("httptoolkit.har")).unwrap();
    assert_eq!(s.creator.as_deref(), Some("HTTP Toolkit 1.19.0"));
    let flows = s.flows;
    assert_eq!(flows.len(), 4);
    assert_eq!(
        flows[0].request.headers.get("authorization"),
        Some("Bearer htk-token-1")
    );
    assert_eq!(
        &flows[1].request.body.bytes[..],
        &[0xff, 0xfe, 0x00, 0x01],
        "_content (base64)"
    );
    let aborted = &flows[2];
    assert_eq!(aborted.state, FlowState::Failed);
    assert_eq!(aborted.timings.finished, None, "time -1 is unknown");
    assert_eq!(flows[3].status(), Some(101));
}

#[test]
fn charles_format() {
    let flows = flows("charles.har");
    assert_eq!(flows.len(), 2);
    let token = &flows[0];
    assert_eq!(
        token.request.body.as_str(),
        Some("grant_type=refresh_token&refresh_token=charles-rt-0&client_id=c%201")
    );
    assert!(
        body(token).contains("charles-at-1"),
        "base64 content decoded"
    );
    let legacy = &flows[1];
    assert_eq!(legacy.request.version, HttpVersion::Http10);
    assert_eq!(
        (legacy.host.as_str(), legacy.port),
        ("legacy.example", 8080)
    );
    assert_eq!(body(legacy), "ok");
    assert_eq!(
        legacy.timings.finished,
        Some(legacy.timings.started + 12_000),
        "time as a string"
    );
    assert_eq!(legacy.timings.started % 1_000_000, 0, "no milliseconds");
}

fn err(json: &str) -> String {
    read_har_bytes(json.as_bytes()).unwrap_err().to_string()
}

fn entry(request: &str) -> String {
    format!(
        r#"{{"log":{{"version":"1.2","entries":[{{"startedDateTime":"2024-01-01T00:00:00Z","time":1,"request":{{"method":"GET","url":"https://a/","headers":[]}},"response":{{"status":200,"content":{{}}}}}},{{"startedDateTime":"2024-01-01T00:00:00Z","time":1,{request}}}]}}}}"#
    )
}

#[test]
fn invalid_files_say_where_they_broke() {
    assert_eq!(
        err("{\"log\": {\"entries\": [}"),
        "not valid JSON (line 1, column 22)"
    );
    assert_eq!(err("{}"), "log: missing (not a HAR file)");
    assert_eq!(
        err(r#"{"log":{"entries":{}}}"#),
        "log.entries: expected an array"
    );
    assert_eq!(err(r#"{"log":{}}"#), "log.entries: missing");
    assert_eq!(
        err(&entry(r#""request":{"method":"GET"}"#)),
        "entry 1: request.url: missing"
    );
    assert_eq!(
        err(&entry(r#""request":{"method":"GET","url":7}"#)),
        "entry 1: request.url: expected a string"
    );
    assert_eq!(err(&entry(r#""response":{}"#)), "entry 1: request: missing");
    assert_eq!(
        err(&entry(
            r#""request":{"method":"GET","url":"https://a/","headers":[{"name":"a","value":"b"},3]}"#
        )),
        "entry 1: request.headers[1]: expected a {name, value} object"
    );
    assert_eq!(
        err(&entry(r#""request":{"method":"GET","url":"https://a/"},"response":{"status":200,"content":{"text":"%%%","encoding":"base64"}}"#))
            .split(':')
            .take(3)
            .collect::<Vec<_>>(),
        ["entry 1", " response.content.text", " invalid base64"]
    );
    assert_eq!(
        err(&entry(
            r#""request":{"method":"GET","url":"https://a/"},"response":{"status":"abc"}"#
        )),
        "entry 1: response.status: expected a number, got \"abc\""
    );
    assert_eq!(
        err(&entry(
            r#""request":{"method":"GET","url":"https://a/"},"response":{"status":70000}"#
        )),
        "entry 1: response.status: out of range"
    );
    let bad_date = entry(r#""request":{"method":"GET","url":"https://a/"}"#).replace(
        r#""startedDateTime":"2024-01-01T00:00:00Z","time":1,"request":{"method":"GET","url":"https://a/"}}"#,
        r#""startedDateTime":"yesterday","time":1,"request":{"method":"GET","url":"https://a/"}}"#,
    );
    assert_eq!(
        err(&bad_date),
        "entry 1: startedDateTime: not an ISO 8601 date: \"yesterday\""
    );

    // Through `load`: the path, then the place.
    let dir = tempdir();
    let path = dir.path().join("broken.har");
    std::fs::write(&path, entry(r#""request":{"method":"GET"}"#)).unwrap();
    let e = load(&path).unwrap_err();
    assert!(matches!(e, StoreError::Har { .. }) && e.is_user_error());
    let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert_eq!(
        chain,
        format!(
            "{}: invalid HAR: entry 1: request.url: missing",
            path.display()
        )
    );
}

#[test]
fn missing_optional_fields_and_odd_values_are_tolerated() {
    // The least a HAR entry can be.
    let minimal = r#"{"log":{"entries":[{"startedDateTime":"2024-01-01T00:00:00.5+01:00","request":{"method":"GET","url":"https://a.example/x?q=1"},"response":{"status":"204"}}]}}"#;
    let h = read_har_bytes(minimal.as_bytes()).unwrap();
    let f = &h.flows[0];
    assert_eq!(f.status(), Some(204));
    assert_eq!(f.timings.started, 1_704_063_600_500_000);
    assert_eq!((f.host.as_str(), f.port), ("a.example", 443));
    assert_eq!(f.request.version, HttpVersion::Http11);
    // Not UTF-8, a BOM, unknown fields everywhere, null where objects go, `[name, value]` headers.
    let mut odd = b"\xEF\xBB\xBF".to_vec();
    odd.extend_from_slice(br#"{"log":{"x":1,"entries":[{"_id":"7","startedDateTime":"2024-01-01T00:00:00Z","time":null,"timings":null,"cache":null,"request":{"method":"POST","url":"http://[::1]:9/","headers":[["x-a","1"]],"postData":{"mimeType":"text/plain","text":null},"_x":{}},"response":{"status":200,"headers":null,"content":{"text":"caf"#);
    odd.extend_from_slice(b"\xe9\"}}}]}}");
    let h = read_har_bytes(&odd).unwrap();
    let f = &h.flows[0];
    assert_eq!(f.request.headers.get("x-a"), Some("1"));
    assert_eq!((f.host.as_str(), f.port), ("::1", 9));
    assert_eq!(
        f.response.as_ref().unwrap().body.as_str(),
        Some("caf\u{fffd}")
    );
    // A mitmproxy `.zhar` (zlib) and a gzip'd HAR.
    let plain = std::fs::read(fixture("charles.har")).unwrap();
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&plain).unwrap();
    let zhar = z.finish().unwrap();
    assert_eq!(read_har_bytes(&zhar).unwrap().flows.len(), 2);
    let dir = tempdir();
    let p = dir.path().join("session.zhar");
    std::fs::write(&p, &zhar).unwrap();
    assert_eq!(load(&p).unwrap().flows.len(), 2);
}

/// No input makes the reader panic: every fixture cut short and with bytes flipped.
#[test]
fn damaged_har_never_panics() {
    for name in [
        "mitmproxy.har",
        "chrome-devtools.har",
        "firefox-devtools.har",
        "httptoolkit.har",
        "charles.har",
        "chromium-playwright.har",
    ] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let step = (bytes.len() / 300).max(1);
        for cut in (0..bytes.len()).step_by(step) {
            let _ = read_har_bytes(&bytes[..cut]);
            let mut flipped = bytes.clone();
            flipped[cut] ^= 0x55;
            let _ = read_har_bytes(&flipped);
            let mut swapped = bytes.clone();
            swapped[cut] = b'"';
            let _ = read_har_bytes(&swapped);
        }
    }
}

#[test]
fn paths_are_told_apart_by_content() {
    let dir = tempdir();
    let d = dir.path();
    std::fs::create_dir(d.join("empty")).unwrap();
    let e = load(&d.join("empty")).unwrap_err();
    assert!(matches!(e, StoreError::UnknownFormat { .. }), "{e}");
    std::fs::write(d.join("notes.txt"), "hello").unwrap();
    assert!(matches!(
        load(&d.join("notes.txt")).unwrap_err(),
        StoreError::UnknownFormat { .. }
    ));
    // A HAR named .json, a journal named .har: content decides.
    std::fs::copy(fixture("charles.har"), d.join("x.json")).unwrap();
    assert_eq!(load(&d.join("x.json")).unwrap().kind, SourceKind::Har);
    std::fs::write(
        d.join("j.har"),
        "{\"type\":\"session\",\"version\":1,\"created\":0,\"mcptap\":\"t\"}\n",
    )
    .unwrap();
    assert_eq!(load(&d.join("j.har")).unwrap().kind, SourceKind::Journal);
    // A session directory with only its HAR.
    std::fs::create_dir(d.join("s")).unwrap();
    std::fs::copy(fixture("charles.har"), d.join("s/session.har")).unwrap();
    assert_eq!(load(&d.join("s")).unwrap().flows.len(), 2);
    let missing = load(&d.join("nope")).unwrap_err();
    assert!(missing.io_error().is_some());
}
