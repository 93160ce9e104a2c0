"""Third-party tasks and architectures, registered through Python entry points.

A distribution declares, in its pyproject.toml:

    [project.entry-points."plateau.tasks"]
    rings = "my_package.plateau_plugin:RINGS"          # a TaskPlugin
    [project.entry-points."plateau.architectures"]
    rbf = "my_package.plateau_plugin:RBF_NET"          # an ArchitecturePlugin

The object an entry point names must be importable without torch (the API validates specs
with its `config` model); `build` is a "module:function" string imported on the workers
only. A request still chooses code only by name: a plugin is code the operator installed.
examples/plugin/ is a worked example.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

TASK_GROUP = "plateau.tasks"
ARCHITECTURE_GROUP = "plateau.architectures"


@dataclass(frozen=True)
class TaskPlugin:
    config: type[BaseModel]  # pydantic model whose `name: Literal["..."]` is the task's name
    build: str  # "module:function", function(config) -> workers.tasks.TaskData
    input_kind: str  # "vector" | "image" | "sequence"


@dataclass(frozen=True)
class ArchitecturePlugin:
    config: type[BaseModel]
    build: str  # "module:function", function(config, normalization, TaskData) -> nn.Module
    input_kinds: frozenset[str]
    normalizations: frozenset[str] = field(default_factory=lambda: frozenset({"none"}))


def _name(plugin: TaskPlugin | ArchitecturePlugin) -> str:
    return plugin.config.model_fields["name"].default


@cache
def task_plugins() -> dict[str, TaskPlugin]:
    return _load(TASK_GROUP, TaskPlugin)


@cache
def architecture_plugins() -> dict[str, ArchitecturePlugin]:
    return _load(ARCHITECTURE_GROUP, ArchitecturePlugin)


def _load(group: str, kind: type) -> dict[str, Any]:
    found = {}
    for point in entry_points(group=group):
        plugin = point.load()
        if not isinstance(plugin, kind):
            raise TypeError(
                f"entry point {point.name!r} of {group} is a "
                f"{type(plugin).__name__}, not a {kind.__name__}"
            )
        if _name(plugin) != point.name:
            raise ValueError(
                f"entry point {point.name!r} of {group} names a config whose "
                f"name is {_name(plugin)!r}"
            )
        found[point.name] = plugin
    return found


def load_build(path: str) -> Callable[..., Any]:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def plugin_versions(*names: str) -> str | None:
    """The distributions (with their versions) that provide the named tasks or
    architectures, for a run's environment: "rings: my-package 1.2.0"; None when every name
    is built in. A plugin's new version can change results with an unchanged config, so the
    nightly watch lays it beside a change of result."""
    found = []
    for group in (TASK_GROUP, ARCHITECTURE_GROUP):
        for point in entry_points(group=group):
            if point.name in names and point.dist is not None:
                found.append(f"{point.name}: {point.dist.name} {point.dist.version}")
    return "; ".join(sorted(found)) or None
