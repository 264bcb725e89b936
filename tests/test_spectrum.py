import keras
import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression

from conftest import backbone_config
from pipeline.models.backbones import Backbone, build_extractor


def spectrum(input_size: int, bins: int) -> keras.Model:
    return build_extractor(
        Backbone.from_spec(backbone_config("spectrum", input_size=input_size, bins=bins))
    )


def reference_spectrum(image: np.ndarray, bins: int) -> np.ndarray:
    """The same feature, computed directly with numpy."""
    gray = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    log_power = np.log(np.abs(np.fft.fft2(gray)) ** 2 + 1e-6)
    size = gray.shape[0]
    y, x = np.indices((size, size))
    radius = np.hypot(np.minimum(y, size - y), np.minimum(x, size - x))
    ring = np.minimum((radius / radius.max() * bins).astype(int), bins - 1)
    profile = np.array(
        [log_power[(ring == b) & (radius > 0)].mean() for b in range(bins)], dtype=np.float64
    )
    return (profile - profile.mean()) / (profile.std() + 1e-6)


def test_layer_matches_a_direct_numpy_computation():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    model = spectrum(32, 12)
    features = model.predict(images, verbose=0)
    expected = np.stack([reference_spectrum(image, 12) for image in images])
    np.testing.assert_allclose(features, expected, atol=2e-3)


def smooth_images(count: int, size: int, rng: np.random.Generator) -> list[Image.Image]:
    images = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
        images.append(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))
    return images


def upsampled(image: Image.Image) -> Image.Image:
    """A generator-style 2x up-sampling (nearest neighbour): it leaves a checkerboard spectrum."""
    half = image.resize((image.width // 2, image.height // 2), Image.Resampling.BILINEAR)
    return half.resize(image.size, Image.Resampling.NEAREST)


def test_separates_upsampled_images_from_their_originals():
    rng = np.random.default_rng(1)
    originals = smooth_images(120, 64, rng)
    images = np.stack([np.asarray(im) for im in originals + [upsampled(im) for im in originals]])
    labels = np.array([1] * 120 + [0] * 120)
    features = spectrum(64, 16).predict(images, verbose=0)
    train = np.arange(240) % 4 != 0
    classifier = LogisticRegression(max_iter=2000).fit(features[train], labels[train])
    assert classifier.score(features[~train], labels[~train]) >= 0.95


def test_saved_model_loads_in_safe_mode_and_gives_the_same_features(tmp_path):
    model = spectrum(32, 8)
    model.save(tmp_path / "spectrum.keras")
    reloaded = keras.saving.load_model(tmp_path / "spectrum.keras", safe_mode=True)
    images = np.random.default_rng(2).integers(0, 256, (3, 32, 32, 3)).astype(np.float32)
    expected = model.predict(images, verbose=0)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected)
