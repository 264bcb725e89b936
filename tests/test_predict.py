import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import strict_loads, synthetic_image
from pipeline.core.entry import run
from pipeline.core.errors import ModelNotFound
from pipeline.data.images import load_for_model
from pipeline.models import backend
from pipeline.serving import predict
from pipeline.serving.inference import load_exported

pytestmark = pytest.mark.backend  # also run on JAX in CI (tests/test_backends.py)


@pytest.fixture
def mixed_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "inbox"
    (folder / "sub").mkdir(parents=True)
    synthetic_image("real", 48, rng).save(folder / "a_real.png")
    synthetic_image("ai", 40, rng).convert("RGB").save(folder / "b_ai.jpg")
    synthetic_image("ai", 40, rng).save(folder / "sub" / "c_nested.webp")
    (folder / "d_page.jpg").write_bytes(b"<html>Access denied</html>")
    (folder / "e_cut.jpg").write_bytes((folder / "b_ai.jpg").read_bytes()[:200])
    Image.new("RGB", (16, 16)).save(folder / "f_tiny.png")  # under the 32 px crop
    (folder / "notes.txt").write_text("not an image suffix: never listed")
    return folder


def run_cli(capsys, *args):
    predict.main([*map(str, args), "--format", "json"])
    return strict_loads(capsys.readouterr().out)


def test_folder_rows_and_reasons(capsys, mixed_folder, exported_model):
    rows = run_cli(capsys, mixed_folder, "--model", exported_model)
    by_name = {row["source"].rsplit("/", 1)[-1]: row for row in rows}
    assert list(by_name) == [
        *("a_real.png", "b_ai.jpg", "d_page.jpg", "e_cut.jpg", "f_tiny.png", "inbox")
    ]
    assert by_name["inbox"]["reason"] == "1 image(s) in sub-folders not scored: add --recursive"
    assert by_name["d_page.jpg"]["reason"] == "not_an_image"
    assert by_name["e_cut.jpg"]["reason"] == "truncated"
    assert by_name["f_tiny.png"]["reason"] == "too_small"
    for name in ("a_real.png", "b_ai.jpg"):
        row = by_name[name]
        assert 0 <= row["p_real"] <= 1 and row["reason"] == ""
        assert row["label"] == ("real" if row["p_real"] >= 0.5 else "ai")


def test_recursive_and_missing_paths(capsys, mixed_folder, exported_model, tmp_path):
    rows = run_cli(
        capsys, mixed_folder, tmp_path / "nope.png", "--recursive", "--model", exported_model
    )
    names = [row["source"].rsplit("/", 1)[-1] for row in rows]
    assert "c_nested.webp" in names and names[-1] == "nope.png"
    assert rows[-1]["reason"] == "missing"


def test_a_folder_of_sub_folders_says_how_to_score_them(capsys, exported_model, tmp_path):
    """A folder laid out real/ and ai/ (as `aiic evaluate` takes) holds no image itself."""
    rng = np.random.default_rng(5)
    for label in ("real", "ai"):
        (tmp_path / "bench" / label).mkdir(parents=True)
        synthetic_image(label, 40, rng).save(tmp_path / "bench" / label / "0.png")
    (tmp_path / "empty").mkdir()
    rows = run_cli(capsys, tmp_path / "bench", tmp_path / "empty", "--model", exported_model)
    assert [(row["source"], row["p_real"], row["reason"]) for row in rows] == [
        (str(tmp_path / "bench"), None, "2 image(s) in sub-folders not scored: add --recursive"),
        (str(tmp_path / "empty"), None, "no images"),
    ]
    rows = run_cli(capsys, tmp_path / "bench", "--recursive", "--model", exported_model)
    assert [row["source"].split("/")[-2:] for row in rows] == [["ai", "0.png"], ["real", "0.png"]]
    assert all(row["p_real"] is not None for row in rows)


def test_batch_scores_equal_single_image_scores(mixed_folder, exported_model):
    rows = predict.predict([str(mixed_folder / "a_real.png")], exported_model)
    model, info = load_exported(exported_model)
    image = load_for_model(mixed_folder / "a_real.png", info["input_size"], info["input_mode"])
    direct = float(model.predict(image[None], verbose=0)[0, 0])
    assert rows[0]["p_real"] == pytest.approx(direct, abs=1e-6)


def test_missing_model_is_a_clear_error(tmp_path, mixed_folder):
    with pytest.raises(ModelNotFound, match="run `dvc repro`"):
        predict.main([str(mixed_folder), "--model", str(tmp_path / "none")])


def test_a_missing_model_exits_non_zero_whatever_the_inputs(tmp_path, capsys):
    """`aiic predict /nonexistent --model /no/model` used to print a 'missing' row and exit 0."""
    with pytest.raises(SystemExit) as exited:
        run(lambda: predict.main([str(tmp_path / "nonexistent"), "--model", "/no/model"]), "x")
    assert exited.value.code == 1 and "No exported model" in capsys.readouterr().err


