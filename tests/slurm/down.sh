#!/usr/bin/env bash
# Stop the daemons tests/slurm/up.sh STATE_DIR started, by the pids it recorded:
# slurmd, slurmctld and (only if up.sh started it) munged, and remove the link up.sh made
# at /etc/slurm/slurm.conf. Nothing else is touched.
#
#   tests/slurm/down.sh STATE_DIR
set -uo pipefail

STATE=${1:?usage: down.sh STATE_DIR}
export SLURM_CONF=$STATE/slurm.conf

# Cancel what is still queued or running on this test cluster, so no job step outlives it.
if [ -s "$STATE/slurmctld.pid" ] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null; then
  scancel --user=root >/dev/null 2>&1 || true
  for _ in $(seq 20); do
    [ -z "$(squeue -h -t running,pending,completing 2>/dev/null)" ] && break
    sleep 0.5
  done
fi

stop() {  # stop PIDFILE NAME: TERM the pid if it is still that daemon, KILL after 10 s
  local pidfile=$1 name=$2 pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$name" ]; then
    echo "down.sh: $name (pid $pid) is not running" >&2
    return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "down.sh: $name (pid $pid) ignored TERM, sending KILL" >&2
    kill -KILL "$pid"
  fi
  echo "down.sh: stopped $name (pid $pid)" >&2
}

stop "$STATE/slurmd.pid" slurmd
stop "$STATE/slurmctld.pid" slurmctld
stop "$STATE/munged.pid" munged
# The link up.sh made, and only if it still points at this cluster's config.
if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$STATE/slurm.conf" ]; then
  rm -f /etc/slurm/slurm.conf
fi
exit 0
