#!/usr/bin/env bash
# Stop what tests/slurm/start_localhost.sh started: slurmd, slurmctld and munged, each by its
# PID file (the process is checked to carry the expected name; nothing is killed by name).
set -uo pipefail
stop() {  # stop PIDFILE NAME
  local pf="$1" name="$2" pid
  [ -s "$pf" ] || return 0
  pid="$(cat "$pf")"
  if [[ "$pid" =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 75); do [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || break; sleep 0.2; done
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$pf"
}
stop /run/slurm/slurmd.pid slurmd
stop /run/slurm/slurmctld.pid slurmctld
[ "${SLURM_KEEP_MUNGE:-0}" = 1 ] || stop /run/munge/munged.pid munged
echo "[slurm-localhost] stopped"
