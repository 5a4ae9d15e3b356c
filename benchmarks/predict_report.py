"""The tables benchmarks/predict_throughput.py prints: the header (machine, versions, images), the throughput
table per architecture and engine, and the peak-RSS table per number of files. Reading a report only: no model,
no torch."""

from __future__ import annotations


def num(value: float | str | None, spec: str, missing: str = "failed") -> str:
    """A number for a table cell; `missing` when the runs produced none; a string as it is."""
    return missing if value is None else value if isinstance(value, str) else format(value, spec)


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
    """One row per architecture and engine, each engine against trapcls on ONNX Runtime FP32; notes; problems."""
    rows, notes, problems = [], [], []
    for arch, r in report["results"].items():
        reference = next(iter(r["engines"].values())).get("images_per_s")
        for label, e in r["engines"].items():
            if e.get("note"):
                notes.append(f"[{len(notes) + 1}] {arch}, {label}: {e['note']}")
            mark = f" [{len(notes)}]" if e.get("note") else ""
            if "wall_s" not in e:  # not run: the note says why
                rows.append([arch, label + mark, *["-"] * 7])
                continue
            ours, bound = e["images_per_s"], e.get("bound_images_per_s")
            if bound is None:  # the tutorial loop: no work bound of its own
                e = {**e, "t_d_ms": "-", "t_m_ms": "-"}
            rows.append([arch, label + mark, num(e["t_d_ms"], ".1f"), num(e["t_m_ms"], ".1f"),
                         num(bound, ".1f", "-"), num(ours, ".1f"),
                         "-" if bound is None else num(ours and 100 * ours / bound, ".0f"),
                         num(ours and reference and ours / reference, ".2f"), f"{e['peak_rss_mib']:.0f}"])
            problems += [f"problem ({arch}, {label}): {p}" for p in e["problems"]]
    cuda = report["device"] == "cuda"
    legend = [
        "t_d: decode + resize + normalise of one frame on 1 thread (trapcls.core.frames.preprocess; the peer: its own",
        "pipeline with a near-zero-compute model). t_m: the model alone on 1 thread, batches of 16 (the peer: batch 1,",
        "as it runs). " + ("On CUDA t_m is torch FP16 channels_last. " if cuda else "")
        + f"bound/s = {'min(cores/t_d, 1/t_m)' if cuda else 'cores/(t_d+t_m)'}: every core doing only that work.",
        "img/s: files / child wall clock (start-up included), median of repeats. x ORT: img/s against the first row",
        "of the same arch (trapcls predict on ONNX Runtime FP32, today's default on a CPU). MiB: peak RSS, ru_maxrss",
        "from wait4 on the child, max over repeats (the tutorial loop: its largest single process).",
        "Random-init models: speed does not depend on the weights, but their gate results say nothing about a",
        "trained model's (see benchmarks/README.md)."]
    if report.get("peer_versions"):
        v = report["peer_versions"]
        legend.append(f"peer: SPARROW-Engine {v['sparrow-engine']} in its own venv (python {v['python']}, onnxruntime "
                      f"{v['onnxruntime']}), its own decoder and defaults, on the same model.onnx and frames.")
    cols = ["arch", "engine", "t_d ms", "t_m ms", "bound/s", "img/s", "% bound", "x ORT", "MiB"]
    return render(cols, rows) + [""] + legend + [""] + notes + problems
