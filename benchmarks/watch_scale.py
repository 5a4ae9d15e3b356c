"""Season scale: what the watch daemon costs with 200,000 frames already in its journal.

Method (one run; nothing is cached):
  setup     an inbox of --files zero-byte .jpg files (scanning cost does not depend on their bytes) in
            --cameras camera folders of --subfolders DCIM-style subfolders each (200,000 = 10 x 10 x
            2,000, as cameras write them), and a journal in a separate --out holding every one of them as
            classified (Journal.restore: one transaction), with the default bundle's classes. Folder mtimes
            are set a minute back, as on a station where the cards came in earlier.
  rescan    in a fresh process per repeat, the daemon's Intake on that inbox with the journal loaded as the
            daemon loads it (`known`, from `Journal.known`), then one call, timed by CPU (time.process_time) and
            wall clock:
              before       the rescan as it was: discover_images over the whole inbox, `saw` for every file;
              full         Intake.scan(full=True): every folder listed (every 10th rescan, and the first);
              incremental  Intake.scan() after a first scan: only folders whose mtime changed are listed.
            "% of a core" is CPU seconds / the default --rescan-interval (60 s); "as run" weighs 9
            incremental rescans and 1 full one, the daemon's cycle (FULL_SCAN_EVERY).
  status    `python -m trapcls status OUT` as a user runs it: CPU (utime + stime) and peak RSS from wait4, wall.
  flush     one camera folder's 20,000-frame predictions.csv rebuilt from the journal (Writers.flush with
            that folder marked stale), in a fresh process.
Peak RSS of the in-process measures is ru_maxrss of their process: the Intake with the journal loaded
(the daemon's state, its model aside) plus the step. Every figure is the median of --repeats.

Usage:
  .venv/bin/python benchmarks/watch_scale.py                    # 200,000 files, 3 repeats, about 3 minutes
  .venv/bin/python benchmarks/watch_scale.py --files 20000 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
PACKAGES = ("trapcls", "numpy", "watchdog")
INTERVAL = 60.0  # WatchConfig.rescan_interval's default
KINDS = ("before", "full", "incremental", "flush")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- in a child process -------------------------------------------------------------------------------------


def build(inbox: Path, out: Path, *, files: int, cameras: int, subfolders: int) -> None:
    """The inbox of zero-byte frames and a journal that holds every one of them as done."""
    from trapcls.core.model.bundle import default_bundle, load_bundle
    from trapcls.watch.journal import DONE, Entry, Journal
    from trapcls.watch.paths import journal_path

    bundle = load_bundle(default_bundle())
    probs = [round(1 / len(bundle.classes), 6)] * len(bundle.classes)
    per_folder = -(-files // (cameras * subfolders))
    entries, now, made = [], time.time(), 0
    for c in range(cameras):
        for s in range(subfolders):
            folder = inbox / f"cam{c:02d}" / "DCIM" / f"{100 + s}RECNX"
            folder.mkdir(parents=True)
            for i in range(min(per_folder, files - made)):
                path = folder / f"IMG_{i:05d}.JPG"
                path.touch()
                st = path.stat()
                entries.append(Entry(path=path.relative_to(inbox).as_posix(), folder=f"cam{c:02d}", size=st.st_size,
                                     mtime_ns=st.st_mtime_ns, status=DONE, probs=probs, captured=None, attempts=0,
                                     last_error=None, updated=now))
                made += 1
    journal = Journal(journal_path(out))
    journal.bind_model(bundle.classes, bundle.model_id)
    journal.restore(entries)
    journal.close()
    then = time.time() - 60
    for folder in [inbox, *(p for p in inbox.rglob("*") if p.is_dir())]:
        os.utime(folder, (then, then))


def measure(kind: str, inbox: Path, out: Path) -> dict:
    """One timed step on the daemon's intake or writers in its state (journal loaded), in this fresh process."""
    import resource

    from trapcls.core.frames.discover import discover_images
    from trapcls.core.model.bundle import default_bundle, load_bundle
    from trapcls.watch.config import WatchConfig
    from trapcls.watch.intake import Intake
    from trapcls.watch.journal import Journal
    from trapcls.watch.paths import journal_path
    from trapcls.watch.writers import Writers

    bundle = load_bundle(default_bundle())
    config = WatchConfig(inbox=inbox, bundle=bundle.root, out=out)
    intake = Intake(config, inbox.resolve(), out.resolve())  # the daemon's parts, as Watcher makes them
    writers = Writers(config, out.resolve(), bundle.layout("field"))
    journal = Journal(journal_path(out))
    intake.attach(journal)  # as Watcher._open_outputs does: `known` from the journal
    if kind == "incremental":
        intake.scan()  # the first scan of a run is full; the ones after it are measured
    if kind == "flush":
        journal._db.execute("UPDATE folders SET dirty = 1 WHERE folder = 'cam00'")
    rss_before = _vmrss()

    def before() -> None:
        for f in discover_images([intake.inbox]):
            intake.saw(f.rel)

    step = {"before": before, "full": lambda: intake.scan(full=True), "incremental": intake.scan,
            "flush": lambda: writers.flush(journal)}[kind]
    cpu, wall = time.process_time(), time.perf_counter()
    step()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert not intake.waiting, f"{kind}: {len(intake.waiting)} files taken for new"
    rows = len((out / "cam00" / "predictions.csv").read_text().splitlines()) - 1 if kind == "flush" else None
    return {"cpu_s": cpu, "wall_s": wall, "rss_before_mib": rss_before,
            "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rows": rows}


