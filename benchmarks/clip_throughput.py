"""Clip throughput: a 30 s 1080p H.264 clip at 30 fps, sampled at 1 fps and classified by the shipped model.

Method (one run, warm page cache, the shipped default bundle on ONNX Runtime's CPU provider, as predict runs it):
  clip      made once from real frames and cached in benchmarks/.cache/: the RECONYX burst of
            ../shared/data/reconyx_burst (10 IR frames of a heron, 2048x1440; else the 512x360 copies in
            tests/data), each held 3 s and scaled to cover 1920x1080 + a margin, with a slow pan (2 px a frame)
            so that every frame differs as a real clip's do. libx264, preset fast, CRF 23, yuv420p; three
            clips: a keyframe a second without B-frames (IPPP, as many camera SoCs encode) and with x264's 3
            (IBBP), and a keyframe at most each 250 frames with B-frames (IBBP-250, x264's default).
  trapcls   `trapcls.core.frames.video.sample_clip` (one pass over the packets, no seeking; only the groups of
            pictures that hold a frame at 0, 1, 2 ... s decoded, only those frames converted to RGB, resized and
            normalised as stills are), then the model on the 30 frames (batches of predict's CPU batch size).
            Timed per clip, model loaded: what each clip of a long run costs.
  workers   the same through `ClipDecoder` (decoding in a worker process, the model in the parent, as
            `trapcls predict` runs clips) over --clips copies of the clip, with 1 and 2 workers: the decoder of
            the next clip runs while the model classifies this one. Wall clock from the first clip sent to
            the last classified.
  baseline  what MegaDetector's video path does: every frame decoded and converted to RGB (OpenCV's read();
            here PyAV's to_ndarray("rgb24"), with the same FFmpeg threads), every 30th kept, then the same
            resize, normalisation and model. Same timing as trapcls.
  decode    the decoder alone, every frame (no RGB, no model): FFmpeg's frame+slice, slice or frame threads, one
            thread, and slice threads with skip_frame=NONREF (frames no other frame refers to left undecoded).
            Seconds per clip, for the notes.
Every variant runs in its own child process (started through a small launcher, so ru_maxrss is the child's own
peak, from wait4); `workers` adds each decoder process's peak (VmHWM, read before it stops). Every time is the
median of --repeats. x real time = clip seconds per wall second.

Usage:
  .venv/bin/python benchmarks/clip_throughput.py                     # 3 repeats, 4 clips for the workers rows
  .venv/bin/python benchmarks/clip_throughput.py --repeats 1 --clips 2
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
sys.path.insert(0, str(HERE.parent))
from environment import machine, versions  # noqa: E402
from predict_report import num, render  # noqa: E402

REPO = HERE.parents[1]
SOURCES = (REPO.parent / "shared" / "data" / "reconyx_burst", REPO / "tests" / "data" / "reconyx_burst")
WIDTH, HEIGHT, RATE, SECONDS, HOLD, MARGIN = 1920, 1080, 30, 30, 90, 96
PACKAGES = ("trapcls", "av", "onnxruntime", "numpy", "pillow")
# (name, B-frames, frames between keyframes): a keyframe a second without and with B-frames, and x264's
# default of at most one each 250 frames (about 8 s here), where most groups of pictures hold a sampled frame.
CLIPS = (("IPPP", 0, RATE), ("IBBP", 3, RATE), ("IBBP-250", 3, 250))
T0 = time.perf_counter()
# ru_maxrss survives exec: a launcher in between keeps each child's figure its own (as predict_throughput.py).
LAUNCHER = """\
import json, os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"wall_s": time.perf_counter() - start, "rc": os.waitstatus_to_exitcode(status),
               "rss_mib": usage.ru_maxrss / 1024}, f)
