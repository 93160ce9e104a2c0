#!/usr/bin/env bash
# Set up (scripts/install.sh), make sure PostgreSQL is up, and run the whole test suite
# against SQLite and the real PostgreSQL (PLATEAU_TEST_POSTGRES_URL; default
# postgres@127.0.0.1:5432/test). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# Types first (config: [tool.mypy] in pyproject.toml); a type error fails the run.
.venv/bin/mypy service db

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "PostgreSQL is down; starting it"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
    for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
fi
pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }

# System tools some tests drive: Debian's docker-compose v1 parses docker-compose.yml without
# an engine; Debian's chromium is the browser of the page tests (driven by Playwright).
# Installed when we may (root + apt).
need=()
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]} (apt)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } \
    >/dev/null 2>&1 || echo "warning: could not install ${need[*]}; those tests will skip" >&2
fi

export PLATEAU_REQUIRE_POSTGRES=1
# Browser tests fail instead of skipping when the browser could be installed.
[ -x /usr/bin/chromium ] && export PLATEAU_REQUIRE_BROWSER=1
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"
