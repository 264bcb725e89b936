"""Occlusion sensitivity: which parts of an image move a model's P(real), for any model.

A grid of `grid` x `grid` cells over the model's input: each cell is covered in turn (`fill`: the
image blurred at the scale of a cell, its mean colour, or mid grey), and the covered copies are
scored in batches by the model's own forward pass, after the uncovered image. A cell's value is
P(real) of the image minus P(real) with the cell covered: positive where the region pushes the
score towards "real" (covering it lowers P(real)), negative where it pushes it towards
"AI-generated". Forward passes only, no gradients: it works alike on every Keras backend, with the
LiteRT runtime and for every backbone (Zeiler & Fergus, ECCV 2014, "Visualizing and Understanding
Convolutional Networks": occlusion sensitivity).

The deletion check (Petsiuk et al., BMVC 2018, "RISE": the deletion metric): cover the cells one
after another, those that support the model's verdict most first, and follow the probability of
that verdict; a map that ranks the regions well makes it fall faster than covering them in a
random order does, so the area under its curve is smaller.

Plain functions over uint8 arrays and a scoring function (a batch in, P(real) per image out), so
that the app, `aiic predict`, `aiic serve` (through its micro-batcher) and the explain stage share
them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from pipeline.core.errors import ConfigError, ModelNotFound, not_one_of

GREY = 128
FILL_WORDS = {"blur": "blurred out", "mean": "painted its mean colour", "grey": "painted grey"}
FILLS = tuple(FILL_WORDS)

Score = Callable[[np.ndarray], np.ndarray]  # a uint8 batch in, P(real) per image out


@dataclass(frozen=True)
class Occlusion:
    """How a map is made: `grid` cells per side, each covered with `fill` (FILLS)."""

    grid: int
    fill: str

    def __post_init__(self) -> None:
        if self.fill not in FILLS:
            raise not_one_of("explain.fill", self.fill, FILLS)
        if not isinstance(self.grid, int) or self.grid < 2:
            raise ConfigError(f"explain.grid is {self.grid!r}: give a whole number of 2 or more.")

    @property
    def cells(self) -> int:
        return self.grid * self.grid

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Occlusion:
        """From params.yaml's `explain` or model.json's `explain`."""
        return cls(settings["grid"], settings["fill"])

    @classmethod
    def of_model(cls, info: Mapping[str, Any]) -> Occlusion:
        """How maps of an exported model are made: as its model.json records."""
        if "explain" not in info:
            raise ModelNotFound(
                "This model's model.json says nothing of explanation maps: it was exported "
                "before they existed. Run `dvc repro` to export it again."
            )
        return cls.from_settings(info["explain"])

    @property
    def meaning(self) -> str:
        """What a map says, in one sentence for a person."""
        return (
            "Each square shows how the p-score changes when that part of the image is "
            f"{FILL_WORDS[self.fill]}: blue parts push the model towards a real photograph, red "
            "parts towards AI-generated; it shows what this model reacts to, not where an image "
            "was generated or edited."
        )

    def settings(self) -> dict[str, Any]:
        """What model.json records, for the app, the CLI and the API to map alike."""
        return {"method": "occlusion", "grid": self.grid, "fill": self.fill}


def cell_edges(size: int, grid: int) -> np.ndarray:
    """Pixel edges of the cells along one side of a size x size input (grid + 1 of them)."""
    if grid > size:
        raise ConfigError(f"explain.grid is {grid}: over the model's {size} px input.")
    return np.linspace(0, size, grid + 1).round().astype(int)


def cover(image: np.ndarray, occlusion: Occlusion) -> np.ndarray:
    """What a covered cell shows, for the whole image: the image blurred at the scale of a cell
    (its fine detail and colour gone, its layout kept), its mean colour, or mid grey."""
    if occlusion.fill == "blur":
        radius = image.shape[0] / occlusion.grid / 2
        return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))
    if occlusion.fill == "mean":
        return np.broadcast_to(image.mean(axis=(0, 1)).round().astype(np.uint8), image.shape)
    return np.full_like(image, GREY)


def covered_copies(
    image: np.ndarray, occlusion: Occlusion, cell_sets: Sequence[Sequence[int]]
) -> np.ndarray:
    """One copy of `image` per set of cells (row-major indices), with those cells covered."""
    edges = cell_edges(image.shape[0], occlusion.grid)
    covered = cover(image, occlusion)
    copies = np.repeat(image[None], len(cell_sets), axis=0)
    for copy, cells in zip(copies, cell_sets, strict=True):
        for cell in cells:
            row, column = divmod(int(cell), occlusion.grid)
            rows = slice(edges[row], edges[row + 1])
            columns = slice(edges[column], edges[column + 1])
            copy[rows, columns] = covered[rows, columns]
    return copies


def occlusion_copies(image: np.ndarray, occlusion: Occlusion) -> np.ndarray:
    """The image itself, then one copy per cell with that cell covered: cells + 1 images."""
    return covered_copies(image, occlusion, [[], *([cell] for cell in range(occlusion.cells))])


def map_from_scores(scores: np.ndarray, grid: int) -> tuple[float, np.ndarray]:
    """(P(real) of the image, its grid x grid map) from the scores of occlusion_copies."""
    return float(scores[0]), (scores[0] - scores[1:]).reshape(grid, grid)


def scored(score: Score, stacks: Iterable[np.ndarray], batch_size: int) -> list[np.ndarray]:
    """The scores of each stack of images, in order, `batch_size` images per forward pass: the
    stacks of consecutive images share batches, and are made only as the batches need them."""
    sizes: list[int] = []
    results: list[np.ndarray] = []
    waiting: list[np.ndarray] = []
    for stack in stacks:
        sizes.append(len(stack))
        waiting.append(stack)
        if sum(map(len, waiting)) >= batch_size:
            joined = np.concatenate(waiting)
            full = len(joined) // batch_size * batch_size
            results += [score(joined[i : i + batch_size]) for i in range(0, full, batch_size)]
            waiting = [joined[full:]]
    if sum(map(len, waiting)):
        results.append(score(np.concatenate(waiting)))
    flat = np.concatenate(results) if results else np.empty(0)
    return np.split(flat, np.cumsum(sizes)[:-1]) if sizes else []


def occlusion_maps(
    score: Score, images: Sequence[np.ndarray], occlusion: Occlusion, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """P(real) of each image (shaped for the model) and its grid x grid map."""
    stacks = (occlusion_copies(image, occlusion) for image in images)
    results = [map_from_scores(s, occlusion.grid) for s in scored(score, stacks, batch_size)]
    p_real = np.array([p for p, _ in results])
    maps = np.array([heat for _, heat in results]).reshape(-1, occlusion.grid, occlusion.grid)
    return p_real, maps


def deletion_orders(
    heat: np.ndarray, towards_real: bool, random_orders: int, rng: np.random.Generator
) -> np.ndarray:
    """Orders of covering the cells: the map's (the cells that support the verdict most first:
    the highest values for a verdict of real, the lowest for AI), then `random_orders` random
    ones."""
    support = heat.ravel() if towards_real else -heat.ravel()
    by_map = np.argsort(-support, kind="stable")
    return np.stack([by_map, *(rng.permutation(len(by_map)) for _ in range(random_orders))])


def covered_counts(cells: int, steps: int) -> np.ndarray:
    """How many cells are covered at each point of a deletion curve: 0 to every cell."""
    if not 2 <= steps <= cells:
        raise ConfigError(f"explain.steps is {steps}: give 2 to {cells} (the map's cells).")
    return np.linspace(0, cells, steps + 1).round().astype(int)


def deletion_copies(
    image: np.ndarray, occlusion: Occlusion, orders: np.ndarray, steps: int
) -> np.ndarray:
    """For each order, the image with its first k cells covered at each inner point of the
    curve, then the image with every cell covered, once: the curves' two ends are the same for
    every order (the uncovered image's score is the map's own)."""
    counts = covered_counts(occlusion.cells, steps)[1:-1]
    sets = [order[:count] for order in orders for count in counts]
    return covered_copies(image, occlusion, [*sets, range(occlusion.cells)])


def deletion_curves(
    p_real: float, scores: np.ndarray, orders: int, steps: int, towards_real: bool
) -> np.ndarray:
    """(orders, steps + 1): the probability of the verdict as cells are covered, from the scores
    of deletion_copies and the uncovered image's P(real)."""
    inner = scores[:-1].reshape(orders, steps - 1)
    curves = np.column_stack([np.full(orders, p_real), inner, np.full(orders, scores[-1])])
    return curves if towards_real else 1.0 - curves
