//! The report: what the analyzer hands out. Its JSON form is a stable, documented schema
//! (`docs/findings/README.md`, section "JSON schema"); bump [`SCHEMA_VERSION`] on any change
//! that is not a pure addition.

use mcptap_flow::{FlowId, Micros};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// The version of the report's JSON schema.
pub const SCHEMA_VERSION: u32 = 1;

/// How bad a finding is. Ordered: `Info < Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Context, not a fault (for example: what this capture could not see).
    Info,
    /// Works with this peer but breaks with stricter ones.
    Low,
    /// Breaks some flows or some clients.
    Medium,
    /// Breaks the connection.
    High,
    /// The headline failures: a token exists and never reaches the server.
    Critical,
}

impl Severity {
    /// The lower-case name (`high`).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an unknown severity name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSeverity(pub String);

impl fmt::Display for UnknownSeverity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown severity {:?} (expected critical, high, medium, low or info)",
            self.0
        )
    }
}

impl std::error::Error for UnknownSeverity {}

impl FromStr for Severity {
    type Err = UnknownSeverity;
    fn from_str(s: &str) -> Result<Severity, UnknownSeverity> {
        match s.trim().to_ascii_lowercase().as_str() {
            "info" => Ok(Severity::Info),
            "low" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            _ => Err(UnknownSeverity(s.to_owned())),
        }
    }
}

/// Who has to change something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Culprit {
    /// The MCP client (or its OAuth library).
    Client,
    /// The MCP server or its authorization server.
    Server,
    /// Something between them: a CDN, WAF, bot filter or reverse proxy.
    Edge,
    /// The capture does not say.
    Unknown,
}

impl Culprit {
    /// The lower-case name (`client`).
    pub fn as_str(self) -> &'static str {
        match self {
            Culprit::Client => "client",
            Culprit::Server => "server",
            Culprit::Edge => "edge",
            Culprit::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Culprit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far the capture has decided a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The evidence proves it.
    #[default]
    Confirmed,
    /// The evidence makes it likely; [`Finding::decides`] says what would settle it. Shown at
    /// once, so that nobody waits in silence for a deadline.
    Suspected,
    /// It was suspected, and later flows showed it was not so ([`Finding::amendments`] says
    /// which). Kept, so that what was shown live never vanishes silently; not counted as a
    /// finding.
    Cleared,
}

impl Status {
    /// The lower-case name (`suspected`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Confirmed => "confirmed",
            Status::Suspected => "suspected",
            Status::Cleared => "cleared",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One diagnosed failure.
///
/// A finding is identified by `(id, key)`. The analyzer reports it once, from the flow that
/// completes its proof; later flows may add evidence, raise `occurrences` and add details, which
/// shows in [`crate::Analyzer::findings`] and in the final report but is not reported again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The stable id (`token-not-sent`); `mcptap explain ID` prints its page.
    pub id: crate::FindingId,
    /// Which instance of the finding: a token fingerprint, an endpoint, a session. Stable within
    /// one analysis; lets a live view replace an updated finding.
    pub key: String,
    /// How bad.
    pub severity: Severity,
    /// Who has to act.
    pub culprit: Culprit,
    /// Proven, only suspected so far, or cleared by later flows.
    pub status: Status,
    /// The named sub-case, when the mode has several (`never-sent`, `token-unused`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subcase: Option<&'static str>,
    /// One sentence.
    pub summary: String,
    /// The flows that prove it, ascending, at most [`crate::Options::max_evidence`].
    pub evidence: Vec<FlowId>,
    /// How many times the pattern was seen (evidence is capped, this is not).
    pub occurrences: u64,
    /// What to do next.
    pub hint: String,
    /// Supporting facts, one per line (decoded claims, error descriptions, sub-cases).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// For a suspected finding: what would decide it (and how to prove it at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decides: Option<String>,
    /// What later flows changed, in order: a recovery that lowered the severity, a suspicion
    /// confirmed or cleared, a decision taken when the capture ended.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub amendments: Vec<String>,
}

impl Finding {
    /// True unless a suspicion was cleared: what counts as a finding (summaries, `--fail-on`).
    pub fn counts(&self) -> bool {
        self.status != Status::Cleared
    }
}

/// What a flow was, in the OAuth + MCP story.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Protected-resource metadata (RFC 9728) discovery.
    PrmDiscovery,
    /// Authorization-server metadata (RFC 8414 / OpenID discovery).
    AsMetadata,
    /// Dynamic client registration (RFC 7591).
    Registration,
    /// The browser's authorization request.
    Authorize,
    /// The redirect back to the client's loopback callback.
    Callback,
    /// Token request, `grant_type=authorization_code`.
    TokenCode,
    /// Token request, `grant_type=refresh_token`.
    TokenRefresh,
    /// Token request with another grant.
    TokenOther,
    /// A request to an MCP endpoint (POST, GET stream, DELETE).
    Mcp,
    /// A CORS preflight (`OPTIONS`) to an MCP endpoint.
    McpPreflight,
    /// A JWKS fetch.
    Jwks,
    /// A token revocation (RFC 7009).
    Revocation,
    /// Anything else.
    Other,
    /// A tunnel that was not decrypted.
    Tunnel,
}

