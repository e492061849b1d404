//! Secret fingerprints and redaction: the same secret always gets the same short, non-reversible
//! name, so saved sessions can be shared and analysis can still tell whether the token sent is the
//! token issued.
//!
//! [`redact_flow`] replaces every secret mcptap knows about with [`redacted`]`(secret)` and notes
//! each one in [`Flow::secrets`]: the values of the [`SECRET_HEADERS`] (keeping an
//! `Authorization` scheme, cookie names and `Set-Cookie` attributes), and the values of the
//! [`SECRET_FIELDS`] wherever they appear as JSON string members (bodies, SSE event data, JSON
//! text nested in JSON strings), as form fields (`application/x-www-form-urlencoded` bodies) and
//! as URL query or fragment parameters (the request URL, and the URLs in `Location`, `Referer` and
//! `Content-Location`), and the password in the userinfo of those URLs (`https://user:pw@host/`,
//! the user name kept unless it is a token itself: `https://ghp_…@github.com/`). Everything
//! else is left byte for byte as it was, so a redacted body still parses as it did. Redaction
//! is idempotent: a marker is never redacted again.
//!
//! JSON bodies are scanned lexically, not parsed and re-serialised: that keeps their exact
//! formatting and also covers bodies cut at the body limit, JSON-RPC messages inside an event
//! stream and NDJSON. A string value left unterminated by a cut is redacted up to the cut.

mod argv;

pub use argv::{argv, text as redact_text};

use crate::{CapturedBody, Direction, Flow, FlowEvent, Header, Headers, SseEvent};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One secret that was replaced by its fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretNote {
    /// [`fingerprint`] of the raw value.
    pub fingerprint: String,
    /// Length of the raw value in bytes.
    pub len: usize,
    /// Where it was: `request.header.authorization`, `response.json.access_token`,
    /// `request.form.code`, `request.query.code`, …
    pub place: String,
    /// What the value said, when it was a JWT (never its signature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtInfo>,
}

/// The readable parts of a JWT: its header and the claims that matter for OAuth debugging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JwtInfo {
    /// `alg`, `kid`, `typ` from the JOSE header.
    pub header: serde_json::Map<String, serde_json::Value>,
    /// `iss`, `aud`, `exp`, `iat`, `nbf`, `scope`, `scp`, `client_id`, `azp`, `sub` (if present).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

const JWT_HEADER_KEYS: &[&str] = &["alg", "kid", "typ"];
const JWT_CLAIM_KEYS: &[&str] = &[
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "scope",
    "scp",
    "client_id",
    "azp",
    "sub",
];

/// Decodes the header and the claims that matter of a compact JWS (`xxx.yyy.zzz`); `None` when
/// `token` is not one. The signature is never kept.
pub fn decode_jwt(token: &str) -> Option<JwtInfo> {
    let mut parts = token.split('.');
    let (h, c, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let part = |s: &str, keys: &[&str]| -> Option<serde_json::Map<String, serde_json::Value>> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .ok()?;
        match serde_json::from_slice::<serde_json::Value>(&raw).ok()? {
            serde_json::Value::Object(m) => Some(
                m.into_iter()
                    .filter(|(k, _)| keys.contains(&k.as_str()))
                    .collect(),
            ),
            _ => None,
        }
    };
    Some(JwtInfo {
        header: part(h, JWT_HEADER_KEYS)?,
        claims: part(c, JWT_CLAIM_KEYS)?,
    })
}

/// The first 12 hex digits of the SHA-256 of `secret`.
pub fn fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(12);
    for b in &digest[..6] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// What a redacted secret is written as: `[redacted sha256:<fingerprint> len=<n>]`.
pub fn redacted(secret: &str) -> String {
    format!(
        "[redacted sha256:{} len={}]",
        fingerprint(secret),
        secret.len()
    )
}

/// If `value` is a redaction marker, the fingerprint inside it.
pub fn parse_redacted(value: &str) -> Option<&str> {
    let rest = value.strip_prefix("[redacted sha256:")?;
    let end = rest.find(' ')?;
    Some(&rest[..end])
}

/// The fingerprint of a value that may already be redacted: a raw secret is hashed, a marker
/// yields the fingerprint it carries. Lets analysis compare raw and redacted captures alike.
pub fn fingerprint_of(value: &str) -> String {
    match parse_redacted(value) {
        Some(fp) => fp.to_owned(),
        None => fingerprint(value),
    }
}

/// Header fields whose values are secrets (names compared case-insensitively).
pub const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "mcp-session-id",
    // API keys that clients run under `mcptap run` send to their own services (Claude Code's
    // `x-api-key` to its model API, Google's `x-goog-api-key`, …).
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "x-auth-token",
    "x-access-token",
    "private-token",
];

/// JSON members, form fields and query parameters whose values are secrets.
pub const SECRET_FIELDS: &[&str] = &[
    "access_token",
    "refresh_token",
    "id_token",
    "code",
    "code_verifier",
    "client_secret",
    "assertion",
    // RFC 7523 client authentication, RFC 8693 token exchange, RFC 8628 device flow and the
    // password grant.
    "client_assertion",
    "subject_token",
    "actor_token",
    "device_code",
    "password",
    // RFC 7009 revocation and RFC 7662 introspection name the token `token`.
    "token",
];

/// Header fields holding a URL whose query or fragment may carry secrets (an authorization
/// code in a redirect's `Location`, or in the `Referer` of the page that followed it), or whose
/// userinfo may carry a password.
pub const URL_HEADERS: &[&str] = &["location", "referer", "content-location"];

/// True if `name` is one of the [`SECRET_FIELDS`] (exact, case-sensitive: JSON keys and form
/// field names are).
pub fn is_secret_field(name: &str) -> bool {
    SECRET_FIELDS.contains(&name)
}

