//! The catalogue of finding ids: one [`FindingId`] per page in `docs/findings/`, with its
//! one-line title and the fix hint the report prints. The enum, the pages and the hints come
//! from one table, so they cannot disagree, and a misspelt id does not compile. The pages are
//! compiled in, so `mcptap explain` works without the docs folder.

use serde::{Serialize, Serializer};
use std::fmt;

macro_rules! catalog {
    ($($variant:ident = $id:literal, $title:literal, $hint:literal;)*) => {
        /// A finding id (`token-not-sent`): what `mcptap explain ID` takes and JSON carries.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum FindingId {
            $(#[doc = concat!("`", $id, "`: ", $title, ".")] $variant,)*
        }

        impl FindingId {
            /// Every id, in the order of the reference (failure-modes.md), then the inject-mode
            /// verdicts and the visibility note.
            pub const ALL: &'static [FindingId] = &[$(FindingId::$variant,)*];

            /// The id as users type it (`token-not-sent`).
            pub fn as_str(self) -> &'static str {
                match self { $(FindingId::$variant => $id,)* }
            }

            /// One line saying what the finding is.
            pub fn title(self) -> &'static str {
                match self { $(FindingId::$variant => $title,)* }
            }

            /// What to do next, as the report prints it.
            pub fn hint(self) -> &'static str {
                match self { $(FindingId::$variant => $hint,)* }
            }

            /// The page `mcptap explain ID` prints (`docs/findings/ID.md`).
            pub fn page(self) -> &'static str {
                match self {
                    $(FindingId::$variant => include_str!(concat!("../../../docs/findings/", $id, ".md")),)*
                }
            }
        }
    };
}

