"""Third-party entries through entry points, with the worked example in examples/plugin.

The plugin is made visible the way pip would: a dist-info folder with entry_points.txt on
sys.path (of a subprocess, since registries are read once at import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PLUGIN_SRC = ROOT / "examples" / "plugin" / "src"


def installed_plugin(tmp_path: Path) -> dict[str, str]:
    info = tmp_path / "plateau_rings-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plateau-rings\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        "[plateau.tasks]\nrings = plateau_rings:RINGS\n\n"
        "[plateau.architectures]\nrbf = plateau_rings:RBF\n"
    )
    path = os.pathsep.join([str(tmp_path), str(PLUGIN_SRC), str(ROOT)])
    return {**os.environ, "PYTHONPATH": path}


def run_python(code: str, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_plugin_task_and_architecture_train(tmp_path):
    result = run_python(
        """
import json
from service.spec import SweepSpec
from workers.train import train
spec = SweepSpec.model_validate({"name": "p", "task": {"name": "rings", "n_rings": 3},
    "architectures": [{"name": "rbf", "centers": 24}, {"name": "mlp", "depth": 1}],
    "optimizers": [{"name": "adam", "lr": 0.05}], "budget": {"steps": 150, "batch_size": 64}})
results = [train(c) for c in spec.expand()]
print(json.dumps({"losses": [(r.losses[0], r.final_loss) for r in results],
                  "plugins": [r.environment.get("plugins") for r in results]}))
""",
        installed_plugin(tmp_path),
    )
    for first, final in result["losses"]:
        assert final < 0.7 * first
    # each run records the plugin distributions it used (the nightly watch compares them)
    assert result["plugins"] == [
        "rbf: plateau-rings 0.1.0; rings: plateau-rings 0.1.0",
        "rings: plateau-rings 0.1.0",
    ]


def test_plugin_specs_validate_without_torch_and_keep_the_rules(tmp_path):
    result = run_python(
        """
import json, sys
from pydantic import ValidationError
from service.spec import SweepSpec
base = {"name": "p", "task": "rings", "optimizers": [{"name": "sgd", "lr": 0.1}]}
ok = SweepSpec.model_validate(base | {"architectures": [{"name": "rbf"}]})
errors = {}
for name, arch in {"norm": [{"name": "rbf"}], "unknown": [{"name": "rbff"}],
                   "reader": [{"name": "cnn"}]}.items():
    try:
        SweepSpec.model_validate(base | {"architectures": arch} |
                                 ({"normalization": ["batchnorm"]} if name == "norm" else {}))
    except ValidationError as e:
        errors[name] = str(e)
print(json.dumps({"runs": ok.grid_size(), "errors": errors,
                  "torch": "torch" in sys.modules}))
""",
        installed_plugin(tmp_path),
    )
    assert result["runs"] == 1 and result["torch"] is False
    assert "not offered for architecture 'rbf'" in result["errors"]["norm"]
    assert "'rbf'" in result["errors"]["unknown"] and "'rbff'" in result["errors"]["unknown"]
    assert "cannot read the vector inputs of task 'rings'" in result["errors"]["reader"]
