from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from service.api.deps import SessionDep
from service.exports import leaderboard_csv
from service.leaderboard import (
    LeaderboardCsvQuery,
    LeaderboardPublic,
    LeaderboardQuery,
    leaderboard_page,
)
from service.schemas import INVALID, INVALID_JSON

router = APIRouter(tags=["leaderboard"])


class CsvResponse(PlainTextResponse):
    media_type = "text/csv"


@router.get("/leaderboard", responses=INVALID)
def read_leaderboard(
    query: Annotated[LeaderboardQuery, Query()], session: SessionDep
) -> LeaderboardPublic:
    """Configurations (a config without its seed) ranked by `metric`, aggregated over their
    finished runs: see db/leaderboard.py for what counts and how censoring is handled."""
    return leaderboard_page(session=session, query=query)


@router.get(
    "/leaderboard.csv",
    response_class=CsvResponse,
    responses={
        200: {"description": "the rows as CSV, a header line first"},
        **INVALID_JSON,
    },
)
def read_leaderboard_csv(
    query: Annotated[LeaderboardCsvQuery, Query()], session: SessionDep
) -> CsvResponse:
    """The same rows as CSV (header line first); every row unless `limit` is given."""
    page = leaderboard_page(session=session, query=query)
    return CsvResponse(
        leaderboard_csv(page.data),
        headers={"content-disposition": 'inline; filename="leaderboard.csv"'},
    )
