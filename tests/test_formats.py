"""Deployment formats: each written from a tiny model, reloaded and checked against the scores it
must reproduce; what cannot be converted is reported, not written; LiteRT scores without
TensorFlow through the same decoding as the CLI."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, make_exported_model, synthetic_image
from pipeline.core.errors import StageFailed
from pipeline.core.io import write_json
from pipeline.models.formats import FORMATS, float_check, quantized_check, write_and_check
from pipeline.models.runtime import image_batches
from pipeline.serving import predict
from pipeline.stages import export

SIZE = 32


def tiny_convertible_model():
    """A small convolutional model that every converter handles: pixels 0..255 in, P(real) out."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(16, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(128, activation="relu")(x)  # enough weights for int8 to quantise
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def images_and_scores(tmp_path_factory):
    """Check images written to disk, decoded by the shared path, and the Keras model's scores."""
    folder = tmp_path_factory.mktemp("check")
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for index in range(24):
        label = ("real", "ai")[index % 2]
        synthetic_image(label, 40, rng).save(folder / f"{index}.png")
        paths.append(str(folder / f"{index}.png"))
        labels.append(label)
    model = tiny_convertible_model()
    images = np.concatenate([batch for batch, _ in image_batches(paths, SIZE, 8)])
    scores = model(images.astype(np.float32)).numpy()[:, 0].astype(np.float64)
    sample = pd.DataFrame({"id": map(str, range(24)), "label": labels, "p_real": scores})
    return model, images, sample.assign(path=paths)


@pytest.fixture(scope="module")
def written(images_and_scores, tmp_path_factory):
    """Every format written and checked once (the converters take seconds each)."""
    model, images, sample = images_and_scores
    folder = tmp_path_factory.mktemp("formats")
    is_real = (sample["label"] == "real").to_numpy()
    threshold = float(np.median(sample["p_real"]))
    results = {
        name: write_and_check(
            name, model, SIZE, folder, images, sample["p_real"].to_numpy(), is_real, threshold
        )
        for name in FORMATS
    }
    return folder, results


@pytest.mark.parametrize("name", ["saved_model", "litert"])
def test_float_formats_reproduce_the_keras_scores(written, name):
    folder, results = written
    assert (folder / FORMATS[name].file).exists()
    assert results[name]["passed"] and results[name]["max_abs_diff"] <= 1e-4
    assert results[name]["images"] == 24


def test_the_int8_format_records_verdict_agreement_and_auc_change(written):
    folder, results = written
    int8 = results["litert_int8"]
    assert (folder / "model_int8.tflite").stat().st_size < (folder / "model.tflite").stat().st_size
    assert 0.0 <= int8["verdict_agreement"] <= 1.0 and int8["roc_auc_change"] is not None
    assert int8["passed"] == (int8["verdict_agreement"] >= 0.95 and int8["roc_auc_change"] >= -0.02)


def test_the_saved_model_serves_float_and_uint8_pixels(written, images_and_scores):
    import tensorflow as tf

    folder, _ = written
    _, images, sample = images_and_scores
    loaded = tf.saved_model.load(str(folder / "saved_model"))
    as_float = loaded.signatures["serving_default"](rgb=tf.constant(images, tf.float32))
    as_uint8 = loaded.signatures["serve_uint8"](rgb=tf.constant(images))
    for outputs in (as_float, as_uint8):
        assert np.allclose(outputs["p_real"].numpy(), sample["p_real"], atol=1e-5)


def test_checks_fail_when_scores_drift():
    evaluated = np.array([0.1, 0.4, 0.6, 0.9])
    assert not float_check(evaluated + 2e-4, evaluated)["passed"]
    assert not float_check(np.full(4, np.nan), evaluated)["passed"]
    flipped = quantized_check(1 - evaluated, evaluated, np.array([0, 0, 1, 1]), 0.5)
    assert flipped["verdict_agreement"] == 0.0 and flipped["roc_auc_change"] == -1.0
    assert not flipped["passed"]


def test_a_quantised_format_may_swap_one_near_tied_pair_of_a_small_test_split():
    """Four real and four AI images: one pair ranked the other way round moves the ROC-AUC by
    1/16, which a small test split cannot help; two pairs fail, as any verdict change does."""
    is_real = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    evaluated = np.array([0.30, 0.31, 0.32, 0.4990, 0.4995, 0.70, 0.71, 0.72])
    one_swap = evaluated.copy()
    one_swap[3], one_swap[4] = 0.4996, 0.4991  # both still under the threshold 0.5
    assert quantized_check(one_swap, evaluated, is_real, 0.5)["passed"]
    two_swaps = one_swap.copy()
    two_swaps[2] = 0.4993
    result = quantized_check(two_swaps, evaluated, is_real, 0.5)
    assert result["roc_auc_change"] == -2 / 16 and not result["passed"]


def test_export_fails_the_stage_on_a_format_that_disagrees(images_and_scores, tmp_path):
    model, _, sample = images_and_scores
    info = {"input_size": SIZE, "input_mode": "resize", "threshold": 0.5}
    with pytest.raises(StageFailed, match="saved_model export"):
        export.export_formats(model, ["saved_model"], tmp_path, sample.assign(p_real=0.0), info)


def test_a_backbone_litert_cannot_convert_is_recorded_with_the_reason(tmp_path):
    from pipeline.serving.inference import load_exported

    model, _ = load_exported(make_exported_model(tmp_path / "spectrum"))
    images = np.zeros((2, SIZE, SIZE, 3), np.uint8)
    evaluated = model(images.astype(np.float32)).numpy()[:, 0]
    result = write_and_check("litert", model, SIZE, tmp_path, images, evaluated, [0, 1], 0.5)
    assert result["file"] is None and not (tmp_path / "model.tflite").exists()
    assert "FFT2D" in result["not_convertible"] and len(result["not_convertible"]) < 300


def test_predict_with_litert_matches_keras_without_importing_tensorflow(written, tmp_path):
    folder, _ = written
    exported = tmp_path / "export"
    exported.mkdir()
    tiny_convertible_model().save(exported / "model.keras")
    (exported / "model.tflite").write_bytes((folder / "model.tflite").read_bytes())
    info = {"input_size": SIZE, "input_mode": "resize", "threshold": 0.5, "min_size": 32}
    write_json(exported / "model.json", info)
    synthetic_image("real", 48, np.random.default_rng(1)).save(tmp_path / "a.png")
    script = (
        "import json, sys; from pipeline.serving import predict;"
        f"rows = predict.predict([{str(tmp_path / 'a.png')!r}], {str(exported)!r},"
        " runtime='litert');"
        "print(json.dumps([rows[0]['p_real'], 'tensorflow' in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    litert_score, imported_tensorflow = json.loads(done.stdout.splitlines()[-1])
    assert not imported_tensorflow
    keras_score = predict.predict([str(tmp_path / "a.png")], exported)[0]["p_real"]
    assert abs(litert_score - keras_score) <= 1e-4
