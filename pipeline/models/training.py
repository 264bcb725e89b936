"""Training a backbone on images, for the features stage: Keras' `fit` on batches streamed from
the prepared files through the project's one decode path (pipeline.data.images), with augmentation
of the training images only, class weights, validation every epoch, early stopping on validation
loss and a checkpoint every epoch from which a killed training resumes.

A backbone's `training` settings (configs/backbones/<name>.yaml) say how: `finetune` is Keras'
transfer-learning recipe in two phases (the head on the frozen backbone's features, then the top
`unfreeze` layers with the head at a low learning rate, batch normalisation kept in inference
mode); `scratch` trains every layer at once, batch normalisation in training mode. The network
is the backbone's extractor (pipeline.models.backbones) with a head of pipeline.models.head on top,
ending in a logit; the features stage then extracts features with the trained extractor, so that
every stage downstream treats a trained backbone like a frozen one.

The loop uses Keras APIs only (`fit`, callbacks, `keras.utils.PyDataset`), so that it runs on
any Keras backend.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from pipeline.core.errors import ConfigError
from pipeline.core.io import atomic_path, read_json, recover, write_json
from pipeline.data.images import LABELS, UnreadableImage, decode, shape_for_model
from pipeline.data.oversample import class_weights
from pipeline.models.backbones import CENTER_CROP, FINETUNE, SCRATCH, Backbone
from pipeline.models.degradations import blur, jpeg
from pipeline.models.engines import features_of
from pipeline.models.head import build_head, logit_loss, logit_metrics, seed_everything, train_head
from pipeline.models.runtime import compiled

if TYPE_CHECKING:
    from dvclive import Live

logger = logging.getLogger(__name__)
STATE_FILE, LAST_WEIGHTS, BEST_WEIGHTS, RANDOM_STATE = (
    "state.json",
    "last.weights.h5",
    "best.weights.h5",
    "random_state.npz",
)


def decode_workers(configured: int | None) -> int:
    """Threads that decode training images: the configured number, or one per core. Pillow
    releases the GIL while it decodes, resizes, blurs and encodes."""
    return configured or os.cpu_count() or 1


def augmented(
    image: Image.Image, rng: np.random.Generator, config: dict[str, Any], size: int, mode: str
) -> Image.Image:
    """One training image as augmentation draws it (CNNDetection's order: blur, JPEG, crop,
    flip), each step with its probability from `config` (a backbone's training.augment)."""
    if rng.random() < config["blur"]:
        image = blur(float(rng.uniform(*config["blur_sigma"])))(image)
    if rng.random() < config["jpeg"]:
        low, high = config["jpeg_quality"]
        image = jpeg(int(rng.integers(low, high + 1)))(image)
    if config["crop"] < 1:
        image = random_crop(image, rng, config["crop"], size if mode == CENTER_CROP else None)
    if rng.random() < config["flip"]:
        image = ImageOps.mirror(image)
    return image


def random_crop(
    image: Image.Image, rng: np.random.Generator, share: float, native: int | None
) -> Image.Image:
    """A square at a random place: of `native` pixels where the input mode keeps pixels at
    native resolution (nothing resampled; the mode refuses a smaller image), else of a random
    share from `share` to 1 of the shorter side, which the input mode then resizes."""
    side = native or round(min(image.size) * rng.uniform(share, 1.0))
    if native and min(image.size) < native:
        return image
    left = int(rng.integers(0, image.width - side + 1))
    top = int(rng.integers(0, image.height - side + 1))
    return image.crop((left, top, left + side, top + side))


class TrainingImages(keras.utils.PyDataset):
    """Batches of (uint8 images, labels, sample weights) read from image files, in an order drawn
    anew each epoch, augmented where `augment` is given. Every draw depends only on the seed, the
    epoch and the image's row, never on which worker decodes it or when, so that a resumed
    training sees the batches an uninterrupted one would.

    An image that cannot be used (corrupt, vanished, too small) is left out of its batch and
    recorded in `skipped` with its reason; a batch with no usable image becomes one black frame
    of weight 0, so that a training never stops on bad files.
    """

    def __init__(
        self,
        paths: list[str],
        labels: np.ndarray,
        size: int,
        mode: str,
        batch_size: int,
        seed: int,
        *,
        shuffle: bool = False,
        augment: dict[str, Any] | None = None,
        class_weight: np.ndarray | None = None,
        workers: int = 1,
        epoch: int = 0,
    ) -> None:
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=2 * workers)
        self.paths, self.labels = paths, np.asarray(labels, np.float32)
        self.size, self.mode, self.batch_size, self.seed = size, mode, batch_size, seed
        self.shuffle, self.augment, self.class_weight = shuffle, augment, class_weight
        self.skipped: dict[str, str] = {}
        self._lock = threading.Lock()
        self.start_epoch(epoch)

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        count = len(self.paths)
        order = np.random.default_rng([self.seed, epoch]).permutation(count)
        self.order = order if self.shuffle else np.arange(count)

    def __len__(self) -> int:
        return math.ceil(len(self.paths) / self.batch_size)

    def on_epoch_end(self) -> None:
        # Keras calls this after its workers have finished the epoch's batches
        self.start_epoch(self.epoch + 1)

    def load(self, row: int) -> np.ndarray:
        path = self.paths[row]
        image = decode(path)
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, row])
            image = augmented(image, rng, self.augment, self.size, self.mode)
        return shape_for_model(image, self.size, self.mode, path)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        images, kept = [], []
        for row in rows:
            try:
                images.append(self.load(row))
                kept.append(row)
            except UnreadableImage as error:
                with self._lock:
                    if self.paths[row] not in self.skipped:
                        logger.warning("training skips %s", error)
                    self.skipped[self.paths[row]] = error.reason
        if not images:
            black = np.zeros((1, self.size, self.size, 3), np.uint8)
            return black, np.zeros(1, np.float32), np.zeros(1, np.float32)
        labels = self.labels[kept]
        weights = (
            self.class_weight[labels.astype(int)]
            if self.class_weight is not None
            else np.ones(len(kept), np.float32)
        )
        return np.stack(images), labels, weights.astype(np.float32)

    def skip_counts(self) -> dict[str, int]:
        return {
            reason: list(self.skipped.values()).count(reason)
            for reason in sorted(set(self.skipped.values()))
        }


