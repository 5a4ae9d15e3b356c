"""Untrusted inputs around the results commands (issue 26, items 8 and 12): no output of events, convert, adapt or
evaluate may be one of the files it reads, however it is spelt; evaluate scores names the formula guard quoted,
refuses cells that are no probabilities and needs memory in proportion to its input, not to the classes squared;
the MegaDetector JSON names no file outside the image folder, and JSON and Camtrap DP hold Unicode text only.
Real files, real symlinks and hard links, the real CLI (a real process where memory is the point)."""

from __future__ import annotations

import csv
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO, SAMPLES, trapcls
from trapcls.core.model.bundle import default_bundle, load_bundle
from trapcls.core.table.layout import Layout
from trapcls.core.table.row import Row

SHIPPED = load_bundle(default_bundle())
CLASSES = SHIPPED.classes
LATIN1 = "'cam\\xE9/caf\\xE9.jpg"  # the cell of 'camé/café.jpg' from a Latin-1 card (docs/predict.md states the form)


def _probs(i: int) -> np.ndarray:
    """A distinct, clearly non-blank distribution per row: class i (mod the classes, blank skipped) on top."""
    top = [c for c in range(len(CLASSES)) if CLASSES[c] != "blank"][i % (len(CLASSES) - 1)]
    p = np.full(len(CLASSES), 0.02)
    p[top] = 1.0 - 0.02 * (len(CLASSES) - 1)
    return p


def _field_csv(path: Path, cells: list[str], *, timed: bool = True) -> Path:
    """A field CSV of the shipped model as `predict` writes it; `cells` are the first cells, as written."""
    layout = SHIPPED.layout("field")
    rows = []
    for i, cell in enumerate(cells):
        row = layout.cells(Row(f"x{i}.jpg", _probs(i), captured=f"2024-05-01T06:{i:02d}:00" if timed else ""))
        rows.append([cell, *row[1:]])
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows([layout.header(), *rows])
    return path


def _labels_csv(path: Path, names: list[str]) -> Path:
    """filepath,label for the rows of `_field_csv` (each labelled its top class)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows(
            [["filepath", "label"], *([name, CLASSES[int(np.argmax(_probs(i)))]] for i, name in enumerate(names))])
    return path


def _spelling(how: str, target: Path, folder: Path) -> Path:
    """Another name for `target`: itself, a path through '..', a symlink, or a hard link."""
    folder.mkdir(parents=True, exist_ok=True)
    if how == "same":
        return target
    if how == "dotted":
        (folder / "sub").mkdir(exist_ok=True)
        return Path(os.path.relpath(target, folder / "sub"))  # relative to the working folder below
    link = folder / f"{how}-{target.stem}.out"
    (os.symlink if how == "symlink" else os.link)(target, link)
    return link


def _refused(proc, *words: str) -> None:
    """Exit 1 with one `error:` line that says `words`, and no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and lines and lines[-1].startswith("error:") and "Traceback" not in proc.stderr, \
        f"rc={proc.returncode}, stderr:\n{proc.stderr[-2000:]}"
    assert all(w in lines[-1] for w in words), lines[-1]


SPELLINGS = ["same", "dotted", "symlink", "hardlink"]


# --- item 8: an output is never one of the inputs ---------------------------------------------------------------


@pytest.mark.parametrize("how", SPELLINGS)
def test_events_refuses_an_out_that_is_its_predictions(tmp_path, how):
    pred = _field_csv(tmp_path / "pred.csv", ["camA/a.jpg", "camA/b.jpg"])
    before = pred.read_bytes()
    out = _spelling(how, pred, tmp_path / "links")
    cwd = tmp_path / "links" / "sub" if how == "dotted" else None
    _refused(trapcls("events", pred, "--out", out, rc=None, cwd=cwd), "--out", "is the predictions CSV")
    assert pred.read_bytes() == before


