#!/usr/bin/env bash
# Create .venv and install plateau-bench with the right build of torch for this machine.
#
# torch is pinned (pyproject.toml) and installed *first*, from the right place:
#   - a torch 2.13.0 wheel already offered by pip's find-links (e.g. a local CPU wheel): that;
#   - PLATEAU_TORCH=cuda, or auto with nvidia-smi present: PyPI's Linux wheel (CUDA build);
#   - PLATEAU_TORCH=cpu, or auto without a GPU: the PyTorch CPU index (no multi-GB CUDA libs);
#   - TORCH_INDEX_URL=...: that index, whatever the above says (e.g. .../whl/cu126).
# The package install afterwards finds the pin satisfied and fetches no other torch.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0
PYTHON=${PYTHON:-python3}
CPU_INDEX=https://download.pytorch.org/whl/cpu

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "plateau-bench needs Python >= 3.11 (found $("$PYTHON" --version)); set PYTHON=..." >&2
  exit 1
}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# Some pip configurations list index folders that hold nothing for most packages; pip then
# warns once per package. Keep real errors, drop that noise.
quiet_pip() { "${pip[@]}" "$@" 2> >(grep -v "^WARNING: Location" >&2); }

have_torch() {
  .venv/bin/python - "$TORCH_VERSION" <<'PY' 2>/dev/null
import sys, torch
sys.exit(torch.__version__.split("+")[0] != sys.argv[1])
PY
}

local_wheel() {  # a torch wheel of our version in one of pip's find-links folders
  local links
  links="${PIP_FIND_LINKS:-} $(.venv/bin/python -m pip config get global.find-links 2>/dev/null || true)"
  for dir in $links; do
    compgen -G "${dir#file://}/torch-${TORCH_VERSION}*.whl" >/dev/null && return 0
  done
  return 1
}

if ! have_torch; then
  variant=${PLATEAU_TORCH:-auto}
  if [ "$variant" = auto ]; then
    if command -v nvidia-smi >/dev/null 2>&1; then variant=cuda; else variant=cpu; fi
  fi
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    echo "installing torch==$TORCH_VERSION from $TORCH_INDEX_URL"
    quiet_pip "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL"
  elif local_wheel || [ "$variant" = cuda ]; then
    echo "installing torch==$TORCH_VERSION ($variant; pip's configured sources)"
    quiet_pip "torch==$TORCH_VERSION"
  else
    echo "installing torch==$TORCH_VERSION (cpu) from $CPU_INDEX"
    quiet_pip "torch==$TORCH_VERSION" --index-url "$CPU_INDEX"
  fi
fi
quiet_pip -e ".[test]"
.venv/bin/python -c "import torch; print('torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'cpu')"
