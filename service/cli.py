"""The `plateau` command line.

Embedded (one machine): `plateau run SPEC` runs a sweep (or a study spec's search, as
`plateau search` does) to the end on SQLite + local Ray; `plateau status ID`, `leaderboard`
and `plot` read the database, or a service with `--url`.
Team: `plateau serve` (API + dispatcher), `plateau dispatcher`, `plateau worker`,
`plateau submit SPEC --url`, `plateau status ID --url`, `plateau db upgrade`,
`plateau db rebuild-leaderboard`, `plateau db prune-curves`. Identities (on the database
directly): `plateau users create|list|update`, `plateau keys create|list|revoke|generate`,
`plateau audit`; the HTTP commands send the key in PLATEAU_API_KEY.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, get_args

import httpx
import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from service import tables
from service.raycluster import GPU_MEMORY_LABEL, NODE_POOL_LABEL, node_labels
from service.settings import get_settings
from service.spec import SpecError, SweepSpec, load_spec_document
from service.study_spec import StudySpec
from service.suggest import unknown_name

if TYPE_CHECKING:
    import datetime as dt

    from sqlalchemy.orm import Session

    from db.models import User

app = typer.Typer(
    help="plateau-bench: why does training stall?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")
users_app = typer.Typer(
    help="Users of the team (on DATABASE_URL directly: whoever can reach the database is "
    "its admin). The first admin: `plateau users create NAME --role admin`.",
    no_args_is_help=True,
)
app.add_typer(users_app, name="users")
keys_app = typer.Typer(
    help="API keys (on DATABASE_URL directly). `plateau keys create --user NAME` prints a "
    "key once; the database keeps only its hash.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")
# Piped output (CI logs, files) gets a width that fits the ranked table.
console = Console(width=None if sys.stdout.isatty() else 180)
# Errors are not wrapped (a long path must not split the message a script greps for) and
# are printed as text, not Rich markup: they quote user input such as "[unclosed".
err = Console(stderr=True, soft_wrap=True)

DEFAULT_URL = "http://127.0.0.1:8000"
log = logging.getLogger("plateau")


def version_text() -> str:
    """'plateau-bench 0.1.0, torch 2.13.0 on cpu': what a bug report needs first."""
    from importlib import metadata

    from workers.train import resolve_device  # imports torch: only when asked

    try:
        ours = metadata.version("plateau-bench")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        ours = "(not installed)"
    import torch

    device = resolve_device("auto")
    where = f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu"
    return f"plateau-bench {ours}, torch {torch.__version__} on {where}"


def _print_version(value: bool) -> None:
    if value:
        console.print(version_text(), highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Show the versions of plateau-bench and torch, and torch's device, and exit.",
    ),
) -> None:
    pass


def show(table: Table) -> None:
    console.print(tables.fit(table, console))


def fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(2)


def one_of(option: str, kind: str, known: Callable[[], Iterable[str]]) -> Callable[[Any], Any]:
    """A typer callback that lets a value of `known()` through and stops any other with a
    message naming the option and the nearest known values (`known` is called only then:
    registries load lazily)."""

    def check(value: Any) -> Any:
        if value is not None:
            names = list(known())
            if value not in names:
                raise fail(f"{option}: {unknown_name(kind, value, names)}")
        return value

    return check


def _tasks() -> list[str]:
    from workers.config import TASK_INPUT_KIND

    return list(TASK_INPUT_KIND)


def _architectures() -> list[str]:
    from workers.config import ARCH_INPUT_KINDS

    return list(ARCH_INPUT_KINDS)


def _metrics() -> tuple[str, ...]:
    from service.leaderboard import Metric

    return get_args(Metric)


FIGURE_FORMATS = ("svg", "png", "pdf")


def sweep_axes() -> tuple[str, ...]:
    from service.figures.sweep import AXES

    return AXES


def field_path(loc: tuple[int | str, ...]) -> str:
    """A field's location in a spec: ("optimizers", 0, "lr") -> optimizers.0.lr."""
    return ".".join(str(part) for part in loc)


def option_name(loc: tuple[int | str, ...]) -> str:
    """A field's location as the option that set it: ("torch_version",) -> --torch-version."""
    return "--" + field_path(loc).replace("_", "-")


def format_validation_error(
    e: ValidationError,
    model: type[BaseModel] | None = None,
    what: str = "spec",
    where: Callable[[tuple[int | str, ...]], str] = field_path,
) -> str:
    """One line per problem, "  optimizers.0.lr: Input should be greater than 0", without
    pydantic's URLs; a misspelled field of `model` gets the nearest known one."""
    lines = []
    for problem in e.errors(include_url=False):
        loc = problem["loc"]
        message = problem["msg"].removeprefix("Value error, ")  # our validators' own words
        if problem["type"] == "extra_forbidden" and len(loc) == 1 and model is not None:
            message = unknown_name("field", str(loc[0]), model.model_fields)
        elif problem["type"] == "union_tag_invalid":  # a registry name: {name: adma, ...}
            ctx = problem.get("ctx", {})
            known = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
            message = unknown_name("name", str(ctx.get("tag")), known)
        lines.append(f"  {where(loc) if loc else what}: {message}")
    return f"invalid {what}:\n" + "\n".join(lines)


