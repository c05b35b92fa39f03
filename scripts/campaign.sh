#!/usr/bin/env bash
# The full stress campaigns (long: tens of minutes to hours on 2 cores): the
# slow-marked tests, with the full round counts. CI runs bounded variants of the
# same tests through ./scripts/test.sh. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export VEGAFS_STRESS_ROUNDS=${VEGAFS_STRESS_ROUNDS:-200}
export VEGAFS_FSX_OPS=${VEGAFS_FSX_OPS:-100000}
exec .venv/bin/python -m pytest -m slow "$@"
