"""Decoding and resizing: the one code path shared by prepare, features, export and inference."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.errors import AiicError

LABELS = ("ai", "real")  # index = class id: the model's score is P(real)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


class UnreadableImage(AiicError, ValueError):
    """An image that cannot be used; `reason` is a short machine-readable word."""

    def __init__(self, source: object, reason: str, detail: str) -> None:
        super().__init__(f"{source}: {reason} ({detail})")
        self.reason = reason


def folder_source(label_dir: Path, path: Path) -> str:
    """The source an image came from: the folder under real/ or ai/ that holds it
    (`ai/sd14/x.png` -> sd14), or "" for an image directly in real/ or ai/."""
    parts = path.relative_to(label_dir).parts
    return parts[0] if len(parts) > 1 else ""


def decode(source: Path | str | bytes) -> Image.Image:
    """Fully decode an image: EXIF orientation applied, RGB, Pillow's decompression-bomb limit."""
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice its limit; we refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                image.load()
                return ImageOps.exif_transpose(image).convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UnreadableImage(name, "bomb", str(error)) from error
    except UnidentifiedImageError as error:
        raise UnreadableImage(name, "not_an_image", str(error)) from error
    except FileNotFoundError as error:
        raise UnreadableImage(name, "missing", str(error)) from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        reason = "truncated" if "truncated" in str(error).lower() else "corrupt"
        raise UnreadableImage(name, reason, str(error)) from error


def resize(image: Image.Image, size: int) -> np.ndarray:
    """The model input: a size x size x 3 uint8 array (0..255); each backbone preprocesses it."""
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def center_crop(image: Image.Image, size: int) -> np.ndarray:
    """The central size x size pixels at native resolution: nothing resampled."""
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def shape_for_model(
    image: Image.Image, size: int, mode: str = "resize", name: str = ""
) -> np.ndarray:
    """A decoded image as a backbone's input; `mode` is resize or center_crop."""
    if mode == "resize":
        return resize(image, size)
    if min(image.size) < size:
        raise UnreadableImage(name, "too_small", f"{image.size} is under the {size} px crop")
    return center_crop(image, size)


def load_for_model(source: Path | str | bytes, size: int, mode: str = "resize") -> np.ndarray:
    """Decode and shape one image for a backbone."""
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    return shape_for_model(decode(source), size, mode, name)
