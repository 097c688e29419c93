#!/bin/bash
# Encode a split as a SLURM job array, one shard per task, then index every shard as one index.
#
#   sbatch --array=0-7 scripts/encode_slurm.sh RUN_CONFIG OUT_PREFIX      # 8 shards
#   # when all tasks are done:
#   bitseek index --codes OUT_PREFIX.shard-*-of-00008.codes --out db.index
#   # (or: bitseek merge OUT_PREFIX.shard-*-of-00008.codes --out db.codes)
#
# `--shard auto` reads SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT (and SLURM_ARRAY_TASK_MIN, so
# --array=8-15 works too); each task writes OUT_PREFIX.shard-0000i-of-00008.codes (atomically: a
# task killed half-way leaves no shard, and re-running that task alone fills the gap).
#SBATCH --job-name=bitseek-encode
#SBATCH --cpus-per-task=8
#SBATCH --gres=gpu:1
#SBATCH --time=02:00:00
#SBATCH --output=bitseek-encode-%A_%a.log
set -euo pipefail
config=${1:?usage: sbatch --array=0-N scripts/encode_slurm.sh CONFIG OUT_PREFIX [overrides...]}
prefix=${2:?usage: sbatch --array=0-N scripts/encode_slurm.sh CONFIG OUT_PREFIX [overrides...]}
shift 2
exec bitseek encode --config "$config" --split database --shard auto --out "$prefix.codes" --quiet "$@"