def read_any_spec(path: str) -> SweepSpec | StudySpec:
    """The sweep spec at `path`, or its study spec (one with a search_space or n_trials),
    validated; a problem exits 2 with one line per field."""
    try:
        document = load_spec_document(path)
    except SpecError as e:
        raise fail(str(e)) from e
    is_study = "search_space" in document or "n_trials" in document
    model: type[SweepSpec | StudySpec] = StudySpec if is_study else SweepSpec
    try:
        return model.model_validate(document)
    except ValidationError as e:
        raise fail(format_validation_error(e, model, "study spec" if is_study else "spec")) from e


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def unfinished_runs(database_url: str, sweep_id: int) -> tuple[int, int]:
    """(queued, running) runs of the sweep."""
    from db import queries
    from db.session import read_scope

    with read_scope(database_url) as session:
        c = queries.run_counts(session=session, sweep_ids=[sweep_id])[sweep_id]
    return c.get("queued", 0), c.get("running", 0)


def next_step(path: str, *, url: str | None = None) -> None:
    """Where to look next: the page `path` of the service at `url`, or, for what ran here,
    of `plateau serve` on the same database."""
    if url:
        err.print(f"next: open {url.rstrip('/')}{path}")
    else:
        err.print(f"next: run `plateau serve` and open {DEFAULT_URL}{path}")


@app.command()
def run(
    spec_path: str = typer.Argument(
        ..., metavar="SPEC", help="sweep spec (YAML/JSON); a study spec runs `plateau search`"
    ),
    timeout: float = typer.Option(None, help="give up after this many seconds"),
) -> None:
    """Run a sweep to the end on this machine (DATABASE_URL, default ./plateau.db + local Ray).

    A study spec (one with a search_space) runs its search, as `plateau search` does.
    """
    spec = read_any_spec(spec_path)
    if not isinstance(spec, SweepSpec):
        err.print(f"{spec_path} is a study spec: running its search (`plateau search`)")
        run_study(spec, timeout=timeout)
        return
    from db.migrate import ensure_current
    from db.session import masked_url, session_scope
    from service.dispatcher import Dispatcher, init_ray
    from service.sweeps import submit_sweep

    settings = get_settings()
    ensure_current(settings.database_url, migrate=True)
    with session_scope(settings.database_url) as session:
        sweep = submit_sweep(
            session=session, spec=spec, source="cli", max_attempts=settings.max_attempts
        )
        sweep_id, n_runs = sweep.id, sweep.n_runs
    console.print(
        f"sweep [bold]{sweep_id}[/] '{spec.name}': {n_runs} runs "
        f"({spec.grid_shape()}) in {masked_url(settings.database_url)}"
    )
    init_ray(settings, log_to_driver=False)
    dispatcher = Dispatcher(settings)
    with progress_bar() as progress:
        bar = progress.add_task("training", total=n_runs)

        def update() -> None:
            queued, running = unfinished_runs(settings.database_url, sweep_id)
            description = f"training ({running} running)"
            progress.update(bar, completed=n_runs - queued - running, description=description)

        def finished() -> bool:
            return sum(unfinished_runs(settings.database_url, sweep_id)) == 0

        dispatcher.run(until=finished, on_tick=update, timeout=timeout)
    final, rows = sweep_document_from(settings.database_url, sweep_id)
    show(tables.ranked_table(rows, tables.sweep_title(final)))
    failed = [r for r in rows if r["status"] == "failed"]
    for r in failed:
        err.print(f"run {r['id']} failed: {escape((r['error'] or '').splitlines()[0])}")
    next_step(f"/sweeps/{sweep_id}")


def read_study_spec(path: str) -> StudySpec:
    spec = read_any_spec(path)
    if isinstance(spec, SweepSpec):
        raise fail(f"{path} is a sweep spec (no search_space): run it with `plateau run`")
    return spec


@app.command()
def search(
    spec_path: str = typer.Argument(..., metavar="SPEC", help="study spec (YAML/JSON)"),
    timeout: float = typer.Option(None, help="give up after this many seconds"),
) -> None:
    """Run an Optuna study to the end on this machine, then re-run its best setting and the
    baseline on fresh seeds and compare them."""
    run_study(read_study_spec(spec_path), timeout=timeout)