/// True if `name` is one of the [`SECRET_HEADERS`] (case-insensitive).
pub fn is_secret_header(name: &str) -> bool {
    SECRET_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Redacts every secret in `flow` in place and adds a [`SecretNote`] for each to
/// `flow.secrets` (once per place and fingerprint).
pub fn redact_flow(flow: &mut Flow) {
    let mut r = Redactor::new();
    r.flow(flow);
    r.merge_into(&mut flow.secrets);
}

/// Adds a [`SecretNote`] to `flow.secrets` for every secret in `flow` but leaves the values as
/// they are (`--keep-secrets`): fingerprints stay available to analysis either way.
pub fn note_secrets(flow: &mut Flow) {
    let mut r = Redactor::observe_only();
    r.flow(flow);
    r.merge_into(&mut flow.secrets);
}

/// Redacts the secrets carried by one engine event: the flow of `RequestStarted`, `Completed`
/// and `Failed` (notes included), the headers of `ResponseHead` and the data of `Sse`.
pub fn redact_event(event: &mut FlowEvent) {
    Redactor::new().event(event);
}

/// `Bearer xyz`, `Basic xyz`, `DPoP xyz`: an auth scheme followed by one credential token.
fn looks_like_credentials(value: &str) -> bool {
    let v = value.trim();
    let Some((scheme, rest)) = v.split_once(' ') else {
        return false;
    };
    let rest = rest.trim();
    // RFC 6750 b64token: the credential alone, never `name="value"` challenge parameters.
    let body = rest.trim_end_matches('=');
    ["bearer", "basic", "dpop", "token"]
        .iter()
        .any(|s| scheme.eq_ignore_ascii_case(s))
        && body.len() >= 8
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// Finds secrets and, unless it only observes, replaces them with their [`redacted`] marker.
/// Collects a [`SecretNote`] per secret found.
#[derive(Debug, Clone)]
pub struct Redactor {
    replace: bool,
    /// Whether a JSON member named `code` is an authorization code in the text being scanned
    /// (see [`Redactor::json_bytes`]); worked out when the first such member is met.
    json_code: Option<bool>,
    notes: Vec<SecretNote>,
    /// Raw values replaced so far (long enough to be unambiguous), scrubbed from the rest of
    /// the flow too: a server that echoes a token in some other header must not leak it.
    raw: Vec<String>,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new()
    }
}

/// How deep JSON text nested in JSON strings is followed.
const MAX_NESTING: u8 = 3;

impl Redactor {
    /// A redactor that replaces secrets.
    pub fn new() -> Redactor {
        Redactor {
            replace: true,
            json_code: None,
            notes: Vec::new(),
            raw: Vec::new(),
        }
    }

    /// A redactor that only notes secrets and changes nothing.
    pub fn observe_only() -> Redactor {
        Redactor {
            replace: false,
            json_code: None,
            notes: Vec::new(),
            raw: Vec::new(),
        }
    }

    /// A redactor that already knows `raw` secret values of the flow an event belongs to (as
    /// [`Redactor::take_raw`] gave them): [`Redactor::event`] scrubs them out of a response
    /// head or an SSE event too — a token from the request head echoed in an event's text.
    pub fn knowing(raw: Vec<String>) -> Redactor {
        Redactor {
            raw,
            ..Redactor::new()
        }
    }

    /// The raw secret values replaced so far (at least 8 bytes long), taken out: for a caller
    /// that scrubs them from the later events of the same flow. Held in memory only.
    pub fn take_raw(&mut self) -> Vec<String> {
        std::mem::take(&mut self.raw)
    }

    /// Replaces every known raw secret in `text` with its marker.
    fn scrub_text(&self, text: &mut String) {
        if !self.replace {
            return;
        }
        for raw in &self.raw {
            if text.contains(raw.as_str()) {
                *text = text.replace(raw.as_str(), &redacted(raw));
            }
        }
    }

    /// Replaces every known raw secret in header values with its marker. The list may be
    /// shared with other copies of the flow: only the values that hold a secret are changed.
    fn scrub_headers(&self, headers: &mut Headers) {
        if !self.replace {
            return;
        }
        for i in 0..headers.len() {
            let value = &headers.as_slice()[i].value;
            if self.raw.iter().any(|r| value.contains(r.as_str())) {
                let mut v = value.clone();
                self.scrub_text(&mut v);
                headers.set_value(i, v);
            }
        }
    }

    /// The secrets found so far.
    pub fn notes(&self) -> &[SecretNote] {
        &self.notes
    }

    /// The secrets found, consuming the redactor.
    pub fn into_notes(self) -> Vec<SecretNote> {
        self.notes
    }

    /// Appends the notes found to `notes`, skipping any already there (same place and
    /// fingerprint).
    pub fn merge_into(self, notes: &mut Vec<SecretNote>) {
        for n in self.notes {
            if !notes
                .iter()
                .any(|o| o.place == n.place && o.fingerprint == n.fingerprint)
            {
                notes.push(n);
            }
        }
    }

    /// Every place of a flow: URL, headers and bodies on both sides, SSE events.
    pub fn flow(&mut self, flow: &mut Flow) {
        self.url(Direction::Request, &mut flow.request.url);
        self.headers(Direction::Request, &mut flow.request.headers);
        self.body(
            Direction::Request,
            &flow.request.headers,
            &mut flow.request.body,
        );
        if let Some(resp) = flow.response.as_mut() {
            self.headers(Direction::Response, &mut resp.headers);
            self.body(Direction::Response, &resp.headers, &mut resp.body);
            for ev in &mut resp.sse {
                self.sse_event(ev);
            }
        }
        self.scrub(flow);
    }

    /// Replaces every other occurrence of a secret already found in this flow (in any header,
    /// the URL, a text body or an SSE event) with its marker.
    fn scrub(&self, flow: &mut Flow) {
        if !self.replace || self.raw.is_empty() {
            return;
        }
        let fix_body = |body: &mut crate::CapturedBody| {
            if let Ok(t) = std::str::from_utf8(&body.bytes) {
                if self.raw.iter().any(|r| t.contains(r.as_str())) {
                    let mut t = t.to_owned();
                    self.scrub_text(&mut t);
                    body.bytes = bytes::Bytes::from(t);
                }
            }
        };
        self.scrub_text(&mut flow.request.url);
        self.scrub_headers(&mut flow.request.headers);
        fix_body(&mut flow.request.body);
        if let Some(resp) = flow.response.as_mut() {
            self.scrub_headers(&mut resp.headers);
            fix_body(&mut resp.body);
            for ev in &mut resp.sse {
                self.scrub_text(&mut ev.data);
            }
        }
    }

    /// The secrets carried by one engine event (see [`redact_event`]).
    pub fn event(&mut self, event: &mut FlowEvent) {
        match event {
            FlowEvent::RequestStarted { flow }
            | FlowEvent::Completed { flow }
            | FlowEvent::Failed { flow } => {
                let mut r = Redactor {
                    replace: self.replace,
                    json_code: None,
                    notes: Vec::new(),
                    raw: Vec::new(),
                };
                r.flow(flow);
                self.notes.extend(r.notes.iter().cloned());
                r.merge_into(&mut flow.secrets);
            }
            FlowEvent::ResponseHead { headers, .. } => {
                self.headers(Direction::Response, headers);
                self.scrub_headers(headers);
            }
            FlowEvent::Sse { event, .. } => {
                self.sse_event(event);
                self.scrub_text(&mut event.data);
            }
            FlowEvent::Body { .. } => {}
        }
    }

    /// Every header field of one side.
    pub fn headers(&mut self, side: Direction, headers: &mut Headers) {
        // The list may be shared with other copies of the flow: only a field that changes is
        // written (which copies the list once).
        for i in 0..headers.len() {
            if let Some(v) = self.header_value(side, &headers.as_slice()[i]) {
                // Drops the exact bytes of a value that was not UTF-8 (see `header`).
                headers.set_value(i, v);
            }
        }
    }

    /// One header field: a [`SECRET_HEADERS`] value, or the query and userinfo password of a
    /// [`URL_HEADERS`] value.
    pub fn header(&mut self, side: Direction, header: &mut Header) {
        if let Some(v) = self.header_value(side, header) {
            // The exact bytes of a value that was not UTF-8 are dropped, not redacted: the
            // redaction works on the text, and the bytes could hold the secret it replaced.
            header.set_value(v);
        }
    }

    /// The redacted value of one header field, or `None` when it holds no secret.
    fn header_value(&mut self, side: Direction, header: &Header) -> Option<String> {
        // Names are lower case already as hyper hands them over; only others are copied.
        let name: std::borrow::Cow<'_, str> = if header.name.bytes().any(|b| b.is_ascii_uppercase())
        {
            header.name.to_ascii_lowercase().into()
        } else {
            header.name.as_str().into()
        };
        let side = side_name(side);
        match name.as_ref() {
            "authorization" | "proxy-authorization" => {
                self.credentials(&format!("{side}.header.{name}"), &header.value)
            }
            "cookie" => self.cookie_list(&format!("{side}.cookie"), &header.value),
            "set-cookie" => self.set_cookie(&format!("{side}.cookie"), &header.value),
            // `mcp-session-id` and the API-key fields: the whole value.
            n if is_secret_header(n) => {
                self.secret(&format!("{side}.header.{name}"), &header.value)
            }
            n if URL_HEADERS.contains(&n) => {
                let prefix = format!("{side}.header.{name}");
                // A header's URL may be scheme-relative (`Location: //user:pw@host/`).
                self.url_secrets(&format!("{prefix}.userinfo"), &prefix, &header.value, true)
            }
            // Any other header that carries credentials in the Authorization shape (an echo,
            // X-Forwarded-Authorization, …) is a credential too.
            n if !n.ends_with("-authenticate") && looks_like_credentials(&header.value) => {
                self.credentials(&format!("{side}.header.{name}"), &header.value)
            }
            _ => None,
        }
    }

    /// The query and fragment parameters of a request URL (`request.query.<name>`) and the
    /// password in its userinfo (`request.url.userinfo`).
    pub fn url(&mut self, side: Direction, url: &mut String) {
        let (userinfo, prefix) = match side {
            Direction::Request => ("request.url.userinfo", "request.query"),
            Direction::Response => ("response.url.userinfo", "response.query"),
        };
        if let Some(v) = self.url_secrets(userinfo, prefix, url, false) {
            *url = v;
        }
    }

    /// A body, as form fields when its `Content-Type` (from `headers`) says so, else as JSON
    /// text (which also covers event streams and NDJSON).
    pub fn body(&mut self, side: Direction, headers: &Headers, body: &mut CapturedBody) {
        if body.bytes.is_empty() {
            return;
        }
        let (form, sse, json) = match side {
            Direction::Request => ("request.form", "request.sse", "request.json"),
            Direction::Response => ("response.form", "response.sse", "response.json"),
        };
        let ct = headers.get("content-type");
        let is = crate::media_type_is;
        let new = match ct {
            Some(c) if is(c, "application/x-www-form-urlencoded") => {
                self.form_bytes(form, &body.bytes)
            }
            None if looks_like_form(&body.bytes) => self.form_bytes(form, &body.bytes),
            Some(c) if is(c, "text/event-stream") => self.json_bytes(sse, &body.bytes),
            _ => self.json_bytes(json, &body.bytes),
        };
        if let Some(b) = new {
            body.bytes = b.into();
        }
    }

    /// The data of one server-sent event (`response.sse.<name>`).
    pub fn sse_event(&mut self, event: &mut SseEvent) {
        if let Some(new) = self.json_bytes("response.sse", event.data.as_bytes()) {
            event.data = String::from_utf8_lossy(&new).into_owned();
        }
    }

    /// Records a secret found at `place`; returns its marker when it is to be replaced.
    /// Empty values and markers are left alone.
    fn secret(&mut self, place: &str, raw: &str) -> Option<String> {
        if raw.is_empty() || parse_redacted(raw).is_some() {
            return None;
        }
        let fp = fingerprint(raw);
        if !self
            .notes
            .iter()
            .any(|n| n.place == place && n.fingerprint == fp)
        {
            self.notes.push(SecretNote {
                fingerprint: fp.clone(),
                len: raw.len(),
                place: place.to_owned(),
                jwt: decode_jwt(raw),
            });
        }
        if self.replace && raw.len() >= 8 && !self.raw.iter().any(|r| r == raw) {
            self.raw.push(raw.to_owned());
        }
        self.replace
            .then(|| format!("[redacted sha256:{fp} len={}]", raw.len()))
    }

    /// `Scheme credentials` keeps the scheme; a bare value is redacted whole.
    fn credentials(&mut self, place: &str, value: &str) -> Option<String> {
        let s = value.len() - value.trim_start().len();
        let Some(scheme_end) = value[s..].find([' ', '\t']).map(|i| s + i) else {
            return self.secret(place, value.trim());
        };
        let scheme = &value[s..scheme_end];
        let after = &value[scheme_end..];
        let cred_start = scheme_end + (after.len() - after.trim_start_matches([' ', '\t']).len());
        let cred = value[cred_start..].trim_end();
        if cred.is_empty() || !scheme.bytes().all(is_tchar) {
            return self.secret(place, value.trim());
        }
        let marker = self.secret(place, cred)?;
        Some(format!("{}{marker}", &value[..cred_start]))
    }

    /// `Cookie: a=1; b=2`: each value redacted, names kept.
    fn cookie_list(&mut self, prefix: &str, value: &str) -> Option<String> {
        let mut out = String::with_capacity(value.len());
        let mut changed = false;
        for (i, part) in value.split(';').enumerate() {
            if i > 0 {
                out.push(';');
            }
            match self.cookie_pair(prefix, part) {
                Some(p) => {
                    out.push_str(&p);
                    changed = true;
                }
                None => out.push_str(part),
            }
        }
        changed.then_some(out)
    }

    /// `Set-Cookie: sid=xyz; Path=/; HttpOnly`: the value redacted, name and attributes kept.
    fn set_cookie(&mut self, prefix: &str, value: &str) -> Option<String> {
        let (pair, attrs) = match value.find(';') {
            Some(i) => value.split_at(i),
            None => (value, ""),
        };
        let p = self.cookie_pair(prefix, pair)?;
        Some(format!("{p}{attrs}"))
    }

    /// `name=value` (with any surrounding spaces) → `name=[redacted …]`.
    fn cookie_pair(&mut self, prefix: &str, part: &str) -> Option<String> {
        let (name, raw) = match part.find('=') {
            Some(eq) => (&part[..eq], &part[eq + 1..]),
            None => ("", part),
        };
        let v = raw.trim();
        if v.is_empty() {
            return None;
        }
        let key = name.trim();
        let place = if key.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{key}")
        };
        let marker = self.secret(&place, v)?;
        let lead = &raw[..raw.len() - raw.trim_start().len()];
        let trail = &raw[raw.trim_end().len()..];
        Some(if part.contains('=') {
            format!("{name}={lead}{marker}{trail}")
        } else {
            format!("{lead}{marker}{trail}")
        })
    }

    /// The secrets of a URL: the password of its userinfo (noted at `userinfo_place`), and its
    /// query and fragment parameters (`<prefix>.<name>`).
    fn url_secrets(
        &mut self,
        userinfo_place: &str,
        prefix: &str,
        url: &str,
        scheme_relative: bool,
    ) -> Option<String> {
        let with_userinfo = self.userinfo(userinfo_place, url, scheme_relative);
        let url = with_userinfo.as_deref().unwrap_or(url);
        self.url_params(prefix, url).or(with_userinfo)
    }

    /// `scheme://user:password@host/…` → `scheme://user:%5Bredacted…%5D@host/…`: the password
    /// (percent-decoded before hashing, like query values) is replaced by its percent-encoded
    /// marker, so the URL still parses; the user name is kept, unless it is a token itself
    /// (`https://ghp_…@host/`), which is replaced the same way.
    fn userinfo(&mut self, place: &str, url: &str, scheme_relative: bool) -> Option<String> {
        let (start, end) = url_password_span(url, scheme_relative)?;
        let raw = percent_decode(&url.as_bytes()[start..end], false);
        let marker = self.secret(place, &raw)?;
        Some(format!(
            "{}{}{}",
            &url[..start],
            percent_encode(&marker),
            &url[end..]
        ))
    }

    /// The query and fragment of a URL, as form fields (`<prefix>.<name>`).
    fn url_params(&mut self, prefix: &str, url: &str) -> Option<String> {
        let q = url.find('?');
        let f = url.find('#');
        let mut out = String::new();
        let mut changed = false;
        let mut pos = 0;
        // Query: from after '?' to '#' (or the end); fragment: after '#'.
        let mut spans = Vec::with_capacity(2);
        match (q, f) {
            (Some(q), Some(f)) if q < f => {
                spans.push((q + 1, f));
                spans.push((f + 1, url.len()));
            }
            (Some(_), Some(f)) | (None, Some(f)) => spans.push((f + 1, url.len())),
            (Some(q), None) => spans.push((q + 1, url.len())),
            (None, None) => {}
        }
        for (start, end) in spans {
            if let Some(new) = self.form_str(prefix, &url[start..end]) {
                out.push_str(&url[pos..start]);
                out.push_str(&new);
                pos = end;
                changed = true;
            }
        }
        if !changed {
            return None;
        }
        out.push_str(&url[pos..]);
        Some(out)
    }

    /// `a=1&code=xyz` → `a=1&code=%5Bredacted…%5D`; everything else byte for byte (so bytes
    /// that are not UTF-8 survive too).
    fn form_bytes(&mut self, prefix: &str, s: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(s.len() + 64);
        let mut changed = false;
        for (i, pair) in s.split(|&b| b == b'&').enumerate() {
            if i > 0 {
                out.push(b'&');
            }
            if let Some(eq) = pair.iter().position(|&b| b == b'=') {
                let key = form_decode(&pair[..eq]);
                if is_secret_field(&key) {
                    let raw = form_decode(&pair[eq + 1..]);
                    if let Some(m) = self.secret(&format!("{prefix}.{key}"), &raw) {
                        out.extend_from_slice(&pair[..=eq]);
                        out.extend_from_slice(percent_encode(&m).as_bytes());
                        changed = true;
                        continue;
                    }
                }
            }
            out.extend_from_slice(pair);
        }
        changed.then_some(out)
    }

    fn form_str(&mut self, prefix: &str, s: &str) -> Option<String> {
        let b = self.form_bytes(prefix, s.as_bytes())?;
        // Only whole ASCII values were replaced, so the text is still UTF-8.
        Some(
            String::from_utf8(b)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        )
    }

    /// JSON text scanned lexically: the string value of every member named in
    /// [`SECRET_FIELDS`] is replaced; JSON text inside other string values is followed
    /// [`MAX_NESTING`] levels deep.
    fn json_bytes(&mut self, prefix: &str, input: &[u8]) -> Option<Vec<u8>> {
        if !may_name_a_secret_field(input) {
            return None;
        }
        self.json_code = None;
        self.json_text(prefix, input, input, 0)
    }

    /// Whether a JSON member named `code` is an authorization code: in an OAuth exchange, a
    /// flow that already carried one (in its URL, a header or a form), or a token request sent
    /// as JSON (`top`, the whole body, names `grant_type`, `redirect_uri` or `code_verifier`).
    /// Elsewhere — an MCP tool's `code` argument — it is left readable. Asked only when such a
    /// member is met, so other bodies are not searched for the names.
    fn code_is_secret(&mut self, top: &[u8]) -> bool {
        static TOKEN_REQUEST: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 3]> =
            std::sync::LazyLock::new(|| {
                [r#""grant_type""#, r#""redirect_uri""#, r#""code_verifier""#]
                    .map(memchr::memmem::Finder::new)
            });
        *self.json_code.get_or_insert_with(|| {
            self.notes.iter().any(|n| n.place.ends_with(".code"))
                || TOKEN_REQUEST.iter().any(|f| f.find(top).is_some())
        })
    }

    /// [`Redactor::json_bytes`] on `input`, JSON text found `depth` levels down inside the
    /// body `top`.
    fn json_text(&mut self, prefix: &str, top: &[u8], input: &[u8], depth: u8) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        let mut i = 0;
        while i < input.len() {
            if input[i] != b'"' {
                // Jump to the next string (bodies that are not JSON have few or none).
                match memchr::memchr(b'"', &input[i..]) {
                    Some(k) => i += k,
                    None => break,
                }
                continue;
            }
            let StrEnd::Closed(kend) = string_end(input, i) else {
                i += 1;
                continue;
            };
            let mut j = skip_ws(input, kend);
            if input.get(j) != Some(&b':') {
                // A string that is not a member name: maybe JSON text inside a string.
                if let Some(new) = self.nested_json(prefix, top, &input[i..kend], depth) {
                    let o = out.get_or_insert_with(|| Vec::with_capacity(input.len() + 64));
                    o.extend_from_slice(&input[copied..i]);
                    o.extend_from_slice(&new);
                    copied = kend;
                }
                i = kend;
                continue;
            }
            j = skip_ws(input, j + 1);
            if input.get(j) != Some(&b'"') {
                i = kend;
                continue;
            }
            let (vend, closed) = match string_end(input, j) {
                StrEnd::Closed(e) => (e, true),
                StrEnd::Eof => (input.len(), false),
                StrEnd::Broken => {
                    i = kend;
                    continue;
                }
            };
            let key = decode_json_string(&input[i..kend]);
            if key
                .as_deref()
                .is_some_and(|k| is_secret_field(k) && (k != "code" || self.code_is_secret(top)))
            {
                let raw = if closed {
                    decode_json_string(&input[j..vend])
                } else {
                    None
                }
                .unwrap_or_else(|| {
                    let inner = &input[j + 1..if closed { vend - 1 } else { vend }];
                    String::from_utf8_lossy(inner)
                });
                let key = key.unwrap_or_default();
                if let Some(marker) = self.secret(&format!("{prefix}.{key}"), &raw) {
                    let o = out.get_or_insert_with(|| Vec::with_capacity(input.len() + 64));
                    o.extend_from_slice(&input[copied..j]);
                    o.push(b'"');
                    o.extend_from_slice(marker.as_bytes());
                    o.push(b'"');
                    copied = vend;
                }
            } else if closed {
                if let Some(new) = self.nested_json(prefix, top, &input[j..vend], depth) {
                    let o = out.get_or_insert_with(|| Vec::with_capacity(input.len() + 64));
                    o.extend_from_slice(&input[copied..j]);
                    o.extend_from_slice(&new);
                    copied = vend;
                }
            }
            i = vend;
        }
        let mut o = out?;
        o.extend_from_slice(&input[copied..]);
        Some(o)
    }

    /// A JSON string token whose text is itself JSON naming a secret field: redacted inside
    /// and re-encoded as a JSON string.
    fn nested_json(
        &mut self,
        prefix: &str,
        top: &[u8],
        token: &[u8],
        depth: u8,
    ) -> Option<Vec<u8>> {
        if depth >= MAX_NESTING || !token.contains(&b'\\') {
            return None;
        }
        let names_a_field = SECRET_FIELDS.iter().any(|f| {
            token
                .windows(f.len() + 2)
                .any(|w| w[1..w.len() - 1] == *f.as_bytes() && w[w.len() - 1] == b'\\')
        });
        if !names_a_field {
            return None;
        }
        let inner: String = serde_json::from_slice(token).ok()?;
        let new = self.json_text(prefix, top, inner.as_bytes(), depth + 1)?;
        let new = String::from_utf8(new).ok()?;
        serde_json::to_vec(&new).ok()
    }
}

