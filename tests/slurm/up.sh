#!/usr/bin/env bash
# Bring up a single-node SLURM cluster on localhost for tests/test_slurm.py.
#
#   tests/slurm/up.sh STATE_DIR
#
# Needs root. Installs munge + Slurm from Debian if they are missing, starts munged (unless
# one already answers), slurmctld and slurmd directly (no systemd), each tracked by a pid
# file under STATE_DIR, and waits until the node is idle. Everything the cluster writes
# (config, state, logs, pid files) lives in STATE_DIR; /etc/slurm/slurm.conf becomes a link
# to STATE_DIR/slurm.conf (see below). Clients find the cluster through
# SLURM_CONF=STATE_DIR/slurm.conf. tests/slurm/down.sh STATE_DIR
# stops exactly the daemons this script started.
#
# Exit codes: 0 up; 3 cannot run here (not root / packages cannot be installed), with the
# reason on stderr; anything else: the cluster failed to come up (logs are printed).
set -euo pipefail

STATE=${1:?usage: up.sh STATE_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
CTLD_PORT=${HALSAL_SLURMCTLD_PORT:-6817}
SLURMD_PORT=${HALSAL_SLURMD_PORT:-6818}
# What the node declares (SlurmdParameters=config_overrides makes slurmd trust it): enough
# for the profile's GPU-rule requests, whatever the CI machine really has.
CPUS=${HALSAL_SLURM_CPUS:-16}
GPUS=${HALSAL_SLURM_GPUS:-2}
PACKAGES=(munge slurm-wlm slurmctld slurmd slurm-client)

cannot() { echo "up.sh: cannot run a SLURM cluster here: $*" >&2; exit 3; }

[ "$(id -u)" = 0 ] || cannot "not root (needs root to install packages and start slurmd)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  command -v apt-get >/dev/null || cannot "Slurm is not installed and there is no apt-get"
  echo "up.sh: installing ${PACKAGES[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || cannot "apt-get update failed (no package index reachable?)"
  apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null 2>&1 \
    || cannot "apt-get install ${PACKAGES[*]} failed"
fi

mkdir -p "$STATE"/ctld "$STATE"/spool
STATE=$(cd "$STATE" && pwd)

# --- munge ------------------------------------------------------------------------------
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  echo "up.sh: reusing the munged already running" >&2
else
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge
  chmod 0755 /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=128 status=none
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  fi
  # munged forks; its pid file is ours to stop it by later.
  runuser -u munge -- munged --pid-file=/run/munge/munged.pid
  for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
  cp /run/munge/munged.pid "$STATE/munged.pid"
  munge -n | unmunge >/dev/null || { echo "up.sh: munged does not answer" >&2; exit 1; }
fi

# --- config -----------------------------------------------------------------------------
# RealMemory below what slurmd -C reports (else the node drains), capped for the test.
REAL=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
MEM=$(( REAL * 8 / 10 ))
[ "$MEM" -gt 16000 ] && MEM=16000
sed -e "s|@STATE@|$STATE|g" -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
    -e "s|@CPUS@|$CPUS|g" -e "s|@MEM@|$MEM|g" -e "s|@GPUS@|$GPUS|g" \
    "$HERE/slurm.conf.in" > "$STATE/slurm.conf"
# Stand-in GPUs: the gpu GRES plugin wants one device file per GPU; empty files in STATE do.
# SLURM only counts and hands them out (CUDA_VISIBLE_DEVICES); no job touches them.
echo "# fake GPUs for tests (written by up.sh)" > "$STATE/gres.conf"
for ((i = 0; i < GPUS; i++)); do
  : > "$STATE/gpu$i"
  echo "NodeName=localhost Name=gpu File=$STATE/gpu$i" >> "$STATE/gres.conf"
done
export SLURM_CONF=$STATE/slurm.conf
# Clients find the cluster through SLURM_CONF, but the plugin's job step drops SLURM_*
# variables before its inner `srun` (snakemake-executor-plugin-slurm-jobstep 0.6.1), so
# srun needs the config at the default path: link it there, unless another cluster's
# config is already in place. down.sh removes the link.
if [ -L /etc/slurm/slurm.conf ]; then
  # A link left by an earlier test cluster that is gone (dangling, or its slurmctld dead).
  old=$(readlink /etc/slurm/slurm.conf)
  oldpid=$(cat "$(dirname "$old")/slurmctld.pid" 2>/dev/null || true)
  if [ ! -e "$old" ] || { grep -q '^ClusterName=halsaltest' "$old" \
       && ! { [ -n "$oldpid" ] && [ "$(cat "/proc/$oldpid/comm" 2>/dev/null)" = slurmctld ]; }; }; then
    rm -f /etc/slurm/slurm.conf
  fi
fi
if [ -e /etc/slurm/slurm.conf ] || [ -L /etc/slurm/slurm.conf ]; then
  cannot "/etc/slurm/slurm.conf already exists (another cluster is configured here)"
fi
mkdir -p /etc/slurm
ln -s "$SLURM_CONF" /etc/slurm/slurm.conf

dump_logs() {
  for f in slurmctld.log slurmd.log; do
    echo "---- $STATE/$f (tail)" >&2; tail -n 30 "$STATE/$f" >&2 2>/dev/null || true
  done
}

wait_pidfile() {  # wait for a daemon's pid file, then check the process lives
  for _ in $(seq 100); do [ -s "$1" ] && break; sleep 0.1; done
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null \
    || { echo "up.sh: $2 did not start" >&2; dump_logs; exit 1; }
}

# --- daemons ----------------------------------------------------------------------------
# Both daemonize and write the pid files named in slurm.conf; down.sh kills those pids.
slurmctld -f "$SLURM_CONF"
wait_pidfile "$STATE/slurmctld.pid" slurmctld
slurmd -f "$SLURM_CONF" -N localhost
wait_pidfile "$STATE/slurmd.pid" slurmd

state=""
deadline=$((SECONDS + 60))
while [ "$SECONDS" -lt "$deadline" ]; do
  for d in slurmctld slurmd; do
    kill -0 "$(cat "$STATE/$d.pid")" 2>/dev/null || { echo "up.sh: $d exited" >&2; dump_logs; exit 1; }
  done
  state=$(timeout 10 sinfo -h -n localhost -o %t 2>/dev/null | head -n 1 || true)
  case "$state" in idle|mix|alloc|inval|drain*) break ;; esac
  sleep 0.5
done
case "$state" in
  idle|mix|alloc) ;;
  *) echo "up.sh: node localhost is '${state:-unknown}', not idle" >&2
     sinfo -R >&2 || true; dump_logs; exit 1 ;;
esac
sinfo >&2
echo "SLURM_CONF=$SLURM_CONF"
