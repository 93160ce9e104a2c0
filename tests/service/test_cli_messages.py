"""What the `plateau` CLI says to a person (issue 12): versions, progress, next steps, help
that reads at 80 columns, and errors that name the bad value and the nearest good one."""

from __future__ import annotations

from tests.service.test_cli import plateau


def test_version_names_the_package_torch_and_its_device():
    result = plateau("--version")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("plateau-bench ") and ", torch 2." in line, line
    assert line.endswith((" on cpu", ")")), line  # "on cpu" or "on cuda (<device name>)"
