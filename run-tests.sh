#!/usr/bin/env bash
# Set up (Debian packages + venv) and run every check: lint, types, and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check src tests benchmarks
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
.venv/bin/pytest -q -p no:cacheprovider "$@"