def run_study(spec: StudySpec, *, timeout: float | None) -> None:
    """`plateau search`: the study, with its trials counted as they end and the best so far,
    then the best setting against the baseline on fresh seeds."""
    from db.migrate import ensure_current
    from db.session import session_scope
    from service import studies
    from service.dispatcher import Dispatcher, init_ray

    settings = get_settings()
    url = settings.database_url
    ensure_current(url, migrate=True)
    with session_scope(url) as session:
        study_id = studies.create_study(session=session, spec=spec, settings=settings).id
    console.print(
        f"study [bold]{study_id}[/] '{spec.name}': {spec.n_trials} trials, "
        f"{spec.parallelism} at a time, objective {spec.objective}"
    )
    init_ray(settings, log_to_driver=False)
    dispatcher = Dispatcher(settings)
    state = studies.progress(url=url, study_id=study_id)
    with progress_bar() as bar:
        task = bar.add_task("trials", total=spec.n_trials)

        def update() -> None:
            nonlocal state
            state = studies.progress(url=url, study_id=study_id)
            text, ended = tables.study_progress(state)
            bar.update(task, completed=ended, description=text)

        dispatcher.run(until=lambda: state["state"] != "running", on_tick=update, timeout=timeout)
    best = state["best"]
    if best is None:
        raise fail(f"study {study_id}: no trial completed ({tables.study_progress(state)[0]})")
    console.print(
        f"best trial {best['number']}: {spec.objective} {tables.for_people(best['value'])}"
    )
    show(tables.params_table(best["params"], "best settings"))
    _, sweep_id = studies.confirm(settings=settings, study_id=study_id)
    console.print(
        f"confirming on seeds {spec.confirm_seeds} against the baseline (sweep {sweep_id})"
    )
    dispatcher.run(until=lambda: sum(unfinished_runs(url, sweep_id)) == 0, timeout=timeout)
    with session_scope(url) as session:
        summary = studies.confirmation_summary(
            session=session, sweep_id=sweep_id, budget=spec.fixed.budget.steps
        )
    init = spec.fixed.init
    title = f"best vs baseline ({init.name} init scale {init.scale}), fresh seeds"
    show(tables.confirmation_table(summary, title))
    console.print(f"speed-up of the best setting: {summary['speedup']:.1f}x")
    next_step(f"/studies/{study_id}")


@app.command()
def serve(
    host: str = typer.Option(
        None,
        help="interface to listen on (default PLATEAU_HOST or 127.0.0.1); any address but "
        "loopback requires API keys (README: single-user and team modes)",
    ),
    port: int = typer.Option(8000, help="TCP port"),
    dispatch: bool = typer.Option(True, help="run the dispatcher in this process"),
    schedule: bool = typer.Option(
        None, help="fire schedules in this process (default PLATEAU_SCHEDULE, on)"
    ),
) -> None:
    """Serve the REST API (and, by default, the dispatcher and the scheduler) from one
    process."""
    import uvicorn

    from db import auth as db_auth
    from db.errors import DBError
    from db.migrate import ensure_current
    from db.session import session_scope
    from service import auth
    from service.api.main import create_app

    logging.basicConfig(level=logging.INFO)
    settings = get_settings()
    if host is not None:
        settings = settings.model_copy(update={"host": host})
    try:  # refuse here, with the message alone, rather than in the app's startup
        ensure_current(settings.database_url, migrate=settings.auto_migrate)
        auth.prepare(settings)
    except (auth.AuthConfigError, DBError) as e:
        raise fail(str(e)) from e
    keys_required = auth.forced(settings)
    if keys_required is None:
        with session_scope(settings.database_url) as session:
            keys_required = db_auth.team_configured(session=session)
    err.print(
        f"team mode: API keys required on {settings.host}"
        if keys_required
        else f"single-user mode: no keys needed on {settings.host} (loopback only)"
    )
    app = create_app(settings, dispatch=dispatch, schedule=schedule)
    uvicorn.run(app, host=settings.host, port=port)


@app.command()
def submit(
    spec_path: str = typer.Argument(..., metavar="SPEC"),
    url: str = typer.Option(DEFAULT_URL, help="the plateau service"),
) -> None:
    """Submit a sweep spec (or a study spec: one with a search_space) to a running service."""
    spec = read_any_spec(spec_path)
    if isinstance(spec, SweepSpec):
        response = _request("POST", f"{url}/api/v1/sweeps", json=spec.model_dump(mode="json"))
        body = response.json()
        console.print(f"sweep {body['id']} queued: {body['runs']} runs")
        next_step(f"/sweeps/{body['id']}", url=url)
    else:
        response = _request("POST", f"{url}/api/v1/studies", json=spec.model_dump(mode="json"))
        body = response.json()
        console.print(f"study {body['id']} started: {body['trials']} trials")
        next_step(f"/studies/{body['id']}", url=url)


@app.command()
def status(
    sweep_id: int = typer.Argument(..., metavar="ID"),
    url: str = typer.Option(None, help="a plateau service; default: read DATABASE_URL"),
) -> None:
    """Show a sweep's status and its runs ranked."""
    if url:
        sweep = _request("GET", f"{url}/api/v1/sweeps/{sweep_id}").json()
        runs = _request(
            "GET", f"{url}/api/v1/sweeps/{sweep_id}/runs", params={"limit": 1000}
        ).json()["data"]
    else:
        sweep, runs = sweep_document_from(get_settings().database_url, sweep_id)
    show(tables.ranked_table(runs, tables.sweep_title(sweep)))


