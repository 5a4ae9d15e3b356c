"""Decoding one video clip into model input: frames sampled by time, in one sequential pass, never the whole clip.

PyAV decodes: a maintained binding whose wheels bring their own FFmpeg, so a clip decodes the same on every
machine with no system FFmpeg to match (zamba needs one of a given version; OpenCV, which MegaDetector uses,
cannot be told which demuxers to trust nor gives each frame's timestamp). Each sampled frame becomes model
input through the still-frame geometry (`preprocess.resize`, then `preprocess.to_array`): a clip's frame and
a still of the same scene are the same input.

One sequential pass, no seeking (seeking inside clips is what made AddaxAI spend most of a run on blank
clips). Every packet is read, but only the groups of pictures that hold a sampled frame are decoded
(`_Gate`), and only the sampled frames are converted to RGB. Times come from the container's timestamps
(pts x time_base), never from index / rate, so variable frame rates and clips whose container states no
rate sample the right moments. A clip that crashes FFmpeg itself is the caller's to contain:
`trapcls.predict.clip_workers` runs this in worker processes.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from trapcls.core.frames.clip_time import capture_time
from trapcls.core.frames.preprocess import DECODE_BUDGET, PreprocessSpec, decode_bytes, resize, to_array
from trapcls.core.system.exceptions import ImageReadError
from trapcls.core.system.names import display

log = logging.getLogger(__name__)

DEFAULT_FPS = 1.0
# The demuxers for those suffixes, and nothing else: a file named .mp4 that is really an HLS playlist or
# an FFmpeg concat list would make FFmpeg open the files or URLs it names. Only local files are opened.
_OPEN_OPTIONS = {"format_whitelist": "mov,mp4,m4a,3gp,3g2,mj2,avi,asf,matroska,webm", "protocol_whitelist": "file"}
# Timestamps closer than this are the same moment (a 1 s grid against pts x time_base in float).
_EPS = 1e-6
# Packets held back undecoded while waiting for the next sampled moment: past this, they are decoded instead
# (a clip with a single keyframe would otherwise be held whole).
HOLD_BYTES = 32 * 2**20
_logs_routed = False


@dataclass(frozen=True)
class SampledClip:
    """A clip's sampled frames as model input, where they are in the clip, and what the container says of it.

    `frame_numbers` count the clip's frames from 0 in presentation order (what decoding every frame would
    number them); `times` are seconds from the clip's first frame, from the container's timestamps (with a
    dropped or variable-rate frame the two disagree: `times` is the truth). `decoded` is the number of
    frames in the clip, counted from its packets. `duration` runs from the first frame to the end of the
    last; `frame_rate` is the stream's average rate, else measured from the timestamps, None when neither is
    known. `captured` is the capture time (ISO 8601 as `Row.captured`) and `captured_from` the tag it came
    from ("" when none).
    """

    inputs: np.ndarray  # float32, (n, 3, H, W)
    frame_numbers: tuple[int, ...]
    times: tuple[float, ...]
    frame_rate: float | None
    duration: float | None
    decoded: int
    captured: str | None = None
    captured_from: str = ""


def sample_clip(path: str | os.PathLike[str], spec: PreprocessSpec, *, fps: float = DEFAULT_FPS,
                max_frames: int | None = None, started: Callable[[float | None], None] | None = None) -> SampledClip:
    """Decode a clip once, front to back, keeping the first frame and then one frame each 1 / `fps` seconds.

    With `max_frames`, at most that many are kept, spread evenly over the whole clip (see `_Sampler`).
    `started`, when given, is called once the container is open with the duration it states (seconds,
    or None): a caller enforcing a time limit can scale it to the clip. Raises ImageReadError with the reason.
    """
    if not (math.isfinite(fps) and fps > 0) or (max_frames is not None and max_frames < 1):
        raise ValueError(f"fps must be positive and max_frames at least 1; got {fps}, {max_frames}")
    path = Path(path)
    _check_file(path)
    import av

    _route_ffmpeg_logs(av)
    try:
        with _open(av, path) as container:
            stream = _video_stream(container, path)
            _check_index(stream, path)
            estimate = _stated_duration(container, stream)
            if started is not None:
                started(estimate)
            captured, tag = capture_time(container, path)
            sampler = _Sampler(spec, fps=fps, max_frames=max_frames, estimate=estimate, rate=_stream_rate(stream))
            gate = _decode(container, stream, sampler, path)
            clip = sampler.clip(gate, captured, tag)
            log.debug("%s: %d of %d frames decoded, %d kept", display(str(path)), sampler.decoded, clip.decoded,
                      len(clip.frame_numbers))
            return clip
    except ImageReadError:
        raise
    except av.error.FFmpegError as exc:
        raise ImageReadError(_reason(exc), path, _detail(exc)) from exc
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise ImageReadError("cannot read file", path, exc.strerror or exc) from exc
    except (OSError, ValueError, EOFError) as exc:  # PyAV raises ValueError for a few broken streams
        raise ImageReadError("truncated or corrupt video", path, exc) from exc


def _check_file(path: Path) -> None:
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ImageReadError("cannot read file", path, exc.strerror or exc) from exc
    if not stat.S_ISREG(info.st_mode):
        raise ImageReadError("not a regular file", path)
    if info.st_size == 0:
        raise ImageReadError("empty file (0 bytes)", path)


def _route_ffmpeg_logs(av) -> None:
    # FFmpeg's own error lines ("moov atom not found") say more than its error codes; at ERROR level PyAV
    # keeps the last one on the exception it raises. They go there and nowhere else: not to stderr.
    global _logs_routed
    if not _logs_routed:
        av.logging.set_level(av.logging.ERROR)
        logging.getLogger("libav").propagate = False
        logging.getLogger("libav").addHandler(logging.NullHandler())
        _logs_routed = True


def _open(av, path: Path):
    try:
        return av.open(os.fspath(path), options=_OPEN_OPTIONS, metadata_errors="ignore")
    except av.error.ArgumentError as exc:  # EINVAL: a format FFmpeg knows but _OPEN_OPTIONS does not allow
        raise ImageReadError("not a video format trapcls reads (MP4, MOV, AVI, ASF/WMV, MKV)", path,
                             _detail(exc)) from exc


def _video_stream(container, path: Path):
    """The first video stream, threaded, or ImageReadError when there is none or it cannot be decoded."""
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        raise ImageReadError("no video stream", path, f"streams: {', '.join(kinds)}" if kinds else "no streams")
    stream = container.streams.video[0]
    if stream.codec_context is None:  # FFmpeg has no decoder for it (PyAV < 18.1 crashed on decoding such)
        raise ImageReadError("unsupported video codec", path, "FFmpeg has no decoder for it")
    width, height = stream.codec_context.width, stream.codec_context.height
    if decode_bytes("RGB", (width, height)) > DECODE_BUDGET or width * height > (Image.MAX_IMAGE_PIXELS or math.inf):
        raise ImageReadError("video frame too large", path, f"{width}x{height} pixels")
    # Slice threads, not frame threads: a frame thread returns each frame a few packets late, and every sampled
    # moment would cost those extra frames (on the 30 s 1080p clip of benchmarks/clip_throughput.py, 90 frames
    # decoded instead of 30, 1.7 s instead of 1.2 s).
    stream.thread_type = "SLICE"
    return stream


def _check_index(stream, path: Path) -> None:
    """ImageReadError when the container's index places frames past the end of the file: an MP4 written
    with its index first (faststart) and cut short, or still being copied, decodes its first frames and
    then stops without an error under frame threading."""
    size = path.stat().st_size
    end = max((entry.pos + entry.size for entry in stream.index_entries if entry.pos >= 0), default=0)
    if end > size:
        raise ImageReadError("truncated or corrupt video", path, f"the index lists frames up to byte {end} of a "
                             f"file of {size} bytes")


def _stated_duration(container, stream) -> float | None:
    """The duration the headers state (seconds), or None: an estimate, headers over-report."""
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / 1_000_000 if container.duration else None  # AV_TIME_BASE units


def _stream_rate(stream) -> float | None:
    rate = stream.average_rate
    return float(rate) if rate and math.isfinite(float(rate)) and float(rate) > 0 else None


def _decode(container, stream, sampler: _Sampler, path: Path) -> _Gate:
    """Read every packet; decode those the next sampled frame needs; convert to RGB only the frames kept."""
    import av

    gate = _Gate(stream.time_base)
    try:
        for packet in container.demux(stream):
            for ready in gate.admit(packet, sampler.target()):
                for frame in ready.decode():
                    if sampler.see(frame):
                        gate.hold()
    except av.error.FFmpegError as exc:
        if not sampler.kept:
            raise
        raise ImageReadError(_reason(exc), path, f"after {sampler.decoded} frames: {_detail(exc)}") from exc
    if not sampler.kept:
        raise ImageReadError("truncated or corrupt video", path, "no frame could be decoded")
    return gate


def _reason(exc: Exception) -> str:
    import av

    if isinstance(exc, av.error.DecoderNotFoundError):
        return "unsupported video codec"
    return "truncated or corrupt video"


def _detail(exc: Exception) -> str:
    """FFmpeg's error text and its last error line, without the path it was given."""
    text = getattr(exc, "strerror", None) or str(exc)
    logged = getattr(exc, "log", None)
    if logged and len(logged) == 3 and logged[2]:
        text += f" ({str(logged[2]).strip()})"
    return text


