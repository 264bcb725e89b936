"""Where a stage runs a backbone over many images: in its own process (engine `local`), or on Ray
Data actors (engine `ray`) spread over the cores of this machine or the nodes of a Ray cluster.

params.yaml's `engine` (configs/engine/) chooses; both engines decode through
pipeline.models.runtime's Pillow path and run the same compiled forward pass, so they write the same
features in the same row order, and no stage downstream can tell which ran. With `ray`, the prepared
split table becomes a Ray Dataset whose `map_batches` runs a callable class, BackboneActor: each
actor builds the backbone once, from its settings and the weights the stage built, and returns every
row's position, so that the driver writes each batch into place however the batches arrive.

Locally the stage starts its own Ray (no dashboard) and stops it at the end; with RAY_ADDRESS set
it joins that cluster instead (docs/cluster.md, "Running on a cluster").
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.choices import ENGINES
from pipeline.core.errors import ConfigError, StageFailed, not_one_of
from pipeline.models import backend
from pipeline.models.backbones import Backbone, build_extractor
from pipeline.models.runtime import compiled, image_batches
from pipeline.models.runtime import extract as local_extract

LOCAL, RAY = ENGINES
RAY_SETTINGS = ("actors", "cpus_per_actor", "gpus_per_actor", "num_cpus")  # configs/engine/ray.yaml
LOCAL_SETTINGS = ("decode_workers",)  # configs/engine/local.yaml; optional (null: every core)
ROW = "row"  # each image's position in the split table, carried through the actors
# A Ray Data block is the unit one actor call receives: up to a few model batches, so that the
# decoding processes of runtime.image_batches overlap the forward pass inside the call and Ray's
# per-call overhead is paid once for several batches; but at least a few blocks per actor, or
# one actor works through the last large block while the others idle.
BATCHES_PER_BLOCK = 4
BLOCKS_PER_ACTOR = 4

Work = Callable[[Callable, list[str]], dict[str, np.ndarray]]


def engine_settings(engine: dict[str, Any] | None) -> dict[str, Any]:
    """params.yaml's `engine` section, checked (None, from a params.yaml older than the engine
    setting: the local engine)."""
    settings = dict(engine or {"name": LOCAL})
    name = settings.pop("name", None)
    if name not in ENGINES:
        raise not_one_of("engine.name", name, ENGINES)
    allowed = RAY_SETTINGS if name == RAY else LOCAL_SETTINGS
    for key in settings:
        if key not in allowed:
            raise ConfigError(
                f"engine {name} has no setting {key!r}; its settings: "
                f"{', '.join(('name', *allowed))} (configs/engine/{name}.yaml)"
            )
    for key in RAY_SETTINGS if name == RAY else ():
        if key not in settings:
            raise ConfigError(f"engine {name} needs the setting {key} (configs/engine/{name}.yaml)")
    workers = settings.get("decode_workers")
    if workers is not None and (
        not isinstance(workers, int) or isinstance(workers, bool) or workers < 1
    ):
        raise ConfigError(
            f"engine.decode_workers must be a whole number >= 1, or null for one per core; got "
            f"{workers!r}"
        )
    if name == RAY:
        actors = settings["actors"]
        if not isinstance(actors, int) or actors < 1:
            raise ConfigError(f"engine.actors must be a whole number >= 1, got {actors}")
        for key in ("cpus_per_actor", "gpus_per_actor"):
            if not isinstance(settings[key], int | float) or settings[key] < 0:
                raise ConfigError(f"engine.{key} must be a number >= 0, got {settings[key]}")
    return {"name": name, **settings}


def leave_gpus_to_actors(engine: dict[str, Any] | None) -> None:
    """With the ray engine, call before the stage builds its backbone: the stage's own process
    only builds it to hand its weights to the actors, so it leaves this machine's GPUs to them
    (pipeline.models.backend.leave_gpus). A no-op for the local engine and without GPUs."""
    if engine_settings(engine)["name"] == RAY:
        backend.leave_gpus()


def features_of(
    forward: Callable,
    paths: list[str],
    size: int,
    batch_size: int,
    mode: str,
    workers: int | None = None,
) -> dict[str, np.ndarray]:
    """The features path over some images: runtime.image_batches' decoding by `workers`
    processes (None: one per core; unusable images give their skip reason), then the compiled
    forward pass, batch by batch."""
    features, reasons = [], []
    for images, batch_reasons in image_batches(paths, size, batch_size, mode, workers=workers):
        features.append(np.asarray(forward(images)))
        reasons.append(batch_reasons)
    return {"features": np.concatenate(features), "reason": np.concatenate(reasons)}


class BackboneActor:
    """A Ray Data actor: the backbone built once per actor, then `work` per batch of paths."""

    def __init__(
        self, backbone: Backbone, weights: list[np.ndarray], work: Work, threads: int
    ) -> None:
        backend.share_machine(threads)
        model = build_extractor(dataclasses.replace(backbone, weights=None))
        model.set_weights(weights)
        self.forward = compiled(model)
        self.work = work

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {ROW: batch[ROW], **self.work(self.forward, batch["path"].tolist())}


@contextlib.contextmanager
def ray_session(num_cpus: int | None = None) -> Iterator[None]:
    """A Ray to run on: the cluster at RAY_ADDRESS, or a local one of `num_cpus` CPUs (None: all)
    started here; on the way out the local one stops, and from a cluster this driver disconnects
    (the cluster runs on). A session this process already has is used as it is."""
    import ray

    if ray.is_initialized():
        yield
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()  # Ray reads RAY_ADDRESS; a cluster's resources are its own, not ours to size
    else:
        # "local": a new Ray of our own, even where someone's `ray start` runs on this machine
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)
    try:
        yield
    finally:
        ray.shutdown()


def rows_per_block(count: int, batch_size: int, actors: int) -> int:
    """Whole model batches per Ray Data block: BATCHES_PER_BLOCK, fewer where that would leave
    an actor fewer than BLOCKS_PER_ACTOR blocks."""
    batches = math.ceil(count / (actors * BLOCKS_PER_ACTOR * batch_size))
    return batch_size * min(BATCHES_PER_BLOCK, max(1, batches))


def ray_batches(
    settings: dict[str, Any], backbone: Backbone, model: Any, work: Work, paths: list[str]
) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """(row positions, outputs of `work`) per batch the actors return, in whatever order."""
    import ray

    table = pd.DataFrame({ROW: np.arange(len(paths)), "path": paths})
    block = rows_per_block(len(paths), backbone.batch_size, settings["actors"])
    with ray_session(settings["num_cpus"]):
        dataset = ray.data.from_pandas(
            [table.iloc[start : start + block] for start in range(0, len(table), block)]
        )
        results = dataset.map_batches(
            BackboneActor,
            batch_size=block,
            batch_format="numpy",
            fn_constructor_kwargs={
                "backbone": backbone,
                "weights": model.get_weights(),
                "work": work,
                "threads": max(1, int(settings["cpus_per_actor"])),
            },
            compute=ray.data.ActorPoolStrategy(size=settings["actors"]),
            num_cpus=settings["cpus_per_actor"],
            num_gpus=settings["gpus_per_actor"],
        )
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            yield batch.pop(ROW), batch


def gathered(
    batches: Iterator[tuple[np.ndarray, dict[str, np.ndarray]]],
    count: int,
    into: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Every batch's outputs written at its rows, into the arrays `into` where given (such as a
    memory-mapped file) and new ones otherwise; fails unless every one of `count` rows came."""
    outputs = dict(into or {})
    seen = np.zeros(count, dtype=bool)
    for rows, batch in batches:
        for key, values in batch.items():
            if key not in outputs:
                dtype = object if values.dtype.kind in "OUS" else values.dtype
                outputs[key] = np.empty((count, *values.shape[1:]), dtype)
            outputs[key][rows] = values
        seen[rows] = True
    if not seen.all():
        raise StageFailed(f"the ray engine returned {int(seen.sum())} of {count} images")
    return outputs


