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

import datetime as dt
import fnmatch
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import Schedule, ScheduleAlert, ScheduleFiring, WebhookDelivery
from service.settings import Settings

log = logging.getLogger(__name__)
TIMEOUT_SECONDS = 10.0
MAX_ATTEMPTS = 6
# Waits between tries: 30 s, 1, 2, 4, 8 min (then it is given up; GET .../alerts lists its
# tries).
FIRST_BACKOFF_SECONDS = 30.0
# A delivery being posted is held this long (well past a post's worst case: name
# resolution, then the timeout for each of connect, write and read); a replica that died
# meanwhile leaves it to be tried again after.
CLAIM_SECONDS = 300.0

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
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is no number
    except ValueError as e:
        return f"not a URL ({e}): {url!r}"
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
            infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError) as e:
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


def report(session: Session, firing: ScheduleFiring, settings: Settings) -> dict[str, Any]:
    """The document POSTed for a finished night (and shown by GET .../alerts)."""
    schedule = session.get_one(Schedule, firing.schedule_id)
    base = settings.public_url.rstrip("/")
    rows = session.scalars(
        select(ScheduleAlert).where(ScheduleAlert.firing_id == firing.id).order_by(ScheduleAlert.id)
    ).all()
    return {
        "schedule": {
            "id": schedule.id,
            "name": schedule.name,
            "url": f"{base}/schedules/{schedule.id}",
        },
        "night": firing.night,
        "slot": firing.slot.isoformat(),
        "sweep_url": f"{base}/sweeps/{firing.sweep_id}" if firing.sweep_id else None,
        "study_url": f"{base}/studies/{firing.study_id}" if firing.study_id else None,
        "environment": firing.environment or {},
        "alerts": [alert_document(a) for a in rows],
    }


def alert_document(alert: ScheduleAlert) -> dict[str, Any]:
    return {
        "night_firing": alert.firing_id,
        "configuration": alert.label,
        "config_key": alert.config_key,
        "metric": alert.metric,
        "direction": alert.direction,
        "effect": alert.effect,
        "interval": [alert.ci_low, alert.ci_high] if alert.ci_low is not None else None,
        "p": alert.p_value,
        "q": alert.q_value,
        "detail": alert.detail,
    }


def deliver_due(settings: Settings, now: dt.datetime, *, client: httpx.Client | None = None) -> int:
    """Try every delivery that is due; returns how many were delivered. A delivery is
    claimed by moving its next try past the timeout first, so two schedulers do not post
    one report twice at once."""
    from db.session import session_scope

    with session_scope(settings.database_url) as session:
        due = session.execute(
            select(WebhookDelivery.id, WebhookDelivery.next_attempt_at).where(
                WebhookDelivery.delivered_at.is_(None),
                WebhookDelivery.attempts < MAX_ATTEMPTS,
                WebhookDelivery.next_attempt_at <= now,
            )
        ).all()
    delivered = 0
    for delivery_id, due_at in due:
        with session_scope(settings.database_url) as session:
            claimed = session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery_id, WebhookDelivery.next_attempt_at == due_at)
                .values(next_attempt_at=now + dt.timedelta(seconds=CLAIM_SECONDS))
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                continue
        with session_scope(settings.database_url) as session:
            delivery = session.get_one(WebhookDelivery, delivery_id)
            firing = session.get_one(ScheduleFiring, delivery.firing_id)
            secret = session.get_one(Schedule, firing.schedule_id).webhook_secret
            body = json.dumps(report(session, firing, settings), sort_keys=True).encode()
            url = delivery.url
        # No transaction stays open while the receiver takes its time.
        status, error = _post(url, body, secret, settings, client)
        with session_scope(settings.database_url) as session:
            delivery = session.get_one(WebhookDelivery, delivery_id)
            delivery.attempts += 1
            delivery.last_status, delivery.last_error = status, error
            delivery.log = [
                *delivery.log,
                {"at": now.isoformat(), "status": status, "error": error},
            ]
            if status is not None and 200 <= status < 300:
                delivery.delivered_at = now
                delivered += 1
            else:
                wait = FIRST_BACKOFF_SECONDS * 2 ** (delivery.attempts - 1)
                delivery.next_attempt_at = now + dt.timedelta(seconds=wait)
                log.warning(
                    "webhook %s: try %d failed: %s",
                    delivery.url,
                    delivery.attempts,
                    error or status,
                )
    return delivered


def _post(
    url: str, body: bytes, secret: str, settings: Settings, client: httpx.Client | None
) -> tuple[int | None, str | None]:
    refusal = webhook_refusal(url, settings)  # again: a name's addresses may have changed
    if refusal is not None:
        return None, refusal
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(secret, body)}
    try:
        if client is not None:
            response = client.post(url, content=body, headers=headers, timeout=TIMEOUT_SECONDS)
        else:
            # No redirects: a 3xx to another host would bypass the allowlist.
            response = httpx.post(
                url, content=body, headers=headers, timeout=TIMEOUT_SECONDS, follow_redirects=False
            )
    except httpx.HTTPError as e:
        return None, f"{type(e).__name__}: {e}"[:500]
    error = None if response.is_success else response.text[:500]
    return response.status_code, error


def shown_url(url: str | None) -> str | None:
    """A webhook URL as people other than its schedule's owner and admins see it: scheme
    and host only (the path of a chat webhook is its secret)."""
    if not url:
        return url
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…" if parts.path not in ("", "/") else url
