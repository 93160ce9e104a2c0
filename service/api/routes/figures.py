"""The pages' charts as Vega-Lite specs (service/figures/), for the pages and any client
that draws them (vega-embed, Altair, the Vega editor)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from db.models import MAX_ID
from service.api.deps import RunDep, SessionDep
from service.figures import VEGA_LITE
from service.figures.compare import compare_figures
from service.figures.run import run_figures
from service.runs import run_document
from service.schemas import INVALID, NOT_FOUND

router = APIRouter(tags=["figures"])


class Figures(BaseModel):
    """Charts by name, each a self-contained Vega-Lite spec with its data inlined."""

    vega_lite: str = Field(VEGA_LITE, description="the Vega-Lite version the specs are for")
    figures: dict[str, dict[str, Any]] = Field(
        description="Vega-Lite specs by figure name (e.g. loss, grad_norm, hessian)"
    )


ProbeIndex = Annotated[
    int | None,
    Query(
        ge=-1000,
        le=1000,
        description="which probe the probe figures (density, slices_1d, surface_2d, "
        "interpolation) show: its index in GET /runs/{id}/probes (0 = the first, -1 = the "
        "last); default the last",
    ),
]
RunIds = Annotated[
    str,
    Query(
        pattern=r"^\d{1,10}(,\d{1,10}){0,19}$",
        description="1 to 20 comma-separated run ids",
        examples=["3,7,12"],
    ),
]


@router.get("/runs/{run_id}/figures", responses=NOT_FOUND | INVALID)
def read_run_figures(run: RunDep, session: SessionDep, probe: ProbeIndex = None) -> Figures:
    """The run page's charts: training curves, and from the probes the Hessian's extreme
    eigenvalues, spectral density, loss slices, surface and interpolation."""
    detail, probes = run_document(session=session, run_id=run.id)
    try:
        return Figures(figures=run_figures(detail, probes, probe))
    except IndexError as e:
        raise HTTPException(404, f"run {run.id} has {len(probes)} probes, no probe {probe}") from e


@router.get("/figures/compare", responses=NOT_FOUND | INVALID)
def read_compare_figures(session: SessionDep, runs: RunIds) -> Figures:
    """The compare page's chart: the runs' training loss, test loss and gradient norm on one
    step axis (zoom, pan and the cursor act on all panels)."""
    ids = list(dict.fromkeys(int(part) for part in runs.split(",")))
    if max(ids) > MAX_ID:  # ten digits pass the pattern; past INTEGER, SQL would overflow
        problem = f"run ids are at most {MAX_ID}; got {max(ids)}"
        error = {"type": "less_than_equal", "loc": ("query", "runs"), "msg": problem}
        raise RequestValidationError([{**error, "input": runs}])
    details = []
    for run_id in ids:
        try:
            details.append(run_document(session=session, run_id=run_id)[0])
        except LookupError as e:
            raise HTTPException(404, f"run {run_id} not found") from e
    return Figures(figures=compare_figures(details))
