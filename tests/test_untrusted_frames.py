"""What a card may hold, tried as a hostile or careless user would (issue 26): link loops and broken links in the
walk, a small PNG that decodes to gigabytes, EXIF time offsets that are not offsets."""

from __future__ import annotations

import logging
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import REPO, csv_rows, noise_image, trapcls, write_jpeg
from trapcls.core.frames.discover import TreeScanner, discover
from trapcls.core.frames.preprocess import load_image

# --- link loops and broken links (item 3) -------------------------------------------------------------------


def _card_with_loops(root: Path) -> Path:
    """Two frames, and every kind of link a walk must step over: a loop of two, a link to itself, a folder link
    back up (`sub/loop -> ..`), a link to nothing."""
    cam = root / "cam"
    write_jpeg(cam / "ok.jpg")
    write_jpeg(cam / "sub" / "deep.jpg")
    (cam / "a.jpg").symlink_to("b.jpg")
    (cam / "b.jpg").symlink_to("a.jpg")
    (cam / "self.jpg").symlink_to("self.jpg")
    (cam / "notes").symlink_to("notes")  # not an image name: still a loop, still reported
    (cam / "sub" / "loop").symlink_to("..")
    (cam / "broken.jpg").symlink_to("missing.jpg")
    return cam


def test_the_walks_skip_and_report_link_loops_and_broken_links(tmp_path, caplog):
    cam = _card_with_loops(tmp_path / "card")
    with caplog.at_level(logging.WARNING, logger="trapcls.core.frames.discover"):
        found = discover([tmp_path / "card"])
        assert [f.rel for f in found.files] == ["cam/ok.jpg", "cam/sub/deep.jpg"]
        assert found.unclassified == {}  # a link is not an "other file"
        assert "broken or looping symlinks skipped: 5 (e.g. " in caplog.text
        # a glob walks the same way
        assert [f.rel for f in discover([cam / "**" / "*.jpg"]).files] == ["ok.jpg", "sub/deep.jpg"]
        # the watch's repeated walk (TreeScanner) too: a loop no longer aborts every rescan
        caplog.clear()
        scan = TreeScanner(tmp_path / "card").scan()
    assert sorted(scan.images) == ["cam/ok.jpg", "cam/sub/deep.jpg"] and scan.unclassified == {}
    assert f"{cam}: broken or looping symlinks skipped: 5" in caplog.text


def test_predict_classifies_every_frame_beside_link_loops(tiny_run, tmp_path):
    cam = _card_with_loops(tmp_path / "card")
    bundle, out = tiny_run / "bundle", tmp_path / "pred.csv"
    done = trapcls("predict", tmp_path / "card", "--bundle", bundle, "--out", out)
    assert "Traceback" not in done.stderr and "broken or looping symlinks skipped: 5" in done.stderr
    rows = csv_rows(out)
    assert set(rows) == {"cam/ok.jpg", "cam/sub/deep.jpg"} and {r["status"] for r in rows.values()} == {"ok"}

    # named in a file list, a loop (or a file under a folder link that loops) gets its error row with the reason,
    # like a missing file
    (tmp_path / "loopdir").symlink_to("loopdir")
    listing = tmp_path / "list.txt"
    listing.write_text("card/cam/ok.jpg\ncard/cam/a.jpg\nloopdir/x.jpg\n")
    trapcls("predict", "--file-list", listing, "--bundle", bundle, "--out", tmp_path / "list.csv")
    rows = csv_rows(tmp_path / "list.csv")
    assert rows["card/cam/ok.jpg"]["status"] == "ok"
    assert rows["card/cam/a.jpg"]["error"] == "cannot read file: Too many levels of symbolic links"
    assert rows["loopdir/x.jpg"]["error"] == "cannot read file: Too many levels of symbolic links"

    # named on the command line, it is one line, not a traceback
    named = trapcls("predict", cam / "a.jpg", "--bundle", bundle, "--out", tmp_path / "x.csv", rc=1)
    assert "a.jpg (a broken or looping symlink)" in named.stderr and "Traceback" not in named.stderr
    # a glob under a folder link that loops: nothing matches, one line
    glob = trapcls("predict", tmp_path / "loopdir" / "*.jpg", "--bundle", bundle, "--out", tmp_path / "y.csv", rc=1)
    assert "No JPEG or PNG images match" in glob.stderr and "Traceback" not in glob.stderr


# --- a small PNG that decodes to gigabytes (item 6) ---------------------------------------------------------


def _sixteen_bit_png(path: Path, side: int) -> Path:
    """A black 16-bit greyscale PNG of side x side pixels, written row by row: ~170 KB on disk for 9400 px, never
    the whole frame in this process's memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), bytes(1 + 2 * side)  # filter byte 0, then two zero bytes a pixel
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)  # 16 bits, greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


# A real process of its own runs predict, so that its peak resident memory is the grandchild's alone (not that of
# whatever else this test session ran as a child).
_PEAK = """
import resource, subprocess, sys
done = subprocess.run([sys.executable, "-m", "trapcls", *sys.argv[1:]], capture_output=True, text=True)
sys.stderr.write(done.stderr)
print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


