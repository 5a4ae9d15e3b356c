"""Decoding clips: sampling by time, what the container says, every way a clip can be broken, and the worker
processes that keep a crashing or hanging decoder from taking the run with it.

Real clips: four of zamba's camera-trap clips committed in tests/data/clips (AVI MPEG-4 part 2, MP4 H.264,
ASF MS-MPEG4) and all 19 in ../shared/data/zamba_videos when present. The rest are made here with PyAV
from the committed RECONYX burst, each the kind of file a camera or a copy leaves: an MJPEG AVI whose first
frame is yuvj422p and the rest yuvj420p, H.264 with an audio track, variable frame rate, no stated rate,
cut short, empty, audio only. Every failure is checked by its reason, as it reaches the CSV's error cell.
"""

from __future__ import annotations

import fractions
import logging
import multiprocessing
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from helpers import BURST, REPO, frames_of, write_clip
from trapcls.core.frames.clip_time import capture_time, parse_stamp
from trapcls.core.frames.discover import CLIP_SUFFIXES as VIDEO_SUFFIXES
from trapcls.core.frames.discover import is_clip
from trapcls.core.frames.preprocess import PreprocessSpec, resize, to_array
from trapcls.core.frames.video import SampledClip, sample_clip, spread
from trapcls.core.system.exceptions import ImageReadError
from trapcls.predict.clip_workers import ClipDecoder

CLIPS = REPO / "tests" / "data" / "clips"
AVI, MP4, ASF, DROPPED = (CLIPS / n for n in ("09190048_Hyena.AVI", "09100029_Eland.MP4", "PICT0021.ASF",
                                              "11060025.AVI"))
SPEC = PreprocessSpec(height=64, width=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
SIZE = (128, 96)  # clips made here: small, so each test takes a fraction of a second


def burst(count: int = 10, size: tuple[int, int] = SIZE) -> list[Image.Image]:
    """The committed RECONYX burst (10 real IR frames of a heron), cycled to `count` frames at `size`."""
    return frames_of(sorted(BURST.glob("*.JPG")), size, count)


def still_input(img: Image.Image) -> np.ndarray:
    """A frame made into model input as a still would be: the one geometry."""
    return to_array(resize(img, SPEC), SPEC)


def reason(path: Path, **kwargs) -> str:
    with pytest.raises(ImageReadError) as caught:
        sample_clip(path, SPEC, **kwargs)
    assert str(path) not in caught.value.reason and os.path.dirname(str(path)) not in caught.value.reason
    return caught.value.reason


# --- real clips ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "codec", "decoded"), [(AVI, "mpeg4", 15), (MP4, "h264", 31),
                                                        (ASF, "msmpeg4", 61)])
def test_committed_zamba_clips_sample_one_frame_a_second(path, codec, decoded):
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == codec
        first = next(container.decode(video=0)).to_image()
    clip = sample_clip(path, SPEC)
    assert clip.decoded == decoded and clip.frame_rate == 1.0 and clip.duration == float(decoded)
    assert clip.frame_numbers == tuple(range(decoded)) and clip.times == tuple(float(t) for t in range(decoded))
    assert clip.inputs.shape == (decoded, 3, 64, 64) and clip.inputs.dtype == np.float32
    np.testing.assert_array_equal(clip.inputs[0], still_input(first))
    # zamba's clips carry no capture time; the ASF's file properties hold the 1970 epoch, i.e. unset
    assert (clip.captured, clip.captured_from) == (None, "")


def test_a_dropped_frame_keeps_frame_numbers_and_times_apart():
    """A real AVI with no frame at 1 s: frame numbers count decoded frames, times are the timestamps."""
    clip = sample_clip(DROPPED, SPEC)
    assert clip.decoded == 15 and clip.frame_rate == 1.0 and clip.duration == 16.0
    assert clip.frame_numbers[:3] == (0, 1, 2) and clip.times[:3] == (0.0, 2.0, 3.0)


