"""Predict throughput: trapcls end to end on each CPU engine, against each one's work bound, a peer and a tutorial loop.

Method (one run, warm page cache, real camera-trap frames from ../shared/data, per architecture):
  t_d       decode + resize + normalise of one image with `trapcls.core.frames.preprocess.preprocess`, one thread
            (measured once per input geometry: the normalisation constants do not change the cost).
  engines   trapcls on each engine it has for a CPU, each a row:
            onnxruntime fp32  the bundle as exported (today's default on a CPU);
            openvino PREC     a copy of the bundle after `trapcls export openvino` (which checks f32 and bf16
                              against ONNX Runtime FP32 on 64 Serengeti frames and records both), run with
                              --backend openvino in the precision that check allows (bf16 or f32);
            onnxruntime int8  `trapcls export onnx --int8` of the same checkpoint, calibrated on 108 Gorongosa
                              frames and checked on the 64 Serengeti ones; a refused model is a row with
                              the refusal as its note. Neither set is among the timed frames.
            For each: t_m, the model alone on 1 thread on batches of 16 (ONNX Runtime: 1 intra-op and 1
            inter-op thread, ORT_ENABLE_ALL; OpenVINO: 1 stream of 1 thread at that precision);
            bound = cores / (t_d + t_m), every core doing only that work; then
            `python -m trapcls predict DIR --bundle B --backend X --out FRESH.csv` in a child process:
            files / the child's wall clock (interpreter start, imports, bundle load and CSV included).
  peer      a torch-free peer, SPARROW-Engine (benchmarks/peers/sparrow.py, its own venv in the cache),
            running the same model.onnx over the same frames through its own Rust pipeline with its
            default threads; writes path + per-class probabilities. Same timing. Its own work bound:
            t_d = its decode + resize + normalise per frame on one core (a near-zero-compute model with the
            same preprocessing), t_m = the model alone in its ONNX Runtime on one thread at batch 1 (the
            batch it runs); bound = cores / (t_d + t_m). --no-peer leaves it out (no venv, no network).
  baseline  the loop most tutorials write, also in a child: PIL full decode, torchvision Resize(256),
            CenterCrop(224) (scaled for 260 px), ToTensor, Normalize; DataLoader(batch 16, one worker per
            core); eager timm model under no_grad with torch's default threads; writes path,label rows.
Peak RSS is ru_maxrss from os.wait4 on the child. Every time is the median of --repeats.
Models are random-init timm models with 8 classes (Lite2 at 260x260, the others at 224x224), saved as
trapcls checkpoints and exported with trapcls's own exporter: speed does not depend on the weights, but
what the bf16 and INT8 gates decide for them says nothing about a trained model.

--device cuda (labelled in the table): trapcls gets `--backend torch`, t_m is the torch model alone
(FP16, channels_last, forward only), the baseline runs its model on CUDA in FP32, and the bound becomes
min(cores / t_d, 1 / t_m) because decoding and the model no longer share the cores.

Usage (the image sets and bundles are cached in benchmarks/.cache/):
  .venv/bin/python benchmarks/predict_throughput.py                  # 400 images, lite0, lite2, resnet50
  .venv/bin/python benchmarks/predict_throughput.py --images 48 --repeats 1 --arch tf_efficientnet_lite0
  .venv/bin/python benchmarks/predict_throughput.py --rss-files 200,5000   # peak RSS vs number of files
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from environment import machine, versions  # noqa: E402
from peers import sparrow as peer  # noqa: E402  (torch-free peer; builds its own venv, imports nothing heavy)
from predict_report import header, rss_table, throughput_table  # noqa: E402
from work_bound import time_decode, time_model_cuda, time_model_onnx, time_model_openvino  # noqa: E402

from trapcls.core.system.hardware import cores  # noqa: E402

DEFAULT_DATA = HERE.parents[2] / "shared" / "data"
INPUT_SIZE, NUM_CLASSES, BATCH = 224, 8, 16
# Each architecture at the input size it is used at: Lite2 is a 260-pixel model (its ImageNet weights in
# ../shared/weights and trapcls's default model both run it at 260).
INPUT_SIZES = {"tf_efficientnet_lite2": 260}
# Frames for the INT8 calibration and for the OpenVINO/INT8 verification checks, apart from each
# other and from the timed set (ENA24 + CCT): Gorongosa calibrates, Serengeti verifies.
CALIBRATION, VERIFICATION = ("gorongosa", 108), ("serengeti", 64)
MODEL_IMAGES = 64  # t_m needs only a few batches: model time does not depend on image content
SUBFOLDERS = 4
# The torchvision tutorial constants, on purpose: the baseline is what people write by hand.
TUTORIAL_MEAN, TUTORIAL_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PACKAGES = ("trapcls", "torch", "torchvision", "timm", "onnxruntime", "openvino", "pillow", "numpy")
CSV_NAME = "predictions.csv"
CORES = cores()
T0 = time.perf_counter()
# ru_maxrss survives exec, so a child started straight from this process (torch loaded, models built)
# would report this process's peak. A small launcher in between keeps the figure the child's own.
LAUNCHER = """\
import json, os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
proc.returncode = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as f:
    json.dump({"wall_s": time.perf_counter() - start, "rc": proc.returncode, "rss_mib": usage.ru_maxrss / 1024}, f)