fn side_name(side: Direction) -> &'static str {
    match side {
        Direction::Request => "request",
        Direction::Response => "response",
    }
}

/// RFC 9110 `tchar`: what an auth scheme is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Where the secret of `url`'s userinfo is, as a byte range: its password
/// (`https://user:HERE@host/`), or the user name itself when that is a credential
/// (`https://HERE@github.com/`, see `user_is_credential`). `scheme_relative` also accepts
/// `//user:pw@host/` (a header's URL may be written so). RFC 3986: only the authority is looked
/// at, from after `//` to the first `/`, `?` or `#`; its last `@` ends the userinfo (as browsers
/// read `user:p@ss@host`). `None` without a scheme and `//`, without userinfo, or for a user
/// name alone that is not a credential.
pub fn url_password_span(url: &str, scheme_relative: bool) -> Option<(usize, usize)> {
    let start = if scheme_relative && url.starts_with("//") {
        2
    } else {
        let colon = url.find(':')?;
        let mut scheme = url[..colon].bytes();
        let scheme_ok = scheme.next().is_some_and(|b| b.is_ascii_alphabetic())
            && scheme.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        if !scheme_ok || !url[colon + 1..].starts_with("//") {
            return None;
        }
        colon + 3
    };
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let at = start + url[start..end].rfind('@')?;
    match url[start..at].find(':') {
        Some(c) => Some((start + c + 1, at)),
        None => user_is_credential(&url[start..at]).then_some((start, at)),
    }
}