@pytest.mark.slow
def test_every_zamba_clip_decodes(shared_data):
    clips = sorted(p for p in (shared_data / "zamba_videos").rglob("*") if is_clip(p.name))
    assert len(clips) == 19
    with ClipDecoder(SPEC, workers=2) as decoder:
        results = dict(decoder.decode(clips))
    assert set(results) == set(clips)
    failed = {p.name: r for p, r in results.items() if isinstance(r, str)}
    assert not failed
    assert all(r.decoded >= 6 and r.frame_rate == 1.0 and len(r.inputs) == r.decoded for r in results.values())
    for path, clip in results.items():  # what decoding every frame gives, dropped frames included
        numbers, times, inputs = every_frame(path, 1.0)
        assert clip.frame_numbers == numbers and clip.times == times, path.name
        np.testing.assert_array_equal(clip.inputs, inputs)


def test_video_suffixes_any_case():
    assert all(is_clip(f"clip{s}") and is_clip(f"CLIP{s.upper()}") for s in VIDEO_SUFFIXES)
    assert not is_clip("frame.jpg") and not is_clip("clip.mp4.part")


# --- clips as cameras and copies make them --------------------------------------------------------------------


def test_sampling_at_1_fps_keeps_frame_0_and_one_frame_a_second(tmp_path):
    frames = burst(35)
    clip = sample_clip(write_clip(tmp_path / "c.mp4", frames, rate=10), SPEC)
    assert clip.frame_numbers == (0, 10, 20, 30) and clip.times == (0.0, 1.0, 2.0, 3.0)
    assert clip.frame_rate == 10.0 and clip.decoded == 35 and clip.duration == pytest.approx(3.5)
    for i, number in enumerate(clip.frame_numbers):  # lossy H.264 at 128x96: close to the still, not equal
        assert np.abs(clip.inputs[i] - still_input(frames[number])).mean() < 0.05
    # at 4 fps: the first frame at or after each 0.25 s
    assert sample_clip(tmp_path / "c.mp4", SPEC, fps=4).frame_numbers == (0, 3, 5, 8, 10, 13, 15, 18, 20, 23, 25,
                                                                          28, 30, 33)


def every_frame(path: Path, fps: float) -> tuple[tuple[int, ...], tuple[float, ...], np.ndarray]:
    """The reference: decode every frame in order, keep the first at or after each k / fps seconds."""
    numbers, times, inputs, moment = [], [], [], 0.0
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == 0:
                first = frame.time
            t = frame.time - first
            if t + 1e-6 >= moment:
                numbers.append(i)
                times.append(t)
                inputs.append(still_input(frame.to_image()))
                moment = (int((t + 1e-6) * fps) + 1) / fps
    return tuple(numbers), tuple(times), np.stack(inputs)


# At most this many of the 60 frames decoded for the 6 sampled at 1 fps. A keyframe a second (H.264) or every
# frame one (MJPEG): the 6 keyframes themselves (with B-frames, also those decoded before each is shown). The
# MPEG-4 AVI (a keyframe each 1.2 s), the ASF (each 1.2 s) and the VFR clip (one keyframe) have no bound: the
# groups that hold the moments cover most of the clip.
SKIPPED = {"ippp": 8, "ibbp": 24, "mjpeg": 8}


