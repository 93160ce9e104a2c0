"""Prometheus metrics with the official client library (prometheus_client).

Two kinds, because they live in different places:
- *From the database*, read at every scrape (`QueueCollector`): runs by status (the queue's
  depth), the age of the oldest queued run, whether the database answered. Every API
  replica reports the same numbers: aggregate them across replicas with max, not sum.
- *Of this process*, counted as things happen: request latencies by route (`LatencyTimer`,
  an ASGI middleware), requests refused by the limits, and, in a process that runs a
  dispatcher, claim lag and finished runs by outcome. `plateau serve` exposes its
  dispatcher's at /metrics; a separate `plateau dispatcher --metrics-port N` serves its own.

Several processes behind one port (e.g. gunicorn workers) need the client's multiprocess
mode: set PROMETHEUS_MULTIPROC_DIR to an empty directory, the same for all of them, before
they start; /metrics then adds up every process's files (prometheus_client's
MultiProcessCollector). Without it each process answers with its own counts only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from starlette.routing import Mount

from db import queries
from db.models import RUN_STATUSES, utcnow
from db.session import session_scope
from service.api.guards import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE_LATEST", "render"]

REQUEST_LATENCY = Histogram(
    "plateau_http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route template and status class",
    ["method", "route", "status"],
)
REFUSED = Counter(
    "plateau_requests_refused_total",
    "Requests refused by a limit: rate_limit, body_too_large, json_too_deep, cross_site, "
    "queued_runs, run_cost",
    ["reason"],
)
RUNS_FINISHED = Counter(
    "plateau_runs_finished_total",
    "Attempts this dispatcher saw end, by outcome: succeeded, diverged, failed, lost (the "
    "attempt lost its lease), stopped (cancelled or pruned), task_error (the Ray task died), "
    "expired (failed by the reaper on its last attempt)",
    ["outcome"],
)
CLAIM_LAG = Histogram(
    "plateau_dispatcher_claim_lag_seconds",
    "Time from a run's queued_at to this dispatcher handing it to Ray (its reservation)",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600),
)


class QueueCollector(Collector):
    """Gauges read from the database at scrape time."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("plateau_database_up", "1 when the database answered this scrape")
        try:
            with session_scope(self.database_url) as session:
                counts = queries.status_counts(session=session)
                oldest = queries.oldest_queued_at(session=session)
        except SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        runs = GaugeMetricFamily(
            "plateau_runs", "Runs in the database by status", labels=["status"]
        )
        for status in RUN_STATUSES:
            runs.add_metric([status], counts.get(status, 0))
        yield runs
        age = GaugeMetricFamily(
            "plateau_queue_oldest_age_seconds",
            "Seconds the oldest queued run has waited since queued_at (0 when none waits)",
        )
        age.add_metric([], 0 if oldest is None else (utcnow() - oldest).total_seconds())
        yield age


def process_registry() -> CollectorRegistry:
    """This process's metrics, or every process's in the client's multiprocess mode."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry
    return REGISTRY


def render(database_url: str) -> bytes:
    """The text exposition of /metrics: this process's metrics, then the database's."""
    database = CollectorRegistry(auto_describe=False)
    database.register(QueueCollector(database_url))
    return generate_latest(process_registry()) + generate_latest(database)


class LatencyTimer:
    """Observes every request's duration under its route template (`/api/v1/sweeps/{sweep_id}`,
    never the raw path, so the series stay few); requests no route matched (404s, requests
    refused by a guard before routing) go under `unmatched`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering
        root = scope.get("root_path", "")

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            REQUEST_LATENCY.labels(
                method=scope["method"],
                route=route_template(scope, root),
                status=f"{status // 100}xx",
            ).observe(time.perf_counter() - started)


def route_template(scope: Scope, root: str = "") -> str:
    """The matched route's path template with the prefixes of the routers it was included
    under (FastAPI keeps an included route's own path, `/sweeps/{sweep_id}`, on the route):
    the prefix is the request path's leading segments, literal in every router here. A
    mounted app (/static) shows as its mount point, which it added to the root path."""
    route: Any = scope.get("route")
    own = getattr(route, "path", None)
    if isinstance(route, Mount):
        return own or "unmatched"
    if not own:
        mounted = scope.get("root_path", "")
        return mounted[len(root) :] if mounted != root and mounted.startswith(root) else "unmatched"
    segments = scope["path"].split("/")
    prefix = segments[: len(segments) - own.count("/")]
    return "/".join(prefix) + own
