from __future__ import annotations

from fastapi import APIRouter, Query

from db import audit
from service.api.auth import AdminIdentity
from service.api.deps import SessionDep
from service.schemas import INVALID, AuditEventPublic, AuditEventsPublic

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", responses=INVALID)
def read_audit(
    _: AdminIdentity,
    session: SessionDep,
    offset: int = Query(0, ge=0, description="events to skip"),
    limit: int = Query(100, ge=1, le=1000, description="events per page"),
    action: str | None = Query(None, max_length=64, description="e.g. key.revoke"),
    actor: str | None = Query(None, max_length=200, description="a user's name, or cli:..."),
) -> AuditEventsPublic:
    """The audit log, newest first: keys created and revoked, users changed, sweeps and
    studies cancelled. Admins only."""
    rows, count = audit.list_events(
        session=session, offset=offset, limit=limit, action=action, actor=actor
    )
    return AuditEventsPublic(data=[AuditEventPublic.model_validate(r) for r in rows], count=count)
