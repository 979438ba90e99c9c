"""featurebirth: when (step), where (layer) and at what scale categorical SAE features are born.

The grid model x step x layer expands into per-cell jobs; see README.md and the design notes.
"""

import gc
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")
# Planning 30,000 cells allocates millions of long-lived objects; collecting the young generation
# every 100,000 allocations instead of 700 takes about a tenth off `snakemake -n` (benchmarks/dry_run.py).
gc.set_threshold(100_000, 50, 100)

LIBRARY = Path(workflow.basedir) / "workflow"
sys.path.insert(0, str(LIBRARY))
# Jobs (local, SLURM or conda) import the library from the repository checkout.
# Compute jobs read hub revisions from the local cache only (the prefetch rule opts out).
shell.prefix(f"export PYTHONPATH={LIBRARY}${{{{PYTHONPATH:+:$PYTHONPATH}}}} HF_HUB_OFFLINE=1; ")

from featurebirth.config import ConfigError, validate_config

# The embedded default, unless the user names a config (Snakemake would deep-merge the two).
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


try:
    config.update(validate_config(config))
except ConfigError as error:
    raise WorkflowError(f"Invalid configuration: {error}") from None


include: "workflow/rules/common.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/text.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/sae.smk"
include: "workflow/rules/score.smk"
include: "workflow/rules/cube.smk"
include: "workflow/rules/figures.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        rules.tables.output,
        all_figures(),
