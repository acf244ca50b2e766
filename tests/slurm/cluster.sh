#!/usr/bin/env bash
# A one-node SLURM cluster for tests and benchmarks (Debian slurm-wlm, slurmdbd + MariaDB accounting so the executor
# plugin's default sacct status checks run as on a real cluster, one fake GPU). Source it, then:
#   cluster_start     # installs the packages if needed (or exits 0 with "SKIPPED: why"), starts the daemons, and
#                     # stops exactly those (by PID) and restores /etc/slurm when the script exits
#   copy_repo DIR     # DIR becomes a repository root: the working tree as git sees it, plus a link to the venv
# Expects REPO, VENV and WORK (a scratch folder) to be set. Recipe: ../shared/notes/slurm.md ("option B").

log() { echo "[slurm] $*"; }
skip() { log "SKIPPED: $*"; exit 0; }
wait_for() { for _ in $(seq 1 150); do if eval "$1" >/dev/null 2>&1; then return 0; fi; sleep 0.2; done
             echo "timeout waiting for: $1" >&2; return 1; }
stop_pid() {  # $1 = pid file
  [ -s "$1" ] || return 0
  local p; p="$(cat "$1")"
  if kill -0 "$p" 2>/dev/null; then
    kill "$p"
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -9 "$p"
  fi
  rm -f "$1"
}
cleanup() {
  local rc=$?
  log "stopping the daemons started here"
  tac "$STARTED" | while read -r pidfile; do stop_pid "$pidfile"; done
  rm -f /etc/slurm/slurm.conf /etc/slurm/gres.conf /etc/slurm/slurmdbd.conf
  cp -a "$BACKUP/." /etc/slurm/ 2>/dev/null || true
  [ "$rc" = 0 ] && rm -rf "$WORK" || log "kept $WORK for inspection"
  exit "$rc"
}

cluster_start() {
STARTED="$WORK/started.pids"   # pid files of the daemons started here, in start order
: > "$STARTED"
# ---- packages -------------------------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || skip "needs root to install slurm-wlm, slurmdbd, mariadb-server and munge with apt-get"
command -v apt-get >/dev/null || skip "no apt-get on this machine (the test installs Debian's slurm-wlm)"
PACKAGES="slurm-wlm munge slurmdbd mariadb-server"
if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
  log "installing $PACKAGES with apt-get"
  if ! { apt-get update -q >"$WORK/apt.log" 2>&1 &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PACKAGES >>"$WORK/apt.log" 2>&1; }; then
    tail -5 "$WORK/apt.log"
    skip "apt-get could not install $PACKAGES (log above)"
  fi
fi
"$VENV/bin/python" -c "import snakemake_executor_plugin_slurm" 2>/dev/null \
  || { echo "snakemake-executor-plugin-slurm is not installed in $VENV (run make install)" >&2; exit 1; }

# ---- configuration --------------------------------------------------------------------------------------------
for pidfile in /run/slurmctld.pid /run/slurmd.pid /run/slurmdbd.pid; do
  if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "a SLURM daemon is already running ($pidfile); this test starts its own cluster: stop that one first" >&2
    exit 1
  fi
done
H="$(hostname -s)"
CPUS="$(nproc)"
MEM_MB="$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) * 9 / 10 ))"
BACKUP="$WORK/etc-slurm-backup"
mkdir -p "$BACKUP" /etc/slurm
cp -a /etc/slurm/. "$BACKUP/" 2>/dev/null || true

cat > /etc/slurm/slurm.conf <<EOF
# written by clgrid tests/slurm/run.sh (restored when it ends)
ClusterName=ci
GresTypes=gpu
SlurmctldHost=$H
SlurmUser=slurm
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStoreFlags=job_comment
AccountingStorageTRES=gres/gpu
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
NodeName=$H CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
EOF
# One fake GPU: lets rules that ask for gpu=1 be scheduled; the job sees CUDA_VISIBLE_DEVICES=0 but no device, so
# torch (device auto) trains on the CPU and results can be compared byte for byte with a local run.
echo "NodeName=$H Name=gpu File=/dev/null" > /etc/slurm/gres.conf
cat > /etc/slurm/slurmdbd.conf <<'EOF'
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
PidFile=/run/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurmpw
EOF
chown slurm:slurm /etc/slurm/slurmdbd.conf
chmod 600 /etc/slurm/slurmdbd.conf
mkdir -p /var/log/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd
chown slurm:slurm /var/log/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd
rm -rf /var/lib/slurm/slurmctld/*   # a fresh cluster: no jobs or node state from an earlier start

# ---- start (stop by PID on any exit) ---------------------------------------------------------------------------
trap cleanup EXIT
trap 'exit 143' TERM INT   # a killed test still stops its daemons (the EXIT trap runs)

log "starting munged, mariadbd, slurmdbd, slurmctld, slurmd on $H ($CPUS CPUs, ${MEM_MB} MB, 1 fake GPU)"
install -d -o munge -g munge -m 0755 /run/munge
if ! { [ -s /run/munge/munged.pid ] && kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null; }; then
  runuser -u munge -- /usr/sbin/munged
  echo /run/munge/munged.pid >> "$STARTED"
fi
wait_for 'munge -n | unmunge'
install -d -o mysql -g mysql -m 0755 /run/mysqld
if ! mariadb-admin ping >/dev/null 2>&1; then
  setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 >"$WORK/mariadbd.log" 2>&1 </dev/null &
  echo $! > /run/mariadbd-clgrid.pid
  echo /run/mariadbd-clgrid.pid >> "$STARTED"
fi
wait_for 'mariadb-admin ping'
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
/usr/sbin/slurmdbd; echo /run/slurmdbd.pid >> "$STARTED"
wait_for "bash -c '</dev/tcp/127.0.0.1/6819'"
/usr/sbin/slurmctld; echo /run/slurmctld.pid >> "$STARTED"
wait_for 'scontrol ping | grep -q UP'
/usr/sbin/slurmd; echo /run/slurmd.pid >> "$STARTED"
wait_for "sinfo -h -o %T | grep -qx idle"
sacctmgr -i add account ci Cluster=ci Description=ci Organization=ci >/dev/null 2>&1 || true
sacctmgr -i add user root Account=ci DefaultAccount=ci >/dev/null 2>&1 || true
sinfo -o "%P %D %T %c %m %G"
}

copy_repo() {  # the working tree as git sees it (tracked + untracked, not ignored), plus the venv
  mkdir -p "$1"
  (cd "$REPO" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -xf - -C "$1"
  ln -s "$VENV" "$1/.venv"
}