"""


def say(message: str) -> None:
    """A progress line on stderr with the seconds since start."""
    print(f"[{time.perf_counter() - T0:5.0f}s] {message}", file=sys.stderr, flush=True)


def source_frames(data: Path) -> list[Path]:
    """The 21 ENA24 and 60 CCT frames in a fixed order; exits with a clear message when missing."""
    ena = sorted((data / "ena24_small").glob("*.jpg"))
    cct = sorted((data / "cct_sample").glob("*/*.jpg"))
    if not ena or not cct:
        sys.exit(f"error: no frames in {data}/ena24_small/*.jpg and {data}/cct_sample/<class>/*.jpg "
                 "(expected 21 ENA24 and 60 CCT JPEGs). Pass --data pointing at the shared data folder.")
    return ena + cct


def list_images(folder: Path) -> list[Path]:
    """The JPEGs of an image set, sorted."""
    return sorted(folder.rglob("*.jpg"))


def build_image_set(frames: list[Path], count: int, cache: Path) -> Path:
    """`count` hard links (copies across file systems) cycling through `frames`, in a few subfolders."""
    folder = cache / f"images-{count}"
    if folder.is_dir() and len(list_images(folder)) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    for i in range(count):
        src = frames[i % len(frames)]
        dst = folder / f"cam{i % SUBFOLDERS}" / f"{i:05d}-{src.parent.name}-{src.stem}.jpg"
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)  # not a symlink: trapcls skips links that point outside the input folder
        except OSError:
            shutil.copyfile(src, dst)
    return folder


def input_size(arch: str) -> int:
    """The input size `arch` is benchmarked at."""
    return INPUT_SIZES.get(arch, INPUT_SIZE)


def check_frames(data: Path, which: tuple[str, int]) -> list[Path]:
    """The first N frames of one ../shared/data source, for calibration or verification (never timed)."""
    folder, count = which
    return sorted((data / folder).rglob("*.jpg"))[:count]


def build_bundle(arch: str, cache: Path, frames: list[Path]) -> Path:
    """A random-init bundle for `arch` at its input size, saved as a trapcls checkpoint (kept) and exported."""
    from trapcls.core.model.build import create_model, preprocess_spec
    from trapcls.core.model.checkpoint import save_checkpoint
    from trapcls.export.onnx import export_onnx

    out = cache / f"bundle-{arch}-{input_size(arch)}"
    ckpt = cache / f"checkpoint-{arch}-{input_size(arch)}.pt"
    if (out / "bundle.json").exists() and ckpt.exists():
        return out
    say(f"building bundle {out.name}")
    torch.manual_seed(0)
    model = create_model(arch, NUM_CLASSES).eval()
    spec = preprocess_spec(model, input_size(arch))
    save_checkpoint(ckpt, model, arch=arch, classes=[f"class{i}" for i in range(NUM_CLASSES)], spec=spec,
                    epoch=0, metrics={}, config={"note": "random init, benchmarks/predict_throughput.py"})
    shutil.rmtree(out, ignore_errors=True)
    export_onnx(ckpt, out, verify_images=frames[:8])
    return out


def openvino_bundle(bundle_dir: Path, verify: list[Path]) -> tuple[Path | None, str, str]:
    """A copy of the bundle with `trapcls export openvino`'s checks for this CPU: (copy, precision, why).

    The copy is None when OpenVINO is not installed or no precision passed its check.
    """
    from trapcls.core.model.bundle import load_bundle
    from trapcls.core.system.exceptions import TrapclsError
    from trapcls.core.system.hardware import openvino_version

    if openvino_version() is None:
        return None, "", "not installed (pip install 'trapcls[openvino]')"
    from trapcls.export.openvino import export_openvino
    from trapcls.predict.openvino import precision_here

    out = bundle_dir.with_name(bundle_dir.name + "-openvino")
    shutil.rmtree(out, ignore_errors=True)  # checked afresh each run: the record is per CPU and OpenVINO version
    shutil.copytree(bundle_dir, out)
    try:
        export_openvino(out, verify_images=verify)
        choice = precision_here(load_bundle(out))
    except TrapclsError as exc:
        return None, "", str(exc)
    return (out if choice.verified else None), choice.precision, choice.reason


def int8_bundle(arch: str, cache: Path, calibration: list[Path], verify: list[Path]) -> tuple[Path | None, str]:
    """`trapcls export onnx --int8` of the cached checkpoint: (bundle, summary) if it passed, (None, why) if refused."""
    from trapcls.core.system.exceptions import TrapclsError
    from trapcls.export.onnx import export_onnx

    out = cache / f"bundle-{arch}-{input_size(arch)}-int8"
    shutil.rmtree(out, ignore_errors=True)
    try:
        report = export_onnx(cache / f"checkpoint-{arch}-{input_size(arch)}.pt", out, verify_images=verify,
                             int8=True, calibration_images=calibration)
    except TrapclsError as exc:
        return None, str(exc)
    q = report.int8_parity
    return out, f"passed: mean abs diff {q.mean_abs_diff:.1e}, top-1 {q.top1_agreement:.1%} on {q.images} frames"


def time_child(label: str, cmd: list[str], files: int, repeats: int, cache: Path) -> dict:
    """Run `cmd` via the launcher `repeats` times, each in a fresh working folder where it writes CSV_NAME.

    Returns the median images/s of the successful runs, the largest peak RSS, and any problems
    (a non-zero exit, or a CSV without exactly one good row per file).
    """
    runs, problems = [], []
    (cache / "runs").mkdir(exist_ok=True)
    for repeat in range(1, repeats + 1):
        with tempfile.TemporaryDirectory(dir=cache / "runs") as tmp:  # fresh: the CSV doubles as a resume file
            work = Path(tmp)
            with (work / "stderr.txt").open("wb") as err:
                subprocess.run([sys.executable, "-I", "-c", LAUNCHER, str(work / "child.json"), *cmd],
                               stdout=err, stderr=err, cwd=work, check=True)
            run = json.loads((work / "child.json").read_text())
            if run["rc"]:
                tail = (work / "stderr.txt").read_text(errors="replace").strip().splitlines()[-3:]
                problem = f"exit {run['rc']}: " + " | ".join(tail)
            else:
                problem = check_csv(work / CSV_NAME, files)
        runs.append(run)
        if problem:
            problems.append(f"{label} repeat {repeat}: {problem}")
        say(f"  {label} repeat {repeat}: {run['wall_s']:.1f}s, exit {run['rc']}, peak RSS {run['rss_mib']:.0f} MiB")
    good = [r["wall_s"] for r in runs if r["rc"] == 0]
    return {"images_per_s": files / statistics.median(good) if good else None,
            "wall_s": [round(r["wall_s"], 2) for r in runs], "peak_rss_mib": max(r["rss_mib"] for r in runs),
            "problems": problems}


def check_csv(path: Path, files: int) -> str | None:
    """What is wrong with a prediction CSV, or None when it has one good row per file."""
    if not path.is_file():
        return f"exit 0 but no {path.name} written"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    errors = sum(1 for r in rows if r.get("status") == "error" or r.get("error"))
    return f"{len(rows)} CSV rows for {files} files, {errors} error rows" if len(rows) != files or errors else None


def trapcls_cmd(image_dir: Path, bundle: Path, extra: list[str]) -> list[str]:
    """The `trapcls predict` command line, writing CSV_NAME in the working folder."""
    return [sys.executable, "-m", "trapcls", "predict", str(image_dir), "--bundle", str(bundle), "--out", CSV_NAME,
            *extra]


class TutorialFrames(torch.utils.data.Dataset):
    """The tutorial dataset: full PIL decode, torchvision Resize(256), CenterCrop(224), ToTensor, Normalize."""

    def __init__(self, files: list[Path], size: int = INPUT_SIZE) -> None:
        self.files = files
        self.transform = transforms.Compose([  # the tutorial's 256/224 ratio at the model's size
            transforms.Resize(round(size * 256 / 224)), transforms.CenterCrop(size), transforms.ToTensor(),
            transforms.Normalize(TUTORIAL_MEAN, TUTORIAL_STD)])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.files[index]) as img:
            return self.transform(img.convert("RGB"))


def baseline_child(image_dir: Path, arch: str, device: str) -> None:
    """Classify `image_dir` the tutorial way into CSV_NAME (path,label); runs in a child process."""
    import timm

    files = list_images(image_dir)
    model = timm.create_model(arch, pretrained=False, num_classes=NUM_CLASSES).eval().to(device)
    loader = torch.utils.data.DataLoader(TutorialFrames(files, input_size(arch)), batch_size=BATCH, num_workers=CORES,
                                         pin_memory=device == "cuda")
    labels: list[int] = []
    with torch.no_grad():
        for batch in loader:
            labels.extend(model(batch.to(device)).softmax(1).argmax(1).tolist())
    with open(CSV_NAME, "w", newline="") as f:  # not strict: fewer labels than files shows as missing rows
        csv.writer(f).writerows([("path", "label"), *zip(map(str, files), labels, strict=False)])


def measure_arch(arch: str, bundle_dir: Path, image_dir: Path, args: argparse.Namespace,
                 decode_times: dict[tuple, float]) -> dict:
    """t_d once, then per engine: the model alone (t_m), its bound and `trapcls predict` end to end; the baseline."""
    from trapcls.core.frames.preprocess import preprocess
    from trapcls.core.model.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    spec, files = bundle.preprocess, list_images(image_dir)
    key = (spec.height, spec.width, spec.resize, spec.interpolation)
    if key not in decode_times:
        say(f"{arch}: decode+resize on one thread, {len(files)} images x {args.repeats}")
        decode_times[key] = time_decode(files, spec, args.repeats)
    t_d = decode_times[key]
    arrays = [preprocess(f, spec) for f in files[:MODEL_IMAGES]]
    batches = [np.stack(arrays[i:i + BATCH]) for i in range(0, len(arrays), BATCH)]
    engines = {}
    for label, (engine_bundle, backend, time_model, note) in engine_plan(arch, bundle_dir, batches, args).items():
        if engine_bundle is None:
            engines[label] = {"note": note}
            continue
        say(f"{arch}: {label}: model alone, then trapcls predict")
        t_m = time_model()
        bound = min(CORES / t_d, 1 / t_m) if args.device == "cuda" else CORES / (t_d + t_m)
        cmd = trapcls_cmd(image_dir, engine_bundle, ["--backend", backend, *shlex.split(args.predict_args)])
        engines[label] = {"t_d_ms": t_d * 1e3, "t_m_ms": t_m * 1e3, "bound_images_per_s": bound, "note": note,
                          **time_child(label, cmd, len(files), args.repeats, args.cache)}
    if args.peer:
        engines["peer: SPARROW-Engine"] = measure_peer(arch, bundle_dir, image_dir, args)
    say(f"{arch}: tutorial baseline")
    baseline_cmd = [sys.executable, str(HERE), "--baseline-child", str(image_dir), "--arch", arch,
                    "--device", args.device]
    engines["tutorial torch loop"] = {"note": "", **time_child("baseline", baseline_cmd, len(files), args.repeats,
                                                                args.cache)}
    return {"t_d_ms": t_d * 1e3, "engines": engines}


def engine_plan(arch: str, bundle_dir: Path, batches: list[np.ndarray], args: argparse.Namespace) -> dict:
    """label -> (bundle or None, --backend, model-alone timer, note): the engines trapcls runs this model on."""
    onnx = bundle_dir / "model.onnx"
    if args.device == "cuda":
        cuda = lambda: time_model_cuda(arch, NUM_CLASSES, batches, args.repeats)  # noqa: E731
        return {"torch cuda fp16": (bundle_dir, "torch", cuda, "")}
    plan = {"onnxruntime fp32": (bundle_dir, "onnxruntime", lambda: time_model_onnx(onnx, batches, args.repeats), "")}
    say(f"{arch}: trapcls export openvino on a copy (checks f32 and bf16 on this CPU)")
    ov_dir, precision, why = openvino_bundle(bundle_dir, args.verify_frames)
    plan[f"openvino {precision}".strip()] = (ov_dir, "openvino", lambda: time_model_openvino(
        onnx, precision, batches, args.repeats), why)
    if args.int8:
        say(f"{arch}: trapcls export onnx --int8 (calibrate, then the gate)")
        int8_dir, summary = int8_bundle(arch, args.cache, args.calibration_frames, args.verify_frames)
        plan["onnxruntime int8"] = (int8_dir, "onnxruntime", lambda: time_model_onnx(
            int8_dir / "model.onnx", batches, args.repeats), summary)
    return plan


def predict_args(args: argparse.Namespace) -> list[str]:
    """Extra `trapcls predict` flags for the --rss-files runs: the torch backend on CUDA, then --predict-args."""
    return (["--backend", "torch"] if args.device == "cuda" else []) + shlex.split(args.predict_args)


def setup_peer(args: argparse.Namespace) -> dict | None:
    """The peer's venv (built on first use, needs the package index) and versions; None when it is left out."""
    if not args.peer or args.device == "cuda":  # the peer's wheel here is its CPU build
        return None
    say("peer: SPARROW-Engine venv")
    try:
        peer.ensure_venv(args.cache)
    except peer.PeerUnavailable as exc:
        sys.exit(f"error: {exc}")
    return peer.peer_versions(args.cache)