class CurvesToLive(keras.callbacks.Callback):
    """A training's curves into a DVCLive Live, as <prefix>/train/<metric> and
    <prefix>/eval/<metric> from step 0, after re-logging the epochs of `replay` (those a resumed
    training already ran). DVCLive's own Keras callback names them alike but without a prefix,
    and ends its Live after one fit, whereas one Live here logs several trainings."""

    def __init__(self, live: Live, prefix: str, replay: list[dict[str, float]] = ()) -> None:
        super().__init__()
        self.live, self.prefix, self.replay = live, prefix, list(replay)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.live.step = 0
        for epoch_logs in self.replay:
            self.on_epoch_end(0, epoch_logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        # imported here: DVCLive brings DVC, which a device machine running only the training
        # step (benchmarks.gpu) need not have
        from dvclive.utils import standardize_metric_name

        for metric, value in (logs or {}).items():
            if metric == "seconds":
                continue
            split_metric = standardize_metric_name(metric, "dvclive.keras")
            self.live.log_metric(f"{self.prefix}/{split_metric}", value)
        self.live.next_step()


class ResumableTraining(keras.callbacks.Callback):
    """Keras' BackupAndRestore and EarlyStopping(monitor="val_loss", restore_best_weights=True)
    in one callback, with what BackupAndRestore leaves out: the early-stopping state, the best
    weights so far, the state of the layers' random generators (Dropout's, which `save_weights`
    does not save) and every epoch's logs. All of it is written at each epoch's end into
    `folder`, swapped in whole (pipeline.core.io), so that a kill at any moment leaves the last
    complete epoch; `fingerprint` names the training (settings, seed, images), and a checkpoint
    of another training is discarded rather than resumed."""

    def __init__(self, folder: Path, fingerprint: str, patience: int, epochs: int) -> None:
        super().__init__()
        self.folder, self.fingerprint = Path(folder), fingerprint
        self.patience, self.epochs = patience, epochs
        self.epoch, self.best, self.best_epoch, self.wait = 0, math.inf, -1, 0
        self.stopped_early = False
        self.history: list[dict[str, float]] = []
        self._started = 0.0

    @property
    def finished(self) -> bool:
        return self.stopped_early or self.epoch >= self.epochs

    def saved_state(self) -> dict[str, Any] | None:
        """The checkpoint's state where one of this training exists; a stale one is removed."""
        state_file = self.folder / STATE_FILE
        if not state_file.is_file():
            return None
        state = read_json(state_file)
        if state.get("fingerprint") != self.fingerprint:
            logger.warning("discarding the checkpoint in %s: another training's", self.folder)
            clear_checkpoint(self.folder)
            return None
        return state

    def restore(self, model: keras.Model) -> int:
        """Load the last checkpoint of this training into `model` (built and compiled); the
        epoch to go on from (0 where there is none)."""
        state = self.saved_state()
        if state is None:
            return 0
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(self.folder / LAST_WEIGHTS)
        with np.load(self.folder / RANDOM_STATE) as stored:
            for variable, value in zip(random_state(model), stored.values(), strict=True):
                variable.assign(value)
        for key in ("epoch", "best", "best_epoch", "wait", "stopped_early", "history"):
            setattr(self, key, state[key])
        logger.warning("resuming the training in %s after epoch %d", self.folder, self.epoch)
        return self.epoch

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = {key: float(value) for key, value in (logs or {}).items()}
        self.history.append({**logs, "seconds": time.perf_counter() - self._started})
        self.epoch = epoch + 1
        improved = logs["val_loss"] < self.best
        if improved:
            self.best, self.best_epoch, self.wait = logs["val_loss"], epoch, 0
        else:
            self.wait += 1
            if self.wait >= self.patience and epoch > 0:
                self.stopped_early = self.model.stop_training = True
        self.save(improved)

    def save(self, improved: bool) -> None:
        previous_best = self.folder / BEST_WEIGHTS
        with atomic_path(self.folder) as tmp:
            tmp.mkdir()
            self.model.save_weights(tmp / LAST_WEIGHTS)
            if improved:
                self.model.save_weights(tmp / BEST_WEIGHTS)
            else:
                os.link(previous_best, tmp / BEST_WEIGHTS)
            np.savez(
                tmp / RANDOM_STATE,
                *[keras.ops.convert_to_numpy(v) for v in random_state(self.model)],
            )
            state = {
                key: getattr(self, key)
                for key in ("epoch", "best", "best_epoch", "wait", "stopped_early", "history")
            }
            write_json(tmp / STATE_FILE, {"fingerprint": self.fingerprint, **state})

    def restore_best(self, model: keras.Model) -> None:
        model.load_weights(self.folder / BEST_WEIGHTS)


def random_state(model: keras.Model) -> list[Any]:
    """The model's variables that its weights file leaves out: the random generators' states
    (and metric states, which each epoch resets)."""
    weights = {id(variable) for variable in model.weights}
    return [variable for variable in model.variables if id(variable) not in weights]


def clear_checkpoint(folder: Path) -> None:
    """Remove a training's checkpoint, and what a save cut short left beside it."""
    recover(folder)
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):  # the backbone's folder, once its last training's is gone
        folder.parent.rmdir()