def sweep_document_from(
    database_url: str, sweep_id: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The sweep and its runs as the API gives them, read from the database."""
    from db.errors import DBError
    from service.sweeps import sweep_from_db

    try:
        return sweep_from_db(database_url, sweep_id)
    except (LookupError, DBError) as e:
        raise fail(str(e).strip("'\"")) from e


def _request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One call to the service, with the key in PLATEAU_API_KEY when it is set."""
    key = os.environ.get("PLATEAU_API_KEY", "").strip()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.request(method, url, timeout=30, headers=headers, **kwargs)
    except httpx.HTTPError as e:
        raise fail(f"cannot reach {url}: {e}") from e
    if response.status_code >= 400:
        try:
            detail = json.dumps(response.json().get("detail"), indent=1)
        except ValueError:
            detail = response.text
        hint = ""
        if response.status_code == 401 and not key:
            hint = " (set PLATEAU_API_KEY to your API key)"
        raise fail(f"{method} {url} answered {response.status_code}: {detail}{hint}")
    return response


@app.command()
def dispatcher(
    metrics_port: int = typer.Option(
        None, help="serve this dispatcher's Prometheus metrics on this port (default: none)"
    ),
    metrics_host: str = typer.Option("127.0.0.1", help="interface of the metrics port"),
    dispatcher_id: str = typer.Option(
        None, "--id", hidden=True, help="keep this id (the process restarting itself)"
    ),
) -> None:
    """Run a dispatcher: hand queued runs to the Ray cluster (RAY_ADDRESS) as it has room.

    It waits (backing off) while the database or Ray is unreachable, and restarts its own
    process when the Ray cluster it joined is lost, to join it again once Ray is back.
    """
    from db.errors import DBError
    from db.migrate import ensure_current
    from service.dispatcher import (
        Dispatcher,
        RayUnavailable,
        init_ray,
        new_dispatcher_id,
        retry_until_done,
    )

    logging.basicConfig(level=logging.INFO)
    settings = get_settings()
    try:
        retry_until_done(
            lambda: ensure_current(settings.database_url, migrate=False),
            what="database schema check",
            settings=settings,
        )
    except DBError as e:
        raise fail(str(e)) from e
    dispatcher_id = dispatcher_id or new_dispatcher_id()
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_host)

    def restart(e: RayUnavailable) -> None:
        # A Ray driver cannot join a restarted cluster: start afresh, as the same dispatcher.
        log.warning("Ray cluster lost (%s): restarting this dispatcher to join it again", e)
        logging.shutdown()
        argv = [sys.executable, "-m", "service.cli", "dispatcher", "--id", dispatcher_id]
        if metrics_port is not None:
            argv += ["--metrics-port", str(metrics_port), "--metrics-host", metrics_host]
        os.execv(sys.executable, argv)

    worker = Dispatcher(settings, worker_id=dispatcher_id, on_ray_lost=restart)
    # A restarted process keeps its id and gives back what it had reserved before.
    retry_until_done(worker.release, what="release of old reservations", settings=settings)
    retry_until_done(lambda: init_ray(settings), what="joining the Ray cluster", settings=settings)
    worker.run()


@app.command()
def worker(
    address: str | None = typer.Option(None, help="Ray head address (default RAY_ADDRESS)"),
    num_cpus: int = typer.Option(None, help="CPUs this node offers (default: all)"),
    num_gpus: int = typer.Option(None, help="GPUs this node offers (default: all)"),
    pool: str = typer.Option(
        None,
        help=f"the worker group this node belongs to (e.g. cpu-workers, gpu-workers): the "
        f"node label {NODE_POOL_LABEL}, recorded with every run it trains",
    ),
) -> None:
    """Join this machine to the Ray cluster as a worker node (blocks)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise fail("--address (or RAY_ADDRESS) is required: the Ray head to join")
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", f"--address={address}", "--block"]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    if num_gpus is not None:
        cmd.append(f"--num-gpus={num_gpus}")
    labels = node_labels(pool)  # its worker group, and its GPU memory (GPU packs fit it)
    if num_gpus == 0:  # a node that offers no GPU says nothing of GPU memory
        labels.pop(GPU_MEMORY_LABEL, None)
    if labels:
        cmd.append("--labels=" + ",".join(f"{k}={v}" for k, v in labels.items()))
    raise typer.Exit(subprocess.call(cmd))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema at DATABASE_URL to the latest revision."""
    from db.migrate import upgrade
    from db.session import masked_url

    settings = get_settings()
    upgrade(settings.database_url)
    console.print(f"schema at {masked_url(settings.database_url)} is current")


