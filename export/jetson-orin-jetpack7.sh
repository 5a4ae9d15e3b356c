#!/usr/bin/env bash
# Build, check and smoke-test a trapcls TensorRT FP16 engine on a Jetson with JetPack 7:
#   Orin on JetPack 7.2+ (Jetson Linux r39.x), or Thor on JetPack 7.0/7.1 (r38.x, Thor only).
# JetPack 7 ships CUDA 13 and a TensorRT >= 10.12, so the engine is built strongly typed from an FP16
# copy of the bundle's ONNX (`trapcls export tensorrt` makes it; or export the bundle with --fp16).
# NOT YET RUN ON A JETSON, and JetPack 7's exact TensorRT versions are unconfirmed: see export/README.md.
#
#   export/jetson-orin-jetpack7.sh BUNDLE [FRAMES]
#
# BUNDLE  a bundle from `trapcls export onnx RUN_DIR --out BUNDLE`, made on any machine and copied here.
# FRAMES  real camera-trap frames for --verify-images and the smoke test (default: examples/demo/frames).
#
# Environment (all optional):
#   PROFILE=nano|nx|agx|thor    profile by module (default: read from /proc/device-tree/model)
#   MIN_BATCH OPT_BATCH MAX_BATCH WORKSPACE   override the profile (workspace in MiB)
#   VENV=path                   the venv (default ~/.venvs/trapcls-tensorrt; made with --system-site-packages)
#   INSTALL_JETPACK=1           sudo apt install nvidia-jetpack if the system python cannot import tensorrt
#   SET_MAXN=1 MAXN_MODE=<id>   sudo nvpmodel -m <id> && sudo jetson_clocks before building (benchmarks)
#   CUDA_PYTHON_SPEC=spec|none  cuda-python for the engine's GPU buffers (default 'cuda-python>=13,<14';
#                               'none' if a Jetson torch wheel is installed system-wide instead)
#   OUT_CSV=path                the smoke test's CSV (default /tmp/trapcls-tensorrt-smoke.csv)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=export/common.sh
source "$REPO/export/common.sh"

read_args "$@"
check_inputs

# 1. JetPack 7: r38 supports Thor only (its developer guide sends Orin to r36.4.4); r39+ is 7.2+.
read_l4t
case "$L4T_MAJOR" in
  36) die "Jetson Linux r36 is JetPack 6: use export/jetson-orin-jetpack6.sh." ;;
  38) [[ "$JETSON_MODEL" == *Thor* ]] || die "Jetson Linux r38 (JetPack 7.0/7.1) does not support" \
        "'$JETSON_MODEL'. Use JetPack 6.2.x (other script) or JetPack 7.2+." ;;
  *) [[ "$L4T_MAJOR" -ge 39 ]] || die "Jetson Linux r$L4T_MAJOR is too old for this script." ;;
esac
[[ "$JETSON_MODEL" != *Thor* ]] || note "Thor: untested, and its profile is only a starting point."

# 2. The venv sees JetPack's TensorRT (python3-libnvinfer, system site-packages). JetPack 7 is
#    Ubuntu 24.04 / Python 3.12; PyPI's SBSA wheels are not used, so trtexec and trapcls share one TensorRT.
#    cuda-python for CUDA 13 (whether PyPI's cuda-python runs on Jetson is unconfirmed).
# shellcheck disable=SC2046  # cuda_python_spec prints one word or nothing
make_jetson_venv $(cuda_python_spec "cuda-python>=13,<14")
version_ge "$TRT_VERSION" 10.12 || note "TensorRT $TRT_VERSION < 10.12: the FP16 builder flag is used" \
  "on the FP32 ONNX (unexpected on JetPack 7)."
version_ge "$TRT_VERSION" 10.12 && note "TensorRT $TRT_VERSION: strongly typed build from an FP16 ONNX."

# 3. Profile, power mode, build, check, smoke test.
jetson_profile
power_mode
build_and_check

# Independent cross-check (optional): /usr/src/tensorrt/bin/trtexec with --stronglyTyped, see export/README.md.
