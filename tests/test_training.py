"""Training a backbone on images: the streamed batches, augmentation, resuming from a
checkpoint, fine-tuning's layers, and the features stage's outputs for a trained backbone."""

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import backbone_config, synthetic_image
from pipeline.core import paths
from pipeline.core.errors import ConfigError
from pipeline.core.tracking import open_live
from pipeline.models import training
from pipeline.models.backbones import Backbone, build_extractor
from pipeline.stages import features

NO_AUGMENTATION = {
    "flip": 0.0,
    "crop": 1.0,
    "blur": 0.0,
    "blur_sigma": [0.0, 3.0],
    "jpeg": 0.0,
    "jpeg_quality": [30, 100],
}


def image_rows(folder: Path, count: int = 24, size: int = 32, seed: int = 0) -> pd.DataFrame:
    """splits.csv-like rows of generated images: path, label, split, id, source_name."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        label = ("ai", "real")[i % 2]
        path = folder / f"{i:03d}.png"
        synthetic_image(label, size, rng).save(path)
        split = ("train", "train", "val", "test")[i % 4] if i >= 4 else ("train", "val")[i % 2]
        source = "" if label == "real" else ("gen_a", "gen_b")[(i // 2) % 2]
        rows.append(
            {"id": str(i), "path": str(path), "label": label, "split": split, "source_name": source}
        )
    return pd.DataFrame(rows)


def small_cnn(epochs: int = 3, **training) -> Backbone:
    spec = backbone_config(
        "cnn", input_size=16, widths=[4, 8], convs_per_stage=1, dense=0, batch_size=8
    )
    settings = {
        **spec,
        "training": {
            **spec["training"],
            "epochs": epochs,
            "batch_size": 4,
            "learning_rate": 0.01,
            "patience": 10,
            "workers": 1,
            "head": {"units": 4, "dropout": 0.5, "learning_rate": 0.01},
            "augment": {**NO_AUGMENTATION, "flip": 0.5, "jpeg": 0.5},
            **training,
        },
    }
    return Backbone.from_spec(settings)


def batches(dataset: training.TrainingImages) -> list[tuple]:
    return [dataset[i] for i in range(len(dataset))]


@pytest.mark.backend
def test_batches_depend_on_seed_and_epoch_only(tmp_path):
    rows = image_rows(tmp_path / "images")
    paths_, labels = rows["path"].tolist(), training.labels_of(rows)
    augment = {**NO_AUGMENTATION, "flip": 0.5, "crop": 0.7, "jpeg": 0.5, "blur": 0.5}
    common = {"shuffle": True, "augment": augment}

    def made(workers: int, epoch: int = 0) -> training.TrainingImages:
        return training.TrainingImages(
            paths_, labels, 16, "resize", 5, 7, workers=workers, epoch=epoch, **common
        )

    one, two = made(1), made(2)
    for (a, la, _), (b, lb, _) in zip(batches(one), batches(two), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    first = np.concatenate([labels for _, labels, _ in batches(one)])
    one.on_epoch_end()  # Keras' call after an epoch: the next epoch's order
    assert one.epoch == 1
    np.testing.assert_array_equal(batches(one)[0][0], batches(made(1, epoch=1))[0][0])
    assert sorted(first) == sorted(labels) and len(first) == len(rows)


def test_validation_batches_are_in_order_and_never_augmented(tmp_path):
    rows = image_rows(tmp_path / "images", count=8)
    dataset = training.TrainingImages(
        rows["path"].tolist(), training.labels_of(rows), 32, "resize", 3, 0
    )
    images = np.concatenate([batch[0] for batch in batches(dataset)])
    expected = np.stack([np.asarray(Image.open(path).convert("RGB")) for path in rows["path"]])
    np.testing.assert_array_equal(images, expected)


def test_a_bad_image_is_skipped_with_its_reason_never_a_crash(tmp_path):
    rows = image_rows(tmp_path / "images", count=6)
    Path(rows["path"][1]).write_bytes(b"not an image")
    Path(rows["path"][2]).unlink()
    weights = np.array([2.0, 0.5], np.float32)
    dataset = training.TrainingImages(
        rows["path"].tolist(), training.labels_of(rows), 16, "resize", 3, 0, class_weight=weights
    )
    images, labels, sample_weights = dataset[0]
    assert len(images) == 1 and sample_weights.tolist() == [weights[int(labels[0])]]
    assert dataset.skip_counts() == {"missing": 1, "not_an_image": 1}


def test_a_batch_of_only_bad_images_weighs_nothing(tmp_path):
    rows = image_rows(tmp_path / "images", count=2)
    for path in rows["path"]:
        Path(path).write_bytes(b"")
    dataset = training.TrainingImages(
        rows["path"].tolist(), training.labels_of(rows), 16, "resize", 2, 0
    )
    images, _, sample_weights = dataset[0]
    assert images.shape == (1, 16, 16, 3) and sample_weights.tolist() == [0.0]


def test_native_resolution_crops_keep_pixels_as_they_are():
    """A random window of the original pixels, at a random place: nothing resampled."""
    whole = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    places = set()
    for seed in range(20):
        crop = training.random_crop(Image.fromarray(whole), np.random.default_rng(seed), 0.5, 16)
        window = np.asarray(crop)
        found = [
            (y, x)
            for y in range(25)
            for x in range(25)
            if np.array_equal(whole[y : y + 16, x : x + 16], window)
        ]
        assert len(found) == 1
        places.add(found[0])
    assert len(places) > 1


def train_once(tmp_path: Path, rows: pd.DataFrame, backbone: Backbone, name: str, crash_after=None):
    """Train a fresh extractor of `backbone`; where `crash_after` is an epoch, the run stops there
    with an exception, as a kill would, leaving its checkpoint."""
    keras.utils.set_random_seed(0)
    extractor = build_extractor(backbone)
    with open_live(tmp_path / f"live-{name}") as live:
        if crash_after is not None:

            class Crash(keras.callbacks.Callback):
                def on_epoch_end(self, epoch, logs=None):
                    if epoch + 1 == crash_after:
                        raise KeyboardInterrupt

            original = training.CurvesToLive.on_epoch_end

            def crashing(self, epoch, logs=None):
                original(self, epoch, logs)
                Crash().on_epoch_end(epoch, logs)

            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(training.CurvesToLive, "on_epoch_end", crashing)
                with pytest.raises(KeyboardInterrupt):
                    train(extractor, backbone, rows, tmp_path, live)
            return None, None
        record = train(extractor, backbone, rows, tmp_path, live)
    return extractor, record


def train(extractor, backbone, rows, tmp_path, live):
    return training.train_network(
        extractor,
        backbone,
        rows[rows["split"] == "train"],
        rows[rows["split"] == "val"],
        0,
        tmp_path / "checkpoint",
        live,
    )


@pytest.mark.backend
def test_a_resumed_training_ends_with_the_uninterrupted_ones_weights(tmp_path):
    """Killed after its second epoch and started again, a training reaches the same weights as
    one that ran through: dropout's random state, the optimizer, the order and augmentation of
    each epoch all come back from the checkpoint."""
    rows = image_rows(tmp_path / "images")
    backbone = small_cnn(epochs=4)
    straight, record = train_once(tmp_path / "straight", rows, backbone, "straight")
    train_once(tmp_path / "resumed", rows, backbone, "first", crash_after=2)
    state = json.loads((tmp_path / "resumed/checkpoint" / training.STATE_FILE).read_text())
    assert state["epoch"] == 2
    resumed, resumed_record = train_once(tmp_path / "resumed", rows, backbone, "second")
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert record["epochs_run"] == resumed_record["epochs_run"] == 4
    curves = tmp_path / "resumed/live-second/plots/metrics/network/train/loss.tsv"
    assert pd.read_csv(curves, sep="\t")["step"].tolist() == [0, 1, 2, 3]


def test_a_resumed_cosine_schedule_goes_on_where_it_was(tmp_path):
    """The cosine decay is a function of the optimizer's step count, which the checkpoint
    keeps: resumed, the learning rate goes on from where it was, and so do the weights."""
    rows = image_rows(tmp_path / "images")
    backbone = small_cnn(epochs=3, schedule="cosine")
    straight, _ = train_once(tmp_path / "straight", rows, backbone, "straight")
    train_once(tmp_path / "resumed", rows, backbone, "first", crash_after=1)
    resumed, _ = train_once(tmp_path / "resumed", rows, backbone, "second")
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_another_trainings_checkpoint_is_discarded(tmp_path):
    rows = image_rows(tmp_path / "images")
    train_once(tmp_path, rows, small_cnn(epochs=3), "first", crash_after=1)
    _, record = train_once(tmp_path, rows, small_cnn(epochs=2, learning_rate=0.02), "other")
    assert record["epochs_run"] == 2


def test_early_stopping_keeps_the_best_epoch(tmp_path):
    rows = image_rows(tmp_path / "images")
    backbone = small_cnn(epochs=6, patience=1, learning_rate=0.5)  # too high: the loss jumps about
    _, record = train_once(tmp_path, rows, backbone, "stop")
    history = json.loads((tmp_path / "checkpoint" / training.STATE_FILE).read_text())["history"]
    losses = [epoch["val_loss"] for epoch in history]
    assert record["best_epoch"] == int(np.argmin(losses)) + 1
    assert record["stopped_early"] == (record["epochs_run"] < 6)


def test_fine_tuning_trains_only_the_top_layers_batch_norm_in_inference_mode(tmp_path):
    """unfreeze 6 of the small CNN's 11 layers: its second stage (convolution, batch norm,
    ReLU, pooling) and the pooling after it train; the first stage stays as it was, and batch
    normalisation keeps its statistics, as Keras' fine-tuning guide does."""
    rows = image_rows(tmp_path / "images")
    backbone = small_cnn(epochs=1, mode="finetune", unfreeze=6)
    keras.utils.set_random_seed(0)
    extractor = build_extractor(backbone)
    before = {layer.name: layer.get_weights() for layer in extractor.layers}
    with open_live(tmp_path / "live") as live:
        train(extractor, backbone, rows, tmp_path, live)
    after = {layer.name: layer.get_weights() for layer in extractor.layers}

    def same(name: str) -> bool:
        return all(np.array_equal(a, b) for a, b in zip(before[name], after[name], strict=True))

    assert same("stage1_conv1") and same("stage1_bn1")
    assert not same("stage2_conv1")
    gamma, beta, mean, variance = after["stage2_bn1"]
    np.testing.assert_array_equal(mean, before["stage2_bn1"][2])  # inference mode: unchanged
    np.testing.assert_array_equal(variance, before["stage2_bn1"][3])


