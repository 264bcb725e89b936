"""The Streamlit app through Streamlit's own AppTest (no browser)."""

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from conftest import ROOT, synthetic_image
from pipeline.data.images import load_for_model
from pipeline.serving.inference import load_exported


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def app(monkeypatch, exported_model):
    monkeypatch.setenv("AIIC_MODEL_DIR", str(exported_model))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    return at.run()


def metric(at, label_start):
    return next(m.value for m in at.metric if m.label.startswith(label_start))


def test_upload_shows_verdict_and_the_same_score_as_the_model(app, exported_model):
    data = png_bytes(synthetic_image("real", 48, np.random.default_rng(3)))
    app.file_uploader[0].set_value(("photo.png", data, "image/png")).run()
    app.button[0].click().run()
    assert not app.exception and not app.error
    p_score = float(metric(app, "p-score"))
    model, info = load_exported(exported_model)
    expected = model.predict(load_for_model(data, 32, info["input_mode"])[None], verbose=0)[0, 0]
    assert p_score == pytest.approx(float(expected), abs=1e-3)
    assert metric(app, "Verdict") == ("Real" if p_score >= 0.5 else "AI-generated")
    assert any("Reading:" in m.value for m in app.markdown)


def test_several_uploads_give_a_table(app):
    rng = np.random.default_rng(4)
    files = [(f"{i}.png", png_bytes(synthetic_image("ai", 40, rng)), "image/png") for i in range(3)]
    app.file_uploader[0].set_value(files).run()
    app.button[0].click().run()
    table = app.dataframe[0].value
    assert (
        list(table["image"]) == ["0.png", "1.png", "2.png"] and table["p-score"].between(0, 1).all()
    )


def test_an_image_prepare_refuses_is_refused_with_its_reason(app):
    app.file_uploader[0].set_value(("dot.png", png_bytes(Image.new("RGB", (1, 1))), "image/png"))
    app.run()
    app.button[0].click().run()
    assert not app.exception and not app.metric
    assert any(error.value == "dot.png: too_small" for error in app.error)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://169.254.169.254/latest/meta-data/", "non-public address"),
        ("http://127.0.0.1:9/x.png", "non-public address"),
        ("file:///etc/passwd", "only http and https"),
    ],
)
def test_url_refusals_are_shown(app, url, message):
    app.text_input[0].input(url).run()
    app.button[0].click().run()
    assert not app.exception
    assert any(message in error.value for error in app.error)


def test_no_model_says_to_run_dvc_repro(monkeypatch, tmp_path):
    monkeypatch.setenv("AIIC_MODEL_DIR", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert "dvc repro" in at.error[0].value


@pytest.fixture
def detail_app(monkeypatch, detail_model):
    monkeypatch.setenv("AIIC_MODEL_DIR", str(detail_model))
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()


def test_show_where_the_model_looks_draws_a_map_and_says_what_it_means(detail_app):
    data = png_bytes(synthetic_image("ai", 32, np.random.default_rng(5)))
    detail_app.file_uploader[0].set_value(("photo.png", data, "image/png")).run()
    detail_app.button[0].click().run()
    assert not detail_app.get("image")[1:]  # only the upload's thumbnail before the option
    (option,) = detail_app.toggle
    assert option.label == "Show where the model looks"
    option.set_value(True).run()
    assert not detail_app.exception and not detail_app.error
    assert metric(detail_app, "Verdict") == "Real"  # the result stays under the option
    thumbnail, shown = detail_app.get("image")
    assert shown.captions == ["Where the model looks: photo.png"]
    meaning = detail_app.caption[0].value
    assert "towards a real photograph" in meaning and "towards AI-generated" in meaning
    assert "not where an image was generated or edited" in meaning
    detail_app.file_uploader[0].set_value(("other.png", data, "image/png")).run()
    assert not detail_app.metric and not detail_app.toggle  # new inputs: the old result goes


def test_no_map_for_an_image_the_model_refuses(detail_app):
    detail_app.file_uploader[0].set_value(("dot.png", png_bytes(Image.new("RGB", (8, 8))), "x"))
    detail_app.run()
    detail_app.button[0].click().run()
    assert any(error.value == "dot.png: too_small" for error in detail_app.error)
    assert not detail_app.toggle and not detail_app.exception


def test_a_model_exported_before_maps_says_to_export_again(monkeypatch, tmp_path, detail_model):
    folder = tmp_path / "old"
    shutil.copytree(detail_model, folder)
    info = json.loads((folder / "model.json").read_text())
    del info["explain"]
    (folder / "model.json").write_text(json.dumps(info))
    monkeypatch.setenv("AIIC_MODEL_DIR", str(folder))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    data = png_bytes(synthetic_image("ai", 32, np.random.default_rng(5)))
    at.file_uploader[0].set_value(("photo.png", data, "image/png")).run()
    at.button[0].click().run()
    at.toggle[0].set_value(True).run()
    assert not at.exception and metric(at, "Verdict")
    assert "Run `dvc repro` to export it again" in at.error[0].value
