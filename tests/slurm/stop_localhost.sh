#!/usr/bin/env bash
# Stop what tests/slurm/start_localhost.sh started: slurmd, slurmctld and munged, each by its
# PID file (the process is checked to carry the expected name; nothing is killed by name).
# Then the slurm.conf that script wrote is removed (a file it did not write is left alone):
# with a configuration naming a stopped controller, every SLURM client call retries for about
# 10 s — and snakemake's SLURM executor plugin calls `scontrol show config` whenever snakemake
# starts, so each snakemake run on this machine would wait that long.
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
if grep -q "written by tests/slurm/start_localhost.sh" /etc/slurm/slurm.conf 2>/dev/null; then
  rm -f /etc/slurm/slurm.conf /etc/slurm/gres.conf
fi
echo "[slurm-localhost] stopped"