@pytest.mark.parametrize("how", ["hardlink", "symlink"])
def test_convert_refuses_an_out_that_is_its_predictions_even_with_overwrite(tmp_path, how):
    pred = _field_csv(tmp_path / "pred.csv", ["camA/a.jpg", "camA/b.jpg"])
    before = pred.read_bytes()
    out = _spelling(how, pred, tmp_path / "links")
    _refused(trapcls("convert", pred, "--to", "megadetector", "--out", out, "--overwrite", rc=None),
             "is the predictions CSV")
    # A Camtrap DP package is a folder: none of the files it writes may be the predictions either.
    package = tmp_path / "package"
    package.mkdir()
    os.link(pred, package / "media.csv")
    _refused(trapcls("convert", pred, "--to", "camtrap-dp", "--out", package, "--overwrite", "--timezone",
                     "+02:00", rc=None), "media.csv", "is the predictions CSV")
    assert pred.read_bytes() == before


def test_adapt_refuses_an_out_or_report_that_is_an_input_or_the_other_output(tmp_path):
    bundle = Path(shutil.copytree(default_bundle(), tmp_path / "bundle"))
    pred = _field_csv(tmp_path / "pred.csv", ["camA/a.jpg", "camA/b.jpg", "camA/c.jpg"])
    kept = {path: path.read_bytes() for path in (pred, *bundle.iterdir())}
    adapt = ("adapt", pred, "--bundle", bundle, "--min-frames", "1")
    _refused(trapcls(*adapt, "--out", _spelling("symlink", pred, tmp_path / "links"), rc=None),
             "--out", "is the predictions CSV")
    _refused(trapcls(*adapt, "--out", tmp_path / "adapted.csv", "--report", _spelling("hardlink", pred, tmp_path),
                     rc=None), "--report", "is the predictions CSV")
    _refused(trapcls(*adapt, "--out", tmp_path / "adapted.csv", "--report", bundle / "bundle.json", rc=None),
             "--report", "bundle.json of the --bundle")
    _refused(trapcls(*adapt, "--out", tmp_path / "adapted.csv", "--report", tmp_path / "adapted.csv", rc=None),
             "--report", "is --out as well")
    assert {path: path.read_bytes() for path in kept} == kept
    assert not (tmp_path / "adapted.csv").exists()
    trapcls(*adapt, "--out", tmp_path / "adapted.csv")  # and a proper pair of outputs is written
    assert (tmp_path / "adapted.priors.json").is_file()


@pytest.mark.parametrize("how", SPELLINGS)
def test_evaluate_refuses_a_report_that_is_its_predictions_or_labels(tmp_path, how):
    names = ["a.jpg", "b.jpg"]
    pred = _field_csv(tmp_path / "pred.csv", names)
    labels = _labels_csv(tmp_path / "labels.csv", names)
    kept = {pred: pred.read_bytes(), labels: labels.read_bytes()}
    cwd = tmp_path / "links" / "sub" if how == "dotted" else None
    for victim, what in ((pred, "is the predictions CSV"), (labels, "is the --labels file")):
        report = _spelling(how, victim, tmp_path / "links")
        _refused(trapcls("evaluate", pred, "--labels", labels, "--report", report, rc=None, cwd=cwd), "--report",
                 what)
    assert {path: path.read_bytes() for path in kept} == kept


@pytest.mark.slow
def test_evaluate_may_replace_its_own_earlier_report_in_the_labels_folder(tmp_path):
    """The rule is about inputs only: a report left in a class-folder tree by an earlier run is no input."""
    labels = tmp_path / "labels"
    names = [f"{CLASSES[int(np.argmax(_probs(i)))]}/{name}" for i, name in enumerate(["a.jpg", "b.jpg"])]
    for name in names:
        (labels / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLES / "impala-1.jpg", labels / name)
    pred = _field_csv(tmp_path / "pred.csv", names)
    for _ in range(2):
        trapcls("evaluate", pred, "--labels", labels, "--report", labels / "report.html")


