"""The blend stage: composites of a real and an AI image through known masks, their scores, and
the statistics evaluate makes of them (pipeline.models.metrics)."""

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import EXPLAINED_BACKBONES, compose_params, make_trained_project, synthetic_image
from pipeline.core import paths
from pipeline.core.errors import ConfigError
from pipeline.models.metrics import blend_metrics, map_localisation
from pipeline.models.occlusion import Occlusion, occlusion_maps
from pipeline.stages import blend
from pipeline.stages.blend import cell_shares, composite, composites, mask, plan, reencoded

FRACTIONS = [0, 0.05, 0.1, 0.25, 0.5, 0.75, 1]
SETTINGS = {"fractions": FRACTIONS, "feather": 0.1, "encode": "png", "jpeg_quality": 90}


def images(size, count=3, seed=0):
    """`count` (real, AI) pairs of synthetic images, by id: smooth noise, and the same with a
    fine checkerboard."""
    rng = np.random.default_rng(seed)
    made = {}
    for i in range(count):
        for label in ("real", "ai"):
            made[f"{label}{i}"] = np.asarray(synthetic_image(label, size, rng))
    return made, [(f"real{i}", f"ai{i}") for i in range(count)]


@pytest.mark.parametrize("size", [8, 16, 32])
def test_masks_cover_the_area_fraction_their_rows_record(size):
    _, pairs = images(size)
    rows = plan(pairs, SETTINGS, size, seed=7)
    assert len(rows) == 2 * len(FRACTIONS) * len(pairs) * 2
    assert set(rows["direction"]) == set(paths.BLEND_DIRECTIONS)
    for row in rows.itertuples():
        weights = mask(size, (row.top, row.left, row.height, row.width), row.feather)
        pasted = weights.mean()
        ai = pasted if row.direction == "ai_in_real" else 1 - pasted
        # the mask's mean is the recorded AI fraction, soft masks' included (their blur keeps
        # the sum), and whole pixels put it within half a row of the nominal fraction
        assert ai == pytest.approx(row.ai_fraction, abs=1e-9)
        assert abs(row.ai_fraction - row.fraction) <= 0.5 / size
        assert weights.min() >= 0 and weights.max() <= 1
        if row.mask == "hard":
            assert set(np.unique(weights)) <= {0.0, 1.0}
            assert weights.sum() == row.height * row.width
        elif 0 < row.height * row.width < size**2:
            assert ((weights > 0) & (weights < 1)).any()  # feathered edges
    hard, soft = rows[rows["mask"] == "hard"], rows[rows["mask"] == "soft"]
    box = ["direction", "fraction", "pair", "top", "left", "height", "width"]
    assert hard[box].to_numpy().tolist() == soft[box].to_numpy().tolist()  # one rectangle
    assert (hard["feather"] == 0).all() and (soft["feather"] == 0.1 * size).all()
    ends = rows[rows["fraction"].isin([0, 1])]
    assert (ends["ai_fraction"] == ends["fraction"]).all()  # exact: nothing or everything


def test_layouts_are_seeded():
    _, pairs = images(16)
    first, again = plan(pairs, SETTINGS, 16, seed=3), plan(pairs, SETTINGS, 16, seed=3)
    pd.testing.assert_frame_equal(first, again)
    other = plan(pairs, SETTINGS, 16, seed=4)
    assert not first[["top", "left"]].equals(other[["top", "left"]])


def test_a_composite_is_its_donor_inside_the_mask_and_its_base_outside():
    made, pairs = images(16, count=1)
    real, ai = made["real0"], made["ai0"]
    weights = mask(16, (2, 3, 5, 6), 0)
    blended = composite(real, ai, weights)
    inside = weights.astype(bool)
    assert (blended[inside] == ai[inside]).all() and (blended[~inside] == real[~inside]).all()
    assert (np.asarray(reencoded(blended, "png", 90)) == blended).all()  # lossless
    jpeg = np.asarray(reencoded(blended, "jpeg", 50))
    assert jpeg.shape == blended.shape and (jpeg != blended).any()
    # what the model sees: the base at fraction 0, the donor at 1, whatever the direction
    rows = plan(pairs, {**SETTINGS, "fractions": [0, 0.5, 1]}, 16, seed=0)
    for row, (image, ai_share) in zip(
        rows.itertuples(), composites(rows, made, SETTINGS, "resize"), strict=True
    ):
        assert ai_share.mean() == pytest.approx(row.ai_fraction)
        if row.fraction == 0:
            assert (image == real).all()
        elif row.fraction == 1:
            assert (image == ai).all()