@pytest.mark.parametrize("kind", ["ippp", "ibbp", "mpeg4-b", "mjpeg", "asf", "vfr"])
def test_skipping_groups_of_pictures_gives_what_decoding_every_frame_gives(tmp_path, kind, caplog):
    """Only the groups of pictures holding a sampled frame are decoded: the same frames, numbers, times and input."""
    frames = burst(60)
    if kind in ("ippp", "ibbp"):
        path = tmp_path / f"{kind}.mp4"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=10, options={"preset": "fast"})
            stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
            stream.codec_context.gop_size, stream.codec_context.max_b_frames = 10, (0 if kind == "ippp" else 3)
            for img in frames:
                out.mux(stream.encode(av.VideoFrame.from_image(img)))
            out.mux(stream.encode())
    elif kind == "mpeg4-b":
        path = tmp_path / "c.avi"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("mpeg4", rate=10)
            stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
            stream.codec_context.gop_size, stream.codec_context.max_b_frames = 12, 2
            for img in frames:
                out.mux(stream.encode(av.VideoFrame.from_image(img)))
            out.mux(stream.encode())
    elif kind == "vfr":
        path = write_clip(tmp_path / "vfr.mp4", frames, rate=30, times=[i * 0.1 + (0.05 if i % 7 == 3 else 0)
                                                                        for i in range(60)])
    else:
        path = write_clip(tmp_path / ("c.avi" if kind == "mjpeg" else "c.asf"), frames,
                          codec="mjpeg" if kind == "mjpeg" else "msmpeg4")
    for fps in (1.0, 3.0, 10.0):
        with caplog.at_level(logging.DEBUG, logger="trapcls.core.frames.video"):
            clip = sample_clip(path, SPEC, fps=fps)
        numbers, times, inputs = every_frame(path, fps)
        assert clip.frame_numbers == numbers and clip.times == pytest.approx(times, abs=1e-9)
        np.testing.assert_array_equal(clip.inputs, inputs)
        assert clip.decoded == 60
        if fps == 1.0 and kind in SKIPPED:  # 6 moments: whole groups of pictures between them are never decoded
            decoded = int(caplog.records[-1].getMessage().split(": ")[-1].split(" of ")[0])
            assert decoded <= SKIPPED[kind], caplog.records[-1].getMessage()


def test_max_frames_spreads_frames_evenly_over_the_clip(tmp_path):
    path = write_clip(tmp_path / "c.mp4", burst(60), rate=10)
    clip = sample_clip(path, SPEC, fps=10, max_frames=4)
    assert clip.frame_numbers == (0, 15, 30, 45) and clip.decoded == 60
    assert sample_clip(path, SPEC, fps=10, max_frames=1).frame_numbers == (0,)
    assert sample_clip(path, SPEC, fps=0.5, max_frames=10).frame_numbers == (0, 20, 40)  # fewer: the fps decides


def test_max_frames_holds_when_the_header_under_reports(tmp_path):
    """An AVI whose stream header says 1 s for 6 s of frames: the sampler thins as it goes, still spread evenly."""
    path = write_clip(tmp_path / "c.avi", burst(60), codec="mpeg4", rate=10)
    data = bytearray(path.read_bytes())
    strh = data.index(b"strh") + 8
    struct.pack_into("<I", data, strh + 32, 10)  # dwLength: 10 frames
    at = data.index(b"idx1")
    path.write_bytes(data[:at])  # and no index to count them from
    with av.open(str(path)) as container:
        assert container.streams.video[0].duration < 15  # frames at 10 fps: about 1 s of the 6
    clip = sample_clip(path, SPEC, fps=10, max_frames=5)
    assert clip.decoded == 60 and len(clip.frame_numbers) == 5 and clip.frame_numbers[0] == 0
    gaps = np.diff(clip.times)
    assert gaps.max() - gaps.min() <= 0.81  # within one step of the grid it ended on (0.8 s)
    assert clip.times[-1] >= 4.0


