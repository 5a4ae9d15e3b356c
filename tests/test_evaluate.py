"""trapcls evaluate: matching predictions to labels, every guard rail, comparisons, and the CLI end to end."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from helpers import DEMO, trapcls
from trapcls.core.system.exceptions import DataError
from trapcls.evaluate.run import EvaluateConfig, evaluate, match, read_labels, read_predictions

CLASSES = ["blank", "deer", "fox"]


def _field_csv(path: Path, rows: list[tuple[str, list[float] | None]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "captured", "label", "probability", "is_blank", *CLASSES, "status", "error"])
        for key, probs in rows:
            if probs is None:
                writer.writerow([key, "", "", "", "", "", "", "", "error", "truncated JPEG"])
            else:
                top = int(np.argmax(probs))
                writer.writerow([key, "", CLASSES[top], probs[top], str(probs[0] >= 0.5).lower(), *probs, "ok", ""])
    return path


def _labels_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["filepath", "label", "site"])
        writer.writerows(rows)
    return path


def test_rows_are_matched_by_path_tail_and_every_mismatch_is_named(tmp_path):
    labels = _labels_csv(tmp_path / "labels.csv", [
        ("cams/north/a.jpg", "deer", "north"), ("cams/north/b.jpg", "fox", "north"),
        ("cams/south/c.jpg", "blank", "south"), ("cams/south/d.jpg", "wolf", "south"),  # a class the model lacks
        ("cams/south/e.jpg", "deer", "south"),  # no prediction
        ("cams/south/f.jpg", "fox", "south"),  # its prediction row is an error
    ])
    predictions = _field_csv(tmp_path / "p.csv", [
        ("north/a.jpg", [0.1, 0.8, 0.1]), ("north/b.jpg", [0.2, 0.5, 0.3]), ("south/c.jpg", [0.9, 0.05, 0.1]),
        ("south/d.jpg", [0.3, 0.3, 0.4]), ("south/f.jpg", None), ("elsewhere/z.jpg", [0.5, 0.25, 0.25]),
    ])
    matched = match(read_predictions(predictions), read_labels(labels))
    assert matched.keys == ["north/a.jpg", "north/b.jpg", "south/c.jpg"]
    assert matched.labels.tolist() == [1, 2, 0] and matched.sites == ["north", "north", "south"]
    assert matched.counts == {"predictions_without_label": 1, "ambiguous": 0, "unknown_class": 1,
                              "labels_without_prediction": 1, "error_rows": 1, "rows_not_summing_to_1": 1,
                              "scored": 3, "error_rows_with_label": 1}
    notes = " ".join(matched.notes)
    for fragment in ("1 prediction rows have no label", "elsewhere/z.jpg", "south/d.jpg (wolf)",
                     "1 labelled images have no prediction row", "cams/south/e.jpg", "are errors",
                     "do not sum to 1", "south/c.jpg"):
        assert fragment in notes, fragment
    assert np.allclose(matched.probs.sum(axis=1), 1)  # the 1.05 row was renormalised, and said so


def test_same_file_name_in_two_folders_is_ambiguous_not_guessed(tmp_path):
    labels = _labels_csv(tmp_path / "labels.csv", [("north/IMG_0001.JPG", "deer", ""),
                                                   ("south/IMG_0001.JPG", "fox", ""), ("south/x.jpg", "fox", "")])
    predictions = _field_csv(tmp_path / "p.csv", [("IMG_0001.JPG", [0.1, 0.8, 0.1]), ("x.jpg", [0.1, 0.1, 0.8])])
    matched = match(read_predictions(predictions), read_labels(labels))
    assert matched.keys == ["x.jpg"] and matched.counts["ambiguous"] == 1 and matched.sites is None


def test_submission_format_matches_by_id_and_uniform_gives_ln_classes(tmp_path):
    labels = _labels_csv(tmp_path / "labels.csv", [(f"train/ZJ{i:06d}.jpg", CLASSES[i % 3], "") for i in range(6)])
    with open(tmp_path / "sub.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["id", *CLASSES])
        writer.writerows([f"ZJ{i:06d}", 1 / 3, 1 / 3, 1 / 3] for i in range(6))
    result = evaluate(EvaluateConfig(predictions=[tmp_path / "sub.csv"], labels=labels))
    assert result.metrics[0]["n"] == 6 and result.metrics[0]["log_loss"] == pytest.approx(math.log(3))
    assert result.notes == []


def test_bad_inputs_are_refused_with_the_reason(tmp_path):
    labels = _labels_csv(tmp_path / "labels.csv", [("a.jpg", "deer", ""), ("b.jpg", "fox", "")])
    with pytest.raises(DataError, match="does not exist"):
        read_predictions(tmp_path / "missing.csv")
    (tmp_path / "other.csv").write_text("filename,score\nx,1\n")
    with pytest.raises(DataError, match="not a trapcls predictions CSV"):
        read_predictions(tmp_path / "other.csv")
    twice = _field_csv(tmp_path / "twice.csv", [("a.jpg", [0.1, 0.8, 0.1]), ("a.jpg", [0.1, 0.8, 0.1])])
    with pytest.raises(DataError, match="more than once"):
        read_predictions(twice)
    nothing = _field_csv(tmp_path / "nothing.csv", [("zzz.jpg", [0.1, 0.8, 0.1])])
    with pytest.raises(DataError, match="No prediction row .* matches a label"):
        evaluate(EvaluateConfig(predictions=[nothing], labels=labels))


def test_two_models_side_by_side_on_the_rows_both_scored(tmp_path):
    rows = [(f"cam/{i}.jpg", CLASSES[i % 3], "") for i in range(9)]
    labels = _labels_csv(tmp_path / "labels.csv", rows)
    truth = [i % 3 for i in range(9)]
    good = _field_csv(tmp_path / "a.csv", [(f"cam/{i}.jpg", [0.8 if c == t else 0.1 for c in range(3)])
                                          for i, t in enumerate(truth)])
    worse = _field_csv(tmp_path / "b.csv", [(f"cam/{i}.jpg", [0.8 if c == (t if t != 2 else 1) else 0.1
                                                              for c in range(3)]) for i, t in enumerate(truth)][:8])
    result = evaluate(EvaluateConfig(predictions=[good, worse], labels=labels))
    assert [m["n"] for m in result.metrics] == [8, 8]  # compared on the 8 rows both files have
    assert any("scored in only one of the two files" in n for n in result.notes)
    assert result.comparison["per_class"][0]["class"] == "fox"  # every fox became a deer in b
    assert result.metrics[0]["accuracy"] == 1.0 and result.metrics[1]["accuracy"] == pytest.approx(6 / 8)


def test_cli_text_json_and_report_on_real_frames(tiny_run, tmp_path):
    """predict -> evaluate on the committed demo frames, labelled from their file names."""
    out = tmp_path / "p.csv"
    trapcls("predict", DEMO / "train", "--bundle", tiny_run / "bundle", "--out", out)
    proc = trapcls("evaluate", out, "--labels", DEMO / "train", "--report", tmp_path / "r.html", "--bundle",
                   tiny_run / "bundle")
    for fragment in ("log loss", "balanced accuracy", "macro-F1", "precision", "clipped to [1e-15",
                     f"report: {tmp_path / 'r.html'}"):
        assert fragment in proc.stdout, fragment
    html = (tmp_path / "r.html").read_text()
    assert 'id="confusion"' in html and 'class="gallery"' in html and "trapcls evaluate" in html
    data = json.loads(trapcls("evaluate", out, "--labels", DEMO / "train", "--json").stdout)
    assert data["metrics"][0]["n"] == sum(1 for p in (DEMO / "train").rglob("*") if p.is_file() and
                                          p.suffix.lower() in (".jpg", ".jpeg", ".png"))
