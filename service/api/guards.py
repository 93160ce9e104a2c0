"""Pure ASGI middlewares that refuse a request before any route sees it.

- `SameOriginGuard`: a state-changing request (POST, PUT, PATCH, DELETE) that a browser
  sends on behalf of another site is refused with 403, whatever its body (a form post with
  none included). Browsers say where a request comes from in `Sec-Fetch-Site` (all current
  ones) and `Origin` (on every cross-origin POST), older ones at least in `Referer`; a
  request naming none of them is not a browser's cross-site request (curl, the CLI, httpx)
  and passes. This is the check of Go's `http.CrossOriginProtection`, with Referer as the
  last resort.
- `BodyGuard`: a body above `max_bytes` answers 413 as soon as the declared length or the
  bytes received so far say so (chunked bodies included), without reading the rest and
  without echoing it; a JSON body nested deeper than `max_depth` answers 422 before the
  parser (whose recursion would otherwise fail with a 500) sees it.
"""

from __future__ import annotations

import itertools
import json
import operator
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


async def send_json(
    send: Send, status: int, body: Any, headers: dict[str, str] | None = None
) -> None:
    """A complete JSON response."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def _refused(reason: str) -> None:
    from service.metrics import REFUSED

    REFUSED.labels(reason=reason).inc()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _netloc(scheme: str, host: str) -> str:
    """host:port with the scheme's default port spelled out, lower-cased."""
    host = host.lower()
    if host.startswith("["):  # IPv6 literal: [::1] or [::1]:8000
        end = host.find("]")
        name, rest = host[: end + 1], host[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.partition(":")
    return f"{name}:{port or DEFAULT_PORTS.get(scheme, '')}"


def origin_of(url: str) -> tuple[str, str] | None:
    """(scheme, host:port) of an Origin or Referer value; None when it names no site."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.netloc:
        return None
    host = parts.netloc.rpartition("@")[2]
    return parts.scheme, _netloc(parts.scheme, host)


class SameOriginGuard:
    """403 for state-changing requests from another site (see the module docstring).

    "Another site" is any origin whose host and port differ from the request's own Host
    (the scheme is not compared: a TLS-terminating proxy talks plain HTTP to us) and that
    is not among `trusted` (PLATEAU_TRUSTED_ORIGINS, for a UI served from elsewhere).
    """

    def __init__(self, app: ASGIApp, trusted: list[str]) -> None:
        self.app = app
        self.trusted = {o for o in (origin_of(t) for t in trusted) if o is not None}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            problem = self.problem(scope)
            if problem is not None:
                _refused("cross_site")
                detail = (
                    f"cross-site request refused: {problem}. Requests that change state are "
                    "accepted from this site's own pages, from clients that are not browsers, "
                    "and from the origins in PLATEAU_TRUSTED_ORIGINS"
                )
                await send_json(send, 403, {"detail": detail})
                return
        await self.app(scope, receive, send)

    def problem(self, scope: Scope) -> str | None:
        origin = _header(scope, b"origin")
        site = _header(scope, b"sec-fetch-site")
        if origin is not None and origin_of(origin) in self.trusted:
            return None
        if site is not None and site.lower() in ("cross-site", "same-site"):
            return f"Sec-Fetch-Site is {site}"
        host = _header(scope, b"host") or ""
        if origin is not None:
            named = origin_of(origin)
            if named is None or not _same_host(named, host):
                return f"Origin {origin[:200]!r} is not this site"
            return None
        if site is not None and site.lower() in ("same-origin", "none"):
            return None
        referer = _header(scope, b"referer")
        if referer is not None:
            named = origin_of(referer)
            if named is not None and named not in self.trusted and not _same_host(named, host):
                return f"Referer {referer[:200]!r} is not this site"
        return None


def _same_host(named: tuple[str, str], host: str) -> bool:
    # The Host header of a request to a default port has none: it means the default port of
    # the scheme the browser used, which is the origin's (also behind a TLS proxy).
    scheme, netloc = named
    return bool(host) and netloc == _netloc(scheme, host)


# A JSON string with its escapes; one left open runs to the end of the body. Every quote
# outside a string starts a match that succeeds, so the scan is linear in the body's length
# (a pattern that must find the closing quote retries from each later quote: quadratic).
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (brackets inside strings do
    not count), in C-speed passes: no recursion, whatever the input."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    # Opening brackets count 2 and closing ones 0, so after i brackets the running sum
    # minus i is the depth there (opened - closed).
    steps = brackets.translate(_DEPTH_STEP)
    return max(map(operator.sub, itertools.accumulate(steps), itertools.count(1)))


def _is_json(content_type: str | None) -> bool:
    # The bodies FastAPI parses as JSON: application/json and application/*+json (with its
    # default strict content type, a body without one is not parsed).
    if content_type is None:
        return False
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


class BodyGuard:
    """413 for bodies above `max_bytes`, 422 for JSON nested deeper than `max_depth`.

    The body is read here (FastAPI reads all of it before validating anyway), at most
    `max_bytes` of it, and handed to the app as one message.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await send_json(send, 400, {"detail": f"invalid Content-Length {declared[:40]!r}"})
                return
            if int(declared) > self.max_bytes:
                await self._too_large(send, f"Content-Length {int(declared):,}")
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send, f"more than {self.max_bytes:,} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and _is_json(_header(scope, b"content-type")):
            depth = json_depth(body)
            if depth > self.max_depth:
                _refused("json_too_deep")
                error = {
                    "type": "json_too_deep",
                    "loc": ["body"],
                    "msg": f"JSON nested {depth} levels deep; at most {self.max_depth} "
                    "(PLATEAU_MAX_JSON_DEPTH)",
                }
                await send_json(send, 422, {"detail": [error]})
                return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send, what: str) -> None:
        _refused("body_too_large")
        detail = (
            f"request body too large: {what}, above the limit of {self.max_bytes:,} bytes "
            "(PLATEAU_MAX_BODY_BYTES)"
        )
        await send_json(send, 413, {"detail": detail}, headers={"connection": "close"})