def test_cell_shares_are_the_mask_mean_in_each_cell():
    weights = mask(8, (0, 0, 4, 6), 0)
    assert cell_shares(weights, 2).tolist() == [[1.0, 0.5], [0.0, 0.0]]
    assert cell_shares(weights, 4).mean() == pytest.approx(weights.mean())


def curve_rows(p_of_fraction, fractions=(0, 0.25, 0.5, 0.75, 1), pairs=6, seed=0):
    """composites.csv rows whose P(real) is a known function of the AI fraction, plus noise
    smaller than the steps between fractions."""
    rng = np.random.default_rng(seed)
    rows = [
        {
            "direction": direction,
            "mask": kind,
            "fraction": fraction,
            "ai_fraction": fraction,
            "pair": pair,
            "p_real": float(np.clip(p_of_fraction(fraction) + rng.uniform(-0.01, 0.01), 0, 1)),
        }
        for direction in paths.BLEND_DIRECTIONS
        for kind in paths.BLEND_MASKS
        for fraction in fractions
        for pair in range(pairs)
    ]
    return pd.DataFrame(rows)


def test_the_curve_its_rank_correlation_and_where_the_verdict_flips():
    results = blend_metrics(curve_rows(lambda f: 0.97 - 0.9 * f), threshold=0.5)
    assert results["composites"] == 2 * 2 * 5 * 6
    for direction in paths.BLEND_DIRECTIONS:
        for kind in paths.BLEND_MASKS:
            curve = results["curves"][direction][kind]
            assert curve["spearman_rho"] < -0.95
            assert [p["fraction"] for p in curve["points"]] == [0, 0.25, 0.5, 0.75, 1]
            first = curve["points"][0]
            assert first["p_real"] == pytest.approx(0.97, abs=0.01)
            assert first["ci95"][0] <= first["p_real"] <= first["ci95"][1]
            assert first["called_real"] == 1 and curve["points"][-1]["called_real"] == 0
            # 0.97 - 0.9 f falls under 0.5 after f = 0.52: between the grid's 0.5 and 0.75
            assert curve["flip_fraction"] == 0.75
            assert curve["flip"] == "between AI fractions 0.5 and 0.75"
    promise = results["promise"]
    # untouched photographs at 0.97: above 0.95; edited ones (0.25: 0.745) within 0.6-0.8
    assert promise["untouched_over"]["share"] == 1 and promise["untouched_over"]["composites"] == 6
    assert promise["edited_in_band"]["share"] == 1 and promise["edited_in_band"]["composites"] == 12
    flat = blend_metrics(curve_rows(lambda f: 0.9), threshold=0.5)["curves"]["ai_in_real"]["hard"]
    assert flat["flip_fraction"] is None and flat["flip"].startswith("none: the mean P(real) stays")
    low = blend_metrics(curve_rows(lambda f: 0.2), threshold=0.5)["curves"]["real_in_ai"]["soft"]
    assert low["flip_fraction"] is None and "already at AI fraction 0" in low["flip"]


def detail_score(batch: np.ndarray) -> np.ndarray:
    """A model that looks only at the top-left quarter of a 32 px input, and calls fine detail
    there (the synthetic AI images' checkerboard) AI: P(real) falls with it."""
    grey = batch[:, :16, :16].astype(float).mean(axis=-1)
    laplacian = 4 * grey[:, 1:-1, 1:-1] - sum(
        (grey[:, :-2, 1:-1], grey[:, 2:, 1:-1], grey[:, 1:-1, :-2], grey[:, 1:-1, 2:])
    )
    return 1 / (1 + np.exp(np.abs(laplacian).mean(axis=(1, 2)) / 10 - 3))


