"""Watch latency: from a camera folder finishing its copy to its predictions.csv being complete.

Method (one run, real camera-trap frames from ../shared/data, the random-init Lite0 224x224 bundle
of predict_throughput.py, cached in benchmarks/.cache/):
  watch     one `trapcls watch INBOX` daemon (default --settle 5, as shipped, or --settle S), started
            once and waited for with a real NOTIFY_SOCKET (READY=1). Each repeat copies N frames into a
            new camera folder; the clock runs from the last byte copied to the moment the folder's CSV
            holds N rows (polled every 20 ms). It includes the settle wait by design: that is how
            long a field user waits. With inotify, a file closed after writing is taken at once (no
            settle wait), and the daemon classifies the card while it is still being copied, so
            the figure is mostly the tail of the card.
  baseline  the same folder classified by hand right after the copy: `python -m trapcls predict FOLDER`
            in a child, until it exits (interpreter start, imports and bundle load included).
  idle      the daemon with nothing to do, before any folder arrives: CPU share over --idle-seconds
            (utime + stime from /proc/PID/stat) and resident memory (VmRSS), model loaded.
Every figure is the median of --repeats (min-max shown).

Usage:
  .venv/bin/python benchmarks/watch_latency.py                       # 100 frames, 3 repeats, settle 5 s
  .venv/bin/python benchmarks/watch_latency.py --frames 40 --repeats 2 --settle 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from environment import machine, versions  # noqa: E402
from predict_throughput import DEFAULT_DATA, PACKAGES, build_bundle, list_images, say  # noqa: E402


def wait_for(predicate, timeout: float, step: float = 0.02) -> float:
    """Poll `predicate` until true; return the time it became true (perf_counter)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if predicate():
            return time.perf_counter()
        time.sleep(step)
    raise TimeoutError("timed out")


def rows(path: Path) -> int:
    try:
        with open(path, encoding="utf-8") as fh:
            return max(sum(1 for _ in fh) - 1, 0)
    except FileNotFoundError:
        return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--cache", type=Path, default=HERE.parent / ".cache")
    args = parser.parse_args()
    if args.frames < 1 or args.repeats < 1:
        parser.error("--frames and --repeats must be at least 1")
    frames = sorted(p for folder in ("ena24_small", "serengeti", "cct_sample") for p in list_images(args.data / folder))
    if not frames:
        parser.error(f"no frames under {args.data}")
    frames = [frames[i % len(frames)] for i in range(args.frames)]
    args.cache.mkdir(parents=True, exist_ok=True)
    bundle = build_bundle("tf_efficientnet_lite0", args.cache, frames)

    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        tmp = Path(tmp)
        inbox, sock_path = tmp / "inbox", tmp / "notify.sock"
        inbox.mkdir()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(str(sock_path))
        listener.settimeout(120)
        env = {**os.environ, "NOTIFY_SOCKET": str(sock_path)}
        say("starting the daemon")
        daemon = subprocess.Popen([sys.executable, "-m", "trapcls", "watch", str(inbox), "--bundle", str(bundle),
                                   "--settle", str(args.settle)], env=env, stderr=subprocess.DEVNULL)
        try:
            while b"READY=1" not in listener.recv(4096):
                pass
            time.sleep(2)  # let the first (empty) scan finish
            cpu0, t0 = cpu_seconds(daemon.pid), time.perf_counter()
            time.sleep(args.idle_seconds)
            idle_cpu = (cpu_seconds(daemon.pid) - cpu0) / (time.perf_counter() - t0)
            idle_rss = rss_mib(daemon.pid)
            watch_s, base_s = [], []
            for r in range(args.repeats):
                watched, by_hand = one_card(inbox / f"card{r}", tmp / f"staging{r}", tmp / f"base{r}.csv", frames,
                                            bundle)
                watch_s.append(watched)
                base_s.append(by_hand)
                say(f"repeat {r + 1}: watch {watched:.2f} s, predict {by_hand:.2f} s")
            busy_rss = rss_mib(daemon.pid)
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
            listener.close()

    print_table(args, bundle, watch_s=watch_s, base_s=base_s, idle_cpu=idle_cpu, rss=(idle_rss, busy_rss))


def one_card(camera: Path, staging: Path, base_csv: Path, frames: list[Path], bundle: Path) -> tuple[float, float]:
    """Copy one card into the inbox; seconds from its last byte to a complete CSV, and for predict by hand."""
    staging.mkdir()
    camera.mkdir()
    for i, frame in enumerate(frames):  # copy into the inbox as a card reader would: file by file
        shutil.copyfile(frame, camera / f"{i:05d}{frame.suffix.lower()}")
    copied = time.perf_counter()
    for i, frame in enumerate(frames):  # the same folder for the baseline, outside the inbox
        shutil.copyfile(frame, staging / f"{i:05d}{frame.suffix.lower()}")
    done = wait_for(lambda: rows(camera / "predictions.csv") >= len(frames), timeout=600)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "trapcls", "predict", str(staging), "--bundle", str(bundle),
                    "--out", str(base_csv)], check=True, capture_output=True)
    return done - copied, time.perf_counter() - start


def print_table(args: argparse.Namespace, bundle: Path, *, watch_s: list[float], base_s: list[float],
                idle_cpu: float, rss: tuple[float, float]) -> None:
    """The machine, versions and workload, then the medians (min-max) of every measure."""
    idle_rss, busy_rss = rss
    info, vers = machine("cpu"), versions(PACKAGES)
    print(f"machine : {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()))
    print(f"workload: {args.frames} real frames per camera folder, bundle {bundle.name}, settle {args.settle:g} s, "
          f"{args.repeats} repeats")
    print()
    print(f"{'measure':<48}{'median':>10}{'min-max':>18}")
    med = statistics.median
    print(f"{'watch: copy finished -> CSV complete (s)':<48}{med(watch_s):>10.2f}"
          f"{f'{min(watch_s):.2f}-{max(watch_s):.2f}':>18}")
    print(f"{'baseline: trapcls predict by hand (s)':<48}{med(base_s):>10.2f}"
          f"{f'{min(base_s):.2f}-{max(base_s):.2f}':>18}")
    print(f"{'daemon idle CPU (% of one core)':<48}{100 * idle_cpu:>10.2f}")
    print(f"{'daemon RSS idle / after the folders (MiB)':<48}{f'{idle_rss:.0f} / {busy_rss:.0f}':>10}")



if __name__ == "__main__":
    main()
