#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, every tier (this is CI); extra arguments go to pytest.
# The SLURM tier installs its Debian packages itself (scripts/setup_slurm.sh) when it runs.
# Fast tier only: bash scripts/test.sh -m "not workflow and not slurm"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Workflow jobs call `python -m featurebirth`: the environment's python must come first on PATH.
export PATH="$PWD/.venv/bin:$PATH"
exec python -m pytest "$@"
