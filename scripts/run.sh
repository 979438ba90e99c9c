#!/usr/bin/env bash
# Set up (if needed) and run the workflow; extra arguments go to snakemake (e.g. -n, --configfile).
# After a successful full run it also writes the self-contained HTML report (REPORT, default
# the report path of featurebirth.layout); dry runs, lint, report and other inspection runs are passed through as they are.
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
# the default report path is layout.report_path of the schema's default results folder
default_report=$(python -c 'from featurebirth import config, layout; print(layout.report_path(config.load_schema()["properties"]["results"]["default"]))')
exec snakemake "$@" --report "${REPORT:-$default_report}"
