"""The HTML evaluation report: galleries, pictures, escaping, self-containment, and a headless-browser render."""

from __future__ import annotations

import base64
import html
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import DEMO, make_bad_inputs, noise_image
from trapcls.evaluate import pictures
from trapcls.evaluate.report import NOT_FOUND, galleries, write_report

pytest.importorskip("matplotlib")

NASTY = '<b>&"x"'
NASTY_ESCAPED = "&lt;b&gt;&amp;&quot;x&quot;"
CLASSES = ["blank", "elephant", NASTY, "zebra"]
FRAMES = sorted((DEMO / "frames").glob("*.[jJ][pP][gG]"))

# Six rows over four classes, chosen so every gallery has one right order:
#   top-1 probabilities 0.9 0.6 0.8 0.3 0.5 0.9; rows 1 and 2 are wrong.
PROBS = np.array([
    [0.90, 0.05, 0.03, 0.02],  # 0 blank, right
    [0.60, 0.30, 0.05, 0.05],  # 1 elephant, predicted blank
    [0.10, 0.80, 0.05, 0.05],  # 2 NASTY, predicted elephant
    [0.25, 0.25, 0.20, 0.30],  # 3 zebra, right but unsure
    [0.10, 0.50, 0.20, 0.20],  # 4 elephant, right
    [0.05, 0.90, 0.03, 0.02],  # 5 elephant, right and sure
])
LABELS = np.array([0, 1, 2, 3, 1, 1])


def fake_metrics(n_classes: int = len(CLASSES)) -> dict:
    """A dict shaped like trapcls.core.metrics.evaluate_probs output, with some None values it must tolerate."""
    rng = np.random.default_rng(0)
    confusion = (np.eye(n_classes, dtype=int) * 20 + rng.integers(0, 3, (n_classes, n_classes))).tolist()
    return {
        "n": 1234,
        "log_loss": 0.4321,
        "log_loss_rule": "probabilities clipped to [1e-15, 1 - 1e-15] and rows renormalised",
        "accuracy": 0.87,
        "balanced_accuracy": 0.81,
        "macro_f1": 0.79,
        "top_k": {"3": 0.97, "5": 0.99},
        "ece": 0.031,
        "ece_bins": 15,
        "reliability": {
            "lower": [i / 5 for i in range(5)],
            "upper": [(i + 1) / 5 for i in range(5)],
            "confidence": [None, 0.35, 0.55, 0.72, 0.93],
            "accuracy": [None, 0.30, 0.50, 0.70, 0.95],
            "count": [0, 10, 40, 200, 984],
        },
        "per_class": [
            {"class": name, "precision": None if i == 2 else 0.8, "recall": 0.7, "f1": 0.75, "support": 10 * (i + 1)}
            for i, name in enumerate(CLASSES[:n_classes])
        ],
        "confusion": confusion,
        "blank": {"threshold": 0.5, "blank_precision": 0.9, "blank_recall": None, "animal_precision": 0.95,
                  "animal_recall": 0.97, "tp": 90, "fp": 10, "fn": 0, "tn": 1134},
        "per_site": {"site <A>": {"n": 600, "accuracy": 0.9, "balanced_accuracy": 0.85, "macro_f1": 0.8,
                                  "log_loss": 0.4, "blank": None},
                     "B": {"n": 634, "accuracy": 0.84, "balanced_accuracy": None, "macro_f1": 0.77, "log_loss": 0.46,
                           "blank": {"blank_recall": 0.8, "animal_recall": 0.99}}},
    }


def fake_comparison() -> dict:
    return {
        "metrics": [{"name": "log_loss", "a": 0.50, "b": 0.43, "difference": -0.07},
                    {"name": "accuracy", "a": 0.84, "b": 0.87, "difference": 0.03}],
        "classes": [{"class": NASTY, "f1_a": 0.5, "f1_b": 0.6, "f1_difference": 0.1,
                     "recall_a": None, "recall_b": 0.4, "recall_difference": None}],
    }


