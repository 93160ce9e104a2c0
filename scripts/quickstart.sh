#!/usr/bin/env bash
# Set up (scripts/install.sh) and run the quickstart sweep on the embedded default:
# a SQLite file (./plateau.db, or DATABASE_URL) and a local Ray instance.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/plateau run "${1:-examples/quickstart.yaml}"
