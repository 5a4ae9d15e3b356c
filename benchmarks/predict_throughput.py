"""Predict throughput: trapcls end to end against the machine's work bound and a tutorial baseline.

Method (one run, warm page cache, real camera-trap frames from ../shared/data, per architecture):
  t_d       decode + resize + normalise of one image with `trapcls.core.preprocess.preprocess`, one thread
            (measured once per input geometry: the normalisation constants do not change the cost).
  t_m       the bundle's model.onnx alone in ONNX Runtime (1 intra-op, 1 inter-op thread, ORT_ENABLE_ALL)
            on already-decoded batches of 16.
  bound     cores / (t_d + t_m): every core doing only that work, nothing else costing anything.
  trapcls   `python -m trapcls predict DIR --bundle B --out FRESH.csv` in a child process;
            files / the child's wall clock (interpreter start, imports, bundle load and CSV included).
  baseline  the loop most tutorials write, also in a child: PIL full decode, torchvision Resize(256),
            CenterCrop(224), ToTensor, Normalize; DataLoader(batch 16, one worker per core); eager timm
            model under no_grad with torch's default threads; writes path,label rows. Same timing.
Peak RSS is ru_maxrss from os.wait4 on the child. Every time is the median of --repeats.
Models are random-init timm models at 224x224 with 8 classes, saved as trapcls checkpoints and exported
with trapcls's own exporter: speed does not depend on the weights.

--device cuda (labelled in the table): trapcls gets `--backend torch`, t_m is the torch model alone
(FP16, channels_last, forward only), the baseline runs its model on CUDA in FP32, and the bound becomes
min(cores / t_d, 1 / t_m) because decoding and the model no longer share the cores.

Usage (the image sets and bundles are cached in benchmarks/.cache/):
  .venv/bin/python benchmarks/predict_throughput.py                  # 400 images, lite0 and resnet50
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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from environment import machine, versions  # noqa: E402

from trapcls.core.hardware import cores  # noqa: E402

DEFAULT_DATA = HERE.parents[2] / "shared" / "data"
INPUT_SIZE, NUM_CLASSES, BATCH = 224, 8, 16
MODEL_IMAGES = 64  # t_m needs only a few batches: model time does not depend on image content
SUBFOLDERS = 4
# The torchvision tutorial constants, on purpose: the baseline is what people write by hand.
TUTORIAL_MEAN, TUTORIAL_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PACKAGES = ("trapcls", "torch", "torchvision", "timm", "onnxruntime", "pillow", "numpy")
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


def build_bundle(arch: str, cache: Path, frames: list[Path]) -> Path:
    """A random-init 224x224 bundle for `arch`, saved as a trapcls checkpoint and exported (cached)."""
    from trapcls.export.onnx import export_onnx
    from trapcls.training.checkpoint import save_checkpoint
    from trapcls.training.models import create_model, preprocess_spec

    out = cache / f"bundle-{arch}-{INPUT_SIZE}"
    if (out / "bundle.json").exists():
        return out
    say(f"building bundle {out.name}")
    torch.manual_seed(0)
    model = create_model(arch, NUM_CLASSES).eval()
    spec = preprocess_spec(model, INPUT_SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "best.pt"
        save_checkpoint(ckpt, model, arch=arch, classes=[f"class{i}" for i in range(NUM_CLASSES)], spec=spec,
                        epoch=0, metrics={}, config={"note": "random init, benchmarks/predict_throughput.py"})
        export_onnx(ckpt, out, verify_images=frames[:8])
    return out


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """The median wall-clock seconds of `repeats` calls of `fn`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_decode(files: list[Path], spec, repeats: int) -> float:
    """Per-image seconds of `trapcls.core.preprocess.preprocess` on one thread."""
    from trapcls.core.preprocess import preprocess

    preprocess(files[0], spec)  # warm-up: lazy imports, allocator
    return median_seconds(lambda: [preprocess(f, spec) for f in files], repeats) / len(files)


