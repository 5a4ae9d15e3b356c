"""`trapcls ensemble fit` and `apply` on simulated members whose best weights are known, and on bad inputs.

The members are written as real out-of-fold CSVs (id,<classes>,fold,model, probabilities as trapcls writes them)
over 4000 frames, 5 folds and 4 classes, with DrivenData label tables, and run through the real CLI:
- a calibrated member (labels drawn from its own probabilities) and one of pure noise: the noise gets weight ~0,
  and the ensemble is reported as not better than the best member;
- two equally good, independent members: ~0.5 each, and the ensemble helps beyond noise;
- one member whose logits are 3 times too large: the fitted temperature is ~3.
Then apply against a hand computation, on the DrivenData layout (a submission_format.csv template), and every
bad input each command refuses: one `error:` line and exit 1 (2 for usage), no traceback, nothing written.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import trapcls
from trapcls.core.model.blank import given_rule
from trapcls.core.table.layout import Layout
from trapcls.core.table.row import Row, number

CLASSES = ("antelope_duiker", "bird", "blank", "civet_genet")
FRAMES, FOLDS = 4000, 5
NOT_BETTER = "not better than the best member beyond noise"


# --- writing members and labels as the tools that make them do ------------------------------------------


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _draw(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One label per row, drawn from the row's probabilities: a member whose probabilities are exactly right."""
    return np.minimum((rng.random(len(probs))[:, None] > probs.cumsum(axis=1)).sum(axis=1), probs.shape[1] - 1)


def _ids(n: int, prefix: str = "ZJ") -> list[str]:
    return [f"{prefix}{i:06d}" for i in range(n)]


def _write(path: Path, header: list[str], rows) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_oof(path: Path, ids: list[str], probs: np.ndarray, folds: np.ndarray, model: str, *,
              classes: tuple[str, ...] = CLASSES) -> Path:
    """An out-of-fold CSV as `trapcls oof` writes it: id,<classes>,fold,model."""
    return _write(path, ["id", *classes, "fold", "model"],
                  ([k, *map(number, p), int(f), model] for k, p, f in zip(ids, probs, folds)))


def write_submission(path: Path, ids: list[str], probs: np.ndarray, classes: tuple[str, ...] = CLASSES) -> Path:
    """A submission CSV as `trapcls predict --format submission` writes it: id,<classes>."""
    return _write(path, ["id", *classes], ([k, *map(number, p)] for k, p in zip(ids, probs)))


def write_field(path: Path, ids: list[str], probs: np.ndarray, model: str, classes: tuple[str, ...] = CLASSES) -> Path:
    """A field CSV as `trapcls predict` writes it (through its own Layout), the frames under cam1/."""
    layout = Layout("field", classes, blank_rule=given_rule(0.5), model=model)
    return _write(path, layout.header(), (layout.cells(Row(f"cam1/{k}.jpg", p)) for k, p in zip(ids, probs)))


def write_labels(folder: Path, ids: list[str], labels: np.ndarray, classes: tuple[str, ...] = CLASSES) -> Path:
    """DrivenData's layout: train_features.csv (id,filepath,site) and train_labels.csv (id + a 0/1 per class)."""
    folder.mkdir(parents=True)
    _write(folder / "train_features.csv", ["id", "filepath", "site"],
           ([k, f"train_features/{k}.jpg", f"S{i % 37:04d}"] for i, k in enumerate(ids)))
    _write(folder / "train_labels.csv", ["id", *classes],
           ([k, *(int(j == y) for j in range(len(classes)))] for k, y in zip(ids, labels)))
    return folder


def write_weights(path: Path, models: list[str], weights: list[float], temperature: float,
                  classes: tuple[str, ...] = CLASSES) -> Path:
    """The part of a weights file `apply` reads, as docs/evaluate.md describes it."""
    path.write_text(json.dumps({"format": "trapcls-ensemble", "version": 1, "classes": list(classes),
                                "temperature": temperature,
                                "members": [{"model": m, "weight": w} for m, w in zip(models, weights)]}))
    return path


def by_hand(members: list[np.ndarray], weights: list[float], temperature: float) -> np.ndarray:
    """softmax(log(sum_m w_m p_m) / T), written out: (sum_m w_m p_m)^(1/T), normalised."""
    mix = sum(w * p for w, p in zip(weights, members))
    powered = mix ** (1 / temperature)
    return powered / powered.sum(axis=1, keepdims=True)


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


