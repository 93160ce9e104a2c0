"""Schedules' webhooks: where the server may post, and how a post is signed.

`webhook_url` would let any member make the server call any address it can reach (a
cloud's metadata service, the database, an admin port), so a target must be on the admin's
allowlist, PLATEAU_WEBHOOK_ALLOWED_HOSTS: host names (`hooks.example.org`, or
`*.example.org` for its subdomains) or addresses. A name on the list must also resolve to
public addresses only; loopback, private, link-local and other non-public addresses are
reachable only when the list names that address itself (tests list 127.0.0.1 for their
local receiver). Checked when a schedule is saved and again before every post (a name's
addresses can change).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import ipaddress
import socket
from urllib.parse import urlsplit

from service.settings import Settings

SIGNATURE_HEADER = "X-Plateau-Signature"


def allowed_hosts(settings: Settings) -> list[str]:
    return [h.strip().lower() for h in settings.webhook_allowed_hosts.split(",") if h.strip()]


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def webhook_refusal(url: str, settings: Settings, *, resolve: bool = True) -> str | None:
    """Why the server will not post to `url`, or None when it may."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"a webhook is an http(s) URL with a host; got {url!r}"
    host = parts.hostname.lower()
    allowed = allowed_hosts(settings)
    if not allowed:
        return (
            "webhooks are off: an admin lists the hosts they may reach in "
            "PLATEAU_WEBHOOK_ALLOWED_HOSTS"
        )
    literal = _address(host)
    if literal is not None:
        if str(literal) not in allowed:
            return f"address {literal} is not on PLATEAU_WEBHOOK_ALLOWED_HOSTS"
        return None  # an address the admin listed is reachable whatever kind it is
    if not any(fnmatch.fnmatchcase(host, pattern) for pattern in allowed):
        return f"host {host!r} is not on PLATEAU_WEBHOOK_ALLOWED_HOSTS"
    if resolve:
        try:
            infos = socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)
        except OSError as e:
            return f"host {host!r} does not resolve: {e}"
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if not address.is_global and str(address) not in allowed:
                return (
                    f"host {host!r} resolves to the non-public address {address}; list that "
                    "address on PLATEAU_WEBHOOK_ALLOWED_HOSTS to allow it"
                )
    return None


def signature(secret: str, body: bytes) -> str:
    """The X-Plateau-Signature of a body: sha256=<hex HMAC-SHA256 with the schedule's secret>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
