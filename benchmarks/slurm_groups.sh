#!/usr/bin/env bash
# How many SLURM submissions the default grid (config/config.yaml: 2 benchmarks x 5 methods x 3 seeds x 5 tasks)
# costs without and with the cluster profile's `groups:` (all tasks of a run + its analysis in one job, a seed's
# init + initial evaluation in another), on the one-node cluster of tests/slurm/cluster.sh. Records
# benchmarks/results/slurm_groups.json. As root:  bash benchmarks/slurm_groups.sh   (about 15-25 minutes)
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
export PATH="$VENV/bin:$PATH" HF_HUB_OFFLINE=1
WORK="$(mktemp -d /tmp/clgrid-slurm-groups.XXXXXX)"
source "$REPO/tests/slurm/cluster.sh"
cluster_start
export XDG_CONFIG_HOME="$WORK/xdg"
(cd "$REPO" && clgrid install-profile slurm --account ci --partition debug --set jobs=8 --set latency-wait=5 \
   --set slurm-init-seconds-before-status-checks=1 >/dev/null)

run_grid() {  # $1 = label, rest = extra snakemake arguments; prints "label submissions seconds"
  local label="$1"; shift
  copy_repo "$WORK/$label"
  local t0 submitted
  t0=$SECONDS
  (cd "$WORK/$label" && timeout 3000 snakemake --cores all --profile slurm "$@" >"$WORK/$label.log" 2>&1) \
    || { tail -30 "$WORK/$label.log"; exit 1; }
  # Counted from the executor's own log line per sbatch (sacct can lag behind the last jobs by seconds).
  submitted="$(grep -c "has been submitted with SLURM jobid" "$WORK/$label.log")"
  echo "$label $submitted $((SECONDS - t0))"
}
# Command-line --groups replaces the profile's: naming only a rule the default DAG does not have turns grouping off.
ungrouped="$(run_grid ungrouped --groups download_dataset=solo)"
grouped="$(run_grid grouped)"
jobs_total="$(grep -E '^total' "$WORK/grouped.log" | head -1 | awk '{print $2}')"
cd "$REPO"
python3 - "$ungrouped" "$grouped" "$jobs_total" <<'PY'
import json, subprocess, sys
rows = [s.split() for s in sys.argv[1:3]]
result = {"grid": "config/config.yaml (default)", "snakemake_jobs": int(sys.argv[3] or 0),
          "machine": "one-node SLURM 22.05 on this 2-core machine (tests/slurm/cluster.sh), 1 fake GPU",
          "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()}
for label, submissions, seconds in rows:
    result[label] = {"slurm_submissions": int(submissions), "wall_s": int(seconds)}
result["submissions_ratio"] = round(result["ungrouped"]["slurm_submissions"] / result["grouped"]["slurm_submissions"], 2)
print(json.dumps(result, indent=2))
json.dump(result, open("benchmarks/results/slurm_groups.json", "w"), indent=2)
PY