# --- the simulated members --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> dict[str, Path]:
    """Simulated members over FRAMES frames in FOLDS folds (see the module docstring), with their labels."""
    root = tmp_path_factory.mktemp("ensemble-sim")
    rng = np.random.default_rng(25)
    ids, folds = _ids(FRAMES), rng.permutation(np.arange(FRAMES) % FOLDS) + 1
    logits = rng.normal(0, 2, (FRAMES, len(CLASSES)))
    informative = _softmax(logits)
    truth = _draw(rng, informative)
    noise = rng.dirichlet(np.ones(len(CLASSES)), FRAMES)
    animals = rng.integers(0, len(CLASSES), FRAMES)
    one_hot = np.eye(len(CLASSES))[animals]
    twins = [_softmax(1.5 * one_hot + rng.normal(0, 1, one_hot.shape)) for _ in range(2)]
    return {
        "informative": write_oof(root / "informative.csv", ids, informative, folds, "informative sha256:aa11"),
        "noise": write_oof(root / "noise.csv", ids, noise, folds, "noise sha256:bb22"),
        "overconfident": write_oof(root / "overconfident.csv", ids, _softmax(3 * logits), folds, "sharp sha256:cc33"),
        "labels": write_labels(root / "labels", ids, truth),
        "twin1": write_oof(root / "twin1.csv", ids, twins[0], folds, "twin-1 sha256:dd44"),
        "twin2": write_oof(root / "twin2.csv", ids, twins[1], folds, "twin-2 sha256:ee55"),
        "twin_labels": write_labels(root / "twin_labels", ids, animals),
    }


def _fit(*members: Path, labels: Path, out: Path) -> tuple[dict, str]:
    run = trapcls("ensemble", "fit", *members, "--labels", labels, "--out", out)
    assert not run.stderr.strip(), run.stderr
    return json.loads(out.read_text()), run.stdout


@pytest.mark.slow  # about 8 s: torch's first import and first L-BFGS, eleven fits, then evaluate
def test_a_member_of_pure_noise_gets_weight_near_0(sim, tmp_path):
    weights, table = _fit(sim["informative"], sim["noise"], labels=sim["labels"], out=tmp_path / "w.json")
    print(table)
    informative, noise = weights["members"]
    assert noise["weight"] < 0.05 and informative["weight"] > 0.95
    assert informative["model"] == "informative sha256:aa11" and informative["oof"] == "informative.csv"
    assert weights["frames"] == FRAMES and weights["folds"] == FOLDS and weights["classes"] == list(CLASSES)
    assert abs(weights["temperature"] - 1) < 0.1  # labels drawn from its own probabilities: already calibrated
    best = weights["ensemble"]["vs_best"]
    assert best["member"] == informative["model"] and best["verdict"].startswith(NOT_BETTER)
    assert f"verdict: {NOT_BETTER}" in table and "informative.csv (informative sha256:aa11)" in table
    # The members' log losses are evaluate's, to the last digit: the one rule (trapcls.core.metrics.log_loss).
    header, rows = read_csv(sim["informative"])
    submission = _write(tmp_path / "informative-submission.csv", header[:-2], (row[:-2] for row in rows))
    scored = json.loads(trapcls("evaluate", submission, "--labels", sim["labels"], "--json").stdout)
    assert scored["metrics"][0]["log_loss"] == informative["log_loss"]


@pytest.mark.slow  # about 2 s: eleven fits (all frames, each fold, the best member alone by fold)
def test_two_equally_good_independent_members_get_half_each_and_help(sim, tmp_path):
    weights, table = _fit(sim["twin1"], sim["twin2"], labels=sim["twin_labels"], out=tmp_path / "w.json")
    for member in weights["members"]:
        assert abs(member["weight"] - 0.5) < 0.1, weights["members"]
    ensemble, best = weights["ensemble"], weights["ensemble"]["vs_best"]
    assert best["high"] < 0 and best["verdict"].startswith("helps") and "verdict: helps" in table
    assert ensemble["vs_best_with_temperature"]["high"] < 0  # the averaging helps, not only the temperature
    assert ensemble["cross_fitted_log_loss"] < min(m["log_loss"] for m in weights["members"])
    assert ensemble["log_loss"] <= ensemble["cross_fitted_log_loss"]  # scored on the frames it was fitted on
    # apply with these weights to the members' own probabilities: the same numbers as the formula by hand
    members = []
    for i, name in enumerate(("twin1", "twin2")):
        header, rows = read_csv(sim[name])
        members.append(write_submission(tmp_path / f"test{i}.csv", [r[0] for r in rows[:50]],
                                        np.asarray([r[1:-2] for r in rows[:50]], dtype=float)))
    trapcls("ensemble", "apply", tmp_path / "w.json", *members, "--out", tmp_path / "sub.csv")
    _, written = read_csv(tmp_path / "sub.csv")
    expected = by_hand([np.asarray([r[1:] for r in read_csv(m)[1]], dtype=float) for m in members],
                       [m["weight"] for m in weights["members"]], weights["temperature"])
    np.testing.assert_allclose(np.asarray([r[1:] for r in written], dtype=float), expected, rtol=1e-7)