# --- item 12: evaluate ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["field", "submission"])
def test_evaluate_scores_frames_whose_names_the_formula_guard_quoted(tmp_path, fmt):
    names = ["=a.jpg", "+b.jpg", "-c.jpg", "@d.jpg", "'e.jpg", "f.jpg"]
    layout = Layout(fmt, CLASSES, SHIPPED.blank_rule(), model=SHIPPED.model_id)
    rows = [layout.cells(Row(name, _probs(i))) for i, name in enumerate(names)]
    assert sum(row[0].startswith("'") for row in rows) == 5  # the guard did quote them
    pred = tmp_path / "pred.csv"
    with open(pred, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows([layout.header(), *rows])
    labels = _labels_csv(tmp_path / "labels.csv", names)  # the raw names, as the files are called
    result = json.loads(trapcls("evaluate", pred, "--labels", labels, "--json").stdout)
    assert result["counts"][0]["scored"] == 6 and result["metrics"][0]["accuracy"] == 1.0


def test_evaluate_report_and_json_show_a_name_that_is_not_utf8(tmp_path):
    """A frame from a Latin-1 card is scored and shown as \\xE9 text: the HTML page and the JSON are Unicode."""
    first, second = tmp_path / "labels" / CLASSES[0], tmp_path / "labels" / CLASSES[1]
    for folder in (first, second):
        folder.mkdir(parents=True)
    shutil.copyfile(SAMPLES / "impala-1.jpg", os.fsencode(first) + b"/caf\xe9.jpg")
    shutil.copyfile(SAMPLES / "impala-1.jpg", second / "plain.jpg")
    pred = _field_csv(tmp_path / "pred.csv", [f"'{CLASSES[0]}/caf\\xE9.jpg", f"{CLASSES[1]}/plain.jpg"])
    report = tmp_path / "report.html"
    shown = trapcls("evaluate", pred, "--labels", tmp_path / "labels", "--report", report, "--json").stdout
    assert "\\ud" not in shown and json.loads(shown)["counts"][0]["scored"] == 2
    assert "caf\\xe9.jpg" in report.read_bytes().decode("utf-8")  # strict UTF-8


@pytest.mark.parametrize("cell", ["nan", "inf", "-inf", "-0.2"])
def test_evaluate_refuses_a_cell_that_is_no_probability(tmp_path, cell):
    pred = tmp_path / "pred.csv"
    pred.write_text(f"id,fox,deer\nx,0.5,0.5\ny,0.4,{cell}\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("filepath,label\nx.jpg,fox\ny.jpg,deer\n")
    proc = trapcls("evaluate", pred, "--labels", labels, "--json", rc=None)
    _refused(proc, str(pred), "row 3", "column deer", "not a probability")
    assert "NaN" not in proc.stdout


def test_evaluate_refuses_a_field_row_that_is_no_distribution_of_probabilities(tmp_path):
    pred = _field_csv(tmp_path / "pred.csv", ["a.jpg", "b.jpg"])
    text = pred.read_text().splitlines()
    cells = text[2].split(",")
    cells[5] = "nan"  # the first class column
    pred.write_text("\n".join([*text[:2], ",".join(cells)]) + "\n")
    labels = _labels_csv(tmp_path / "labels.csv", ["a.jpg", "b.jpg"])
    _refused(trapcls("evaluate", pred, "--labels", labels, rc=None), "row 3 (b.jpg)", f"column {CLASSES[0]}")


def _wide_submission(folder: Path, classes: int, rows: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    names = [f"c{i}" for i in range(classes)]
    pred, labels = folder / "pred.csv", folder / "labels.csv"
    with open(pred, "w") as fh:
        fh.write("id," + ",".join(names) + "\n")
        for r in range(rows):
            p = rng.random(classes)
            fh.write(f"img{r}," + ",".join(f"{x:.8g}" for x in p / p.sum()) + "\n")
    labels.write_text("filepath,label\n" + "".join(f"img{r}.jpg,{names[(r * 7919) % classes]}\n"
                                                    for r in range(rows)))
    return pred, labels


def _limited(limit_mib: int, *args) -> subprocess.CompletedProcess:
    """`trapcls ARGS` in a real process that may not map more than `limit_mib` MiB."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_mib << 20, limit_mib << 20))

    return subprocess.run([sys.executable, "-m", "trapcls", *map(str, args)], capture_output=True, text=True,
                          preexec_fn=cap, cwd=REPO, timeout=300)


@pytest.mark.slow
def test_evaluate_memory_grows_with_the_input_not_the_classes_squared(tmp_path):
    """20,000 class columns and 5 rows: a 1.5 MB CSV. A confusion matrix over every class is 3.2 GB; evaluate runs
    in well under 1 GiB of address space (about 300 MiB measured)."""
    pred, labels = _wide_submission(tmp_path, 20_000, 5)
    proc = _limited(1024, "evaluate", pred, "--labels", labels, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads(proc.stdout)["metrics"][0]
    assert len(metrics["per_class"]) == 20_000 and metrics["n"] == 5
    # The confusion matrix covers the classes that occur (as a label or a top-1 prediction), named in order.
    occurring = metrics["confusion_classes"]
    assert 5 <= len(occurring) <= 10 and len(metrics["confusion"]) == len(occurring)
    assert sum(map(sum, metrics["confusion"])) == 5


@pytest.mark.slow
def test_evaluate_report_with_many_classes_stays_small(tmp_path):
    """The report too: 20,000 columns within 1 GiB; and with more classes occurring than a picture can show, the
    confusion matrix is left out with a note instead of drawn on a canvas of millions of pixels."""
    pred, labels = _wide_submission(tmp_path, 20_000, 5)
    proc = _limited(1024, "evaluate", pred, "--labels", labels, "--report", tmp_path / "wide.html")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'id="confusion"' in (tmp_path / "wide.html").read_text(encoding="utf-8")
    pred, labels = _wide_submission(tmp_path, 150, 150)
    proc = _limited(1024, "evaluate", pred, "--labels", labels, "--report", tmp_path / "many.html")
    assert proc.returncode == 0, proc.stderr[-2000:]
    page = (tmp_path / "many.html").read_text(encoding="utf-8")
    assert 'id="confusion"' not in page and "too many to draw a confusion matrix" in page
    assert 'id="per-class-bars"' in page


# --- item 12: the MegaDetector JSON names files inside the image folder, in Unicode ------------------------------


def test_megadetector_json_leaves_out_paths_outside_the_image_folder(tmp_path):
    outside = ["../up.jpg", "/etc/abs.jpg", "cam/../../x.jpg", "C:/win.jpg", "..\\win.jpg", "cam\\..\\..\\y.jpg"]
    pred = _field_csv(tmp_path / "pred.csv", ["cam/ok.jpg", LATIN1, *outside])
    out = tmp_path / "results.json"
    proc = trapcls("convert", pred, "--to", "megadetector", "--out", out)
    text = out.read_bytes().decode("utf-8")  # strict: no lone surrogate, escaped or not
    assert "\\ud" not in text
    files = [image["file"] for image in json.loads(text)["images"]]
    assert files == ["cam/ok.jpg", "cam\\xe9/caf\\xe9.jpg"]
    assert f"{len(outside)} frames are left out: their paths leave the image folder" in proc.stderr
    assert proc.stdout.startswith("2 frames ->")


def test_camtrap_dp_and_adapt_write_a_name_that_is_not_utf8_as_text(tmp_path):
    pred = _field_csv(tmp_path / "pred.csv", ["cam/ok.jpg", LATIN1])
    trapcls("convert", pred, "--to", "camtrap-dp", "--out", tmp_path / "package", "--timezone", "+02:00")
    media = list(csv.DictReader(open(tmp_path / "package" / "media.csv", encoding="utf-8")))
    assert sorted(m["filePath"] for m in media) == ["cam/ok.jpg", "cam\\xe9/caf\\xe9.jpg"]
    assert len({m["mediaID"] for m in media}) == 2
    trapcls("adapt", pred, "--out", tmp_path / "adapted.csv", "--min-frames", "1")
    report = (tmp_path / "adapted.priors.json").read_bytes().decode("utf-8")
    assert "\\ud" not in report
    assert {d["deployment"] for d in json.loads(report)["deployments"]} == {"cam", "cam\\xe9"}
