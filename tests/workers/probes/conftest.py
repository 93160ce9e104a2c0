"""Fixtures of the probe tests: every test runs on the CPU, and on CUDA when there is one."""

from __future__ import annotations

import pytest
import torch

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, CUDA])])
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)
