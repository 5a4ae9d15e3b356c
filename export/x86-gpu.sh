#!/usr/bin/env bash
# Build, check and smoke-test a trapcls TensorRT FP16 engine on an x86-64 Linux box with an NVIDIA GPU.
# TensorRT comes from pip, in the CUDA major the driver supports (tensorrt-cu12 or tensorrt-cu13).
# Some of those PyPI packages fetch the real wheels from https://pypi.nvidia.com, which must be reachable.
# NOT YET RUN WITH TENSORRT INSTALLED: see export/README.md, "Status".
#
#   export/x86-gpu.sh BUNDLE [FRAMES]
#
# BUNDLE  a bundle from `trapcls export onnx`; or set RUN_DIR to export it here first.
# FRAMES  real camera-trap frames for --verify-images and the smoke test (default: examples/demo/frames).
#
# Environment (all optional):
#   RUN_DIR=path                export RUN_DIR (a `trapcls train` run) to BUNDLE first (installs the train extra)
#   FP16_ONNX=1                 with RUN_DIR: export with --fp16 (an FP16 model.onnx; TensorRT does not need it)
#   TRT_SPEC=spec               the pip requirement for TensorRT, e.g. 'tensorrt-cu12==10.13.*' to stay on 10.x
#   CUDA_PYTHON_SPEC=spec|none  cuda-python for the engine's GPU buffers (default: the driver's CUDA major)
#   MIN_BATCH OPT_BATCH MAX_BATCH WORKSPACE   override the profile (default 1/32/64, 4096 MiB)
#   VENV=path                   the venv (default ~/.venvs/trapcls-tensorrt)
#   PYTHON=python3.x            the interpreter that makes the venv
#   OUT_CSV=path                the smoke test's CSV (default /tmp/trapcls-tensorrt-smoke.csv)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=export/common.sh
source "$REPO/export/common.sh"

read_args "$@"
[[ ! -e /etc/nv_tegra_release ]] || die "this is a Jetson: use export/jetson-orin-jetpack6.sh or -jetpack7.sh."
[[ -n "${RUN_DIR:-}" ]] || check_inputs  # with RUN_DIR the bundle is made below

# 1. The driver decides the CUDA major of the TensorRT wheels: nvidia-smi's "CUDA Version" is the
#    newest CUDA it supports. The bare `tensorrt` package installs the CUDA 13 variant.
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: install the NVIDIA driver first."
cuda_major=$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\)\..*/\1/p' | head -n1)
[[ -n "$cuda_major" ]] || die "could not read the driver's CUDA version from nvidia-smi."
if [[ "$cuda_major" -ge 13 ]]; then variant=13 cuda_python="cuda-python>=13,<14"
elif [[ "$cuda_major" -eq 12 ]]; then variant=12 cuda_python="cuda-python>=12.6,<13"
else die "the driver supports CUDA $cuda_major; TensorRT 10 needs CUDA 12 or newer. Update the driver."
fi
TRT_SPEC=${TRT_SPEC:-"tensorrt-cu$variant>=10.3"}
note "driver supports CUDA $cuda_major; TensorRT from '$TRT_SPEC'"

# 2. A plain venv (x86 has no system TensorRT to share). This is `pip install ".[tensorrt]"` (tensorrt
#    and cuda-python) with both pinned to the driver's CUDA major, which the bare names would not do.
[[ -x "$VENV/bin/python" ]] || "${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/python" -m pip install --upgrade pip
target=$REPO
[[ -z "${RUN_DIR:-}" ]] || target="${REPO}[train]"
# shellcheck disable=SC2046  # cuda_python_spec prints one word or nothing
"$VENV/bin/python" -m pip install "$target" "$TRT_SPEC" $(cuda_python_spec "$cuda_python")
TRT_VERSION=$(tensorrt_version "$VENV/bin/python") || die "tensorrt was installed but does not import;" \
  "run $VENV/bin/python -c 'import tensorrt' to see why (often a driver older than the wheel's CUDA)."
note "TensorRT $TRT_VERSION"

# 3. Optionally make the bundle here (`export tensorrt` makes its own FP16 copy when it needs one).
if [[ -n "${RUN_DIR:-}" ]]; then
  fp16_flag=()
  [[ "${FP16_ONNX:-0}" != 1 ]] || fp16_flag=(--fp16)
  note "trapcls export onnx $RUN_DIR --out $BUNDLE ${fp16_flag[*]}"
  "$VENV/bin/trapcls" export onnx "$RUN_DIR" --out "$BUNDLE" --verify-images "$FRAMES" "${fp16_flag[@]}"
fi
check_inputs

# 4. Build, check, smoke test.
set_profile 1 32 64 4096
build_and_check

# Independent cross-check (optional): trtexec from the TensorRT tarball (pip has none), see export/README.md.
