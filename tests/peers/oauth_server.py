#!/usr/bin/env python3
"""An OAuth-protected MCP server built from the Python `mcp` SDK (2.3.x), for mcptap's tests.

The server is its own authorization server: an in-memory provider that auto-approves every
authorization request (no browser, no consent page), supports dynamic client registration,
refresh tokens and revocation. PKCE, redirect-URI and client authentication checks are the
SDK's own. It serves over TLS on 127.0.0.1 with a port chosen by the kernel and prints

    READY <port>

on stdout once it accepts connections. With --jwt its access tokens are RS256 JWTs and the
key set is at /jwks.json. The misbehaviour flags below make it fail in the
ways mcptap's analyzer must recognise; each is small and independent of the others.

Endpoints (all from the SDK): /mcp, /.well-known/oauth-protected-resource/mcp,
/.well-known/oauth-authorization-server, /authorize, /token, /register, /revoke.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import os
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO
from urllib.parse import parse_qs, urlsplit

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from mcp.server.auth.handlers.metadata import ProtectedResourceMetadataHandler
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    OAuthAuthorizationServerProvider,
    RefreshToken,
    TokenError,
    construct_redirect_uri,
)
from mcp.server.auth.routes import build_resource_metadata_url, cors_middleware
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken, ProtectedResourceMetadata
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SCOPE = "mcp"
MCP_PATH = "/mcp"
AUTH_CODE_TTL = 300
REFRESH_TOKEN_TTL = 24 * 3600

# RFC 8707 §2.2: a refresh request may name the resource its new access token is for; set by
# `RefreshResource` for the provider's `exchange_refresh_token` (the SDK does not pass it on).
REFRESH_RESOURCE: contextvars.ContextVar[str | None] = contextvars.ContextVar("refresh_resource", default=None)

# ASGI scope key under which the request logger hands its record to inner middleware.
LOG_RECORD_KEY = "mcptap.log_record"


# --------------------------------------------------------------------------------------------
# Authorization server: an in-memory, auto-approving provider.
# --------------------------------------------------------------------------------------------


@dataclass
class InMemoryProvider(OAuthAuthorizationServerProvider[AuthorizationCode, RefreshToken, AccessToken]):
    """Implements the SDK's `OAuthAuthorizationServerProvider` protocol in memory.

    `authorize()` approves at once: it mints a code and returns the client's redirect URI
    carrying `code` and `state`, which the SDK answers with a 302. Access tokens expire after
    `token_ttl` seconds on the server side whether or not the token response says so.
    """

    token_ttl: int
    send_expires_in: bool
    # --jwt: access tokens are RS256 JWTs validated from their claims alone (see `JwtTokens`).
    jwt: JwtTokens | None = None
    clients: dict[str, OAuthClientInformationFull] = field(default_factory=dict)
    codes: dict[str, AuthorizationCode] = field(default_factory=dict)
    access_tokens: dict[str, AccessToken] = field(default_factory=dict)
    refresh_tokens: dict[str, RefreshToken] = field(default_factory=dict)
    # access token -> the refresh token issued with it (for revocation of the pair)
    pairs: dict[str, str] = field(default_factory=dict)

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        assert client_info.client_id is not None
        self.clients[client_info.client_id] = client_info

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        assert client.client_id is not None
        code = secrets.token_urlsafe(32)
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=params.scopes or [SCOPE],
            expires_at=time.time() + AUTH_CODE_TTL,
            client_id=client.client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
            subject="test-user",
        )
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> AuthorizationCode | None:
        code = self.codes.get(authorization_code)
        if code is None or code.client_id != client.client_id:
            return None
        return code

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        # Codes are single-use (OAuth 2.1 §4.1.3).
        if self.codes.pop(authorization_code.code, None) is None:
            raise TokenError(error="invalid_grant", error_description="authorization code already used")
        return self._issue(
            client_id=authorization_code.client_id,
            scopes=authorization_code.scopes,
            resource=authorization_code.resource,
            subject=authorization_code.subject,
        )

    async def load_refresh_token(self, client: OAuthClientInformationFull, refresh_token: str) -> RefreshToken | None:
        token = self.refresh_tokens.get(refresh_token)
        if token is None or token.client_id != client.client_id:
            return None
        return token

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: RefreshToken, scopes: list[str]
    ) -> OAuthToken:
        # Rotate: the old refresh token dies with this exchange.
        if self.refresh_tokens.pop(refresh_token.token, None) is None:
            raise TokenError(error="invalid_grant", error_description="refresh token already used")
        return self._issue(
            client_id=refresh_token.client_id,
            scopes=scopes or refresh_token.scopes,
            resource=refresh_token.resource,
            subject=refresh_token.subject,
            access_resource=REFRESH_RESOURCE.get(),
        )

    async def load_access_token(self, token: str) -> AccessToken | None:
        if self.jwt is not None:
            return self.jwt.validate(token)
        access = self.access_tokens.get(token)
        if access is None:
            return None
        if access.expires_at is not None and access.expires_at < time.time():
            self.access_tokens.pop(token, None)
            return None
        return access

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        self.access_tokens.pop(token.token, None)
        self.refresh_tokens.pop(token.token, None)
        paired = self.pairs.pop(token.token, None)
        if paired is not None:
            self.refresh_tokens.pop(paired, None)

    def issued(self, token: str) -> bool:
        """Whether this server ever issued `token` as an access token (and has not revoked it)."""
        return token in self.access_tokens

    def _issue(
        self,
        *,
        client_id: str,
        scopes: list[str],
        resource: str | None,
        subject: str | None,
        access_resource: str | None = None,
    ) -> OAuthToken:
        """Tokens for `resource`; the access token for `access_resource` instead when given (a
        refresh naming another resource: the refresh token keeps its own)."""
        now = int(time.time())
        access = "at_" + secrets.token_urlsafe(32)
        access_resource = access_resource or resource
        if self.jwt is not None:
            access = self.jwt.issue(
                client_id=client_id, scopes=scopes, resource=access_resource, now=now, ttl=self.token_ttl
            )
        refresh = "rt_" + secrets.token_urlsafe(32)
        self.access_tokens[access] = AccessToken(
            token=access,
            client_id=client_id,
            scopes=scopes,
            expires_at=now + self.token_ttl,
            resource=access_resource,
            subject=subject,
        )
        self.refresh_tokens[refresh] = RefreshToken(
            token=refresh,
            client_id=client_id,
            scopes=scopes,
            expires_at=now + REFRESH_TOKEN_TTL,
            resource=resource,
            subject=subject,
        )
        self.pairs[access] = refresh
        return OAuthToken(
            access_token=access,
            token_type="Bearer",
            expires_in=self.token_ttl if self.send_expires_in else None,
            scope=" ".join(scopes),
            refresh_token=refresh,
        )


@dataclass
class JwtTokens:
    """--jwt: access tokens are RS256 JWTs (`iss`, `sub`, `aud` = the resource asked for, `exp`,
    `iat`, `client_id`, `scope`), validated from the token alone, as a resource server that only
    holds the authorization server's public key would. The key set is served at /jwks.json and
    named as `jwks_uri` in the authorization-server metadata.

    The faults turn one check off each: `check_signature` (--jwt-signature-not-checked: the
    claims are read without verifying the signature), `check_expiry` (--expiry-not-checked),
    `check_audience` (--audience-not-checked: any `aud` is taken as this resource).
    """

    issuer: str
    resource: str
    check_signature: bool = True
    check_expiry: bool = True
    check_audience: bool = True
    kid: str = field(default_factory=lambda: secrets.token_hex(8))
    key: Any = field(default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwks(self) -> dict[str, Any]:
        public = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        public.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [public]}

    def issue(self, *, client_id: str, scopes: list[str], resource: str | None, now: int, ttl: int) -> str:
        claims = {
            "iss": self.issuer,
            "sub": "test-user",
            "aud": resource or self.resource,
            "iat": now,
            "exp": now + ttl,
            "client_id": client_id,
            "scope": " ".join(scopes),
            "jti": secrets.token_urlsafe(12),
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})

    def validate(self, token: str) -> AccessToken | None:
        try:
            claims = jwt.decode(
                token,
                self.key.public_key(),
                algorithms=["RS256"],
                # The audience is compared below, where --audience-not-checked can skip it.
                options={"verify_signature": self.check_signature, "verify_exp": self.check_expiry, "verify_aud": False},
            )
        except jwt.PyJWTError:
            return None
        if claims.get("iss") != self.issuer:
            return None
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id", "")),
            scopes=str(claims.get("scope", "")).split(),
            # The SDK's bearer middleware refuses a token past `expires_at` and one whose
            # `resource` is not this server's: hand it the claims, or what the fault pretends.
            expires_at=int(claims["exp"]) if self.check_expiry and "exp" in claims else None,
            resource=str(claims.get("aud")) if self.check_audience else self.resource,
            subject=str(claims.get("sub", "")),
        )


# --------------------------------------------------------------------------------------------
# ASGI middleware for the misbehaviour flags and the request log.
# --------------------------------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class StripWwwAuthenticate:
    """--no-www-authenticate: drop WWW-Authenticate from every 401 (the body is left as is)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_stripped(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                message = dict(message)
                message["headers"] = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"www-authenticate"]
            await send(message)

        await self.app(scope, receive, send_stripped)


