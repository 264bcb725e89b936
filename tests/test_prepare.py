import json

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import strict_json_files, synthetic_image
from pipeline.core.errors import StageFailed
from pipeline.stages import prepare as prepare_module
from pipeline.stages.prepare import (
    CUES,
    confound_report,
    jpeg_quality,
    near_duplicate_groups,
    prepare,
    stratified_group_split,
)

PARAMS = {"min_size": 16, "max_hamming": 4, "normalize": False, "split": {"val": 0.2, "test": 0.2}}


def test_near_duplicate_groups_are_connected_components():
    hashes = np.array([0b0, 0b1, 0b11, 0xFFFF, 0xFFFE, 0xF0F0F0F0], dtype=np.uint64)
    groups = near_duplicate_groups(hashes, max_distance=1)
    assert groups[0] == groups[1] == groups[2]  # 0-1 and 1-2 within 1 bit: one chain
    assert groups[3] == groups[4] != groups[0]
    assert len(set(groups)) == 3


def test_split_keeps_groups_together_and_is_stratified():
    rng = np.random.default_rng(1)
    labels = np.array(["real"] * 300 + ["ai"] * 100)
    groups = rng.integers(0, 150, size=len(labels))
    fractions = {"train": 0.7, "val": 0.15, "test": 0.15}
    split = stratified_group_split(labels, groups, fractions, seed=3)
    for group in np.unique(groups):
        assert len(set(split[groups == group])) == 1
    for label, total in (("real", 300), ("ai", 100)):
        share = (split[labels == label] == "test").sum() / total
        assert abs(share - 0.15) < 0.08
    assert (split == stratified_group_split(labels, groups, fractions, seed=3)).all()


def write(image: Image.Image, folder, name: str) -> str:
    image.save(folder / name)
    return name


def manifest_rows(folder, per_label: int, seed: int) -> list[dict]:
    """Manifest rows of `per_label` generated 48 px PNGs per label, written into `folder`."""
    rng = np.random.default_rng(seed)
    rows = []
    for label in ("real", "ai"):
        for i in range(per_label):
            name = write(synthetic_image(label, 48, rng), folder, f"{label}{i}.png")
            rows.append(
                {"id": f"{label}{i}", "path": name, "label": label, "width": 48, "height": 48}
            )
    return rows


def test_prepare_drops_with_reasons_and_never_splits_a_near_duplicate_group(tmp_path):
    rows = manifest_rows(tmp_path, 20, seed=0)
    original = Image.open(tmp_path / "real0.png")
    # the same picture, re-encoded as JPEG and labelled ai: a cross-label near-duplicate
    near = write(original.convert("RGB"), tmp_path, "near.jpg")
    rows.append({"id": "near", "path": near, "label": "ai", "width": 48, "height": 48})
    # a smaller copy with the same label: dropped as a near-duplicate, the larger one kept
    small = write(original.resize((40, 40)), tmp_path, "small.png")
    rows.append({"id": "small", "path": small, "label": "real", "width": 40, "height": 40})
    (tmp_path / "page.jpg").write_bytes(b"<html>oops</html>")
    rows.append({"id": "page", "path": "page.jpg", "label": "ai", "width": 0, "height": 0})
    tiny = write(Image.new("RGB", (8, 8)), tmp_path, "tiny.png")
    rows.append({"id": "tiny", "path": tiny, "label": "real", "width": 8, "height": 8})
    rows.append({**rows[1]})  # the same bytes scraped twice, same label
    rows.append({**rows[2], "label": "ai"})  # the same bytes under both labels
    manifest = pd.DataFrame(rows).assign(source_name="test")

    kept, report = prepare(manifest, tmp_path, PARAMS, seed=7)

    assert report["dropped"] == {
        "duplicate": {"real": 1},
        "label_conflict": {"real": 1, "ai": 1},
        "near_duplicate": {"real": 1},
        "not_an_image": {"ai": 1},
        "too_small": {"real": 1},
    }
    assert set(kept["id"]) >= {"real0", "near"} and not {"small", "real2"} & set(kept["id"])
    assert (
        kept.loc[kept["id"] == "real0", "split"].item()
        == kept.loc[kept["id"] == "near", "split"].item()
    )
    assert kept.groupby("group")["split"].nunique().max() == 1
    assert report["kept"] == len(kept) == 40 - 1 + 1  # real2 lost to the label conflict
    assert report["near_duplicate_groups_in_several_labels"] == 1


def test_confound_report_flags_a_format_shortcut():
    rng = np.random.default_rng(0)
    n = 400
    labels = np.array(["real", "ai"] * (n // 2))
    frame = pd.DataFrame(
        {
            "label": labels,
            "split": rng.choice(["train", "test"], n),
            "format": np.where(labels == "real", "JPEG", "PNG"),  # the shortcut
            "jpeg_quality": np.where(labels == "real", 90, -1),
            "exif": 0,
            "width": rng.integers(200, 400, n),
            "height": rng.integers(200, 400, n),
            "bytes": rng.integers(10_000, 50_000, n),
        }
    )
    report = confound_report(frame, seed=0)
    assert report["all_cues"]["roc_auc"] > 0.95 and report["per_cue"]["format"] > 0.95
    assert report["per_cue"]["width"] < 0.7  # random sizes carry no signal


def test_jpeg_quality_estimate():
    import io

    from PIL import Image

    for quality in (50, 75, 95):
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16)).save(buffer, format="JPEG", quality=quality)
        assert abs(jpeg_quality(Image.open(buffer)) - quality) <= 2
    assert jpeg_quality(Image.new("RGB", (4, 4))) == -1


