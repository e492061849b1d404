//! The catalogue of finding ids: one entry per page in `docs/findings/`, with the fix hint the
//! report prints. The pages are compiled in, so `mcptap explain` works without the docs folder.

/// One finding id and what goes with it.
pub(crate) struct Entry {
    pub id: &'static str,
    pub hint: &'static str,
    pub page: &'static str,
}

macro_rules! entry {
    ($id:literal, $hint:literal) => {
        Entry {
            id: $id,
            hint: $hint,
            page: include_str!(concat!("../../../docs/findings/", $id, ".md")),
        }
    };
}

/// Every id, in the order of the reference (failure-modes.md), then the inject-mode verdicts and
/// the visibility note.
pub(crate) const ENTRIES: &[Entry] = &[
    entry!("token-not-sent", "Client bug: attach this capture to the client's issue tracker (`mcptap report`). Server side, send `expires_in` in token responses. Confirm with inject mode: if the injected request succeeds, the server is fine."),
    entry!("edge-blocked", "Exempt the MCP endpoint and /.well-known paths (or the client's User-Agent, e.g. `Claude-User`) from bot and WAF rules at the CDN."),
    entry!("fresh-token-rejected", "Align the resource server's validation with its authorization server: audience = the PRM `resource`, issuer, signing keys (JWKS), and accept tokens without `exp` or issue `exp`."),
    entry!("stale-token-sent", "Client bug: it keeps an old or expired token although a newer one (or a refresh token) exists. Attach the capture to the client's tracker."),
    entry!("redirect-drops-auth", "Do not redirect the MCP endpoint: serve both spellings (`/mcp` and `/mcp/`) and honour `X-Forwarded-Proto`/`X-Forwarded-Host` so no redirect to http or an internal host is made."),
    entry!("challenge-missing", "Answer 401 with `WWW-Authenticate: Bearer resource_metadata=\"<absolute PRM URL>\", scope=\"...\"` (first challenge), and expose it to browsers via `Access-Control-Expose-Headers`."),
    entry!("prm-unavailable", "Serve protected-resource metadata (RFC 9728) as JSON at the URL in `resource_metadata` and at `/.well-known/oauth-protected-resource/<mcp path>`, with `resource` and a non-empty `authorization_servers`."),
    entry!("metadata-not-json", "Serve JSON or a 404 at every /.well-known path; never the SPA's index.html."),
    entry!("prm-resource-mismatch", "Make the PRM `resource` exactly the public MCP URL the client uses (scheme, host, port, path), also behind tunnels and reverse proxies."),
    entry!("as-discovery-failed", "Serve the authorization-server metadata at the path-aware well-known URL for the issuer listed in the PRM, with `issuer` identical to that identifier."),
    entry!("as-metadata-incomplete", "Add `code_challenge_methods_supported: [\"S256\"]`, `response_types_supported: [\"code\"]`, the endpoints, and `registration_endpoint` (or `client_id_metadata_document_supported`) to the authorization-server metadata."),
    entry!("registration-failed", "Make dynamic client registration (RFC 7591) work: advertise `registration_endpoint`, accept loopback `redirect_uris`, and echo them unchanged."),
    entry!("redirect-uri-mismatch", "Client: reuse the registered callback port or re-register when it changes; use the same host spelling (`localhost` vs `127.0.0.1`). Server: allow any port for loopback redirect URIs (RFC 8252 §7.3)."),
    entry!("resource-param-wrong", "Client: send `resource=<PRM resource>` byte for byte on /authorize, /token and refresh. Server: accept the canonical URI with and without a trailing slash."),
    entry!("pkce-mismatch", "Client: keep the code_verifier of the authorization request that produced the code (do not regenerate it per connection) and use S256."),
    entry!("token-exchange-missing", "The client started authorization but never exchanged a code: check that the browser reached the loopback callback (port open, third-party cookies, popup blockers) and that the client kept its PKCE state."),
    entry!("token-response-invalid", "Return RFC 6749 §5.1 JSON from /token: `access_token`, `token_type: \"Bearer\"`, `expires_in`; errors as JSON with a 4xx status, never HTML or a 200 with `error`."),
    entry!("insufficient-scope-unhandled", "Client: on 403 `insufficient_scope`, re-authorize with the challenged scope plus the scopes already granted, then retry (a refresh cannot widen scope)."),
    entry!("lazy-challenge", "Require the token from the first request: answer `initialize` (and every MCP request) without a valid token with 401 and a Bearer challenge."),
    entry!("refresh-broken", "Client: refresh once at a time (single-flight across processes) and store the rotated refresh token. Server: issue refresh tokens (offline_access) and tolerate a short reuse window when rotating."),
    entry!("session-404-mishandled", "Client: after 404 on a request with Mcp-Session-Id, send a new initialize without a session id. Server: answer unknown or expired sessions with 404, not 400 or 200."),
    entry!("transport-header-violation", "Client: send `MCP-Protocol-Version: <negotiated>` and `Mcp-Session-Id` on every request after initialize, and `Accept: application/json, text/event-stream`."),
    entry!("cors-blocked", "Answer OPTIONS without auth with 204 and `Access-Control-Allow-Headers: authorization, content-type, mcp-protocol-version, mcp-session-id, last-event-id`, and expose `WWW-Authenticate, Mcp-Session-Id`."),
    entry!("token-auth-method-mismatch", "Authenticate at /token exactly as registered (`token_endpoint_auth_method`): Basic for client_secret_basic, form fields for client_secret_post. Servers: echo the method in the registration response and honour it."),
    entry!("metadata-unreachable-endpoints", "Build metadata URLs from the public origin (honour `X-Forwarded-Proto`/`Host`), never from the internal bind address."),
    entry!("client-ignores-metadata", "Client bug: use the endpoints the authorization-server metadata names instead of `{mcp-origin}/authorize|/token|/register`."),
    entry!("prm-url-not-path-scoped", "Serve the PRM at `/.well-known/oauth-protected-resource/<mcp path>` and point `resource_metadata` there."),
    entry!("tool-schema-invalid", "Give every tool an `inputSchema` that is a JSON Schema object with `\"type\": \"object\"`."),
    entry!("token-unused", "Reported as `token-not-sent` (sub-case `token-unused`): see `mcptap explain token-not-sent`."),
    entry!("client-omits-token-confirmed", "Proven client bug: the server accepts the token the client was given. Attach the capture (`mcptap report`) to the client's tracker."),
    entry!("server-rejects-token", "Proven server bug: the server refused a token its own authorization server issued. Check audience, issuer and key validation on the resource server."),
    entry!("authorize-not-visible", "Proxy the browser too (or use the client's headless flow) so that /authorize is captured; then rerun the analysis."),
];

/// The catalogue entry for `id`.
pub(crate) fn entry(id: &str) -> Option<&'static Entry> {
    ENTRIES.iter().find(|e| e.id == id)
}

/// The fix hint for `id` (empty for unknown ids, which the rules never use).
pub(crate) fn hint(id: &str) -> &'static str {
    entry(id).map(|e| e.hint).unwrap_or("")
}
