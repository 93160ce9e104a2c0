"""The seeded examples in the probe modules' docstrings still hold."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "",
    ".hvp",
    ".lanczos",
    ".power",
    ".hutchinson",
    ".hutchpp",
    ".xtrace",
    ".density",
    ".radau",
    ".slices",
]


@pytest.mark.parametrize("suffix", MODULES)
def test_docstring_examples(suffix):
    module = importlib.import_module("workers.probes" + suffix)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
