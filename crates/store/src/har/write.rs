//! The HAR writer: entries are streamed one by one, never the whole document in memory.

use super::{query_pairs, reason, BodyMeta, McptapEntry};
use crate::journal::SessionMeta;
use crate::reader::ReadWarning;
use crate::timefmt::iso_millis;
use base64::Engine as _;
use mcptap_flow::{CapturedBody, Flow, Headers, Micros};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::io::{self, Write};

/// What `log._mcptap` says, written after the entries.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogExtra {
    /// The session's metadata, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionMeta>,
    /// True when any flow holds raw secrets.
    pub raw_secrets: bool,
    /// Entries of flows that never completed (the session was cut short).
    pub pending: u64,
    /// When recording stopped (µs since the epoch), for a session that ended cleanly: the
    /// analyzer decides what was still waiting as of then, as the live proxy did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<Micros>,
    /// Entries written after one that started later (see [`StartOrder`](crate::StartOrder)).
    pub out_of_order: u64,
    /// Journal lines that were skipped, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl LogExtra {
    /// Warnings from a journal reader, as text.
    pub fn with_warnings(mut self, warnings: &[ReadWarning]) -> Self {
        self.warnings = warnings.iter().map(ToString::to_string).collect();
        self
    }
}

/// Writes a HAR document entry by entry.
pub struct HarWriter<W: Write> {
    out: W,
    entries: u64,
    raw_secrets: bool,
    pending: u64,
}

impl<W: Write> HarWriter<W> {
    /// Starts the document: `creator` is mcptap with `version`.
    pub fn new(mut out: W, version: &str) -> io::Result<HarWriter<W>> {
        out.write_all(b"{\"log\":{\"version\":\"1.2\",\"creator\":")?;
        serde_json::to_writer(&mut out, &json!({"name": "mcptap", "version": version}))?;
        out.write_all(b",\"pages\":[],\"entries\":[")?;
        Ok(HarWriter {
            out,
            entries: 0,
            raw_secrets: false,
            pending: 0,
        })
    }

    /// Appends one entry.
    pub fn write(&mut self, flow: &Flow) -> io::Result<()> {
        self.out
            .write_all(if self.entries == 0 { b"\n" } else { b",\n" })?;
        write_entry(&mut self.out, flow)?;
        self.entries += 1;
        self.raw_secrets |= flow.raw_secrets;
        if flow.state == mcptap_flow::FlowState::Pending {
            self.pending += 1;
        }
        Ok(())
    }

    /// Entries written so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Ends the document with `log._mcptap` (its `raw_secrets` and `pending` are completed from
    /// the entries written) and returns the writer, flushed.
    pub fn finish(mut self, mut extra: LogExtra) -> io::Result<W> {
        extra.raw_secrets |= self.raw_secrets;
        extra.pending = extra.pending.max(self.pending);
        self.out.write_all(b"\n],\"_mcptap\":")?;
        serde_json::to_writer(&mut self.out, &extra)?;
        self.out.write_all(b"}}\n")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn ms(micros: i64) -> f64 {
    // Microsecond precision: 12.345 ms.
    micros as f64 / 1000.0
}

/// `{name, value}` (headers, query parameters, form fields, request cookies).
#[derive(Serialize)]
struct Pair<'a> {
    name: Cow<'a, str>,
    value: Cow<'a, str>,
    /// Headers only: the exact bytes of a value that was not UTF-8, base64 (`value` is their
    /// lossy text, which is what other HAR readers show). Absent once the value was redacted.
    #[serde(rename = "_mcptapValueBase64", skip_serializing_if = "Option::is_none")]
    raw: Option<String>,
}

fn headers(h: &Headers) -> Vec<Pair<'_>> {
    h.iter()
        .map(|h| Pair {
            name: Cow::Borrowed(&h.name),
            value: Cow::Borrowed(&h.value),
            raw: h
                .raw()
                .map(|raw| base64::engine::general_purpose::STANDARD.encode(raw)),
        })
        .collect()
}