catalog! {
    TokenNotSent = "token-not-sent", "A token was issued, but MCP requests go out without it",
        "Client bug: attach this capture to the client's issue tracker (`mcptap report`). Server side, send `expires_in` in token responses. Confirm with inject mode: if the injected request succeeds, the server is fine.";
    EdgeBlocked = "edge-blocked", "A CDN or WAF blocks requests that carry the token",
        "Exempt the MCP endpoint and /.well-known paths (or the client's User-Agent, e.g. `Claude-User`) from bot and WAF rules at the CDN.";
    FreshTokenRejected = "fresh-token-rejected", "The server refuses a token its own authorization server just issued",
        "Align the resource server's validation with its authorization server: audience = the PRM `resource`, issuer, signing keys (JWKS), and accept tokens without `exp` or issue `exp`.";
    StaleTokenSent = "stale-token-sent", "The client sends an old or expired token",
        "Client bug: it keeps an old or expired token although a newer one (or a refresh token) exists. Attach the capture to the client's tracker.";
    RedirectDropsAuth = "redirect-drops-auth", "A redirect of the MCP endpoint loses the Authorization header",
        "Do not redirect the MCP endpoint: serve both spellings (`/mcp` and `/mcp/`) and honour `X-Forwarded-Proto`/`X-Forwarded-Host` so no redirect to http or an internal host is made.";
    ChallengeMissing = "challenge-missing", "A 401 without a usable Bearer challenge",
        "Answer 401 with `WWW-Authenticate: Bearer resource_metadata=\"<absolute PRM URL>\", scope=\"...\"` (first challenge), and expose it to browsers via `Access-Control-Expose-Headers`.";
    PrmUnavailable = "prm-unavailable", "Protected-resource metadata cannot be fetched",
        "Serve protected-resource metadata (RFC 9728) as JSON at the URL in `resource_metadata` and at `/.well-known/oauth-protected-resource/<mcp path>`, with `resource` and a non-empty `authorization_servers`.";
    MetadataNotJson = "metadata-not-json", "A .well-known URL answers HTML instead of JSON",
        "Serve JSON or a 404 at every /.well-known path; never the SPA's index.html.";
    PrmResourceMismatch = "prm-resource-mismatch", "The metadata's resource is not the MCP URL",
        "Make the PRM `resource` exactly the public MCP URL the client uses (scheme, host, port, path), also behind tunnels and reverse proxies.";
    AsDiscoveryFailed = "as-discovery-failed", "Authorization-server metadata cannot be found for the issuer",
        "Serve the authorization-server metadata at the path-aware well-known URL for the issuer listed in the PRM, with `issuer` identical to that identifier.";
    AsMetadataIncomplete = "as-metadata-incomplete", "Authorization-server metadata lacks what MCP clients need",
        "Add `code_challenge_methods_supported: [\"S256\"]`, `response_types_supported: [\"code\"]`, the endpoints, and `registration_endpoint` (or `client_id_metadata_document_supported`) to the authorization-server metadata.";
    RegistrationFailed = "registration-failed", "Dynamic client registration fails",
        "Make dynamic client registration (RFC 7591) work: advertise `registration_endpoint`, accept loopback `redirect_uris`, and echo them unchanged.";
    RedirectUriMismatch = "redirect-uri-mismatch", "The authorize redirect_uri is not the registered one",
        "Client: reuse the registered callback port or re-register when it changes; use the same host spelling (`localhost` vs `127.0.0.1`). Server: allow any port for loopback redirect URIs (RFC 8252 §7.3).";
    ResourceParamWrong = "resource-param-wrong", "The resource parameter is missing or wrong",
        "Client: send `resource=<PRM resource>` byte for byte on /authorize, /token and refresh. Server: accept the canonical URI with and without a trailing slash.";
    PkceMismatch = "pkce-mismatch", "The PKCE verifier does not match the challenge",
        "Client: keep the code_verifier of the authorization request that produced the code (do not regenerate it per connection) and use S256.";
    TokenExchangeMissing = "token-exchange-missing", "Authorization started but no code was exchanged for a token",
        "The client started authorization but never exchanged a code: check that the browser reached the loopback callback (port open, third-party cookies, popup blockers) and that the client kept its PKCE state.";
    TokenResponseInvalid = "token-response-invalid", "The token endpoint's answer is not a valid token response",
        "Return RFC 6749 §5.1 JSON from /token: `access_token`, `token_type: \"Bearer\"`, `expires_in`; errors as JSON with a 4xx status, never HTML or a 200 with `error`.";
    InsufficientScopeUnhandled = "insufficient-scope-unhandled", "The client does not re-authorize after insufficient_scope",
        "Client: on 403 `insufficient_scope`, re-authorize with the challenged scope plus the scopes already granted, then retry (a refresh cannot widen scope).";
    LazyChallenge = "lazy-challenge", "The server challenges late, or never",
        "Require the token from the first request: answer `initialize` (and every MCP request) without a valid token with 401 and a Bearer challenge.";
    RefreshBroken = "refresh-broken", "Refreshing the token fails or races",
        "Client: refresh once at a time (single-flight across processes) and store the rotated refresh token. Server: issue refresh tokens (offline_access) and tolerate a short reuse window when rotating.";
    Session404Mishandled = "session-404-mishandled", "An expired MCP session is not re-initialized",
        "Client: after 404 on a request with Mcp-Session-Id, send a new initialize without a session id. Server: answer unknown or expired sessions with 404, not 400 or 200.";
    TransportHeaderViolation = "transport-header-violation", "Streamable HTTP headers are missing or wrong",
        "Client: send `MCP-Protocol-Version: <negotiated>` and `Mcp-Session-Id` on every request after initialize, and `Accept: application/json, text/event-stream`.";
    CorsBlocked = "cors-blocked", "CORS blocks a browser client",
        "Answer OPTIONS without auth with 204 and `Access-Control-Allow-Headers: authorization, content-type, mcp-protocol-version, mcp-session-id, last-event-id`, and expose `WWW-Authenticate, Mcp-Session-Id`.";
    TokenAuthMethodMismatch = "token-auth-method-mismatch", "The client authenticates at /token another way than registered",
        "Authenticate at /token exactly as registered (`token_endpoint_auth_method`): Basic for client_secret_basic, form fields for client_secret_post. Servers: echo the method in the registration response and honour it.";
    MetadataUnreachableEndpoints = "metadata-unreachable-endpoints", "Metadata advertises endpoints the client cannot reach",
        "Build metadata URLs from the public origin (honour `X-Forwarded-Proto`/`Host`), never from the internal bind address.";
    ClientIgnoresMetadata = "client-ignores-metadata", "The client guesses endpoints instead of using the metadata",
        "Client bug: use the endpoints the authorization-server metadata names instead of `{mcp-origin}/authorize|/token|/register`.";
    PrmUrlNotPathScoped = "prm-url-not-path-scoped", "Protected-resource metadata is not at the path-scoped URL",
        "Serve the PRM at `/.well-known/oauth-protected-resource/<mcp path>` and point `resource_metadata` there.";
    ToolSchemaInvalid = "tool-schema-invalid", "A tool's inputSchema is not a JSON Schema object",
        "Give every tool an `inputSchema` that is a JSON Schema object with `\"type\": \"object\"`.";
    HostOriginRejected = "host-origin-rejected", "The server's DNS-rebinding guard refuses the Host or Origin it is reached with",
        "Add the public host name (and the client's Origin, if it is a browser app you trust) to the server's allowed hosts/origins, or make the tunnel or reverse proxy pass the client's Host through (`X-Forwarded-Host`) instead of rewriting it.";
    SseBuffered = "sse-buffered", "Server-sent events are held back and arrive in one burst, or compressed",
        "Turn off response buffering and compression for `text/event-stream` on every hop (nginx: `proxy_buffering off;` or the response header `X-Accel-Buffering: no`; no gzip for event streams).";
    ChallengeAmbiguous = "challenge-ambiguous", "A challenge names more than one resource_metadata",
        "Send one Bearer challenge with one `resource_metadata`, the URL where the protected-resource metadata is served; remove duplicates added by middleware or a gateway.";
    VersionNegotiationFailed = "version-negotiation-failed", "Client and server do not agree on a protocol version they both support",
        "Server: answer `initialize` with the client's `protocolVersion` whenever you support it, and never refuse an `initialize` because of its MCP-Protocol-Version header. 2026-07-28: refuse an unsupported version with 400 and `UnsupportedProtocolVersionError` listing `supported`; clients retry with a version from that list.";
    StatelessHeaderViolation = "stateless-header-violation", "2026-07-28 request headers are missing or disagree with the body",
        "Client: on every 2026-07-28 POST send `MCP-Protocol-Version` equal to `_meta[\"io.modelcontextprotocol/protocolVersion\"]`, `Mcp-Method` equal to the body's method, and `Mcp-Name` for tools/call, resources/read and prompts/get. Server: answer a mismatch with 400 `HeaderMismatch` (-32020).";
    ClientRegistrationStale = "client-registration-stale", "Client registration is stale: the server forgot the client_id",
        "Client: on invalid_client, drop the cached registration and register again. Server: keep registrations across restarts and answer unknown clients with 401 invalid_client.";
    RegistrationMechanismMismatch = "registration-mechanism-mismatch", "The client uses dynamic registration where the server offers Client ID Metadata Documents",
        "Client: support Client ID Metadata Documents (an https client_id URL) when the server offers them instead of dynamic registration.";
    CimdInvalid = "cimd-invalid", "The Client ID Metadata Document does not match its use",
        "Make the Client ID Metadata Document's client_id exactly its URL and list every redirect URI the client uses.";
    ScopeRejected = "scope-rejected", "The server refuses a scope the client asked for",
        "Client: request the challenged scope, else the PRM's scopes_supported, else none; request offline_access only when the AS lists it.";
    IssuerMismatch = "issuer-mismatch", "The authorization response's iss is not the metadata's issuer",
        "Server: return your own issuer in the authorization response's iss, exactly as in your metadata.";
    CredentialCrossIssuer = "credential-cross-issuer", "A credential from one authorization server is sent to another",
        "Client: keep refresh tokens, codes and client credentials per authorization server (issuer); never send one server's credential to another.";
    ScopeSelectionWrong = "scope-selection-wrong", "The client requests the wrong scope",
        "Client: request the challenge's scope, else the PRM's scopes_supported, else no scope (2025-11-25 Scope Selection Strategy).";
    DiscoveryOrderWrong = "discovery-order-wrong", "The client probes metadata URLs in the wrong order",
        "Client: probe the challenge's resource_metadata URL, then the path-inserted PRM URL, then the root; path-aware AS metadata URLs only for an issuer with a path.";
    CimdNotUsed = "cimd-not-used", "The client registers dynamically although the server offers Client ID Metadata Documents",
        "Client: prefer a Client ID Metadata Document over dynamic registration when the authorization server offers it.";
    JsonrpcResponseInvalid = "jsonrpc-response-invalid", "The server's JSON-RPC answer is malformed",
        "Answer every JSON-RPC request with jsonrpc 2.0, its own id, and exactly one of result or error (error with an integer code and a message); give initialize its required fields.";
    MetadataUrlInvalid = "metadata-url-invalid", "A URL in the metadata is invalid",
        "Publish absolute https URLs in the metadata (http only on loopback), an issuer without query or fragment, and no query in bearer_methods_supported.";
    GetStreamWrong = "get-stream-wrong", "The GET stream is answered wrongly",
        "Answer GET with Accept: text/event-stream by opening an event stream at once (headers flushed), or with 405.";
    NotificationAnswerWrong = "notification-answer-wrong", "A POST of notifications is not answered 202",
        "Answer a POST that carries only notifications or responses with 202 Accepted and no body.";
    JwksInvalid = "jwks-invalid", "The JWKS cannot be used",
        "Serve a JSON Web Key Set with a keys array at jwks_uri.";
    TokenNotValidated = "token-not-validated", "The server serves a bearer token it never issued",
        "Validate every bearer token on the resource server (signature or introspection, `exp`, audience = your PRM `resource`) and answer 401 with `WWW-Authenticate: Bearer error=\"invalid_token\"` when it fails.";
    OriginNotValidated = "origin-not-validated", "The server serves requests from a foreign Origin",
        "Validate the `Origin` header on the MCP endpoint: answer 403 to any origin you do not serve (DNS-rebinding protection), especially on a server bound to localhost.";
    TokenInQueryAccepted = "token-in-query-accepted", "The server accepts the access token in the query string",
        "Read the access token from the `Authorization` header only; refuse `?access_token=` (MCP forbids tokens in the query string: URLs end up in logs).";
    RegistrationRedirectUnsafe = "registration-redirect-unsafe", "Registration accepts an unsafe redirect URI",
        "Accept only https redirect URIs, or http on a loopback host (127.0.0.1, [::1], localhost), at registration; refuse others with 400 invalid_redirect_uri.";
    InvalidRequestAccepted = "invalid-request-accepted", "The server serves a request it must refuse",
        "Refuse what the spec says to refuse: an unsupported `MCP-Protocol-Version`, or a request without the session id on a server that keeps sessions, with 400 Bad Request; a request with `\"id\": null` with an error, not as a notification; a notification method sent with an `id` as an unknown request.";
    TokenUnused = "token-unused", "A token was issued and never used (sub-case of token-not-sent)",
        "Reported as `token-not-sent` (sub-case `token-unused`): see `mcptap explain token-not-sent`.";
    ClientOmitsTokenConfirmed = "client-omits-token-confirmed", "Proven by injection: the client omits a token the server accepts",
        "Proven client bug: the server accepts the token the client was given. Attach the capture (`mcptap report`) to the client's tracker.";
    ServerRejectsToken = "server-rejects-token", "Proven by injection: the server refuses its own token",
        "Proven server bug: the server refused a token its own authorization server issued. Check audience, issuer and key validation on the resource server.";
    AuthorizeNotVisible = "authorize-not-visible", "The browser's /authorize was not captured",
        "Proxy the browser too (or use the client's headless flow) so that /authorize is captured; then rerun the analysis.";
}

