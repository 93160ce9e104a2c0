"""The sweep and study pages' charts as Vega-Lite specs (service/figures/sweep.py, study.py),
as /runs/{id}/figures serves the run page's."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query
from pydantic import Field

from service.api.deps import SessionDep, SettingsDep, SweepDep
from service.api.routes.figures import Figures
from service.api.routes.studies import StudyDep
from service.figures.study import study_figures
from service.figures.sweep import AXES, default_axis, sweep_figures, varying_axes
from service.pages import study_document, sweep_runs
from service.schemas import INVALID, NOT_FOUND

router = APIRouter(tags=["figures"])

Axis = Literal["architecture", "optimizer", "init", "normalization", "grad_clip", "seed"]
assert set(Axis.__args__) == set(AXES), "Axis must list service.figures.sweep.AXES"  # type: ignore[attr-defined]


class SweepFigures(Figures):
    by: str = Field(description="the axis the runs are coloured and grouped by")
    axes: list[str] = Field(description="the axes whose value differs between the runs")


@router.get("/sweeps/{sweep_id}/figures", responses=NOT_FOUND | INVALID)
def read_sweep_figures(
    sweep: SweepDep,
    session: SessionDep,
    by: Axis | None = Query(
        None, description="colour and group the runs by this axis; default: the first that varies"
    ),
) -> SweepFigures:
    """The sweep page's charts: loss curves overlaid, plateau fraction and verdict mix per
    value of `by`, parallel coordinates over the axes and outcomes."""
    runs = sweep_runs(session=session, sweep_id=sweep.id)
    axis = by or default_axis(runs)
    return SweepFigures(figures=sweep_figures(runs, axis), by=axis, axes=varying_axes(runs))


@router.get("/studies/{study_id}/figures", responses=NOT_FOUND | INVALID)
def read_study_figures(row: StudyDep, session: SessionDep, settings: SettingsDep) -> Figures:
    """The study page's charts: optimization history with the best so far, parallel
    coordinates, slices and parameter importances."""
    doc = study_document(session=session, row=row, url=settings.database_url)
    return Figures(figures=study_figures(doc))