def test_spread_picks_the_frames_nearest_an_even_spacing():
    assert spread([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 5, 10) == [0, 2, 4, 6, 8]
    assert spread([0.0, 0.1, 5.0, 5.1], 2, 6) == [0, 2]
    assert spread([0.0, 0.1, 0.2], 3, 30) == [0, 1, 2]  # never an index twice


def test_mjpeg_avi_whose_first_frame_is_yuvj422p(tmp_path):
    """Bushnell's AVIs: MJPEG whose first frame is 4:2:2 and the rest 4:2:0 (MegaDetector's OpenCV fails on them)."""
    frames, path = burst(10), tmp_path / "bushnell.avi"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=5)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuvj420p"
        first = av.CodecContext.create("mjpeg", "w")
        first.width, first.height, first.pix_fmt, first.time_base = *SIZE, "yuvj422p", fractions.Fraction(1, 5)
        for packet in first.encode(av.VideoFrame.from_image(frames[0]).reformat(format="yuvj422p")):
            packet.stream, packet.pts, packet.dts = stream, 0, 0
            out.mux(packet)
        for i in range(1, 10):
            frame = av.VideoFrame.from_image(frames[i])
            frame.pts, frame.time_base = i, fractions.Fraction(1, 5)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    with av.open(str(path)) as container:
        formats = [f.format.name for f in container.decode(video=0)]
    assert formats == ["yuvj422p"] + ["yuvj420p"] * 9
    clip = sample_clip(path, SPEC, fps=5)
    assert clip.frame_numbers == tuple(range(10)) and clip.frame_rate == 5.0
    for i in (0, 1):
        assert np.abs(clip.inputs[i] - still_input(frames[i])).mean() < 0.05