@pytest.mark.slow
def test_a_small_png_that_decodes_to_gigabytes_is_an_error_row_and_costs_no_memory(tiny_run, tmp_path):
    (tmp_path / "card").mkdir()
    bomb = _sixteen_bit_png(tmp_path / "card" / "bomb.png", 9400)
    assert bomb.stat().st_size < 300_000
    with Image.open(bomb) as img:
        assert (img.mode, img.size) == ("I;16", (9400, 9400))
    noise_image().save(tmp_path / "card" / "fine.jpg")
    out = tmp_path / "pred.csv"
    env = {k: v for k, v in os.environ.items() if k != "TRAPCLS_BUNDLE"} | {"PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", _PEAK, "predict", tmp_path / "card", "--bundle", tiny_run / "bundle",
                          "--out", out, "--workers", "2"], capture_output=True, text=True, env=env, timeout=300)
    code, peak_kb = map(int, run.stdout.split())
    assert code == 0, run.stderr
    rows = csv_rows(out)
    assert rows["fine.jpg"]["status"] == "ok"
    assert rows["bomb.png"]["status"] == "error"
    assert rows["bomb.png"]["error"].startswith("image too large (decompression bomb guard): 9400x9400 pixels of "
                                                "mode I;16 would take 758 MiB to decode; a frame may take 256 MiB")
    # Before, this one frame took 2.4 GB; now nothing of it is decoded. A generous bound, not a measurement.
    assert peak_kb < 1_200_000, f"predict peaked at {peak_kb / 1024:.0f} MiB"


def test_the_decode_budget_holds_camera_frames_and_refuses_deep_bombs():
    from trapcls.core.frames.preprocess import DECODE_BUDGET, decode_bytes  # here: the module runs on older code too

    assert decode_bytes("RGB", (8000, 8000)) <= DECODE_BUDGET  # 64 MP, 8-bit RGB: larger than any camera trap's
    assert decode_bytes("L", (6000, 4000)) <= DECODE_BUDGET
    assert decode_bytes("I;16", (6000, 4000)) <= DECODE_BUDGET  # a 24 MP 16-bit frame
    assert decode_bytes("I;16", (9400, 9400)) > DECODE_BUDGET
    # the upright copy of a frame EXIF rotates counts too
    assert decode_bytes("RGB", (7000, 7000)) <= DECODE_BUDGET < decode_bytes("RGB", (7000, 7000), upright_copy=True)


def test_sixteen_bit_frames_scale_to_eight_bits_by_rounding(tmp_path):
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    Image.fromarray(values).save(tmp_path / "ramp.png")
    grey = np.asarray(load_image(tmp_path / "ramp.png"))[..., 0]
    assert (grey == np.rint(values / 257.0).astype(np.uint8)).all()


# --- EXIF time offsets that are not offsets (item 9) --------------------------------------------------------


def _exif_jpeg(path: Path, taken: str, offset: str | None) -> Path:
    exif = Image.Exif()
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = taken  # DateTimeOriginal
    if offset is not None:
        sub[0x9011] = offset  # OffsetTimeOriginal
    noise_image().save(path, exif=exif.tobytes())
    return path


def test_an_exif_offset_that_is_no_utc_offset_leaves_the_frame_untimed_with_a_note(tiny_run, tmp_path):
    card = tmp_path / "card"
    card.mkdir()
    _exif_jpeg(card / "good.jpg", "2024:05:01 06:30:00", "+02:00")
    _exif_jpeg(card / "west.jpg", "2024:05:01 06:30:05", "-12:00")
    _exif_jpeg(card / "day.jpg", "2024:05:01 06:30:10", "+24:00")
    _exif_jpeg(card / "junk.jpg", "2024:05:01 06:30:15", "+99:99")
    _exif_jpeg(card / "east.jpg", "2024:05:01 06:30:20", "+14:30")
    _exif_jpeg(card / "unknown.jpg", "2024:05:01 06:30:25", "   :  ")  # EXIF's own "not known": no note
    out = tmp_path / "pred.csv"
    done = trapcls("predict", card, "--bundle", tiny_run / "bundle", "--out", out)
    captured = {path: row["captured"] for path, row in csv_rows(out).items()}
    assert captured == {"good.jpg": "2024-05-01T06:30:00+02:00", "west.jpg": "2024-05-01T06:30:05-12:00",
                        "day.jpg": "", "junk.jpg": "", "east.jpg": "", "unknown.jpg": "2024-05-01T06:30:25"}
    notes = [line for line in done.stderr.splitlines() if "is not a UTC offset" in line]
    assert len(notes) == 3 and all(name in done.stderr for name in ("day.jpg", "junk.jpg", "east.jpg"))
    assert "'+99:99'" in done.stderr
    assert all("left untimed" in line for line in notes)
    trapcls("events", out, "--out", tmp_path / "events.csv")
    untimed = [row for row in csv_rows(tmp_path / "events.csv", key="event_id").values() if row["untimed"] == "true"]
    assert sorted(row["first_file"] for row in untimed) == ["day.jpg", "east.jpg", "junk.jpg"]
