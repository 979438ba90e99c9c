#!/usr/bin/env bash
# Set up (if needed) and run the test suite; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup_slurm.sh
# Workflow jobs call `python -m featurebirth`: the environment's python must come first on PATH.
export PATH="$PWD/.venv/bin:$PATH"
exec python -m pytest "$@"
