"""What every benchmark prints about the machine it ran on: the CPU, its load, and where its
CPU time went (by process role, and the steal of a virtual machine)."""

from __future__ import annotations

import os
import platform
import time


def cpu() -> str:
    """The CPU model and the number of logical CPUs."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} logical CPUs"


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


# --- where the CPU went: seconds by process role, and the VM's steal -------------------------

TICKS = os.sysconf("SC_CLK_TCK")
RAY_SYSTEM = ("gcs_server", "raylet", "log_monitor", "dashboard", "runtime_env", "monitor.py")


def _role(pid: int, cmdline: str) -> str:
    if pid == os.getpid():
        return "driver"  # this process: the benchmark, and the dispatcher's threads
    if "default_worker.py" in cmdline or cmdline.startswith("ray::"):
        return "ray workers"
    if any(name in cmdline for name in RAY_SYSTEM):
        return "ray system"
    if "multiprocessing" in cmdline:
        return "pool"  # the benchmark's own worker processes
    return "other"


def _cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) each role's live processes have used since they started,
    and the machine's steal seconds (time the hypervisor ran something else) and busy seconds."""
    by_role: dict[str, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended meanwhile
            continue
        seconds = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
        role = _role(int(entry.name), cmdline)
        by_role[role] = by_role.get(role, 0.0) + seconds
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    by_role["machine busy"] = (user + nice + system + irq + softirq) / TICKS
    by_role["machine steal"] = steal / TICKS
    return by_role


class CpuMeter:
    """CPU seconds by role over a stretch of work: `with CpuMeter() as m: ...; m.used`.
    Processes that end inside the stretch are not counted (Ray's workers and a pool's do
    not)."""

    def __enter__(self) -> CpuMeter:
        self._start = _cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        end = _cpu_seconds()
        self.used = {k: max(0.0, v - self._start.get(k, 0.0)) for k, v in end.items()}


def speed() -> float:
    """Seconds of one fixed piece of pure-Python work on this core now: read beside a
    benchmark's figures, it shows whether the machine itself got slower."""
    started = time.perf_counter()
    total = 0
    for i in range(2_000_000):
        total += i * i
    return time.perf_counter() - started
