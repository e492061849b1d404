//! `mcptap mcp`: an MCP server on stdio (the official `rmcp` SDK) that lets a coding agent read
//! mcptap's captures: the sessions, a session's summary, its flows (with mcptap's filter
//! language), one flow whole, the findings with their evidence and fix, the explain pages and
//! the markdown bug report.
//!
//! Read-only: no tool records, injects, replays or writes. Every answer comes from redacted
//! flows (`crate::mcp_data`), so no tool puts a live credential into the agent's context, even
//! when the source is another tool's HAR holding raw tokens. What the tools answer is built in
//! `crate::mcp_data`; this module is the MCP side only.

use crate::args::McpArgs;
use crate::mcp_data::{self as data, Cache, Sources, ToolError};
use anyhow::Context as _;
use rmcp::handler::server::{router::tool::ToolRouter, wrapper::Parameters};
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{schemars, tool, tool_handler, tool_router, ServerHandler, ServiceExt as _};
use serde::Deserialize;
use std::process::ExitCode;
use std::sync::Arc;

/// What the server tells the agent when it connects.
const INSTRUCTIONS: &str = "mcptap records the HTTP traffic between an MCP client and an \
MCP server that uses OAuth (the OAuth dance and every MCP call) and diagnoses what went wrong, \
e.g. why a client that \"authenticated successfully\" still gets 401 or shows \"Needs \
authentication\". Start with `summary` (the verdict, tokens, findings), then `findings` (each \
with its evidence flow ids, culprit and fix), `get_flow` for the evidence, and `report` for a \
bug report to paste into an issue. The tools read the running proxy's session by default, else \
the newest saved one; `list_sessions` lists them. Secrets are shown as \
`[redacted sha256:<fingerprint> len=<n>]`: equal fingerprints are the same token.";

/// `session` only.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct SessionArgs {
    /// Which capture to read: a name from list_sessions, `live` (the running proxy's), or a
    /// path to a session directory, a journal.jsonl or a HAR file (from mcptap or another tool:
    /// Chrome, Firefox, mitmproxy, HTTP Toolkit, Charles). Omit it for the default: the running
    /// proxy's session, else the newest saved one.
    #[serde(default)]
    pub session: Option<String>,
}

/// `list_sessions`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct ListSessionsArgs {
    /// At most this many saved sessions, newest first (default 20).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `list_flows`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct ListFlowsArgs {
    /// Which capture to read: a name from list_sessions, `live` (the running proxy's), or a
    /// path to a session directory, a journal.jsonl or a HAR file. Omit it for the default.
    #[serde(default)]
    pub session: Option<String>,
    /// mcptap's filter (mitmproxy style): `~noauth` (no Authorization header), `~auth`,
    /// `~ph MCP` / `~ph token` / `~ph PRM` / `~ph register` / `~ph authorize` (OAuth or MCP
    /// phase), `~rpc tools/call` (JSON-RPC method, regex), `~c 401` or `~c 4xx` (status),
    /// `~m POST`, `~d host`, `~u url`, `~p path`, `~f` (cited by a finding), `~e` (failed or
    /// aborted), `~q` (pending), `~sse`, or a bare word; combine with `!`, `&`, `|` and
    /// parentheses, e.g. `~ph MCP & ~noauth`.
    #[serde(default)]
    pub filter: Option<String>,
    /// Skip this many matching flows (paging; the answer's next_offset says where the next
    /// page starts).
    #[serde(default)]
    pub offset: Option<usize>,
    /// At most this many flows (default 50, at most 500).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `get_flow`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct GetFlowArgs {
    /// Which capture to read: a name from list_sessions, `live` (the running proxy's), or a
    /// path to a session directory, a journal.jsonl or a HAR file. Omit it for the default.
    #[serde(default)]
    pub session: Option<String>,
    /// The flow id (the number after `#`, as in findings' evidence and list_flows).
    pub id: u64,
    /// Bytes of the bodies shown, request and response each (default 8192, at most 262144).
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
}

