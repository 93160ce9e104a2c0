"""Servers a fault test starts, owns and stops itself: a private PostgreSQL cluster on its
own port (never the shared server) and a Ray head on its own port and temp dir. Both listen
on 127.0.0.1 only and are removed afterwards."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PG_BIN = (
    Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1])
    if glob.glob("/usr/lib/postgresql/*/bin")
    else None
)


def process_table() -> dict[int, tuple[int, str]]:
    """{pid: (parent pid, command line)} of every process, from /proc (Linux)."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        table[int(entry.name)] = (parent, cmd)
    return table


def descendants(roots: set[int], table: dict[int, tuple[int, str]] | None = None) -> set[int]:
    """`roots` and every process below them."""
    table = process_table() if table is None else table
    found, frontier = set(roots), set(roots)
    while frontier:
        frontier = {pid for pid, (parent, _) in table.items() if parent in frontier} - found
        found |= frontier
    return found


def listening_addresses(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket these processes listen on (/proc/net)."""
    inodes: dict[str, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes[target[8:-1]] = pid
    found = []
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            hex_ip, hex_port = local.split(":")
            raw = bytes.fromhex(hex_ip)
            # /proc/net prints each 32-bit word in host (little-endian) order
            words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
            ip = socket.inet_ntop(
                socket.AF_INET if width == 4 else socket.AF_INET6, b"".join(words)
            )
            found.append((inodes[inode], ip, int(hex_port, 16)))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivatePostgres:
    """`initdb` + `pg_ctl` into a temp dir, trust auth, 127.0.0.1:<free port>. As root the
    server runs as the `postgres` user (it refuses root)."""

    def __init__(self) -> None:
        if PG_BIN is None:
            raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="plateau-pg-"))
        self.data = self.dir / "data"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        else:
            self._as = []

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, text=True, timeout=120)

    def init(self) -> PrivatePostgres:
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust")
        return self.start()

    def start(self) -> PrivatePostgres:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.dir / "server.log"),
            "-w",
            "start",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class RayHead:
    """`ray start --head` on 127.0.0.1:<free port> with its own temp dir and token, so that
    killing it touches no other Ray on the machine (never `ray stop`: it stops every Ray of
    the user). Its workers get `worker_env` (e.g. where to read the database URL)."""

    def __init__(
        self, num_cpus: int, worker_env: dict[str, str], labels: dict[str, str] | None = None
    ) -> None:
        self.labels = labels or {}
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Short: Ray's socket paths under the temp dir must fit a unix socket name.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="plr-"))
        token = self.temp_dir / "token"
        token.write_text(os.urandom(32).hex())
        self.num_cpus = num_cpus
        # For the driver processes too (dispatchers): the same token, the same loopback.
        self.client_env = {
            "RAY_ADDRESS": self.address,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token),
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keep 127.0.0.1 (service/raycluster.py)
            # notice a dead node in ~2 s, not ~15 s
            "RAY_health_check_period_ms": "500",
            "RAY_health_check_timeout_ms": "500",
            "RAY_health_check_failure_threshold": "3",
        }
        self.env = {**os.environ, **self.client_env, **worker_env}

    def start(self) -> RayHead:
        ray = str(Path(sys.executable).parent / "ray")
        subprocess.run(
            [
                ray,
                "start",
                "--head",
                f"--port={self.port}",
                f"--num-cpus={self.num_cpus}",
                "--node-ip-address=127.0.0.1",
                "--include-dashboard=false",
                "--disable-usage-stats",
                f"--temp-dir={self.temp_dir}",
                *self._labels(),
            ],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return self

    def _labels(self) -> list[str]:
        pairs = ",".join(f"{k}={v}" for k, v in self.labels.items())
        return [f"--labels={pairs}"] if pairs else []

    def processes(self) -> dict[int, str]:
        """This head's processes ({pid: command line}): those naming its temp dir, and their
        descendants."""
        table = process_table()
        mine = {pid for pid, (_, cmd) in table.items() if str(self.temp_dir) in cmd}
        return {pid: table[pid][1] for pid in descendants(mine, table)}

    def kill_raylet(self) -> None:
        raylets = [pid for pid, cmd in self.processes().items() if "/raylet/raylet" in cmd]
        assert len(raylets) == 1, raylets
        os.kill(raylets[0], signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL every process of this head (a crash, and also how it is stopped)."""
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.2)

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class RayNode:
    """A second Ray node joined to a `RayHead` on this machine (`ray start --address ...
    --block`, in a session of its own, with its own CPUs, resources, labels and temp dir), as
    a worker machine of a team cluster joins. `kill` is the machine dying: SIGKILL to every
    process of the node, the head's untouched."""

    def __init__(
        self, head: RayHead, *, num_cpus: int, labels: dict[str, str], resources: dict[str, float]
    ) -> None:
        self.head, self.num_cpus, self.labels, self.resources = head, num_cpus, labels, resources
        self.temp_dir = Path(tempfile.mkdtemp(prefix="prn-"))
        self.proc: subprocess.Popen | None = None

    def start(self) -> RayNode:
        import json

        root = Path(__file__).parents[2]
        with open(self.temp_dir / "start.log", "w") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.service.ray_node",  # `ray`, let through to a loopback head
                    "start",
                    f"--address={self.head.address}",
                    f"--num-cpus={self.num_cpus}",
                    f"--resources={json.dumps(self.resources)}",
                    "--labels=" + ",".join(f"{k}={v}" for k, v in self.labels.items()),
                    "--node-ip-address=127.0.0.1",
                    "--disable-usage-stats",
                    f"--temp-dir={self.temp_dir}",
                    "--block",
                ],
                env=self.head.env,
                cwd=root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_joined(self, timeout: float = 60) -> None:
        """Until the head's cluster lists this node's resources (`ray status`)."""
        ray = str(Path(sys.executable).parent / "ray")
        marker = next(iter(self.resources))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, "the node's ray start died"
            status = subprocess.run(
                [ray, "status", f"--address={self.head.address}"],
                env=self.head.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if marker in status.stdout:
                return
            time.sleep(1)
        raise AssertionError(f"node with {marker} did not join within {timeout:.0f} s")

    def processes(self) -> set[int]:
        assert self.proc is not None
        table = process_table()
        mine = {pid for pid, (_, cmd) in table.items() if str(self.temp_dir) in cmd}
        return descendants({self.proc.pid} | mine, table)

    def kill(self) -> None:
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(15)

    def remove(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
