"""An explanation map drawn over its image, with a colour scale that says which way is "more
real" and which "more AI-generated" (matplotlib, headless; Pillow for the image): for the app,
`aiic predict --explain`, `aiic serve` and the explain stage's gallery."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure  # no pyplot: no display, no global figure state
from matplotlib.patches import Rectangle
from PIL import Image

from pipeline.data.images import Box

COLOURS = "RdBu"  # low (red): towards AI-generated; high (blue): towards real
STRONGEST = 0.7  # opacity of the colour over the cells that move the p-score most
# The colour scale reaches at least this change of the p-score: a map whose largest change is
# smaller is drawn faint, as it is, not stretched into full colour.
SMALLEST_SCALE = 0.05
FLAT = 0.01  # a map whose largest change is under this says so in words: no colour is no finding
LARGEST_SIDE = 384  # px: the image is drawn at most this large


def draw_map(image: Image.Image, heat: np.ndarray, region: Box, title: str = "") -> Figure:
    """`heat` (P(real) minus P(real) with the cell covered, rows top to bottom) over the part of
    `image` that the model's input shows (`region`, pipeline.data.images.INPUT_MODES), outlined
    where that is not the whole image; each cell's colour says which way it pushes the p-score and
    its opacity how far."""
    scale = min(1.0, LARGEST_SIDE / max(image.size))
    shown = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    left, top, right, bottom = (value * scale for value in region)
    limit = max(float(np.abs(heat).max()), SMALLEST_SCALE)
    norm = Normalize(-limit, limit)
    colours = colormaps[COLOURS](norm(heat))
    colours[..., 3] = STRONGEST * np.abs(heat) / limit
    width = 4.5
    figure = Figure(figsize=(width, width * shown.height / shown.width + 1.2), layout="constrained")
    axes = figure.subplots()
    # the image in grey, so that every colour is the map's
    whole = (0, shown.width, shown.height, 0)  # pixel edges, as the region's box counts them
    axes.imshow(shown.convert("L"), cmap="gray", vmin=0, vmax=255, extent=whole)
    axes.imshow(colours, extent=(left, right, bottom, top), interpolation="nearest")
    notes = []
    if float(np.abs(heat).max()) < FLAT:
        notes.append(f"no part alone moves the p-score by {FLAT} or more")
    if (left, top, right, bottom) != (0, 0, shown.width, shown.height):
        notes.append("the model sees only the outlined part")
        for colour, style in (("white", "-"), ("black", "--")):  # seen on light and dark images
            axes.add_patch(
                Rectangle(
                    (left, top),
                    right - left,
                    bottom - top,
                    fill=False,
                    edgecolor=colour,
                    linestyle=style,
                    linewidth=1.5,
                )
            )
    axes.set_xlabel("\n".join(notes), fontsize="small")
    axes.set_xlim(0, shown.width)
    axes.set_ylim(shown.height, 0)
    axes.set_xticks([])
    axes.set_yticks([])
    if title:
        axes.set_title(title, fontsize="medium")
    bar = figure.colorbar(
        ScalarMappable(norm, colormaps[COLOURS]), ax=axes, orientation="horizontal", shrink=0.9
    )
    bar.set_ticks([-limit, 0, limit])
    bar.set_ticklabels([f"{-limit:+.2f}\nmore AI-generated", "0", f"{limit:+.2f}\nmore real"])
    bar.set_label("change of the p-score that the region causes", fontsize="small")
    return figure


def map_png(image: Image.Image, heat: np.ndarray, region: Box, title: str = "") -> bytes:
    buffer = io.BytesIO()
    draw_map(image, heat, region, title).savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def save_map(
    path: Path, image: Image.Image, heat: np.ndarray, region: Box, title: str = ""
) -> None:
    path.write_bytes(map_png(image, heat, region, title))
