// The client that mcptap's conformance test (tests/it/conformance.rs) runs under the official
// MCP conformance suite (npm `@modelcontextprotocol/conformance`):
//
//     node conformance_client.mjs [--fault NAME] SERVER_URL
//
// The suite starts a scenario's servers, then runs this with the scenario's MCP URL appended, the
// scenario's name in MCP_CONFORMANCE_SCENARIO and, for scenarios that hand the client
// credentials, a JSON object in MCP_CONFORMANCE_CONTEXT. It exits 0 when the scenario's flow
// completed, 1 otherwise (the suite decides pass or fail from what its servers saw).
//
// The healthy client is a plain-JavaScript port of the suite's own reference client
// (examples/clients/typescript/everything-client.ts and its helpers at tag v0.1.16, MIT
// licensed), which the npm package does not ship: the TypeScript MCP SDK's `auth()` drives
// discovery, registration (or a client ID metadata document URL), PKCE authorization and the
// token exchange; the SDK's ClientCredentialsProvider and PrivateKeyJwtProvider drive the
// client-credentials grants; the cross-app-access flow (token exchange at the IdP for an ID-JAG,
// then a jwt-bearer grant) is written out by hand as in the reference.
//
// `--fault NAME` turns it into one of the suite's own broken example clients, each of which the
// suite is known to fail on a named check:
//
//     bad-prm         reads protected-resource metadata at the root well-known URL, ignoring
//                     resource_metadata in the challenge          (auth/metadata-default)
//     ignore-scope    drops the scope of the WWW-Authenticate challenge
//                                                                 (auth/scope-from-www-authenticate)
//     partial-scopes  always asks for `mcp:basic`                 (auth/scope-from-scopes-supported)
//     ignore-403      re-authorizes on 401 only, not on 403 insufficient_scope
//                                                                 (auth/scope-step-up)
//     no-cimd         registers dynamically where a metadata document URL was offered
//                                                                 (auth/basic-cimd)
//     no-retry-limit  re-authorizes on every 401/403 (bounded here at 8 rounds, so the test
//                     stays bounded; the suite fails it past 3)   (auth/scope-retry-limit)
//     no-pkce         authorizes and redeems the code without PKCE (auth/metadata-default)
//     attempts-dcr    ignores the pre-registered credentials of the context and registers
//                     dynamically where the server offers no registration (auth/pre-registration)
//
// and one of mcptap's own, the case mcptap exists for (the suite has no check of its own for it,
// only the client's failure):
//
//     drop-token      once authorized, sends the next MCP request without its token, meets 401
//                     and gives up, as Claude Code does with a blanked stored token
//                                                                 (auth/metadata-default)
//     unsent-token    obtains a token and never sends it: the retry of the challenged request
//                     goes out bare, meets 401 again, and the client gives up
//                                                                 (auth/metadata-default)
//
// Proxy and trust are the environment's: under `mcptap run`, its Node preload (or
// NODE_USE_ENV_PROXY) sends `fetch` through HTTP_PROXY. Nothing here knows about mcptap.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
  auth,
  extractWWWAuthenticateParams,
  UnauthorizedError,
} from '@modelcontextprotocol/sdk/client/auth.js';
import {
  ClientCredentialsProvider,
  PrivateKeyJwtProvider,
} from '@modelcontextprotocol/sdk/client/auth-extensions.js';

/** The URL-based client ID the reference client offers when CIMD is supported. */
const CIMD_CLIENT_METADATA_URL = 'https://conformance-test.local/client-metadata.json';
const REDIRECT_URI = 'http://localhost:3000/callback';
/** Re-authorization rounds of the `no-retry-limit` fault before it gives up anyway. */
const NO_LIMIT_CAP = 8;

const FAULTS = [
  'bad-prm',
  'ignore-scope',
  'partial-scopes',
  'ignore-403',
  'no-cimd',
  'no-retry-limit',
  'no-pkce',
  'attempts-dcr',
  'drop-token',
  'unsent-token',
];

