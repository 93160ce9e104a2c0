"""The plugin's declarations: config models and where the code lives. No torch here, so
the API process can validate specs that name these entries without importing torch."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from workers.plugins import ArchitecturePlugin, TaskPlugin


class RingsTask(BaseModel):
    """Points on concentric noisy rings; the label is the ring."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["rings"] = "rings"
    n_rings: int = Field(3, ge=2, le=20)
    noise: float = Field(0.05, ge=0)
    n_train: int = Field(1000, ge=16)
    n_test: int = Field(300, ge=16)


class RBFArch(BaseModel):
    """Gaussian radial basis functions with learned centers and widths, then a linear layer."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["rbf"] = "rbf"
    centers: int = Field(32, ge=1, le=4096)


RINGS = TaskPlugin(config=RingsTask, build="plateau_rings.build:make_rings", input_kind="vector")
RBF = ArchitecturePlugin(
    config=RBFArch, build="plateau_rings.build:build_rbf", input_kinds=frozenset({"vector"})
)
