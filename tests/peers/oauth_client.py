#!/usr/bin/env python3
"""A headless MCP client using the Python `mcp` SDK's (2.3.x) own OAuth client, for mcptap's tests.

It connects to an OAuth-protected Streamable HTTP MCP endpoint, lets the SDK run the whole
OAuth dance (protected-resource and authorization-server discovery, dynamic registration,
PKCE authorization, token exchange), then negotiates the protocol, lists tools and calls
`echo` with a unique text. It prints ONE JSON line on stdout:

    {"ok": true, "mode": ..., "protocol_version": ..., "tools": [...], "echo": ..., "requests": [...]}
    {"ok": false, "mode": ..., "error": ..., "requests": [...]}

and exits 0 or 1. `requests` lists every HTTP exchange the client made, as sent on the wire
(method, url, status, has_authorization, phase), never tokens.

The authorization step is headless: the redirect handler GETs the authorize URL without
following redirects and reads `code` and `state` from the `Location` header. The loopback
redirect URI is never contacted.

Proxy and trust: every HTTP client here keeps httpx's `trust_env`, so HTTPS_PROXY / HTTP_PROXY /
ALL_PROXY / NO_PROXY from the environment apply (127.0.0.1 and localhost are NOT bypassed
unless NO_PROXY lists them), and each trusts exactly the CA certificates in --cafile.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from mcp.types import TextContent

# The redirect URI registered with the authorization server. Nothing listens there: the
# authorization response is read from the 302's Location header and never followed.
REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"


@dataclass
class MemoryStorage(TokenStorage):
    """In-memory token storage; records when the first token arrived."""

    tokens: OAuthToken | None = None
    client_info: OAuthClientInformationFull | None = None
    token_obtained: bool = False

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        self.token_obtained = True

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@dataclass
class HeadlessBrowser:
    """Plays the user agent: GET /authorize, read the redirect, hand code and state back."""

    http: httpx2.AsyncClient
    pending: AuthorizationCodeResult | None = None

    async def redirect_handler(self, authorization_url: str) -> None:
        response = await self.http.get(authorization_url, follow_redirects=False)
        location = response.headers.get("location")
        if response.status_code not in (301, 302, 303, 307, 308) or not location:
            raise RuntimeError(
                f"authorize endpoint answered {response.status_code} without a redirect: {response.text[:300]!r}"
            )
        query = parse_qs(urlsplit(location).query)
        if "error" in query:
            raise RuntimeError(f"authorization failed: {query['error'][0]}: {query.get('error_description', [''])[0]}")
        if "code" not in query:
            raise RuntimeError(f"authorization redirect carries no code: {location.split('?')[0]}")
        self.pending = AuthorizationCodeResult(
            code=query["code"][0],
            state=query.get("state", [None])[0],
            iss=query.get("iss", [None])[0],
        )

    async def callback_handler(self) -> AuthorizationCodeResult:
        if self.pending is None:
            raise RuntimeError("callback_handler called before redirect_handler produced a code")
        result, self.pending = self.pending, None
        return result


@dataclass
class WireLog:
    """What this client put on the wire, as seen by httpx event hooks (after auth was applied)."""

    storage: MemoryStorage
    mcp_url: httpx2.URL
    drop_auth_after_token: bool
    entries: list[dict[str, Any]] = field(default_factory=list)

    def _is_mcp(self, url: httpx2.URL) -> bool:
        return (url.scheme, url.host, url.port, url.path.rstrip("/")) == (
            self.mcp_url.scheme,
            self.mcp_url.host,
            self.mcp_url.port,
            self.mcp_url.path.rstrip("/"),
        )

    async def on_request(self, request: httpx2.Request) -> None:
        # Request hooks run after the auth flow set Authorization, just before sending, so
        # removing it here reproduces the "token obtained but not sent" client bug exactly.
        dropped = False
        if (
            self.drop_auth_after_token
            and self.storage.token_obtained
            and self._is_mcp(request.url)
            and "authorization" in request.headers
        ):
            del request.headers["authorization"]
            dropped = True
        request.extensions["mcptap_log_index"] = len(self.entries)
        self.entries.append(
            {
                "method": request.method,
                "url": str(request.url.copy_with(query=None)),
                "rpc_method": _rpc_method(request) if self._is_mcp(request.url) else None,
                "status": None,
                "has_authorization": "authorization" in request.headers,
                "auth_dropped": dropped,
                "after_token": self.storage.token_obtained,
            }
        )

    async def on_response(self, response: httpx2.Response) -> None:
        index = response.request.extensions.get("mcptap_log_index")
        if isinstance(index, int) and index < len(self.entries):
            self.entries[index]["status"] = response.status_code


def _rpc_method(request: httpx2.Request) -> str | None:
    """The JSON-RPC method of a POST body, if it is already in memory and parses."""
    if request.method != "POST":
        return None
    try:
        parsed = json.loads(request.content)
    except (httpx2.RequestNotRead, ValueError):
        return None
    method = parsed.get("method") if isinstance(parsed, dict) else None
    return method if isinstance(method, str) else None


def ssl_context(cafile: str) -> ssl.SSLContext:
    """Trust exactly the certificates in `cafile` (no system store)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=cafile)
    return ctx