def hand_galleries(images):
    keys = [f"row{i}" for i in range(len(LABELS))]
    return galleries(keys, PROBS, LABELS, CLASSES, images, per_gallery=3)


def test_galleries_order():
    images = [Path(f"img{i}.jpg") for i in range(len(LABELS))]
    mistakes, uncertain, per_class = hand_galleries(images)
    assert mistakes.title == "Most confident mistakes"
    assert [item.image.name for item in mistakes.items] == ["img2.jpg", "img1.jpg"]
    assert [(item.true_label, item.predicted_label) for item in mistakes.items] == [(NASTY, "elephant"),
                                                                                   ("elephant", "blank")]
    assert [item.probability for item in mistakes.items] == [0.8, 0.6]
    assert uncertain.title == "Most uncertain"
    assert [item.image.name for item in uncertain.items] == ["img3.jpg", "img4.jpg", "img1.jpg"]  # cut at per_gallery
    assert per_class.title == "Per-class examples"
    # blank: its only row; elephant: best (0.9), median (0.5), worst (0.3); then NASTY and zebra.
    assert [item.image.name for item in per_class.items] == ["img0.jpg", "img5.jpg", "img4.jpg", "img1.jpg",
                                                             "img2.jpg", "img3.jpg"]
    assert [item.caption.split(" · ")[1].split(" ")[0] for item in per_class.items[1:4]] == ["best", "median", "worst"]


def test_galleries_reject_mismatched_inputs():
    with pytest.raises(ValueError, match="shape"):
        galleries(["a"] * 6, PROBS[:, :3], LABELS, CLASSES, [None] * 6)
    with pytest.raises(ValueError, match="1 keys and 6 images for 6 labels"):
        galleries(["a"], PROBS, LABELS, CLASSES, [None] * 6)
    with pytest.raises(ValueError, match="class indices"):
        galleries(["a"], PROBS[:1], np.array([7]), CLASSES, [None])


