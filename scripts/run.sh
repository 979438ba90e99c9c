#!/usr/bin/env bash
# Set up (if needed) and run the workflow; extra arguments go to snakemake (e.g. -n, --configfile).
# After a successful full run it also writes the self-contained HTML report (REPORT, default
# results/report.html); dry runs, lint, report and other inspection runs are passed through as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Jobs call `python -m featurebirth`: the environment's python must come first on PATH.
export PATH="$PWD/.venv/bin:$PATH"
snakemake "$@"
for argument in "$@"; do
    case "$argument" in
        -n | --dry-run | --dryrun | --lint | --report* | --summary | -S | --detailed-summary | -D | --list* | -l | --dag | --rulegraph | --help | -h | --unlock | --touch | -t)
            exit 0 ;;
    esac
done
exec snakemake "$@" --report "${REPORT:-results/report.html}"