def test_h264_with_an_audio_track(tmp_path):
    path = write_clip(tmp_path / "c.mp4", burst(30), audio=True)
    with av.open(str(path)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
    clip = sample_clip(path, SPEC)
    assert clip.frame_numbers == (0, 10, 20) and clip.times == (0.0, 1.0, 2.0) and clip.decoded == 30


def test_variable_frame_rate_samples_by_timestamp(tmp_path):
    times = [0.0, 0.2, 0.25, 1.1, 1.3, 2.0, 2.05, 3.5, 3.6, 4.4]
    path = write_clip(tmp_path / "vfr.mp4", burst(10), rate=30, times=times)
    clip = sample_clip(path, SPEC)
    assert clip.frame_numbers == (0, 3, 5, 7, 9)  # the first frame at or after 0, 1, 2, 3 and 4 s
    assert clip.times == pytest.approx((0.0, 1.1, 2.0, 3.5, 4.4))
    with av.open(str(path)) as container:
        assert clip.frame_rate == float(container.streams.video[0].average_rate)
    assert clip.duration == pytest.approx(4.4 + 1 / 30, abs=0.01)


def test_a_clip_whose_container_states_no_frame_rate(tmp_path):
    """Matroska without DefaultDuration: the rate comes from the timestamps, and the times are right."""
    path = write_clip(tmp_path / "c.mkv", burst(10), codec="mpeg4", rate=4)
    data = bytearray(path.read_bytes())
    at = data.index(b"\x23\xe3\x83")  # DefaultDuration: ID, 1-byte size, value
    length = 4 + (data[at + 3] & 0x7F)
    data[at:at + length] = bytes([0xEC, 0x80 | (length - 2)]) + bytes(length - 2)  # a Void element of equal size
    path.write_bytes(data)
    clip = sample_clip(path, SPEC)
    assert clip.frame_rate == 4.0 and clip.frame_numbers == (0, 4, 8) and clip.times == (0.0, 1.0, 2.0)
    assert clip.duration == 2.5


def test_display_rotation_is_applied(tmp_path):
    img, path = burst(1)[0], tmp_path / "portrait.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=5, options={"crf": "5"})
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        if not hasattr(stream, "set_display_rotation"):
            pytest.skip(f"PyAV {av.__version__} cannot write a display matrix (18 can)")
        stream.set_display_rotation(90)
        out.mux(stream.encode(av.VideoFrame.from_image(img)))
        out.mux(stream.encode())
    clip = sample_clip(path, SPEC)
    upright = still_input(img.transpose(Image.Transpose.ROTATE_90))  # the display matrix: 90 degrees anticlockwise
    assert np.abs(clip.inputs[0] - upright).mean() < 0.05 < np.abs(clip.inputs[0] - still_input(img)).mean()


# --- capture time ---------------------------------------------------------------------------------------------


def test_capture_time_from_mp4_creation_time(tmp_path):
    path = write_clip(tmp_path / "c.mp4", burst(3), metadata={"creation_time": "2021-04-11T20:43:09Z"})
    clip = sample_clip(path, SPEC)
    assert (clip.captured, clip.captured_from) == ("2021-04-11T20:43:09", "creation_time")
    unset = write_clip(tmp_path / "unset.mp4", burst(3), metadata={"creation_time": "1970-01-01T00:00:00Z"})
    assert sample_clip(unset, SPEC).captured is None
    assert sample_clip(write_clip(tmp_path / "none.mov", burst(3)), SPEC).captured is None


def test_capture_time_from_avi_idit_and_icrd(tmp_path):
    icrd = write_clip(tmp_path / "icrd.avi", burst(3), codec="mpeg4", metadata={"ICRD": "2021-04-11 20:43:09"})
    assert sample_clip(icrd, SPEC).captured == "2021-04-11T20:43:09"
    assert sample_clip(icrd, SPEC).captured_from == "ICRD"
    date_only = write_clip(tmp_path / "date.avi", burst(3), codec="mpeg4", metadata={"ICRD": "2021-04-11"})
    assert sample_clip(date_only, SPEC).captured is None  # a day is not a time to place a clip by
    # IDIT, as cameras write it ("Sun Apr 11 20:43:09 2021"), into the JUNK padding FFmpeg's muxer leaves
    idit = tmp_path / "idit.avi"
    data = bytearray(date_only.read_bytes())
    junk = data.index(b"JUNK", data.index(b"INFO"))
    size = struct.unpack_from("<I", data, junk + 4)[0]
    text = b"Sun Apr 11 20:43:09 2021\n\x00"
    chunk = b"IDIT" + struct.pack("<I", len(text)) + text
    data[junk:junk + 8 + size] = chunk + b"JUNK" + struct.pack("<I", size - len(chunk)) + bytes(size - len(chunk))
    idit.write_bytes(data)
    clip = sample_clip(idit, SPEC)
    assert (clip.captured, clip.captured_from) == ("2021-04-11T20:43:09", "IDIT")


def test_capture_time_from_asf_creation_date(tmp_path):
    path = write_clip(tmp_path / "c.wmv", burst(3), codec="msmpeg4", metadata={"creation_time": "2021-04-11T20:43:09Z"})
    clip = sample_clip(path, SPEC)
    assert (clip.captured, clip.captured_from) == ("2021-04-11T20:43:09", "CreationDate")
    with av.open(str(ASF)) as container:  # zamba's: the 1970 epoch, a clock never set
        assert capture_time(container, ASF) == (None, "")


def test_parse_stamp():
    assert parse_stamp("2021-04-11T20:43:09.000000Z") == "2021-04-11T20:43:09"
    assert parse_stamp("2021:04:11 20:43:09") == "2021-04-11T20:43:09"
    assert parse_stamp("2021-04-11T22:43:09+0200", keep_offset=True) == "2021-04-11T22:43:09+02:00"
    assert parse_stamp("2021-04-11T22:43:09+0200") == "2021-04-11T22:43:09"
    for unset in ("0000-00-00 00:00:00", "1904-01-01T00:00:00.000000Z", "1970-01-01T00:00:00Z", "2021-04-11",
                  "", None, "2021-13-01 00:00:00"):
        assert parse_stamp(unset) is None


# --- broken clips: an error with the reason, never a crash ------------------------------------------------------


def test_a_truncated_mp4_without_its_index(tmp_path):
    whole = write_clip(tmp_path / "whole.mp4", burst(20))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    assert reason(cut) == "truncated or corrupt video: Invalid data found when processing input (moov atom not found)"


def test_a_clip_cut_inside_its_first_frame(tmp_path):
    whole = write_clip(tmp_path / "whole.mp4", burst(10), options={"movflags": "faststart"})
    data = whole.read_bytes()
    first = data.index(b"mdat") + 4  # the index is at the front; the first frame follows mdat
    for n, cut in enumerate((first + 8, first + 200)):
        path = tmp_path / f"cut{n}.mp4"
        path.write_bytes(data[:cut])
        assert reason(path).startswith("truncated or corrupt video: ")
    # the same through the worker processes: a reason, and the parent goes on
    with ClipDecoder(SPEC, workers=1) as decoder:
        results = dict(decoder.decode([tmp_path / "cut1.mp4", whole]))
    assert results[tmp_path / "cut1.mp4"].startswith("truncated or corrupt video: ")
    assert isinstance(results[whole], SampledClip)


def test_a_faststart_mp4_cut_short_is_refused_not_half_read(tmp_path):
    """An MP4 whose index comes first, cut (or still being copied): its index names bytes past the end."""
    whole = write_clip(tmp_path / "whole.mp4", burst(10), options={"movflags": "faststart"})
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size - 500])
    assert reason(cut).startswith("truncated or corrupt video: the index lists frames up to byte ")


