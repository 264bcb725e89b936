"""The clip extractor: CLIP's image tower from KerasHub, as UnivFD uses it, in tiny sizes.

Tests that build a model skip where KerasHub (the clip extra) is not installed.
"""

import json
import sys

import keras
import numpy as np
import pandas as pd
import pytest

from conftest import compose_params, make_image_folder, make_project, run, set_yaml
from pipeline.core.errors import ConfigError, MissingWeights
from pipeline.models import backbones, clip
from pipeline.models.backbones import RESIZE_CROP, Backbone, build_extractor

needs_keras_hub = pytest.mark.skipif(
    not clip.keras_hub_installed(), reason="KerasHub (the clip extra) is not installed"
)
TINY = {
    "patch_size": 8,
    "hidden_dim": 32,
    "num_layers": 2,
    "num_heads": 2,
    "intermediate_dim": 64,
    "projection_dim": 16,
}
PRESET = "clip_vit_base_patch32"
# OpenAI's published vision towers (visual.* parameters of its CLIP checkpoints), position ids
# left out: they are KerasHub's non-trainable index, not weights.
PUBLISHED_PARAMETERS = {"clip_vit_base_patch32": 87_849_216, "clip_vit_large_patch14": 303_966_208}


def spec(**values):
    return {
        "name": "clip",
        "extractor": "clip",
        "preset": PRESET,
        "weights": None,
        "input_size": 32,
        "batch_size": 4,
        "architecture": TINY,
        **values,
    }


def pixels(count=3, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3)).astype(np.uint8)


@needs_keras_hub
def test_feature_is_the_projected_class_token_of_normalised_pixels():
    """What CLIPBackbone.get_vision_embeddings computes, on CLIP's normalisation of the pixels."""
    model = build_extractor(Backbone.from_spec(spec()))
    images = pixels()
    embedding = model.get_layer("clip_image_embedding")
    normalised = (images / 255.0 - np.array(clip.CLIP_MEAN)) / np.array(clip.CLIP_STD)
    tokens = embedding.encoder({"images": normalised.astype(np.float32)})
    expected = keras.ops.convert_to_numpy(embedding.projection(tokens[:, 0, :]))
    features = model.predict(images, verbose=0)
    assert features.shape == (3, TINY["projection_dim"]) and features.dtype == np.float32
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
    assert not model.trainable_weights
    assert Backbone.from_spec(spec()).input_mode == RESIZE_CROP


@needs_keras_hub
def test_saved_model_reloads_in_safe_mode_and_weights_reload_into_a_rebuilt_one(tmp_path):
    """The export's two paths: model.keras in safe mode, and backbone.weights.h5 loaded into the
    extractor rebuilt from its spec with weights null."""
    keras.utils.set_random_seed(0)
    model = build_extractor(Backbone.from_spec(spec()))
    images = pixels()
    expected = model.predict(images, verbose=0)
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_array_equal(reloaded.predict(images, verbose=0), expected)
    model.save_weights(tmp_path / "backbone.weights.h5")
    keras.utils.set_random_seed(1)
    rebuilt = build_extractor(Backbone.from_spec(spec()))
    assert not np.allclose(rebuilt.predict(images, verbose=0), expected)
    rebuilt.load_weights(tmp_path / "backbone.weights.h5")
    np.testing.assert_array_equal(rebuilt.predict(images, verbose=0), expected)


