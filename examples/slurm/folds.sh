#!/usr/bin/env bash
# Submit a K-fold cross-validation: K array tasks, one fold each (folds-array.sbatch), then the
# out-of-fold table (oof.sbatch), which SLURM starts only once every fold has succeeded.
#
#   examples/slurm/folds.sh DATA OUT K [trapcls train options...]
#
# Prints the two job ids; logs go to OUT/logs/. Results: OUT/fold-1..K/ and OUT/oof.csv.
# sbatch's own variables choose where the jobs run, e.g. SBATCH_PARTITION=gpu SBATCH_ACCOUNT=lab.
set -euo pipefail

usage="usage: $0 DATA OUT K [trapcls train options]"
data=${1:?$usage}
out=${2:?$usage}
folds=${3:?$usage}
shift 3
[[ $folds =~ ^[1-9][0-9]*$ ]] || { echo "K must be a whole number from 1, not '$folds'" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)  # the .sbatch files sit next to this script

mkdir -p "$out/logs"  # sbatch does not create the folder of --output
array=$(sbatch --parsable --array="1-$folds" --output="$out/logs/%x-%A_%a.out" \
          "$here/folds-array.sbatch" "$data" "$out" "$folds" "$@")
array=${array%%;*}  # --parsable prints "id" (or "id;cluster" on a federation)
oof=$(sbatch --parsable --dependency="afterok:$array" --output="$out/logs/%x-%j.out" \
        "$here/oof.sbatch" "$out")
oof=${oof%%;*}
echo "array job $array: $folds folds, runs in $out/fold-1..$folds, logs in $out/logs"
echo "oof job $oof: after every fold of $array succeeds, writes $out/oof.csv"
