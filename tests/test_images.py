import io

import numpy as np
import pytest
from PIL import Image

from pipeline.data.images import UnreadableImage, decode, load_for_model


def png_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, **kwargs)
    return buffer.getvalue()


def test_decodes_to_rgb_and_resizes():
    data = png_bytes(Image.new("L", (40, 30), 128), format="PNG")
    array = load_for_model(data, 32)
    assert array.shape == (32, 32, 3) and array.dtype == np.uint8
    assert (array == 128).all()


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    data = png_bytes(image, format="JPEG", exif=exif)
    assert decode(data).size == (20, 40)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"<html><body>Not found</body></html>", "not_an_image"),
        (png_bytes(Image.new("RGB", (64, 64), "blue"), format="JPEG")[:300], "truncated"),
    ],
)
def test_unusable_bytes_get_a_reason(data, reason):
    with pytest.raises(UnreadableImage) as error:
        decode(data)
    assert error.value.reason == reason


def test_decompression_bomb_is_refused(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(UnreadableImage) as error:
        decode(png_bytes(Image.new("RGB", (20, 20)), format="PNG"))
    assert error.value.reason == "bomb"


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(UnreadableImage) as error:
        decode(tmp_path / "nope.png")
    assert error.value.reason == "missing" and "nope.png" in str(error.value)


def test_center_crop_keeps_native_pixels_and_refuses_small_images():
    pixels = np.arange(40 * 50 * 3, dtype=np.uint32).reshape(40, 50, 3) % 251
    data = png_bytes(Image.fromarray(pixels.astype(np.uint8)), format="PNG")
    crop = load_for_model(data, 32, "center_crop")
    assert np.array_equal(crop, pixels[4:36, 9:41].astype(np.uint8))
    with pytest.raises(UnreadableImage) as error:
        load_for_model(data, 48, "center_crop")
    assert error.value.reason == "too_small"


def test_zero_bytes_are_empty(tmp_path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    for source in (b"", tmp_path / "zero.jpg"):
        with pytest.raises(UnreadableImage) as error:
            decode(source)
        assert error.value.reason == "empty"


def test_16_bit_grey_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 96 * 96).reshape(96, 96).astype(np.uint16)
    image = Image.fromarray(ramp)
    assert image.mode == "I;16"
    decoded = np.asarray(decode(png_bytes(image, format="PNG")))
    assert decoded.dtype == np.uint8 and decoded.shape == (96, 96, 3)
    expected = np.rint(ramp / 257).astype(np.uint8)
    assert np.abs(decoded[..., 0].astype(int) - expected).max() <= 1
    assert len(np.unique(decoded)) == 256 and (decoded == 255).mean() < 0.01


def test_resize_crop_keeps_the_aspect_ratio_and_takes_the_centre():
    """CLIP's preprocessing: the central square of a wide image, resized; a small image grows."""
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, 20:60] = 255  # the central 40 x 40 square is white, the sides black
    data = png_bytes(Image.fromarray(wide), format="PNG")
    crop = load_for_model(data, 20, "resize_crop")
    assert crop[2:-2, 2:-2].min() == 255 and crop.min() > 200  # bicubic: edges near, not 255
    assert load_for_model(data, 20, "resize").min() == 0  # a plain resize keeps the sides
    assert load_for_model(data, 64, "resize_crop").shape == (64, 64, 3)