@needs_keras_hub
def test_offline_without_a_cached_preset_stops_with_one_paragraph(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    monkeypatch.setenv("AIIC_OFFLINE", "1")
    pretrained = spec(preset="clip_vit_large_patch14", weights="imagenet", input_size=224)
    del pretrained["architecture"]
    with pytest.raises(MissingWeights) as error:
        build_extractor(Backbone.from_spec(pretrained))
    message = str(error.value)
    folder = tmp_path / "kagglehub/models/keras/clip/keras/clip_vit_large_patch14"
    assert "preset clip_vit_large_patch14" in message and str(folder) in message
    assert "from_preset('clip_vit_large_patch14')" in message and "AIIC_OFFLINE is set" in message
    assert "backbones.clip.weights" in message and "\n" not in message


@needs_keras_hub
def test_pretrained_weights_come_from_kagglehubs_cache_offline(tmp_path, monkeypatch):
    """A preset laid out in kagglehub's cache as its download leaves it loads with no network,
    and the feature is that CLIP's image embedding (here a tiny CLIP under a preset's name)."""
    import keras_hub
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_model_handle

    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    monkeypatch.setenv("AIIC_OFFLINE", "1")
    monkeypatch.setitem(clip.ARCHITECTURES, PRESET, {**TINY, "image_size": 32})
    keras.utils.set_random_seed(0)
    vision = keras_hub.models.CLIPVisionEncoder(
        **{key: TINY[key] for key in clip.ARCHITECTURE_KEYS if key != "projection_dim"},
        image_shape=(32, 32, 3),
    )
    text = keras_hub.models.CLIPTextEncoder(
        vocabulary_size=50,
        embedding_dim=16,
        hidden_dim=16,
        num_layers=1,
        num_heads=2,
        intermediate_dim=32,
        max_sequence_length=8,
    )
    pretrained = keras_hub.models.CLIPBackbone(vision, text, TINY["projection_dim"])
    handle = parse_model_handle(clip.kaggle_handle(PRESET))
    cache = Cache()
    pretrained.save_to_preset(cache.get_path(handle))
    for file in ("config.json", "model.weights.h5", "metadata.json"):
        cache.mark_as_complete(handle, file)

    model = build_extractor(Backbone.from_spec(spec(weights="imagenet", architecture=None)))
    images = pixels()
    normalised = (images / 255.0 - np.array(clip.CLIP_MEAN)) / np.array(clip.CLIP_STD)
    expected = pretrained.get_vision_embeddings(normalised.astype(np.float32))
    np.testing.assert_allclose(
        model.predict(images, verbose=0), keras.ops.convert_to_numpy(expected), atol=1e-5
    )


def test_the_config_file_composes_into_a_valid_backbone(monkeypatch):
    monkeypatch.setattr(clip, "keras_hub_installed", lambda: True)
    params = compose_params("+backbones@backbones.clip=clip", "backbone=clip", "head=linear")
    settings = params["backbones"]["clip"]
    assert settings["preset"] == "clip_vit_large_patch14" and settings["input_size"] == 224
    assert isinstance(Backbone.from_spec(settings).kind, backbones.Clip)
    assert params["backbone"]["name"] == "clip" and params["head"]["units"] == 0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"preset": "clip_vit_huge"}, "backbones.clip.preset is 'clip_vit_huge'; allowed values"),
        ({"weights": "clip.h5"}, "backbones.clip.weights is 'clip.h5'; allowed values"),
        ({"architecture": {"depth": 2}}, "architecture key is 'depth'; allowed values"),
        ({"weights": "imagenet"}, "architecture changes the preset's shapes"),
        ({"weights": "imagenet", "architecture": None}, "input_size must be 224 for the"),
        ({"input_size": 36}, "input_size must be a multiple of the patch size 8, got 36"),
        ({"bins": 8}, "backbones.clip key is 'bins'; allowed values"),
    ],
)
def test_bad_settings_are_explained_before_any_work(monkeypatch, values, message):
    monkeypatch.setattr(clip, "keras_hub_installed", lambda: True)
    with pytest.raises(ConfigError, match=message):
        Backbone.from_spec(spec(**values))


def test_without_keras_hub_the_extra_is_named(monkeypatch):
    monkeypatch.setattr(clip, "keras_hub_installed", lambda: False)
    with pytest.raises(ConfigError, match=r"needs KerasHub: .*pip install -e '\.\[clip\]'"):
        Backbone.from_spec(spec())