@db_app.command("rebuild-leaderboard")
def db_rebuild_leaderboard() -> None:
    """Recompute the leaderboard's rollup from the recorded results (needed only after results
    were written or deleted outside plateau, e.g. by hand in SQL)."""
    from db.errors import DBError
    from db.leaderboard import rebuild_rollups
    from db.migrate import ensure_current
    from db.session import masked_url, session_scope

    settings = get_settings()
    try:
        ensure_current(settings.database_url, migrate=False)
    except DBError as e:
        raise fail(str(e)) from e
    with session_scope(settings.database_url) as session:
        n = rebuild_rollups(session=session)
    console.print(f"leaderboard rebuilt at {masked_url(settings.database_url)}: {n} rollup rows")


# --------------------------------------------------------------------- users and keys


@contextmanager
def _database() -> Iterator[Session]:
    """A unit of work on DATABASE_URL, its schema current (migrated when allowed)."""
    from db.errors import DBError
    from db.migrate import ensure_current
    from db.session import session_scope

    settings = get_settings()
    try:
        ensure_current(settings.database_url, migrate=settings.auto_migrate)
    except DBError as e:
        raise fail(str(e)) from e
    with session_scope(settings.database_url) as session:
        yield session


def _check_role(role: str | None) -> None:
    from db.models import ROLES

    if role is not None and role not in ROLES:
        raise fail(f"unknown role {role!r}; expected one of: {', '.join(ROLES)}")


def _find_user(session: Session, name: str) -> User:
    from db import auth as db_auth

    user = db_auth.get_user(session=session, name=name)
    if user is None:
        raise fail(f"no user {name!r}; `plateau users list` shows them")
    return user


def _when(value: dt.datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M")


@users_app.command("create")
def users_create(
    name: str = typer.Argument(..., help="letters, digits and . _ @ + - (no spaces)"),
    role: str = typer.Option("member", help="viewer, member or admin"),
) -> None:
    """Create a team user (a legacy user of that name, from a free-text owner, is adopted)."""
    import re

    from db.errors import AlreadyExists
    from service import auth
    from service.schemas import USER_NAME

    _check_role(role)
    if not re.fullmatch(USER_NAME, name) or len(name) > 200:
        raise fail(f"bad user name {name!r}: use letters, digits and . _ @ + - (no spaces)")
    try:
        with _database() as session:
            user = auth.create_user(session=session, name=name, role=role, actor=auth.cli_actor())
            origin = user.origin
    except AlreadyExists as e:
        raise fail(str(e)) from e
    console.print(f"user {escape(name)} ({role}, {origin}) created")
    err.print(f"next: plateau keys create --user {name}")


@users_app.command("list")
def users_list() -> None:
    """Every user: role, origin (team, or legacy: from a free-text owner), state."""
    from db import auth as db_auth

    table = Table(title="users")
    for col in ("name", "role", "origin", "created", "disabled"):
        table.add_column(col)
    with _database() as session:
        for u in db_auth.list_users(session=session):
            table.add_row(
                escape(u.name), u.role, u.origin, _when(u.created_at), _when(u.disabled_at)
            )
    console.print(table)


@users_app.command("update")
def users_update(
    name: str = typer.Argument(...),
    role: str = typer.Option(None, help="viewer, member or admin"),
    disable: bool = typer.Option(None, "--disable/--enable", help="stop (restore) its keys"),
) -> None:
    """Change a user's role, or disable it (its keys and page sessions stop at once)."""
    from service import auth

    _check_role(role)
    if role is None and disable is None:
        raise fail("nothing to change: give --role, --disable or --enable")
    with _database() as session:
        user = _find_user(session, name)
        try:
            changes = auth.update_user(
                session=session, user=user, role=role, disabled=disable, actor=auth.cli_actor()
            )
        except auth.LastAdminError as e:
            raise fail(str(e)) from e
    said = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changes.items())
    console.print(f"user {escape(name)}: {said or 'unchanged'}")


@keys_app.command("create")
def keys_create(
    user: str = typer.Option(..., "--user", help="whose key"),
    name: str = typer.Option("", "--name", help="a label, e.g. laptop"),
) -> None:
    """Create a key and print it, once, alone on stdout (`KEY=$(plateau keys create ...)`)."""
    from service import auth

    with _database() as session:
        owner = _find_user(session, user)
        key, token = auth.create_key(session=session, user=owner, name=name, actor=auth.cli_actor())
        prefix, role = key.prefix, owner.role
    err.print(
        f"key {prefix} of {user} ({role}); it is shown only now; "
        "use it as PLATEAU_API_KEY or sign in to the pages with it:"
    )
    print(token)