class _Gate:
    """Which packets reach the decoder: those of the groups of pictures that hold a sampled frame.

    Every packet is read in order (no seeking) and counted: the clip's frames, their numbers and its length
    come from the packets, as decoding them all would give. Once the sampler has kept a frame, packets are
    held back undecoded until one is at or after the next sampled moment; then the held ones go to the
    decoder, from the last packet it saw or from the latest keyframe at or before that moment, whichever is
    later: a group of pictures that starts before a later keyframe at or before the moment cannot hold the
    frame, and is dropped undecoded. A keyframe after the moment does not drop what is held (an open group's
    leading frames need the group before). At 1 frame a second and a keyframe a second, the decoder sees
    one frame in thirty. Held packets are compressed and at most HOLD_BYTES: past that they are decoded.
    """

    def __init__(self, time_base) -> None:
        self.tb = float(time_base) if time_base else None
        self.held: list = []
        self.held_bytes = 0
        self.holding = False
        self.stamps: list[int] = []  # every frame's pts, in decoding order
        self.last: tuple[int, int] | None = None  # the latest pts seen and its packet's duration

    def hold(self) -> None:
        """A frame was kept: hold packets back until the next sampled moment."""
        self.holding = True

    def admit(self, packet, target: float | None) -> list:
        """The packets to decode now (this one, those held, or none), given the next moment (absolute seconds)."""
        if packet.size == 0 and packet.pts is None:  # the empty packet demux ends with: flush the decoder
            self.held, self.held_bytes = [], 0
            return [packet]
        if packet.pts is not None and packet.size and not packet.is_discard:  # a frame the decoder will give
            self.stamps.append(packet.pts)
            if self.last is None or packet.pts > self.last[0]:  # the last frame shown, and for how long
                self.last = (packet.pts, max(packet.duration or 0, 0))
        if not self.holding or target is None or packet.pts is None or self.tb is None:
            return self._release(packet)
        t = packet.pts * self.tb
        if packet.is_keyframe and t <= target + _EPS:  # the group held so far cannot hold the frame
            self.held, self.held_bytes = [], 0
        if t + _EPS >= target:
            self.holding = False
            return self._release(packet)
        self.held.append(packet)
        self.held_bytes += packet.size
        return self._release(None) if self.held_bytes > HOLD_BYTES else []

    def _release(self, packet) -> list:
        out = self.held + ([packet] if packet is not None else [])
        self.held, self.held_bytes = [], 0
        return out