/** The reference client's OAuth provider: in memory, and it plays the browser. */
class ConformanceOAuthProvider {
  constructor(redirectUrl, clientMetadata, clientMetadataUrl) {
    this._redirectUrl = redirectUrl;
    this._clientMetadata = clientMetadata;
    this._clientMetadataUrl = clientMetadataUrl;
  }
  get redirectUrl() {
    return this._redirectUrl;
  }
  get clientMetadata() {
    return this._clientMetadata;
  }
  get clientMetadataUrl() {
    return this._clientMetadataUrl;
  }
  clientInformation() {
    return this._clientInformation;
  }
  saveClientInformation(info) {
    this._clientInformation = info;
  }
  tokens() {
    return this._tokens;
  }
  saveTokens(tokens) {
    this._tokens = tokens;
  }
  // The scenario's authorization server approves at once and answers 302 to the redirect URI;
  // the code is read from `Location` and the redirect URI is never contacted.
  async redirectToAuthorization(authorizationUrl) {
    const response = await fetch(authorizationUrl.toString(), { redirect: 'manual' });
    const location = response.headers.get('location');
    if (!location) {
      throw new Error(`no redirect from ${authorizationUrl.origin}${authorizationUrl.pathname}`);
    }
    const code = new URL(location).searchParams.get('code');
    if (!code) throw new Error('no code in the authorization redirect');
    this._authCode = code;
  }
  getAuthCode() {
    if (!this._authCode) throw new Error('no authorization code');
    return this._authCode;
  }
  saveCodeVerifier(v) {
    this._codeVerifier = v;
  }
  codeVerifier() {
    if (!this._codeVerifier) throw new Error('no code verifier saved');
    return this._codeVerifier;
  }
}

/** The reference client's 401/403 handler, with the faults that change it. */
async function handle401(response, provider, next, serverUrl, fault) {
  if (fault === 'ignore-403' && response.status !== 401) return;
  let { resourceMetadataUrl, scope } = extractWWWAuthenticateParams(response);
  if (fault === 'bad-prm') {
    resourceMetadataUrl = new URL('/.well-known/oauth-protected-resource', new URL(serverUrl).origin);
    scope = undefined;
  } else if (fault === 'ignore-scope') {
    scope = undefined;
  } else if (fault === 'partial-scopes') {
    scope = 'mcp:basic';
  }
  let result = await auth(provider, { serverUrl, resourceMetadataUrl, scope, fetchFn: next });
  if (result === 'REDIRECT') {
    // The provider already holds the code (it read the redirect); go straight to the token.
    const authorizationCode = provider.getAuthCode();
    result = await auth(provider, {
      serverUrl,
      resourceMetadataUrl,
      scope,
      authorizationCode,
      fetchFn: next,
    });
    if (result !== 'AUTHORIZED') {
      throw new UnauthorizedError(`Authentication failed with result: ${result}`);
    }
  }
}

/** A fetch that adds the provider's token and re-authorizes once on 401/403 (the reference's
 * `withOAuthRetryWithProvider`); `no-retry-limit` re-authorizes until it stops being refused;
 * `drop-token` and `unsent-token` stop adding the token, and give up at the next refusal. */
function withOAuthRetry(provider, baseUrl, fault) {
  return (next) => async (input, init) => {
    const makeRequest = async () => {
      const headers = new Headers(init?.headers);
      const tokens = provider.tokens();
      if (tokens && !provider.dropToken) {
        headers.set('Authorization', `Bearer ${tokens.access_token}`);
      }
      return next(input, { ...init, headers });
    };
    let response = await makeRequest();
    const refused = () => response.status === 401 || response.status === 403;
    if (provider.dropToken && refused()) {
      throw new UnauthorizedError(`the token was dropped, and ${response.status} answered`);
    }
    const rounds = fault === 'no-retry-limit' ? NO_LIMIT_CAP : 1;
    for (let round = 0; round < rounds && refused(); round++) {
      await handle401(response, provider, next, baseUrl, fault);
      if (fault === 'unsent-token') provider.dropToken = true;
      response = await makeRequest();
    }
    if (refused()) {
      const url = typeof input === 'string' ? input : input.toString();
      throw new UnauthorizedError(`Authentication failed for ${url}`);
    }
    // Authorized once: from the next request on, the token stays home.
    if (fault === 'drop-token' && provider.tokens()) provider.dropToken = true;
    return response;
  };
}

async function connectListCall(serverUrl, transportOptions, name, callTool) {
  const client = new Client({ name, version: '1.0.0' }, { capabilities: {} });
  const transport = new StreamableHTTPClientTransport(new URL(serverUrl), transportOptions);
  await client.connect(transport);
  await client.listTools();
  if (callTool) await client.callTool({ name: 'test-tool', arguments: {} });
  await transport.close();
}