@pytest.mark.parametrize(("content", "expected"), [
    (b"", "empty file (0 bytes)"),
    (b"not a video at all, just text\n" * 50, "truncated or corrupt video: Invalid data found when processing input"),
])
def test_files_that_are_not_clips(tmp_path, content, expected):
    path = tmp_path / "c.mp4"
    path.write_bytes(content)
    assert reason(path).startswith(expected)


def test_an_audio_only_file(tmp_path):
    path = tmp_path / "sound.mp4"
    with av.open(str(path), "w") as out:
        sound = out.add_stream("aac", rate=16000)
        for i in range(5):
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 16000, i * 1024
            out.mux(sound.encode(chunk))
        out.mux(sound.encode())
    assert reason(path) == "no video stream: streams: audio"


def test_formats_outside_the_video_demuxers_are_refused(tmp_path):
    """A JPEG named .mp4 is opened by FFmpeg's image demuxer unless told otherwise (so would a playlist)."""
    path = tmp_path / "frame.mp4"
    shutil.copyfile(sorted(BURST.glob("*.JPG"))[0], path)
    assert reason(path).startswith("not a video format trapcls reads (MP4, MOV, AVI, ASF/WMV, MKV)")


def test_an_unknown_codec(tmp_path):
    path = write_clip(tmp_path / "c.avi", burst(3), codec="mpeg4")
    path.write_bytes(path.read_bytes().replace(b"FMP4", b"ZZZZ"))
    assert reason(path) == "unsupported video codec: FFmpeg has no decoder for it"


def test_missing_and_folder(tmp_path):
    assert reason(tmp_path / "gone.mp4") == "cannot read file: No such file or directory"
    (tmp_path / "dir.mp4").mkdir()
    assert reason(tmp_path / "dir.mp4") == "not a regular file"


def test_a_name_that_is_not_utf8(tmp_path):
    name = os.fsdecode(b"caf\xe9.mp4")
    path = shutil.copyfile(MP4, tmp_path / name)
    assert sample_clip(path, SPEC).decoded == 31


# --- worker processes ---------------------------------------------------------------------------------------------


