"""The SQL of Optuna studies as plateau-bench records them (the `study` table and its runs);
Optuna's own tables are db/optuna_storage.py's."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from db.models import Run, Study
from db.session import get_engine

ADVISORY_LOCK_CLASS = 7411  # the first key of pg_advisory_lock: "a study being advanced"


@contextmanager
def advancing(url: str, study_id: int) -> Iterator[bool]:
    """True while this process may advance the study: a Postgres advisory lock, so two
    dispatchers never ask for the same study's trials at once. SQLite runs one dispatcher."""
    engine = get_engine(url)
    if engine.dialect.name != "postgresql":
        yield True
        return
    params = {"cls": ADVISORY_LOCK_CLASS, "id": study_id}
    with engine.connect() as conn:
        held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:cls, :id)"), params).scalar())
        try:
            yield held
        finally:
            if held:
                conn.execute(text("SELECT pg_advisory_unlock(:cls, :id)"), params)
            conn.commit()


def running_study_ids(*, session: Session) -> Sequence[int]:
    return session.scalars(select(Study.id).where(Study.state == "running")).all()


def trial_runs(*, session: Session, study_id: int) -> Sequence[Run]:
    return session.scalars(select(Run).where(Run.study_id == study_id)).all()


def trial_run_ids(*, session: Session, study_id: int) -> dict[int, int]:
    """trial number → run id."""
    rows = session.execute(select(Run.trial_number, Run.id).where(Run.study_id == study_id))
    return {number: run_id for number, run_id in rows.all() if number is not None}


def list_studies(*, session: Session, offset: int, limit: int) -> tuple[Sequence[Study], int]:
    count = session.scalar(select(func.count()).select_from(Study)) or 0
    rows = session.scalars(select(Study).order_by(Study.id.desc()).offset(offset).limit(limit))
    return rows.all(), count