function context(expected) {
  const raw = process.env.MCP_CONFORMANCE_CONTEXT;
  if (!raw) throw new Error('MCP_CONFORMANCE_CONTEXT not set');
  const ctx = JSON.parse(raw);
  if (ctx.name !== expected) throw new Error(`expected the ${expected} context, got ${ctx.name}`);
  return ctx;
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/** Authorization code with PKCE, as the SDK does it (every auth/* scenario but those below). */
async function runAuthClient(serverUrl, fault) {
  if (fault === 'no-pkce') return runNoPkceClient(serverUrl);
  const name = fault ? `test-auth-client-${fault}` : 'test-auth-client';
  const provider = new ConformanceOAuthProvider(
    REDIRECT_URI,
    { client_name: name, redirect_uris: [REDIRECT_URI] },
    fault === 'no-cimd' || fault === 'attempts-dcr' ? undefined : CIMD_CLIENT_METADATA_URL,
  );
  const oauthFetch = withOAuthRetry(provider, new URL(serverUrl), fault)(fetch);
  // The broken clients that stop after listing tools in the suite do so here too.
  const callTool = !fault || ['ignore-403', 'no-cimd', 'attempts-dcr'].includes(fault);
  await connectListCall(serverUrl, { fetch: oauthFetch }, name, callTool);
}

/** Pre-registration: the client ID and secret come in the context; no registration. */
async function runPreRegistration(serverUrl) {
  const ctx = context('auth/pre-registration');
  const provider = new ConformanceOAuthProvider(REDIRECT_URI, {
    client_name: 'conformance-pre-registration',
    redirect_uris: [REDIRECT_URI],
  });
  provider.saveClientInformation({
    client_id: ctx.client_id,
    client_secret: ctx.client_secret,
    redirect_uris: [REDIRECT_URI],
  });
  const oauthFetch = withOAuthRetry(provider, new URL(serverUrl), undefined)(fetch);
  await connectListCall(serverUrl, { fetch: oauthFetch }, 'conformance-pre-registration', false);
}

/** Client credentials, the client authenticated by a private_key_jwt assertion. */
async function runClientCredentialsJwt(serverUrl) {
  const ctx = context('auth/client-credentials-jwt');
  const authProvider = new PrivateKeyJwtProvider({
    clientId: ctx.client_id,
    privateKey: ctx.private_key_pem,
    algorithm: ctx.signing_algorithm || 'ES256',
  });
  await connectListCall(serverUrl, { authProvider }, 'conformance-client-credentials-jwt', false);
}

/** Client credentials, the client authenticated by client_secret_basic. */
async function runClientCredentialsBasic(serverUrl) {
  const ctx = context('auth/client-credentials-basic');
  const authProvider = new ClientCredentialsProvider({
    clientId: ctx.client_id,
    clientSecret: ctx.client_secret,
  });
  await connectListCall(serverUrl, { authProvider }, 'conformance-client-credentials-basic', false);
}

/** Cross-app access (SEP-990): the IdP's ID token is exchanged at the IdP for an ID-JAG, which
 * the MCP server's authorization server takes in a jwt-bearer grant. */
async function runCrossAppAccess(serverUrl) {
  const ctx = context('auth/cross-app-access-complete-flow');
  const prmUrl = new URL('/.well-known/oauth-protected-resource/mcp', serverUrl);
  const prm = await getJson(prmUrl, 'protected-resource metadata');
  const asUrl = new URL('/.well-known/oauth-authorization-server', prm.authorization_servers[0]);
  const as = await getJson(asUrl, 'authorization server metadata');
  if (!(as.grant_types_supported || []).includes('urn:ietf:params:oauth:grant-type:jwt-bearer')) {
    throw new Error('the authorization server does not support the jwt-bearer grant');
  }
  const exchange = await postForm(ctx.idp_token_endpoint, {}, {
    grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
    requested_token_type: 'urn:ietf:params:oauth:token-type:id-jag',
    audience: as.issuer,
    resource: prm.resource,
    subject_token: ctx.idp_id_token,
    subject_token_type: 'urn:ietf:params:oauth:token-type:id_token',
    client_id: ctx.idp_client_id,
  });
  const basic = Buffer.from(
    `${encodeURIComponent(ctx.client_id)}:${encodeURIComponent(ctx.client_secret)}`,
  ).toString('base64');
  const token = await postForm(as.token_endpoint, { Authorization: `Basic ${basic}` }, {
    grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer',
    assertion: exchange.access_token,
  });
  await connectListCall(
    serverUrl,
    { requestInit: { headers: { Authorization: `Bearer ${token.access_token}` } } },
    'conformance-cross-app-access',
    true,
  );
}

/** The suite's `auth-test-no-pkce` client: the whole dance by hand, without PKCE. */
async function runNoPkceClient(serverUrl) {
  let tokens;
  const oauthFetch = async (input, init) => {
    const makeRequest = () => {
      const headers = new Headers(init?.headers);
      if (tokens) headers.set('Authorization', `Bearer ${tokens.access_token}`);
      return fetch(input, { ...init, headers });
    };
    let response = await makeRequest();
    if (response.status === 401) {
      const { resourceMetadataUrl } = extractWWWAuthenticateParams(response);
      if (!resourceMetadataUrl) throw new Error('no resource_metadata in WWW-Authenticate');
      const prm = await getJson(resourceMetadataUrl, 'protected-resource metadata');
      const asUrl = new URL('/.well-known/oauth-authorization-server', prm.authorization_servers[0]);
      const as = await getJson(asUrl, 'authorization server metadata');
      const reg = await fetch(as.registration_endpoint, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ client_name: 'test-auth-client-no-pkce', redirect_uris: [REDIRECT_URI] }),
      });
      if (!reg.ok) throw new Error(`registration answered ${reg.status}`);
      const client = await reg.json();
      const authUrl = new URL(as.authorization_endpoint);
      authUrl.searchParams.set('response_type', 'code');
      authUrl.searchParams.set('client_id', client.client_id);
      authUrl.searchParams.set('redirect_uri', REDIRECT_URI);
      authUrl.searchParams.set('state', 'test-state');
      const authorized = await fetch(authUrl.toString(), { redirect: 'manual' });
      const location = authorized.headers.get('location');
      const code = location && new URL(location).searchParams.get('code');
      if (!code) throw new Error('no code from the authorization endpoint');
      tokens = await postForm(as.token_endpoint, {}, {
        grant_type: 'authorization_code',
        code,
        redirect_uri: REDIRECT_URI,
        client_id: client.client_id,
      });
      response = await makeRequest();
    }
    return response;
  };
  await connectListCall(serverUrl, { fetch: oauthFetch }, 'test-auth-client-no-pkce', false);
}