class RejectOwnTokens:
    """--reject-own-tokens: /mcp answers 401 invalid_token to any bearer token this server issued.

    Everything else (metadata, registration, /token) keeps working, so the client completes the
    dance and then sees its fresh token refused: the "fresh-token-rejected" failure mode.
    """

    def __init__(self, app: ASGIApp, provider: InMemoryProvider, resource_metadata_url: str) -> None:
        self.app = app
        self.provider = provider
        self.resource_metadata_url = resource_metadata_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        authz = _header(scope, b"authorization") if scope["type"] == "http" else None
        if (
            scope["type"] == "http"
            and scope["path"].rstrip("/") == MCP_PATH
            and authz is not None
            and authz.lower().startswith("bearer ")
            and self.provider.issued(authz[7:].strip())
        ):
            description = "token rejected by --reject-own-tokens"
            body = json.dumps({"error": "invalid_token", "error_description": description}).encode()
            challenge = (
                f'Bearer error="invalid_token", error_description="{description}", '
                f'resource_metadata="{self.resource_metadata_url}"'
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"www-authenticate", challenge.encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


class MetadataAsHtml:
    """--metadata-html: every GET under /.well-known/ answers 200 with an HTML page (an SPA's
    catch-all route in front of the server)."""

    PAGE = b"<!doctype html><html><head><title>App</title></head><body><div id=root></div></body></html>"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"].startswith("/.well-known/"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/html; charset=utf-8"),
                        (b"content-length", str(len(self.PAGE)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": self.PAGE})
            return
        await self.app(scope, receive, send)


class PatchAsMetadata:
    """Rewrites the authorization-server metadata document: `patch(doc)` edits it in place
    (--no-s256: `plain` PKCE only; --jwt: `jwks_uri` added)."""

    def __init__(self, app: ASGIApp, patch: Callable[[dict[str, Any]], None]) -> None:
        self.app = app
        self.patch = patch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/.well-known/oauth-authorization-server"):
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        body = bytearray()

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body", False):
                return
            out = bytes(body)
            try:
                doc = json.loads(out)
                self.patch(doc)
                out = json.dumps(doc).encode()
            except ValueError:
                pass
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(out)).encode()))
            await send({"type": "http.response.start", "status": start.get("status", 200), "headers": headers})
            await send({"type": "http.response.body", "body": out})

        await self.app(scope, receive, capture)


