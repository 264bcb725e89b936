"""The engines that run a backbone over images: the local one and Ray Data's, which must write
the same features, row for row, with the same skip reasons."""

import functools
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from conftest import backbone_config, compose_params, make_image_folder
from pipeline.core.errors import ConfigError, StageFailed
from pipeline.core.paths import BACKBONE_WEIGHTS_FILE, FEATURES_FILE, INDEX_FILE, features_dir
from pipeline.models import engines
from pipeline.models.backbones import Backbone, build_extractor
from pipeline.models.degradations import grid
from pipeline.stages.features import featurize
from pipeline.stages.robustness import perturbed_outputs

RAY = {"name": "ray", "actors": 2, "cpus_per_actor": 1, "gpus_per_actor": 0, "num_cpus": 2}


def test_engine_settings_are_checked():
    assert engines.engine_settings(None) == {"name": "local"}
    assert engines.engine_settings(RAY) == RAY
    with pytest.raises(ConfigError, match="engine.name is 'spark'; allowed values: 'local', 'ray'"):
        engines.engine_settings({"name": "spark"})
    with pytest.raises(ConfigError, match="'actors'; its settings: name, decode_workers "):
        engines.engine_settings({"name": "local", "actors": 2})
    local = {"name": "local", "decode_workers": 3}
    assert engines.engine_settings(local) == local
    assert engines.engine_settings({**local, "decode_workers": None})["decode_workers"] is None
    for workers in (0, 1.5, True):
        with pytest.raises(ConfigError, match="engine.decode_workers must be a whole number >= 1"):
            engines.engine_settings({**local, "decode_workers": workers})
    with pytest.raises(ConfigError, match="needs the setting num_cpus"):
        engines.engine_settings({k: v for k, v in RAY.items() if k != "num_cpus"})
    with pytest.raises(ConfigError, match="engine.actors must be a whole number >= 1, got 0"):
        engines.engine_settings({**RAY, "actors": 0})
    with pytest.raises(ConfigError, match="engine.gpus_per_actor must be a number >= 0"):
        engines.engine_settings({**RAY, "gpus_per_actor": -1})


def test_batches_are_gathered_at_their_rows_whatever_their_order():
    batches = [
        (np.array([2, 3]), {"x": np.array([[2.0], [3.0]]), "reason": np.array(["", "corrupt"])}),
        (np.array([0, 1]), {"x": np.array([[0.0], [1.0]]), "reason": np.array(["missing", ""])}),
    ]
    outputs = engines.gathered(iter(batches), 4)
    assert outputs["x"][:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert outputs["reason"].tolist() == ["missing", "", "", "corrupt"]
    assert outputs["reason"].dtype == object  # a later, longer reason is never cut short
    with pytest.raises(StageFailed, match="returned 2 of 5 images"):
        engines.gathered(iter(batches[:1]), 5)


def test_the_stage_leaves_gpus_to_the_ray_actors(monkeypatch):
    """Untested on a GPU (none here): TensorFlow's device calls are recorded instead."""
    import tensorflow as tf

    hidden = []
    monkeypatch.setattr(tf.config, "set_visible_devices", lambda *args: hidden.append(args))
    engines.leave_gpus_to_actors(RAY)
    assert hidden == []  # no GPU: nothing to leave
    gpu = tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [gpu])
    engines.leave_gpus_to_actors(None)
    engines.leave_gpus_to_actors({"name": "local"})
    assert hidden == []  # the local engine runs its backbone on the GPU itself
    engines.leave_gpus_to_actors(RAY)
    assert hidden == [([], "GPU")]


def test_blocks_are_whole_batches_and_leave_every_actor_several():
    assert engines.rows_per_block(100_000, 32, 2) == 32 * engines.BATCHES_PER_BLOCK
    assert engines.rows_per_block(192, 32, 2) == 32  # six blocks, not a 128 and a 64
    assert engines.rows_per_block(3, 32, 2) == 32


