from __future__ import annotations

import socket

from fastapi import APIRouter, Response, status
from sqlalchemy import text

from db.session import get_engine
from service.api.deps import SettingsDep
from service.schemas import Health, Readiness

router = APIRouter(tags=["health"])


def _ray_status(address: str | None) -> dict[str, object]:
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency
        return {"ok": False, "error": "ray is not installed"}
    if ray.is_initialized():
        return {"ok": True, "mode": "connected", "cpus": ray.cluster_resources().get("CPU", 0)}
    if address and address != "auto" and ":" in address:
        host, port = address.removeprefix("ray://").rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            return {"ok": True, "mode": "reachable", "address": address}
        except OSError as e:
            return {"ok": False, "address": address, "error": str(e)}
    return {"ok": False, "error": "no dispatcher in this process and no RAY_ADDRESS to check"}


def _database_status(url: str) -> dict[str, object]:
    try:
        with get_engine(url).connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"ok": True, "dialect": get_engine(url).dialect.name}
    except Exception as e:  # report, don't raise: health must answer
        return {"ok": False, "error": str(e).splitlines()[0]}


@router.get("/health")
def health(settings: SettingsDep) -> Health:
    """Liveness and a status report: always 200 while the process answers, with `degraded`
    when the database or Ray is not reachable (so a liveness probe restarts only a hung
    process, not every replica during an outage)."""
    database = _database_status(settings.database_url)
    ray_status = _ray_status(settings.ray_address)
    ok = bool(database["ok"]) and bool(ray_status["ok"])
    return Health(status="ok" if ok else "degraded", database=database, ray=ray_status)


@router.get("/ready", responses={503: {"description": "the database is unreachable"}})
def ready(settings: SettingsDep, response: Response) -> Readiness:
    """Readiness: 200 when this process can serve, i.e. its database answers; 503 (with the
    database's error) when not, so a load balancer stops sending it requests. Ray is not
    asked: submissions queue in the database whether or not a dispatcher runs."""
    database = _database_status(settings.database_url)
    if not database["ok"]:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Readiness(ready=bool(database["ok"]), database=database)
