# Steps shared by the export/*.sh target scripts; sourced, not run.
# The caller sets REPO, then calls read_args "$@" (BUNDLE, FRAMES, VENV) before the rest.
# shellcheck shell=bash disable=SC2120  # make_jetson_venv's arguments (extra pip requirements) are optional

die() { echo "error: $*" >&2; exit 1; }
note() { echo "==> $*" >&2; }

# version_ge A B: true when version A >= version B (10.12.0 >= 10.12).
version_ge() { [[ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" == "$2" ]]; }

# The TensorRT version the given Python imports, or nothing (and status 1).
tensorrt_version() { "$1" -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null; }

# read_args "$@": BUNDLE and FRAMES (default: the demo frames) from the command line, VENV from the environment.
# shellcheck disable=SC2034  # the callers use these
read_args() {
  [[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 BUNDLE [FRAMES]"
  BUNDLE=$1
  FRAMES=${2:-$REPO/examples/demo/frames}
  VENV=${VENV:-$HOME/.venvs/trapcls-tensorrt}
}

check_inputs() {
  [[ -f "$BUNDLE/bundle.json" ]] || die "$BUNDLE has no bundle.json. Make the bundle on any machine with" \
    "'trapcls export onnx RUN_DIR --out BUNDLE' and copy it here."
  [[ -d "$FRAMES" ]] || die "$FRAMES is not a folder; pass a folder of real camera-trap frames as the second argument."
}

# The cuda-python requirement: CUDA_PYTHON_SPEC if set ('none' skips it), else the default given.
# The engine's GPU buffers and stream come from cuda-python, else from torch (trapcls.predict.tensorrt).
cuda_python_spec() {
  local spec=${CUDA_PYTHON_SPEC:-$1}
  [[ "$spec" == none ]] || echo "$spec"
}

# Profile defaults for this target; MIN_BATCH, OPT_BATCH, MAX_BATCH and WORKSPACE in the environment win.
set_profile() {
  MIN_BATCH=${MIN_BATCH:-$1} OPT_BATCH=${OPT_BATCH:-$2} MAX_BATCH=${MAX_BATCH:-$3} WORKSPACE=${WORKSPACE:-$4}
}

# doctor -> export tensorrt -> doctor -> predict with the engine. Every step is a trapcls command, so
# a failure prints trapcls's own message (with the rebuild command where one applies).
build_and_check() {
  local trapcls="$VENV/bin/trapcls" out="${OUT_CSV:-/tmp/trapcls-tensorrt-smoke.csv}"
  note "trapcls doctor (before the build; a missing engine is expected here)"
  "$trapcls" doctor --bundle "$BUNDLE" || note "doctor reported problems (above); building anyway"

  note "building the FP16 engine: batch $MIN_BATCH/$OPT_BATCH/$MAX_BATCH, workspace $WORKSPACE MiB"
  "$trapcls" export tensorrt "$BUNDLE" --min-batch "$MIN_BATCH" --opt-batch "$OPT_BATCH" \
    --max-batch "$MAX_BATCH" --workspace "$WORKSPACE" --verify-images "$FRAMES"

  note "trapcls doctor (the new engine should be listed as matching this machine)"
  "$trapcls" doctor --bundle "$BUNDLE"

  # --backend tensorrt, not auto: a smoke test must fail if the engine is not what runs.
  # --batch-size stays within the engine's profile (the GPU default of 32 exceeds an Orin Nano's 8).
  note "predict smoke test on $FRAMES -> $out"
  "$trapcls" predict "$FRAMES" --bundle "$BUNDLE" --out "$out" --backend tensorrt \
    --batch-size "$OPT_BATCH" --overwrite --strict
  head -n 6 "$out"
  note "done. In production, --backend auto picks this engine while it matches (see 'trapcls doctor')."
}

# --- Jetson only -----------------------------------------------------------------------------------

# L4T_MAJOR / L4T_REVISION from /etc/nv_tegra_release ("# R36 (release), REVISION: 4.3, ...").
read_l4t() {
  local line
  line=$(head -n1 /etc/nv_tegra_release 2>/dev/null) || die "/etc/nv_tegra_release is missing:" \
    "this is not a Jetson running Jetson Linux (on an x86 GPU box use export/x86-gpu.sh)."
  L4T_MAJOR=$(sed -n 's/^# R\([0-9][0-9]*\) .*/\1/p' <<<"$line")
  L4T_REVISION=$(sed -n 's/.*REVISION: \([0-9][0-9.]*\).*/\1/p' <<<"$line")
  [[ -n "$L4T_MAJOR" && -n "$L4T_REVISION" ]] || die "cannot read the Jetson Linux release from: $line"
  JETSON_MODEL=$(tr -d '\0' </proc/device-tree/model 2>/dev/null || echo "unknown Jetson")
  note "$JETSON_MODEL, Jetson Linux r$L4T_MAJOR.$L4T_REVISION"
}

# JetPack's TensorRT Python bindings live in the system Python's dist-packages (python3-libnvinfer),
# so the venv must be made with --system-site-packages; PyPI's tensorrt is not JetPack's build.
make_jetson_venv() {
  if ! tensorrt_version python3 >/dev/null; then
    [[ "${INSTALL_JETPACK:-0}" == 1 ]] || die "the system python3 cannot import tensorrt. Install JetPack's" \
      "components with 'sudo apt update && sudo apt install nvidia-jetpack' (or rerun with INSTALL_JETPACK=1)."
    sudo apt-get update
    sudo apt-get install -y nvidia-jetpack python3-venv python3-pip
  fi
  python3 -c 'import ensurepip' 2>/dev/null || die "python3 cannot make venvs: sudo apt install python3-venv"
  [[ -x "$VENV/bin/python" ]] || python3 -m venv --system-site-packages "$VENV"
  grep -qx 'include-system-site-packages = true' "$VENV/pyvenv.cfg" || die "$VENV was made without" \
    "--system-site-packages, so it cannot see JetPack's TensorRT; delete it or set VENV to a new path."
  "$VENV/bin/python" -m pip install --upgrade pip
  # No [tensorrt] extra here: it would fetch PyPI's tensorrt instead of using JetPack's.
  "$VENV/bin/python" -m pip install "$REPO" "$@"
  "$VENV/bin/python" -c 'import cuda' 2>/dev/null || "$VENV/bin/python" -c 'import torch' 2>/dev/null \
    || die "neither cuda-python nor torch imports in $VENV; the engine needs one of them for GPU buffers."
  TRT_VERSION=$(tensorrt_version "$VENV/bin/python") || die "tensorrt imports in the system python3 but" \
    "not in $VENV (a NumPy or Python version clash?); run: $VENV/bin/python -c 'import tensorrt'"
  note "TensorRT $TRT_VERSION (from JetPack, via --system-site-packages)"
}

# Profile by module: an 8 GB Orin Nano shares its RAM between CPU and GPU, so it gets a small one.
jetson_profile() {
  local kind=${PROFILE:-}
  if [[ -z "$kind" ]]; then
    case "$JETSON_MODEL" in
      *"Orin Nano"*) kind=nano ;;
      *"Orin NX"*) kind=nx ;;
      *"AGX Orin"*) kind=agx ;;
      *Thor*) kind=thor ;;
      *) die "unknown module '$JETSON_MODEL'; set PROFILE=nano, nx, agx or thor" ;;
    esac
  fi
  case "$kind" in
    nano) set_profile 1 4 8 1024 ;;
    nx) set_profile 1 8 16 2048 ;;
    agx) set_profile 1 8 16 4096 ;;  # MAX_BATCH=32 is the other suggested choice on AGX Orin
    thor) set_profile 1 8 16 4096 ;;  # not profiled: a starting point only
    *) die "PROFILE must be nano, nx, agx or thor, not '$kind'" ;;
  esac
  note "profile $kind"
}

# Power mode: report it; with SET_MAXN=1 switch to MAXN_MODE and pin the clocks (benchmarks).
# Mode IDs differ by module and JetPack (see /etc/nvpmodel.conf), so none is guessed here.
power_mode() {
  if command -v nvpmodel >/dev/null; then
    note "power mode: $(nvpmodel -q 2>/dev/null | tr '\n' ' ' || echo unknown)"
  fi
  [[ "${SET_MAXN:-0}" == 1 ]] || return 0
  [[ -n "${MAXN_MODE:-}" ]] || die "SET_MAXN=1 needs MAXN_MODE=<nvpmodel mode id> (see /etc/nvpmodel.conf)."
  sudo nvpmodel -m "$MAXN_MODE"
  sudo jetson_clocks
}
