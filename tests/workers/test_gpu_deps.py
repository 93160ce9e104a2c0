"""The CUDA tests run where only torch, pytest, pydantic and scikit-learn are installed (the
lent GPU machine has no Ray, database or Optuna): scripts/gpu_check.sh runs the files listed
in tests/workers/GPU_TESTS, and this collects them with those packages made unimportable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ABSENT = ("ray", "sqlalchemy", "optuna", "fastapi", "yaml", "psycopg", "httpx", "typer")

BLOCKER = f"""
import sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT!r}:
            raise ImportError(f"{{name}} is not installed on the GPU machine")
sys.meta_path.insert(0, Absent())
"""


def collect(blocker: Path, *args: str) -> subprocess.CompletedProcess:
    """`pytest --collect-only` of `args` in a Python that cannot import ABSENT."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env={"PYTHONPATH": f"{blocker}:{ROOT}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_gpu_tests_need_no_service_package(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    files = (ROOT / "tests/workers/GPU_TESTS").read_text().split()
    out = collect(tmp_path, "-m", "gpu", *files)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    collected = [line for line in out.stdout.splitlines() if "::" in line]
    assert len(collected) >= 40, out.stdout[-2000:]
    # The blocker works: the same collection of a module that imports the database fails.
    out = collect(tmp_path, "tests/workers/test_settings.py")
    assert out.returncode != 0 and "not installed on the GPU machine" in out.stdout + out.stderr