def flaky_decode(path, spec, **kwargs):
    """A decoder for the tests: segfaults on clips named crash*, hangs on hang*, else decodes (a worker entry)."""
    if Path(path).name.startswith("crash"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if Path(path).name.startswith("hang"):
        time.sleep(3600)
    return sample_clip(path, spec, **kwargs)


def gone(pids: list[int], within: float = 5.0) -> bool:
    """Whether none of `pids` is a live process (a zombie, dead but unreaped, counts as gone) within `within` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_crashing_and_a_hanging_decoder_cost_one_clip_each(tmp_path):
    clips = [shutil.copyfile(src, tmp_path / name) for src, name in
             ((AVI, "a.avi"), (MP4, "crash.mp4"), (MP4, "b.mp4"), (AVI, "hang.avi"), (ASF, "c.asf"))]
    with ClipDecoder(SPEC, workers=1, timeout=1.0, decode_clip=flaky_decode) as decoder:
        results, pids = {}, set()
        for path, outcome in decoder.decode(clips):
            results[path.name] = outcome
            pids.update(decoder.pids())
    assert results["crash.mp4"] == "decoder crashed (signal 11)"
    assert results["hang.avi"] == "decoding took longer than 1 s"
    assert [results[n].decoded for n in ("a.avi", "b.mp4", "c.asf")] == [15, 31, 61]
    assert len(pids) == 3  # the first worker, its replacement after the crash, and the next after the hang
    assert gone(sorted(pids))
    assert not multiprocessing.active_children() or all(
        p.name != "trapcls-clip-decoder" for p in multiprocessing.active_children())


def slow_decode(path, spec, *, started, **kwargs):
    """A decoder for the tests that states the duration its name gives (slow-60.avi: 60 s, slow-none.avi: none),
    then takes 2 s before decoding (a worker entry)."""
    stated = Path(path).stem.split("-")[1]
    started(None if stated == "none" else float(stated))
    time.sleep(2.0)
    return sample_clip(path, spec, **kwargs)


@pytest.mark.slow
def test_the_time_limit_grows_with_the_duration_the_clip_states(tmp_path):
    """A 1 s limit, 2 s of work: a clip that states 60 s may take 1 + 2 x 60 s; one that states nothing may not."""
    clips = [shutil.copyfile(AVI, tmp_path / name) for name in ("slow-60.avi", "slow-none.avi")]
    with ClipDecoder(SPEC, workers=2, timeout=1.0, decode_clip=slow_decode) as decoder:
        results = {path.name: outcome for path, outcome in decoder.decode(clips)}
    assert results["slow-60.avi"].decoded == 15
    assert results["slow-none.avi"] == "decoding took longer than 1 s"


def test_workers_stop_when_the_caller_raises(tmp_path):
    hang = shutil.copyfile(AVI, tmp_path / "hang.avi")
    clips = [AVI, hang, MP4]
    with pytest.raises(RuntimeError), ClipDecoder(SPEC, workers=2, decode_clip=flaky_decode) as decoder:
        for _ in decoder.decode(clips):
            pids = decoder.pids()
            raise RuntimeError("the caller failed")
    assert len(pids) == 2 and gone(pids)


CHILD = """
import signal, sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_video_decode import SPEC, flaky_decode
from trapcls.predict.clip_workers import ClipDecoder

if __name__ == "__main__":
    # Ctrl-C as a terminal gives it: a suite started in the background (nohup, `cmd &`) runs with SIGINT ignored,
    # and a child inherits that, so Python would install no KeyboardInterrupt (the other Ctrl-C tests do the same).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with ClipDecoder(SPEC, workers=2, decode_clip=flaky_decode, timeout=600) as decoder:
        for path, outcome in decoder.decode([Path(p) for p in sys.argv[1:]]):
            print("decoded", path.name, " ".join(map(str, decoder.pids())), flush=True)
"""


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_no_worker_outlives_a_run_stopped_by_ctrl_c_or_killed(tmp_path, how):
    """A real run: two workers, one hanging; Ctrl-C stops it cleanly, SIGKILL leaves no worker behind either."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(CHILD.format(tests=str(REPO / "tests"))))
    hang = shutil.copyfile(AVI, tmp_path / "hang.avi")
    proc = subprocess.Popen([sys.executable, str(script), str(MP4), str(hang), str(ASF)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True)
    line = proc.stdout.readline()  # one clip done: both workers are up, one stuck on hang.avi
    assert line.startswith("decoded"), proc.stderr.read()
    pids = [int(p) for p in line.split()[2:]]
    assert len(pids) == 2
    server = int(Path(f"/proc/{pids[0]}/stat").read_text().rsplit(")", 1)[1].split()[2])  # their fork server
    if how == signal.SIGINT:
        os.killpg(proc.pid, how)  # as a terminal's Ctrl-C does: to the run and its workers alike
    else:
        proc.kill()  # the run alone: its workers get no chance to be told
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -how, err
    if how == signal.SIGINT:
        assert "KeyboardInterrupt" in err
    assert gone([*pids, server], within=10)
