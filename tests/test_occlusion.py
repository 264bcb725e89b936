"""Occlusion maps and the deletion check (pipeline.models.occlusion), and their overlays
(pipeline.data.overlay): right cells, right signs, right pixels of the image for every input mode,
batched forward passes."""

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import synthetic_image
from pipeline.core.errors import ConfigError
from pipeline.data.images import INPUT_MODES, shape_for_model
from pipeline.data.overlay import draw_map, map_png
from pipeline.models.metrics import faithfulness
from pipeline.models.occlusion import (
    Occlusion,
    covered_copies,
    deletion_copies,
    deletion_curves,
    deletion_orders,
    occlusion_copies,
    occlusion_maps,
    scored,
)
from pipeline.serving.inference import forward, load_exported

SIZE, GRID = 40, 4  # cells of 10 x 10 pixels


def detail(images: np.ndarray, rows: slice, columns: slice) -> np.ndarray:
    """Mean absolute difference of neighbouring pixels in one part of each image."""
    part = images[:, rows, columns].astype(float)
    return np.abs(np.diff(part, axis=2)).mean(axis=(1, 2, 3))


def fine_detail_is_real(images: np.ndarray) -> np.ndarray:
    """A stand-in model: fine detail in the top-left cell says real, in the bottom-right AI."""
    evidence = detail(images, slice(0, 10), slice(0, 10)) - detail(
        images, slice(30, 40), slice(30, 40)
    )
    return 1 / (1 + np.exp(-evidence / 10))


@pytest.fixture
def noise():
    return np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


@pytest.mark.parametrize("fill", ["blur", "mean", "grey"])
def test_the_map_finds_the_cells_the_model_uses_and_which_way_they_push(noise, fill):
    p_real, maps = occlusion_maps(fine_detail_is_real, [noise], Occlusion(GRID, fill), 8)
    heat = maps[0]
    assert p_real[0] == pytest.approx(fine_detail_is_real(noise[None])[0])
    assert heat[0, 0] > 0.05  # covering the real-looking detail lowers P(real)
    assert heat[-1, -1] < -0.05  # covering the AI-looking detail raises it
    others = np.ones_like(heat, bool)
    others[0, 0] = others[-1, -1] = False
    assert np.abs(heat[others]).max() == 0  # the model never looks there


def test_a_copy_covers_its_cells_and_nothing_else(noise):
    (copy,) = covered_copies(noise, Occlusion(GRID, "grey"), [[1, 6]])  # row 0 col 1, row 1 col 2
    changed = (copy != noise).any(axis=2)
    expected = np.zeros((SIZE, SIZE), bool)
    expected[0:10, 10:20] = expected[10:20, 20:30] = True
    assert (changed == expected).all() and (copy[expected] == 128).all()
    stack = occlusion_copies(noise, Occlusion(GRID, "mean"))
    assert len(stack) == GRID * GRID + 1 and (stack[0] == noise).all()