"""


def say(message: str) -> None:
    """A progress line on stderr with the seconds since start."""
    print(f"[{time.perf_counter() - T0:5.0f}s] {message}", file=sys.stderr, flush=True)


def make_clip(cache: Path, bframes: int, gop: int) -> Path:
    """The 30 s 1080p30 H.264 clip (cached): the burst's frames, each held 3 s, panning 2 px a frame."""
    import av
    from PIL import Image

    out = cache / (f"clip-{WIDTH}x{HEIGHT}-{RATE}fps-{SECONDS}s-bf{bframes}" + ("" if gop == RATE else f"-gop{gop}")
                   + ".mp4")
    if out.exists():
        return out
    source = next((s for s in SOURCES if any(s.glob("*.JPG"))), None)
    if source is None:
        sys.exit(f"error: no frames in {' or '.join(map(str, SOURCES))}")
    say(f"making {out.name} from {source} (once; about a minute)")
    cover = (WIDTH + 2 * MARGIN, HEIGHT + 2 * MARGIN)
    frames = [Image.open(p).convert("RGB").resize(cover, Image.Resampling.BICUBIC)
              for p in sorted(source.glob("*.JPG"))]
    cache.mkdir(parents=True, exist_ok=True)
    part = out.with_suffix(".part.mp4")
    with av.open(str(part), "w") as container:
        stream = container.add_stream("libx264", rate=RATE, options={"preset": "fast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.gop_size, stream.codec_context.max_b_frames = gop, bframes
        for i in range(RATE * SECONDS):
            step = i % HOLD
            img = frames[(i // HOLD) % len(frames)].crop((2 * step, step, 2 * step + WIDTH, step + HEIGHT))
            container.mux(stream.encode(av.VideoFrame.from_image(img)))
        container.mux(stream.encode())
    part.rename(out)
    return out


def model():
    """The shipped bundle and its ONNX Runtime backend, as predict builds them on a CPU."""
    from trapcls.core.model.bundle import default_bundle, load_bundle
    from trapcls.predict.backends import create_backend

    bundle = load_bundle(default_bundle())
    return bundle, create_backend("onnxruntime", bundle)


def classify(bundle, backend, inputs):
    """Probabilities of the sampled frames, in predict's CPU batches."""
    import numpy as np

    from trapcls.core.model.probs import probabilities
    from trapcls.predict.config import DEFAULT_BATCH

    size = DEFAULT_BATCH["cpu"]
    return np.concatenate([probabilities(backend.logits(inputs[i:i + size]), bundle.temperature)
                           for i in range(0, len(inputs), size)])


def megadetector_style(clip: Path, spec, fps: float = 1.0):
    """Every frame decoded and converted to RGB; every (rate / fps)th kept by its index, made into model input."""
    import av
    import numpy as np
    from PIL import Image

    from trapcls.core.frames.preprocess import resize, to_array

    kept = []
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        every = max(1, round(float(stream.average_rate) / fps))
        for i, frame in enumerate(container.decode(stream)):
            rgb = frame.to_ndarray(format="rgb24")
            if i % every == 0:
                kept.append(to_array(resize(Image.fromarray(rgb), spec), spec))
    return np.stack(kept)


def per_clip(variant: str, clip: Path, repeats: int) -> dict:
    """Decode (+ sample) and classify one clip `repeats` times in this process; seconds per stage."""
    from trapcls.core.frames.video import sample_clip

    bundle, backend = model()
    classify(bundle, backend, __import__("numpy").zeros((1, 3, bundle.preprocess.height, bundle.preprocess.width),
                                                          "float32"))  # warm-up
    runs = []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), _cpu_self()
        if variant == "trapcls":
            inputs = sample_clip(clip, bundle.preprocess).inputs
        else:
            inputs = megadetector_style(clip, bundle.preprocess)
        decoded = time.perf_counter()
        classify(bundle, backend, inputs)
        runs.append({"decode_s": decoded - start, "model_s": time.perf_counter() - decoded,
                     "total_s": time.perf_counter() - start, "cpu_s": _cpu_self() - cpu, "frames": len(inputs)})
    return {"runs": runs}


def through_workers(clip: Path, copies: int, workers: int) -> dict:
    """`copies` clips through ClipDecoder with `workers` processes, the model in this process."""
    from trapcls.predict.clip_workers import ClipDecoder

    bundle, backend = model()
    links = Path(tempfile.mkdtemp(prefix="clips-"))
    paths = []
    for i in range(copies):  # distinct names, one file: the page cache serves all of them
        paths.append(links / f"clip{i}.mp4")
        os.symlink(clip, paths[-1])
    peaks, frames = {}, 0
    with ClipDecoder(bundle.preprocess, workers=workers) as decoder:
        start, cpu = time.perf_counter(), _cpu_self()
        for _, sampled in decoder.decode(paths):
            if isinstance(sampled, str):
                raise SystemExit(f"error: {sampled}")
            frames += len(classify(bundle, backend, sampled.inputs))
            peaks.update({pid: _peak_mib(pid) for pid in decoder.pids()})
        wall, cpu = time.perf_counter() - start, _cpu_self() - cpu
        cpu += sum(_cpu_of(pid) for pid in decoder.pids())  # the workers: started with the first clip, idle now
    return {"wall_s": wall, "cpu_s": cpu, "clips": copies, "frames": frames, "worker_peak_mib": sorted(peaks.values())}


def _cpu_self() -> float:
    """CPU seconds (user + system, every thread) this process has used."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return 0.0


def decode_alone(clip: Path, how: str, repeats: int) -> dict:
    """Seconds to decode every frame (no RGB, no model): frame and slice threads, slice threads only, frame
    threads only, one thread, or slice threads with skip_frame=NONREF."""
    import av

    runs = []
    for _ in range(repeats):
        start, cpu, count = time.perf_counter(), _cpu_self(), 0
        with av.open(str(clip)) as container:
            stream = container.streams.video[0]
            stream.thread_type = {"frame+slice": "AUTO", "frame": "FRAME"}.get(how, "SLICE")
            if how == "1 thread":
                stream.codec_context.thread_count = 1
            if how == "slice, NONREF":
                stream.codec_context.skip_frame = "NONREF"
            for _frame in container.decode(stream):
                count += 1
        runs.append({"total_s": time.perf_counter() - start, "cpu_s": _cpu_self() - cpu, "frames": count})
    return {"runs": runs}


def child(args: argparse.Namespace) -> None:
    """One variant, in this (child) process; its result as JSON on the path given."""
    variant, clip = args.child, Path(args.clip)
    if variant in ("trapcls", "baseline"):
        result = per_clip(variant, clip, args.repeats)
    elif variant.startswith("workers"):
        result = through_workers(clip, args.clips, int(variant.split("-")[1]))
    else:
        result = decode_alone(clip, variant.split(":", 1)[1], args.repeats)
    Path(args.out).write_text(json.dumps(result))


def launch(variant: str, clip: Path, args: argparse.Namespace) -> dict:
    """Run `variant` in a child through the launcher; its result, wall clock and peak RSS."""
    with tempfile.TemporaryDirectory() as work:
        out, meta = Path(work) / "result.json", Path(work) / "launcher.json"
        cmd = [sys.executable, str(HERE), "--child", variant, "--clip", str(clip), "--out", str(out),
               "--repeats", str(args.repeats), "--clips", str(args.clips)]
        subprocess.run([sys.executable, "-I", "-c", LAUNCHER, str(meta), *cmd], check=True, cwd=REPO)
        facts = json.loads(meta.read_text())
        if facts["rc"] != 0 or not out.exists():
            raise SystemExit(f"error: {variant} on {clip.name} failed (exit {facts['rc']})")
        return {**json.loads(out.read_text()), "rss_mib": facts["rss_mib"]}


def medians(result: dict) -> dict:
    """Median of each timed field over the repeats."""
    return {k: statistics.median(r[k] for r in result["runs"]) for k in result["runs"][0]}


def rows_for(name: str, results: dict) -> list[list[str]]:
    """Table rows for one clip: trapcls, the two worker runs, the baseline."""
    rows = []
    for label, key in (("trapcls sample_clip + model", "trapcls"), ("MegaDetector-style: all to RGB", "baseline")):
        m, r = medians(results[key]), results[key]
        rows.append([name, label, f"{m['decode_s']:.2f}", f"{m['model_s']:.2f}", f"{m['total_s']:.2f}",
                     f"{m['cpu_s']:.2f}", f"{1 / m['total_s']:.2f}", f"{SECONDS / m['total_s']:.1f}",
                     f"{r['rss_mib']:.0f}"])
    for workers in (1, 2):
        r = results[f"workers-{workers}"]
        per = r["wall_s"] / r["clips"]
        peak = f"{r['rss_mib']:.0f} + {' + '.join(f'{p:.0f}' for p in r['worker_peak_mib'])}"
        rows.append([name, f"trapcls ClipDecoder, {workers} worker{'s' if workers > 1 else ''}", "-", "-",
                     f"{per:.2f}", f"{r['cpu_s'] / r['clips']:.2f}", f"{1 / per:.2f}", f"{SECONDS / per:.1f}", peak])
    return rows


def report(clips: dict[str, dict], decode: dict[str, dict], args: argparse.Namespace, load: str) -> list[str]:
    """The header, the throughput table and the decoder-alone table."""
    m = machine("cpu")
    lines = [f"machine : {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM",
             "versions: " + ", ".join(f"{k} {v}" for k, v in versions(PACKAGES).items()),
             f"clip    : {SECONDS} s, {WIDTH}x{HEIGHT}, {RATE} fps, H.264 (libx264 fast, CRF 23), 1 fps sampling "
             f"({SECONDS} frames); repeats {args.repeats}, {args.clips} clips for the worker rows",
             f"1-min load average at start: {load} (near 0, or other work skews every figure)", ""]
    rows = [row for name, results in clips.items() for row in rows_for(name, results)]
    lines += render(["clip", "variant", "decode s", "model s", "s/clip", "CPU s/clip", "clips/s", "x real time",
                     "peak MiB"], rows)
    lines += ["", "decode s: decoding and sampling (trapcls) or decoding every frame to RGB (baseline); model s: the",
              "30 frames through the shipped model. CPU s: user + system, every thread (worker rows: the workers'",
              "too). peak MiB: ru_maxrss of the child; worker rows add each decoder process's VmHWM. Worker rows:",
              "wall clock over the clips / clips, decoding overlapping the model. Medians of the repeats.", ""]
    dec_rows = [[name, how, num(medians(r)["total_s"], ".2f"), num(medians(r)["cpu_s"], ".2f"),
                 str(r["runs"][0]["frames"]), f"{r['runs'][0]['frames'] / medians(r)['total_s']:.0f}"]
                for (name, how), r in decode.items()]
    return lines + ["the decoder alone, every frame (no RGB, no model)"] + render(
        ["clip", "decoder", "s", "CPU s", "frames", "frames/s"], dec_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clips", type=int, default=4, help="clips through ClipDecoder for the worker rows")
    parser.add_argument("--cache", type=Path, default=HERE.parent / ".cache")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--clip", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.repeats < 1 or args.clips < 1:
        parser.error("--repeats and --clips must be at least 1")
    load = f"{os.getloadavg()[0]:.2f}"
    clips, decode = {}, {}
    for name, bframes, gop in CLIPS:
        clip = make_clip(args.cache, bframes, gop)
        clips[name] = {}
        for variant in ("trapcls", "baseline", "workers-1", "workers-2"):
            say(f"{name}: {variant}")
            clips[name][variant] = launch(variant, clip, args)
        for how in ("frame+slice", "slice", "frame", "1 thread", "slice, NONREF"):
            say(f"{name}: decode alone, {how}")
            decode[(name, how)] = launch(f"decode:{how}", clip, args)
    lines = report(clips, decode, args, load)
    print("\n".join([*lines, f"1-min load average at the end: {os.getloadavg()[0]:.2f}"]))


if __name__ == "__main__":
    main()
