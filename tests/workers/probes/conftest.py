"""Fixtures of the probe tests: every test runs on the CPU, and on CUDA when there is one.

``trained`` gives the small trained networks of ``trained.py`` with their dense Hessians.
"""

from __future__ import annotations

import pytest
import torch

from tests.workers.probes.trained import NAMES, Trained, build

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, CUDA])])
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(scope="session", params=NAMES)
def trained(request: pytest.FixtureRequest) -> Trained:
    """A small trained float64 network with its dense Hessian (built once per session)."""
    return build(request.param)
