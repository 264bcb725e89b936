"""Keras backends (pipeline.models.backend): an exported model scores alike on every installed
backend, each backend's forward pass, and what only TensorFlow can do refused elsewhere with the
reason.

`KERAS_BACKEND=jax pytest -m backend` runs this file and the other core paths' tests on JAX (CI
does); a backend that is not installed here is skipped, by name."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, make_exported_model, make_image_folder
from pipeline.core.errors import BackendMismatch
from pipeline.models import backend
from pipeline.models.backend import padded_size

pytestmark = pytest.mark.backend
INSTALLED = [name for name in backend.BACKENDS if importlib.util.find_spec(name)]
SKIPPED = sorted(set(backend.BACKENDS) - set(INSTALLED))
TOLERANCE = 1e-4  # the issue's: the same model's scores in float32 on any two backends

SCORE_SCRIPT = """
import json, sys
from pipeline.models.backend import name
from pipeline.serving.inference import load_exported, score_files
paths = sys.stdin.read().split("\\n")
scores = {}
for folder in sys.argv[1:]:
    model, info = load_exported(folder)
    p_real, _ = score_files(model, paths, info["input_size"], info["input_mode"], batch_size=5)
    scores[folder] = p_real.tolist()
print(json.dumps({"backend": name(), "scores": scores}))
"""


def on_backend(name: str, script: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    environment = {**os.environ, "KERAS_BACKEND": name, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environment,
        timeout=600,
    )


def exported_network(folder: Path, spec: dict, calibration: tuple[str, dict]) -> Path:
    """An inference model as export builds it (extractor, head, calibration) with random weights,
    saved as model.keras with its model.json."""
    import keras

    from pipeline.core.io import write_json
    from pipeline.models.backbones import Backbone, build_extractor
    from pipeline.models.calibrate import Calibration
    from pipeline.models.head import build_head

    keras.utils.set_random_seed(0)
    backbone = Backbone.from_spec(spec)
    extractor = build_extractor(backbone)
    head = build_head(extractor.output_shape[-1], units=8, dropout=0.0)
    inputs = keras.Input(extractor.input_shape[1:], name="rgb")
    outputs = Calibration(*calibration)(head(extractor(inputs)))
    folder.mkdir(parents=True)
    keras.Model(inputs, outputs).save(folder / "model.keras")
    info = {"input_size": backbone.input_size, "input_mode": backbone.input_mode}
    write_json(folder / "model.json", {**info, "threshold": 0.5})
    return folder


@pytest.mark.skipif(len(INSTALLED) < 2, reason=f"one Keras backend installed; {SKIPPED} missing")
def test_an_exported_model_scores_alike_on_every_installed_backend(tmp_path):
    """Written on this process's backend, loaded and scored in a fresh process on each."""
    common = {"weights": None, "batch_size": 8, "precision": "float32"}
    cnn = {"extractor": "cnn", "widths": [8, 16], "convs_per_stage": 1, "dense": 8}
    isotonic = {"x": [-3.0, -0.5, 0.0, 2.0], "y": [0.05, 0.3, 0.6, 0.9]}
    folders = [
        exported_network(
            tmp_path / "cnn",
            {"name": "cnn", "input_size": 32, **cnn, **common},
            ("isotonic", isotonic),
        ),
        exported_network(
            tmp_path / "npr",
            {"name": "npr", "extractor": "npr", "input_size": 32, **common},
            ("platt", {"slope": 0.7, "intercept": -0.2}),
        ),
        make_exported_model(tmp_path / "spectrum"),  # the spectrum's FFT, an uncalibrated sigmoid
    ]
    paths = sorted(str(p) for p in make_image_folder(tmp_path / "images", 6, 48).rglob("*.png"))
    scores = {}
    for name in INSTALLED:
        result = on_backend(name, SCORE_SCRIPT, *map(str, folders), stdin="\n".join(paths))
        assert result.returncode == 0, result.stderr[-3000:]
        answer = json.loads(result.stdout.strip().splitlines()[-1])
        assert answer["backend"] == name
        scores[name] = np.array([answer["scores"][str(folder)] for folder in folders])
    reference = scores[INSTALLED[0]]
    assert reference.shape == (3, 12) and not np.isnan(reference).any()
    assert reference.std(axis=1).min() > 1e-4  # the images get different scores
    for name in INSTALLED[1:]:
        np.testing.assert_allclose(scores[name], reference, rtol=0, atol=TOLERANCE, err_msg=name)


def test_a_jax_forward_pass_pads_into_the_programs_it_has_compiled():
    assert padded_size(32, []) == 32  # a stage's first, full batch: its own size
    assert padded_size(7, [32]) == 32  # its last, smaller batch: padded, not compiled again
    assert padded_size(48, [32]) == 64  # beyond: powers of two
    assert padded_size(1, []) == 1
    sizes: list[int] = []
    for count in range(1, 65):  # a server's micro-batches of every size
        size = padded_size(count, sizes)
        assert size >= count
        if size not in sizes:
            sizes.append(size)
    assert sizes == [1, 2, 4, 8, 16, 32, 64]


def test_the_forward_pass_of_this_backend_equals_the_models_own_call():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.BatchNormalization()(x)  # inference mode: its moving statistics
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    images = np.random.default_rng(0).integers(0, 256, (11, 8, 8, 3)).astype(np.uint8)
    expected = keras.ops.convert_to_numpy(model(images.astype(np.float32), training=False))
    forward = backend.forward_pass(model)
    for batch in (images[:8], images[8:]):  # a full batch, then a smaller last one
        outputs = forward(batch)
        assert isinstance(outputs, np.ndarray) and outputs.shape == (len(batch), 4)
    np.testing.assert_allclose(
        np.concatenate([forward(images[:8]), forward(images[8:])]), expected, atol=1e-5
    )
    model.layers[2].set_weights([w + 1.0 for w in model.layers[2].get_weights()])
    changed = forward(images[:8])  # the weights as they are now, not as first compiled
    assert not np.allclose(changed, expected[:8], atol=1e-3)


REFUSAL_SCRIPT = """
from pipeline.core.errors import BackendMismatch
from pipeline.models.formats import check_writable
try:
    check_writable(["saved_model"])
except BackendMismatch as error:
    print(error)
"""


@pytest.mark.parametrize("name", [n for n in backend.BACKENDS if n != backend.TENSORFLOW])
def test_tensorflow_only_exports_are_refused_on_another_backend_with_the_reason(name):
    if name not in INSTALLED:
        pytest.skip(f"{name} is not installed")
    result = on_backend(name, REFUSAL_SCRIPT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "saved_model export" in result.stdout
    assert f"runs Keras on {name}" in result.stdout and "KERAS_BACKEND=tensorflow" in result.stdout


def test_this_backend_lists_its_gpus_and_refuses_only_what_it_cannot_do():
    assert isinstance(backend.gpus(), list)  # [] on a machine without GPUs, such as CI's
    if backend.name() == backend.TENSORFLOW:
        backend.require_tensorflow("anything")
    else:
        with pytest.raises(BackendMismatch, match="needs Keras' TensorFlow backend"):
            backend.require_tensorflow("The saved_model export")