def fingerprint(backbone: Backbone, seed: int, train: pd.DataFrame, val: pd.DataFrame) -> str:
    """What a training's result depends on: its settings, seed and images."""
    content = json.dumps(
        {
            "spec": dict(backbone.settings),
            "seed": seed,
            "train": train[["path", "label"]].values.tolist(),
            "val": val[["path", "label"]].values.tolist(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(content.encode()).hexdigest()


def unfreeze(extractor: keras.Model, backbone: Backbone) -> None:
    """Make trainable what the training trains: every layer (scratch), or for finetune the top
    `unfreeze` layers of the network's core (the keras.applications model inside its extractor,
    or the network itself; `all`: every layer) but its batch normalisation, which stays in
    inference mode as Keras' transfer-learning guide asks. A Keras 3 batch normalisation layer
    runs in inference mode when it is not trainable; a `training=False` in the graph would not
    do, since `fit` calls the model with training=True and that reaches every layer
    (keras-team/keras#20285)."""
    # each layer itself: a nested keras.applications model set untrainable when it was built
    # stays so when only its outer model is set trainable
    for layer in [extractor, *all_layers(extractor)]:
        layer.trainable = True
    if backbone.training_mode == SCRATCH:
        return
    count = backbone.settings["training"]["unfreeze"]
    core = backbone.kind.core(extractor)
    layers = [layer for layer in core.layers if not isinstance(layer, keras.layers.InputLayer)]
    if count != "all":
        if count > len(layers):
            raise ConfigError(
                f"backbones.{backbone.name}.training.unfreeze is {count}, but {core.name} has "
                f"{len(layers)} layers: give a number from 1 to {len(layers)}, or 'all'"
            )
        for layer in layers[: len(layers) - count]:
            layer.trainable = False
    for layer in all_layers(extractor):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of a model, those of the models nested in it included."""
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found += all_layers(layer)
    return found


def compiled_network(
    extractor: keras.Model,
    backbone: Backbone,
    head: keras.Model,
    steps_per_epoch: int = 1,
) -> keras.Model:
    """The network a training fits: the extractor, what of it trains made trainable, and the
    head, compiled with Adam at the training's learning rate (constant, or Keras' cosine decay
    to 0 over its epochs: a function of the optimizer's step count, which the checkpoint keeps,
    so a resumed training goes on where it was) and the logit's loss."""
    config = backbone.settings["training"]
    learning_rate = config["learning_rate"]
    if config["schedule"] == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=config["epochs"] * steps_per_epoch
        )
    unfreeze(extractor, backbone)
    inputs = keras.Input(extractor.input_shape[1:], name="rgb")
    network = keras.Model(inputs, head(extractor(inputs)), name=f"{backbone.name}_network")
    network.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=logit_loss(),
        metrics=logit_metrics(),
    )
    return network


