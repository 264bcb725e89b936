"""The local spider: nested folders and a CSV's source column name each image's source."""

import asyncio

from conftest import make_image_folder
from scrapers.spiders.local import LocalSpider


def items(source, **kwargs):
    async def collect():
        return [item async for item in LocalSpider(source=str(source), **kwargs).start()]

    return asyncio.run(collect())


def test_nested_folders_name_the_source_and_flat_ones_keep_the_setting(tmp_path):
    root = tmp_path / "genimage"
    make_image_folder(root / "sd14", per_class=2)  # sd14/real, sd14/ai: moved below
    (root / "ai").mkdir(parents=True)
    (root / "sd14" / "ai").rename(root / "ai" / "sd14")
    make_image_folder(root / "midjourney", per_class=1)
    (root / "midjourney" / "ai").rename(root / "ai" / "midjourney")
    (root / "real").mkdir()
    (root / "sd14" / "real").rename(root / "real" / "imagenet")
    (root / "midjourney" / "real" / "real_000.png").rename(root / "real" / "loose.png")
    (root / "ai" / "sd14" / "deeper").mkdir()
    (root / "ai" / "sd14" / "ai_000.png").rename(root / "ai" / "sd14" / "deeper" / "x.png")

    found = sorted(
        (item.label, item.source_name, item.file_urls[0].rsplit("/", 1)[1])
        for item in items(root, source_name="mine")
    )
    assert found == [
        ("ai", "midjourney", "ai_000.png"),
        ("ai", "sd14", "ai_001.png"),
        ("ai", "sd14", "x.png"),  # deeper folders belong to the source folder above them
        ("real", "imagenet", "real_000.png"),
        ("real", "imagenet", "real_001.png"),
        ("real", "mine", "loose.png"),  # directly in real/: the configured source_name
    ]


def test_flat_folder_keeps_todays_source_name(tmp_path):
    folder = make_image_folder(tmp_path / "flat", per_class=1)
    assert {item.source_name for item in items(folder, source_name="local")} == {"local"}


def test_csv_source_column_is_optional_per_row(tmp_path):
    folder = make_image_folder(tmp_path / "images", per_class=1)
    table = tmp_path / "list.csv"
    table.write_text(
        "url,label,source\nimages/ai/ai_000.png,ai,sd14\nimages/real/real_000.png,real,\n"
    )
    assert [(i.label, i.source_name) for i in items(table, source_name="csv")] == [
        ("ai", "sd14"),
        ("real", "csv"),
    ]
    plain = tmp_path / "plain.csv"
    plain.write_text(f"url,label\n{(folder / 'ai' / 'ai_000.png').as_uri()},ai\n")
    assert [i.source_name for i in items(plain, source_name="csv")] == ["csv"]
