"""params.yaml: the composed configuration every stage reads, validated before any work.

The settings with a fixed vocabulary are named here, TensorFlow-free, so that every stage can check
them at start; a backbone's own settings are checked by pipeline.models.backbones where it is built.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.choices import (
    BALANCE_METHODS,
    BLEND_ENCODINGS,
    CALIBRATION_METHODS,
    ENGINES,
    THRESHOLD_RULES,
)
from pipeline.core.errors import ConfigError, MissingInput, not_one_of
from pipeline.models.formats import FORMATS
from pipeline.models.occlusion import FILLS

PARAMS_FILE = Path("params.yaml")
CONFIG_DIR = Path("configs")
CONFIG_NAME = "config"
CHOICES = {
    ("engine", "name"): ENGINES,
    ("balance", "method"): BALANCE_METHODS,
    ("calibration", "method"): CALIBRATION_METHODS,
    ("calibration", "threshold"): THRESHOLD_RULES,
    ("explain", "fill"): FILLS,
    ("blend", "encode"): BLEND_ENCODINGS,
}


def validate(params: dict[str, Any]) -> dict[str, Any]:
    """Raise ConfigError for a setting outside its vocabulary, naming the allowed values.

    Sections that are absent are not checked: a stage reads only its own.
    """
    for (section, key), allowed in CHOICES.items():
        if section in params and params[section].get(key) not in allowed:
            raise not_one_of(f"{section}.{key}", params[section].get(key), allowed)
    for name in (params.get("export") or {}).get("formats", []):
        if name not in FORMATS:
            raise not_one_of("export.formats", name, tuple(FORMATS))
    check_degradations(params)
    check_fractions(params)
    for key, spec in (params.get("backbones") or {}).items():
        if spec.get("name") != key:
            raise ConfigError(f"backbones.{key}.name must be {key!r}, got {spec.get('name')!r}.")
    if "backbone" in params:
        backbone_spec(params, params["backbone"]["name"])
    return params


# (section, key): (lowest, highest) allowed for the number or each number of a list
RANGES = {
    ("robustness", "jpeg_quality"): (1, 100),
    ("robustness", "blur_sigma"): (0, 100),
    ("robustness", "downscale"): (0.01, 1),
    ("robustness", "center_crop"): (0.01, 1),
    ("augment", "copies"): (0, 100),
    ("augment", "p"): (0, 1),
    ("augment", "jpeg_quality"): (1, 100),
    ("augment", "blur_sigma"): (0, 100),
    ("explain", "grid"): (2, 64),
    ("explain", "gallery"): (1, 100),
    ("explain", "images"): (2, 100_000),  # a bootstrap interval needs two images
    ("explain", "steps"): (2, 4096),
    ("explain", "random_orders"): (1, 100),
    ("blend", "fractions"): (0, 1),
    ("blend", "composites"): (2, 100_000),  # a bootstrap interval needs two composites
    ("blend", "feather"): (0.001, 0.5),
    ("blend", "jpeg_quality"): (1, 100),
    ("blend", "maps"): (0, 100_000),
}
COUNTS = {key for key in RANGES if key[0] == "explain"}  # whole numbers
COUNTS |= {("blend", "composites"), ("blend", "jpeg_quality"), ("blend", "maps")}


def check_degradations(params: dict[str, Any]) -> None:
    """The robustness grid, the augmentation, the explanation and the blend settings: numbers in
    range (the counts whole numbers), and the augmentation's jpeg_quality and blur_sigma each a
    [low, high] pair."""
    for (section, key), (lowest, highest) in RANGES.items():
        if section not in params or params[section].get(key) is None:
            continue
        value = params[section][key]
        values = value if isinstance(value, list) else [value]
        kind = int if (section, key) in COUNTS else int | float
        if not all(isinstance(v, kind) and lowest <= v <= highest for v in values):
            number = "a whole number" if kind is int else "a number"
            raise ConfigError(
                f"{section}.{key} is {value!r}: each value must be {number} from {lowest} to "
                f"{highest}."
            )
    for key in ("jpeg_quality", "blur_sigma"):
        pair = (params.get("augment") or {}).get(key)
        if pair is not None and (len(pair) != 2 or pair[0] > pair[1]):
            raise ConfigError(f"augment.{key} is {pair!r}: give a [low, high] pair.")


def check_fractions(params: dict[str, Any]) -> None:
    """The blend stage's AI area fractions: two or more, in increasing order (the curve is read
    from the lowest up, for the fraction at which the verdict flips)."""
    fractions = (params.get("blend") or {}).get("fractions")
    if fractions is None:
        return
    if not isinstance(fractions, list) or len(fractions) < 2 or sorted(set(fractions)) != fractions:
        raise ConfigError(
            f"blend.fractions is {fractions!r}: give two or more AI area fractions from 0 to 1, "
            "in increasing order, each once."
        )


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml, validated."""
    if not Path(path).is_file():
        raise MissingInput(f"{path} not found: run `aiic compose` (or `dvc exp run`) to write it.")
    with open(path, encoding="utf-8") as file:
        return validate(yaml.safe_load(file))


def compose(
    overrides: list[str] | None = None,
    config_dir: Path = CONFIG_DIR,
    output: Path = PARAMS_FILE,
) -> None:
    """Compose configs/ into params.yaml exactly as `dvc exp run` does (DVC's own Hydra code)."""
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(
        output, str(Path(config_dir).resolve()), None, CONFIG_NAME, "", overrides or []
    )


def backbone_spec(params: dict[str, Any], name: str) -> dict[str, Any]:
    """The settings of one backbone from the `backbones` dict, with a clear error for a typo."""
    backbones = params["backbones"]
    if name not in backbones:
        raise ConfigError(
            f"Backbone {name!r} is not in params.yaml's `backbones` ({', '.join(backbones)}); "
            "add it to the defaults list in configs/config.yaml."
        )
    return backbones[name]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """compose's arguments, declared once for its own parser and `aiic compose`'s sub-parser."""
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="OVERRIDE",
        help="Hydra overrides, as `dvc exp run -S` takes them (e.g. backbone=vgg16)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="aiic compose", description="Compose configs/ into params.yaml (Hydra overrides)."
    )
    add_arguments(parser)
    compose(parser.parse_args().overrides)
