import keras
import numpy as np
import pytest
from PIL import Image

from conftest import backbone_config, compose_params, make_image_folder
from pipeline.models.backbones import Backbone, build_extractor
from pipeline.models.degradations import grid
from pipeline.models.metrics import kind_and_level, robustness_metrics
from pipeline.models.runtime import compiled
from pipeline.stages.robustness import perturbed_outputs

GRID = grid(compose_params()["robustness"])


def test_the_configured_grid_has_every_level_in_order():
    assert list(GRID) == [
        "jpeg_95",
        "jpeg_90",
        "jpeg_75",
        "jpeg_50",
        "jpeg_30",
        "blur_0.5",
        "blur_1",
        "blur_2",
        "blur_3",
        "downscale_0.75",
        "downscale_0.5",
        "downscale_0.25",
        "center_crop_0.75",
        "reencode_jpeg95",
    ]
    assert kind_and_level("downscale_0.25") == ("downscale", "0.25")
    assert kind_and_level("center_crop_0.75") == ("center_crop", "0.75")
    assert kind_and_level("none") == ("none", "")
    assert list(grid({"jpeg_quality": [70], "blur_sigma": []})) == ["jpeg_70"]


def test_levels_change_pixels_more_as_they_get_stronger_and_never_files():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8))
    pixels = np.asarray(image, dtype=float)

    def change(name):
        out = GRID[name](image)
        assert out.mode == "RGB"
        return np.abs(np.asarray(out, dtype=float) - pixels).mean()

    for kind, levels in (
        ("jpeg", ["95", "75", "30"]),
        ("blur", ["0.5", "1", "3"]),
        ("downscale", ["0.75", "0.5", "0.25"]),
    ):
        changes = [change(f"{kind}_{level}") for level in levels]
        assert 0 < changes[0] < changes[1] < changes[2], kind
    # downscaling comes back to the image's own size; the crop keeps native pixels
    assert GRID["downscale_0.25"](image).size == image.size
    assert GRID["center_crop_0.75"](image).size == (60, 48)
    # the same-format re-encode turns a PNG into what a JPEG of quality 95 decodes to
    assert 0 < change("reencode_jpeg95") == pytest.approx(change("jpeg_95"))


@pytest.mark.parametrize(
    ("name", "size", "mode"), [("vgg16", 32, "resize"), ("spectrum", 32, "center_crop")]
)
def test_scores_per_perturbation_on_a_small_fixture(tmp_path, name, size, mode):
    folder = make_image_folder(tmp_path / "images", per_class=4, size=48)
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    before = {p: (tmp_path / p).stat().st_mtime for p in paths}
    files_before = sorted(folder.rglob("*"))
    keras.utils.set_random_seed(0)
    extractor = build_extractor(
        Backbone.from_spec(backbone_config(name, input_size=size, weights=None))
    )
    forward = compiled(keras.Sequential([extractor, keras.layers.Dense(1, activation="sigmoid")]))
    outputs = perturbed_outputs(forward, paths, size, mode, 1, GRID)
    assert set(outputs) == set(GRID)
    scores = {name: values[:, 0] for name, values in outputs.items()}
    labels = np.array([0] * 4 + [1] * 4)  # sorted: ai_*, then real_*
    results = robustness_metrics(labels, scores, 0.5)
    assert results["jpeg_90"]["images"] == 8 and results["jpeg_30"]["images"] == 8
    assert results["downscale_0.5"]["images"] == 8  # back to 48 px: never under the crop
    if mode == "center_crop":  # 0.75 of 48 px is 36 px: still over the 32 px crop
        assert results["center_crop_0.75"]["images"] == 8
    for values in results.values():
        assert {"real_accuracy", "ai_accuracy", "roc_auc", "accuracy"} <= set(values)
    assert not np.allclose(scores["jpeg_90"], scores["blur_1"])
    assert {p: (tmp_path / p).stat().st_mtime for p in paths} == before
    assert sorted(folder.rglob("*")) == files_before  # nothing written


def test_images_too_small_for_a_level_give_no_features(tmp_path):
    folder = make_image_folder(tmp_path / "images", per_class=2, size=40)
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    extractor = build_extractor(
        Backbone.from_spec(backbone_config("spectrum", input_size=32, bins=4))
    )
    outputs = perturbed_outputs(compiled(extractor), paths, 32, "center_crop", 4, GRID)
    assert np.isnan(outputs["center_crop_0.75"]).all()  # 30 px left, under the 32 px crop
    assert not np.isnan(outputs["downscale_0.25"]).any()  # back to 40 px
