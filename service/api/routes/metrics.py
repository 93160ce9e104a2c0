from __future__ import annotations

from fastapi import APIRouter, Response

from service.api.deps import SettingsDep
from service.metrics import CONTENT_TYPE_LATEST, render

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
def metrics(settings: SettingsDep) -> Response:
    """Prometheus' text format: this process's metrics and the queue read from the
    database (service/metrics.py says which is which)."""
    return Response(render(settings.database_url), media_type=CONTENT_TYPE_LATEST)
