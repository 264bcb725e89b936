"""The Streamlit app through Streamlit's own AppTest (no browser)."""

import io

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from conftest import ROOT, synthetic_image
from pipeline.images import load_for_model
from pipeline.inference import load_exported


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
