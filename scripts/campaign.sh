#!/usr/bin/env bash
# Every stress campaign in full (long: hours on 2 cores). CI runs bounded
# variants of the same tests through ./scripts/test.sh. docs/campaigns.md lists
# each campaign, its quick and full form and the figures of the last full runs.
#
# Two passes: (1) campaigns whose full form is the same test with larger
# numbers (store faults, crash at every call and at every fault point,
# hypothesis model, hostile input, store threads, fsx, namespace model), run
# with the full numbers below; (2) the slow-marked tests (mount crash, store
# kill -9, mount concurrency, big trees). Each campaign prints one summary
# line (rounds, ops, failures, seed); `grep summary` the output for the figures.
# Any variable below can be set beforehand; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export VEGAFS_FAULTS_ALL=${VEGAFS_FAULTS_ALL:-1}
export VEGAFS_FAULTS_STEPS=${VEGAFS_FAULTS_STEPS:-150}
export VEGAFS_CRASH_SEEDS=${VEGAFS_CRASH_SEEDS:-40}
export VEGAFS_HYPOTHESIS_EXAMPLES=${VEGAFS_HYPOTHESIS_EXAMPLES:-2000}
export VEGAFS_HOSTILE_CASES=${VEGAFS_HOSTILE_CASES:-2000}
export VEGAFS_STRESS_SECONDS=${VEGAFS_STRESS_SECONDS:-60}
export VEGAFS_FSX_OPS=${VEGAFS_FSX_OPS:-100000}
export VEGAFS_NS_OPS=${VEGAFS_NS_OPS:-10000}
export VEGAFS_STRESS_ROUNDS=${VEGAFS_STRESS_ROUNDS:-500}
export VEGAFS_CONCURRENCY_SECONDS=${VEGAFS_CONCURRENCY_SECONDS:-300}
status=0
.venv/bin/python -m pytest -s -m "not slow" tests/store_faults tests/stress/test_store_threads.py \
    tests/mount/test_fsx.py tests/mount/test_namespace_model.py "$@" || status=$?
.venv/bin/python -m pytest -s -m slow "$@" || status=$?
exit "$status"