impl FindingId {
    /// The id named `s` (exact, trimmed); `None` for an unknown name.
    pub fn parse(s: &str) -> Option<FindingId> {
        let s = s.trim();
        FindingId::ALL.iter().copied().find(|id| id.as_str() == s)
    }
}

impl FindingId {
    /// The sub-cases its page names: the kebab-case words in backticks of the page's
    /// "How mcptap decides" section that are not finding ids or header names (`never-sent`,
    /// `after-restart`). Read from the page, so a sub-case documented there is known here.
    pub fn subcases(self) -> Vec<&'static str> {
        let page = self.page();
        let Some(start) = page.find("## How mcptap decides") else {
            return Vec::new();
        };
        let section = &page[start..];
        let section = match section[2..].find("\n## ") {
            Some(end) => &section[..end + 2],
            None => section,
        };
        let mut out: Vec<&'static str> = Vec::new();
        for (i, word) in section.split('`').enumerate() {
            let kebab = word.contains('-')
                && word.split('-').all(|p| {
                    !p.is_empty()
                        && p.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                });
            let header = word.starts_with("x-") || word.starts_with("cf-");
            if i % 2 == 1
                && kebab
                && !header
                && FindingId::parse(word).is_none()
                && !out.contains(&word)
            {
                out.push(word);
            }
        }
        out
    }

    /// The findings whose pages name `name` as a sub-case (usually one).
    pub fn with_subcase(name: &str) -> Vec<FindingId> {
        let name = name.trim();
        FindingId::ALL
            .iter()
            .copied()
            .filter(|id| id.subcases().contains(&name))
            .collect()
    }
}

impl fmt::Display for FindingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FindingId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PartialEq<str> for FindingId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for FindingId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
