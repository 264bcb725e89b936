"""params.yaml: the composed configuration every stage reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = Path("params.yaml")
CONFIG_DIR = Path("configs")
CONFIG_NAME = "config"


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    with open(path, encoding="utf-8") as file:
        return yaml.safe_load(file)


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
        raise SystemExit(
            f"Backbone {name!r} is not in params.yaml's `backbones` ({', '.join(backbones)}); "
            "add it to the defaults list in configs/config.yaml."
        )
    return backbones[name]
