"""Who may use a ``vidtune serve`` server: a bearer token, checked on every request.

With a token set, every request (pages, API, media, static files: the check is ASGI middleware in
front of all routes, so routes added later are covered too) must carry it, as

- ``Authorization: Bearer TOKEN`` (scripts), or
- the cookie the server sets when a browser first opens ``/?token=TOKEN`` (the URL ``vidtune serve``
  prints). A page navigation with ``?token=`` is redirected to the same URL without it, so the token
  does not stay in the address bar or in the history; other requests with ``?token=`` are answered
  directly (and set the cookie too).

Tokens are compared with :func:`hmac.compare_digest` (constant time). The cookie is ``HttpOnly`` and
``SameSite=Strict``: other sites' pages cannot read it or make the browser send it. Anything else is
``401 {"error": ...}`` with ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

MIN_TOKEN = 16
TOKEN_SHAPE = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: fits a header, a cookie and a URL


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def check_token(token: str) -> str:
    """``token`` if it is usable, else ``ValueError`` saying why."""
    if len(token) < MIN_TOKEN:
        raise ValueError(f"must be at least {MIN_TOKEN} characters long (give --token with no value to have one "
                         "generated)")
    if not TOKEN_SHAPE.match(token) or ";" in token or "," in token:
        raise ValueError("must be printable ASCII without spaces, commas or semicolons")
    return token


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address as the listening socket reports it) is reachable from this machine only."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool((mapped or ip).is_loopback)


def cookie_name(token: str) -> str:
    """Per-token cookie name, so two servers on one host (different ports share cookies) do not clash."""
    return "vidtune_" + hashlib.blake2b(token.encode(), digest_size=4).hexdigest()


class TokenGuard:
    """ASGI middleware: refuse (401) every HTTP request that does not carry ``token``."""

    def __init__(self, app, token: str):
        self.app = app
        self.token = token.encode()
        self.cookie = cookie_name(token)

    def _ok(self, candidate: str | None) -> bool:
        if not candidate:
            return False
        try:
            got = candidate.encode("utf-8", "surrogateescape")
        except UnicodeError:
            return False
        return hmac.compare_digest(got, self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {}
        for k, v in scope.get("headers", ()):
            headers.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        cookie = None
        if "cookie" in headers:
            try:
                jar = SimpleCookie()
                jar.load(headers["cookie"])
                cookie = jar[self.cookie].value if self.cookie in jar else None
            except Exception:  # noqa: BLE001 - a malformed cookie header is just no cookie
                cookie = None
        query = scope.get("query_string", b"").decode("latin-1")
        pairs = parse_qsl(query, keep_blank_values=True)
        from_query = next((v for k, v in pairs if k == "token"), None)
        if self._ok(bearer) or self._ok(cookie):
            return await self.app(scope, receive, send)
        if not self._ok(from_query):
            return await self._refuse(scope, send, bool(bearer or cookie or from_query))
        set_cookie = (f"{self.cookie}={self.token.decode()}; Path=/; HttpOnly; SameSite=Strict").encode("latin-1")
        method = scope.get("method", "GET")
        if method in ("GET", "HEAD") and "text/html" in headers.get("accept", ""):
            rest = urlencode([(k, v) for k, v in pairs if k != "token"])
            location = scope.get("root_path", "") + scope.get("path", "/") + (f"?{rest}" if rest else "")
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", location.encode("latin-1", "replace")), (b"set-cookie", set_cookie),
                                    (b"cache-control", b"no-store"), (b"content-length", b"0")]})
            return await send({"type": "http.response.body", "body": b""})

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", set_cookie)]}
            await send(message)

        return await self.app(scope, receive, send_with_cookie)

    @staticmethod
    async def _refuse(scope, send, wrong: bool):
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        what = ("the token given is wrong" if wrong else
                "this server needs a token: open the URL `vidtune serve` printed (with ?token=...), or send the "
                "header `Authorization: Bearer TOKEN`")
        body = json.dumps({"error": what}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b'Bearer realm="vidtune"'), (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": body})


def host_is_local(host_header: str) -> bool:
    """Whether a ``Host`` header names this machine (``localhost``, ``*.localhost``, a loopback address)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return host in ("localhost", "") or host.endswith(".localhost") or is_loopback(host)


class LocalHostGuard:
    """ASGI middleware of a server without a token: answer only requests addressed to this machine.

    A web page from another site can make the browser send requests to ``127.0.0.1``; with DNS
    rebinding it could also read the answers (``Host: evil.example``). Refusing a ``Host`` that is not
    ``localhost`` or a loopback address (403) closes that door; scripts and the page itself are not
    affected."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
            if not host_is_local(host):
                if scope["type"] == "websocket":
                    return await send({"type": "websocket.close", "code": 1008})
                body = json.dumps({"error": f"Host {host[:80]!r} is not this machine: this server answers requests "
                                            "to localhost only (start it with --token to serve other names)"}).encode()
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                return await send({"type": "http.response.body", "body": body})
        return await self.app(scope, receive, send)
