"""pipeline.runtime: what stages share at run time, and the import rules it makes possible."""

import ast
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, make_image_folder
from pipeline.cli import STAGES
from pipeline.runtime import compiled, image_batches


def imported_modules(code: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", f"{code}; import sys; print(' '.join(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return set(result.stdout.split())


@pytest.mark.parametrize("stage", ["balance", "evaluate", "compare"])
def test_stages_that_read_cached_features_or_scores_import_no_tensorflow(stage):
    modules = imported_modules(f"import pipeline.{stage}")
    assert f"pipeline.{stage}" in modules
    assert not {"tensorflow", "keras"} & modules


def test_no_stage_module_imports_another():
    for stage in STAGES:
        tree = ast.parse((ROOT / "pipeline" / f"{stage}.py").read_text())
        imported = {
            node.module.removeprefix("pipeline.")
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline.")
        }
        assert imported & set(STAGES) - {stage} == set(), stage


def test_batches_keep_order_and_give_each_unusable_image_a_reason(tmp_path):
    folder = make_image_folder(tmp_path / "images", per_class=3, size=40)
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    (tmp_path / "empty.png").write_bytes(b"")
    paths.insert(2, str(tmp_path / "empty.png"))
    batches = list(image_batches(paths, 16, batch_size=3))
    images = np.concatenate([images for images, _ in batches])
    reasons = np.concatenate([reasons for _, reasons in batches])
    assert [len(images) for images, _ in batches] == [3, 3, 1]
    assert images.shape == (7, 16, 16, 3) and images.dtype == np.uint8
    assert reasons[2] != "" and list(reasons[:2]) + list(reasons[3:]) == [""] * 6
    assert not images[2].any()  # a black frame stands in for the unusable image


def test_the_forward_pass_is_traced_once_for_every_batch_size():
    import keras

    traces = []

    def body(images):
        traces.append(images.shape)  # Python runs here only while TensorFlow traces
        return images * 2.0

    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.Lambda(body)(inputs))
    built = len(traces)
    forward = compiled(model)
    for count in (8, 3, 5):
        images = np.full((count, 4, 4, 3), 1.5, np.float32)
        np.testing.assert_allclose(np.asarray(forward(images)), images * 2.0)
    assert len(traces) - built == 1
    assert compiled(model) is forward
