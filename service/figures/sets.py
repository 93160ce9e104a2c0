"""Which figures a page draws, read straight from the database: `plateau plot` without
--url writes the same specs that the figure endpoints serve (service/api/routes/figures.py,
page_figures.py) and the pages draw.

Each function returns (file name prefix, {figure name: spec}) and raises LookupError when
the run, sweep or study does not exist.
"""

from __future__ import annotations

from db import queries
from db.migrate import ensure_current
from db.models import Study
from db.session import read_scope
from service.figures import Spec
from service.figures.compare import compare_figures
from service.figures.run import run_figures
from service.figures.study import study_figures
from service.figures.sweep import default_axis, sweep_figures
from service.pages import study_document, sweep_runs
from service.runs import run_document

FigureSet = tuple[str, dict[str, Spec]]


def run_set(url: str, run_id: int, probe: int | None = None) -> FigureSet:
    ensure_current(url, migrate=False)
    with read_scope(url) as session:
        detail, probes = run_document(session=session, run_id=run_id)
    return f"run{run_id}", run_figures(detail, probes, probe)


def sweep_set(url: str, sweep_id: int, by: str | None = None) -> FigureSet:
    ensure_current(url, migrate=False)
    with read_scope(url) as session:
        if queries.get_sweep(session=session, sweep_id=sweep_id) is None:
            raise LookupError(f"sweep {sweep_id} not found")
        runs = sweep_runs(session=session, sweep_id=sweep_id)
    return f"sweep{sweep_id}", sweep_figures(runs, by or default_axis(runs))


def study_set(url: str, study_id: int) -> FigureSet:
    ensure_current(url, migrate=False)
    with read_scope(url) as session:
        row = session.get(Study, study_id)
        if row is None:
            raise LookupError(f"study {study_id} not found")
        doc = study_document(session=session, row=row, url=url)
    return f"study{study_id}", study_figures(doc)


def compare_set(url: str, run_ids: list[int]) -> FigureSet:
    ensure_current(url, migrate=False)
    with read_scope(url) as session:
        details = [run_document(session=session, run_id=i)[0] for i in run_ids]
    return "compare" + "-".join(str(i) for i in run_ids), compare_figures(details)