def test_images_share_batches_and_keep_their_order(noise):
    batches = []

    def recorded(images):
        batches.append(len(images))
        return fine_detail_is_real(images)

    images = [noise, noise[::-1], noise[:, ::-1]]
    occlusion = Occlusion(GRID, "blur")
    p_real, maps = occlusion_maps(recorded, images, occlusion, 7)
    assert sum(batches) == 3 * (GRID * GRID + 1) and max(batches) == 7
    assert len(batches) == -(-sum(batches) // 7)  # full batches across images, one partial
    for image, p, heat in zip(images, p_real, maps, strict=True):
        alone_p, alone = occlusion_maps(fine_detail_is_real, [image], occlusion, 100)
        assert p == pytest.approx(alone_p[0]) and heat == pytest.approx(alone[0])
    assert scored(recorded, [], 4) == []


def test_maps_of_an_exported_model_go_through_its_compiled_forward_pass(exported_model):
    model, info = load_exported(exported_model)
    image = np.asarray(synthetic_image("ai", 32, np.random.default_rng(1)))
    occlusion = Occlusion(4, "blur")
    p_real, maps = occlusion_maps(forward(model), [image], occlusion, 32)
    predicted = model.predict(occlusion_copies(image, occlusion), verbose=0)[:, 0]
    assert p_real[0] == pytest.approx(predicted[0], abs=1e-5)
    assert maps[0].ravel() == pytest.approx(predicted[0] - predicted[1:], abs=1e-5)


def test_bad_settings_are_refused_with_the_allowed_values(noise):
    with pytest.raises(ConfigError, match="explain.fill is 'noise'; allowed values: 'blur'"):
        Occlusion(7, "noise")
    with pytest.raises(ConfigError, match="explain.grid is 1"):
        Occlusion(1, "blur")
    with pytest.raises(ConfigError, match="explain.grid is 64: over the model's 40 px input"):
        occlusion_copies(noise, Occlusion(64, "blur"))


def test_deletion_in_the_maps_order_beats_random_orders_for_a_faithful_map(noise):
    occlusion, steps, rng = Occlusion(GRID, "grey"), 4, np.random.default_rng(0)
    images = [np.roll(noise, shift, axis=(0, 1)) for shift in range(0, 40, 4)]
    p_real, maps = occlusion_maps(fine_detail_is_real, images, occlusion, 64)
    curves = []
    for image, p, heat in zip(images, p_real, maps, strict=True):
        towards_real = p >= 0.5
        orders = deletion_orders(heat, towards_real, 3, rng)
        assert sorted(orders[0]) == list(range(GRID * GRID))
        copies = deletion_copies(image, occlusion, orders, steps)
        assert len(copies) == 4 * (steps - 1) + 1
        curve = deletion_curves(p, fine_detail_is_real(copies), 4, steps, towards_real)
        assert curve.shape == (4, steps + 1) and (curve[:, 0] >= 0.5).all()
        curves.append(curve)
    curves = np.stack(curves)
    covered = np.linspace(0, 1, steps + 1)  # 16 cells in 4 steps: 4 at a time
    assert faithfulness(covered, curves[:, 0], curves[:, 1:])["verdict"] == "better than random"
    # the same check of a map that ranks the cells backwards
    backwards = faithfulness(covered, curves[:, 1], curves[:, [0]])
    assert backwards["verdict"] == "worse than random"


@pytest.mark.parametrize("mode", list(INPUT_MODES))
def test_each_input_modes_region_is_where_its_pixels_come_from(mode):
    image = synthetic_image("real", 96, np.random.default_rng(2)).resize((150, 96))
    left, top, right, bottom = INPUT_MODES[mode].region(image.width, image.height, 32)
    shaped = shape_for_model(image, 32, mode)
    if mode == "center_crop":  # native pixels: the region is exactly the crop
        assert (shaped == np.asarray(image.crop((left, top, right, bottom)))).all()
    elif mode == "resize_crop":
        box_resized = image.resize(
            (32, 32), Image.Resampling.BICUBIC, box=(left, top, right, bottom)
        )
        assert (shaped == np.asarray(box_resized)).all()
        assert (shaped == np.asarray(ImageOps.fit(image, (32, 32), Image.Resampling.BICUBIC))).all()
    else:
        assert (left, top, right, bottom) == (0, 0, 150, 96)


@pytest.mark.parametrize(("mode", "outlined"), [("resize", False), ("center_crop", True)])
def test_the_overlay_lies_over_the_models_region_with_its_colour_scale(mode, outlined):
    image = synthetic_image("ai", 64, np.random.default_rng(3)).resize((600, 300))
    heat = np.zeros((GRID, GRID))
    heat[0, 0], heat[-1, -1] = 0.3, -0.2
    region = INPUT_MODES[mode].region(600, 300, 200)
    figure = draw_map(image, heat, region, "title")
    axes, bar = figure.axes
    drawn = axes.images[1]
    scale = 384 / 600  # drawn at most 384 px on its longer side
    left, top, right, bottom = (value * scale for value in region)
    assert drawn.get_extent() == pytest.approx([left, right, bottom, top])
    colours = drawn.get_array()
    assert colours[0, 0, 2] > colours[0, 0, 0]  # blue: towards real
    assert colours[-1, -1, 0] > colours[-1, -1, 2]  # red: towards AI-generated
    assert colours[1, 1, 3] == 0  # a cell that changes nothing is left clear
    labels = [label.get_text() for label in bar.get_xticklabels()]
    assert "more AI-generated" in labels[0] and "more real" in labels[-1]
    assert len(axes.patches) == (2 if outlined else 0)
    assert ("outlined part" in axes.get_xlabel()) == outlined
    assert "no part alone" not in axes.get_xlabel()
    flat_axes = draw_map(image, heat / 100, region).axes[0]
    assert "no part alone moves the p-score by 0.01 or more" in flat_axes.get_xlabel()
    png = Image.open(io.BytesIO(map_png(image, heat, region)))
    assert png.format == "PNG" and png.width > 300
