from __future__ import annotations

import socket

from fastapi import APIRouter
from sqlalchemy import text

from db.session import get_engine
from service.api.deps import SettingsDep
from service.schemas import Health

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


@router.get("/health")
def health(settings: SettingsDep) -> Health:
    try:
        with get_engine(settings.database_url).connect() as conn:
            conn.execute(text("SELECT 1"))
        database: dict[str, object] = {
            "ok": True,
            "dialect": get_engine(settings.database_url).dialect.name,
        }
    except Exception as e:  # report, don't raise: health must answer
        database = {"ok": False, "error": str(e).splitlines()[0]}
    ray_status = _ray_status(settings.ray_address)
    ok = bool(database["ok"]) and bool(ray_status["ok"])
    return Health(status="ok" if ok else "degraded", database=database, ray=ray_status)
