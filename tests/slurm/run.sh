#!/usr/bin/env bash
# A real SLURM test: install and start a one-node cluster (Debian slurm-wlm, slurmdbd + MariaDB accounting, one fake
# GPU), run a reduced default grid with `snakemake --cores all --profile slurm` from a repository root, and check that
# every checkpoint, eval and metrics file equals a local run's byte for byte. Stops only the daemons it started.
#
# One run's group job is requeued mid-run (as a preemption would) and must come back by itself.
#
#   bash tests/slurm/run.sh        # as root (it installs packages and starts daemons); `make test` runs it
#
# Skips (exit 0, saying why) only where the packages cannot be installed: not root, no apt-get, or apt fails.
# The recipe follows ../shared/notes/slurm.md ("option B"). Every snakemake call is wrapped in a timeout.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
export PATH="$VENV/bin:$PATH"
export HF_HUB_OFFLINE=1
SNAKEMAKE_TIMEOUT="${SNAKEMAKE_TIMEOUT:-1200}"
WORK="$(mktemp -d /tmp/clgrid-slurm.XXXXXX)"

source "$HERE/cluster.sh"
cluster_start

# ---- 1. the same reduced grid, locally and through SLURM, each from its own copy of the repository -----------------
CONFIG=tests/slurm/reduced.yaml
copy_repo "$WORK/local"
copy_repo "$WORK/slurm"

log "local run: snakemake --cores 2 --configfile $CONFIG"
t0=$SECONDS
(cd "$WORK/local" && timeout "$SNAKEMAKE_TIMEOUT" snakemake --cores 2 --configfile "$CONFIG" >"$WORK/local.log" 2>&1) \
  || { tail -30 "$WORK/local.log"; echo "the local run failed" >&2; exit 1; }
log "local run done in $((SECONDS - t0)) s"

# The cluster profile goes where Snakemake looks for --profile slurm (a private config folder for this test, so the
# user's own ~/.config/snakemake is untouched). The faster first status check only shortens this small test.
export XDG_CONFIG_HOME="$WORK/xdg"
(cd "$WORK/slurm" && clgrid install-profile slurm --account ci --partition debug \
    --set slurm-init-seconds-before-status-checks=1 --set latency-wait=5 --set jobs=4)
# Preemption, as SLURM does it: once a run's group job has finished task 1 and not yet task 3, requeue it
# (scontrol requeue: SIGTERM to the job, back to the queue). With the profile's slurm-requeue it must come back by
# itself, and the run must still end byte-identical to the local one.
preempt_one_run_group() {
  for _ in $(seq 1 3000); do
    for run in "$WORK"/slurm/results/runs/split_digits/*/*/s0; do   # the benchmark with one job per task
      if [ -f "$run/task1/eval.json" ] && [ ! -f "$run/task3/eval.json" ]; then
        id="$(squeue -h -t R -o '%i %k' | awk '$2 ~ /^rule_run/ {print $1; exit}')"
        if [ -n "$id" ] && scontrol requeue "$id"; then echo "$id ${run#"$WORK/slurm/"}" > "$WORK/preempted"; return 0; fi
      fi
    done
    sleep 0.2
  done
}
preempt_one_run_group &
preempt_pid=$!
SINCE="$(date +%Y-%m-%dT%H:%M:%S)"   # sacct keeps earlier clusters' jobs (ids restart): look only at this run's
log "SLURM run: snakemake --cores all --profile slurm --configfile $CONFIG"
t0=$SECONDS
(cd "$WORK/slurm" && timeout "$SNAKEMAKE_TIMEOUT" snakemake --cores all --profile slurm --configfile "$CONFIG" \
    --verbose >"$WORK/slurm.log" 2>&1) \
  || { grep -v DEBUG "$WORK/slurm.log" | tail -40; echo "the SLURM run failed (or timed out)" >&2; exit 1; }
log "SLURM run done in $((SECONDS - t0)) s"
wait "$preempt_pid" || true
[ -s "$WORK/preempted" ] || { echo "no run group job was caught mid-run to requeue" >&2; exit 1; }
read -r preempted_id preempted_run < "$WORK/preempted"
log "requeued SLURM job $preempted_id mid-run ($preempted_run, after task 1); its records (sacct -D):"
sacct -D -X -n -P -S "$SINCE" -j "$preempted_id" --format=JobIDRaw,State,Start,End | sed 's/^/  /'
sacct -D -X -n -P -S "$SINCE" -j "$preempted_id" --format=State | grep -q REQUEUED \
  && sacct -D -X -n -P -S "$SINCE" -j "$preempted_id" --format=State | tail -1 | grep -q COMPLETED \
  || { echo "job $preempted_id was not requeued and completed" >&2; exit 1; }

# ---- 2. evidence: what was submitted, and that GPU jobs went through sbatch ----------------------------------------
log "sbatch calls of the SLURM run (from snakemake --verbose):"
grep -o "sbatch --parsable.* --wrap=" "$WORK/slurm.log" \
  | sed -e 's/ --wrap=$//' -e 's/--job-name [^ ]* //' -e 's/ -D [^ ]*//' -e "s#$WORK/slurm/##" | sort | uniq -c
log "jobs as SLURM accounted them (sacct):"
sacct -X -n -P -S "$SINCE" --format=JobIDRaw,Comment,AllocTRES,State | sed 's/^/  /'
n_jobs="$(sacct -X -n -P -S "$SINCE" --format=JobIDRaw | wc -l)"
n_gpu="$(sacct -X -n -P -S "$SINCE" --format=JobIDRaw,AllocTRES,State | grep -c 'gres/gpu=1.*COMPLETED' || true)"
n_sbatch_gpu="$(grep -c "sbatch --parsable.*--gpus=1" "$WORK/slurm.log" || true)"
log "$n_jobs SLURM jobs, $n_gpu of them COMPLETED with a GPU allocated; $n_sbatch_gpu sbatch calls with --gpus=1"
[ "$n_gpu" -ge 2 ] && [ "$n_sbatch_gpu" -ge 2 ] || { echo "expected GPU-requesting jobs submitted through sbatch" >&2; exit 1; }

grep -q "rule train_permuted_digits_tasks0to4" "$WORK/slurm.log" \
  || { echo "expected permuted_digits' five tasks per run as one job (tasks_per_job auto)" >&2; exit 1; }
log "permuted_digits: each run's five tasks trained by one job (rule train_permuted_digits_tasks0to4)"

# ---- 3. byte-for-byte equality ---------------------------------------------------------------------------------
cd "$WORK/local"
files="$(find results/init results/runs -name 'state.pt' -o -name 'model.pt' -o -name 'eval.json' -o -name 'metrics.json' | sort)"
[ -n "$files" ] || { echo "the local run wrote no results" >&2; exit 1; }
n=0
for f in $files results/tables/summary.csv results/tables/acc_matrix.csv; do
  cmp -s "$f" "$WORK/slurm/$f" || { echo "DIFFERS between the local and the SLURM run: $f" >&2; exit 1; }
  n=$((n + 1))
done
log "PASSED: $n result files (every checkpoint, eval and metrics file, and the tables) are byte-identical"
log "        between the local run and the SLURM run"
