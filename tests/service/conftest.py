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
