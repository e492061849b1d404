// A stdio MCP client that reaches an OAuth-protected HTTP server through the real mcp-remote
// (npm `mcp-remote`), for mcptap's tests:
//
//     node mcp_remote_client.mjs MCP_URL TEXT [MCP_REMOTE_ARG...]
//
// It starts `mcp-remote MCP_URL --enable-proxy MCP_REMOTE_ARG...` as its child with the TS SDK's
// `StdioClientTransport` (as Claude Desktop or Cursor would), connects a `Client` to it, lists the
// tools, calls `echo` with TEXT, closes (which ends mcp-remote), and prints ONE JSON line:
//
//     {"ok": true, "tools": [...], "echo": ..., "result": ..., "mcp_remote_stderr": ...}
//     {"ok": false, "error": ..., "mcp_remote_stderr": ...}
//
// (`mcp_remote_stderr` is mcp-remote's log, verbose with `--debug`) and exits 0 or 1.
//
// mcp-remote runs the OAuth dance itself: it discovers, registers, opens the authorize URL in
// "the browser" (whatever BROWSER or xdg-open the environment provides) and waits for the
// redirect on its loopback callback server. `--enable-proxy` makes it send its requests through
// HTTPS_PROXY; it trusts NODE_EXTRA_CA_CERTS. Both come from the environment, which the child
// gets whole (the SDK passes only a handful of variables by default). Nothing here knows about
// mcptap. A watchdog ends everything after WATCHDOG_MS.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const WATCHDOG_MS = 45_000;
const here = path.dirname(fileURLToPath(import.meta.url));
const proxyJs = path.join(here, 'node_modules', 'mcp-remote', 'dist', 'proxy.js');

const [url, text, ...extra] = process.argv.slice(2);
let stderr = '';
let transport;
let finished = false;

// Prints the one JSON line, once.
function finish(out) {
  if (finished) return;
  finished = true;
  out.mcp_remote_stderr = stderr.slice(0, 262144);
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exitCode = out.ok ? 0 : 1;
}

async function main() {
  if (!url || !text) throw new Error('usage: mcp_remote_client.mjs MCP_URL TEXT [MCP_REMOTE_ARG...]');
  transport = new StdioClientTransport({
    command: process.execPath,
    args: [proxyJs, url, '--enable-proxy', ...extra],
    env: { ...process.env },
    stderr: 'pipe',
  });
  transport.stderr.on('data', (chunk) => {
    stderr += chunk.toString();
  });
  const client = new Client({ name: 'mcptap-mcp-remote-test-client', version: '1.0.0' });
  // mcp-remote answers `initialize` only once it has logged in and connected upstream.
  await client.connect(transport, { timeout: WATCHDOG_MS - 5_000 });
  const tools = await client.listTools();
  const result = await client.callTool({ name: 'echo', arguments: { text } });
  const echoed = (result.content || []).filter((c) => c.type === 'text').map((c) => c.text).join('');
  await client.close();
  return {
    ok: echoed === text,
    server: client.getServerVersion() ?? null,
    tools: tools.tools.map((t) => t.name),
    echo: echoed,
    result,
  };
}

const watchdog = setTimeout(() => {
  finish({ ok: false, error: `no result after ${WATCHDOG_MS} ms` });
  transport?.close().finally(() => process.exit(1));
}, WATCHDOG_MS);
try {
  finish(await main());
} catch (e) {
  await transport?.close().catch(() => {});
  finish({ ok: false, error: String((e && e.stack) || e) });
}
clearTimeout(watchdog);