def describe(exc: BaseException) -> str:
    """One line naming every leaf exception (exception groups flattened)."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"


async def run(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Connect, list tools, call echo; fill `result` as it goes, so a failure still reports."""
    verify = ssl_context(args.cafile)
    timeout = httpx2.Timeout(args.timeout, read=args.timeout)
    storage = MemoryStorage()
    log = WireLog(storage=storage, mcp_url=httpx2.URL(args.url), drop_auth_after_token=args.drop_auth_after_token)
    hooks: dict[str, list[Callable[..., Any]]] = {"request": [log.on_request], "response": [log.on_response]}
    # The SDK's default `mode="auto"` probes `server/discover` (stateless 2026-07-28 protocol)
    # and falls back to `initialize`; "legacy" forces the initialize handshake with a session.
    sdk_mode = "legacy" if args.mode == "legacy" else "auto"
    echo_text = f"mcptap-{uuid.uuid4().hex}"
    result.update(sdk_mode=sdk_mode, requests=log.entries, token_obtained=False)

    try:
        # A separate client plays the browser, with the same trust and proxy settings.
        async with httpx2.AsyncClient(verify=verify, timeout=timeout, event_hooks=hooks) as browser_http:
            browser = HeadlessBrowser(browser_http)
            oauth = OAuthClientProvider(
                server_url=args.url,
                client_metadata=OAuthClientMetadata(
                    client_name="mcptap-test-client",
                    redirect_uris=[REDIRECT_URI],  # type: ignore[list-item]
                    grant_types=["authorization_code", "refresh_token"],
                    response_types=["code"],
                    token_endpoint_auth_method=args.token_endpoint_auth_method,
                ),
                storage=storage,
                redirect_handler=browser.redirect_handler,
                callback_handler=browser.callback_handler,
            )
            # --no-auth: a process that lost its stored token and has no way to log in (the
            # restart case of token-not-sent): it goes bare, gets 401 and gives up.
            auth = None if args.no_auth else oauth
            async with httpx2.AsyncClient(auth=auth, verify=verify, timeout=timeout, event_hooks=hooks) as http:
                transport = streamable_http_client(args.url, http_client=http)
                async with Client(transport, mode=sdk_mode) as client:
                    result["protocol_version"] = client.protocol_version
                    listed = await client.list_tools()
                    result["tools"] = sorted(tool.name for tool in listed.tools)
                    called = await client.call_tool("echo", {"text": echo_text})
                    if called.is_error:
                        raise RuntimeError(f"tools/call echo returned an error: {called.content!r}")
                    texts = [block.text for block in called.content if isinstance(block, TextContent)]
                    result["echo"] = texts[0] if texts else None
                    if result["echo"] != echo_text:
                        raise RuntimeError(f"echo returned {result['echo']!r}, expected {echo_text!r}")
        result["ok"] = True
    finally:
        result["token_obtained"] = storage.token_obtained


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", metavar="URL", help="the MCP endpoint, e.g. https://localhost:8443/mcp")
    p.add_argument("--cafile", required=True, help="PEM bundle of the CA certificates to trust (only these)")
    p.add_argument(
        "--mode",
        choices=["stateless", "legacy"],
        default="stateless",
        help="stateless: the SDK default (mode='auto': server/discover, 2026-07-28, no session); "
        "legacy: initialize handshake, Mcp-Session-Id, GET SSE stream, closing DELETE",
    )
    p.add_argument(
        "--drop-auth-after-token",
        action="store_true",
        help="remove Authorization from every request to the MCP endpoint once a token was obtained "
        "(reproduces the 'token-not-sent' client bug)",
    )
    p.add_argument(
        "--no-auth",
        action="store_true",
        help="connect without the OAuth provider, as a restarted process that lost its stored token",
    )
    p.add_argument(
        "--token-endpoint-auth-method",
        choices=["client_secret_post", "client_secret_basic", "none"],
        default="client_secret_post",
        help="requested at registration and used at /token (default client_secret_post)",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="overall deadline in seconds (default 30)")
    return p.parse_args(argv)


def emit(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()

    # Last resort: whatever hangs (a stuck cancel, a blocking close), the process ends.
    def watchdog() -> None:
        emit({"ok": False, "mode": args.mode, "error": f"watchdog: no result after {args.timeout + 5:.0f}s"})
        os._exit(1)

    timer = threading.Timer(args.timeout + 5, watchdog)
    timer.daemon = True
    timer.start()

    result: dict[str, Any] = {"ok": False, "mode": args.mode}

    async def bounded() -> None:
        with anyio.fail_after(args.timeout):
            await run(args, result)

    try:
        anyio.run(bounded)
    except TimeoutError:
        result["ok"] = False
        result["error"] = f"timed out after {args.timeout}s"
    except BaseException as exc:  # noqa: BLE001 - report every failure as JSON
        traceback.print_exc(file=sys.stderr)
        result["ok"] = False
        result["error"] = describe(exc)
    result["elapsed_s"] = round(time.monotonic() - started, 3)
    timer.cancel()
    emit(result)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