def measure_peer(arch: str, bundle_dir: Path, image_dir: Path, args: argparse.Namespace) -> dict:
    """(e) the peer's own work on one core and (f) its run over the same frames, timed like trapcls's."""
    model_dir = peer.prepare_model_dir(bundle_dir, args.cache)
    say(f"{arch}: (e) peer decode+resize and model alone on one core")
    work = peer.peer_bound(model_dir, image_dir, args.repeats, args.cache)
    say(f"{arch}: (f) peer SPARROW-Engine")
    run = time_child("peer", peer.peer_cmd(model_dir, image_dir, CSV_NAME, args.cache), len(list_images(image_dir)),
                     args.repeats, args.cache)
    return {"t_d_ms": work["t_d_s"] * 1e3, "t_m_ms": work["t_m_s"] * 1e3,
            "bound_images_per_s": CORES / (work["t_d_s"] + work["t_m_s"]), **run}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder (ena24_small, cct_sample)")
    p.add_argument("--images", type=int, default=400, help="number of image files to classify")
    p.add_argument("--arch", default="tf_efficientnet_lite0,tf_efficientnet_lite2,resnet50",
                   help="comma-separated timm architectures (tf_efficientnet_lite2 runs at 260 px, the rest at 224)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (median reported)")
    p.add_argument("--cache", type=Path, default=HERE.parent / ".cache", help="folder for image sets and bundles")
    p.add_argument("--predict-args", default="",
                   help='extra trapcls predict flags, e.g. "--workers 2"; one flag alone needs --predict-args="--tta"')
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--rss-files", default="", help="comma-separated file counts: only peak RSS per count, first arch")
    p.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    p.add_argument("--no-peer", dest="peer", action="store_false",
                   help="leave out the SPARROW-Engine peer (building its venv needs the package index)")
    p.add_argument("--no-int8", dest="int8", action="store_false", help="leave out `export onnx --int8`")
    p.add_argument("--baseline-child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.images < 1 or args.repeats < 1:
        p.error("--images and --repeats must be at least 1")
    try:
        args.rss_files = [int(c) for c in args.rss_files.split(",") if c.strip()]
    except ValueError:
        p.error(f"--rss-files must be comma-separated file counts such as 200,5000, got {args.rss_files!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda needs a CUDA build of torch and a visible GPU")
    args.cache = args.cache.resolve()
    return args


def main(argv: list[str] | None = None) -> None:
    """Build the image sets and bundles, measure, print the report, optionally write JSON."""
    args = parse_args(argv)
    if args.baseline_child:
        baseline_child(args.baseline_child, args.arch, args.device)
        return
    frames = source_frames(args.data)
    args.cache.mkdir(parents=True, exist_ok=True)
    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    report = {"machine": machine(args.device), "versions": versions(PACKAGES), "device": args.device,
              "predict_args": predict_args(args), "load_average": round(os.getloadavg()[0], 2)}
    if args.rss_files:
        bundle, rows = build_bundle(archs[0], args.cache, frames), []
        for count in args.rss_files:
            folder = build_image_set(frames, count, args.cache)
            say(f"{archs[0]}: trapcls predict on {count} files")
            cmd = trapcls_cmd(folder, bundle, predict_args(args))
            rows.append({"files": count, **time_child("trapcls", cmd, count, 1, args.cache)})
        report.update(arch=archs[0], rss=rows)
    else:
        report["peer_versions"] = setup_peer(args)
        args.peer = report["peer_versions"] is not None
        args.calibration_frames = check_frames(args.data, CALIBRATION)
        args.verify_frames = check_frames(args.data, VERIFICATION)
        bundles = {arch: build_bundle(arch, args.cache, frames) for arch in archs}
        image_dir = build_image_set(frames, args.images, args.cache)
        decode_times: dict[tuple, float] = {}
        report.update(images=args.images, repeats=args.repeats, results={
            arch: measure_arch(arch, bundles[arch], image_dir, args, decode_times) for arch in archs})
    print("\n".join(header(report) + (rss_table(report) if "rss" in report else throughput_table(report))))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
