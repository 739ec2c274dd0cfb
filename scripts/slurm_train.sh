#!/usr/bin/env bash
# Train on a SLURM cluster: one process per GPU, started by srun, joined by `clab train --launcher slurm`.
#
#   [PARTITION=gpu] [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=4] [SRUN_ARGS=...] \
#       scripts/slurm_train.sh JOB_NAME CONFIG WORK_DIR [clab train options...]
#
# GPUS processes in all, GPUS_PER_NODE per machine (GPUS=16 GPUS_PER_NODE=8: two nodes). The master address is
# the first node of the allocation (SLURM_NODELIST); MASTER_PORT (default 29500) must be free on it.
# With another global batch than the config's, add --accumulate K or --auto-scale-lr (README "GPU runs").
set -euo pipefail
if [ $# -lt 3 ]; then
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
JOB_NAME=$1; CONFIG=$2; WORK_DIR=$3; shift 3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 8 ? GPUS : 8 ))}
CPUS_PER_TASK=${CPUS_PER_TASK:-4}
PYTHON=${PYTHON:-python}
cd "$(dirname "$0")/.."
PARTITION_ARGS=()
if [ -n "${PARTITION:-}" ]; then PARTITION_ARGS=(--partition "$PARTITION"); fi
# shellcheck disable=SC2086
srun "${PARTITION_ARGS[@]}" --job-name "$JOB_NAME" --gres "gpu:$GPUS_PER_NODE" --ntasks "$GPUS" \
    --ntasks-per-node "$GPUS_PER_NODE" --cpus-per-task "$CPUS_PER_TASK" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
    "$PYTHON" -u -m clab train "$CONFIG" --work-dir "$WORK_DIR" --launcher slurm --no-progress "$@"