def _json_response(status: int, doc: Any) -> list[Message]:
    body = json.dumps(doc).encode()
    return [
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        },
        {"type": "http.response.body", "body": body},
    ]


def _safe_redirect(uri: str) -> bool:
    """https anywhere, http on loopback only (2025-11-25 authorization §Open Redirection)."""
    parsed = urlsplit(uri)
    if parsed.scheme == "https":
        return bool(parsed.hostname)
    return parsed.scheme == "http" and parsed.hostname in ("localhost", "127.0.0.1", "::1")


async def _read_body(receive: Receive) -> tuple[bytes, Receive]:
    """The request body, and a `receive` that hands the app the same messages again."""
    replay: list[Message] = []
    body = bytearray()
    while True:
        message = await receive()
        replay.append(message)
        if message["type"] != "http.request":
            break
        body.extend(message.get("body", b""))
        if not message.get("more_body", False):
            break

    async def receive_replayed() -> Message:
        if replay:
            return replay.pop(0)
        return await receive()

    return bytes(body), receive_replayed


class RefreshResource:
    """Hands the `resource` of a refresh request (RFC 8707 §2.2) to the provider, which the SDK
    does not: the new access token is then for that resource."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/token":
            await self.app(scope, receive, send)
            return
        body, replayed = await _read_body(receive)
        form = parse_qs(body.decode("latin-1"))
        resource = form.get("resource", [None])[0] if form.get("grant_type") == ["refresh_token"] else None
        token = REFRESH_RESOURCE.set(resource)
        try:
            await self.app(scope, replayed, send)
        finally:
            REFRESH_RESOURCE.reset(token)


class CheckRedirectUris:
    """--check-redirect-uris: dynamic registration refuses, with 400 invalid_redirect_uri, a
    redirect URI that is neither https nor http on loopback (the SDK accepts any URL)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/register":
            await self.app(scope, receive, send)
            return
        body, replayed = await _read_body(receive)
        try:
            uris = json.loads(body).get("redirect_uris") or []
        except (ValueError, AttributeError):
            uris = []
        unsafe = [u for u in uris if not isinstance(u, str) or not _safe_redirect(u)]
        if unsafe:
            for m in _json_response(
                400,
                {"error": "invalid_redirect_uri", "error_description": f"unsafe redirect URI {unsafe[0]!r}"},
            ):
                await send(m)
            return
        await self.app(scope, replayed, send)


