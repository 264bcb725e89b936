"""The web spiders against a fake web on 127.0.0.1: Commons API, galleries, failing endpoints."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fake_web import FakeWeb, jpeg

from conftest import ROOT

FAST = {  # politeness stays on; only the waits shrink so that the tests run in seconds
    "DOWNLOAD_TIMEOUT": 1,
    "RETRY_TIMES": 1,
    "RETRY_BACKOFF_BASE": 0.1,
    "AUTOTHROTTLE_START_DELAY": 0.01,
    "AUTOTHROTTLE_MAX_DELAY": 0.2,
}


def write_params(workdir: Path, config: dict) -> None:
    scrape = {"contact": "tests@example.org", "settings": FAST, **config}
    (workdir / "params.yaml").write_text(yaml.safe_dump({"scrape": scrape}))


def command(workdir: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.scrape"]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def scrape(workdir: Path, config: dict) -> tuple[list[dict], dict]:
    write_params(workdir, config)
    result = subprocess.run(command(workdir), cwd=workdir, env=env(), capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return manifest(workdir), json.loads((workdir / "reports/scrape.json").read_text())


def manifest(workdir: Path) -> list[dict]:
    with open(workdir / "data/raw/manifest.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_commons_api(tmp_path):
    with FakeWeb() as web:
        web.categories["Category:Real"] = [
            *((f"File:r{i}.jpg", "image/jpeg") for i in range(1, 5)),
            ("File:diagram.svg", "image/svg+xml"),
            ("File:clip.webm", "video/webm"),
        ]
        web.categories["Category:AI"] = [(f"File:a{i}.jpg", "image/jpeg") for i in range(1, 7)]
        web.subcategories["Category:AI"] = ["Category:AI by Midjourney"]
        web.categories["Category:AI by Midjourney"] = [("File:a7.jpg", "image/jpeg")]
        for i in (1, 2, 3, 4):
            web.images[f"/upload/thumb/r{i}.jpg"] = jpeg(i)
        web.images.update(
            {
                "/upload/thumb/a1.jpg": jpeg(11),
                "/upload/thumb/a2.jpg": "429-retry-after",
                "/upload/thumb/a3.jpg": "500-then-ok",
                "/upload/thumb/a4.jpg": "html",
                "/upload/thumb/a5.jpg": "truncated",
                "/upload/thumb/a7.jpg": jpeg(17),
            }
        )  # fmt: skip  (a6 answers 404)
        web.maxlag_once = True
        rows, report = scrape(tmp_path, {
            "spider": "commons", "api": f"{web.base}/w/api.php", "depth": 1, "thumb_width": 640,
            "sources": [{"category": "Category:Real", "label": "real", "name": "commons-real"},
                        {"category": "Category:AI", "label": "ai", "name": "commons-ai"}],
        })  # fmt: skip

    titles = sorted(json.loads(row["extra"])["title"] for row in rows)
    assert titles == [f"File:a{i}.jpg" for i in (1, 2, 3, 7)] + [
        f"File:r{i}.jpg" for i in range(1, 5)
    ]
    for row in rows:
        title = json.loads(row["extra"])["title"]
        assert row["label"] == ("real" if title.startswith("File:r") else "ai")
        assert row["license"] == "CC BY-SA 4.0" and row["artist"] == "Jane Doe"
        assert row["license_url"] == "https://creativecommons.org/licenses/by-sa/4.0"
        assert row["source_url"] == f"{web.base}/wiki/{title}"
        assert row["file_url"] == f"{web.base}/upload/thumb/{title[5:]}"  # the thumbnail
        assert json.loads(row["extra"])["api_sha1"] == f"sha1-of-{title[5:]}"
        assert (tmp_path / "data/raw" / row["path"]).is_file()
    assert report["skipped"] == {
        "download_error": {"ai": 1},
        "mime_image/svg+xml": {"real": 1},
        "mime_video/webm": {"real": 1},
        "not_an_image": {"ai": 1},
        "truncated": {"ai": 1},
    }
    assert report["per_label"] == {"ai": 4, "real": 4} and report["class_ratio_real_to_ai"] == 1.0
    retry = web.times["/upload/thumb/a2.jpg"]
    assert len(retry) == 2 and retry[1] - retry[0] >= 1.9  # Retry-After: 2 honoured
    assert web.hits["/upload/thumb/a3.jpg"] == 2  # 500, then success
    assert web.hits["/robots.txt"] >= 1 and web.hits["/w/api.php"] >= 6  # maxlag answer retried
    assert not any(path.startswith("/upload/r") for path in web.hits)  # never the originals


def test_galleries_robots_redirects_timeouts_and_one_image_on_two_sources(tmp_path):
    with FakeWeb() as web:
        web.pages["/gallery/1.html"] = (
            '<img src="/img/g1.jpg"><img src="/private/p.jpg"><img src="/img/loop.jpg">'
            '<a rel="next" href="/gallery/2.html">next</a>'
        )
        web.pages["/gallery/2.html"] = (
            '<img src="/img/g2.jpg"><img src="/img/same.jpg"><img src="/img/slow.jpg">'
            '<a rel="next" href="/gallery/3.html">next</a>'
        )
        web.pages["/other/index.html"] = '<div class="pic"><img src="/img/copy.jpg"></div>'
        web.images.update({
            "/img/g1.jpg": jpeg(1), "/img/g2.jpg": jpeg(2), "/img/same.jpg": jpeg(3),
            "/img/copy.jpg": jpeg(3), "/private/p.jpg": jpeg(4), "/img/loop.jpg": "loop",
            "/img/slow.jpg": "slow",
        })  # fmt: skip
        rows, report = scrape(tmp_path, {
            "spider": "gallery",
            "sources": [
                {"name": "gallery", "label": "ai", "start_urls": [f"{web.base}/gallery/1.html"],
                 "image_css": "img::attr(src)", "next_css": "a[rel=next]::attr(href)",
                 "max_pages": 2},
                {"name": "other", "label": "ai", "start_urls": [f"{web.base}/other/index.html"],
                 "image_xpath": "//div[@class='pic']/img/@src"},
            ],
        })  # fmt: skip

    by_file = {row["file_url"].rsplit("/", 1)[1]: row for row in rows}
    assert sorted(by_file) == ["copy.jpg", "g1.jpg", "g2.jpg", "same.jpg"]
    assert by_file["same.jpg"]["id"] == by_file["copy.jpg"]["id"]  # stored once, two provenances
    assert by_file["copy.jpg"]["source_name"] == "other"
    assert by_file["g2.jpg"]["source_url"] == f"{web.base}/gallery/2.html"
    assert len(list((tmp_path / "data/raw/images").iterdir())) == 3
    assert report["skipped"] == {
        "robots_txt": {"ai": 1},
        "too_many_redirects": {"ai": 1},
        "timeout": {"ai": 1},
    }
    assert web.hits["/private/p.jpg"] == 0 and web.hits["/gallery/3.html"] == 0  # max_pages 2


def test_kill_9_and_resume_keeps_the_manifest_consistent(tmp_path):
    count = 80
    with FakeWeb(page_size=10, image_delay=0.05) as web:
        web.categories["Category:Real"] = [(f"File:r{i}.jpg", "image/jpeg") for i in range(count)]
        for i in range(count):
            web.images[f"/upload/thumb/r{i}.jpg"] = jpeg(i)
        config = {"spider": "commons", "api": f"{web.base}/w/api.php",
                  "sources": [{"category": "Category:Real", "label": "real"}]}  # fmt: skip
        write_params(tmp_path, config)
        crawl = subprocess.Popen(command(tmp_path), cwd=tmp_path, env=env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            path = tmp_path / "data/raw/manifest.csv"
            if path.is_file() and path.read_text().count("\n") > 25:
                break
            time.sleep(0.05)
        crawl.send_signal(signal.SIGKILL)
        crawl.wait()
        stored_before = len(manifest(tmp_path))
        assert 0 < stored_before < count
        downloads_before = sum(n for p, n in web.hits.items() if p.startswith("/upload/"))
        rows, report = scrape(tmp_path, config)
        downloads_after = sum(n for p, n in web.hits.items() if p.startswith("/upload/"))

    assert len(rows) == count and len({row["id"] for row in rows}) == count  # nothing duplicated
    files = {f"images/{path.name}" for path in (tmp_path / "data/raw/images").iterdir()}
    assert files == {row["path"] for row in rows}  # no file without a row, no row without a file
    # what was stored before the kill is not downloaded again (a few in flight may be)
    assert downloads_after - downloads_before <= count - stored_before + 4


def test_nothing_leaves_the_machine_in_tests(tmp_path):
    with FakeWeb() as web:
        web.images["/img/ok.jpg"] = jpeg(1)
        urls = [{"url": f"{web.base}/img/ok.jpg", "label": "real"},
                {"url": "http://example.org/never.jpg", "label": "ai"}]  # fmt: skip
        rows, report = scrape(tmp_path, {"spider": "urls", "urls": urls})
    assert [row["file_url"] for row in rows] == [f"{web.base}/img/ok.jpg"]
    assert report["skipped"] == {"filtered": {"ai": 1}}


@pytest.mark.slow
def test_scale_5000_items_with_bounded_memory(tmp_path):
    count = 5000
    with FakeWeb(page_size=500) as web:
        web.categories["Category:Real"] = [(f"File:r{i}.jpg", "image/jpeg") for i in range(count)]
        for i in range(count):
            web.images[f"/upload/thumb/r{i}.jpg"] = jpeg(i, size=16)
        write_params(
            tmp_path,
            {
                "spider": "commons",
                "api": f"{web.base}/w/api.php",
                "sources": [{"category": "Category:Real", "label": "real"}],
            },
        )
        # VmHWM, not getrusage's ru_maxrss: a child started with vfork and exec reports its
        # parent's peak there when that is larger (pytest's, once it has imported TensorFlow)
        measure = (
            "import runpy; runpy.run_module('pipeline.scrape', run_name='__main__'); "
            "print(next(line.split()[1] for line in open('/proc/self/status') "
            "if line.startswith('VmHWM:')))"
        )
        result = subprocess.run(
            [sys.executable, "-c", measure], cwd=tmp_path, env=env(), capture_output=True,
            text=True, timeout=1800, check=True,
        )  # fmt: skip
    report = json.loads((tmp_path / "reports/scrape.json").read_text())
    peak_mib = int(result.stdout.strip().splitlines()[-1]) / 1024
    rate = report["stored"] / report["elapsed_s"]
    print(f"scale: {report['stored']} items at {rate:.1f} items/s, peak RSS {peak_mib:.0f} MiB")
    assert report["stored"] == count and peak_mib < 512  # about 130 MiB
