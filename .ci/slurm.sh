#!/usr/bin/env bash
# CI step: the workflow on a real single-node SLURM cluster on localhost (tests/test_slurm.py).
#
#   .ci/slurm.sh            (from the repository root, as root, after the .venv is built)
#
# Installs munge + Slurm from Debian, then runs the test, which brings the cluster up
# (tests/slurm/up.sh), runs the toy and the tiny real workflow through
# workflow/profiles/slurm and stops the daemons it started (tests/slurm/down.sh). Where it
# cannot be root or cannot install the packages it prints why and exits 0 (a skip).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
PACKAGES=(munge slurm-wlm slurmctld slurmd slurm-client)

if [ "$(id -u)" != 0 ]; then
  echo "SKIP SLURM test: not root (needs root to install Slurm and start its daemons)"
  exit 0
fi
if ! command -v apt-get >/dev/null && ! command -v slurmctld >/dev/null; then
  echo "SKIP SLURM test: no apt-get to install ${PACKAGES[*]}"
  exit 0
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get update -qq || ! apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; then
    echo "SKIP SLURM test: could not install ${PACKAGES[*]} (no Debian package index reachable?)"
    exit 0
  fi
fi
echo "Slurm: $(slurmctld -V 2>/dev/null || true)"

export XDG_CACHE_HOME=${XDG_CACHE_HOME:-$PWD/.cache} MPLCONFIGDIR=${MPLCONFIGDIR:-$PWD/.cache/matplotlib}
export HALSAL_SLURM_TEST=1
# -s: print the SLURM job ids each test submitted (the CI log's evidence).
exec "$PY" -m pytest tests/test_slurm.py -m slow -q -s -p no:cacheprovider