async function getJson(url, what) {
  const r = await fetch(url.toString());
  if (!r.ok) throw new Error(`${what} answered ${r.status}`);
  return r.json();
}

async function postForm(url, headers, form) {
  const r = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(form),
  });
  if (!r.ok) throw new Error(`POST ${url} answered ${r.status}: ${await r.text()}`);
  return r.json();
}

const SPECIAL = {
  'auth/pre-registration': runPreRegistration,
  'auth/client-credentials-jwt': runClientCredentialsJwt,
  'auth/client-credentials-basic': runClientCredentialsBasic,
  'auth/cross-app-access-complete-flow': runCrossAppAccess,
};

async function main() {
  const args = process.argv.slice(2);
  let fault;
  if (args[0] === '--fault') {
    fault = args[1];
    args.splice(0, 2);
    if (!FAULTS.includes(fault)) throw new Error(`unknown fault ${fault}; one of ${FAULTS}`);
  }
  const scenario = process.env.MCP_CONFORMANCE_SCENARIO;
  const serverUrl = args[0];
  if (!scenario || !serverUrl) {
    throw new Error('usage: MCP_CONFORMANCE_SCENARIO=NAME conformance_client.mjs [--fault F] URL');
  }
  if (scenario === 'auth/pre-registration' && fault === 'attempts-dcr') {
    await runAuthClient(serverUrl, fault);
  } else if (SPECIAL[scenario]) {
    if (fault) throw new Error(`no fault applies to ${scenario}`);
    await SPECIAL[scenario](serverUrl);
  } else if (scenario.startsWith('auth/')) {
    await runAuthClient(serverUrl, fault);
  } else {
    throw new Error(`not an authorization scenario: ${scenario}`);
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error('conformance client:', error);
    process.exit(1);
  },
);