def time_model_onnx(onnx_path: Path, batches: list[np.ndarray], repeats: int) -> float:
    """Per-image seconds of the ONNX model alone on one core."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: batches[0]})  # warm-up
    return median_seconds(lambda: [session.run(None, {name: b}) for b in batches], repeats) / sum(map(len, batches))


def time_model_cuda(arch: str, batches: list[np.ndarray], repeats: int) -> float:
    """Per-image seconds of the torch model alone on CUDA (FP16, channels_last, forward only)."""
    import timm

    model = timm.create_model(arch, pretrained=False, num_classes=NUM_CLASSES).eval()
    model = model.to("cuda", torch.float16).to(memory_format=torch.channels_last)
    inputs = [torch.from_numpy(b).to("cuda", torch.float16).contiguous(memory_format=torch.channels_last)
              for b in batches]

    def forward_all() -> None:
        """Every batch through the model, then wait for the GPU."""
        with torch.inference_mode():
            for x in inputs:
                model(x)
        torch.cuda.synchronize()

    forward_all()  # warm-up: cuDNN autotuning, lazy initialisation
    return median_seconds(forward_all, repeats) / sum(map(len, batches))


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

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.transform = transforms.Compose([
            transforms.Resize(256), transforms.CenterCrop(INPUT_SIZE), transforms.ToTensor(),
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
    loader = torch.utils.data.DataLoader(TutorialFrames(files), batch_size=BATCH, num_workers=CORES,
                                         pin_memory=device == "cuda")
    labels: list[int] = []
    with torch.no_grad():
        for batch in loader:
            labels.extend(model(batch.to(device)).softmax(1).argmax(1).tolist())
    with open(CSV_NAME, "w", newline="") as f:  # not strict: fewer labels than files shows as missing rows
        csv.writer(f).writerows([("path", "label"), *zip(map(str, files), labels, strict=False)])


def measure_arch(arch: str, bundle_dir: Path, image_dir: Path, args: argparse.Namespace,
                 decode_times: dict[tuple, float]) -> dict:
    """The four measurements (a)-(d) for one architecture."""
    from trapcls.core.bundle import load_bundle
    from trapcls.core.preprocess import preprocess

    bundle = load_bundle(bundle_dir)
    spec, files = bundle.preprocess, list_images(image_dir)
    key = (spec.height, spec.width, spec.resize, spec.interpolation)
    if key not in decode_times:
        say(f"{arch}: (a) decode+resize on one thread, {len(files)} images x {args.repeats}")
        decode_times[key] = time_decode(files, spec, args.repeats)
    t_d = decode_times[key]
    say(f"{arch}: (b) model alone on {args.device}")
    arrays = [preprocess(f, spec) for f in files[:MODEL_IMAGES]]
    batches = [np.stack(arrays[i:i + BATCH]) for i in range(0, len(arrays), BATCH)]
    if args.device == "cuda":
        t_m = time_model_cuda(arch, batches, args.repeats)
        bound = min(CORES / t_d, 1 / t_m)
    else:
        t_m = time_model_onnx(bundle.onnx_path, batches, args.repeats)
        bound = CORES / (t_d + t_m)
    say(f"{arch}: (c) trapcls predict")
    ours = time_child("trapcls", trapcls_cmd(image_dir, bundle_dir, predict_args(args)), len(files), args.repeats,
                      args.cache)
    say(f"{arch}: (d) tutorial baseline")
    baseline_cmd = [sys.executable, str(HERE), "--baseline-child", str(image_dir), "--arch", arch,
                    "--device", args.device]
    baseline = time_child("baseline", baseline_cmd, len(files), args.repeats, args.cache)
    return {"t_d_ms": t_d * 1e3, "t_m_ms": t_m * 1e3, "bound_images_per_s": bound, "trapcls": ours,
            "baseline": baseline}


def predict_args(args: argparse.Namespace) -> list[str]:
    """Extra `trapcls predict` flags: the torch backend on CUDA, then whatever --predict-args says."""
    return (["--backend", "torch"] if args.device == "cuda" else []) + shlex.split(args.predict_args)


def num(value: float | None, spec: str) -> str:
    """A number for a table cell, or 'failed' when the runs produced none."""
    return "failed" if value is None else format(value, spec)


def render(cols: list[str], rows: list[list[str]]) -> list[str]:
    """Aligned text lines: first column left, the rest right."""
    widths = [max(len(row[i]) for row in [cols, *rows]) for i in range(len(cols))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
            for row in [cols, *rows]]


def header(report: dict) -> list[str]:
    """The lines above either table: machine, versions, image set, extra flags, load."""
    m, sizes = report["machine"], report.get("images") or ", ".join(str(r["files"]) for r in report["rss"])
    return [f"machine : {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM"
            + (f", GPU {m['gpu']}" if "gpu" in m else "") + f"; device {report['device']}",
            "versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
            f"images  : {sizes} files cycling 21 ENA24 + 60 CCT real frames (hard links)"
            + (f", repeats {report['repeats']}" if "repeats" in report else ""),
            f"trapcls predict extra args: {' '.join(report['predict_args']) or '(none)'}",
            f"1-min load average at start: {report['load_average']} (near 0, or other work skews every figure)", ""]


def rss_table(report: dict) -> list[str]:
    """Peak RSS of one trapcls run per number of files."""
    rows = [[str(r["files"]), f"{r['wall_s'][0]:.1f}", num(r["images_per_s"], ".1f"), f"{r['peak_rss_mib']:.0f}"]
            for r in report["rss"]]
    return ([f"peak RSS of one `trapcls predict` run ({report['arch']}) per number of files"]
            + render(["files", "wall s", "img/s", "peak RSS MiB"], rows)
            + [f"problem: {p}" for r in report["rss"] for p in r["problems"]])


def throughput_table(report: dict) -> list[str]:
    """One row per architecture, the legend, then any problems."""
    rows, problems = [], []
    for arch, r in report["results"].items():
        ours, base, bound = r["trapcls"]["images_per_s"], r["baseline"]["images_per_s"], r["bound_images_per_s"]
        rows.append([arch, f"{r['t_d_ms']:.1f}", f"{r['t_m_ms']:.1f}", f"{bound:.1f}", num(ours, ".1f"),
                     num(ours and 100 * ours / bound, ".0f"), num(base, ".1f"),
                     num(ours and base and ours / base, ".2f"), f"{r['trapcls']['peak_rss_mib']:.0f}",
                     f"{r['baseline']['peak_rss_mib']:.0f}"])
        problems += [f"problem ({arch}): {p}" for p in r["trapcls"]["problems"] + r["baseline"]["problems"]]
    cuda = report["device"] == "cuda"
    legend = [
        "t_d: trapcls.core.preprocess.preprocess on 1 thread. t_m: model alone, batches of 16, "
        + ("torch FP16 channels_last on CUDA, forward only." if cuda else "ONNX Runtime on 1 thread."),
        (f"bound/s = {'min(cores/t_d, 1/t_m)' if cuda else 'cores/(t_d+t_m)'}. trapcls/s, baseline/s: "
         "files / child wall clock (start-up included), median of repeats."),
        "MiB: peak RSS, ru_maxrss from wait4 on the child, max over repeats. For the baseline it is the largest",
        "single process among its main process and the DataLoader workers it reaped, not their sum."]
    cols = ["arch", "t_d ms", "t_m ms", "bound/s", "trapcls/s", "% bound", "baseline/s", "trapcls/base",
            "trapcls MiB", "baseline MiB"]
    return render(cols, rows) + [""] + legend + problems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder (ena24_small, cct_sample)")
    p.add_argument("--images", type=int, default=400, help="number of image files to classify")
    p.add_argument("--arch", default="tf_efficientnet_lite0,resnet50", help="comma-separated timm architectures")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (median reported)")
    p.add_argument("--cache", type=Path, default=HERE.parent / ".cache", help="folder for image sets and bundles")
    p.add_argument("--predict-args", default="",
                   help='extra trapcls predict flags, e.g. "--workers 2"; one flag alone needs --predict-args="--tta"')
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--rss-files", default="", help="comma-separated file counts: only peak RSS per count, first arch")
    p.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
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
