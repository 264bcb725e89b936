import csv
import functools
import hashlib
import http.server
import json
import subprocess
import sys
import threading

import pytest
import yaml

from conftest import make_image_folder, run


def scrape(workdir, source, **extra):
    config = {"spider": "local", "source": str(source), "source_name": "fixture", **extra}
    (workdir / "params.yaml").write_text(yaml.safe_dump({"scrape": config}))
    run([sys.executable, "-m", "pipeline.scrape"], workdir, timeout=300)
    with open(workdir / "data/raw/manifest.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    report = json.loads((workdir / "reports/scrape.json").read_text())
    return rows, report


@pytest.fixture
def http_server(tmp_path):
    """A static file server on 127.0.0.1 for the CSV source's http:// rows."""
    root = tmp_path / "site"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_folder_source_keeps_original_bytes_named_by_sha256(tmp_path):
    source = make_image_folder(tmp_path / "source", per_class=3)
    (source / "ai" / "error_page.jpg").write_bytes(b"<html>502 Bad Gateway</html>")
    rows, report = scrape(tmp_path, source)

    assert len(rows) == 6 and {row["label"] for row in rows} == {"real", "ai"}
    for row in rows:
        stored = (tmp_path / "data/raw" / row["path"]).read_bytes()
        original = (source / row["label"] / row["source_url"].rsplit("/", 1)[1]).read_bytes()
        assert stored == original  # never re-encoded
        assert row["id"] == hashlib.sha256(stored).hexdigest() and row["path"].startswith("images/")
        assert (row["format"], row["width"], row["height"]) == ("PNG", "48", "48")
        assert int(row["bytes"]) == len(stored) and row["source_name"] == "fixture"
    assert report["skipped"] == {"not_an_image": {"ai": 1}}
    assert report["per_label"] == {"ai": 3, "real": 3}


def test_max_items_caps_each_label(tmp_path):
    source = make_image_folder(tmp_path / "source", per_class=5)
    rows, _ = scrape(tmp_path, source, max_items=2)
    assert sorted(row["label"] for row in rows) == ["ai", "ai", "real", "real"]


def test_csv_source_with_local_and_http_urls(tmp_path, http_server):
    site, base = http_server
    images = make_image_folder(tmp_path / "images", per_class=2)
    (site / "photo.png").write_bytes((images / "real" / "real_000.png").read_bytes())
    table = tmp_path / "list.csv"
    table.write_text(
        "url,label\n"
        f"{base}/photo.png,real\n"
        f"{base}/missing.png,real\n"
        "images/ai/ai_000.png,ai\n"
        f"{(images / 'ai' / 'ai_001.png').as_uri()},ai\n"
        f"{(images / 'real' / 'real_000.png').as_uri()},real\n"
    )
    rows, report = scrape(tmp_path, table)

    assert sorted((row["label"], row["source_url"].split(":")[0]) for row in rows) == [
        ("ai", "file"), ("ai", "file"), ("real", "file"), ("real", "http"),
    ]  # fmt: skip
    # the same bytes from two sources: one stored file, both provenances in the manifest
    same = [row for row in rows if row["label"] == "real"]
    assert same[0]["id"] == same[1]["id"]
    assert report["unique_images"] == 3
    assert report["skipped"] == {"download_error": {"real": 1}}


def test_bad_csv_label_is_a_clear_error(tmp_path):
    table = tmp_path / "list.csv"
    table.write_text("url,label\nx.png,fake\n")
    config = {"scrape": {"spider": "local", "source": str(table)}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.scrape"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "list.csv:2: label must be one of" in result.stdout + result.stderr