@pytest.mark.slow  # about 1.5 s: six fits
def test_an_overconfident_member_gets_its_temperature_back(sim, tmp_path):
    """Probabilities from logits 3 times too large: softmax(log p / T) undoes it at T = 3. One member: only T."""
    weights, _ = _fit(sim["overconfident"], labels=sim["labels"], out=tmp_path / "w.json")
    assert abs(weights["temperature"] - 3) < 0.3, weights["temperature"]
    assert [m["weight"] for m in weights["members"]] == [1.0]
    ensemble = weights["ensemble"]
    assert ensemble["log_loss"] < weights["members"][0]["log_loss"] - 0.1
    assert ensemble["vs_best"]["verdict"].startswith("helps: the member with the fitted temperature")
    assert "vs_best_with_temperature" not in ensemble  # that is what the ensemble itself is here


# --- apply ---------------------------------------------------------------------------------------------------


def test_apply_writes_the_weighted_tempered_average_matching_members_by_model(tmp_path):
    rng = np.random.default_rng(3)
    ids = ["ZJ000007", "ZJ000002", "ZJ000011"]  # sorted in the output, as predict sorts a submission
    p1, p2 = rng.dirichlet(np.ones(len(CLASSES)), (2, len(ids)))
    a = write_field(tmp_path / "a.csv", ids, p1, "model a")
    b = write_field(tmp_path / "b.csv", ids, p2, "model b")
    weights = write_weights(tmp_path / "w.json", ["model a", "model b"], [0.7, 0.3], 1.5)
    run = trapcls("ensemble", "apply", weights, b, a, "--out", tmp_path / "sub.csv")  # any order: by model
    assert "3 rows" in run.stdout and not run.stderr
    header, rows = read_csv(tmp_path / "sub.csv")
    assert header == ["id", *CLASSES] and [r[0] for r in rows] == sorted(ids)
    order = [ids.index(r[0]) for r in rows]
    for row, i in zip(rows, order):
        mix = [0.7 * float(number(x)) + 0.3 * float(number(y)) for x, y in zip(p1[i], p2[i])]
        powered = [m ** (1 / 1.5) for m in mix]
        assert [float(cell) for cell in row[1:]] == pytest.approx([x / sum(powered) for x in powered], rel=1e-7)
        assert row[1:] == [number(float(cell)) for cell in row[1:]]  # 8 significant digits, as every trapcls CSV


def test_apply_on_the_drivendata_layout_follows_the_template(tmp_path):
    """submission_format.csv: exactly its ids in its order and its column order; members' other frames left out.
    Submission CSVs have no model column: matched by position, with a note."""
    rng = np.random.default_rng(4)
    ids = _ids(12)
    p1, p2 = rng.dirichlet(np.ones(len(CLASSES)), (2, len(ids)))
    a = write_submission(tmp_path / "a.csv", ids, p1)
    b = write_submission(tmp_path / "b.csv", ids, p2)
    weights = write_weights(tmp_path / "w.json", ["model a", "model b"], [0.25, 0.75], 0.8)
    columns = ("civet_genet", "antelope_duiker", "blank", "bird")
    wanted = [ids[i] for i in (9, 1, 4, 0, 7)]
    template = write_submission(tmp_path / "submission_format.csv", wanted, np.zeros((5, 4)), columns)
    run = trapcls("ensemble", "apply", weights, a, b, "--out", tmp_path / "sub.csv", "--template", template)
    assert "by its position" in run.stderr and "7 frames are not in the template" in run.stderr
    header, rows = read_csv(tmp_path / "sub.csv")
    assert header == ["id", *columns] and [r[0] for r in rows] == wanted
    expected = by_hand([p1, p2], [0.25, 0.75], 0.8)
    for row in rows:
        i = ids.index(row[0])
        assert [float(c) for c in row[1:]] == pytest.approx([expected[i, CLASSES.index(c)] for c in columns],
                                                            rel=1e-6)
    assert (tmp_path / "sub.csv").read_bytes().count(b"\r") == 0


