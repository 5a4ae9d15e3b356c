"""CPU cost of predicting with bundles: `trapcls predict --backend onnxruntime` on a folder of frames.

predict_cost.py [--frames DIR] [--repeats N] NAME=BUNDLE [NAME=BUNDLE ...]

DIR defaults to ../shared/data/ena24_small (21 frames of 3.1 MP, the realistic size). The bundles run
in turn, N times each (default 3), each run a fresh CSV in a temporary folder. Printed per bundle, the
median over runs: images/s and ms per frame as `trapcls predict` reports them (decode + model, after
start-up), and the wall clock of the whole command (start-up and model loading included).
Run it on an otherwise idle machine; the 1-minute load average is printed with the table.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAPCLS = Path(sys.executable).parent / "trapcls"
REPORTED = re.compile(r"(\d+) images -> .* in ([\d.]+)s, ([\d.]+) images/s")


def cpu_model() -> str:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def run_once(bundle: Path, frames: Path, scratch: Path, i: int) -> tuple[int, float, float]:
    """(images, seconds trapcls reports, wall seconds of the command) for one fresh predict."""
    out = scratch / f"{bundle.name}-{i}.csv"
    start = time.perf_counter()
    proc = subprocess.run([str(TRAPCLS), "predict", str(frames), "--bundle", str(bundle), "--out", str(out),
                           "--backend", "onnxruntime"], capture_output=True, text=True)
    wall = time.perf_counter() - start
    found = REPORTED.search(proc.stdout + proc.stderr)
    if proc.returncode or not found:
        sys.exit(f"trapcls predict --bundle {bundle} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    images = int(found[1])
    return images, images / float(found[3]), wall  # the rate has more digits than the seconds


def main(argv: list[str]) -> None:
    frames, repeats = Path("../shared/data/ena24_small"), 3
    while argv and argv[0] in ("--frames", "--repeats"):
        flag, value, argv = argv[0], argv[1], argv[2:]
        frames, repeats = (Path(value), repeats) if flag == "--frames" else (frames, int(value))
    if not argv or any("=" not in a for a in argv):
        sys.exit(__doc__)
    bundles = [(name, Path(path)) for name, path in (a.split("=", 1) for a in argv)]
    times: dict[str, list[tuple[int, float, float]]] = {name: [] for name, _ in bundles}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        for i in range(repeats):  # interleaved, so a burst of other work hits every bundle alike
            for name, bundle in bundles:
                times[name].append(run_once(bundle, frames, Path(scratch), i))
    print(f"{cpu_model()}, {os.cpu_count()} cores; frames: {frames} ; median of {repeats} runs; "
          f"1-min load average at start {load:.2f}")
    print(f"{'bundle':<30}{'images':>8}{'images/s':>10}{'ms/frame':>10}{'wall s (whole command)':>24}")
    for name, runs in times.items():
        n = runs[0][0]
        seconds = statistics.median(r[1] for r in runs)
        wall = statistics.median(r[2] for r in runs)
        print(f"{name:<30}{n:>8}{n / seconds:>10.2f}{1000 * seconds / n:>10.1f}{wall:>24.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