class RegistrationManagement:
    """--registration-management: RFC 7592 for dynamic registrations (the SDK has none). A
    registration's answer gains `registration_client_uri` ({public}/register/<client_id>) and
    `registration_access_token`; DELETE on that URI with the token as bearer forgets the client
    (204), with another token 401, for an unknown client 404."""

    def __init__(self, app: ASGIApp, provider: InMemoryProvider, public: str) -> None:
        self.app = app
        self.provider = provider
        self.public = public
        self.tokens: dict[str, str] = {}  # client_id -> registration access token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if scope["method"] == "DELETE" and path.startswith("/register/"):
            client_id = path.removeprefix("/register/")
            expected = self.tokens.get(client_id)
            if expected is None or client_id not in self.provider.clients:
                status = 404
            elif _header(scope, b"authorization") != f"Bearer {expected}":
                status = 401
            else:
                status = 204
                self.provider.clients.pop(client_id, None)
                self.tokens.pop(client_id, None)
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["method"] != "POST" or path != "/register":
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        body = bytearray()

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body", False):
                return
            out = bytes(body)
            status = start.get("status", 200)
            if 200 <= status < 300:
                try:
                    doc = json.loads(out)
                    client_id = doc["client_id"]
                    token = secrets.token_urlsafe(24)
                    self.tokens[client_id] = token
                    doc["registration_client_uri"] = f"{self.public}/register/{client_id}"
                    doc["registration_access_token"] = token
                    out = json.dumps(doc).encode()
                except (ValueError, KeyError):
                    pass
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(out)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": out})

        await self.app(scope, receive, capture)