@needs_keras_hub
@pytest.mark.slow  # builds the full towers: 88 and 304 million parameters
@pytest.mark.parametrize(
    ("preset", "width"), [("clip_vit_base_patch32", 512), ("clip_vit_large_patch14", 768)]
)
def test_preset_architectures_are_openais(preset, width):
    """By changing only preset and input_size: the feature width UnivFD uses (768 for ViT-L/14)
    and exactly the parameters of OpenAI's vision tower."""
    model = build_extractor(
        Backbone.from_spec(spec(preset=preset, input_size=224, architecture=None))
    )
    assert model.output_shape == (None, width)
    encoder = model.get_layer("clip_image_embedding").encoder
    position_ids = encoder.embedding.position_ids
    assert model.count_params() - int(np.prod(position_ids.shape)) == PUBLISHED_PARAMETERS[preset]


@needs_keras_hub
@pytest.mark.slow  # a whole `dvc repro`
def test_dvc_repro_with_a_tiny_clip_exports_a_model_that_scores_as_evaluate_did(tmp_path):
    """CLIP (tiny, random weights) beside the spectrum through every stage, with UnivFD's linear
    head, exported; `aiic predict` then scores test files as the train stage did."""
    source = make_image_folder(tmp_path / "images")
    project = make_project(
        tmp_path / "project", source, backbones={"spectrum": 32}, only=("spectrum",)
    )
    configs = project / "configs"
    config = (configs / "config.yaml").read_text()
    spectrum = "  - backbones@backbones.spectrum: spectrum\n"
    config = config.replace(spectrum, spectrum + "  - backbones@backbones.clip: clip\n")
    config = config.replace("- backbone: inceptionv3", "- backbone: clip")
    (configs / "config.yaml").write_text(config.replace("- head: dense", "- head: linear"))
    set_yaml(
        configs / "backbones" / "clip.yaml",
        preset=PRESET,
        weights=None,
        input_size=32,
        batch_size=16,
        architecture=TINY,
    )
    set_yaml(configs / "head" / "linear.yaml", epochs=3, batch_size=16, patience=2)
    run([sys.executable, "-m", "pipeline", "compose"], project)
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "clip"], project)

    output = run([sys.executable, "-m", "dvc", "repro"], project, timeout=1800).stdout
    assert "export: clip -> models/export/ (reloaded model matches evaluation" in output
    metrics = json.loads((project / "metrics/clip.json").read_text())
    assert set(json.loads((project / "metrics/clip_robustness.json").read_text())) >= {"none"}
    assert json.loads((project / "reports/balance/clip.json").read_text())["method"] == "smote"
    info = json.loads((project / "models/export/model.json").read_text())
    assert info["backbone"] == "clip" and info["input_mode"] == RESIZE_CROP
    assert info["test_metrics"] == metrics
    features = np.load(project / "data/features/clip/features.npy")
    assert features.shape[1] == TINY["projection_dim"]

    scores = pd.read_csv(project / "data/scores/clip.csv", dtype={"id": str}).head(4)
    splits = pd.read_csv(project / "data/prepared/splits.csv", dtype={"id": str}).set_index("id")
    paths = [str(project / splits.loc[i, "path"]) for i in scores["id"]]
    predicted = run(
        [sys.executable, "-m", "pipeline", "predict", *paths, "--format", "json"], project
    ).stdout
    p_real = [row["p_real"] for row in json.loads(predicted)]
    assert p_real == pytest.approx(scores["p_real"].tolist(), abs=1e-4)


@needs_keras_hub
def test_bfloat16_computes_close_to_float32_and_returns_float32():
    images = pixels()
    keras.utils.set_random_seed(0)
    full = build_extractor(Backbone.from_spec(spec())).predict(images, verbose=0)
    keras.utils.set_random_seed(0)
    mixed = build_extractor(Backbone.from_spec(spec(precision="bfloat16"))).predict(
        images, verbose=0
    )
    assert mixed.dtype == np.float32
    cosine = (full * mixed).sum(1) / np.linalg.norm(full, axis=1) / np.linalg.norm(mixed, axis=1)
    assert cosine.min() > 0.99