def test_normalize_reencodes_every_kept_image(tmp_path):
    rows = manifest_rows(tmp_path, 10, seed=1)
    out = tmp_path / "normalized"
    out.mkdir()
    kept, _ = prepare(pd.DataFrame(rows).assign(source_name="t"), tmp_path, PARAMS, 0, out)
    for path in kept["path"]:
        with Image.open(path) as image:
            assert image.format == "JPEG" and not image.getexif()


def test_normalized_cues_describe_the_re_encoded_files(tmp_path):
    rows = manifest_rows(tmp_path, 10, seed=2)
    manifest = pd.DataFrame(rows).assign(source_name="t", format="PNG", bytes=1)
    out = tmp_path / "normalized"
    out.mkdir()
    kept, _ = prepare(manifest, tmp_path, PARAMS, 0, out)
    assert set(kept["format"]) == {"JPEG"} and set(kept["jpeg_quality"]) == {90}
    assert (kept["bytes"] > 1).all() and (kept["exif"] == 0).all()


def prepare_project(folder, per_label: int = 20) -> None:
    """A working directory with params.yaml and a scraped data/raw of generated images."""
    raw = folder / "data" / "raw"
    (raw / "images").mkdir(parents=True)
    rows = manifest_rows(raw / "images", per_label, seed=3)
    for row in rows:
        row.update(
            path=f"images/{row['path']}",
            source_name=f"commons-{row['label']}",
            source_url=f"https://example.org/{row['id']}",
            format="PNG",
            bytes=1,
            license="CC BY-SA 4.0" if row["label"] == "real" else "CC0",
            extra=json.dumps({"category": f"Category:{row['label']} sub"}),
        )
    pd.DataFrame(rows).to_csv(raw / "manifest.csv", index=False)
    params = {"seed": 0, "data": {**PARAMS, "split": {"val": 0.2, "test": 0.2}}}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    (folder / "reports").mkdir()
    (folder / "reports" / "scrape.json").write_text(
        json.dumps({"skipped": {"no_thumbnail_resample": {"ai": 7}}, "label_conflicts": 1})
    )


OUTPUTS = (
    "data/prepared/splits.csv",
    "reports/prepare.json",
    "reports/confounds.json",
    "reports/dataset.md",
)


def quick_confounds(images, seed):
    """confound_report's shape without its classifier fits (tested on their own above)."""
    return {"all_cues": {"roc_auc": 0.625}, "per_cue": dict.fromkeys(CUES, 0.5)}


def test_prepare_writes_a_dataset_card_with_its_outputs(tmp_path, monkeypatch):
    prepare_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(prepare_module, "confound_report", quick_confounds)
    prepare_module.main()
    assert all((tmp_path / name).is_file() for name in OUTPUTS)
    written = {path.relative_to(tmp_path).as_posix() for path in strict_json_files(tmp_path)}
    assert {"reports/prepare.json", "reports/confounds.json"} <= written
    card = (tmp_path / "reports" / "dataset.md").read_text()
    for heading in (
        "Images per label and split",
        "Per source and sub-category",
        "Licences",
        "File formats as scraped",
        "Widths",
        "JPEG quality",
        "Skipped by the scrape",
        "Dropped by prepare",
        "Confounds",
    ):
        assert f"## {heading}" in card
    assert "| real | commons-real | Category:real sub | 20 |" in card
    assert "| CC BY-SA 4.0 | 0 | 20 |" in card and "| no_thumbnail_resample | 7 |" in card
    assert "Files listed under both labels: 1" in card and "all cues together: 0.625" in card


def test_prepare_outputs_land_together_or_not_at_all(tmp_path, monkeypatch):
    prepare_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(prepare_module, "confound_report", quick_confounds)
    prepare_module.main()
    before = {name: (tmp_path / name).read_bytes() for name in OUTPUTS}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # a kill after splits.csv is written, before the confounds

    monkeypatch.setattr(prepare_module, "confound_report", killed)
    (tmp_path / "params.yaml").write_text(
        (tmp_path / "params.yaml").read_text().replace("seed: 0", "seed: 1")
    )
    with pytest.raises(KeyboardInterrupt):
        prepare_module.main()
    assert {name: (tmp_path / name).read_bytes() for name in OUTPUTS} == before
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [
        "confounds.json",
        "dataset.md",
        "prepare.json",
        "scrape.json",
    ]


def test_prepare_refuses_the_data_of_an_interrupted_crawl(tmp_path, monkeypatch):
    prepare_project(tmp_path)
    (tmp_path / "data/raw/.crawl-incomplete").write_text(
        "a commons crawl started and has not finished\n"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StageFailed) as stop:
        prepare_module.main()
    message = str(stop.value)
    assert "interrupted crawl" in message and "a commons crawl started" in message
    assert "dvc repro" in message and not (tmp_path / "data/prepared").exists()
