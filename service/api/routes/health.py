from __future__ import annotations

import socket

from fastapi import APIRouter, Response, status

from db.session import get_engine, ping
from service.api.deps import SettingsDep
from service.raycluster import cluster_state, is_driver
from service.schemas import Health, Readiness
from service.settings import Settings

router = APIRouter(tags=["health"])

# /health must answer quickly even while Ray hangs: its question to the cluster gets this long.
HEALTH_RAY_TIMEOUT = 2.0


def _ray_status(settings: Settings) -> dict[str, object]:
    """Ray as this process sees it. A process that is a Ray driver (the embedded dispatcher)
    asks the cluster: alive nodes, CPUs, free CPUs, and whether its own node still lives.
    An API replica without a dispatcher is not a driver (it holds no Ray token): it can only
    say whether the GCS port answers, and says that this is all it knows."""
    if is_driver():
        state = cluster_state(min(HEALTH_RAY_TIMEOUT, settings.ray_timeout_seconds))
        return {"mode": "driver", **state.as_dict()}
    address = settings.ray_address
    if address and address != "auto" and ":" in address:
        host, port = address.removeprefix("ray://").rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
        except OSError as e:
            return {"ok": False, "mode": "port", "address": address, "error": str(e)}
        return {
            "ok": True,
            "mode": "port",
            "address": address,
            "note": "the GCS port answers; this process is not a Ray driver, so it does not "
            "see the nodes (the dispatcher's log and its /health do)",
        }
    return {"ok": False, "error": "no dispatcher in this process and no RAY_ADDRESS to check"}


def _database_status(url: str) -> dict[str, object]:
    try:
        ping(url)
        return {"ok": True, "dialect": get_engine(url).dialect.name}
    except Exception as e:  # report, don't raise: health must answer
        return {"ok": False, "error": str(e).splitlines()[0]}


@router.get("/health")
def health(settings: SettingsDep) -> Health:
    """Liveness and a status report: always 200 while the process answers, with `degraded`
    when the database or Ray is not reachable (so a liveness probe restarts only a hung
    process, not every replica during an outage)."""
    database = _database_status(settings.database_url)
    ray_status = _ray_status(settings)
    ok = bool(database["ok"]) and bool(ray_status["ok"])
    return Health(status="ok" if ok else "degraded", database=database, ray=ray_status)


@router.get("/ready", responses={503: {"description": "the database is unreachable"}})
def ready(settings: SettingsDep, response: Response) -> Readiness:
    """Readiness: 200 when this process can serve, i.e. its database answers; 503 (with the
    database's error and a Retry-After) when not, so a load balancer stops sending it
    requests. Ray is not asked: submissions queue in the database whether or not a
    dispatcher runs."""
    database = _database_status(settings.database_url)
    if not database["ok"]:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        response.headers["Retry-After"] = str(settings.retry_after_seconds)
    return Readiness(ready=bool(database["ok"]), database=database)
