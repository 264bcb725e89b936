"""pipeline.models.runtime: what stages share at run time, and the import rules it makes
possible."""

import ast
import subprocess
import sys
import types
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest

from conftest import ROOT, make_image_folder
from pipeline.cli import STAGES
from pipeline.data.images import UnreadableImage, load_for_model
from pipeline.models.runtime import compiled, decoders, image_batches

pytestmark = pytest.mark.backend  # also run on JAX in CI (tests/test_backends.py)


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
    modules = imported_modules(f"import pipeline.stages.{stage}")
    assert f"pipeline.stages.{stage}" in modules
    assert not {"tensorflow", "keras"} & modules


def test_no_stage_module_imports_another():
    for stage in STAGES:
        tree = ast.parse((ROOT / "pipeline" / "stages" / f"{stage}.py").read_text())
        imported = {
            node.module.removeprefix("pipeline.stages.")
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            and (node.module or "").startswith("pipeline.stages.")
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


def images_of_every_kind(folder):
    """Good images of several sizes and formats, and one of each skip reason the decoders give."""
    from PIL import Image

    make_image_folder(folder, per_class=4, size=40)
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    Image.new("RGB", (90, 60), (200, 10, 30)).save(folder / "wide.jpg", quality=90)
    Image.new("L", (12, 12), 128).save(folder / "small.png")  # under a min_size of 16
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image")
    (folder / "truncated.jpg").write_bytes((folder / "wide.jpg").read_bytes()[:300])
    extra = ["wide.jpg", "small.png", "empty.png", "text.png", "truncated.jpg", "gone.png"]
    for offset, name in enumerate(extra):
        paths.insert(offset * 2, str(folder / name))
    return paths


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_any_number_of_decoders_gives_the_one_decode_paths_pixels_order_and_reasons(
    tmp_path, workers
):
    paths = images_of_every_kind(tmp_path / "images")
    expected_images, expected_reasons = [], []
    for path in paths:  # the one decode path, image by image in this process
        try:
            expected_images.append(load_for_model(path, 24, "resize", 16))
            expected_reasons.append("")
        except UnreadableImage as error:
            expected_images.append(np.zeros((24, 24, 3), np.uint8))
            expected_reasons.append(error.reason)
    assert {"too_small", "empty", "not_an_image", "truncated", "missing"} <= set(expected_reasons)
    batches = list(image_batches(paths, 24, batch_size=5, min_size=16, workers=workers))
    assert [len(images) for images, _ in batches] == [5, 5, 4]
    np.testing.assert_array_equal(np.concatenate([i for i, _ in batches]), expected_images)
    assert np.concatenate([r for _, r in batches]).tolist() == expected_reasons


def test_decoding_processes_never_run_the_main_module(tmp_path, monkeypatch):
    """A Streamlit app runs as __main__; a spawned decoder must not run it again."""
    script = tmp_path / "app.py"
    script.write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('main ran')\n")
    main = types.ModuleType("__main__")
    main.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", main)
    decoders.cache_clear()
    paths = images_of_every_kind(tmp_path / "images")[:4]
    assert len(list(image_batches(paths, 8, batch_size=2, workers=2))) == 2
    assert not (tmp_path / "ran").exists()
    assert sys.modules["__main__"] is main


def test_decoding_processes_are_started_once_and_a_broken_pool_is_replaced(tmp_path):
    paths = images_of_every_kind(tmp_path / "images")[:3]
    list(image_batches(paths, 8, batch_size=2, workers=2))
    pool = decoders(2)
    list(image_batches(paths, 8, batch_size=2, workers=2))
    assert decoders(2) is pool
    for process in list(pool._processes.values()):
        process.kill()
    with pytest.raises(BrokenProcessPool):
        list(image_batches(paths, 8, batch_size=2, workers=2))
    assert len(list(image_batches(paths, 8, batch_size=2, workers=2))) == 2
    assert decoders(2) is not pool


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
