"""Who is asking, for the limits.

- `request_identity`: what a rate limit counts per: the API key (by its prefix) when the
  request was authenticated with one (service/api/auth.py puts the identity on
  `request.state` before any route dependency runs), else the client's address ("local"
  when the server cannot tell, as for an in-process client). Behind a reverse proxy the
  address is the proxy's unless uvicorn runs with --proxy-headers and --forwarded-allow-ips
  naming the proxy.
- `request_team`: whose unfinished runs count against PLATEAU_MAX_QUEUED_RUNS. One
  deployment is one team (docs/DECISIONS.md, "Identities and roles"), so None: everyone's.
"""

from __future__ import annotations

from fastapi import Request


def request_identity(request: Request) -> str:
    identity = getattr(request.state, "identity", None)
    prefix = getattr(identity, "key_prefix", None)
    if prefix:
        return f"key:{prefix}"
    client = request.client
    return f"addr:{client.host}" if client and client.host else "local"


def request_team(request: Request) -> str | None:
    return None