def test_thumbnail_upright_small_and_none_for_bad_files(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    noise_image((400, 200)).save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    thumb = Image.open(io.BytesIO(pictures.thumbnail(tmp_path / "rotated.jpg")))
    assert thumb.format == "JPEG" and thumb.size == (96, 192)
    real = Image.open(io.BytesIO(pictures.thumbnail(FRAMES[0], size=64)))
    assert max(real.size) == 64
    bad = make_bad_inputs(tmp_path / "bad")
    for name in ("truncated", "empty", "text"):
        assert pictures.thumbnail(bad[name]) is None, name
    assert pictures.thumbnail(tmp_path / "missing.jpg") is None
    assert pictures.thumbnail(None) is None


@pytest.mark.slow  # renders pictures for many class counts, ~5 s
def test_pictures_are_pngs_and_scale_with_classes():
    small = Image.open(io.BytesIO(pictures.confusion_png(fake_metrics()["confusion"], CLASSES, normalised=False)))
    many = [f"species_{i:02d}" for i in range(60)]
    big_png = pictures.confusion_png((np.eye(60, dtype=int) * 5 + 1).tolist(), many, normalised=True)
    big = Image.open(io.BytesIO(big_png))
    assert small.format == big.format == "PNG"
    assert big.width > 2 * small.width and big.height > 2 * small.height
    for png in (pictures.reliability_png(fake_metrics()["reliability"]),
                pictures.per_class_png(fake_metrics()["per_class"])):
        assert png.startswith(b"\x89PNG\r\n\x1a\n")


def realistic_report(path: Path, tmp_path: Path) -> tuple[dict, str, list]:
    """A report over real demo frames, one missing file (with markup in its name) and one row without a path."""
    missing = tmp_path / "gone" / "<missing>&'q'.jpg"
    images = [*FRAMES[:4], missing, None]
    built = hand_galleries(images)
    result = write_report(
        path, title=f"Evaluation of {NASTY}", metrics=fake_metrics(), classes=CLASSES, galleries=built,
        bundle_summary={"arch": "tf_efficientnet_lite0", "classes": CLASSES, "trapcls_version": "0.1.0",
                        "calibration": {"temperature": 1.31, "fitted": True}, "metrics": {"val_log_loss": 0.41},
                        "preprocess": {"height": 224, "width": 224, "mean": [0.5, 0.5, 0.5]}, "extra": None},
        command='trapcls evaluate "preds <1>.csv" --labels a&b.csv --report report.html',
        comparison=fake_comparison(), notes=["12 prediction rows had no label", "<script>alert(1)</script>"],
    )
    return result, path.read_text(encoding="utf-8"), built


def test_report_is_self_contained_and_escaped(tmp_path):
    out = tmp_path / "out" / "report.html"
    result, page, built = realistic_report(out, tmp_path)
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # atomic write left no temp file
    assert '<meta name="viewport"' in page
    for forbidden in ("http://", "https://", 'src="/', "src='/", "<script", "<link", "url(", "@import"):
        assert forbidden not in page, forbidden
    sources = re.findall(r"<img\b[^>]*?\bsrc=\"([^\"]*)\"", page)
    assert len(sources) == page.count("<img")
    assert all(src.startswith("data:image/") for src in sources)
    assert page.count('id="confusion"') == 1 and page.count('class="gallery"') == 3
    confusion = re.search(r'<img id="confusion" src="data:image/png;base64,([^"]+)"', page).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(confusion))).format == "PNG"
    # Escaping: the class name, the title, the command, a note and the missing file name.
    assert NASTY not in page and NASTY_ESCAPED in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "preds &lt;1&gt;.csv&quot; --labels a&amp;b.csv" in page
    assert "&lt;missing&gt;&amp;&#x27;q&#x27;.jpg" in page
    # The page is shared: images are named by file name, never by this machine's path to them.
    assert str(tmp_path) not in page and str(FRAMES[0].parent) not in page
    # Missing images: one placeholder per gallery item without a readable file, none for real frames.
    shown = [item for gallery in built for item in gallery.items]
    unreadable = [item for item in shown if item.image is None or not Path(item.image).exists()]
    assert unreadable and page.count(f'class="missing" role="img" aria-label="{NOT_FOUND}"') == len(unreadable)
    assert result["thumbnails"] == 4 and result["pictures"] == 4
    assert result["thumbnails_missing"] == len(unreadable) == 3  # the missing file twice, the row without a path once
    assert result["missing_images"] == [str(tmp_path / "gone" / "<missing>&'q'.jpg")]
    assert page.count("data:image/jpeg;base64,") == len(shown) - len(unreadable)
    for section in ("Headline metrics", "Comparison", "Per class", "Per site", "Pictures", "Model bundle", "Warnings"):
        assert f"<h2>{section}</h2>" in page, section
    assert "probabilities clipped to [1e-15, 1 - 1e-15]" in page and "top-5 accuracy" in page
    assert "site &lt;A&gt;" in page and "1.31" in page


def test_report_tolerates_sparse_metrics(tmp_path):
    metrics = {"n": 0, "log_loss": None, "accuracy": None, "per_class": [], "confusion": None, "reliability": None,
               "blank": None, "per_site": None}
    result = write_report(tmp_path / "r.html", title="empty", metrics=metrics, classes=CLASSES, galleries=[],
                          bundle_summary=None, command="trapcls evaluate x.csv")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert result["pictures"] == 0 and "—" in page and "<img" not in page


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no headless browser on PATH (chromium, chromium-browser or google-chrome); "
                "on Debian/Ubuntu: apt-get install --no-install-recommends chromium")


def _headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=90)


