"""Per-identity rate limits on submissions, with the `limits` library.

The strategy is `limits`' fixed window: each limit of `PLATEAU_SUBMIT_RATE_LIMIT` counts an
identity's submissions in windows of its period, and a submission past the count answers
429 with Retry-After, the seconds until that window ends. A client that spreads its requests
over a window boundary can send up to twice the count within one period; that is the fixed
window's known trade for one counter per identity.

Where the counters live (`PLATEAU_RATE_LIMIT_STORAGE`):
- `database` (default): `DatabaseStorage` below, a `limits` storage over db/ratelimit.py, so
  every API replica of one database counts together and nothing else needs installing;
- any `limits` storage URI: `memory://` counts per process (N replicas then admit N times
  the limit), `redis://host:6379` shares through Redis (`pip install limits[redis]`).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from fastapi import HTTPException, Request
from limits import RateLimitItem, parse_many
from limits.errors import ConfigurationError
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy.exc import SQLAlchemyError

from db import ratelimit
from db.session import ping, session_scope
from service.api.identity import request_identity
from service.settings import Settings

NAMESPACE = "submit"


class DatabaseStorage(Storage):
    """`limits`' storage interface over the rate_limit_counter table (fixed windows only)."""

    STORAGE_SCHEME = None  # built by `build_limiter`, not from a URI

    def __init__(self, database_url: str) -> None:
        super().__init__()
        self.database_url = database_url

    @property
    def base_exceptions(self) -> type[Exception]:
        return SQLAlchemyError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        with session_scope(self.database_url) as session:
            count, _ = ratelimit.hit(session=session, key=key, amount=amount, expiry_seconds=expiry)
        return count

    def get(self, key: str) -> int:
        with session_scope(self.database_url) as session:
            window = ratelimit.current(session=session, key=key)
        return 0 if window is None else window[0]

    def get_expiry(self, key: str) -> float:
        with session_scope(self.database_url) as session:
            window = ratelimit.current(session=session, key=key)
        return time.time() if window is None else window[1].timestamp()

    def check(self) -> bool:
        try:
            ping(self.database_url)
        except SQLAlchemyError:
            return False
        return True

    def reset(self) -> int | None:
        with session_scope(self.database_url) as session:
            return ratelimit.clear(session=session)

    def clear(self, key: str) -> None:
        with session_scope(self.database_url) as session:
            ratelimit.clear(session=session, key=key)


@dataclass
class SubmissionLimiter:
    """The submission limits of one app: `check(identity)` is None or the seconds to wait."""

    items: list[RateLimitItem]
    limiter: FixedWindowRateLimiter | None

    def check(self, identity: str) -> float | None:
        if self.limiter is None:
            return None
        # Keys stay short whatever an identity looks like (an IPv6 address, a key id).
        who = identity if len(identity) <= 64 else hashlib.sha256(identity.encode()).hexdigest()
        for item in self.items:
            if not self.limiter.hit(item, NAMESPACE, who):
                reset = self.limiter.get_window_stats(item, NAMESPACE, who).reset_time
                return max(1.0, reset - time.time())
        return None


def build_limiter(settings: Settings) -> SubmissionLimiter:
    """The app's limiter; a storage URI that `limits` cannot use fails here, at start."""
    items = parse_many(settings.submit_rate_limit) if settings.submit_rate_limit else []
    if not items:
        return SubmissionLimiter([], None)
    uri = settings.rate_limit_storage
    storage: Storage
    if uri == "database":
        storage = DatabaseStorage(settings.database_url)
    else:
        try:
            built = storage_from_string(uri)
        except ConfigurationError as e:
            raise ValueError(
                f"PLATEAU_RATE_LIMIT_STORAGE {uri!r} cannot be used: {e} (expected 'database', "
                "'memory://' or a `limits` storage URI such as 'redis://host:6379')"
            ) from e
        if not isinstance(built, Storage):
            raise ValueError(f"PLATEAU_RATE_LIMIT_STORAGE {uri!r} is asynchronous; use a sync one")
        storage = built
    return SubmissionLimiter(items, FixedWindowRateLimiter(storage))


def limit_submissions(request: Request) -> None:
    """Dependency of the submitting routes: 429 with Retry-After past the identity's limit."""
    limiter: SubmissionLimiter = request.app.state.limiter
    identity = request_identity(request)
    wait = limiter.check(identity)
    if wait is None:
        return
    from service.metrics import REFUSED

    REFUSED.labels(reason="rate_limit").inc()
    seconds = math.ceil(wait)
    raise HTTPException(
        429,
        f"too many submissions from {identity}: the limit is "
        f"{'; '.join(str(i) for i in limiter.items)} (PLATEAU_SUBMIT_RATE_LIMIT); "
        f"retry in {seconds} s",
        headers={"Retry-After": str(seconds)},
    )