# --- bad input ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ground(tmp_path_factory) -> dict[str, Path]:
    """Small members (40 frames) and the bad inputs made from them, once."""
    root = tmp_path_factory.mktemp("ensemble-bad")
    rng = np.random.default_rng(7)
    n = 40
    ids, folds, labels = _ids(n), np.arange(n) % FOLDS + 1, np.arange(n) % len(CLASSES)
    p, q = rng.dirichlet(np.ones(len(CLASSES)), (2, n))
    other = (*CLASSES[:3], "hog")
    paths = {"missing": root / "missing.csv", "a": write_oof(root / "a.csv", ids, p, folds, "a"),
             "b": write_oof(root / "b.csv", ids, q, folds, "b"),
             "a_again": write_oof(root / "a_again.csv", ids, q, folds, "a"),
             "other_classes": write_oof(root / "other_classes.csv", ids, q, folds, "c", classes=other),
             "fewer_frames": write_oof(root / "fewer_frames.csv", ids[:-3], q[:-3], folds[:-3], "c"),
             "other_folds": write_oof(root / "other_folds.csv", ids, q, folds % FOLDS + 1, "c"),
             "one_fold": write_oof(root / "one_fold.csv", ids, q, np.ones(n), "c"),
             "submission": write_submission(root / "submission.csv", ids, p),
             "labels": write_labels(root / "labels", ids, labels),
             "labels_partial": write_labels(root / "labels_partial", ids[3:], labels[3:]),
             "labels_other": write_labels(root / "labels_other", ids, labels, other)}
    header, rows = read_csv(paths["b"])
    rows[4][2] = "nan"
    paths["nan"] = _write(root / "nan.csv", header, rows)
    header, rows = read_csv(paths["b"])
    rows[2][-2] = "x"
    paths["bad_fold"] = _write(root / "bad_fold.csv", header, rows)
    (root / "empty.csv").write_bytes(b"")
    paths["empty"] = root / "empty.csv"
    test_ids = _ids(10, "T")
    paths.update(weights=write_weights(root / "weights.json", ["a", "b"], [0.6, 0.4], 1.2),
                 weights_other=write_weights(root / "weights_other.json", ["a", "b"], [0.6, 0.4], 1.2, other),
                 test_a=write_field(root / "test_a.csv", test_ids, p[:10], "a"),
                 test_b=write_field(root / "test_b.csv", test_ids, q[:10], "b"),
                 test_a_copy=write_field(root / "test_a_copy.csv", test_ids, q[:10], "a"),
                 test_c=write_field(root / "test_c.csv", test_ids, q[:10], "c"),
                 test_fewer=write_field(root / "test_fewer.csv", test_ids[:7], q[:7], "b"),
                 template_more=write_submission(root / "template_more.csv", [*test_ids, "T999999"],
                                                np.zeros((11, 4))))
    (root / "not_weights.json").write_text('{"hello": 1}')
    (root / "garbage.json").write_text("weights: yes\n")
    (root / "folder").mkdir()
    paths.update(not_weights=root / "not_weights.json", garbage=root / "garbage.json", folder=root / "folder")
    return paths