class LegacyOnly:
    """--legacy-only: a POST /mcp with a bearer token and `MCP-Protocol-Version: 2026-07-28`
    answers 400 as a 2025-11-25 server does (its error is not a modern one); the authorization
    middleware of such a server comes first, so a request without a token still gets 401."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"].rstrip("/") == MCP_PATH
            and _header(scope, b"authorization") is not None
            and _header(scope, b"mcp-protocol-version") == "2026-07-28"
        ):
            error = {"code": -32600, "message": "Bad Request: Unsupported protocol version: 2026-07-28"}
            for m in _json_response(400, {"jsonrpc": "2.0", "id": "server-error", "error": error}):
                await send(m)
            return
        await self.app(scope, receive, send)


class RefuseRegistration:
    """--refuse-dcr: dynamic client registration answers 400 invalid_client_metadata."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/register":
            body = json.dumps(
                {"error": "invalid_client_metadata", "error_description": "registration refused by --refuse-dcr"}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


class RequestLog:
    """--log-requests FILE: one JSON line per HTTP request, written when the response starts.

    Fields: seq (arrival order), t (unix time at arrival), method, path, query_keys (names only),
    status, has_authorization, authorization_scheme, session_id (present?), protocol_version,
    user_agent, www_authenticate (value or null), content_type (response), rpc_method (JSON-RPC
    method(s) of a POST /mcp body) and grant_type (form field of a POST /token body).
    Secrets (tokens, codes, client secrets) are never written.
    """

    BODY_LIMIT = 256 * 1024

    def __init__(self, app: ASGIApp, out: TextIO) -> None:
        self.app = app
        self.out = out
        self.lock = threading.Lock()
        self.seq = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self.lock:
            self.seq += 1
            seq = self.seq
        arrived = time.time()
        logged = False

        # Read small request bodies up front, so the log names the JSON-RPC method even when
        # the app answers without reading the body (the 401 of the auth middleware), then
        # replay them to the app unchanged.
        body = bytearray()
        replay: list[Message] = []
        if scope["method"] == "POST":
            while len(body) <= self.BODY_LIMIT:
                message = await receive()
                replay.append(message)
                if message["type"] != "http.request":
                    break
                body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    break

        async def receive_replayed() -> Message:
            if replay:
                return replay.pop(0)
            return await receive()

        def write(status: int, headers: list[tuple[bytes, bytes]]) -> None:
            nonlocal logged
            if logged:
                return
            logged = True
            response_headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers}
            authz = _header(scope, b"authorization")
            query = scope.get("query_string", b"").decode("latin-1")
            record: dict[str, Any] = {
                "seq": seq,
                "t": round(arrived, 6),
                "method": scope["method"],
                "path": scope["path"],
                "query_keys": sorted({kv.split("=", 1)[0] for kv in query.split("&") if kv}),
                "status": status,
                "has_authorization": authz is not None,
                "authorization_scheme": authz.split(" ", 1)[0] if authz else None,
                "session_id": _header(scope, b"mcp-session-id") is not None,
                "protocol_version": _header(scope, b"mcp-protocol-version"),
                "user_agent": _header(scope, b"user-agent"),
                "www_authenticate": response_headers.get("www-authenticate"),
                "content_type": response_headers.get("content-type"),
                "rpc_method": _rpc_method(scope, bytes(body)),
                "grant_type": _grant_type(scope, bytes(body)),
            }
            line = json.dumps(record, separators=(",", ":"))
            with self.lock:
                self.out.write(line + "\n")
                self.out.flush()

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                write(message["status"], list(message.get("headers", [])))
            await send(message)

        try:
            await self.app(scope, receive_replayed, send_logged)
        finally:
            write(500, [])  # no-op when the response already started


def _rpc_method(scope: Scope, body: bytes) -> str | list[str] | None:
    if scope["method"] != "POST" or scope["path"].rstrip("/") != MCP_PATH or not body:
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if isinstance(parsed, dict):
        method = parsed.get("method")
        return method if isinstance(method, str) else None
    if isinstance(parsed, list):
        return [m["method"] for m in parsed if isinstance(m, dict) and isinstance(m.get("method"), str)]
    return None


def _grant_type(scope: Scope, body: bytes) -> str | None:
    if scope["method"] != "POST" or scope["path"] != "/token" or not body:
        return None
    values = parse_qs(body.decode("latin-1")).get("grant_type")
    return values[0] if values else None


# --------------------------------------------------------------------------------------------
# Assembly.
# --------------------------------------------------------------------------------------------