def test_maps_of_a_model_that_looks_at_one_region_find_the_ai_region_there():
    """The pointing game against ground truth: an AI region pasted into the quarter the model
    looks at is found, by its most-AI cell and by its top cells, far more often than by chance."""
    made, pairs = images(32, count=4)
    occlusion = Occlusion(grid=4, fill="blur")
    rows = pd.DataFrame(
        [
            {
                "direction": "ai_in_real",
                "real_id": real,
                "ai_id": ai,
                "top": top,
                "left": left,
                "height": 8,
                "width": 8,
                "feather": 0.0,
            }
            for real, ai in pairs
            for top, left in ((0, 0), (8, 8), (0, 8))  # one cell each, in the seen quarter
        ]
    )
    made_composites = list(composites(rows, made, SETTINGS, "resize"))
    p_real, maps = occlusion_maps(
        detail_score, [image for image, _ in made_composites], occlusion, 8
    )
    shares = np.array([cell_shares(ai, occlusion.grid) for _, ai in made_composites])
    found = map_localisation(maps, shares, random_maps=50)
    assert found["composites"] == 12 and found["left_out"] == 0
    assert found["pointing_game"] == 1 and found["iou"] == 1
    assert found["pointing_game_random"] == pytest.approx(1 / 16, abs=0.05)
    assert found["verdict"] == found["iou_verdict"] == "better than random"
    low, high = found["ci95"]["pointing_game_random"]
    assert low <= found["pointing_game_random"] <= high
    # no region to find: nothing covered, or everything
    nothing = map_localisation(maps[:2], np.stack([np.zeros((4, 4)), np.ones((4, 4))]))
    assert nothing["composites"] == 0 and nothing["left_out"] == 2
    assert nothing["verdict"].startswith("not measured")


def test_the_stage_scores_every_composite_through_each_backbones_trained_model(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    params = make_trained_project(
        tmp_path, "blend.composites=3", "blend.maps=1", "blend.fractions=[0,0.25,0.5,1]"
    )
    monkeypatch.setattr("sys.argv", ["blend"])
    blend.main()
    from pipeline.data.images import load_for_model
    from pipeline.models.backbones import Backbone
    from pipeline.stages.trained import trained_model

    splits = pd.read_csv(paths.SPLITS).set_index("id")
    for name, size in EXPLAINED_BACKBONES.items():
        folder = paths.blends_dir(name)
        rows = pd.read_csv(folder / paths.COMPOSITES_FILE, index_col="composite")
        assert len(rows) == 2 * 4 * 3 * 2 and rows["p_real"].between(0, 1).all()
        assert set(splits.loc[rows["real_id"], "label"]) == {"real"}
        assert set(splits.loc[rows["ai_id"], "label"]) == {"ai"}
        # PNG is lossless: at the two ends, the model scores the test images themselves
        model, _ = trained_model(params, Backbone.from_spec(params["backbones"][name]))
        mode = "center_crop" if name == "spectrum" else "resize"
        for fraction, column in ((0, "real_id"), (1, "ai_id")):
            end = rows[rows["fraction"] == fraction].iloc[0]
            shaped = load_for_model(splits.loc[end[column], "path"], size, mode)
            expected = model.predict(shaped[None], verbose=0)[0, 0]
            assert end["p_real"] == pytest.approx(expected, abs=1e-5)
        with np.load(folder / paths.BLEND_MAPS_FILE) as stored:
            mapped = rows.loc[stored["composites"]]
            # blend.maps pairs (1) at each inner fraction, in both directions, with both masks
            assert len(mapped) == 2 * 2 * 2 and (mapped["pair"] == 0).all()
            assert set(mapped["fraction"]) == {0.25, 0.5}
            assert stored["maps"].shape == stored["ai_share"].shape == (8, 4, 4)
            assert stored["p_real"] == pytest.approx(mapped["p_real"].to_numpy(), abs=1e-5)
            assert stored["ai_share"].mean(axis=(1, 2)) == pytest.approx(
                mapped["ai_fraction"].to_numpy(), abs=0.05
            )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("blend.fractions=[0,0.5,0.25]", "blend.fractions is [0, 0.5, 0.25]: give two or more"),
        (
            "blend.fractions=[0,1.5]",
            "blend.fractions[1] is 1.5: input should be less than or equal to 1",
        ),
        ("blend.encode=webp", "blend.encode is 'webp'; allowed values: 'png', 'jpeg'"),
        ("blend.composites=1", "blend.composites is 1: input should be greater than or equal to 2"),
        ("blend.maps=2.5", "blend.maps is 2.5: input should be a valid integer"),
        ("explain.grid=40", "explain.grid is 40: over the model's 32 px input"),
    ],
)
def test_settings_a_blend_cannot_follow_stop_the_stage_before_any_work(
    tmp_path, monkeypatch, override, message
):
    monkeypatch.chdir(tmp_path)
    params = compose_params(override)
    params["backbones"] = {"spectrum": {**params["backbones"]["spectrum"], "input_size": 32}}
    params["backbone"] = {"name": "spectrum"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setattr("sys.argv", ["blend"])
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        blend.main()  # no splits, scores or models here: nothing was read
