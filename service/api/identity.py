"""Who is asking: the seam the limits use until API keys exist.

- `request_identity`: what a rate limit counts per. The client's address today ("local"
  when the server cannot tell, as for an in-process client); behind a reverse proxy that
  is the proxy's address unless uvicorn runs with --proxy-headers and
  --forwarded-allow-ips naming the proxy.
- `request_team`: whose unfinished runs count against PLATEAU_MAX_QUEUED_RUNS. None means
  everyone's: without users the whole service is one team.
"""

from __future__ import annotations

from fastapi import Request


def request_identity(request: Request) -> str:
    # wired at merge: return the authenticated API key's id (f"key:{key.id}") when the
    # request carries one; the address stays the identity of unauthenticated requests.
    client = request.client
    return f"addr:{client.host}" if client and client.host else "local"


def request_team(request: Request) -> str | None:
    # wired at merge: the team of the authenticated key's user, with
    # db.queries.count_unfinished_runs filtering by that team's sweeps.
    return None
