"""14. Explanation maps: one occlusion map per backbone, against the bare forward pass.

The map of one image at the configs' `explain` settings (grid * grid + 1 forward passes) through
pipeline.models.occlusion, against the compiled forward pass over the same covered copies, already
made: the cost of making the copies and of the batching, and the seconds a person waits in the app.
What the explain stage adds to a head experiment is measured by the head-experiment benchmark."""

from __future__ import annotations

from typing import Any

from benchmarks.common import Context, timed
from pipeline.core.tables import markdown_table

NAME = "explain"
EXPORTED_SECONDS = 5.0  # the "a few seconds" for the exported backbone's map, on 2 cores
OVERHEAD = 1.1  # a map at most this many times the forward passes it needs
REPEATS = 4


def measure(context: Context) -> dict[str, Any]:
    """Per backbone (random weights, the run's input sizes): one map's seconds, and the bare
    forward pass over its covered copies, interleaved, the best of REPEATS each."""
    import numpy as np

    from pipeline.data.images import load_for_model
    from pipeline.models.backbones import Backbone, build_extractor
    from pipeline.models.occlusion import Occlusion, occlusion_copies, occlusion_maps
    from pipeline.serving.inference import forward

    occlusion = Occlusion.from_settings(context.params["explain"])
    results: dict[str, Any] = {"grid": occlusion.grid, "fill": occlusion.fill, "backbones": {}}
    for name, spec in context.backbones.items():
        backbone = Backbone.from_spec(spec)
        score = forward(build_extractor(backbone))  # its first feature: the head costs nothing
        size, batch = backbone.input_size, backbone.batch_size
        image = load_for_model(context.paths[0], size, backbone.input_mode)
        copies = occlusion_copies(image, occlusion)

        def bare(copies: np.ndarray = copies, batch: int = batch, score: Any = score) -> None:
            for start in range(0, len(copies), batch):
                score(copies[start : start + batch])

        def mapped(image: np.ndarray = image, score: Any = score, batch: int = batch) -> None:
            occlusion_maps(score, [image], occlusion, batch)

        mapped()  # traced once, as in the app
        times: dict[Any, list[float]] = {mapped: [], bare: []}
        for repeat in range(REPEATS):  # interleaved, each first in turn
            for run in (mapped, bare) if repeat % 2 == 0 else (bare, mapped):
                times[run].append(timed(run)[0])
        map_s, bare_s = min(times[mapped]), min(times[bare])
        results["backbones"][name] = {
            "input_size": size,
            "forward_passes": len(copies),
            "map_s": round(map_s, 3),
            "bare_s": round(bare_s, 3),
            "map_over_bare": round(map_s / bare_s, 3),
        }
    results["exported"] = context.params["backbone"]["name"]
    return results


def targets(result: dict[str, Any]) -> list[tuple[str, str, Any, bool]]:
    """The exported backbone's: the map a person waits for in the app, and its overhead (the
    spectrum's forward pass costs a millisecond, so there the copies are most of a map)."""
    name = result["exported"]
    exported = result["backbones"][name]
    seconds, ratio = exported["map_s"], exported["map_over_bare"]
    return [
        (
            f"14. one map, {name} at {exported['input_size']} px, seconds (2 cores)",
            f"≤ {EXPORTED_SECONDS}",
            seconds,
            seconds <= EXPORTED_SECONDS,
        ),
        (f"14. map ÷ its bare forward passes, {name}", f"≤ {OVERHEAD}", ratio, ratio <= OVERHEAD),
    ]


def render(result: dict[str, Any]) -> list[str]:
    table = markdown_table(
        ["backbone", "input", "forward passes", "map s", "bare forward s", "map ÷ bare"],
        [
            [
                name,
                r["input_size"],
                r["forward_passes"],
                r["map_s"],
                r["bare_s"],
                f"**{r['map_over_bare']}**",
            ]
            for name, r in result["backbones"].items()
        ],
    )
    return [
        "## 14. Explanation maps",
        f"One occlusion map ({result['grid']} x {result['grid']} cells, fill `{result['fill']}`) "
        "of one image per backbone, against the compiled forward pass over the same covered "
        f"copies made beforehand (interleaved, best of {REPEATS} each): the map's own cost is "
        "making the copies; the forward passes are the rest.",
        table,
    ]