@keys_app.command("list")
def keys_list(
    user: str = typer.Option(None, "--user", help="only this user's keys"),
    revoked: bool = typer.Option(False, "--revoked", help="include revoked keys"),
) -> None:
    """Keys by prefix (never the secret), with their user, role and last use."""
    from db import auth as db_auth

    table = Table(title="API keys")
    for col in ("prefix", "user", "role", "name", "created", "last used", "revoked"):
        table.add_column(col)
    with _database() as session:
        owner = _find_user(session, user) if user else None
        for k in db_auth.list_keys(session=session, user=owner, include_revoked=revoked):
            table.add_row(
                k.prefix, escape(k.user.name), k.user.role, escape(k.name),
                _when(k.created_at), _when(k.last_used_at), _when(k.revoked_at),
            )  # fmt: skip
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(prefix: str = typer.Argument(..., help="as `plateau keys list` shows it")) -> None:
    """Revoke a key at once (its page sessions end too)."""
    from db import auth as db_auth
    from service import auth

    with _database() as session:
        key = db_auth.get_key(session=session, prefix=prefix)
        if key is None:
            raise fail(f"no key {prefix!r}; `plateau keys list` shows them")
        done = auth.revoke_key(session=session, key=key, actor=auth.cli_actor())
    console.print(f"key {prefix} {'revoked' if done else 'was already revoked'}")


@keys_app.command("generate")
def keys_generate() -> None:
    """Print a fresh random key without storing it: a value for PLATEAU_ADMIN_KEY."""
    from db.auth import generate_key

    print(generate_key())


@app.command()
def audit(
    limit: int = typer.Option(50, help="events to show, newest first"),
    action: str = typer.Option(None, help="e.g. key.revoke, sweep.cancel"),
    actor: str = typer.Option(None, help="a user's name, or cli:..."),
) -> None:
    """The audit log (on DATABASE_URL directly): keys, users, cancels."""
    from db import audit as db_audit

    table = Table(title="audit log")
    for col in ("when", "actor", "key", "action", "target", "detail"):
        table.add_column(col)
    with _database() as session:
        rows, count = db_audit.list_events(
            session=session, offset=0, limit=limit, action=action, actor=actor
        )
        for e in rows:
            table.add_row(
                _when(e.created_at), escape(e.actor), e.key_prefix or "—", e.action,
                escape(e.target), escape(json.dumps(e.detail)) if e.detail else "",
            )  # fmt: skip
    table.caption = f"{len(rows)} of {count}"
    console.print(table)


@db_app.command("prune-curves")
def db_prune_curves(
    days: float = typer.Option(
        None, help="age in days of the runs to thin (default: PLATEAU_CURVE_RETENTION_DAYS)"
    ),
) -> None:
    """Thin the per-step curves of runs finished DAYS ago to their evaluation steps (the
    results, probes and leaderboard stay); a dispatcher does it every
    PLATEAU_MAINTENANCE_SECONDS when PLATEAU_CURVE_RETENTION_DAYS is set."""
    from db.errors import DBError
    from db.migrate import ensure_current
    from service.maintenance import prune_curves

    settings = get_settings()
    days = days if days is not None else settings.curve_retention_days
    if days is None or days <= 0:
        raise fail("give --days N (N > 0) or set PLATEAU_CURVE_RETENTION_DAYS")
    try:
        ensure_current(settings.database_url, migrate=False)
    except DBError as e:
        raise fail(str(e)) from e
    pruned = prune_curves(settings.database_url, days)
    console.print(
        f"curves of {pruned.runs} runs finished over {days:g} days ago thinned: "
        f"{pruned.rows} per-step rows deleted"
    )


@app.command()
def leaderboard(
    task: str = typer.Option(None, help="e.g. digits", callback=one_of("--task", "task", _tasks)),
    architecture: str = typer.Option(
        None, help="e.g. mlp", callback=one_of("--architecture", "architecture", _architectures)
    ),
    metric: str = typer.Option(
        "steps",
        help="steps (censored at the budget), steps_reached, "
        "reached_rate, final_loss, test_accuracy, plateau_fraction, "
        "divergence_rate, n_runs",
        callback=one_of("--metric", "metric", _metrics),
    ),
    order: str = typer.Option(
        None,
        help="asc or desc (default: the better end first)",
        callback=one_of("--order", "order", lambda: ("asc", "desc")),
    ),
    since: str = typer.Option(None, help="only results since this ISO date"),
    sweep: int = typer.Option(None, help="only runs of this sweep"),
    owner: str = typer.Option(None, help="only sweeps of this owner"),
    torch_version: str = typer.Option(None, help="only runs on this torch version"),
    device: str = typer.Option(None, help="cpu or cuda"),
    limit: int = typer.Option(20, help="rows to show"),
    url: str = typer.Option(None, help="a plateau service; default: read DATABASE_URL"),
) -> None:
    """Configurations ranked over their seeds: the ranking of GET /api/v1/leaderboard."""
    params = {k: v for k, v in locals().items() if k != "url" and v is not None}
    from db.errors import DBError
    from service import leaderboard

    try:
        query = leaderboard.LeaderboardQuery.model_validate(params)
    except ValidationError as e:
        raise fail(format_validation_error(e, what="option", where=option_name)) from e
    if url:
        body = _request("GET", f"{url}/api/v1/leaderboard", params=query.params()).json()
    else:
        try:
            body = leaderboard.leaderboard_from_db(get_settings().database_url, query)
        except DBError as e:
            raise fail(str(e)) from e
    shown = f"{len(body['data'])} of {body['count']} configurations"
    show(tables.leaderboard_table(body["data"], f"leaderboard by {metric}: {shown}"))


