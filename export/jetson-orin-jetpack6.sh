#!/usr/bin/env bash
# Build, check and smoke-test a trapcls TensorRT FP16 engine on a Jetson Orin with JetPack 6.1/6.2.x
# (Jetson Linux r36.4.x, CUDA 12.6, TensorRT 10.3: FP16 through the builder flag on the FP32 ONNX).
# NOT YET RUN ON A JETSON: see export/README.md, "Status".
#
#   export/jetson-orin-jetpack6.sh BUNDLE [FRAMES]
#
# BUNDLE  a bundle from `trapcls export onnx RUN_DIR --out BUNDLE`, made on any machine and copied here.
# FRAMES  real camera-trap frames for --verify-images and the smoke test (default: examples/demo/frames).
#
# Environment (all optional):
#   PROFILE=nano|nx|agx         profile by module (default: read from /proc/device-tree/model)
#   MIN_BATCH OPT_BATCH MAX_BATCH WORKSPACE   override the profile (workspace in MiB)
#   VENV=path                   the venv (default ~/.venvs/trapcls-tensorrt; made with --system-site-packages)
#   INSTALL_JETPACK=1           sudo apt install nvidia-jetpack if the system python cannot import tensorrt
#   SET_MAXN=1 MAXN_MODE=<id>   sudo nvpmodel -m <id> && sudo jetson_clocks before building (benchmarks)
#   CUDA_PYTHON_SPEC=spec|none  cuda-python for the engine's GPU buffers (default 'cuda-python>=12.6,<13';
#                               'none' if NVIDIA's Jetson torch wheel is installed system-wide instead)
#   OUT_CSV=path                the smoke test's CSV (default /tmp/trapcls-tensorrt-smoke.csv)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=export/common.sh
source "$REPO/export/common.sh"

read_args "$@"
check_inputs

# 1. JetPack 6.1 or newer on an Orin. JetPack 6.0 (r36.3) ships an older TensorRT than trapcls's
#    floor of 10.3; r38 (JetPack 7.0/7.1) does not support Orin; r39 is JetPack 7.2+ (other script).
read_l4t
[[ "$L4T_MAJOR" == 36 ]] || die "Jetson Linux r$L4T_MAJOR is not JetPack 6; for r39 (JetPack 7.2+)" \
  "use export/jetson-orin-jetpack7.sh."
[[ "${L4T_REVISION%%.*}" -ge 4 ]] || die "Jetson Linux r36.$L4T_REVISION is JetPack 6.0, whose TensorRT is" \
  "older than trapcls needs (10.3). Update to JetPack 6.1 or 6.2.x."
[[ "$JETSON_MODEL" == *Orin* || -n "${PROFILE:-}" ]] || die "'$JETSON_MODEL' is not an Orin; set PROFILE to go on."

# 2. The venv sees JetPack's TensorRT (system site-packages); trapcls is installed without torch,
#    with cuda-python for CUDA 12 (JetPack 6 ships 12.6; whether PyPI's cuda-python runs on Jetson
#    is unconfirmed). numpy<2 is a precaution for TensorRT 10.3's NumPy-1-era bindings; unverified.
# shellcheck disable=SC2046  # cuda_python_spec prints one word or nothing
make_jetson_venv "numpy<2" $(cuda_python_spec "cuda-python>=12.6,<13")
version_ge "$TRT_VERSION" 10.3 || die "TensorRT $TRT_VERSION is older than 10.3; update JetPack."
version_ge "$TRT_VERSION" 10.12 && note "TensorRT $TRT_VERSION >= 10.12 on JetPack 6 is unexpected;" \
  "the engine will be built strongly typed from an FP16 copy of the ONNX."

# 3. Profile, power mode, build, check, smoke test.
jetson_profile
power_mode
build_and_check

# Independent cross-check (optional): /usr/src/tensorrt/bin/trtexec, see export/README.md.
