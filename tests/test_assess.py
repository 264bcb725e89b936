"""`aiic evaluate DIR_OR_CSV`: the exported model on labelled images, scored as predict does."""

import io
import json

import numpy as np
import pandas as pd
import pytest

from conftest import strict_json, synthetic_image
from pipeline import cli
from pipeline.models.metrics import bootstrap_ci, point_metrics
from pipeline.serving import assess, predict


@pytest.fixture
def genimage_folder(tmp_path):
    """real/<source>/ and ai/<source>/ as GenImage lays them out, an image loose in real/ and
    two files that cannot be scored."""
    rng = np.random.default_rng(1)
    root = tmp_path / "genimage"
    for label, source, count in (("real", "imagenet", 8), ("ai", "sd14", 6), ("ai", "vqdm", 5)):
        (root / label / source).mkdir(parents=True)
        for i in range(count):
            synthetic_image(label, 48, rng).save(root / label / source / f"{i}.png")
    synthetic_image("real", 48, rng).save(root / "real" / "loose.png")
    (root / "ai" / "sd14" / "page.png").write_bytes(b"<html>gone</html>")
    synthetic_image("ai", 16, rng).save(root / "ai" / "vqdm" / "tiny.png")  # under the 32 px crop
    elsewhere = tmp_path / "download" / "vqdm"  # linked in, as docs/using-the-model.md's example
    elsewhere.parent.mkdir()
    (root / "ai" / "vqdm").rename(elsewhere)
    (root / "ai" / "vqdm").symlink_to(elsewhere, target_is_directory=True)
    return root


def test_report_equals_metrics_computed_from_predict_csv(
    genimage_folder, exported_model, capsys, monkeypatch
):
    monkeypatch.setattr(cli, "tune_startup", lambda: None)  # process-wide: not in the test's
    out = genimage_folder.parent / "report.json"
    args = ["--model", str(exported_model), "--format", "json", "--out", str(out)]
    cli.main(["evaluate", str(genimage_folder), *args])  # with arguments: the command
    report = strict_json(out)
    capsys.readouterr()

    images = assess.labelled_images(genimage_folder)
    predict.main([*images["path"], "--model", str(exported_model), "--format", "csv"])
    scored = pd.read_csv(io.StringIO(capsys.readouterr().out), keep_default_na=False)
    scored = scored.merge(images, left_on="source", right_on="path", suffixes=("", "_image"))
    used = scored[scored["reason"] == ""]
    labels = (used["label_image"] == "real").to_numpy(dtype=int)
    p_real = used["p_real"].astype(float).to_numpy()
    threshold = json.loads((exported_model / "model.json").read_text())["threshold"]

    assert report["images"]["listed"] == 8 + 1 + 7 + 6
    assert report["images"]["used"] == len(used) == 8 + 1 + 6 + 5
    assert report["images"]["skipped_reasons"] == {"not_an_image": 1, "too_small": 1}
    assert report["threshold"] == threshold
    expected = point_metrics(labels, p_real, threshold)
    for name, value in expected.items():
        assert report["all"][name] == pytest.approx(value), name
    for name, interval in bootstrap_ci(labels, p_real, threshold).items():
        assert report["all"]["ci95"][name] == pytest.approx(interval), name
    assert set(report["per_source"]) == {"imagenet", "genimage", "sd14", "vqdm"}
    sd14 = (used["source_image"] == "sd14").to_numpy()
    assert report["per_source"]["sd14"]["ai_accuracy"] == pytest.approx(
        (p_real[sd14] < threshold).mean()
    )
    assert report["per_source"]["sd14"]["real_accuracy"] is None  # no real image in that source
    assert sum(row["images"] for row in report["reliability"]) == len(used)


def test_csv_input_with_sources_and_the_readable_formats(tmp_path, exported_model, capsys):
    rng = np.random.default_rng(2)
    for i in range(4):
        synthetic_image("real" if i % 2 else "ai", 40, rng).save(tmp_path / f"{i}.png")
    table = tmp_path / "bench.csv"
    table.write_text("path,label,source\n0.png,ai,gan\n1.png,real,\n2.png,ai,gan\n3.png,real,\n")
    images = assess.labelled_images(table)
    assert images["source"].tolist() == ["gan", "bench", "gan", "bench"]
    for output_format, marker in (("markdown", "| source"), ("table", "source")):
        assess.main([str(table), "--model", str(exported_model), "--format", output_format])
        text = capsys.readouterr().out
        assert marker in text and "gan" in text and "real accuracy" in text, output_format
        assert "Reliability" in text


def test_bad_inputs_are_clear_errors(tmp_path):
    table = tmp_path / "list.csv"
    table.write_text("path,label\nx.png,fake\n")
    with pytest.raises(ValueError, match="list.csv:2: label must be one of"):
        assess.labelled_images(table)
    (tmp_path / "empty" / "real").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images under"):
        assess.labelled_images(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        assess.labelled_images(tmp_path / "nowhere")


def test_evaluate_without_arguments_is_still_the_stage(monkeypatch):
    called = []
    monkeypatch.setattr(cli, "tune_startup", lambda: None)
    monkeypatch.setattr("pipeline.stages.evaluate.main", lambda: called.append("stage"))
    monkeypatch.setattr("pipeline.serving.assess.main", lambda: called.append("command"))
    cli.main(["evaluate"])
    cli.main(["evaluate", "folder"])
    assert called == ["stage", "command"]


def test_an_unnested_folder_prints_no_source_row_that_repeats_all(tmp_path, exported_model):
    rng = np.random.default_rng(3)
    for label in ("real", "ai"):
        (tmp_path / "bench" / label).mkdir(parents=True)
        for i in range(3):
            synthetic_image(label, 40, rng).save(tmp_path / "bench" / label / f"{i}.png")
    report = assess.evaluate_images(tmp_path / "bench", exported_model)
    assert list(report["per_source"]) == ["bench"]  # the data keeps it
    (title, metrics), *_ = [pair for pair in assess.tables(report) if "Metrics" in pair[0]]
    assert metrics["source"].tolist() == ["all"], title