@app.command()
def plot(
    run_id: int = typer.Argument(None, metavar="[RUN_ID]", help="a run's figures"),
    sweep: int = typer.Option(
        None, "--sweep", help="a sweep's figures instead (its page's charts)"
    ),
    study: int = typer.Option(
        None, "--study", help="a study's figures instead (its page's charts)"
    ),
    compare: str = typer.Option(
        None, "--compare", help="the compare page's figure for these runs, e.g. 3,7,12"
    ),
    by: str = typer.Option(
        None,
        "--by",
        help="with --sweep: the axis to colour and group runs by",
        callback=one_of("--by", "axis", sweep_axes),
    ),
    probe: int = typer.Option(
        None, "--probe", help="with RUN_ID: which probe (0 = first, -1 = last; default last)"
    ),
    out: str = typer.Option(".", "-o", "--out", help="directory for the figures"),
    fmt: str = typer.Option(
        "svg",
        "--format",
        help="svg, png or pdf",
        callback=one_of("--format", "format", lambda: FIGURE_FORMATS),
    ),
    url: str = typer.Option(None, help="a plateau service; default: read DATABASE_URL"),
) -> None:
    """Write the charts of a run's page (or with --sweep, --study or --compare, of that
    page) as files for papers and reports: the very Vega-Lite specs the pages draw, rendered
    offline. A run's: loss with plateaus, gradient norms by layer, lr and clipping, test
    accuracy or loss, Hessian eigenvalues, and for one probe density, slices, surface and
    interpolation."""
    from pathlib import Path

    from db.errors import DBError
    from service import figures
    from service.figures import sets

    chosen = [name for name, v in (("RUN_ID", run_id), ("--sweep", sweep), ("--study", study),
                                   ("--compare", compare)) if v is not None]  # fmt: skip
    if len(chosen) != 1:
        raise fail("give one of RUN_ID, --sweep, --study or --compare" +
                   (f" (got {', '.join(chosen)})" if chosen else ""))  # fmt: skip
    ids: list[int] = []
    if compare is not None:
        try:
            ids = list(dict.fromkeys(int(part) for part in compare.split(",")))
        except ValueError as e:
            raise fail(f"--compare: expected run ids separated by commas, got {compare!r}") from e
    if url:
        routes: dict[str, tuple[str, dict[str, Any], str]] = {
            "RUN_ID": (f"runs/{run_id}/figures", {"probe": probe}, f"run{run_id}"),
            "--sweep": (f"sweeps/{sweep}/figures", {"by": by}, f"sweep{sweep}"),
            "--study": (f"studies/{study}/figures", {}, f"study{study}"),
            "--compare": (
                "figures/compare",
                {"runs": ",".join(map(str, ids))},
                "compare" + "-".join(map(str, ids)),
            ),
        }
        endpoint, params, prefix = routes[chosen[0]]
        query = {k: v for k, v in params.items() if v is not None}
        specs = _request("GET", f"{url}/api/v1/{endpoint}", params=query).json()["figures"]
    else:
        db = get_settings().database_url
        try:
            if run_id is not None:
                prefix, specs = sets.run_set(db, run_id, probe)
            elif sweep is not None:
                prefix, specs = sets.sweep_set(db, sweep, by)
            elif study is not None:
                prefix, specs = sets.study_set(db, study)
            else:
                prefix, specs = sets.compare_set(db, ids)
        except IndexError as e:
            raise fail(f"--probe: run {run_id} has no probe {probe}") from e
        except (LookupError, DBError) as e:
            raise fail(str(e).strip("'\"")) from e
    paths = figures.write(specs, Path(out), prefix=prefix, fmt=fmt)  # type: ignore[arg-type]
    for path in paths:
        console.print(str(path))


# --- schedules: `plateau schedule ...` through a running service, `plateau scheduler` ------

schedule_app = typer.Typer(
    help="Schedules: a sweep or study spec fired on a cron expression (the nightly watch), "
    "through a running service (`--url`; the key in PLATEAU_API_KEY).",
    no_args_is_help=True,
)
app.add_typer(schedule_app, name="schedule")
SERVICE_URL = typer.Option(DEFAULT_URL, "--url", help="the plateau service")