@pytest.mark.parametrize(("mode", "unfreeze"), [("scratch", "all"), ("finetune", 3)])
def test_a_keras_application_trains_the_layers_its_mode_names(mode, unfreeze):
    """The keras.applications model nested in its extractor was built untrainable (frozen): a
    training makes its own layers trainable, every one (scratch) or the top `unfreeze` of them
    (finetune), so that fit updates them."""
    spec = backbone_config("vgg16", weights=None, input_size=32)
    spec = {**spec, "training": {**spec["training"], "mode": mode, "unfreeze": unfreeze}}
    backbone = Backbone.from_spec(spec)
    extractor = build_extractor(backbone)
    training.unfreeze(extractor, backbone)
    layers = [
        layer
        for layer in backbone.kind.core(extractor).layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    trained = layers if mode == "scratch" else layers[-unfreeze:]
    assert [layer.trainable for layer in layers] == [layer in trained for layer in layers]
    expected = {id(weight) for layer in trained for weight in layer.trainable_weights}
    assert expected and {id(weight) for weight in extractor.trainable_weights} == expected


def test_unfreezing_more_layers_than_the_network_has_is_refused(tmp_path):
    backbone = small_cnn(mode="finetune", unfreeze=500)
    extractor = build_extractor(backbone)
    with pytest.raises(ConfigError, match="unfreeze is 500, but cnn_features has"):
        training.unfreeze(extractor, backbone)


@pytest.mark.backend
def test_a_trained_backbone_writes_features_record_curves_and_crossgen_networks(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    rows = image_rows(tmp_path / "images", count=32)
    backbone = small_cnn(epochs=2)
    features.featurize(backbone, rows, seed=0)
    out = paths.features_dir("cnn")
    assert np.load(out / paths.FEATURES_FILE).shape == (32, 8)
    sets = json.loads((out / paths.CROSSGEN_SETS_FILE).read_text())
    assert sorted(map(tuple, sets.values())) == [("gen_a",), ("gen_b",)]
    for i in sets:
        assert np.load(out / paths.CROSSGEN_FEATURES / f"{i}.npy").shape == (32, 8)
    record = json.loads((paths.network_dir("cnn") / paths.NETWORK_RECORD_FILE).read_text())
    assert record["training"]["mode"] == "scratch" and record["training"]["crossgen_networks"] == 2
    curves = paths.curves_folder(paths.network_dir("cnn"))
    assert {folder.name for folder in curves.iterdir()} == {
        "network",
        "trained_on_gen_a",
        "trained_on_gen_b",
    }
    assert not (tmp_path / paths.CHECKPOINTS_DIR / "cnn").exists()  # served, then removed


def test_a_frozen_backbone_records_that_it_is_frozen(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = image_rows(tmp_path / "images", count=8)
    spectrum = Backbone.from_spec(backbone_config("spectrum", input_size=16, bins=4))
    features.featurize(spectrum, rows, seed=0)
    record = json.loads((paths.network_dir("spectrum") / paths.NETWORK_RECORD_FILE).read_text())
    assert record == {"training": "frozen"}
    assert not (paths.features_dir("spectrum") / paths.CROSSGEN_SETS_FILE).exists()
