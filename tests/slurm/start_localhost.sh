#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (controller and compute node on 127.0.0.1)
# with two partitions, `cpu` (the default) and `gpu`, for the workflow's cluster test and for
# trying profiles/slurm by hand. Needs root; no systemd. Installs slurmctld, slurmd,
# slurm-client and munge with apt-get when they are missing. Idempotent: a second call with the
# same settings only checks that the node is up.
#
#   bash tests/slurm/start_localhost.sh        # then: sinfo; stop: bash tests/slurm/stop_localhost.sh
#
# Environment:
#   SLURM_FAKE_GPUS=1   GPUs the node declares (device nodes cloned from /dev/null: jobs asking
#                       for --gpus are accepted and run on the CPU); 0: none
#   SLURM_NO_INSTALL=1  never call apt-get (exit 3 when the binaries are missing)
#   SLURM_WAIT=60       seconds to wait for the node to become idle
# Accounting is off (no slurmdbd): sacct answers "accounting storage is disabled", which is the
# case profiles/slurm is set up for (status by squeue).
# Exit status: 0 ready; 3 SLURM cannot be installed here; 1 any other failure (logs printed).
set -euo pipefail

GPUS="${SLURM_FAKE_GPUS:-1}"
WAIT="${SLURM_WAIT:-60}"
CONF=/etc/slurm/slurm.conf
GRES=/etc/slurm/gres.conf
RUN=/run/slurm
LOGS=/var/log/slurm
say() { echo "[slurm-localhost] $*"; }
fail() {
  echo "[slurm-localhost] error: $*" >&2
  for f in "$LOGS/slurmctld.log" "$LOGS/slurmd.log"; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done
  exit 1
}
running() {  # running PIDFILE NAME: the process in PIDFILE exists and is called NAME
  [ -s "$1" ] || return 1
  local pid; pid="$(cat "$1")"
  [[ "$pid" =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ]
}

[ "$(id -u)" = 0 ] || { echo "[slurm-localhost] needs root" >&2; exit 3; }
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null; then
  if [ "${SLURM_NO_INSTALL:-0}" = 1 ] || ! command -v apt-get >/dev/null; then
    echo "[slurm-localhost] SLURM is not installed and cannot be installed here (no apt-get)" >&2; exit 3
  fi
  say "installing slurmctld slurmd slurm-client munge"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge; } \
    >/tmp/slurm-localhost-apt.log 2>&1 || { tail -n 5 /tmp/slurm-localhost-apt.log >&2; exit 3; }
fi

# munge: the key, then the daemon as user munge
mkdir -p /etc/munge /run/munge /var/log/munge /var/lib/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chown munge:munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge
if ! running /run/munge/munged.pid munged; then
  rm -f /run/munge/munge.socket.2*
  runuser -u munge -- /usr/sbin/munged || fail "munged did not start"
fi
for _ in $(seq 50); do munge -n </dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
munge -n </dev/null | unmunge >/dev/null 2>&1 || fail "munge does not answer"

# slurm.conf from what slurmd detects on this machine
HOST="$(hostname -s)"
getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >>/etc/hosts
HW="$(slurmd -C | head -n 1 | sed 's/^NodeName=[^ ]* //; s/ UpTime=.*//')"
mkdir -p /etc/slurm "$RUN" "$LOGS" /var/spool/slurmctld /var/spool/slurmd
NODE_GRES=""; GRES_TYPES=""
if [ "$GPUS" -gt 0 ]; then
  NODE_GRES="Gres=gpu:$GPUS"; GRES_TYPES="GresTypes=gpu"
  mkdir -p /run/slurm-fakegpu
  for i in $(seq 0 $((GPUS - 1))); do [ -c "/run/slurm-fakegpu/gpu$i" ] || mknod "/run/slurm-fakegpu/gpu$i" c 1 3; done
  WANT_GRES="NodeName=$HOST Name=gpu File=/run/slurm-fakegpu/gpu[0-$((GPUS - 1))]"
else
  WANT_GRES=""
fi
WANT="$(cat <<CONF
# one-node test cluster written by tests/slurm/start_localhost.sh
ClusterName=localhost
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
ReturnToService=2
MailProg=/bin/true
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=300
InactiveLimit=0
KillWait=10
$GRES_TYPES
NodeName=$HOST NodeAddr=127.0.0.1 $HW $NODE_GRES State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL Default=NO MaxTime=INFINITE State=UP
CONF
)"
CHANGED=0
if [ "$(cat "$CONF" 2>/dev/null)" != "$WANT" ]; then echo "$WANT" >"$CONF"; CHANGED=1; fi
if [ "$(cat "$GRES" 2>/dev/null)" != "$WANT_GRES" ]; then echo "$WANT_GRES" >"$GRES"; CHANGED=1; fi
if [ "$CHANGED" = 1 ]; then
  for d in slurmd slurmctld; do
    if running "$RUN/$d.pid" "$d"; then kill "$(cat "$RUN/$d.pid")"; for _ in $(seq 50); do running "$RUN/$d.pid" "$d" || break; sleep 0.2; done; fi
  done
fi
running "$RUN/slurmctld.pid" slurmctld || slurmctld -i || fail "slurmctld did not start"
for _ in $(seq 50); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
running "$RUN/slurmd.pid" slurmd || slurmd || fail "slurmd did not start"

state=""
for _ in $(seq "$WAIT"); do
  state="$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n 1 || true)"
  case "$state" in
    idle|mixed|allocated|completing) break ;;
    down*|drain*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
  esac
  sleep 1
done
case "$state" in idle|mixed|allocated|completing) ;; *) fail "node $HOST is '$state' after ${WAIT}s" ;; esac
say "ready: node $HOST ($state), partitions cpu (default) and gpu, $GPUS fake GPU(s), no accounting"