FIT = "ensemble fit {a} {b} --labels {labels} --out {out}"
APPLY = "ensemble apply {weights} {test_a} {test_b} --out {out}"
# (id, arguments with {placeholders} from `ground` ({out}: this case's own), exit status, what stderr holds)
BAD = [
    ("fit-other-classes", FIT.replace("{b}", "{other_classes}"), 1, "other_classes.csv predicts other classes"),
    ("fit-other-frames", FIT.replace("{b}", "{fewer_frames}"), 1, "3 only in a.csv (e.g. ZJ000037"),
    ("fit-other-folds", FIT.replace("{b}", "{other_folds}"), 1, "put 40 frames in different folds"),
    ("fit-frame-without-label", FIT.replace("{labels}", "{labels_partial}"), 1,
     "3 frames of {a} have no label in --labels {labels_partial}, e.g. ZJ000000"),
    ("fit-label-of-another-class", FIT.replace("{labels}", "{labels_other}"), 1,
     "labels frames as hog, which the members do not predict"),
    ("fit-same-member-twice", FIT.replace("{b}", "{a_again}"), 1, "are the same member (model 'a')"),
    ("fit-not-an-oof-csv", FIT.replace("{b}", "{submission}"), 1, "not an out-of-fold CSV"),
    ("fit-missing-oof", FIT.replace("{b}", "{missing}"), 1, "{missing} does not exist"),
    ("fit-empty-oof", FIT.replace("{b}", "{empty}"), 1, "{empty} is empty"),
    ("fit-one-fold", "ensemble fit {one_fold} --labels {labels} --out {out}", 1, "at least 2 folds"),
    ("fit-not-a-distribution", FIT.replace("{b}", "{nan}"), 1, "row 6 (ZJ000004): the probabilities are not a"),
    ("fit-bad-fold", FIT.replace("{b}", "{bad_fold}"), 1, "row 4: the fold 'x' is not a fold number"),
    ("fit-out-is-an-input", FIT.replace("{out}", "{b}"), 1, "writing it would destroy that input"),
    ("fit-no-labels", "ensemble fit {a} --out {out}", 2, "Missing option '--labels'"),
    ("fit-no-members", "ensemble fit --labels {labels} --out {out}", 2, "Missing argument"),
    ("apply-weights-for-other-classes", APPLY.replace("{weights}", "{weights_other}"), 1,
     "test_a.csv predicts other classes than the weights in {weights_other}"),
    ("apply-unknown-model", APPLY.replace("{test_b}", "{test_c}"), 1, "model 'c', which is not a member fitted"),
    ("apply-same-member-twice", APPLY.replace("{test_b}", "{test_a_copy}"), 1, "both hold the predictions of"),
    ("apply-other-frames", APPLY.replace("{test_b}", "{test_fewer}"), 1, "3 only in test_a.csv (e.g. T000007"),
    ("apply-frames-missing-from-template", APPLY + " --template {template_more}", 1,
     "has no row for 1 ids of --template {template_more}, e.g. T999999"),
    ("apply-template-not-a-submission", APPLY + " --template {test_a}", 1, "is not a submission CSV"),
    ("apply-too-few-members", "ensemble apply {weights} {test_a} --out {out}", 1, "was fitted on 2 members"),
    ("apply-not-a-weights-file", APPLY.replace("{weights}", "{not_weights}"), 1,
     "is not a trapcls ensemble weights file (no \"format\""),
    ("apply-garbage-weights", APPLY.replace("{weights}", "{garbage}"), 1, "is not a trapcls ensemble weights file"),
    ("apply-csv-as-weights", APPLY.replace("{weights}", "{a}"), 1, "is not a trapcls ensemble weights file"),
    ("apply-missing-weights", APPLY.replace("{weights}", "{missing}"), 1, "Weights file {missing} does not exist"),
    ("apply-out-is-an-input", APPLY.replace("{out}", "{test_b}"), 1, "writing it would destroy that input"),
    ("apply-out-is-a-folder", APPLY.replace("{out}", "{folder}"), 1, "Cannot write {folder}: Is a directory"),
    ("apply-no-out", "ensemble apply {weights} {test_a} {test_b}", 2, "Missing option '--out'"),
]


@pytest.mark.parametrize("args, code, message", [pytest.param(*case[1:], id=case[0]) for case in BAD])
def test_bad_input_is_refused_in_one_line(ground, tmp_path, args, code, message):
    named = {**{k: str(v) for k, v in ground.items()}, "out": str(tmp_path / "out")}
    before = {path: path.read_bytes() for path in ground.values() if path.is_file()}
    run = trapcls(*[part.format(**named) for part in args.split()], rc=code)
    assert "Traceback" not in run.stdout + run.stderr
    text = " ".join(run.stderr.replace("│", " ").split())  # typer's usage box wraps long lines
    assert message.format(**named) in text, run.stderr
    if code == 1:
        assert [line for line in run.stderr.splitlines() if line.strip()] == [text] and text.startswith("error: ")
    assert not (tmp_path / "out").exists()
    assert {path: path.read_bytes() for path in ground.values() if path.is_file()} == before


def test_fit_without_torch_says_which_extra_to_install(ground, tmp_path, monkeypatch):
    """torch (the `train` extra) fits the weights; where it cannot be imported, one line says what to install."""
    monkeypatch.setitem(sys.modules, "torch", None)  # what `import torch` meets where it is not installed
    run = trapcls("ensemble", "fit", ground["a"], ground["b"], "--labels", ground["labels"], "--out",
                  tmp_path / "w.json", rc=1)
    assert run.stderr.startswith("error: torch is needed") and "pip install 'trapcls[train]'" in run.stderr
    assert len(run.stderr.splitlines()) == 1 and not (tmp_path / "w.json").exists()
