#!/usr/bin/env bash
# Test on a SLURM cluster: whole videos split across one process per GPU, detections gathered to rank 0,
# which evaluates and writes OUT_DIR/metrics.json.
#
#   [PARTITION=gpu] [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=4] [SRUN_ARGS=...] \
#       scripts/slurm_test.sh JOB_NAME CONFIG CHECKPOINT OUT_DIR [clab test options...]
#
# CPUS_PER_TASK also bounds the loader workers (data.workers_per_gpu) that decode frames ahead.
set -euo pipefail
if [ $# -lt 4 ]; then
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
JOB_NAME=$1; CONFIG=$2; CHECKPOINT=$3; OUT_DIR=$4; shift 4
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
    "$PYTHON" -u -m clab test "$CONFIG" "$CHECKPOINT" --out "$OUT_DIR" --launcher slurm --no-progress "$@"
