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


BAD_VALUES = [  # (section, key, value, the error's words)
    ("robustness", "jpeg_quality", [95, 0], "robustness.jpeg_quality[1] is 0: input should be"),
    ("robustness", "downscale", [2], "robustness.downscale[0] is 2: input should be less than"),
    ("augment", "p", 1.5, "augment.p is 1.5: input should be less than or equal to 1"),
    ("augment", "jpeg_quality", [90, 30], "augment.jpeg_quality is [90, 30]: give a [low, high]"),
    ("explain", "grid", 1, "explain.grid is 1: input should be greater than or equal to 2"),
    ("explain", "images", 8.5, "explain.images is 8.5: input should be a valid integer"),
    ("explain", "fill", "noise", "explain.fill is 'noise'; allowed values: 'blur', 'mean'"),
    ("data", "split", {"val": 0.5, "test": 0.5}, "val 0.5 and test 0.5 leave no training share"),
    ("data", "split", {"val": 0.2, "test": 0}, "data.split.test is 0: input should be greater"),
    ("data", "max_hamming", -1, "data.max_hamming is -1: input should be greater than or equal"),
    ("data", "normalize", "yes", "data.normalize is 'yes': input should be a valid boolean"),
    ("head", "learning_rate", 0, "head.learning_rate is 0: input should be greater than 0"),
    ("head", "epochs", 0, "head.epochs is 0: input should be greater than or equal to 1"),
    ("head", "batch_size", "64", "head.batch_size is '64': input should be a valid integer"),
    ("head", "patience", -1, "head.patience is -1: input should be greater than or equal to 0"),
    ("head", "dropout", 1.0, "head.dropout is 1.0: input should be less than 1"),
    ("head", "epoch", 3, "head.epoch is not a setting; allowed: units, dropout, learning_rate"),
    ("calibration", "target_fpr_real", 1.5, "calibration.target_fpr_real is 1.5: input should"),
    ("calibration", "method", "histogram", "allowed values: 'temperature', 'platt', 'isotonic'"),
    ("balance", "k_neighbors", 0, "balance.k_neighbors is 0: input should be greater than or"),
    ("balance", "method", "adasyn", "balance.method is 'adasyn'; allowed values: 'smote', "),
    ("engine", "name", "spark", "engine.name is 'spark'; allowed values: 'local', 'ray'"),
    ("export", "formats", ["onnx"], "export.formats[0] is 'onnx'; allowed values: 'saved_model'"),
    ("blend", "fractions", [0.5, 0.1], "blend.fractions is [0.5, 0.1]: give two or more"),
    ("blend", "encode", "gif", "blend.encode is 'gif'; allowed values: 'png', 'jpeg'"),
    ("scrape", "spider", "flickr", "scrape.spider is 'flickr'; allowed values: 'commons'"),
    ("scrape", "max_item", 3, "scrape.max_item is not a setting; allowed: contact, max_items"),
    ("scrape", "page_size", 0, "scrape.page_size is 0: input should be greater than or equal"),
    ("scrape", "sources", [{"category": "Quality images", "label": "real"}], "should match"),
    ("scrape", "sources", [{"category": "Category:X", "label": "fake"}], "label is 'fake'"),
    ("backbones", "vgg16", {"name": "vgg16", "input_size": 0, "batch_size": 8}, "input_size is 0"),
    ("backbones", "vgg16", {"name": "vgg", "input_size": 32, "batch_size": 8}, "must be 'vgg16'"),
]


@pytest.mark.parametrize("section, key, value, message", BAD_VALUES)
def test_every_bad_value_is_one_clear_paragraph(section, key, value, message):
    from pipeline.stages.params import validate

    params = compose_params()
    validate(params)
    broken = {**params, section: {**params[section], key: value}}
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        validate(broken)
    assert "\n" not in str(raised.value)


def test_an_unknown_section_is_refused_with_the_sections_allowed():
    from pipeline.stages.params import validate

    with pytest.raises(ConfigError, match="heads is not a setting; allowed: seed, backbone, "):
        validate({**compose_params(), "heads": {}})


def test_a_stage_refuses_a_bad_value_before_any_work(tmp_path, monkeypatch, capsys):
    from pipeline import cli

    params = compose_params()
    params["head"]["epochs"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        cli.main(["train"])
    assert exited.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "aiic train: head.epochs is 0: input should be greater than or equal to 1."
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written
