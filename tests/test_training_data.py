"""Training data: the DrivenData layout, labels from file names, site/folder-grouped splits, k-fold, split files."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import pytest

from helpers import write_jpeg
from trapcls.core.frames.labels import Sample, load_samples
from trapcls.core.system.exceptions import DataError, OptionError
from trapcls.training.config import GROUP_BY
from trapcls.training.split import kfold_split, read_split, split_samples, stratified_split, write_split

CLASSES = ("antelope_duiker", "bird", "blank", "civet_genet", "hog", "leopard", "monkey_prosimian", "rodent")


def make_drivendata(root: Path, *, sites: int = 4, per_class: int = 4) -> list[tuple[str, str, str]]:
    """A small Conser-vision layout: (id, class, site) rows, images under train_features/, float one-hots."""
    rows = []
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            id_ = f"ZJ{c * per_class + i:06d}"
            rows.append((id_, name, f"S{(c + i) % sites:04d}"))
            write_jpeg(root / "train_features" / f"{id_}.jpg", size=(16, 16), color=(c * 30, i * 40, 90))
    write_csv(root / "train_features.csv", ["id", "filepath", "site"],
              [[id_, f"train_features/{id_}.jpg", site] for id_, _, site in rows])
    write_csv(root / "train_labels.csv", ["id", *CLASSES],
              [[id_, *("1.0" if c == name else "0.0" for c in CLASSES)] for id_, name, _ in rows])
    return rows


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def edit_csv(path: Path, edit) -> None:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    rows = edit(rows)
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def sited(labels: dict[str, int], sites: int) -> list[Sample]:
    """Synthetic samples: `n` images of each class spread round-robin over `sites` sites."""
    return [Sample(path=Path(f"/data/{label}_{i}.jpg"), label=label, site=f"site{i % sites}")
            for label, n in labels.items() for i in range(n)]


# -- the DrivenData layout ---------------------------------------------------------------------------

def test_drivendata_layout_reads_labels_sites_and_paths(tmp_path):
    rows = make_drivendata(tmp_path)
    samples = load_samples(tmp_path)
    assert [(s.path, s.label, s.site) for s in samples] == [
        (tmp_path / "train_features" / f"{id_}.jpg", name, site) for id_, name, site in rows]
    assert Counter(s.label for s in samples) == {c: 4 for c in CLASSES}
    assert all(s.path.is_file() for s in samples)


def test_drivendata_integer_one_hots_are_read_too(tmp_path):
    make_drivendata(tmp_path)
    edit_csv(tmp_path / "train_labels.csv",
             lambda rows: [rows[0]] + [[r[0], *(v.replace(".0", "") for v in r[1:])] for r in rows[1:]])
    assert Counter(s.label for s in load_samples(tmp_path)) == {c: 4 for c in CLASSES}


def _drop_label_row(rows):
    return [r for r in rows if r[0] != "ZJ000005"]


def _drop_feature_row(rows):
    return [r for r in rows if r[0] != "ZJ000006"]


def _clear(ids):
    return lambda rows: [r if r[0] not in ids else [r[0], *("0" for _ in r[1:])] for r in rows]


def _second_positive(rows):
    return [r if r[0] != "ZJ000002" else [r[0], "1", "1", *r[3:]] for r in rows]


def _bad_value(rows):
    return [r if r[0] != "ZJ000001" else [r[0], "2", *r[2:]] for r in rows]


def _empty_class(rows):
    return [r + (["zebra"] if i == 0 else ["0"]) for i, r in enumerate(rows)]


def _duplicate(rows):
    return rows + [rows[3]]


@pytest.mark.parametrize(("file", "edit", "message"), [
    ("train_labels.csv", _drop_label_row, "1 ids only in train_features.csv: ZJ000005"),
    ("train_features.csv", _drop_feature_row, "1 ids only in train_labels.csv: ZJ000006"),
    ("train_labels.csv", _clear({"ZJ000003"}), "1 ids with no class set to 1: ZJ000003"),
    ("train_labels.csv", _second_positive, r"1 ids with several classes set to 1: ZJ000002 \(antelope_duiker\+bird\)"),
    ("train_labels.csv", _bad_value, r"1 values that are not 0 or 1: ZJ000001 \(antelope_duiker='2'\)"),
    ("train_labels.csv", _empty_class, "1 class columns have no images: zebra"),
    ("train_features.csv", _duplicate, r"train_features.csv: 1 duplicate ids: ZJ000002 \(line 34\)"),
    ("train_labels.csv", _duplicate, r"train_labels.csv: 1 duplicate ids: ZJ000002"),
])
def test_drivendata_problems_are_named(tmp_path, file, edit, message):
    make_drivendata(tmp_path)
    edit_csv(tmp_path / file, edit)
    with pytest.raises(DataError, match=message):
        load_samples(tmp_path)


def test_drivendata_errors_name_five_offenders_and_the_count(tmp_path):
    make_drivendata(tmp_path)
    ids = {f"ZJ{i:06d}" for i in range(0, 28, 4)}  # one image of each of 7 classes: no class is left empty
    edit_csv(tmp_path / "train_labels.csv", _clear(ids))
    with pytest.raises(DataError, match="7 ids with no class set to 1") as info:
        load_samples(tmp_path)
    named = set(re.findall(r"ZJ\d{6}", str(info.value)))
    assert len(named) == 5 and named <= ids and "and 2 more" in str(info.value)


def test_drivendata_missing_images_and_half_layouts_are_refused(tmp_path):
    make_drivendata(tmp_path)
    (tmp_path / "train_features" / "ZJ000007.jpg").unlink()
    with pytest.raises(DataError, match="1 listed files do not exist .*ZJ000007.jpg"):
        load_samples(tmp_path)
    (tmp_path / "train_labels.csv").unlink()
    with pytest.raises(DataError, match="train_labels.csv is missing"):
        load_samples(tmp_path)


def test_pointing_at_a_drivendata_csv_says_to_pass_the_folder(tmp_path):
    make_drivendata(tmp_path)
    with pytest.raises(DataError, match=f"pass the folder {re.escape(str(tmp_path))}"):
        load_samples(tmp_path / "train_labels.csv")


# -- CSV and folder sources ----------------------------------------------------------------------------

def test_csv_site_column_is_optional_per_row(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_jpeg(tmp_path / name, size=(16, 16))
    (tmp_path / "labels.csv").write_text("filepath,label,site\na.jpg,cat,north\nb.jpg,dog, south \nc.jpg,dog,\n")
    samples = load_samples(tmp_path / "labels.csv")
    assert [(s.path.name, s.label, s.site) for s in samples] == [
        ("a.jpg", "cat", "north"), ("b.jpg", "dog", "south"), ("c.jpg", "dog", None)]


def test_class_folder_without_images_is_named(tmp_path):
    write_jpeg(tmp_path / "cat" / "1.jpg", size=(16, 16))
    write_jpeg(tmp_path / "dog" / "1.jpg", size=(16, 16))
    (tmp_path / "fox").mkdir()
    (tmp_path / "fox" / "notes.txt").write_text("no images\n")
    with pytest.raises(DataError, match=r"class folders without JPEG/PNG images: fox \(1 in all\)"):
        load_samples(tmp_path)


def test_real_csv_with_sites(shared_data, tmp_path):
    source = load_samples(shared_data / "ena24_small" / "labels.csv")
    rows = [[str(s.path), s.label, f"cam{i % 3}"] for i, s in enumerate(source)]
    write_csv(tmp_path / "labels.csv", ["filepath", "label", "site"], rows)
    samples = load_samples(tmp_path / "labels.csv")
    assert [(s.path, s.label) for s in samples] == [(s.path, s.label) for s in source]
    train, val, grouping = split_samples(samples, val_fraction=0.34, seed=0)
    assert grouping == "site" and len(val) == 7  # one of the three 7-image sites
    assert not {s.site for s in train} & {s.site for s in val}


# -- labels from file names ----------------------------------------------------------------------------

def test_regex_labels_come_from_the_first_group_recursively(tmp_path):
    for rel in ("cam1/cat_001.jpg", "cam1/dog_002.jpg", "cam2/deep/cat_010.JPG", "dog_3.png"):
        write_jpeg(tmp_path / rel, size=(16, 16))
    samples = load_samples(tmp_path, label_regex=r"(.+)_\d+\.(?i:jpg|png)$")
    assert sorted((s.path.relative_to(tmp_path.resolve()).as_posix(), s.label, s.site) for s in samples) == [
        ("cam1/cat_001.jpg", "cat", None), ("cam1/dog_002.jpg", "dog", None),
        ("cam2/deep/cat_010.JPG", "cat", None), ("dog_3.png", "dog", None)]


def test_regex_named_groups_give_label_and_site(tmp_path):
    for name in ("S01-leopard-1.jpg", "S01-hog-2.jpg", "S02-hog-3.jpg"):
        write_jpeg(tmp_path / name, size=(16, 16))
    samples = load_samples(tmp_path, label_regex=r"(?P<site>S\d+)-(?P<label>[a-z]+)-\d+")
    assert sorted((s.label, s.site) for s in samples) == [("hog", "S01"), ("hog", "S02"), ("leopard", "S01")]


def test_regex_that_misses_files_names_them_and_counts(tmp_path):
    for i in range(3):
        write_jpeg(tmp_path / f"cat_{i}.jpg", size=(16, 16))
    for i in range(7):
        write_jpeg(tmp_path / f"IMG{i:04d}.jpg", size=(16, 16))
    with pytest.raises(DataError, match=r"7 file names give no label .*IMG0000.jpg.* and 2 more") as info:
        load_samples(tmp_path, label_regex=r"([a-z]+)_\d+\.jpg$")
    assert len(re.findall(r"IMG\d{4}", str(info.value))) == 5


@pytest.mark.parametrize(("regex", "message"), [
    (r"[a-z", "not a valid regular expression"),
    (r"[a-z]+_\d+", "has no group for the label"),
    (r"(?P<site>S\d+)", "has no group for the label"),
])
def test_bad_regexes_are_explained(tmp_path, regex, message):
    write_jpeg(tmp_path / "cat_1.jpg", size=(16, 16))
    with pytest.raises(OptionError, match=f"label_regex: .*{message}"):
        load_samples(tmp_path, label_regex=regex)


def test_regex_giving_one_class_is_refused(tmp_path):
    for i in range(3):
        write_jpeg(tmp_path / f"cat_{i}.jpg", size=(16, 16))
    with pytest.raises(DataError, match=r"1 class\(es\) \(cat\); a classifier needs at least 2"):
        load_samples(tmp_path, label_regex=r"(.+)_\d+\.jpg$")


def test_regex_labels_match_the_serengeti_label_file(shared_data):
    from_names = load_samples(shared_data / "serengeti", label_regex=r"(.+)-\d+\.jpg$")
    from_csv = load_samples(shared_data / "serengeti" / "labels.csv")
    assert sorted((s.path.name, s.label) for s in from_names) == sorted((s.path.name, s.label) for s in from_csv)


# -- splits ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(40))
def test_site_split_never_puts_a_site_on_both_sides(tmp_path, seed):
    samples = sited({"a": 30, "b": 17, "c": 9, "d": 5}, sites=7)
    train, val, grouping = split_samples(samples, val_fraction=0.2, seed=seed)
    assert grouping == "site"
    assert not {s.site for s in train} & {s.site for s in val}
    assert sorted(map(str, (s.path for s in train + val))) == sorted(str(s.path) for s in samples)
    assert val and {s.label for s in train} == {"a", "b", "c", "d"}


def test_site_split_covers_every_class_and_aims_at_the_fraction():
    samples = sited({label: 20 for label in CLASSES}, sites=10)  # every class at every site
    for seed in range(10):
        _, val, _ = split_samples(samples, val_fraction=0.2, seed=seed)
        assert {s.label for s in val} == set(CLASSES)
        assert len(val) == 32  # 2 of 10 equal sites


def test_site_split_prefers_sites_that_bring_missing_classes():
    # "rare" lives at one small site only, but that site is not the only place it lives: it also sits at s9.
    samples = sited({"common": 90}, sites=9) + [
        Sample(Path("/data/rare_0.jpg"), "rare", "s9"), Sample(Path("/data/rare_1.jpg"), "rare", "site0")]
    for seed in range(20):
        train, val, _ = split_samples(samples, val_fraction=0.2, seed=seed)
        assert "rare" in {s.label for s in val} and "rare" in {s.label for s in train}


def test_site_split_never_takes_a_class_out_of_training(caplog):
    samples = sited({"common": 90}, sites=9) + [Sample(Path(f"/data/rare_{i}.jpg"), "rare", "s9") for i in range(2)]
    for seed in range(20):
        train, val, _ = split_samples(samples, val_fraction=0.2, seed=seed)
        assert "rare" in {s.label for s in train} and "rare" not in {s.label for s in val}
    assert "could put these classes in validation without taking them out of training: rare" in caplog.text


def test_grouped_split_is_seeded_and_order_independent():
    samples = sited({"a": 30, "b": 20, "c": 10}, sites=8)
    first = split_samples(samples, val_fraction=0.25, seed=3)
    again = split_samples(list(reversed(samples)), val_fraction=0.25, seed=3)
    assert first == again
    assert any(split_samples(samples, val_fraction=0.25, seed=s)[1] != first[1] for s in range(4, 10))


def test_folder_grouping_keeps_each_camera_folder_on_one_side(tmp_path):
    rows = []
    for cam in range(5):
        for label in ("cat", "dog"):
            for i in range(3):
                rel = f"site/cam{cam}/{label}_{i}.jpg"
                write_jpeg(tmp_path / rel, size=(16, 16))
                rows.append([rel, label])
    write_csv(tmp_path / "labels.csv", ["filepath", "label"], rows)
    samples = load_samples(tmp_path / "labels.csv")
    train, val, grouping = split_samples(samples, val_fraction=0.2, seed=1, group_by="folder")
    assert grouping == "folder"
    assert len({s.path.parent for s in val}) == 1 and len(val) == 6
    assert not {s.path.parent for s in train} & {s.path.parent for s in val}


def test_auto_without_sites_is_the_stratified_split():
    samples = [Sample(path=Path(f"/d/{label}/{i}.jpg"), label=label) for label in "abc" for i in range(10)]
    train, val, grouping = split_samples(samples, val_fraction=0.2, seed=5)
    assert grouping == "none"
    assert (train, val) == stratified_split(samples, 0.2, 5)
    assert Counter(s.label for s in val) == {"a": 2, "b": 2, "c": 2}


def test_zero_val_fraction_keeps_everything_for_training():
    samples = sited({"a": 4, "b": 4}, sites=1)
    train, val, grouping = split_samples(samples, val_fraction=0.0, seed=0, group_by="site")
    assert (len(train), val, grouping) == (8, [], "site")


@pytest.mark.parametrize(("samples", "kwargs", "message"), [
    (sited({"a": 4, "b": 4}, 2), {"group_by": "camera"},
     "group_by: 'camera' is not one of 'auto', 'site', 'folder', 'none'"),
    ([Sample(Path("/d/a.jpg"), "a"), Sample(Path("/d/b.jpg"), "b")], {"group_by": "site"}, "no image has a site"),
    ([Sample(Path("/d/a.jpg"), "a", "s1"), Sample(Path("/d/b.jpg"), "b")], {"group_by": "site"},
     "1 images have no site, e.g. /d/b.jpg"),
    (sited({"a": 4, "b": 4}, 1), {}, "from 1 site.*needs at least 2. Use --group-by none"),
    (sited({"a": 4, "b": 4}, 1), {"group_by": "folder"}, "from 1 folder.*Use --group-by none"),
    (sited({"a": 4, "b": 4}, 2), {"val_fraction": 1.0}, r"val_fraction: must be in \[0, 1\)"),
])
def test_split_errors_are_explained(samples, kwargs, message):
    with pytest.raises((DataError, OptionError), match=message):
        split_samples(samples, **{"val_fraction": 0.2, "seed": 0, **kwargs})


def test_group_by_names_are_the_documented_ones():
    assert GROUP_BY == ("auto", "site", "folder", "none")


# -- k-fold ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("group_by", ["site", "none"])
def test_kfold_folds_are_disjoint_and_cover_everything(group_by):
    samples = sited({"a": 40, "b": 25, "c": 12}, sites=11)
    vals = []
    for fold in range(1, 6):
        train, val, grouping = kfold_split(samples, folds=5, fold=fold, seed=2, group_by=group_by)
        assert grouping == group_by and val
        assert sorted(str(s.path) for s in train + val) == sorted(str(s.path) for s in samples)
        if group_by == "site":
            assert not {s.site for s in train} & {s.site for s in val}
        vals.append(val)
    assert sorted(str(s.path) for val in vals for s in val) == sorted(str(s.path) for s in samples)
    assert len({s.path for val in vals for s in val}) == len(samples)
    if group_by == "none":  # stratified: every class in every fold, fold sizes within one image per class
        assert all({s.label for s in val} == {"a", "b", "c"} for val in vals)
        assert max(map(len, vals)) - min(map(len, vals)) <= 3


def test_kfold_is_seeded_and_balanced_by_site():
    samples = sited({label: 30 for label in CLASSES}, sites=10)
    folds = [kfold_split(samples, folds=5, fold=f, seed=9)[1] for f in range(1, 6)]
    assert [len(v) for v in folds] == [48] * 5  # 10 equal sites: 2 per fold
    assert folds[0] == kfold_split(list(reversed(samples)), folds=5, fold=1, seed=9)[1]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"folds": 1, "fold": 1}, "at least 2 folds"),
    ({"folds": 5, "fold": 0}, "folds count from 1"),
    ({"folds": 5, "fold": 6}, "between 1 and 5"),
    ({"folds": 5, "fold": 1, "group_by": "site"}, "from 3 site.*needs at least 5. Use --group-by none"),
])
def test_kfold_errors_are_explained(kwargs, message):
    with pytest.raises((DataError, OptionError), match=message):
        kfold_split(sited({"a": 6, "b": 6}, sites=3), seed=0, **kwargs)


# -- split files ---------------------------------------------------------------------------------------

def test_split_file_round_trip(tmp_path):
    rows = make_drivendata(tmp_path / "dd")
    samples = load_samples(tmp_path / "dd")
    train, val, grouping = split_samples(samples, val_fraction=0.25, seed=4)
    write_split(tmp_path / "split.csv", train, val, grouping)
    with open(tmp_path / "split.csv", newline="") as fh:
        written = list(csv.DictReader(fh))
    assert list(written[0]) == ["filepath", "label", "site", "group", "part"]
    assert Counter(r["part"] for r in written) == {"train": len(train), "val": len(val)}
    assert all(r["group"] == r["site"] for r in written) and len(written) == len(rows)
    assert read_split(tmp_path / "split.csv") == (train, val)


def test_split_file_without_grouping_and_relative_paths(tmp_path):
    write_jpeg(tmp_path / "imgs" / "a.jpg", size=(16, 16))
    write_jpeg(tmp_path / "imgs" / "b.jpg", size=(16, 16))
    (tmp_path / "split.csv").write_text("filepath,label,site,group,part\n"
                                        "imgs/a.jpg,cat,,,train\nimgs/b.jpg,dog,,,val\n")
    train, val = read_split(tmp_path / "split.csv")
    assert train == [Sample(tmp_path / "imgs" / "a.jpg", "cat")] and val == [Sample(tmp_path / "imgs" / "b.jpg", "dog")]
    write_split(tmp_path / "again.csv", train, val, "none")
    assert "a.jpg,cat,,,train" in (tmp_path / "again.csv").read_text()


@pytest.mark.parametrize(("content", "message"), [
    ("filepath,label\na.jpg,cat\n", "expected columns filepath,label,site,group,part"),
    ("filepath,label,part\na.jpg,cat,test\n", "1 rows need a filepath, a label and part train or val: line 2"),
    ("filepath,label,part\ngone.jpg,cat,val\n", "1 listed files do not exist"),
])
def test_bad_split_files_are_explained(tmp_path, content, message):
    (tmp_path / "split.csv").write_text(content)
    with pytest.raises(DataError, match=message):
        read_split(tmp_path / "split.csv")
    with pytest.raises(DataError, match="does not exist"):
        read_split(tmp_path / "nothing.csv")
