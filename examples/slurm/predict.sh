#!/usr/bin/env bash
# Submit a sharded prediction: N array tasks (predict-array.sbatch), then the merge
# (predict-merge.sbatch), which SLURM starts only once every task has succeeded.
#
#   examples/slurm/predict.sh FRAMES OUT N [trapcls predict options...]
#
# Prints the two job ids; the tasks' logs go to OUT/logs/. Results: OUT/predictions.csv.
# sbatch's own variables choose where the jobs run, e.g. SBATCH_PARTITION=gpu SBATCH_ACCOUNT=lab.
set -euo pipefail

usage="usage: $0 FRAMES OUT N [trapcls predict options]"
frames=${1:?$usage}
out=${2:?$usage}
shards=${3:?$usage}
shift 3
[[ $shards =~ ^[1-9][0-9]*$ ]] || { echo "N must be a whole number from 1, not '$shards'" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)  # the .sbatch files sit next to this script

mkdir -p "$out/logs"  # sbatch does not create the folder of --output
# --parsable prints the job id alone (followed by ";cluster" on a federation, cut off here).
array=$(sbatch --parsable --array="1-$shards" --output="$out/logs/%x-%A_%a.out" \
          "$here/predict-array.sbatch" "$frames" "$out" "$shards" "$@")
array=${array%%;*}
merge=$(sbatch --parsable --dependency="afterok:$array" --output="$out/logs/%x-%j.out" \
          "$here/predict-merge.sbatch" "$out" "$shards")
merge=${merge%%;*}
echo "array job $array: $shards tasks, parts in $out/parts, logs in $out/logs"
echo "merge job $merge: after every task of $array succeeds, writes $out/predictions.csv"