/// A URL user name that is itself a credential, as git hosts and package registries accept
/// (`https://<token>@github.com/org/repo`): a well-known token prefix, or a long run of letters
/// and digits mixed that nobody picks as a name. User names such as `git`, `oauth2` or an
/// e-mail address (`%40`) stay readable.
fn user_is_credential(user: &str) -> bool {
    const PREFIXES: [&str; 14] = [
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
        "github_pat_",
        "glpat-",
        "xoxb-",
        "xoxp-",
        "sk-",
        "sk_live_",
        "npm_",
        "pypi-",
        "hf_",
    ];
    if PREFIXES.iter().any(|p| user.starts_with(p)) {
        return true;
    }
    let b = user.as_bytes();
    b.len() >= 24
        && !user.contains("%40")
        && b.iter().any(u8::is_ascii_digit)
        && b.iter().any(u8::is_ascii_alphabetic)
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"-_.~%".contains(&c))
}

/// False when JSON text `input` cannot hold a member named in [`SECRET_FIELDS`], at any
/// depth: none of the words those names are made of is in it, and no `\u` escape could spell
/// one. Most MCP bodies are so; the lexical scan is then skipped (measured on the recorder of
/// a proxy relaying small JSON-RPC flows: the scan was ~1 % of its CPU).
fn may_name_a_secret_field(input: &[u8]) -> bool {
    static WORDS: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 6]> =
        std::sync::LazyLock::new(|| {
            // Every name in SECRET_FIELDS holds one of these (checked by a test).
            ["token", "code", "secret", "assertion", "password", "\\u"]
                .map(memchr::memmem::Finder::new)
        });
    WORDS.iter().any(|w| w.find(input).is_some())
}