fn pairs(p: Vec<(String, String)>) -> Vec<Pair<'static>> {
    p.into_iter()
        .map(|(n, v)| Pair {
            name: Cow::Owned(n),
            value: Cow::Owned(v),
            raw: None,
        })
        .collect()
}

fn request_cookies(h: &Headers) -> Vec<Pair<'_>> {
    let mut out = Vec::new();
    for v in h.get_all("cookie") {
        for part in v.split(';') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (n, v) = part.split_once('=').unwrap_or(("", part));
            out.push(Pair {
                name: Cow::Borrowed(n.trim()),
                value: Cow::Borrowed(v.trim()),
                raw: None,
            });
        }
    }
    out
}

/// A response cookie, from `Set-Cookie`.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Cookie<'a> {
    name: &'a str,
    value: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    http_only: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    secure: bool,
}

fn response_cookies(h: &Headers) -> Vec<Cookie<'_>> {
    let mut out = Vec::new();
    for v in h.get_all("set-cookie") {
        let mut parts = v.split(';');
        let Some(first) = parts.next() else { continue };
        let (n, val) = first.split_once('=').unwrap_or(("", first));
        let mut c = Cookie {
            name: n.trim(),
            value: val.trim(),
            ..Cookie::default()
        };
        for attr in parts {
            let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
            match k.trim().to_ascii_lowercase().as_str() {
                "path" => c.path = Some(v.trim()),
                "domain" => c.domain = Some(v.trim()),
                "httponly" => c.http_only = true,
                "secure" => c.secure = true,
                _ => {}
            }
        }
        out.push(c);
    }
    out
}

/// `text` and, for bytes that are not UTF-8, `encoding: "base64"`; base64 of
/// [`STREAM_B64_MIN`] bytes or more is `later` instead when given (the caller writes the
/// text into the output itself).
fn body_text_or<'a>(
    body: &'a CapturedBody,
    later: Option<&'static str>,
) -> (Cow<'a, str>, Option<&'static str>) {
    match std::str::from_utf8(&body.bytes) {
        Ok(t) => (Cow::Borrowed(t), None),
        Err(_) => match later.filter(|_| body.bytes.len() >= STREAM_B64_MIN) {
            Some(placeholder) => (Cow::Borrowed(placeholder), Some("base64")),
            None => (
                Cow::Owned(base64::engine::general_purpose::STANDARD.encode(&body.bytes)),
                Some("base64"),
            ),
        },
    }
}

/// Bodies this large that are written as base64 are encoded into the output piece by piece
/// ([`write_entry`]), not into a string of their own first.
const STREAM_B64_MIN: usize = 64 * 1024;

/// What stands for a request's and a response's base64 text while the rest of an entry is
/// written ([`write_entry`]); the text goes where it is, once, between its quotes.
const LATER: [&str; 2] = [
    "\u{0}mcptap: the request's base64 goes here\u{0}",
    "\u{0}mcptap: the response's base64 goes here\u{0}",
];

/// Writes `bytes` as base64 (standard, padded), a piece at a time.
fn write_base64(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    const IN: usize = 3 * 16 * 1024;
    let mut buf = vec![0u8; IN / 3 * 4];
    for piece in bytes.chunks(IN) {
        let n = base64::engine::general_purpose::STANDARD
            .encode_slice(piece, &mut buf)
            .map_err(io::Error::other)?;
        out.write_all(&buf[..n])?;
    }
    Ok(())
}

