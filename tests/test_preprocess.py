"""The one preprocessing definition: exact geometry on synthetic images, decoding of odd inputs."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from helpers import DEMO, make_bad_inputs, noise_image
from trapcls.core.frames.preprocess import (
    PreprocessSpec,
    draft_size,
    load_frame,
    load_image,
    preprocess,
    resize,
    to_array,
)
from trapcls.core.system.exceptions import BundleError, ImageReadError

SPEC = PreprocessSpec(height=48, width=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))


def test_output_shape_and_dtype_follow_the_spec(tmp_path):
    path = tmp_path / "frame.jpg"
    noise_image((400, 300)).save(path)
    arr = preprocess(path, SPEC)
    assert arr.shape == (3, 48, 64) and arr.dtype == np.float32 and arr.flags["C_CONTIGUOUS"]


def test_normalisation_is_exact_per_channel(tmp_path):
    path = tmp_path / "flat.png"
    Image.new("RGB", (100, 50), (255, 0, 51)).save(path)
    arr = preprocess(path, SPEC)
    expected = [(1.0 - 0.5) / 0.25, (0.0 - 0.5) / 0.5, (0.2 - 0.5) / 1.0]
    for channel, value in enumerate(expected):
        np.testing.assert_allclose(arr[channel], value, atol=1e-6)


def test_whole_frame_is_squashed_not_centre_cropped(tmp_path):
    # A wide frame with a 10 %-wide red stripe at the left edge: a centre crop would drop it.
    img = Image.new("RGB", (1000, 300), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 100, 300))
    path = tmp_path / "stripe.png"
    img.save(path)
    arr = preprocess(path, PreprocessSpec(height=30, width=100, mean=(0, 0, 0), std=(1, 1, 1)))
    red = arr[0] > 0.5
    assert red[:, :9].all()          # the stripe keeps its 10 % of the width after a squash
    assert not red[:, 11:].any()
    assert arr.shape == (3, 30, 100)


def test_quadrants_keep_their_place(tmp_path):
    img = Image.new("RGB", (200, 100))
    for (x, y), color in {(0, 0): (255, 0, 0), (100, 0): (0, 255, 0), (0, 50): (0, 0, 255),
                          (100, 50): (255, 255, 255)}.items():
        img.paste(color, (x, y, x + 100, y + 50))
    path = tmp_path / "quads.png"
    img.save(path)
    arr = preprocess(path, PreprocessSpec(height=20, width=20, mean=(0, 0, 0), std=(1, 1, 1)))
    assert arr[:, 2, 2].round(3).tolist() == [1, 0, 0]
    assert arr[:, 2, 17].round(3).tolist() == [0, 1, 0]
    assert arr[:, 17, 2].round(3).tolist() == [0, 0, 1]
    assert arr[:, 17, 17].round(3).tolist() == [1, 1, 1]


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (200, 100), (10, 20, 30)).save(path, exif=exif.tobytes())
    assert load_image(path).size == (100, 200)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16"])
def test_odd_modes_become_8bit_rgb(tmp_path, mode):
    if mode == "I;16":
        img = Image.fromarray(np.full((40, 60), 65535, dtype=np.uint16))
        path = tmp_path / "sixteen.png"
    else:
        img = Image.new("RGB", (60, 40), (200, 100, 50)).convert(mode)
        path = tmp_path / ("cmyk.jpg" if mode == "CMYK" else f"{mode}.png")
    img.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (60, 40)
    if mode == "I;16":
        assert np.asarray(out).min() == 255  # full-scale 16-bit stays full-scale, not clipped garbage


def test_bad_files_raise_named_errors(tmp_path):
    bad = make_bad_inputs(tmp_path)
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        load_image(bad["truncated"])
    with pytest.raises(ImageReadError, match="empty file"):
        load_image(bad["empty"])
    with pytest.raises(ImageReadError, match="not a JPEG or PNG"):
        load_image(bad["text"])
    with pytest.raises(ImageReadError, match="cannot read file"):
        load_image(tmp_path / "missing.jpg")
    gif = tmp_path / "anim.jpg"
    Image.new("RGB", (10, 10)).save(gif, "GIF")  # a real image in a format we do not open
    with pytest.raises(ImageReadError, match="not a JPEG or PNG"):
        load_image(gif)
    assert load_image(bad["png"]).mode == "RGB"


def test_read_errors_name_the_file_in_the_message_and_never_in_the_reason(tmp_path):
    bad = make_bad_inputs(tmp_path / "cards" / "cam1")
    (tmp_path / "folder.jpg").mkdir()
    cases = {bad["truncated"]: "truncated or corrupt image: image file is truncated",
             bad["empty"]: "empty file (0 bytes)", bad["text"]: "not a JPEG or PNG image",
             tmp_path / "missing.jpg": "cannot read file: No such file or directory",
             tmp_path / "folder.jpg": "not a regular file"}
    for path, reason in cases.items():
        with pytest.raises(ImageReadError) as caught:
            load_image(path)
        # The message is for this machine's logs: it names the file. The reason goes into shared files (the CSV's
        # error cell, exports): no absolute path of this machine, not even the temporary folder's name.
        assert str(path) in str(caught.value) and caught.value.path == str(path)
        assert caught.value.reason.startswith(reason), caught.value.reason
        assert str(tmp_path) not in caught.value.reason and tmp_path.name not in caught.value.reason


def test_a_detail_quoting_the_path_names_the_file_only():
    error = ImageReadError("truncated or corrupt image", "/home/me/cards/cam1/IMG_1.jpg",
                           OSError(5, "Input/output error", "/home/me/cards/cam1/IMG_1.jpg"), captured="2024-05-01")
    assert str(error) == ("truncated or corrupt image: /home/me/cards/cam1/IMG_1.jpg: [Errno 5] Input/output error: "
                          "'/home/me/cards/cam1/IMG_1.jpg'")
    assert error.reason == "truncated or corrupt image: [Errno 5] Input/output error: 'IMG_1.jpg'"
    assert error.captured == "2024-05-01"


def test_spec_round_trips_and_rejects_unknown_policies():
    assert PreprocessSpec.from_dict(SPEC.to_dict()) == SPEC
    with pytest.raises(BundleError, match="resize policy"):
        PreprocessSpec.from_dict({**SPEC.to_dict(), "resize": "center_crop"})
    with pytest.raises(BundleError, match="malformed"):
        PreprocessSpec.from_dict({"height": 10})


def test_training_validation_tensors_equal_what_predict_feeds_the_model_on_real_frames(tiny_run):
    """The one preprocessing definition, checked where it is used: the tensors training validates on
    (ImageDataset through a DataLoader) and the batches predict's pipeline hands its backend are the
    same numbers for the same real frames (large JPEGs, so reduced-size decoding is in play), and both
    match torchvision's to_tensor + normalize of the decoded, resized frame: an independent reference,
    so a mistake the two paths share (channel order, mean/std, scaling) fails too."""
    import torch
    from torchvision.transforms import functional as tvf

    from trapcls.core.frames.discover import ImageFile
    from trapcls.core.frames.labels import load_samples
    from trapcls.core.model.bundle import load_bundle
    from trapcls.predict.backends import OnnxRuntimeBackend
    from trapcls.predict.runner import classify_batches
    from trapcls.training.dataset import ImageDataset

    bundle = load_bundle(tiny_run / "bundle")
    spec = bundle.preprocess
    samples = load_samples(DEMO / "train")[:6]
    assert all(load_image(s.path).width > 4 * spec.width for s in samples)  # draft decoding applies
    loader = torch.utils.data.DataLoader(ImageDataset(samples, {s.label: 0 for s in samples}, spec, augment=None),
                                         batch_size=4)
    validated = torch.cat([images for images, _ in loader]).numpy()

    class Recording(OnnxRuntimeBackend):
        """The real ONNX Runtime backend, keeping a copy of every batch it is given."""

        def logits(self, batch):
            fed.append(batch.copy())
            return super().logits(batch)

    fed: list[np.ndarray] = []
    files = [ImageFile(path=s.path, rel=s.path.name) for s in samples]
    results = [r for batch in classify_batches(files, bundle, Recording(bundle, threads=1), batch_size=4, workers=2)
               for r in batch]
    assert all(r.ok for r in results)
    np.testing.assert_array_equal(np.concatenate(fed), validated)
    reference = np.stack([tvf.normalize(tvf.to_tensor(resize(load_image(s.path, min_size=draft_size(spec)), spec)),
                                        list(spec.mean), list(spec.std)).numpy() for s in samples])
    np.testing.assert_allclose(validated, reference, rtol=0, atol=1e-5)


def _noise_jpeg(path, size, exif=None):
    noise_image(size).save(path, "JPEG", quality=85, **({"exif": exif.tobytes()} if exif else {}))
    return path


@pytest.mark.parametrize("size, expected", [((2000, 1500), (1000, 750)), ((900, 900), (450, 450)),
                                            ((800, 600), (800, 600)), ((4000, 3000), (1000, 750)),
                                            ((8000, 6000), (1000, 750))])
def test_reduced_decoding_never_goes_below_the_minimum(tmp_path, size, expected):
    path = _noise_jpeg(tmp_path / "big.jpg", size)
    assert load_image(path, min_size=(448, 448)).size == expected  # DCT scaling by 1/2, 1/4 or 1/8 at most
    assert load_image(path).size == size


def test_reduced_decoding_accounts_for_exif_rotation(tmp_path):
    # Stored 2400x1600 and rotated to 1600x2400 for display; the model wants 300 wide x 100 high.
    # Requesting the draft in stored orientation would decode 600x400 -> upright 400 wide, below 2x.
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _noise_jpeg(tmp_path / "rotated.jpg", (2400, 1600), exif)
    spec = PreprocessSpec(height=100, width=300, mean=(0, 0, 0), std=(1, 1, 1))
    upright = load_image(path, min_size=draft_size(spec)).size
    assert upright[0] >= 600 and upright[1] >= 200 and upright == (800, 1200)


def test_preprocess_uses_reduced_decoding_only_for_large_jpegs(tmp_path):
    spec = PreprocessSpec(height=32, width=32, mean=(0, 0, 0), std=(1, 1, 1))
    big = _noise_jpeg(tmp_path / "big.jpg", (640, 480))
    full = to_array(resize(load_image(big), spec), spec)
    assert load_image(big, min_size=draft_size(spec)).size == (160, 120)  # 1/4: 1/8 would give 60 < 64 rows
    assert not np.array_equal(preprocess(big, spec), full)
    png = tmp_path / "big.png"
    noise_image((640, 480)).save(png)
    np.testing.assert_array_equal(preprocess(png, spec), to_array(resize(load_image(png), spec), spec))


@pytest.mark.slow
def test_reduced_decoding_changes_probabilities_within_tolerance_on_real_frames(shared_data):
    """The stated tolerance (README): reduced-size decoding moves any class probability of the
    1000-class ImageNet EfficientNet-Lite0 by at most 0.05 on the real 2-3 MP ENA24 and CCT
    frames, and changes the top-1 class only where the full-decode top-2 margin is below 0.02."""
    import torch

    from helpers import LITE0_WEIGHTS
    from trapcls.core.model.build import create_model, preprocess_spec

    model = create_model("tf_efficientnet_lite0", 1000, weights=LITE0_WEIGHTS).eval()
    spec = preprocess_spec(model, 224)
    frames = sorted((shared_data / "ena24_small").glob("*.jpg")) + sorted((shared_data / "cct_sample").glob("*/*.jpg"))
    assert len(frames) == 81
    assert all(load_image(f, min_size=draft_size(spec)).size < load_image(f).size for f in frames[:5])
    full = np.stack([to_array(resize(load_image(f), spec), spec) for f in frames])
    reduced = np.stack([preprocess(f, spec) for f in frames])
    with torch.no_grad():
        p_full = torch.softmax(model(torch.from_numpy(full)).double(), 1).numpy()
        p_reduced = torch.softmax(model(torch.from_numpy(reduced)).double(), 1).numpy()
    assert np.abs(p_full - p_reduced).max() <= 0.05
    top2 = np.sort(p_full, axis=1)[:, -2:]
    flipped = p_full.argmax(1) != p_reduced.argmax(1)
    assert (top2[flipped, 1] - top2[flipped, 0] < 0.02).all()


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    # Above MAX_IMAGE_PIXELS Pillow only warns, above twice it raises: both must be errors.
    for side in (10_000, 14_000):
        path = tmp_path / f"bomb{side}.png"
        Image.new("1", (side, side)).save(path)
        assert path.stat().st_size < 200_000
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with pytest.raises(ImageReadError, match="decompression bomb"):
                load_image(path)


def test_fifo_and_folder_named_like_images_are_errors_not_hangs(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageReadError, match="not a regular file"):
        load_image(fifo)
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(ImageReadError, match="not a regular file"):
        load_image(tmp_path / "folder.jpg")


def _exif_jpeg(path, **tags):
    exif = Image.Exif()
    sub = exif.get_ifd(0x8769)
    for tag, value in tags.items():
        {"original": sub, "offset": sub, "plain": exif}[tag][
            {"original": 0x9003, "offset": 0x9011, "plain": 0x0132}[tag]] = value
    Image.new("RGB", (32, 32)).save(path, exif=exif.tobytes())
    return path


def test_capture_time_comes_from_exif(tmp_path):
    assert load_frame(_exif_jpeg(tmp_path / "a.jpg", original="2024:05:01 06:30:15")).captured == "2024-05-01T06:30:15"
    with_offset = _exif_jpeg(tmp_path / "b.jpg", original="2024:05:01 06:30:15", offset="+02:00")
    assert load_frame(with_offset).captured == "2024-05-01T06:30:15+02:00"
    assert load_frame(_exif_jpeg(tmp_path / "c.jpg", plain="2023:12:31 23:59:59")).captured == "2023-12-31T23:59:59"
    assert load_frame(_exif_jpeg(tmp_path / "d.jpg", original="0000:00:00 00:00:00")).captured is None
    assert load_frame(_exif_jpeg(tmp_path / "e.jpg")).captured is None