def test_images_prepare_refuses_are_refused_with_its_reasons(tmp_path, capsys, exported_model):
    """A 1x1 image used to be scored; model.json's min_size (prepare's data.min_size) holds."""
    model_dir = tmp_path / "model"
    shutil.copytree(exported_model, model_dir)
    info = json.loads((model_dir / "model.json").read_text())
    (model_dir / "model.json").write_text(json.dumps({**info, "min_size": 48}))
    rng = np.random.default_rng(0)
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    synthetic_image("real", 40, rng).save(tmp_path / "small.png")
    synthetic_image("real", 48, rng).save(tmp_path / "fine.png")
    names = ("dot.png", "small.png", "fine.png")
    rows = run_cli(capsys, *(tmp_path / name for name in names), "--model", model_dir)
    assert [row["reason"] for row in rows] == ["too_small", "too_small", ""]
    assert rows[2]["p_real"] is not None


def test_table_and_csv_formats(capsys, mixed_folder, exported_model):
    predict.main([str(mixed_folder / "a_real.png"), "--model", str(exported_model)])
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["source", "p_real", "label", "reason"] and len(table) == 2
    predict.main(
        [str(mixed_folder / "d_page.jpg"), "--model", str(exported_model), "--format", "csv"]
    )
    assert capsys.readouterr().out.splitlines()[1].endswith(",,,not_an_image")


def test_readings_agree_with_the_verdict():
    from pipeline.serving.inference import describe

    for threshold in (0.3, 0.5, 0.7):
        for p in np.linspace(0, 1, 101):
            reading = describe(p, threshold)
            if "uncertain" not in reading:
                assert ("real" in reading) == (p >= threshold), (p, threshold, reading)
    assert describe(0.35, 0.3) == describe(0.25, 0.3) == describe(0.3, 0.3)  # all uncertain
    assert describe(0.95, 0.5) == "likely a real photograph"
    assert describe(0.05, 0.5) == "likely AI-generated"


def test_explain_writes_one_map_per_scored_image_beside_the_usual_rows(
    capsys, mixed_folder, exported_model, tmp_path
):
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(mixed_folder / "a_real.png", other / "a_real.png")  # the same name twice
    maps = tmp_path / "maps"
    args = [mixed_folder, other / "a_real.png", "--recursive", "--model", exported_model]
    plain = run_cli(capsys, *args)
    rows = run_cli(capsys, *args, "--explain", maps)
    scored = [row for row in rows if row["p_real"] is not None]
    assert [row["source"] for row in rows] == [row["source"] for row in plain]
    assert [row["reason"] for row in rows] == [row["reason"] for row in plain]
    for row, before in zip(rows, plain, strict=True):
        assert row["p_real"] == pytest.approx(before["p_real"], abs=1e-6)
    assert len(scored) == 4 and all(row["map"] is None for row in rows if row not in scored)
    written = sorted(path.name for path in maps.iterdir())
    assert written == sorted(Path(row["map"]).name for row in scored)
    assert {"a_real.map.png", "a_real-2.map.png", "c_nested.map.png"} <= set(written)
    for row in scored:
        assert Image.open(row["map"]).format == "PNG"


@pytest.mark.skipif(
    backend.name() != backend.TENSORFLOW, reason="the LiteRT export is TensorFlow's"
)
def test_explain_maps_through_litert_too(tmp_path, capsys, detail_model):
    """Maps need forward passes only: the LiteRT runtime maps as Keras does."""
    pytest.importorskip("ai_edge_litert")
    from pipeline.models.formats import FORMATS

    model_dir = tmp_path / "model"
    shutil.copytree(detail_model, model_dir)
    model, _ = load_exported(model_dir)
    FORMATS["litert"].write(model, 32, model_dir / FORMATS["litert"].file)
    image = tmp_path / "photo.png"
    synthetic_image("ai", 32, np.random.default_rng(2)).save(image)
    by_runtime = {}
    for runtime in ("keras", "litert"):
        (row,) = run_cli(
            capsys,
            image,
            "--model",
            model_dir,
            "--runtime",
            runtime,
            "--explain",
            tmp_path / runtime,
        )
        by_runtime[runtime] = row
    assert by_runtime["litert"]["p_real"] == pytest.approx(by_runtime["keras"]["p_real"], abs=1e-5)
    keras_map, litert_map = (Image.open(by_runtime[r]["map"]) for r in ("keras", "litert"))
    difference = np.abs(np.asarray(keras_map, int) - np.asarray(litert_map, int))
    assert keras_map.size == litert_map.size and difference.mean() < 1  # the same picture


def test_explain_with_a_model_exported_before_maps_says_so(tmp_path, exported_model, mixed_folder):
    model_dir = tmp_path / "model"
    shutil.copytree(exported_model, model_dir)
    info = json.loads((model_dir / "model.json").read_text())
    del info["explain"]
    (model_dir / "model.json").write_text(json.dumps(info))
    with pytest.raises(ModelNotFound, match="export it again"):
        predict.main([str(mixed_folder), "--model", str(model_dir), "--explain", str(tmp_path)])
