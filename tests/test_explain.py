"""The explain stage: a gallery of maps and the deletion curves for every backbone, through each
backbone's full model as pipeline.stages.trained assembles it."""

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import EXPLAINED_BACKBONES as BACKBONES
from conftest import compose_params, make_trained_project
from pipeline.core import paths
from pipeline.core.errors import ConfigError
from pipeline.data.images import load_for_model
from pipeline.stages import explain
from pipeline.stages.explain import gallery_rows


def test_the_gallery_picks_the_most_confident_and_the_worst_mistakes():
    scores = pd.DataFrame(
        {
            "id": list("abcdefg"),
            "label": ["real", "real", "real", "ai", "ai", "ai", "real"],
            "p_real": [0.95, 0.7, 0.1, 0.02, 0.3, 0.9, 0.45],
        }
    )
    rows = gallery_rows(scores, 0.5, 2)
    chosen = {kind: list(group["id"]) for kind, group in rows.groupby("kind", sort=False)}
    assert chosen == {
        "most_confident_real": ["a", "b"],
        "most_confident_ai": ["d", "e"],
        "worst_misclassified": ["c", "f"],  # 0.4 from the threshold each; g only 0.05
    }
    assert list(rows["rank"]) == [1, 2, 1, 2, 1, 2]
    right = gallery_rows(scores[scores["id"].isin(list("abde"))], 0.5, 1)
    assert "worst_misclassified" not in set(right["kind"])  # none: no row, no error


def test_the_stage_maps_every_backbone_through_its_trained_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = make_trained_project(tmp_path)
    monkeypatch.setattr("sys.argv", ["explain"])
    explain.main()
    from pipeline.models.backbones import Backbone
    from pipeline.models.occlusion import Occlusion, occlusion_copies
    from pipeline.stages.trained import trained_model

    splits = pd.read_csv(paths.SPLITS).set_index("id")
    occlusion = Occlusion.from_settings(params["explain"])
    for name, size in BACKBONES.items():
        folder = paths.explanations_dir(name)
        gallery = pd.read_csv(folder / paths.GALLERY_FILE)
        assert list(gallery["kind"].unique()) == list(paths.GALLERY_KINDS)
        for row in gallery.itertuples():
            assert Image.open(folder / row.file).format == "PNG"
        model, _ = trained_model(params, Backbone.from_spec(params["backbones"][name]))
        mode = "center_crop" if name == "spectrum" else "resize"
        first = gallery.iloc[0]
        shaped = load_for_model(splits.loc[first["id"], "path"], size, mode)
        scores = model.predict(occlusion_copies(shaped, occlusion), verbose=0)[:, 0]
        assert first["p_real"] == pytest.approx(scores[0], abs=1e-5)  # the full model's score

        with np.load(folder / paths.DELETION_FILE) as curves:
            assert len(curves["ids"]) == 4 and list(curves["covered"]) == [0, 0.25, 0.5, 0.75, 1]
            assert curves["map_curves"].shape == (4, 5)
            assert curves["random_curves"].shape == (4, 2, 5)
            p_real, real = curves["p_real"], curves["towards_real"]
            assert (real == (p_real >= 0.5)).all()
            start = np.where(real, p_real, 1 - p_real)  # the verdict's probability, uncovered
            assert curves["map_curves"][:, 0] == pytest.approx(start)
            assert curves["random_curves"][:, :, -1] == pytest.approx(
                np.repeat(curves["map_curves"][:, -1:], 2, axis=1)  # all covered: one image
            )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("explain.steps=50", "explain.steps is 50: give 2 to 49"),
        ("explain.grid=40", "explain.grid is 40: over the model's 32 px input"),
    ],
)
def test_settings_a_map_cannot_follow_stop_the_stage_before_any_work(
    tmp_path, monkeypatch, override, message
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(compose_params(override)))
    monkeypatch.setattr("sys.argv", ["explain"])
    with pytest.raises(ConfigError, match=message):
        explain.main()  # no splits, scores or models here: nothing was read
