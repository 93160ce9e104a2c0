#!/usr/bin/env bash
# Set up (scripts/install.sh) and run the quickstart sweep on the embedded default:
# a SQLite file (./plateau.db, or DATABASE_URL) and a local Ray instance.
#   ./scripts/quickstart.sh [SPEC]     (default examples/quickstart.yaml)
# PLATEAU=<command> uses that `plateau` instead of installing into .venv (the tests do).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PLATEAU:-}" ]; then
  bash scripts/install.sh
  PLATEAU=.venv/bin/plateau
fi
$PLATEAU run "${1:-examples/quickstart.yaml}"
cat >&2 <<'HINT'
then: `plateau leaderboard` ranks the configurations over seeds, `plateau status ID` shows a
sweep again, `plateau plot RUN_ID` writes a run's figures (`source .venv/bin/activate` puts
`plateau` on your PATH).
HINT
