// A headless MCP client using the TypeScript SDK's (npm `@modelcontextprotocol/sdk` 1.x) own
// OAuth client, for mcptap's tests:
//
//     node ts_oauth_client.mjs MCP_URL [TEXT] [--pause-before-call SECONDS]
//
// It connects with `StreamableHTTPClientTransport` and an `authProvider`; the SDK runs the whole
// OAuth dance (protected-resource and authorization-server discovery, dynamic registration, PKCE
// authorization, token exchange). The authorization step is headless: `redirectToAuthorization`
// GETs the authorize URL without following the redirect and reads `code` (and checks `state`)
// from the `Location` header; the loopback redirect URI is never contacted. Then it connects
// again with the token, lists tools, calls `echo` with TEXT, closes, and prints ONE JSON line.
// `--pause-before-call` waits between the two (e.g. past a short-lived token's expiry, so that
// the SDK meets the server's 401 and refreshes):
//
//     {"ok": true, "protocol_version": ..., "tools": [...], "echo": ..., "result": ...}
//     {"ok": false, "error": ...}
//
// and exits 0 or 1. Proxy and trust are the environment's: under `mcptap run`, its Node preload
// sends `fetch` through HTTPS_PROXY and NODE_EXTRA_CA_CERTS trusts mcptap's CA. Nothing here
// knows about mcptap.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';

const REDIRECT_URI = 'http://127.0.0.1:9/oauth/callback';

class HeadlessProvider {
  constructor() {
    this._state = `st-${process.pid}-${Date.now()}`;
    this.code = undefined;
  }
  get redirectUrl() {
    return REDIRECT_URI;
  }
  get clientMetadata() {
    return {
      client_name: 'mcptap-ts-sdk-test-client',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      // Always explicit (see shared/reference/peers.md).
      token_endpoint_auth_method: 'client_secret_post',
    };
  }
  state() {
    return this._state;
  }
  clientInformation() {
    return this._client;
  }
  saveClientInformation(info) {
    this._client = info;
  }
  tokens() {
    return this._tokens;
  }
  saveTokens(tokens) {
    this._tokens = tokens;
    this.saved = (this.saved || 0) + 1;
  }
  saveCodeVerifier(v) {
    this._verifier = v;
  }
  codeVerifier() {
    if (!this._verifier) throw new Error('no code verifier saved');
    return this._verifier;
  }
  // Plays the browser: the authorization server auto-approves and answers 302 to the redirect
  // URI with code and state.
  async redirectToAuthorization(url) {
    const r = await fetch(url, { redirect: 'manual' });
    const location = r.headers.get('location');
    if (r.status < 300 || r.status >= 400 || !location) {
      throw new Error(`authorize answered ${r.status} without a redirect`);
    }
    const back = new URL(location);
    if (back.searchParams.get('state') !== this._state) {
      throw new Error(`state mismatch in ${back.origin}${back.pathname}`);
    }
    const code = back.searchParams.get('code');
    if (!code) throw new Error(`no code in the redirect: ${back.searchParams.get('error')}`);
    this.code = code;
  }
}

async function connect(url, provider) {
  const client = new Client({ name: 'mcptap-ts-sdk-test-client', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
  await client.connect(transport);
  return { client, transport };
}

async function main() {
  const args = process.argv.slice(2);
  let pause = 0;
  const at = args.indexOf('--pause-before-call');
  if (at >= 0) {
    pause = Number(args[at + 1]);
    args.splice(at, 2);
  }
  const [url, text = `hello-${process.pid}`] = args;
  if (!url || !(pause >= 0)) {
    throw new Error('usage: ts_oauth_client.mjs MCP_URL [TEXT] [--pause-before-call SECONDS]');
  }
  const provider = new HeadlessProvider();
  let session;
  try {
    session = await connect(url, provider);
  } catch (e) {
    if (!(e instanceof UnauthorizedError) || !provider.code) throw e;
    // The first connect stopped at the authorization redirect: exchange the code, connect again.
    const pending = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
    await pending.finishAuth(provider.code);
    session = await connect(url, provider);
  }
  const { client, transport } = session;
  const tools = await client.listTools();
  if (pause > 0) await new Promise((resolve) => setTimeout(resolve, pause * 1000));
  const result = await client.callTool({ name: 'echo', arguments: { text } });
  const echoed = (result.content || []).filter((c) => c.type === 'text').map((c) => c.text).join('');
  // Ends the session (DELETE) when the server gave one.
  await transport.terminateSession().catch(() => {});
  await client.close();
  return {
    ok: echoed === text,
    refreshed: provider.saved > 1,
    protocol_version: transport.protocolVersion ?? null,
    tools: tools.tools.map((t) => t.name),
    echo: echoed,
    result,
  };
}

let out;
try {
  out = await main();
} catch (e) {
  out = { ok: false, error: String((e && e.stack) || e) };
}
process.stdout.write(JSON.stringify(out) + '\n');
process.exitCode = out.ok ? 0 : 1;
