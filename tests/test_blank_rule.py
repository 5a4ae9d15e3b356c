"""One blank rule for every command: events, exports and evaluate decide "blank" as predict did.

A bundle whose certified blank policy sits below the default 0.5 writes a predictions CSV in which
some frames are blank (P(blank) >= the policy) that 0.5 would call animals. Every command that
reads that CSV must decide the same for them: it finds the model named in the model column
($TRAPCLS_BUNDLE here, or --bundle), uses its policy, and refuses a CSV whose is_blank column
another rule wrote. The CLI as a user runs it (in this process, through its own entry point); the
bundle's policy is written into bundle.json as `trapcls evaluate --write-bundle` would.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from helpers import DEMO, csv_rows, trapcls


@pytest.fixture(scope="module")
def certified(tiny_run, tmp_path_factory):
    """(bundle, predictions CSV, threshold): the tiny bundle with a policy splitting its demo frames below 0.5."""
    root = tmp_path_factory.mktemp("certified")
    bundle = shutil.copytree(tiny_run / "bundle", root / "bundle")
    first = root / "first.csv"
    trapcls("predict", DEMO / "train", "--bundle", bundle, "--out", first)
    p_blank = sorted(float(r["blank"]) for r in csv_rows(first).values())
    threshold = int(p_blank[len(p_blank) // 2] * 1000) / 1000  # on certify's grid of 0.001
    assert any(threshold <= p < 0.5 for p in p_blank), f"no frame between the policy and 0.5: {p_blank}"
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["blank_policy"] = {"threshold": threshold, "target_miss": 0.05, "confidence": 0.95, "animal_frames": 99}
    (bundle / "bundle.json").write_text(json.dumps(manifest, indent=2))
    predictions = root / "predictions.csv"
    trapcls("predict", DEMO / "train", "--bundle", bundle, "--out", predictions)
    rows = csv_rows(predictions)
    assert all((r["is_blank"] == "true") == (float(r["blank"]) >= threshold) for r in rows.values())
    return bundle, predictions, threshold


def _with(bundle) -> dict[str, str]:
    return {**os.environ, "TRAPCLS_BUNDLE": str(bundle)}


def _between(rows: dict[str, dict[str, str]], threshold: float) -> set[str]:
    return {path for path, r in rows.items() if threshold <= float(r["blank"]) < 0.5}


def test_events_and_timelapse_decide_blank_by_the_policy_of_the_model_that_wrote_the_csv(certified, tmp_path):
    bundle, predictions, threshold = certified
    frames = csv_rows(predictions)
    trapcls("events", predictions, "--out", tmp_path / "events.csv", "--deployment-depth", "0", "--gap", "0",
            env=_with(bundle))
    events = csv_rows(tmp_path / "events.csv", key="first_file")  # --gap 0: no two demo frames share a time
    assert set(events) == set(frames)
    assert {p: e["is_blank"] for p, e in events.items()} == {p: f["is_blank"] for p, f in frames.items()}
    assert _between(frames, threshold) <= {p for p, e in events.items() if e["is_blank"] == "true"}

    trapcls("convert", predictions, "--to", "megadetector", "--out", tmp_path / "md.json", env=_with(bundle))
    doc = json.loads((tmp_path / "md.json").read_text())
    assert doc["info"]["detector_metadata"]["typical_detection_threshold"] == round(1 - threshold, 6)
    blank_in_timelapse = {image["file"] for image in doc["images"] if image["detections"] == []}
    assert blank_in_timelapse == {p for p, f in frames.items() if f["is_blank"] == "true"}


def test_evaluate_scores_blank_against_animal_with_the_same_rule(certified):
    bundle, predictions, threshold = certified
    done = trapcls("evaluate", predictions, "--labels", DEMO / "train", "--json", env=_with(bundle))
    assert json.loads(done.stdout)["metrics"][0]["blank"]["threshold"] == threshold


def test_a_csv_written_with_another_rule_is_refused_naming_the_thresholds_that_fit(certified, tmp_path):
    """Without the model that wrote it the default 0.5 applies, and the CSV's is_blank column contradicts it:
    the command stops in one line rather than contradict the frames' own is_blank cells."""
    _, predictions, threshold = certified
    environment = {k: v for k, v in os.environ.items() if k != "TRAPCLS_BUNDLE"}  # the shipped model is another
    for command in (["events", predictions, "--out", tmp_path / "e.csv"],
                    ["convert", predictions, "--to", "megadetector", "--out", tmp_path / "md.json"]):
        done = trapcls(*command, rc=1, env=environment)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
        assert "is_blank column was not written with P(blank) >= 0.5" in errors[0] and "at most" in errors[0]
        assert not (tmp_path / "e.csv").exists() and not (tmp_path / "md.json").exists()
    # A threshold given is the user's choice: it applies, and the command says so.
    done = trapcls("events", predictions, "--out", tmp_path / "e.csv", "--blank-threshold", "0.5",
                   "--deployment-depth", "0", env=environment)
    assert "is_blank: P(blank) >= 0.5 (--blank-threshold 0.5)" in done.stderr
    events = csv_rows(tmp_path / "e.csv", key="first_file")
    assert all(events[p]["is_blank"] == "false" for p in _between(csv_rows(predictions), threshold))
