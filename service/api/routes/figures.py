"""The pages' charts as Vega-Lite specs (service/figures/), for the pages and any client
that draws them (vega-embed, Altair, the Vega editor)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.api.deps import RunDep, SessionDep
from service.figures import VEGA_LITE
from service.figures.run import run_figures
from service.runs import run_document

router = APIRouter(tags=["figures"])


class Figures(BaseModel):
    """Charts by name, each a self-contained Vega-Lite spec with its data inlined."""

    vega_lite: str = Field(VEGA_LITE, description="the Vega-Lite version the specs are for")
    figures: dict[str, dict[str, Any]] = Field(
        description="Vega-Lite specs by figure name (e.g. loss, grad_norm, hessian)"
    )


@router.get("/runs/{run_id}/figures")
def read_run_figures(run: RunDep, session: SessionDep) -> Figures:
    """The run page's charts: training curves, and from the probes the Hessian's extreme
    eigenvalues, spectral density, loss slices, surface and interpolation."""
    detail, probes = run_document(session=session, run_id=run.id)
    return Figures(figures=run_figures(detail, probes))
