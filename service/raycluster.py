"""The process's Ray connection: starting or joining it, and asking the cluster how it is.

Questions to the cluster go to Ray's GCS, and such a call can hang for a minute while the GCS
is down, so every question runs in one helper thread and is answered within a timeout; a
question still unanswered from before answers "unavailable" at once. Nothing here trusts
`ray.is_initialized()`: it says this process once connected, not that the cluster is there.

The embedded instance (no RAY_ADDRESS) is bound to 127.0.0.1, whatever address the API
listens on, and gets the database URL in its environment for the workers it starts
(workers/settings.py), never in a task's arguments.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, replace
from typing import Any

from service.settings import Settings

LOOPBACK = "127.0.0.1"

# The Ray node label naming a node's worker group (head, cpu-workers, gpu-workers): set by
# `plateau worker --pool`, docker-compose.yml and deploy/k8s/raycluster.yaml alike, and
# recorded with each run (workers.train.ray_node).
NODE_POOL_LABEL = "plateau.dev/pool"
# The Ray node label giving the memory of a node's smallest GPU in MiB: set by `plateau worker`
# and the embedded instance from nvidia-smi, by hand in a manifest; the dispatcher sizes GPU
# packs to fit the smallest such GPU (PLATEAU_GPU_MEMORY_GIB where no node says).
GPU_MEMORY_LABEL = "plateau.dev/gpu-memory-mib"


@dataclass(frozen=True)
class ClusterState:
    """What the Ray cluster can do now, as this process's Ray driver sees it."""

    ok: bool
    nodes: int = 0  # alive nodes
    cpus: float = 0.0  # CPUs of the alive nodes
    free_cpus: float = 0.0  # CPUs no task holds now
    gpus: float = 0.0
    free_gpus: float = 0.0
    gpu_memory_mib: int | None = None  # the smallest GPU memory a GPU node's label gives
    error: str | None = None
    # The driver's connection is unusable (no answer, or its own node died): only a new
    # process can join the cluster again. False for a cluster that answers but has no CPUs.
    lost: bool = False

    def as_dict(self) -> dict[str, Any]:
        shown = {k: v for k, v in asdict(self).items() if v is not None}
        if not self.lost:
            del shown["lost"]
        return shown


def _keep_ray_on_loopback() -> None:
    # Ray replaces a loopback node address by the machine's reachable IP, and then binds its
    # GCS, raylet and workers there, unless it is told the instance is single-node: the
    # setting ray_constants.ENABLE_RAY_CLUSTER, read from this variable when ray is first
    # imported (despite its name it applies on Linux too). Set before the import when we
    # can, else on the module. tests/service/test_secrets.py checks every listening socket
    # of the embedded instance.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if "ray" in sys.modules:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def _keep_token_auth_quietly() -> None:
    # A new local Ray instance turns token authentication on when RAY_AUTH_MODE is unset,
    # and warns on every start that it did ("Token authentication is enabled for this Ray
    # cluster. Set RAY_AUTH_MODE=disabled to opt out"). We want it on: saying so ourselves
    # keeps it, without the warning. A RAY_AUTH_MODE the user set wins.
    if "RAY_AUTH_MODE" in os.environ:
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    if "ray" in sys.modules:  # Ray reads its config once; refresh it, as Ray itself does
        from ray._raylet import Config  # type: ignore[attr-defined]

        Config.initialize("")