def extract(
    engine: dict[str, Any] | None, backbone: Backbone, model: Any, paths: list[str], out: Path
) -> np.ndarray:
    """The features of `paths` by `model` (built from `backbone`) into the .npy file `out`, with
    the engine `engine`; returns each image's skip reason ("" where it was used)."""
    settings = engine_settings(engine)
    size, batch_size, mode = backbone.input_size, backbone.batch_size, backbone.input_mode
    if settings["name"] == LOCAL:
        return local_extract(
            model, paths, size, batch_size, out, mode, settings.get("decode_workers")
        )
    features = np.lib.format.open_memmap(
        out, mode="w+", dtype=np.float32, shape=(len(paths), model.output_shape[-1])
    )
    reasons = np.full(len(paths), "", dtype=object)
    if paths:
        # each actor decodes with as many processes as the CPUs Ray reserved for it
        work = functools.partial(
            features_of,
            size=size,
            batch_size=batch_size,
            mode=mode,
            workers=max(1, int(settings["cpus_per_actor"])),
        )
        batches = ray_batches(settings, backbone, model, work, paths)
        gathered(batches, len(paths), into={"features": features, "reason": reasons})
    features.flush()
    del features
    return reasons


def map_images(
    engine: dict[str, Any] | None, backbone: Backbone, model: Any, work: Work, paths: list[str]
) -> dict[str, np.ndarray]:
    """`work(forward, paths)` of `model` (built from `backbone`): in this process, or over
    the ray engine's actors batch by batch, gathered back into the order of `paths`. `work` must
    return arrays with one row per path; with ray it must be importable by name (a module-level
    function, or a functools.partial of one), since the actors receive it pickled."""
    settings = engine_settings(engine)
    if settings["name"] == LOCAL or not paths:
        return work(compiled(model), paths)
    return gathered(ray_batches(settings, backbone, model, work, paths), len(paths))