fn body_meta(b: &CapturedBody) -> BodyMeta {
    BodyMeta {
        total_len: b.total_len,
        truncated: b.truncated,
        state: b.state,
        encoding: b.encoding.clone(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    started_date_time: String,
    time: f64,
    request: HarRequest<'a>,
    response: HarResponse<'a>,
    cache: Map<String, Value>,
    timings: HarTimings,
    #[serde(rename = "serverIPAddress", skip_serializing_if = "Option::is_none")]
    server_ip_address: Option<&'a str>,
    #[serde(rename = "_mcptap")]
    mcptap: McptapEntry,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HarRequest<'a> {
    method: &'a str,
    url: Cow<'a, str>,
    http_version: &'static str,
    cookies: Vec<Pair<'a>>,
    headers: Vec<Pair<'a>>,
    query_string: Vec<Pair<'static>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    post_data: Option<PostData<'a>>,
    headers_size: i64,
    body_size: u64,
    #[serde(rename = "_requestBodyStatus", skip_serializing_if = "Option::is_none")]
    body_status: Option<&'static str>,
    #[serde(rename = "_content", skip_serializing_if = "Option::is_none")]
    content: Option<Content<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PostData<'a> {
    mime_type: &'a str,
    text: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<Vec<Pair<'static>>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HarResponse<'a> {
    status: u16,
    status_text: &'static str,
    http_version: &'static str,
    cookies: Vec<Cookie<'a>>,
    headers: Vec<Pair<'a>>,
    content: Content<'a>,
    #[serde(rename = "redirectURL")]
    redirect_url: &'a str,
    headers_size: i64,
    body_size: i64,
    #[serde(rename = "_error", skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Content<'a> {
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    compression: Option<u64>,
    mime_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<&'static str>,
}

#[derive(Serialize)]
struct HarTimings {
    blocked: f64,
    dns: f64,
    connect: f64,
    ssl: f64,
    send: f64,
    wait: f64,
    receive: f64,
}

/// The HAR timings of a flow: `(time, timings)`, all non-negative except the unmeasured `-1`s,
/// adding up to `time`.
fn timings(flow: &Flow) -> (f64, HarTimings) {
    let t = &flow.timings;
    let t0 = t.started;
    let known = [t.connected, t.request_done, t.response_head, t.finished];
    let end = t
        .finished
        .or_else(|| known.iter().flatten().copied().max())
        .unwrap_or(t0)
        .max(t0);
    let clamp = |v: Option<Micros>, lo: Micros| v.map(|v| v.clamp(lo, end));
    let t1 = clamp(t.connected, t0);
    let t1v = t1.unwrap_or(t0);
    let t2 = clamp(t.request_done, t1v).unwrap_or(t1v);
    let t3 = clamp(t.response_head, t2).unwrap_or(if t.finished.is_some() { end } else { t2 });
    let timings = HarTimings {
        blocked: -1.0,
        dns: -1.0,
        connect: t1.map_or(-1.0, |c| ms(c - t0)),
        ssl: -1.0,
        send: ms(t2 - t1v),
        wait: ms(t3 - t2),
        receive: ms(end - t3),
    };
    (ms(end - t0), timings)
}

/// Writes one flow as a HAR entry (compact JSON, no newline).
///
/// A large body written as base64 is encoded into `out` piece by piece, not into a string
/// first: the entry is written to a buffer with a placeholder for its text, and the text
/// goes out in its place. This holds only while the rest of the entry is small (its other
/// body is small, or base64 too); otherwise, or should the placeholder be in the entry
/// elsewhere, the entry is written whole as before.
pub fn write_entry(out: &mut impl Write, flow: &Flow) -> io::Result<()> {
    let bodies = [
        Some(&flow.request.body),
        flow.response.as_ref().map(|r| &r.body),
    ];
    let large_b64 = |b: Option<&CapturedBody>| {
        b.is_some_and(|b| b.bytes.len() >= STREAM_B64_MIN && std::str::from_utf8(&b.bytes).is_err())
    };
    let small = |b: Option<&CapturedBody>| b.is_none_or(|b| b.bytes.len() < STREAM_B64_MIN);
    let later = [large_b64(bodies[0]), large_b64(bodies[1])];
    if later.iter().any(|l| *l) && bodies.iter().zip(later).all(|(b, l)| l || small(*b)) {
        let mut text = Vec::new();
        write_entry_with(&mut text, flow, later)?;
        let mut places = Vec::new();
        for (i, l) in later.iter().enumerate() {
            if !l {
                continue;
            }
            let quoted = serde_json::to_vec(LATER[i]).map_err(io::Error::other)?;
            let mut found = memchr::memmem::find_iter(&text, &quoted);
            match (found.next(), found.next()) {
                (Some(at), None) => places.push((at, quoted.len(), i)),
                _ => places.clear(),
            }
            if places.is_empty() {
                break;
            }
        }
        if places.len() == later.iter().filter(|l| **l).count() {
            places.sort_unstable();
            let mut from = 0;
            for (at, len, i) in places {
                out.write_all(&text[from..at])?;
                out.write_all(b"\"")?;
                if let Some(b) = bodies[i] {
                    write_base64(out, &b.bytes)?;
                }
                out.write_all(b"\"")?;
                from = at + len;
            }
            return out.write_all(&text[from..]);
        }
    }
    write_entry_with(out, flow, [false, false])
}

/// [`write_entry`], with the base64 text of the bodies `later` says left as [`LATER`].
fn write_entry_with(out: &mut impl Write, flow: &Flow, later: [bool; 2]) -> io::Result<()> {
    let req = &flow.request;
    let har_url: Cow<'_, str> = if req.url.contains("://") {
        Cow::Borrowed(&req.url)
    } else {
        // A CONNECT target (`host:port`), written as mitmproxy does.
        Cow::Owned(format!("https://{}/", req.url))
    };
    let has_body = !req.body.bytes.is_empty() || req.body.total_len > 0;
    let mime = req.headers.get("content-type").unwrap_or("");
    let (text, encoding) = body_text_or(&req.body, later[0].then_some(LATER[0]));
    // HAR's `postData` holds text only. Bytes that are not UTF-8 go where HTTP Toolkit puts
    // them (`_content`, base64, flagged by `_requestBodyStatus`), which it reads back and which
    // keeps the file valid HAR 1.2 for strict readers.
    let (post_data, content) = match encoding {
        None if has_body => {
            let form = mcptap_flow::media_type_is(mime, "application/x-www-form-urlencoded");
            let post = PostData {
                mime_type: mime,
                text,
                params: form.then(|| pairs(super::form_pairs(&req.body.bytes))),
            };
            (Some(post), None)
        }
        Some(enc) => {
            let content = Content {
                size: req.body.bytes.len() as u64,
                compression: None,
                mime_type: mime,
                text: Some(text),
                encoding: Some(enc),
            };
            (None, Some(content))
        }
        None => (None, None),
    };
    let request = HarRequest {
        method: &req.method,
        url: har_url.clone(),
        http_version: req.version.as_str(),
        cookies: request_cookies(&req.headers),
        headers: headers(&req.headers),
        query_string: pairs(query_pairs(&req.url)),
        post_data,
        headers_size: -1,
        body_size: req.body.total_len,
        body_status: content.as_ref().map(|_| "discarded:not-representable"),
        content,
    };
    let response = match &flow.response {
        Some(resp) => {
            // Bodies are stored decoded: `size` is the decoded content, `bodySize` the wire.
            let decoded = resp.body.encoding.is_some();
            let size = if decoded {
                resp.body.bytes.len() as u64
            } else {
                resp.body.total_len.max(resp.body.bytes.len() as u64)
            };
            let (text, encoding) = body_text_or(&resp.body, later[1].then_some(LATER[1]));
            HarResponse {
                status: resp.status,
                status_text: reason(resp.status),
                http_version: resp.version.as_str(),
                cookies: response_cookies(&resp.headers),
                headers: headers(&resp.headers),
                content: Content {
                    size,
                    compression: (decoded && size > resp.body.total_len)
                        .then(|| size - resp.body.total_len),
                    mime_type: resp.headers.get("content-type").unwrap_or(""),
                    text: Some(text),
                    encoding,
                },
                redirect_url: resp.headers.get("location").unwrap_or(""),
                headers_size: -1,
                body_size: i64::try_from(resp.body.total_len).unwrap_or(i64::MAX),
                error: None,
            }
        }
        None => HarResponse {
            status: 0,
            status_text: "",
            http_version: "",
            cookies: Vec::new(),
            headers: Vec::new(),
            content: Content {
                size: 0,
                compression: None,
                mime_type: "x-unknown",
                text: None,
                encoding: None,
            },
            redirect_url: "",
            headers_size: -1,
            body_size: -1,
            error: flow.error.as_ref().map(|e| e.message.as_str()),
        },
    };
    let (time, timings) = timings(flow);
    let mcptap = McptapEntry {
        id: flow.id.0,
        kind: flow.kind,
        state: flow.state,
        url: (har_url != req.url.as_str()).then(|| req.url.clone()),
        host: flow.host.clone(),
        port: flow.port,
        client_addr: flow.client_addr.clone(),
        client_tls: flow.client_tls.clone(),
        upstream_tls: flow.upstream_tls.clone(),
        timings: flow.timings,
        error: flow.error.clone(),
        tunnel: flow.tunnel,
        injected: flow.injected.clone(),
        not_injected: flow.not_injected.clone(),
        by_mcptap: flow.by_mcptap.clone(),
        secrets: flow.secrets.clone(),
        raw_secrets: flow.raw_secrets,
        request_body: body_meta(&req.body),
        response_body: flow.response.as_ref().map(|r| body_meta(&r.body)),
        synthetic: flow.response.as_ref().is_some_and(|r| r.synthetic),
        sse: flow
            .response
            .as_ref()
            .map(|r| r.sse.clone())
            .unwrap_or_default(),
    };
    let entry = Entry {
        started_date_time: iso_millis(flow.timings.started),
        time,
        request,
        response,
        cache: Map::new(),
        timings,
        server_ip_address: flow
            .host
            .parse::<std::net::IpAddr>()
            .is_ok()
            .then_some(flow.host.as_str()),
        mcptap,
    };
    serde_json::to_writer(out, &entry)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcptap_flow::{Request, Response};

    /// A large body written as base64 piece by piece gives the bytes the whole entry written
    /// at once gives: a request's, a response's, both, next to a small or a large text, and
    /// with the placeholder's text in a header (then written whole).
    #[test]
    fn base64_written_in_pieces_is_the_entry_written_whole() {
        let bin = |n: usize| {
            (0..n as u32)
                .map(|i| (i * 7 % 256) as u8)
                .collect::<Vec<u8>>()
        };
        let text = |n: usize| "text \" é ".repeat(n / 10).into_bytes();
        let flow = |req: Vec<u8>, resp: Option<Vec<u8>>, header: &str| Flow {
            request: Request {
                method: "POST".into(),
                url: "https://h.example/x".into(),
                headers: [("x-h", header)].into_iter().collect(),
                body: CapturedBody::complete(req),
                ..Request::default()
            },
            response: resp.map(|b| Response {
                status: 200,
                body: CapturedBody::complete(b),
                ..Response::default()
            }),
            ..Flow::default()
        };
        let big = STREAM_B64_MIN + 1;
        let flows = [
            flow(text(10), Some(bin(big)), ""),
            flow(bin(big * 3 + 2), Some(text(10)), ""),
            flow(bin(big), Some(bin(3 * 16 * 1024 * 2 + 1)), ""),
            flow(bin(big), None, ""),
            flow(text(big * 2), Some(bin(big)), ""),
            flow(bin(10), Some(bin(big)), ""),
            flow(text(10), Some(bin(big)), LATER[1]),
            flow(text(10), Some(bin(STREAM_B64_MIN - 1)), ""),
        ];
        for (k, f) in flows.iter().enumerate() {
            let mut got = Vec::new();
            write_entry(&mut got, f).unwrap();
            let mut want = Vec::new();
            write_entry_with(&mut want, f, [false, false]).unwrap();
            assert!(got == want, "flow {k}");
            let v: Value = serde_json::from_slice(&got).unwrap();
            assert!(v["response"]["content"]["text"].is_string() || f.response.is_none());
        }
    }
}
