import keras
import numpy as np
import pytest
from PIL import Image

from conftest import backbone_config, make_image_folder
from pipeline.backbones import extractor_from_spec
from pipeline.metrics import robustness_metrics
from pipeline.robustness import PERTURBATIONS, perturbed_outputs
from pipeline.runtime import compiled


def test_perturbations_change_pixels_but_not_files(tmp_path):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8))
    for name, perturb in PERTURBATIONS.items():
        out = perturb(image)
        assert out.mode == "RGB"
        assert out.size != image.size or np.any(np.asarray(out) != np.asarray(image)), name
    assert PERTURBATIONS["downscale_0.5"](image).size == (40, 32)
    assert PERTURBATIONS["center_crop_0.75"](image).size == (60, 48)


@pytest.mark.parametrize(
    ("name", "size", "mode"), [("vgg16", 32, "resize"), ("spectrum", 32, "center_crop")]
)
def test_scores_per_perturbation_on_a_small_fixture(tmp_path, name, size, mode):
    folder = make_image_folder(tmp_path / "images", per_class=4, size=48)
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    before = {p: (tmp_path / p).stat().st_mtime for p in paths}
    files_before = sorted(folder.rglob("*"))
    keras.utils.set_random_seed(0)
    extractor = extractor_from_spec(backbone_config(name, input_size=size, weights=None))
    forward = compiled(keras.Sequential([extractor, keras.layers.Dense(1, activation="sigmoid")]))
    outputs = perturbed_outputs(forward, paths, size, mode, width=1)
    assert set(outputs) == set(PERTURBATIONS)
    scores = {name: values[:, 0] for name, values in outputs.items()}
    labels = np.array([0] * 4 + [1] * 4)  # sorted: ai_*, then real_*
    results = robustness_metrics(labels, scores, 0.5)
    assert results["jpeg_90"]["images"] == 8 and results["jpeg_50"]["images"] == 8
    if mode == "center_crop":  # half of 48 px is under the 32 px crop: skipped, not resampled
        assert results["downscale_0.5"]["images"] == 0
        assert results["downscale_0.5"]["skipped"] == 8
        assert results["downscale_0.5"]["accuracy"] is results["downscale_0.5"]["roc_auc"] is None
    else:
        assert 0 <= results["downscale_0.5"]["accuracy"] <= 1
    assert not np.allclose(scores["jpeg_90"], scores["gaussian_blur_1"])
    assert {p: (tmp_path / p).stat().st_mtime for p in paths} == before
    assert sorted(folder.rglob("*")) == files_before  # nothing written