impl Role {
    /// The snake-case name used in JSON and in the timeline.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::PrmDiscovery => "prm_discovery",
            Role::AsMetadata => "as_metadata",
            Role::Registration => "registration",
            Role::Authorize => "authorize",
            Role::Callback => "callback",
            Role::TokenCode => "token_code",
            Role::TokenRefresh => "token_refresh",
            Role::TokenOther => "token_other",
            Role::Mcp => "mcp",
            Role::McpPreflight => "mcp_preflight",
            Role::Jwks => "jwks",
            Role::Revocation => "revocation",
            Role::Other => "other",
            Role::Tunnel => "tunnel",
        }
    }

    /// True for the OAuth roles (discovery, registration, authorize, callback, token, JWKS).
    pub fn is_oauth(self) -> bool {
        matches!(
            self,
            Role::PrmDiscovery
                | Role::AsMetadata
                | Role::Registration
                | Role::Authorize
                | Role::Callback
                | Role::TokenCode
                | Role::TokenRefresh
                | Role::TokenOther
                | Role::Jwks
                | Role::Revocation
        )
    }

    /// True for token requests of any grant.
    pub fn is_token(self) -> bool {
        matches!(
            self,
            Role::TokenCode | Role::TokenRefresh | Role::TokenOther
        )
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which way a JSON-RPC message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RpcDirection {
    /// In the request body.
    ClientToServer,
    /// In the response body or its SSE events.
    ServerToClient,
}

/// What a JSON-RPC message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RpcKind {
    /// Has `method` and `id`.
    Request,
    /// Has `method`, no `id`.
    Notification,
    /// Has `result`.
    Response,
    /// Has `error`.
    Error,
}

/// One JSON-RPC message seen in a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RpcMessage {
    /// Which way.
    pub dir: RpcDirection,
    /// What kind.
    pub kind: RpcKind,
    /// The method; for responses, the method of the request with the same id in this flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The id, as JSON text (`1`, `"abc"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// True when the message came in an SSE event.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sse: bool,
}

/// The MCP facts of a flow to an MCP endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct McpInfo {
    /// The endpoint (origin and path).
    pub endpoint: String,
    /// JSON-RPC messages in the request and the response (JSON or SSE).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<RpcMessage>,
    /// Fingerprint of the `Mcp-Session-Id` the client sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Fingerprint of the `Mcp-Session-Id` the server assigned in this response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_session: Option<String>,
    /// The `MCP-Protocol-Version` header the client sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// The protocol version the server chose, when this flow carries an initialize result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negotiated_version: Option<String>,
}

/// How a request authenticated itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthInfo {
    /// The scheme (`Bearer`, `Basic`).
    pub scheme: String,
    /// Fingerprint of the credential.
    pub fingerprint: String,
    /// True when mcptap added the header (inject mode): the client sent none.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub injected: bool,
}

/// One flow, as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowSummary {
    /// The flow id.
    pub id: FlowId,
    /// When the request started (µs since the epoch).
    pub started: Micros,
    /// What it was.
    pub role: Role,
    /// HTTP method.
    pub method: String,
    /// URL without the query (which may hold codes).
    pub url: String,
    /// Response status; `None` when there was none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// True when mcptap made the response (upstream failure).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub synthetic: bool,
    /// The error kind, for failed flows (`upstream_dns`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// The request's credentials, fingerprinted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthInfo>,
    /// MCP facts, for MCP flows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpInfo>,
    /// Fingerprint of the access token this (token) flow issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token: Option<String>,
    /// Set when mcptap made this request itself (`inject-refresh`), not the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_mcptap: Option<String>,
}

