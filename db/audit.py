"""The audit log: who did what to which object, written in the transaction of the change.

    from db import audit
    audit.record(session=session, actor=identity.actor, action="sweep.delete",
                 target=f"sweep:{sweep.id}", detail={"runs": n}, key_prefix=identity.key_prefix)

Actions are `<object>.<verb>`: user.create, user.update, key.create, key.revoke,
sweep.cancel, study.cancel (and sweep.delete, sweep.retry once they exist). Targets are
`<object>:<id or name>`: user:alice, key:pb_1a2b3c4d, sweep:12, study:3.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import AuditEvent, User

TARGET_LENGTH: int = AuditEvent.__table__.c.target.type.length  # type: ignore[attr-defined]


def record(
    *,
    session: Session,
    actor: User | str,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
    key_prefix: str | None = None,
) -> AuditEvent:
    """Add one event. `actor` is the user who acted, or a name for who acted without one
    ("cli:<os user>", "single-user", "bootstrap"); `key_prefix` the key they used."""
    if isinstance(actor, User):
        event = AuditEvent(actor_id=actor.id, actor=actor.name)
    else:
        event = AuditEvent(actor_id=None, actor=actor)
    # "user:" and a name of the 200 characters names may have is longer than the column:
    # the column keeps its start (for listing), the detail the whole target.
    if len(target) > TARGET_LENGTH:
        detail = {**(detail or {}), "target": target}
        target = target[:TARGET_LENGTH]
    event.action, event.target, event.detail, event.key_prefix = action, target, detail, key_prefix
    session.add(event)
    session.flush()
    return event


def list_events(
    *,
    session: Session,
    offset: int,
    limit: int,
    action: str | None = None,
    actor: str | None = None,
) -> tuple[Sequence[AuditEvent], int]:
    """Newest first, optionally one action (`key.revoke`) or one actor's name."""
    where = []
    if action is not None:
        where.append(AuditEvent.action == action)
    if actor is not None:
        where.append(AuditEvent.actor == actor)
    count = session.scalar(select(func.count()).select_from(AuditEvent).where(*where)) or 0
    rows = session.scalars(
        select(AuditEvent).where(*where).order_by(AuditEvent.id.desc()).offset(offset).limit(limit)
    ).all()
    return rows, count