/// A request body without a `Content-Type` that is plainly `a=b&c=d`.
fn looks_like_form(body: &[u8]) -> bool {
    body.contains(&b'=')
        && body
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"=&%+-._~*".contains(&b))
}

enum StrEnd {
    /// Index just past the closing quote.
    Closed(usize),
    /// The input ended inside the string (a body cut at the limit).
    Eof,
    /// A line break before the closing quote: not a JSON string.
    Broken,
}

/// Where the JSON string starting with the quote at `start` ends.
fn string_end(input: &[u8], start: usize) -> StrEnd {
    let mut i = start + 1;
    while i < input.len() {
        match input[i] {
            b'\\' => i += 2,
            b'"' => return StrEnd::Closed(i + 1),
            b'\n' | b'\r' => return StrEnd::Broken,
            _ => i += 1,
        }
    }
    StrEnd::Eof
}

fn skip_ws(input: &[u8], mut i: usize) -> usize {
    while i < input.len() && matches!(input[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The text of a JSON string token (quotes included); `None` if it is not valid.
fn decode_json_string(token: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    if token.len() < 2 {
        return None;
    }
    if !token.contains(&b'\\') {
        // No escapes: the text between the quotes, without a copy.
        return std::str::from_utf8(&token[1..token.len() - 1])
            .ok()
            .map(std::borrow::Cow::Borrowed);
    }
    serde_json::from_slice::<String>(token)
        .ok()
        .map(std::borrow::Cow::Owned)
}

// The codecs live with the rest of OAuth's vocabulary; redaction and older callers use them here.
pub use crate::oauth::{form_decode, percent_decode, percent_encode};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pre_check_lets_every_secret_field_through() {
        for f in SECRET_FIELDS {
            assert!(may_name_a_secret_field(f.as_bytes()), "{f}");
            let body = format!(r#"{{"a":{{"{f}":"x"}}}}"#);
            assert!(may_name_a_secret_field(body.as_bytes()), "{body}");
        }
        // A name spelled with an escape, and bodies that name none.
        assert!(may_name_a_secret_field(br#"{"access_\u0074oken":"x"}"#));
        assert!(!may_name_a_secret_field(
            br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hi"}]}}"#
        ));
        assert!(!may_name_a_secret_field(b""));
        let mut flow = Flow {
            request: crate::Request {
                url: "https://mcp.example/mcp".into(),
                headers: [("content-type", "application/json")].into_iter().collect(),
                body: CapturedBody::complete(
                    &br#"{"access_\u0074oken":"abcdef","x":"{\"token\":\"t\"}"}"#[..],
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        redact_flow(&mut flow);
        let body = std::str::from_utf8(&flow.request.body.bytes).unwrap();
        assert!(
            !body.contains("abcdef") && !body.contains("\\\"t\\\""),
            "{body}"
        );
        assert_eq!(flow.secrets.len(), 2);
    }

    #[test]
    fn jwt_header_and_claims_are_kept_signature_is_not() {
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let token = format!(
            "{}.{}.{}",
            enc(r#"{"alg":"RS256","kid":"k1"}"#),
            enc(r#"{"iss":"https://as","aud":"https://rs/mcp","exp":10,"email":"x@y"}"#),
            enc("signature")
        );
        let info = decode_jwt(&token).unwrap();
        assert_eq!(info.header["kid"], "k1");
        assert_eq!(info.claims["aud"], "https://rs/mcp");
        assert!(!info.claims.contains_key("email"));
        assert!(decode_jwt("opaque-token").is_none());
        assert!(decode_jwt("a.b.c").is_none());
    }

    #[test]
    fn fingerprints_are_stable_and_parse_back() {
        let fp = fingerprint("secret-token");
        assert_eq!(fp.len(), 12);
        assert_eq!(fp, fingerprint("secret-token"));
        assert_ne!(fp, fingerprint("secret-token2"));
        let marker = redacted("secret-token");
        assert_eq!(marker, format!("[redacted sha256:{fp} len=12]"));
        assert_eq!(parse_redacted(&marker), Some(fp.as_str()));
        assert_eq!(fingerprint_of(&marker), fp);
        assert_eq!(fingerprint_of("secret-token"), fp);
    }

    use crate::{CapturedBody, Flow, Headers, Request, Response, SseEvent};

    fn marker(secret: &str) -> String {
        redacted(secret)
    }

    fn jwt() -> String {
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.{}",
            enc(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#),
            enc(
                r#"{"iss":"https://as","aud":"https://rs/mcp","exp":10,"iat":1,"scope":"mcp","client_id":"c1","email":"x@y"}"#
            ),
            enc("sig")
        )
    }

    fn flow_with(
        req_headers: &[(&str, &str)],
        req_body: &str,
        resp_headers: &[(&str, &str)],
        resp_body: &str,
    ) -> Flow {
        Flow {
            request: Request {
                method: "POST".into(),
                url: "https://as.example/token?code=abc%2Fdef&state=s1".into(),
                headers: req_headers.iter().map(|(n, v)| (*n, *v)).collect(),
                body: CapturedBody::complete(req_body.to_owned()),
                ..Request::default()
            },
            response: Some(Response {
                status: 200,
                headers: resp_headers.iter().map(|(n, v)| (*n, *v)).collect(),
                body: CapturedBody::complete(resp_body.to_owned()),
                ..Response::default()
            }),
            ..Flow::default()
        }
    }

    fn place<'a>(flow: &'a Flow, place: &str) -> &'a SecretNote {
        flow.secrets
            .iter()
            .find(|n| n.place == place)
            .unwrap_or_else(|| panic!("no note at {place}: {:#?}", flow.secrets))
    }

    #[test]
    fn a_json_code_member_is_a_secret_in_oauth_exchanges_only() {
        // An MCP tool's `code` argument (and a JSON-RPC error's numeric code) stays readable.
        let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"run_python","arguments":{"code":"print(40 + 2)"}}}"#;
        let mut f = flow_with(
            &[("Content-Type", "application/json")],
            call,
            &[("Content-Type", "text/event-stream")],
            "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"code\":\"x = 1\"}}\n\n",
        );
        f.request.url = "https://mcp.example/mcp".into();
        redact_flow(&mut f);
        assert_eq!(f.request.body.as_str(), Some(call));
        let resp = f.response.as_ref().unwrap().body.as_str().unwrap();
        assert!(resp.contains(r#""code":"x = 1""#), "{resp}");
        assert!(!f
            .secrets
            .iter()
            .any(|n| n.place.ends_with(".code") && n.place.starts_with("request.json")));

        // A token request sent as JSON: the code is an authorization code.
        let mut f = flow_with(
            &[("Content-Type", "application/json")],
            r#"{"grant_type":"authorization_code","code":"auth-code-123","redirect_uri":"http://127.0.0.1:3/cb"}"#,
            &[],
            "",
        );
        f.request.url = "https://as.example/token".into();
        redact_flow(&mut f);
        let body = f.request.body.as_str().unwrap();
        assert!(!body.contains("auth-code-123"), "{body}");
        assert_eq!(
            place(&f, "request.json.code").fingerprint,
            fingerprint("auth-code-123")
        );
    }

    #[test]
    fn api_key_headers_and_other_grant_secrets_are_redacted() {
        let mut f = flow_with(
            &[
                ("X-Api-Key", "sk-ant-api03-abcdef"),
                ("x-goog-api-key", "AIzaSyExample"),
                ("Private-Token", "glpat-xyz"),
                ("X-Request-Id", "req-1234567890"),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=st-1&client_assertion=ca-1&password=pw-1",
            &[("Content-Type", "application/json")],
            r#"{"device_code":"dc-1","user_code":"ABCD-EFGH"}"#,
        );
        redact_flow(&mut f);
        let h = |name: &str| f.request.headers.get(name).unwrap().to_owned();
        assert_eq!(h("x-api-key"), marker("sk-ant-api03-abcdef"));
        assert_eq!(h("x-goog-api-key"), marker("AIzaSyExample"));
        assert_eq!(h("private-token"), marker("glpat-xyz"));
        assert_eq!(h("x-request-id"), "req-1234567890", "not a secret");
        let body = f.request.body.as_str().unwrap();
        for secret in ["st-1", "ca-1", "pw-1"] {
            assert!(!body.contains(secret), "{body}");
        }
        let resp = f.response.as_ref().unwrap().body.as_str().unwrap();
        assert!(!resp.contains("dc-1"), "{resp}");
        assert!(
            resp.contains("ABCD-EFGH"),
            "the user code is shown to the user: {resp}"
        );
        assert!(f
            .secrets
            .iter()
            .any(|n| n.place == "request.header.x-api-key"
                && n.fingerprint == fingerprint("sk-ant-api03-abcdef")));
    }

    #[test]
    fn every_listed_place_is_redacted_and_fingerprints_match() {
        let token = jwt();
        let mut f = flow_with(
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Proxy-Authorization", "Basic dXNlcjpwYXNz"),
                ("Cookie", "sid=s3cret; theme=dark"),
                ("Mcp-Session-Id", "sess-123"),
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Referer", "https://client/cb?code=abc%2Fdef&state=s1"),
            ],
            "grant_type=authorization_code&code=abc%2Fdef&code_verifier=v+1&client_secret=cs&assertion=as1",
            &[
                ("Content-Type", "application/json"),
                ("Set-Cookie", "sid=s3cret; Path=/; HttpOnly"),
                ("Mcp-Session-Id", "sess-123"),
                ("Location", "https://client/cb?code=abc%2Fdef#access_token=frag"),
            ],
            &format!(
                r#"{{"access_token": "{token}", "token_type":"Bearer","refresh_token":"rt-1","id_token":"it","nested":{{"code":"abc/def"}},"n":{{"code":-32600}}}}"#
            ),
        );
        redact_flow(&mut f);
        let h = |name: &str| f.request.headers.get(name).unwrap().to_owned();
        assert_eq!(h("authorization"), format!("Bearer {}", marker(&token)));
        assert_eq!(
            h("proxy-authorization"),
            format!("Basic {}", marker("dXNlcjpwYXNz"))
        );
        assert_eq!(
            h("cookie"),
            format!("sid={}; theme={}", marker("s3cret"), marker("dark"))
        );
        assert_eq!(h("mcp-session-id"), marker("sess-123"));
        assert_eq!(
            f.request.url,
            format!(
                "https://as.example/token?code={}&state=s1",
                percent_encode(&marker("abc/def"))
            )
        );
        let body = f.request.body.as_str().unwrap().to_owned();
        assert!(
            body.starts_with("grant_type=authorization_code&code=%5Bredacted%20sha256%3A"),
            "{body}"
        );
        for secret in ["abc%2Fdef", "v+1", "cs", "as1"] {
            assert!(!body.contains(&format!("={secret}")), "{body}");
        }
        let resp = f.response.as_ref().unwrap();
        let rbody = resp.body.as_str().unwrap();
        let v: serde_json::Value = serde_json::from_str(rbody).expect("still JSON");
        assert_eq!(v["access_token"], marker(&token));
        assert_eq!(v["token_type"], "Bearer");
        assert_eq!(v["nested"]["code"], marker("abc/def"));
        assert_eq!(v["n"]["code"], -32600, "only string values are secrets");
        assert!(
            rbody.starts_with(r#"{"access_token": "[redacted"#),
            "formatting kept: {rbody}"
        );
        assert_eq!(
            resp.headers.get("set-cookie").unwrap(),
            format!("sid={}; Path=/; HttpOnly", marker("s3cret"))
        );
        assert_eq!(
            resp.headers.get("location").unwrap(),
            format!(
                "https://client/cb?code={}#access_token={}",
                percent_encode(&marker("abc/def")),
                percent_encode(&marker("frag"))
            )
        );

        // The token issued is the token sent; the code in the query, the form, the redirect
        // and the JSON is one code.
        let issued = place(&f, "response.json.access_token");
        let sent = place(&f, "request.header.authorization");
        assert_eq!(issued.fingerprint, sent.fingerprint);
        assert_eq!(issued.fingerprint, fingerprint(&token));
        let jwt = issued.jwt.as_ref().expect("jwt decoded");
        assert_eq!(jwt.header["kid"], "k1");
        for claim in ["iss", "aud", "exp", "iat", "scope", "client_id"] {
            assert!(jwt.claims.contains_key(claim), "{claim}");
        }
        assert!(!jwt.claims.contains_key("email"));
        let code = fingerprint("abc/def");
        for p in [
            "request.query.code",
            "request.form.code",
            "request.header.referer.code",
            "response.header.location.code",
            "response.json.code",
        ] {
            assert_eq!(place(&f, p).fingerprint, code, "{p}");
        }
        assert_eq!(
            place(&f, "request.form.code_verifier").fingerprint,
            fingerprint("v 1")
        );
        for p in [
            "request.form.client_secret",
            "request.form.assertion",
            "request.cookie.sid",
            "response.cookie.sid",
            "request.header.mcp-session-id",
            "response.header.mcp-session-id",
            "response.json.refresh_token",
            "response.json.id_token",
            "response.header.location.access_token",
            "request.header.proxy-authorization",
        ] {
            place(&f, p);
        }
        // No raw secret survives anywhere in the serialised flow.
        let json = serde_json::to_string(&f).unwrap();
        for raw in [
            token.as_str(),
            "dXNlcjpwYXNz",
            "s3cret",
            "sess-123",
            "rt-1",
            "abc%2Fdef",
            "abc/def",
        ] {
            assert!(!json.contains(raw), "{raw} leaked: {json}");
        }
    }

    #[test]
    fn url_userinfo_password_is_redacted_user_kept() {
        let mut f = flow_with(
            &[("Referer", "https://bob:pw%2Fref1@client.example/start")],
            "",
            &[
                (
                    "Location",
                    "https://alice:s3cretpw@client.example/cb?code=c1",
                ),
                ("Content-Location", "http://alice:s3cretpw@[::1]:8080/x"),
            ],
            "",
        );
        f.request.url = "https://alice:s3cretpw@as.example/token?code=abc".into();
        redact_flow(&mut f);
        let pw = percent_encode(&marker("s3cretpw"));
        assert_eq!(
            f.request.url,
            format!(
                "https://alice:{pw}@as.example/token?code={}",
                percent_encode(&marker("abc"))
            )
        );
        let resp = f.response.as_ref().unwrap();
        assert_eq!(
            resp.headers.get("location").unwrap(),
            format!(
                "https://alice:{pw}@client.example/cb?code={}",
                percent_encode(&marker("c1"))
            )
        );
        assert_eq!(
            resp.headers.get("content-location").unwrap(),
            format!("http://alice:{pw}@[::1]:8080/x")
        );
        // Percent-decoded before hashing, as query values are.
        assert_eq!(
            f.request.headers.get("referer").unwrap(),
            format!(
                "https://bob:{}@client.example/start",
                percent_encode(&marker("pw/ref1"))
            )
        );
        let json = serde_json::to_string(&f).unwrap();
        assert!(!json.contains("s3cretpw"), "password leaked: {json}");
        assert!(!json.contains("pw%2Fref1"), "password leaked: {json}");
        assert!(json.contains("alice:") && json.contains("bob:"), "{json}");

        // One password, one fingerprint, wherever it was.
        let fp = fingerprint("s3cretpw");
        for p in [
            "request.url.userinfo",
            "response.header.location.userinfo",
            "response.header.content-location.userinfo",
        ] {
            assert_eq!(place(&f, p).fingerprint, fp, "{p}");
            assert_eq!(place(&f, p).len, 8, "{p}");
        }
        assert_eq!(
            place(&f, "request.header.referer.userinfo").fingerprint,
            fingerprint("pw/ref1")
        );
        place(&f, "request.query.code");
        place(&f, "response.header.location.code");

        // The same password in another flow gets the same marker; redacting again changes
        // nothing.
        let mut r = Redactor::new();
        let mut again = "https://alice:s3cretpw@other.example/".to_owned();
        r.url(Direction::Request, &mut again);
        assert_eq!(again, format!("https://alice:{pw}@other.example/"));

        // A user name that is a token is the secret; a plain user name is not.
        let token = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
        let hex = "4f9a8c1e2b7d4e0f9a3c5b6d7e8f9a0b";
        for (url, secret) in [
            (format!("https://{token}@github.com/o/r.git"), Some(token)),
            (format!("https://{hex}@registry.example/"), Some(hex)),
            ("https://git@github.com/o/r.git".into(), None),
            ("https://oauth2@gitlab.example/".into(), None),
            (
                "https://john.doe1985%40example.com@host.example/".into(),
                None,
            ),
            ("https://x-access-token@github.com/".into(), None),
        ] {
            let mut u = url.clone();
            r.url(Direction::Request, &mut u);
            let want = secret.map_or(url.clone(), |t| url.replace(t, &percent_encode(&marker(t))));
            assert_eq!(u, want, "{url}");
        }
        assert_eq!(r.notes()[0].fingerprint, fp);
        let once = f.clone();
        redact_flow(&mut f);
        assert_eq!(f, once);
    }

    #[test]
    fn a_scheme_relative_location_with_a_password_is_redacted() {
        let mut r = Redactor::new();
        let mut h = Header::new("Location", "//deploy:hunter2-pw@files.example/x?y=1");
        r.header(Direction::Response, &mut h);
        assert!(!h.value.contains("hunter2-pw"), "{}", h.value);
        assert!(h.value.starts_with("//deploy:%5Bredacted"), "{}", h.value);
        assert!(h.value.ends_with("@files.example/x?y=1"), "{}", h.value);
        assert!(r
            .notes()
            .iter()
            .any(|n| n.place == "response.header.location.userinfo"
                && n.fingerprint == fingerprint("hunter2-pw")));
    }

    #[test]
    fn only_the_authority_userinfo_is_a_password() {
        let redact = |url: &str| {
            let mut r = Redactor::new();
            let mut u = url.to_owned();
            r.url(Direction::Request, &mut u);
            (u, r.into_notes())
        };
        for url in [
            // `@` outside the authority, or no password in the userinfo.
            "https://host.example/a:b@c",
            "https://host.example/p?x=a:b@c",
            "https://host.example#a:b@c",
            "https://host.example/p?next=https://u:p@evil/",
            "https://token@host.example/",
            "https://user:@host.example/",
            "https://[::1]:8443/mcp",
            "https://[fe80::1%25eth0]/",
            "/a:b@c/d",
            "//u:p@host/path",
            "mailto:a:b@example.com",
            "1http://u:p@host/",
            "://u:p@host/",
            "https:",
            "https://",
            "https://@",
            ":",
            "",
            "https://ü:@hôst/",
        ] {
            let (out, notes) = redact(url);
            assert_eq!(out, url, "{url}");
            assert!(notes.is_empty(), "{url}: {notes:?}");
        }
        for (url, pw, want) in [
            (
                "https://user:pw@[::1]:8443/mcp",
                "pw",
                "https://user:{}@[::1]:8443/mcp",
            ),
            ("HTTP://:pw@host", "pw", "HTTP://:{}@host"),
            // The last `@` of the authority ends the userinfo, as browsers read it.
            ("https://u:p@ss@host/x@y", "p@ss", "https://u:{}@host/x@y"),
            ("wss://u:a:b@host?q", "a:b", "wss://u:{}@host?q"),
            ("https://u:p+q@host", "p+q", "https://u:{}@host"),
            ("https://u:%zz@host", "%zz", "https://u:{}@host"),
            (
                "https://üser:pässwört@hôst/ö",
                "pässwört",
                "https://üser:{}@hôst/ö",
            ),
            ("https://u:p%C3%A4ss@host", "päss", "https://u:{}@host"),
        ] {
            let (out, notes) = redact(url);
            assert_eq!(
                out,
                want.replace("{}", &percent_encode(&marker(pw))),
                "{url}"
            );
            assert_eq!(notes.len(), 1, "{url}");
            assert_eq!(notes[0].place, "request.url.userinfo");
            assert_eq!(notes[0].fingerprint, fingerprint(pw), "{url}");
            assert!(!out.contains(pw), "{url}: {out}");
        }
        // Observing notes the password and leaves the URL as it was.
        let mut r = Redactor::observe_only();
        let mut u = "https://u:observed@host/".to_owned();
        r.url(Direction::Request, &mut u);
        assert_eq!(u, "https://u:observed@host/");
        assert_eq!(r.notes()[0].fingerprint, fingerprint("observed"));
    }

    #[test]
    fn redaction_is_idempotent() {
        let mut f = flow_with(
            &[("Authorization", "Bearer tok"), ("Cookie", "a=b")],
            r#"{"code":"c"}"#,
            &[],
            r#"{"access_token":"t"}"#,
        );
        redact_flow(&mut f);
        let once = f.clone();
        redact_flow(&mut f);
        assert_eq!(f, once);
    }

    #[test]
    fn observing_keeps_values_and_notes_them() {
        let mut f = flow_with(
            &[("Authorization", "Bearer tok")],
            "",
            &[],
            r#"{"access_token":"tok"}"#,
        );
        f.request.url = "https://rs.example/mcp".into();
        let before = f.clone();
        note_secrets(&mut f);
        assert_eq!(f.request, before.request);
        assert_eq!(f.response, before.response);
        assert_eq!(f.secrets.len(), 2);
        assert_eq!(f.secrets[0].fingerprint, f.secrets[1].fingerprint);
    }

    #[test]
    fn cut_escaped_nested_and_streamed_json() {
        let mut r = Redactor::new();
        // Cut at the body limit inside the value: the partial secret goes too.
        let cut = r
            .json_bytes("response.json", br#"{"a":1,"refresh_token":"abcd"#)
            .unwrap();
        assert_eq!(
            cut,
            format!(r#"{{"a":1,"refresh_token":"{}""#, marker("abcd")).into_bytes()
        );
        // Escapes in names and values are decoded before matching and hashing.
        let esc = r
            .json_bytes("j", br#"{"access\u005ftoken":"a\"b"}"#)
            .unwrap();
        assert_eq!(
            esc,
            format!(r#"{{"access\u005ftoken":"{}"}}"#, marker("a\"b")).into_bytes()
        );
        // JSON text inside a JSON string (an MCP tool result).
        let nested = r
            .json_bytes("j", br#"{"text":"{\"access_token\":\"zz\"}"}"#)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&nested).unwrap();
        let inner: serde_json::Value = serde_json::from_str(v["text"].as_str().unwrap()).unwrap();
        assert_eq!(inner["access_token"], marker("zz"));
        // An event stream.
        let sse = r
            .json_bytes(
                "response.sse",
                b"event: message\ndata: {\"id_token\":\"x\"}\n\n",
            )
            .unwrap();
        assert_eq!(
            sse,
            format!(
                "event: message\ndata: {{\"id_token\":\"{}\"}}\n\n",
                marker("x")
            )
            .into_bytes()
        );
        // Stray quotes and binary do not confuse the scanner.
        assert!(r.json_bytes("j", b"\"a\nb\" \xff\xfe \"code\" 1").is_none());
        let mut ev = SseEvent {
            data: r#"{"result":{"access_token":"q"}}"#.into(),
            ..SseEvent::default()
        };
        r.sse_event(&mut ev);
        assert_eq!(
            ev.data,
            format!(r#"{{"result":{{"access_token":"{}"}}}}"#, marker("q"))
        );
    }

    #[test]
    fn forms_without_utf8_or_content_type() {
        let mut r = Redactor::new();
        let out = r
            .form_bytes("request.form", b"x=\xff&code=a%20b&y")
            .unwrap();
        let mut want = b"x=\xff&code=".to_vec();
        want.extend_from_slice(percent_encode(&marker("a b")).as_bytes());
        want.extend_from_slice(b"&y");
        assert_eq!(out, want);
        let mut body = CapturedBody::complete("code=zz&state=1");
        r.body(Direction::Request, &Headers::new(), &mut body);
        assert!(body.as_str().unwrap().starts_with("code=%5Bredacted"));
    }

    #[test]
    fn a_secret_in_a_value_that_is_not_utf8_is_redacted_and_its_bytes_dropped() {
        let mut r = Redactor::new();
        let mut hs = Headers::new();
        hs.push_bytes("authorization", b"Bearer s3cr\xe9t-token");
        hs.push_bytes("x-latin", b"caf\xe9");
        r.headers(Direction::Request, &mut hs);
        let auth = &hs.as_slice()[0];
        assert!(!auth.value.contains("s3cr"), "{}", auth.value);
        assert_eq!(auth.raw(), None, "the text was redacted: the bytes go");
        assert_eq!(hs.as_slice()[1].raw(), Some(&b"caf\xe9"[..]));
        let json = serde_json::to_string(&hs).unwrap();
        assert!(!json.contains("s3cr"), "{json}");
        assert_eq!(json.matches("base64").count(), 1, "{json}");
    }

    #[test]
    fn authorization_shapes() {
        let mut r = Redactor::new();
        let mut h = Header::new("authorization", "opaque");
        r.header(Direction::Request, &mut h);
        assert_eq!(h.value, marker("opaque"));
        let mut h = Header::new("Authorization", "Digest  user=\"a\", response=\"b\"");
        r.header(Direction::Request, &mut h);
        assert_eq!(
            h.value,
            format!("Digest  {}", marker("user=\"a\", response=\"b\""))
        );
        let mut h = Header::new("Authorization", "");
        r.header(Direction::Request, &mut h);
        assert_eq!(h.value, "");
    }

    #[test]
    fn events_are_redacted() {
        let mut ev = FlowEvent::ResponseHead {
            id: crate::FlowId(1),
            at: 0,
            status: 200,
            version: crate::HttpVersion::Http11,
            headers: [("mcp-session-id", "s1")].into_iter().collect(),
        };
        redact_event(&mut ev);
        let FlowEvent::ResponseHead { headers, .. } = &ev else {
            unreachable!()
        };
        assert_eq!(headers.get("mcp-session-id"), Some(marker("s1").as_str()));
        let mut flow = flow_with(&[("authorization", "Bearer t")], "", &[], "");
        flow.request.url = "https://rs.example/mcp".into();
        let mut ev = FlowEvent::Completed {
            flow: Box::new(flow),
        };
        redact_event(&mut ev);
        let FlowEvent::Completed { flow } = &ev else {
            unreachable!()
        };
        assert_eq!(flow.secrets.len(), 1);
    }
}

#[cfg(test)]
mod scrub_tests {
    use super::*;
    use crate::{CapturedBody, Flow, Request, Response};

    #[test]
    fn a_secret_echoed_in_another_header_or_body_is_scrubbed_too() {
        let mut flow = Flow {
            request: Request {
                url: "https://x/echo".into(),
                headers: [("authorization", "Bearer raw-token-value")]
                    .into_iter()
                    .collect(),
                ..Default::default()
            },
            response: Some(Response {
                status: 200,
                headers: [("x-seen-authorization", "Bearer raw-token-value")]
                    .into_iter()
                    .collect(),
                body: CapturedBody::complete("you sent raw-token-value"),
                ..Default::default()
            }),
            ..Default::default()
        };
        redact_flow(&mut flow);
        let json = serde_json::to_string(&flow).unwrap();
        assert!(!json.contains("raw-token-value"), "{json}");
        // Challenges are not credentials.
        let mut challenge = Flow {
            response: Some(Response {
                status: 401,
                headers: [
                    ("www-authenticate", r#"Bearer resource_metadata="https://x/.well-known/oauth-protected-resource""#),
                    ("x-other", r#"Bearer resource_metadata="https://x/y""#),
                ]
                .into_iter()
                .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let before = challenge.clone();
        redact_flow(&mut challenge);
        assert_eq!(challenge.response, before.response);
        let marker = redacted("raw-token-value");
        assert_eq!(
            flow.response
                .as_ref()
                .unwrap()
                .headers
                .get("x-seen-authorization"),
            Some(format!("Bearer {marker}").as_str())
        );
    }
}
