import re
import subprocess
import sys

import pytest
import yaml

from benchmarks.project import committed
from conftest import ROOT, committed_files, compose_params
from pipeline.core.errors import ConfigError, MissingInput
from pipeline.stages.params import load_params


def test_committed_params_yaml_is_the_composed_configs(tmp_path):
    """`dvc repro` reads params.yaml without recomposing: as committed, it must never drift from
    configs/ as committed. The work tree's params.yaml is the user's (`dvc exp run -S`, `aiic
    compose` rewrite it), so this reads both from HEAD."""
    committed = committed_files(tmp_path / "head", "configs", "params.yaml")
    composed = tmp_path / "params.yaml"
    code = (
        "from pathlib import Path; from pipeline.stages.params import compose; "
        f"compose([], Path({str(committed / 'configs')!r}), Path({str(composed)!r}))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    assert yaml.safe_load(composed.read_text()) == yaml.safe_load(
        (committed / "params.yaml").read_text()
    )


def test_the_exported_backbone_is_among_those_trained():
    params = compose_params()
    assert params["backbone"]["name"] in params["backbones"]
    for name in params["backbones"]:  # every backbone config has a matching export choice
        assert (ROOT / "configs" / "backbone" / f"{name}.yaml").is_file()


def test_load_params_refuses_a_setting_outside_its_vocabulary(tmp_path):
    params = compose_params("calibration.method=histogram")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="calibration.method is 'histogram'; allowed values: 'te"):
        load_params(tmp_path / "params.yaml")
    params = compose_params()
    params["backbone"]["name"] = "resnet"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="Backbone 'resnet' is not in params.yaml's `backbones`"):
        load_params(tmp_path / "params.yaml")
    with pytest.raises(MissingInput, match="aiic compose"):
        load_params(tmp_path / "absent.yaml")


def test_dvc_hydra_composition_is_enabled():
    config = committed(".dvc/config").decode()
    assert "[hydra]" in config and "enabled = true" in config and "config_dir = configs" in config


def test_degradation_settings_out_of_range_are_clear_errors():
    from pipeline.core.errors import ConfigError
    from pipeline.stages.params import validate

    params = compose_params()
    validate(params)
    for section, key, value, message in (
        ("robustness", "jpeg_quality", [95, 0], "robustness.jpeg_quality is [95, 0]"),
        ("robustness", "downscale", [2], "from 0.01 to 1"),
        ("augment", "p", 1.5, "augment.p is 1.5"),
        ("augment", "jpeg_quality", [90, 30], "give a [low, high] pair"),
        ("explain", "grid", 1, "explain.grid is 1: each value must be a whole number from 2"),
        ("explain", "images", 8.5, "explain.images is 8.5: each value must be a whole number"),
        ("explain", "fill", "noise", "explain.fill is 'noise'; allowed values: 'blur', 'mean'"),
    ):
        broken = {**params, section: {**params[section], key: value}}
        with pytest.raises(ConfigError, match=re.escape(message)):
            validate(broken)