/// `findings`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct FindingsArgs {
    /// Which capture to read: a name from list_sessions, `live` (the running proxy's), or a
    /// path to a session directory, a journal.jsonl or a HAR file. Omit it for the default.
    #[serde(default)]
    pub session: Option<String>,
    /// Only the findings with this id (e.g. `token-not-sent`).
    #[serde(default)]
    pub id: Option<String>,
    /// Also the suspicions that later flows cleared (default false).
    #[serde(default)]
    pub include_cleared: Option<bool>,
}

/// `explain`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct ExplainArgs {
    /// A finding id (`token-not-sent`) or sub-case (`never-sent`); omit it for the list of
    /// every id with its title.
    #[serde(default)]
    pub id: Option<String>,
}

/// The server: where sessions are, and the last one loaded.
#[derive(Clone)]
pub struct McptapServer {
    sources: Arc<Sources>,
    cache: Arc<Cache>,
    tool_router: ToolRouter<Self>,
}

fn text(s: String) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(s)])
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

fn json(v: &serde_json::Value) -> CallToolResult {
    text(pretty(v))
}

fn failed(e: ToolError) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(e.0)])
}

impl McptapServer {
    /// A server reading the sessions under `sources`.
    pub fn new(sources: Sources) -> McptapServer {
        McptapServer {
            sources: Arc::new(sources),
            cache: Arc::new(Cache::default()),
            tool_router: Self::tool_router(),
        }
    }

    /// Runs `f` on the loaded session off the async workers (loading and analysing a big
    /// session takes a while) and scrubs its answer, or its error, of the source's raw secrets
    /// ([`data::Loaded::scrub`]) before it leaves.
    async fn with_session(
        &self,
        session: Option<String>,
        f: impl FnOnce(&data::Loaded) -> Result<String, ToolError> + Send + 'static,
    ) -> CallToolResult {
        let sources = self.sources.clone();
        let cache = self.cache.clone();
        let done = tokio::task::spawn_blocking(move || {
            let loaded = cache.get(&sources, session.as_deref())?;
            Ok(match f(&loaded) {
                Ok(answer) => Ok(loaded.scrub(answer)),
                Err(e) => Err(ToolError(loaded.scrub(e.0))),
            })
        })
        .await;
        match done {
            Ok(Ok(Ok(answer))) => text(answer),
            Ok(Ok(Err(e)) | Err(e)) => failed(e),
            Err(e) => failed(ToolError(format!("internal error: {e}"))),
        }
    }
}

