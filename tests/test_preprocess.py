"""The one preprocessing definition: exact geometry on synthetic images, decoding of odd inputs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import DEMO, make_bad_inputs, noise_image
from trapcls.exceptions import BundleError, ImageReadError
from trapcls.preprocess import PreprocessSpec, load_image, preprocess

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


def test_spec_round_trips_and_rejects_unknown_policies():
    assert PreprocessSpec.from_dict(SPEC.to_dict()) == SPEC
    with pytest.raises(BundleError, match="resize policy"):
        PreprocessSpec.from_dict({**SPEC.to_dict(), "resize": "center_crop"})
    with pytest.raises(BundleError, match="malformed"):
        PreprocessSpec.from_dict({"height": 10})


def test_training_eval_transform_equals_inference_preprocessing_on_real_frames():
    from trapcls.training.data import load_samples
    from trapcls.training.loop import _ImageDataset

    samples = load_samples(DEMO / "train")[:6]
    spec = PreprocessSpec(height=96, width=128, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    dataset = _ImageDataset(samples, {s.label: 0 for s in samples}, spec, augment=False)
    for i, sample in enumerate(samples):
        tensor, _ = dataset[i]
        np.testing.assert_array_equal(tensor.numpy(), preprocess(sample.path, spec))
