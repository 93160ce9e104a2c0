"""Optuna's RDBStorage in our database, shared by the study driver and the workers."""

from __future__ import annotations

from typing import Any

import optuna

from db.session import normalize_url

_storages: dict[str, optuna.storages.RDBStorage] = {}


def optuna_storage(url: str) -> optuna.storages.RDBStorage:
    """One RDBStorage per database and process, with a small pool (optuna#1347)."""
    url = normalize_url(url)
    if url not in _storages:
        kwargs: dict[str, Any] = (
            {"connect_args": {"timeout": 30}}
            if url.startswith("sqlite")
            else {"pool_size": 2, "max_overflow": 2, "pool_pre_ping": True}
        )
        _storages[url] = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    return _storages[url]