def schedule_document(
    path: str, *, name: str | None, cron: str | None, timezone: str | None, webhook_url: str | None
) -> dict[str, Any]:
    """A schedule document from a file: either a whole one (with `cron` and `spec`, as
    examples/nightly.yaml) or a sweep or study spec, which then needs --cron. Options
    override the file's fields."""
    try:
        document = load_spec_document(path)
    except SpecError as e:
        raise fail(str(e)) from e
    if "spec" not in document:  # a bare sweep or study spec
        is_study = "search_space" in document or "n_trials" in document
        document = {
            "name": document.get("name", path),
            "kind": "study" if is_study else "sweep",
            "spec": document,
        }
    for key, value in (
        ("name", name),
        ("cron", cron),
        ("timezone", timezone),
        ("webhook_url", webhook_url),
    ):
        if value is not None:
            document[key] = value
    if "cron" not in document:
        raise fail(f"--cron is required: {path} holds a spec without a schedule")
    return document


@schedule_app.command("add")
def add(
    path: str = typer.Argument(..., metavar="FILE", help="a schedule document, or a spec"),
    name: str = typer.Option(None, help="the schedule's name (default: the file's)"),
    cron: str = typer.Option(None, help='a 5-field cron expression, e.g. "0 2 * * *"'),
    timezone: str = typer.Option(None, help="IANA timezone of the cron expression (UTC)"),
    webhook_url: str = typer.Option(None, help="POSTed each night's report"),
    url: str = SERVICE_URL,
) -> None:
    """Create a schedule; its spec is validated now."""
    document = schedule_document(
        path, name=name, cron=cron, timezone=timezone, webhook_url=webhook_url
    )
    body = _request("POST", f"{url}/api/v1/schedules", json=document).json()
    console.print(
        f"schedule {body['id']} created: {body['cron']} ({body['timezone']}), next "
        f"{body['next_slot']}"
    )
    if body.get("webhook_url"):
        console.print(f"webhook secret (shown once): {body['webhook_secret']}")
    next_step(f"/schedules/{body['id']}", url=url)


@schedule_app.command("list")
def list_(url: str = SERVICE_URL) -> None:
    """The schedules."""
    rows = _request("GET", f"{url}/api/v1/schedules", params={"limit": 500}).json()["data"]
    table = Table(title="schedules")
    for column in ("id", "name", "owner", "kind", "cron", "timezone", "state", "nights", "next"):
        table.add_column(column)
    for s in rows:
        table.add_row(
            str(s["id"]),
            s["name"],
            s["owner"],
            s["kind"],
            s["cron"],
            s["timezone"],
            "enabled" if s["enabled"] else "paused",
            str(s["nights"]),
            s["next_slot"] or "—",
        )
    show(table)


def _patch(schedule_id: int, url: str, body: dict[str, Any]) -> dict[str, Any]:
    return _request("PATCH", f"{url}/api/v1/schedules/{schedule_id}", json=body).json()


@schedule_app.command("pause")
def pause(schedule_id: int = typer.Argument(..., metavar="ID"), url: str = SERVICE_URL) -> None:
    """Pause a schedule (it fires nothing until resumed)."""
    _patch(schedule_id, url, {"enabled": False})
    console.print(f"schedule {schedule_id} paused")


@schedule_app.command("resume")
def resume(schedule_id: int = typer.Argument(..., metavar="ID"), url: str = SERVICE_URL) -> None:
    """Resume a schedule; the slots it missed while paused do not fire."""
    body = _patch(schedule_id, url, {"enabled": True})
    console.print(f"schedule {schedule_id} resumed: next {body['next_slot']}")


@schedule_app.command("run")
def run_now(schedule_id: int = typer.Argument(..., metavar="ID"), url: str = SERVICE_URL) -> None:
    """Fire a schedule now, as a night of its own."""
    body = _request("POST", f"{url}/api/v1/schedules/{schedule_id}/run").json()
    made = f"sweep {body['sweep_id']}" if body["sweep_id"] else f"study {body['study_id']}"
    console.print(f"schedule {schedule_id}: night {body['night']} fired as {made}")
    path = f"/sweeps/{body['sweep_id']}" if body["sweep_id"] else f"/studies/{body['study_id']}"
    next_step(path, url=url)


@schedule_app.command("rm")
def remove(schedule_id: int = typer.Argument(..., metavar="ID"), url: str = SERVICE_URL) -> None:
    """Delete a schedule and its history (the sweeps it made stay)."""
    _request("DELETE", f"{url}/api/v1/schedules/{schedule_id}")
    console.print(f"schedule {schedule_id} deleted")


@app.command()
def scheduler() -> None:
    """Fire due schedules against DATABASE_URL (blocks). Any number may run at once: each
    slot fires once."""
    from db.errors import DBError
    from db.migrate import ensure_current
    from service.scheduler import Scheduler

    logging.basicConfig(level=logging.INFO)
    settings = get_settings()
    try:
        ensure_current(settings.database_url, migrate=False)
    except DBError as e:
        raise fail(str(e)) from e
    Scheduler(settings).run()


if __name__ == "__main__":
    app()
