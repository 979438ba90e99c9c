#!/usr/bin/env bash
# Set up (if needed) and run the workflow; extra arguments go to snakemake (e.g. -n, --configfile).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Jobs call `python -m featurebirth`: the environment's python must come first on PATH.
export PATH="$PWD/.venv/bin:$PATH"
exec snakemake "$@"