def labels_of(rows: pd.DataFrame) -> np.ndarray:
    return rows["label"].map(LABELS.index).to_numpy(dtype=np.int64)


def first_phase_head(
    extractor: keras.Model,
    backbone: Backbone,
    train: pd.DataFrame,
    val: pd.DataFrame,
    seed: int,
    class_weight: np.ndarray,
) -> keras.Model:
    """Fine-tuning's first phase: the head on the frozen extractor's features of the training
    and validation images (pipeline.models.head, as the train stage fits heads)."""
    config = backbone.settings["training"]
    forward = compiled(extractor)
    sets = []
    for rows in (train, val):
        outputs = features_of(
            forward,
            rows["path"].tolist(),
            backbone.input_size,
            backbone.batch_size,
            backbone.input_mode,
        )
        usable = outputs["reason"] == ""
        sets.append((outputs["features"][usable], labels_of(rows)[usable]))
    head = {
        **config["head"],
        "epochs": config["epochs"],
        "batch_size": config["batch_size"],
        "patience": config["patience"],
    }
    return train_head(sets[0], sets[1], head, seed, class_weight=class_weight)


def train_network(
    extractor: keras.Model,
    backbone: Backbone,
    train: pd.DataFrame,
    val: pd.DataFrame,
    seed: int,
    checkpoint: Path,
    live: Live,
    prefix: str = "network",
) -> dict[str, Any]:
    """Train `extractor` (built from `backbone`) with a head on the `train` rows of splits.csv,
    validated and early-stopped on the `val` rows; its weights become the best epoch's. Resumes
    from `checkpoint` where an earlier run of the same training left one there. Curves go to
    `live` under `prefix`. Returns the training's record (epochs, time, skipped images)."""
    config = backbone.settings["training"]
    mode = backbone.training_mode
    seed_everything(seed)
    weights = class_weights(labels_of(train))
    resumable = ResumableTraining(
        checkpoint, fingerprint(backbone, seed, train, val), config["patience"], config["epochs"]
    )
    resuming = resumable.saved_state() is not None
    if mode == FINETUNE and not resuming:
        head = first_phase_head(extractor, backbone, train, val, seed, weights)
    else:
        head_config = config["head"]
        head = build_head(extractor.output_shape[-1], head_config["units"], head_config["dropout"])
    size, mode_name, workers = (
        backbone.input_size,
        backbone.input_mode,
        decode_workers(config["workers"]),
    )
    train_images = TrainingImages(
        train["path"].tolist(),
        labels_of(train),
        size,
        mode_name,
        config["batch_size"],
        seed,
        shuffle=True,
        augment=config["augment"],
        class_weight=weights,
        workers=workers,
    )
    val_images = TrainingImages(
        val["path"].tolist(),
        labels_of(val),
        size,
        mode_name,
        config["batch_size"],
        seed,
        workers=workers,
    )
    network = compiled_network(extractor, backbone, head, len(train_images))
    start = resumable.restore(network)
    train_images.start_epoch(start)
    curves = CurvesToLive(live, prefix, resumable.history)
    if resumable.finished:  # killed after its last epoch: nothing to train, the curves to log
        curves.on_train_begin()
    else:
        network.fit(
            train_images,
            validation_data=val_images,
            epochs=config["epochs"],
            initial_epoch=start,
            callbacks=[resumable, curves],
            shuffle=False,  # TrainingImages draws each epoch's order from the seed itself
            verbose=2,
        )
    resumable.restore_best(network)
    seconds = [epoch["seconds"] for epoch in resumable.history]
    return {
        "mode": mode,
        "train_images": len(train),
        "val_images": len(val),
        "epochs_run": resumable.epoch,
        "best_epoch": resumable.best_epoch + 1,
        "best_val_loss": resumable.best,
        "best_val_accuracy": resumable.history[resumable.best_epoch].get("val_accuracy")
        if resumable.history
        else None,
        "stopped_early": resumable.stopped_early,
        "seconds_per_epoch": float(np.median(seconds)) if seconds else None,
        # training and validation images decoded and run per second of a median epoch
        "images_per_second": (len(train) + len(val)) / float(np.median(seconds))
        if seconds
        else None,
        "skipped": {
            "train": train_images.skip_counts(),
            "val": val_images.skip_counts(),
        },
    }
