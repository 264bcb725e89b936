"""Decoding and resizing: the one code path shared by prepare, features, export and inference."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.core.errors import AiicError

LABELS = ("ai", "real")  # index = class id: the model's score is P(real)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
# Pillow's modes of one-channel images with more than 8 bits per sample, and their full scale;
# Pillow's own convert("RGB") clips them at 255 instead of scaling them.
WIDE_GREY_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535}


class UnreadableImage(AiicError, ValueError):
    """An image that cannot be used; `reason` is a short machine-readable word."""

    def __init__(self, source: object, reason: str, detail: str) -> None:
        super().__init__(f"{source}: {reason} ({detail})")
        self.reason = reason


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with 8 bits per channel; 16-bit greys are scaled to 0..255, never clipped."""
    full_scale = WIDE_GREY_MODES.get(image.mode)
    if full_scale is None:
        return image.convert("RGB")
    samples = np.asarray(image, dtype=np.float64)
    grey = np.clip(np.rint(samples * (255 / full_scale)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def folder_source(label_dir: Path, path: Path) -> str:
    """The source an image came from: the folder under real/ or ai/ that holds it
    (`ai/sd14/x.png` -> sd14), or "" for an image directly in real/ or ai/."""
    parts = path.relative_to(label_dir).parts
    return parts[0] if len(parts) > 1 else ""


def decode(source: Path | str | bytes) -> Image.Image:
    """Fully decode an image: EXIF orientation applied, RGB, Pillow's decompression-bomb limit.

    UnreadableImage's reasons are the project's one vocabulary for unusable images, shared by
    the scrape, prepare and predict: empty, not_an_image, truncated, corrupt, bomb, missing.
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        if (len(source) if isinstance(source, bytes) else Path(source).stat().st_size) == 0:
            raise UnreadableImage(name, "empty", "zero bytes")
    except FileNotFoundError as error:
        raise UnreadableImage(name, "missing", str(error)) from error
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice its limit; we refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                image.load()
                return to_rgb(ImageOps.exif_transpose(image))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UnreadableImage(name, "bomb", str(error)) from error
    except UnidentifiedImageError as error:
        raise UnreadableImage(name, "not_an_image", str(error)) from error
    except FileNotFoundError as error:
        raise UnreadableImage(name, "missing", str(error)) from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        reason = "truncated" if "truncated" in str(error).lower() else "corrupt"
        raise UnreadableImage(name, reason, str(error)) from error


def pixel_count(data: bytes) -> int:
    """Width x height as the image's header declares them, read without decoding its pixels: what
    decoding it will cost. 0 where Pillow cannot read a header (a bomb beyond twice Pillow's
    limit included): decode() then refuses it, and names why, just as cheaply."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return image.width * image.height
    except Exception:  # whatever stops Pillow here stops decode() too, which reports it
        return 0


class TooSmall(ValueError):
    """An image smaller than an input mode can use."""


def resize(image: Image.Image, size: int) -> np.ndarray:
    """The model input: a size x size x 3 uint8 array (0..255); each backbone preprocesses it."""
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def center_crop(image: Image.Image, size: int) -> np.ndarray:
    """The central size x size pixels at native resolution: nothing resampled."""
    if min(image.size) < size:
        raise TooSmall(f"{image.size} is under the {size} px crop")
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def resize_crop(image: Image.Image, size: int) -> np.ndarray:
    """The largest central square, resized (bicubic) to size x size: CLIP's own preprocessing
    (resize the shorter side, crop the centre), aspect ratio kept."""
    fitted = ImageOps.fit(image, (size, size), Image.Resampling.BICUBIC)
    return np.asarray(fitted, dtype=np.uint8)


Box = tuple[float, float, float, float]  # left, top, right, bottom, in the image's pixels


def whole_image(width: int, height: int, size: int) -> Box:
    return (0.0, 0.0, float(width), float(height))


def central_pixels(width: int, height: int, size: int) -> Box:
    """center_crop's box (its integer offsets)."""
    left, top = (width - size) // 2, (height - size) // 2
    return (float(left), float(top), float(left + size), float(top + size))


def central_square(width: int, height: int, size: int) -> Box:
    """resize_crop's box: ImageOps.fit's largest central square, at its fractional offsets."""
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return (left, top, left + side, top + side)


@dataclass(frozen=True)
class InputMode:
    """How a decoded image becomes a backbone's input_size x input_size input (`shape`, which
    raises TooSmall for an image too small for it), that in words for model.json, and which part
    of the image the input shows (`region`: (width, height, input_size) -> its box), so that
    anything drawn over the input (an explanation map) lands on the right pixels."""

    shape: Callable[[Image.Image, int], np.ndarray]
    description: str
    region: Callable[[int, int, int], Box]


# A backbone's extractor names its mode (pipeline.models.backbones); a new mode is one entry here.
DECODED = "Pillow decode, EXIF orientation applied, RGB"
INPUT_MODES = {
    "resize": InputMode(
        resize,
        f"{DECODED}, bilinear resize to input_size x input_size; the backbone's own "
        "preprocess_input is inside the model",
        whole_image,
    ),
    "center_crop": InputMode(
        center_crop,
        f"{DECODED}, central input_size x input_size crop at native resolution (nothing "
        "resampled; smaller images are refused)",
        central_pixels,
    ),
    "resize_crop": InputMode(
        resize_crop,
        f"{DECODED}, largest central square bicubic-resized to input_size x input_size (CLIP's "
        "own); CLIP's normalisation is inside the model",
        central_square,
    ),
}


def shape_for_model(
    image: Image.Image, size: int, mode: str = "resize", name: str = "", min_size: int = 0
) -> np.ndarray:
    """A decoded image as a backbone's input, by the input mode `mode` (INPUT_MODES). An image
    whose shorter side is under `min_size` (prepare's data.min_size, recorded in model.json), or
    too small for the mode, is refused as prepare refuses a small image, with the same reason."""
    if min(image.size) < min_size:
        raise UnreadableImage(name, "too_small", f"{image.size} is under the {min_size} px minimum")
    try:
        return INPUT_MODES[mode].shape(image, size)
    except TooSmall as error:
        raise UnreadableImage(name, "too_small", str(error)) from error


def load_for_model(
    source: Path | str | bytes, size: int, mode: str = "resize", min_size: int = 0
) -> np.ndarray:
    """Decode and shape one image for a backbone."""
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    return shape_for_model(decode(source), size, mode, name, min_size)


def load_many(
    paths: list[str], size: int, mode: str = "resize", min_size: int = 0
) -> tuple[np.ndarray, list[str], list[str]]:
    """Decode and shape `paths` for a backbone, in order: (uint8 images, each image's skip reason
    ("" for a good image), the skip messages). An image that cannot be used, or one under
    `min_size` pixels (reason too_small), gives a black frame and its reason instead of stopping
    the run. The decoding processes of pipeline.models.runtime run this; it imports nothing
    heavier."""
    images, reasons, skipped = [], [], []
    for path in paths:
        try:
            images.append(load_for_model(path, size, mode, min_size))
            reasons.append("")
        except UnreadableImage as error:
            images.append(np.zeros((size, size, 3), np.uint8))
            reasons.append(error.reason)
            skipped.append(str(error))
    return np.stack(images) if images else np.empty((0, size, size, 3), np.uint8), reasons, skipped
