#!/usr/bin/env bash
# Set up (if needed) and run the workflow; extra arguments go to snakemake (e.g. -n, --configfile).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/snakemake "$@"