/// One access token: where it came from and where it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    /// Fingerprint of the access token.
    pub fingerprint: String,
    /// The token flow that issued it.
    pub flow: FlowId,
    /// `authorization_code`, `refresh_token`, …
    pub grant: String,
    /// When the response arrived (µs since the epoch).
    pub issued_at: Micros,
    /// `expires_in` as sent (seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
    /// When it expires (from `expires_in`, else the JWT `exp`); `None` when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Micros>,
    /// Fingerprint of the refresh token issued with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_fingerprint: Option<String>,
    /// The granted scope, when the response named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The JWT audience, when the token is a JWT.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jwt_aud: Vec<String>,
    /// How many requests carried it.
    pub uses: u64,
    /// The first requests that carried it (capped).
    pub sent_to: Vec<FlowId>,
    /// Every distinct URL (origin and path) it was sent to.
    pub endpoints: Vec<String>,
}

/// The OAuth story of one (issuer, resource, client).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OAuthStory {
    /// The authorization server's issuer, or the token endpoint's origin when no metadata was
    /// seen.
    pub issuer: String,
    /// The `resource` sent at `/token`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The client id, if it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Tokens issued, in order.
    pub tokens: Vec<TokenRecord>,
}

/// What the capture could see, and what it therefore could not decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Visibility {
    /// A browser `/authorize` request was captured.
    pub authorize_seen: bool,
    /// A token request was captured.
    pub token_seen: bool,
    /// A request to an MCP endpoint was captured.
    pub mcp_seen: bool,
    /// Finding ids that could not be checked with this capture.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_checked: Vec<&'static str>,
    /// Things the analyzer could not conclude (capture ended too early, secrets missing, …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Who talked to whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Environment {
    /// Distinct `User-Agent` values of requests, in order of first appearance.
    pub user_agents: Vec<String>,
    /// MCP endpoints seen.
    pub mcp_endpoints: Vec<String>,
    /// Authorization servers (issuers) seen.
    pub authorization_servers: Vec<String>,
    /// MCP protocol versions seen (negotiated or sent).
    pub protocol_versions: Vec<String>,
    /// Time of the first request (µs since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_started: Option<Micros>,
    /// Time of the last activity (µs since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<Micros>,
    /// When recording stopped (µs since the epoch), when the capture says: decisions that
    /// waited were taken then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_ended: Option<Micros>,
    /// Flows other than MCP ones that were analysed and counted instead of listed in
    /// [`Report::flows`] (live analysis only; see `Options::list_flows`).
    #[serde(skip_serializing_if = "is_zero")]
    pub unlisted_flows: u64,
    /// MCP flows analysed and counted instead of listed in [`Report::flows`] (live analysis
    /// only; see `Options::list_flows`).
    #[serde(skip_serializing_if = "is_zero")]
    pub unlisted_mcp_flows: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The result of an analysis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema: u32,
    /// Who talked to whom.
    pub environment: Environment,
    /// What could be seen.
    pub visibility: Visibility,
    /// Findings, most severe first.
    pub findings: Vec<Finding>,
    /// The OAuth stories.
    pub stories: Vec<OAuthStory>,
    /// Every HTTP flow, in order of start.
    pub flows: Vec<FlowSummary>,
}

impl Report {
    /// The most severe finding's severity.
    pub fn max_severity(&self) -> Option<Severity> {
        self.counted().map(|f| f.severity).max()
    }

    /// True when some finding is at or above `threshold` (for `--fail-on`). Suspected findings
    /// count; cleared suspicions do not.
    pub fn fails(&self, threshold: Severity) -> bool {
        self.counted().any(|f| f.severity >= threshold)
    }

    /// The findings that count (all but cleared suspicions).
    pub fn counted(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.counts())
    }

    /// The findings with this id.
    pub fn findings_with_id<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Finding> + 'a {
        self.findings.iter().filter(move |f| f.id.as_str() == id)
    }
}