def test_report_renders_in_headless_chromium(tmp_path):
    browser = _browser()
    report = tmp_path / "report.html"
    realistic_report(report, tmp_path)
    shot = tmp_path / "shot.png"
    run = _headless(browser, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2400",
                    report.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 20_000
    with Image.open(shot) as img:
        assert img.size == (1280, 2400)
        colours = img.convert("RGB").resize((320, 600)).getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 200  # text, tables and pictures, not a blank page
    dom = _headless(browser, tmp_path / "profile", "--dump-dom", "--enable-logging=stderr", "--v=0",
                    report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="confusion"' in dom.stdout and 'class="gallery"' in dom.stdout
    # The escaped class name came back as text (serialised again), never as a <b> element.
    assert "&lt;b&gt;&amp;" in dom.stdout and NASTY not in dom.stdout
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Not allowed to load" in line]
    assert not console, console


def test_comparison_accepts_the_headline_shape(tmp_path):
    comparison = {
        "headline": {"log_loss": {"a": 0.5, "b": 0.4, "diff": -0.1, "higher_is_better": False},
                     "accuracy": {"a": 0.8, "b": 0.7, "diff": -0.1, "higher_is_better": True}},
        "per_class": [{"class": NASTY, "f1_a": 0.5, "f1_b": 0.6, "f1_diff": 0.1,
                       "recall_a": 0.5, "recall_b": 0.25, "recall_diff": -0.25}],
    }
    write_report(tmp_path / "r.html", title="t", metrics={"n": 3}, classes=CLASSES, galleries=[],
                 bundle_summary=None, command="c", comparison=comparison)
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    # A lower log loss is an improvement, a lower accuracy a regression.
    assert re.search(r"log_loss</th>.*?<td class=\"num better\">-0.1000</td>", page)
    assert re.search(r"accuracy</th>.*?<td class=\"num worse\">-0.1000</td>", page)
    assert '<td class="num better">+0.1000</td>' in page and '<td class="num worse">-0.2500</td>' in page


def test_report_from_real_metrics_and_comparison(tmp_path):
    """Contract with trapcls.core.metrics: its evaluate_probs and compare output render without gaps."""
    from trapcls.core.metrics import compare, evaluate_probs

    classes = ["blank", "elephant", "zebra", NASTY]
    sharper = PROBS ** 2 / (PROBS ** 2).sum(axis=1, keepdims=True)
    a = evaluate_probs(PROBS, LABELS, classes, sites=["s1", "s2", "s1", "s2", "s1", None])
    b = evaluate_probs(sharper, LABELS, classes)
    result = write_report(tmp_path / "r.html", title="real", metrics=a, classes=classes,
                          galleries=galleries([f"r{i}" for i in range(6)], PROBS, LABELS, classes, [None] * 6),
                          bundle_summary=None, command="c", comparison=compare(a, b, classes))
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert result["pictures"] == 4 and result["thumbnails"] == 0 and result["missing_images"] == []
    assert result["thumbnails_missing"] == page.count('class="missing"') > 0  # rows without a path
    for text in ("<h2>Per site</h2>", "<th scope=\"row\">s2</th>", "blank precision", "top-3 accuracy",
                 html.escape(a["log_loss_rule"])):
        assert text in page, text
    assert page.count('<td class="num better">') + page.count('<td class="num worse">') > 0


def test_report_without_matplotlib_keeps_the_tables(tmp_path, monkeypatch):
    from trapcls.core.system.exceptions import MissingDependencyError

    def missing(*args, **kwargs):
        raise MissingDependencyError("matplotlib is needed (test)")

    monkeypatch.setattr(pictures, "confusion_png", missing)
    result = write_report(tmp_path / "r.html", title="t", metrics=fake_metrics(), classes=CLASSES, galleries=[],
                          bundle_summary=None, command="c")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert result["pictures"] == 0 and "<img" not in page
    assert "No pictures: matplotlib is needed (test)" in page and "<h2>Per class</h2>" in page