def build_app(args: argparse.Namespace, public: str, public_port: str) -> ASGIApp:
    """The SDK's Starlette app for `public` (e.g. https://localhost:4431), wrapped per the flags."""
    resource = f"{public}{MCP_PATH}"
    jwt_tokens = (
        JwtTokens(
            issuer=public,
            resource=resource,
            check_signature=not args.jwt_signature_not_checked,
            check_expiry=not args.expiry_not_checked,
            check_audience=not args.audience_not_checked,
        )
        if args.jwt
        else None
    )
    provider = InMemoryProvider(token_ttl=args.token_ttl, send_expires_in=not args.no_expires_in, jwt=jwt_tokens)
    server = MCPServer(
        "mcptap-test-server",
        auth_server_provider=provider,
        auth=AuthSettings(
            # Strings, not AnyHttpUrl: AuthSettings preserves an empty path, so the issuer has no
            # trailing slash (RFC 8414 compares issuers as exact strings).
            issuer_url=public,  # type: ignore[arg-type]
            resource_server_url=resource,  # type: ignore[arg-type]
            required_scopes=[SCOPE],
            # Tokens are bound to the resource the client asked for; a token for another
            # resource is refused (spec: servers MUST validate the audience).
            validate_token_resource=True,
            client_registration_options=ClientRegistrationOptions(
                enabled=True, valid_scopes=[SCOPE], default_scopes=[SCOPE]
            ),
            revocation_options=RevocationOptions(enabled=True),
        ),
    )

    @server.tool()
    def echo(text: str) -> str:
        """Return `text` unchanged."""
        return text

    @server.tool()
    def add(a: int, b: int) -> int:
        """Return a + b."""
        return a + b

    if args.allowed_hosts is not None:
        # The SDK's DNS-rebinding guard, as a deployment configured for another public name
        # would have it: /mcp answers 421 "Invalid Host header" to any other Host, while the
        # metadata and OAuth routes keep working.
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True, allowed_hosts=args.allowed_hosts.split(",")
        )
    else:
        # The proxy and tests reach us as localhost, 127.0.0.1 or through a proxy: no Host check.
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app: Starlette = server.streamable_http_app(transport_security=security)

    metadata_url = str(build_resource_metadata_url(AnyHttpUrl(resource)))
    if args.prm_resource is not None:
        # Shadow the SDK's protected-resource route (same path) with one naming another resource.
        prm = ProtectedResourceMetadata.model_validate(
            {
                "resource": args.prm_resource.replace("{port}", public_port),
                "authorization_servers": [public],
                "scopes_supported": [SCOPE],
            }
        )
        path = f"/.well-known/oauth-protected-resource{MCP_PATH}"
        handler = ProtectedResourceMetadataHandler(prm)
        app.router.routes.insert(
            0, Route(path, endpoint=cors_middleware(handler.handle, ["GET", "OPTIONS"]), methods=["GET", "OPTIONS"])
        )

    if jwt_tokens is not None:
        jwks: dict[str, Any] = {} if args.jwks_without_keys else jwt_tokens.jwks()

        async def jwks_endpoint(request: Any) -> JSONResponse:
            return JSONResponse(jwks)

        app.router.routes.insert(0, Route("/jwks.json", endpoint=jwks_endpoint, methods=["GET"]))

    wrapped: ASGIApp = RefreshResource(app)
    if args.reject_own_tokens:
        wrapped = RejectOwnTokens(wrapped, provider, metadata_url)
    if args.no_www_authenticate:
        wrapped = StripWwwAuthenticate(wrapped)
    if args.metadata_html:
        wrapped = MetadataAsHtml(wrapped)
    if args.no_s256:
        wrapped = PatchAsMetadata(wrapped, lambda doc: doc.update(code_challenge_methods_supported=["plain"]))
    if jwt_tokens is not None:
        wrapped = PatchAsMetadata(wrapped, lambda doc: doc.update(jwks_uri=f"{public}/jwks.json"))
    if args.check_redirect_uris:
        wrapped = CheckRedirectUris(wrapped)
    if args.legacy_only:
        wrapped = LegacyOnly(wrapped)
    if args.registration_management:
        wrapped = RegistrationManagement(wrapped, provider, public)
    if args.refuse_dcr:
        wrapped = RefuseRegistration(wrapped)
    if args.log_requests is not None:
        # Outermost, so the log shows what crossed the wire after the other flags applied.
        out = open(args.log_requests, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
        wrapped = RequestLog(wrapped, out)
    return wrapped


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port to bind; 0 lets the kernel choose (default)")
    p.add_argument("--certfile", required=True, help="PEM server certificate (chain)")
    p.add_argument("--keyfile", required=True, help="PEM private key")
    p.add_argument(
        "--public-url",
        default="https://localhost:{port}",
        help="origin the server advertises as issuer; the resource is {public}/mcp. "
        "'{port}' is replaced by the bound port (default https://localhost:{port})",
    )
    p.add_argument("--log-requests", metavar="FILE", help="append one JSON line per HTTP request to FILE")
    p.add_argument(
        "--watch-stdin",
        action="store_true",
        help="exit when stdin reaches EOF (so the server dies with the test process that spawned it)",
    )
    g = p.add_argument_group("misbehaviour")
    g.add_argument(
        "--no-www-authenticate",
        action="store_true",
        help="send every 401 without a WWW-Authenticate header (clients must fall back to well-known URLs)",
    )
    g.add_argument(
        "--prm-resource",
        metavar="URL",
        help="protected-resource metadata names URL as `resource` instead of {public}/mcp "
        "('{port}' is replaced by the bound port; tokens are still validated against {public}/mcp)",
    )
    g.add_argument(
        "--reject-own-tokens",
        action="store_true",
        help="/mcp answers 401 invalid_token to every bearer token this server issued",
    )
    g.add_argument(
        "--no-expires-in",
        action="store_true",
        help="token responses omit expires_in (tokens still expire after --token-ttl on the server)",
    )
    g.add_argument(
        "--metadata-html",
        action="store_true",
        help="every GET under /.well-known/ answers 200 text/html (an SPA catch-all route)",
    )
    g.add_argument(
        "--no-s256",
        action="store_true",
        help="authorization-server metadata lists only `plain` in code_challenge_methods_supported",
    )
    g.add_argument(
        "--refuse-dcr",
        action="store_true",
        help="POST /register answers 400 invalid_client_metadata",
    )
    g.add_argument(
        "--allowed-hosts",
        metavar="HOSTS",
        help="turn on the SDK's DNS-rebinding protection allowing only these Host values "
        "(comma-separated, 'name:*' for any port): /mcp answers 421 to every other Host",
    )
    g.add_argument(
        "--jwt",
        action="store_true",
        help="access tokens are RS256 JWTs validated from their claims (jwks_uri: /jwks.json); "
        "healthy unless one of the three flags below turns a check off",
    )
    g.add_argument(
        "--jwt-signature-not-checked",
        action="store_true",
        help="with --jwt: read the claims without verifying the signature",
    )
    g.add_argument("--expiry-not-checked", action="store_true", help="with --jwt: accept a token past `exp`")
    g.add_argument(
        "--audience-not-checked", action="store_true", help="with --jwt: accept a token whose `aud` is another resource"
    )
    g.add_argument("--jwks-without-keys", action="store_true", help="with --jwt: /jwks.json answers {} (no `keys`)")
    g.add_argument(
        "--registration-management",
        action="store_true",
        help="RFC 7592 for dynamic registrations: registration_client_uri and "
        "registration_access_token in the answer, DELETE forgets the client",
    )
    g.add_argument(
        "--legacy-only",
        action="store_true",
        help="refuse 2026-07-28 on /mcp as a 2025-11-25 server does (400, after the token check)",
    )
    g.add_argument(
        "--check-redirect-uris",
        action="store_true",
        help="registration refuses redirect URIs that are neither https nor loopback http "
        "(400 invalid_redirect_uri); the SDK alone accepts any URL",
    )
    g.add_argument(
        "--token-ttl",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="access-token lifetime in seconds (default 3600)",
    )
    return p.parse_args(argv)


def _watch_stdin() -> None:
    """Exit the process as soon as stdin closes: the parent died or dropped its handle."""

    def run() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            os._exit(0)

    threading.Thread(target=run, name="stdin-watch", daemon=True).start()


async def serve(args: argparse.Namespace) -> None:
    # Bind first: only then is the port known, and the public URL (issuer, resource) needs it.
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)
    port: int = sock.getsockname()[1]
    public = args.public_url.replace("{port}", str(port)).rstrip("/")

    app = build_app(args, public, str(port))
    config = uvicorn.Config(
        app,
        ssl_certfile=args.certfile,
        ssl_keyfile=args.keyfile,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task  # re-raise the startup failure
            raise SystemExit("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    print(f"READY {port}", flush=True)
    await task


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.watch_stdin:
        _watch_stdin()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