def image_paths(folder):
    """Good images, three kinds of bad one, and a missing file, in a fixed order."""
    make_image_folder(folder, per_class=8, size=48)
    (folder / "bad.png").write_bytes(b"not an image")
    whole = (folder / "real" / "real_000.png").read_bytes()
    (folder / "cut.png").write_bytes(whole[: len(whole) // 2])
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    return [*paths[:9], str(folder / "missing.png"), *paths[9:]]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray of two CPUs for the module: the engine joins a running session."""
    ray = pytest.importorskip("ray")
    with engines.ray_session(num_cpus=2):
        yield ray


@pytest.mark.slow
def test_ray_features_stage_writes_what_the_local_engine_writes(tmp_path, monkeypatch, local_ray):
    paths = image_paths(tmp_path / "images")
    splits = pd.DataFrame(
        {"id": [f"{i}" for i in range(len(paths))], "path": paths, "label": "real", "split": "test"}
    )
    backbone = Backbone.from_spec(  # several blocks
        backbone_config("vgg16", input_size=32, weights=None, batch_size=2)
    )
    written = {}
    for engine in (None, RAY):
        (tmp_path / str(engine)).mkdir()
        monkeypatch.chdir(tmp_path / str(engine))
        featurize(backbone, splits, seed=0, engine=engine)
        folder = features_dir("vgg16")
        model = keras.models.clone_model(build_extractor(backbone))
        model.load_weights(folder / BACKBONE_WEIGHTS_FILE)
        written[bool(engine)] = (
            np.load(folder / FEATURES_FILE),
            pd.read_csv(folder / INDEX_FILE, dtype={"id": str}, keep_default_na=False),
            model.get_weights(),
        )
    (local, local_index, local_weights), (remote, remote_index, remote_weights) = written.values()
    np.testing.assert_allclose(remote, local, rtol=1e-5, atol=1e-5)
    pd.testing.assert_frame_equal(remote_index, local_index)
    assert local_index["reason"].tolist()[8:11] == ["not_an_image", "missing", "truncated"]
    assert local_index["ok"].sum() == len(paths) - 3
    for ours, theirs in zip(remote_weights, local_weights, strict=True):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.slow
def test_ray_robustness_outputs_equal_the_local_engines(tmp_path, local_ray):
    """Every level of the configured grid, row for row; unusable files give NaN rows."""
    paths = image_paths(tmp_path / "images")
    backbone = Backbone.from_spec(backbone_config("spectrum", input_size=32, batch_size=4))
    model = build_extractor(backbone)
    work = functools.partial(
        perturbed_outputs,
        size=32,
        mode="center_crop",
        width=16,
        perturbations=grid(compose_params()["robustness"]),
    )
    local = engines.map_images(None, backbone, model, work, paths)
    remote = engines.map_images(RAY, backbone, model, work, paths)
    assert set(remote) == set(local)
    for name, values in local.items():
        np.testing.assert_allclose(remote[name], values, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert set(local) == set(grid(compose_params()["robustness"]))
    unusable = [i for i, path in enumerate(paths) if Path(path).name in ("bad.png", "missing.png")]
    for values in local.values():
        assert np.isnan(values[unusable]).all() and not np.isnan(values[0]).any()


def test_a_stage_joins_the_cluster_at_ray_address_or_starts_its_own(monkeypatch):
    """ray.init, as documented (https://docs.ray.io/en/latest/ray-core/api/doc/ray.init.html and
    https://docs.ray.io/en/latest/ray-core/starting-ray.html): without an address it connects to
    RAY_ADDRESS where set, else to the latest `ray start` instance on the machine, else starts a
    local one; num_cpus is refused when it connects to an existing cluster; address="local"
    always starts a new one. So: nothing but RAY_ADDRESS to join, and "local" with our CPUs."""
    calls = []

    class RecordingRay:
        @staticmethod
        def is_initialized():
            return False

        @staticmethod
        def init(**kwargs):
            calls.append(("init", kwargs))

        @staticmethod
        def shutdown():
            calls.append(("shutdown", {}))

    monkeypatch.setitem(sys.modules, "ray", RecordingRay)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    with engines.ray_session(num_cpus=2):
        pass
    monkeypatch.delenv("RAY_ADDRESS")
    with engines.ray_session(num_cpus=2):
        pass
    assert calls == [
        ("init", {}),
        ("shutdown", {}),
        ("init", {"address": "local", "num_cpus": 2, "include_dashboard": False}),
        ("shutdown", {}),
    ]