def _vmrss() -> float:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


# --- in the parent (kept small: ru_maxrss survives exec, so a child's figure starts at ours) -------------------


def child(*args: str) -> dict:
    done = subprocess.run([sys.executable, str(HERE), "--child", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"child {args[0]} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def status(out: Path) -> dict:
    """`trapcls status OUT` in a child: wall, CPU and peak RSS from wait4."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "trapcls", "status", str(out)], stdout=subprocess.DEVNULL)
    _, code, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(code) != 0:
        sys.exit("trapcls status failed")
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": time.perf_counter() - start,
            "rss_peak_mib": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--cameras", type=int, default=10)
    parser.add_argument("--subfolders", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to build the inbox (default: a temp folder)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, inbox, out = args.child[0], Path(args.child[1]), Path(args.child[2])
        if kind == "build":
            build(inbox, out, files=args.files, cameras=args.cameras, subfolders=args.subfolders)
            print("{}")
        else:
            print(json.dumps(measure(kind, inbox, out)))
        return
    if min(args.files, args.cameras, args.subfolders, args.repeats) < 1:
        parser.error("--files, --cameras, --subfolders and --repeats must be at least 1")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        inbox, out = Path(tmp) / "inbox", Path(tmp) / "out"
        say(f"building {args.files:,} files and their journal")
        started = time.perf_counter()
        child("build", str(inbox), str(out), f"--files={args.files}", f"--cameras={args.cameras}",
              f"--subfolders={args.subfolders}")
        say(f"built in {time.perf_counter() - started:.0f} s")
        results: dict[str, list[dict]] = {kind: [] for kind in (*KINDS, "status")}
        for r in range(args.repeats):
            for kind in KINDS:  # interleaved, so a change in machine load touches every measure alike
                results[kind].append(child(kind, str(inbox), str(out)))
            results["status"].append(status(out))
            say(f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1]['cpu_s']:.2f} s CPU" for k, v in results.items()))
        rows = results["flush"][0]["rows"]
    print_table(args, results, rows)


def print_table(args: argparse.Namespace, results: dict[str, list[dict]], flush_rows: int) -> None:
    sys.path.insert(0, str(HERE.parent))
    from environment import machine, versions

    import trapcls.watch.intake as intake

    for runs in results.values():
        for r in runs:  # VmRSS read before the step and ru_maxrss differ by rounding; a peak is never below
            r["rss_peak_mib"] = max(r["rss_peak_mib"], r.get("rss_before_mib", 0.0))
    med = {k: {m: statistics.median(r.get(m, 0.0) for r in v) for m in ("cpu_s", "wall_s", "rss_before_mib",
                                                                         "rss_peak_mib")}
           for k, v in results.items()}
    info, vers = machine("cpu"), versions(PACKAGES)
    import sqlite3

    print(f"machine : {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB; 1-min load average at the end "
          f"{os.getloadavg()[0]:.1f}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()) + f", sqlite {sqlite3.sqlite_version}")
    per = -(-args.files // (args.cameras * args.subfolders))
    print(f"inbox   : {args.files:,} zero-byte .jpg in {args.cameras} camera folders x {args.subfolders} subfolders "
          f"({per:,} files each), all done in the journal; median of {args.repeats} repeats")
    print()
    print(f"{'measure':<52}{'CPU s':>8}{'wall s':>8}{'RSS MiB before/peak':>21}{'% of a core at 60 s':>21}")
    labels = {"before": "rescan before: discover_images + stat every file",
              "full": f"rescan full (first, and every {intake.FULL_SCAN_EVERY}th)",
              "incremental": "rescan incremental (folders unchanged)",
              "status": "trapcls status (a process)",
              "flush": f"flush: rebuild one {flush_rows:,}-frame CSV"}
    for kind in ("before", "full", "incremental", "status", "flush"):
        m = med[kind]
        share = f"{100 * m['cpu_s'] / INTERVAL:.3f}" if kind in ("before", "full", "incremental") else "-"
        rss = f"{m['rss_before_mib']:.0f} / {m['rss_peak_mib']:.0f}" if kind != "status" else f"{m['rss_peak_mib']:.0f}"
        print(f"{labels[kind]:<52}{m['cpu_s']:>8.3f}{m['wall_s']:>8.3f}{rss:>21}{share:>21}")
    n = intake.FULL_SCAN_EVERY
    cycle = ((n - 1) * med["incremental"]["cpu_s"] + med["full"]["cpu_s"]) / n
    print(f"{f'rescan as run: ({n - 1} incremental + 1 full) / {n}':<52}{cycle:>8.3f}{'':>8}{'':>21}"
          f"{100 * cycle / INTERVAL:>21.3f}")
    print()
    print("CPU s: time.process_time of the step (status: utime + stime of the process). RSS before: VmRSS of the "
          "process\nholding the journal as the daemon loads it, before the step; peak: its ru_maxrss (loading "
          "included).\n% of a core: CPU s / 60 s, the default --rescan-interval.")


if __name__ == "__main__":
    main()
