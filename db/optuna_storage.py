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


_cached: dict[str, optuna.storages.BaseStorage] = {}


def cached_storage(url: str) -> optuna.storages.BaseStorage:
    """The study driver's view of `optuna_storage(url)`, kept for the process: Optuna's own
    cache of finished trials (`_CachedStorage`, what `optuna.load_study` wraps an RDBStorage
    in, anew at every call), so that a tick re-reads only the trials still running instead
    of every trial of the study (benchmarks/optuna_overhead.py). The workers' reports and
    the driver's tells both go through the database; the cache re-reads unfinished trials."""
    from optuna.storages._cached_storage import _CachedStorage

    url = normalize_url(url)
    if url not in _cached:
        _cached[url] = _CachedStorage(optuna_storage(url))
    return _cached[url]
