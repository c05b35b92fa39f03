#!/usr/bin/env bash
# One command: set everything up, then run the whole test suite (lint, unit
# tests of every layer, real-mount tests, and the bounded stress campaigns).
# Extra arguments go to pytest, e.g. ./scripts/test.sh -k store -x
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check vegafs tests benchmarks examples
echo "== mypy"
.venv/bin/mypy vegafs
echo "== pytest"
# Long campaigns (marked slow) run bounded variants here and in full through
# ./scripts/campaign.sh. A later -m in "$@" overrides this one.
# pytest exits 5 when it collected no tests; that is a failure here, not a pass.
exec .venv/bin/python -m pytest -m "not slow" "$@"