class _Sampler:
    """Which decoded frames to keep, and the model input made from them.

    Without `max_frames`: the first frame at or after each k / fps seconds (k = 0, 1, ...), so frame 0
    always, and never two frames for one moment. With `max_frames` N, the clip's length is known only
    at its end, so the grid starts at max(1 / fps, stated duration / 2N): a header that over-reports
    by up to 2x still yields N frames. Whenever 2N + 1 frames are held (the header under-reported, or
    stated nothing), every other one is dropped and the step doubled, so memory stays at most 2N + 1
    frames whatever the clip's length. At the end the N kept frames nearest to i x duration / N are
    chosen (`spread`): exactly even when the header was right, within a grid step otherwise.
    """

    def __init__(self, spec: PreprocessSpec, *, fps: float, max_frames: int | None, estimate: float | None,
                 rate: float | None) -> None:
        self.spec, self.max_frames, self.rate = spec, max_frames, rate
        self.step = 1.0 / fps
        if max_frames and estimate:
            self.step = max(self.step, estimate / (2 * max_frames))
        self.next = 0.0  # seconds from the first frame
        self.first: float | None = None  # the first frame's time in the stream
        self.decoded = 0  # frames actually decoded (fewer than the clip's when groups of pictures were skipped)
        # (pts, seconds from the first frame, how many frames were decoded before it, model input)
        self.kept: list[tuple[int | None, float, int, np.ndarray]] = []

    def target(self) -> float | None:
        """The next sampled moment in stream seconds; None until the first frame is known."""
        return None if self.first is None else self.first + self.next

    def see(self, frame) -> bool:
        """Look at one decoded frame (in presentation order); keep it if it is at or after the next moment."""
        self.decoded += 1
        stamp = frame.time
        if stamp is None:  # no timestamp (the gate then decodes every frame): place it by the stated rate
            stamp = (self.first or 0.0) + (self.decoded - 1) / (self.rate or 1.0)
        if self.first is None:
            self.first = stamp
        t = stamp - self.first
        if t + _EPS < self.next:
            return False
        self.kept.append((frame.pts, t, self.decoded - 1, self._input(frame)))
        self.next = (math.floor((t + _EPS) / self.step) + 1) * self.step
        if self.max_frames and len(self.kept) > 2 * self.max_frames:
            self.kept = self.kept[::2]
            self.step *= 2
            self.next = (math.floor((self.kept[-1][1] + _EPS) / self.step) + 1) * self.step
        return True

    def _input(self, frame) -> np.ndarray:
        # to_image reformats this frame alone, whatever its pixel format: an MJPEG clip whose first frame
        # is yuvj422p and the rest yuvj420p needs no more than that.
        img = frame.to_image()
        rotation = round((frame.rotation or 0) / 90) % 4  # the display matrix: turn counterclockwise to show
        if rotation:
            img = img.transpose((None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
                                 Image.Transpose.ROTATE_270)[rotation])
        return to_array(resize(img, self.spec), self.spec)

    def clip(self, gate: _Gate, captured: str | None, tag: str) -> SampledClip:
        """The kept frames (N of them evenly with `max_frames`) and what the packets say of the clip."""
        stamps = sorted(gate.stamps)
        frames = len(stamps) or self.decoded
        span = (stamps[-1] - stamps[0]) * gate.tb if len(stamps) > 1 and gate.tb else 0.0
        rate = self.rate or ((frames - 1) / span if span > 0 else None)
        if stamps and gate.tb and gate.last:
            duration = span + (gate.last[1] * gate.tb if gate.last[1] else (1.0 / rate if rate else 0.0))
        else:
            duration = self.kept[-1][1] + (1.0 / rate if rate else 0.0)
        kept = self.kept
        if self.max_frames and len(kept) > self.max_frames:
            kept = [kept[i] for i in spread([k[1] for k in kept], self.max_frames, duration)]
        # A frame's number: how many frames come before it in presentation order (without timestamps, how
        # many were decoded before it: the gate then decodes them all).
        numbers = [bisect.bisect_left(stamps, k[0]) if stamps and k[0] is not None else k[2] for k in kept]
        return SampledClip(inputs=np.stack([k[3] for k in kept]), frame_numbers=tuple(numbers),
                           times=tuple(k[1] for k in kept), frame_rate=rate, duration=duration, decoded=frames,
                           captured=captured, captured_from=tag)


def spread(times: list[float], count: int, duration: float) -> list[int]:
    """Indices of `count` of the increasing `times` nearest to i x duration / count (i = 0 .. count - 1), each
    index once: frames spread evenly over a clip, the first one first. Needs len(times) >= count."""
    chosen: list[int] = []
    for i in range(count):
        low, high = (chosen[-1] + 1 if chosen else 0), len(times) - (count - i)  # room for those after
        j = min(max(bisect.bisect_left(times, i * duration / count, low, high + 1), low), high)
        if j > low and abs(times[j - 1] - i * duration / count) <= abs(times[j] - i * duration / count):
            j -= 1
        chosen.append(j)
    return chosen
