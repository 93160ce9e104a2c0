from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.api.main import create_app
from service.settings import Settings

QUICK_SPEC = {
    "name": "tiny",
    "task": "digits",
    "architectures": [{"name": "mlp", "depth": 1, "width": 16}],
    "optimizers": [{"name": "sgd", "lr": 0.1, "momentum": 0.9}, {"name": "adam", "lr": 0.01}],
    "inits": ["default", {"name": "normal", "std": 0.01}],
    "normalization": ["none"],
    "grad_clip": [None, 1.0],
    "seeds": [0],
    "budget": {"steps": 30, "batch_size": 64, "log_every": 5, "eval_every": 10},
    "target": {"loss": 0.5},
}


@pytest.fixture
def settings(migrated_url: str) -> Settings:
    return Settings(database_url=migrated_url, lease_seconds=10, poll_seconds=0.2)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The ASGI app over real HTTP semantics (httpx), without a dispatcher."""
    with TestClient(create_app(settings, dispatch=False)) as c:
        yield c


@pytest.fixture
def sqlite_client(sqlite_url: str) -> Iterator[TestClient]:
    """The app on one migrated SQLite database, without a rate limit (for tests whose subject
    is not the backend: the OpenAPI document, refusals, pages)."""
    from db.migrate import upgrade

    upgrade(sqlite_url)
    settings = Settings(database_url=sqlite_url, submit_rate_limit="")
    with TestClient(create_app(settings, dispatch=False)) as c:
        yield c


class LiveServer:
    """The app served by a real uvicorn on a free 127.0.0.1 port, in a thread: responses
    travel over TCP after the route returns, as in production (TestClient finishes a
    request's dependency cleanups before it returns, so it cannot see what a client sees)."""

    def __init__(self, app: object) -> None:
        import socket
        import threading

        import uvicorn

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", limit_concurrency=1000, backlog=2048)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        import time

        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=15)
        self._socket.close()


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    """A real HTTP server of the app (no dispatcher) on the test's database."""
    with LiveServer(create_app(settings, dispatch=False)) as server:
        yield server