def local_gpu_memory_mib() -> int | None:
    """The memory of this machine's smallest NVIDIA GPU in MiB, from nvidia-smi (no torch in
    the service); None without GPUs or the tool."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    sizes = [int(line.strip()) for line in out.splitlines() if line.strip().isdigit()]
    return min(sizes) if sizes else None


def node_labels(pool: str | None = None) -> dict[str, str]:
    """The plateau labels of a Ray node started on this machine: its worker group, and its
    GPU memory where it has GPUs."""
    labels = {NODE_POOL_LABEL: pool} if pool else {}
    memory = local_gpu_memory_mib()
    if memory is not None:
        labels[GPU_MEMORY_LABEL] = str(memory)
    return labels


def init_ray(settings: Settings, *, log_to_driver: bool = True) -> None:
    """Connect to RAY_ADDRESS, or start the embedded local Ray instance on 127.0.0.1."""
    if settings.ray_address:
        import ray

        if not ray.is_initialized():
            ray.init(address=settings.ray_address, log_to_driver=log_to_driver)
        return
    if is_driver():
        return
    # The workers this instance starts inherit the environment: that is how they learn the
    # database URL (a task argument would be recorded by Ray and readable by its clients).
    os.environ["PLATEAU_DATABASE_URL"] = settings.database_url
    for name in ("PLATEAU_DATABASE_URL_FILE", "DATABASE_URL_FILE"):  # it would win over it
        os.environ.pop(name, None)
    _keep_ray_on_loopback()
    _keep_token_auth_quietly()
    import ray

    ray.init(
        num_cpus=settings.ray_num_cpus or os.cpu_count() or 1,
        include_dashboard=False,
        log_to_driver=log_to_driver,
        # Ray's own log level for its driver-side messages: its start-up notes ("Started a
        # local Ray instance.") go; its warnings and errors stay.
        logging_level=logging.WARNING,
        _node_ip_address=LOOPBACK,
        labels=node_labels(),
    )


_lock = threading.Lock()
_pending: Future[ClusterState] | None = None


def _ask() -> ClusterState:
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    free = ray.available_resources()
    mine = ray.get_runtime_context().get_node_id()
    cpus = sum(float(n.get("Resources", {}).get("CPU", 0)) for n in alive)
    gpus = sum(float(n.get("Resources", {}).get("GPU", 0)) for n in alive)
    memory = [
        int(n["Labels"][GPU_MEMORY_LABEL])
        for n in alive
        if float(n.get("Resources", {}).get("GPU", 0)) > 0
        and str((n.get("Labels") or {}).get(GPU_MEMORY_LABEL, "")).isdigit()
    ]
    state = ClusterState(
        ok=True,
        nodes=len(alive),
        cpus=cpus,
        free_cpus=float(free.get("CPU", 0)),
        gpus=gpus,
        free_gpus=float(free.get("GPU", 0)),
        gpu_memory_mib=min(memory) if memory else None,
    )
    if not any(n.get("NodeID") == mine for n in alive):
        # A driver submits through its own node's raylet: without it nothing can start, and
        # a driver cannot move to another node.
        return replace(state, ok=False, lost=True, error="this process's Ray node is dead")
    if cpus <= 0:
        return replace(state, ok=False, error="no CPUs in the cluster")
    return state


def _answer(future: Future[ClusterState]) -> None:
    try:
        future.set_result(_ask())
    except BaseException as e:
        future.set_exception(e)


def cluster_state(timeout: float) -> ClusterState:
    """The cluster's state within `timeout` seconds, or not ok with the reason. Needs this
    process to be a Ray driver (init_ray). Callers at the same time share one question; a
    question still hanging from before is waited for, not asked again."""
    global _pending
    with _lock:
        future = _pending
        if future is None or future.done():
            future = _pending = Future()
            # A daemon thread, not an executor's: a call hanging on a dead GCS must not
            # hold up the process's exit.
            threading.Thread(target=_answer, args=(future,), daemon=True, name="ray-state").start()
    try:
        return future.result(timeout=timeout)
    except FutureTimeout:
        return ClusterState(ok=False, lost=True, error=f"Ray did not answer within {timeout:g} s")
    except Exception as e:  # the GCS refused, or the driver is disconnected
        error = f"{type(e).__name__}: {str(e).strip()[:200]}"
        return ClusterState(ok=False, lost=True, error=error)


def is_driver() -> bool:
    """Whether this process has joined a Ray cluster, without importing ray otherwise."""
    if "ray" not in sys.modules:
        return False
    import ray

    return bool(ray.is_initialized())
