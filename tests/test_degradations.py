"""Training-time augmentation: copies of training images only, seeded, in the features stage."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import backbone_config, make_image_folder
from pipeline.core import paths
from pipeline.models.backbones import Backbone
from pipeline.models.degradations import augment, copy_rng
from pipeline.stages.features import featurize

AUGMENT = {"copies": 2, "p": 1.0, "jpeg_quality": [30, 100], "blur_sigma": [0.5, 3.0]}


@pytest.fixture
def splits(tmp_path):
    folder = make_image_folder(tmp_path / "images", per_class=6, size=40)
    frame = pd.DataFrame({"path": sorted(str(p) for p in folder.rglob("*.png"))})
    frame["id"] = [f"i{i:02d}" for i in range(len(frame))]
    frame["label"] = ["ai"] * 6 + ["real"] * 6
    frame["split"] = (["train"] * 3 + ["val", "test", "train"]) * 2
    (tmp_path / "images" / "real" / "real_005.png").write_bytes(b"broken")  # a training image
    return frame


def test_augmented_copies_are_of_training_images_only_and_seeded(tmp_path, monkeypatch, splits):
    monkeypatch.chdir(tmp_path)
    backbone = Backbone.from_spec(backbone_config("spectrum", input_size=32, bins=8))
    runs = {}
    for name, config in (("plain", None), ("first", AUGMENT), ("again", AUGMENT)):
        featurize(backbone, splits, seed=3, augment=config)
        folder = paths.features_dir("spectrum")
        runs[name] = np.load(folder / paths.FEATURES_FILE)
        if config:
            with np.load(folder / paths.AUGMENTED_FILE) as stored:
                runs[name + "_augmented"] = {key: stored[key] for key in stored.files}
        else:
            assert not (folder / paths.AUGMENTED_FILE).exists()
    assert np.array_equal(runs["plain"], runs["first"])  # the images' own features are untouched
    augmented = runs["first_augmented"]
    train = splits[splits["split"] == "train"]
    readable = train[train["path"].map(lambda p: not p.endswith("real_005.png"))]
    assert sorted(augmented["ids"]) == sorted(readable["id"].tolist() * 2)  # the broken one: none
    assert not set(augmented["ids"]) & set(splits.loc[splits["split"] != "train", "id"])
    labels = dict(zip(splits["id"], splits["label"], strict=True))
    assert [("ai", "real")[y] for y in augmented["labels"]] == [labels[i] for i in augmented["ids"]]
    for key, values in augmented.items():  # seeded: the same copies again
        assert np.array_equal(values, runs["again_augmented"][key]), key
    originals = runs["plain"][splits.index[splits["id"].isin(augmented["ids"])]]
    assert not np.isclose(augmented["features"][:, None], originals[None]).all(axis=2).any()


def test_augment_draws_blur_and_jpeg_with_probability_p():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), np.uint8))
    kept = augment(image, copy_rng(0, 0, 0), {**AUGMENT, "p": 0.0})
    assert np.array_equal(np.asarray(kept), np.asarray(image))
    one, other = (augment(image, copy_rng(0, row, 0), AUGMENT) for row in (0, 1))
    assert not np.array_equal(np.asarray(one), np.asarray(other))
    again = augment(image, copy_rng(0, 0, 0), AUGMENT)
    assert np.array_equal(np.asarray(one), np.asarray(again))
