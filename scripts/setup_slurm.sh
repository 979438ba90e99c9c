#!/usr/bin/env bash
# Install the Debian packages the real-SLURM test starts (slurm-wlm, munge) when they are missing
# (idempotent; needs apt-get and root or sudo). The SLURM tier runs it itself (the `slurm_cluster`
# fixture in tests/test_slurm.py), so only that tier needs it; `scripts/test.sh` does not call it.
set -euo pipefail
if command -v slurmctld >/dev/null && command -v munged >/dev/null; then
    exit 0
fi
fail() { echo "setup_slurm.sh: $*" >&2; exit 1; }
command -v apt-get >/dev/null || fail "slurm-wlm and munge are missing and apt-get is not available to install them"
SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || fail "slurm-wlm and munge are missing; installing them needs root or sudo"
    # without a terminal (under pytest) sudo must not wait for a password: it fails and says so
    if [ -t 0 ]; then SUDO="sudo"; else SUDO="sudo -n"; fi
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq slurm-wlm munge > /dev/null
