#!/usr/bin/env bash
# Install the Debian packages the real-SLURM test starts (slurm-wlm, munge) when they are missing
# (idempotent; needs root or sudo).
set -euo pipefail
if command -v slurmctld >/dev/null && command -v munged >/dev/null; then
    exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq slurm-wlm munge > /dev/null
