"""A video clip's row: the clip columns of the field CSV, written and read back through the one layout and reader,
and the one rule that combines a clip's sampled frames (the event rule)."""

from __future__ import annotations

import numpy as np
import pytest

from trapcls.core.model.blank import BlankRule
from trapcls.core.model.probs import combine_frames
from trapcls.core.system.exceptions import DataError
from trapcls.core.table.layout import Layout
from trapcls.core.table.read import parse_table
from trapcls.core.table.row import Clip, Row

CLASSES = ("antelope", "blank", "zebra")
RULE = BlankRule(0.5, "given", "given")


def test_clip_columns_round_trip_and_stay_empty_on_a_frames_row(tmp_path):
    layout = Layout("field", CLASSES, RULE, model="m", clips=True)
    rows = [Row("a.jpg", np.array([0.2, 0.3, 0.5])),
            Row("cam/v.mp4", np.array([0.1, 0.1, 0.8]), "2024-01-01T06:00:00", clip=Clip(5, 4.97, 29.97, 90)),
            Row("cam/bad.avi", None, error="no video stream", clip=Clip())]
    header, cells = layout.header(), [layout.cells(r) for r in rows]
    assert header[-4:] == ["frames", "duration_s", "frame_rate", "best_frame"]
    assert cells[0][-4:] == ["", "", "", ""] and cells[2][-4:] == ["0", "", "", ""]
    table = parse_table(tmp_path / "p.csv", header, cells)
    assert [r.clip for r in table.rows] == [None, Clip(5, 4.97, 29.97, 90), Clip(0, None, None, None)]


def test_a_csv_without_clips_keeps_its_old_header_and_refuses_a_clip_row():
    layout = Layout("field", CLASSES, RULE, model="m")
    assert layout.header()[-1] == "model"
    with pytest.raises(DataError, match="video clip"):
        layout.cells(Row("v.mp4", np.array([0.1, 0.1, 0.8]), clip=Clip(1, 1.0, 1.0, 0)))


def test_one_confident_animal_frame_makes_an_animal_clip_and_blank_frames_keep_it_blank():
    blank = CLASSES.index("blank")
    quiet = np.array([0.02, 0.97, 0.01])
    zebra = np.array([0.01, 0.04, 0.95])
    clip = combine_frames(np.stack([quiet] * 9 + [zebra]), blank)
    assert int(np.argmax(clip)) == CLASSES.index("zebra") and clip[blank] == pytest.approx(0.04)
    empty = combine_frames(np.stack([quiet] * 10), blank)
    assert int(np.argmax(empty)) == blank and RULE.is_blank(empty[blank])