#[tool_router]
impl McptapServer {
    /// `list_sessions`.
    #[tool(
        description = "List the captures this mcptap knows: the running proxy's session (live) \
        and the saved sessions, newest first, with the default the other tools read. Returns \
        JSON.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_sessions(&self, Parameters(a): Parameters<ListSessionsArgs>) -> CallToolResult {
        let sources = self.sources.clone();
        let limit = a.limit.unwrap_or(20);
        match tokio::task::spawn_blocking(move || data::list_sessions(&sources, limit)).await {
            Ok(v) => json(&v),
            Err(e) => failed(ToolError(format!("internal error: {e}"))),
        }
    }

    /// `summary`.
    #[tool(
        description = "Overview of one capture: a one-line verdict, flow counts (OAuth, MCP, \
        failed), the clients (User-Agents), MCP endpoints and authorization servers, every \
        access token (fingerprint, the flow that issued it, how often and where it was sent) and \
        the findings (id, severity, culprit, evidence flow ids). Start here. Returns JSON.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn summary(&self, Parameters(a): Parameters<SessionArgs>) -> CallToolResult {
        self.with_session(a.session, |l| Ok(pretty(&data::summary(l))))
            .await
    }

    /// `list_flows`.
    #[tool(
        description = "List the flows (HTTP exchanges) of a capture, one line each: id, method, \
        URL, status, OAuth/MCP phase, JSON-RPC method, auth (`Bearer <fingerprint>` or `none`), \
        and the findings citing it; filtered with mcptap's filter language and paged. Returns \
        JSON.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_flows(&self, Parameters(a): Parameters<ListFlowsArgs>) -> CallToolResult {
        let offset = a.offset.unwrap_or(0);
        let limit = a
            .limit
            .unwrap_or(data::DEFAULT_PAGE)
            .clamp(1, data::MAX_PAGE);
        let filter = a.filter;
        self.with_session(a.session, move |l| {
            data::list_flows(l, filter.as_deref(), offset, limit).map(|v| pretty(&v))
        })
        .await
    }

    /// `get_flow`.
    #[tool(
        description = "One flow whole: request and response headers and bodies (secrets \
        redacted to fingerprints, as mcptap saves them; bodies cut at max_body_bytes), SSE \
        events, timings, the error of a failed flow, its OAuth/MCP role and the findings citing \
        it. Returns JSON.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_flow(&self, Parameters(a): Parameters<GetFlowArgs>) -> CallToolResult {
        let max = a
            .max_body_bytes
            .unwrap_or(data::DEFAULT_BODY_BYTES)
            .min(data::MAX_BODY_BYTES);
        let id = a.id;
        self.with_session(a.session, move |l| {
            data::get_flow(l, id, max).map(|v| pretty(&v))
        })
        .await
    }

    /// `findings`.
    #[tool(
        description = "The diagnosis: each finding with its id, severity, culprit (client, \
        server, edge), status (confirmed or suspected), one-sentence summary, evidence flow ids \
        (read them with get_flow), details, and the fix (the explain page's 'How to fix it'). \
        Returns JSON.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn findings(&self, Parameters(a): Parameters<FindingsArgs>) -> CallToolResult {
        let id = a.id;
        let cleared = a.include_cleared.unwrap_or(false);
        self.with_session(a.session, move |l| {
            data::findings(l, id.as_deref(), cleared).map(|v| pretty(&v))
        })
        .await
    }

    /// `explain`.
    #[tool(
        description = "The page of a finding id (what it means, how mcptap decides it, how to \
        fix it, public reports), as `mcptap explain ID` prints it; without an id, every id with \
        its title. Returns markdown.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn explain(&self, Parameters(a): Parameters<ExplainArgs>) -> CallToolResult {
        match data::explain(a.id.as_deref()) {
            Ok(page) => text(page),
            Err(e) => failed(e),
        }
    }

    /// `report`.
    #[tool(
        description = "The bug report of a capture, as `mcptap report` writes it: verdict, \
        Expected / Actual, a mermaid sequence diagram and the timeline, secrets redacted; ready \
        to paste into the client's or the server's issue tracker. Returns markdown.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn report(&self, Parameters(a): Parameters<SessionArgs>) -> CallToolResult {
        self.with_session(a.session, |l| Ok(data::report(l))).await
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for McptapServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mcptap", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}

/// Runs `mcptap mcp` until its client closes stdin.
pub fn main(args: McpArgs) -> anyhow::Result<ExitCode> {
    let sources = Sources {
        confdir: args.confdir.resolve()?,
        pinned: args.session,
    };
    if let Some(p) = &sources.pinned {
        // Said at once (on stderr, which MCP clients log), not at the first tool call.
        mcptap_store::detect(p)
            .with_context(|| format!("cannot read the session {}", p.display()))?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let service = McptapServer::new(sources)
            .serve(rmcp::transport::stdio())
            .await
            .context("the MCP client did not connect")?;
        service.waiting().await.context("serving MCP")?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an agent reads before it calls anything: each tool's name, description, argument
    /// schema and annotations.
    #[test]
    fn the_tools_an_agent_sees() {
        let server = McptapServer::new(Sources {
            confdir: "/nonexistent/mcptap".into(),
            pinned: None,
        });
        let mut tools = server.tool_router.list_all();
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        insta::assert_json_snapshot!(tools);
    }
}
