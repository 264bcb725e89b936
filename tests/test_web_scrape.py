"""The web spiders against a fake web on 127.0.0.1: Commons API, galleries, failing endpoints."""

import csv
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fake_web import CommonsFile, FakeWeb, jpeg
from scrapy.exceptions import CannotResolveHostError
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.internet.error import DNSLookupError

from conftest import ROOT, strict_json
from pipeline.stages.prepare import drop_duplicate_ids
from pipeline.stages.scrape import DEMO_COMMAND
from scrapers import settings
from scrapers.spiders.commons import UNREACHABLE, plain, segment_bounds

FAST = {  # politeness stays on; only the waits shrink so that the tests run in seconds
    "DOWNLOAD_TIMEOUT": 1,
    "RETRY_TIMES": 1,
    "RETRY_BACKOFF_BASE": 0.1,
    "DOWNLOAD_DELAY": 0.01,
    "AUTOTHROTTLE_START_DELAY": 0.01,
    "AUTOTHROTTLE_MAX_DELAY": 0.2,
    "DOWNLOAD_SLOTS": {
        "commons-api": {"concurrency": 1, "delay": 0.01},
        "commons-media": {"concurrency": 2, "delay": 0.01},
        "local-files": {"concurrency": 32, "delay": 0},
    },
}


def write_params(workdir: Path, config: dict) -> None:
    scrape = {"contact": "tests@example.org", "settings": FAST, **config}
    (workdir / "params.yaml").write_text(yaml.safe_dump({"scrape": scrape}))


def command(workdir: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.stages.scrape"]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def scrape(workdir: Path, config: dict) -> tuple[list[dict], dict]:
    write_params(workdir, config)
    result = subprocess.run(
        command(workdir), cwd=workdir, env=env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return manifest(workdir), strict_json(workdir / "reports/scrape.json")


def manifest(workdir: Path) -> list[dict]:
    with open(workdir / "data/raw/manifest.csv", newline="") as file:
        return list(csv.DictReader(file))


def thumb(name: str, step: int = 960) -> str:
    """The path Commons serves a thumbnail of `name` at, at a standard step."""
    return f"/upload/thumb/{name}/{step}px-{name}"


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
            web.images[thumb(f"r{i}.jpg")] = jpeg(i)
        web.images.update(
            {
                thumb("a1.jpg"): jpeg(11),
                thumb("a2.jpg"): "429-retry-after",
                thumb("a3.jpg"): "500-then-ok",
                thumb("a4.jpg"): "html",
                thumb("a5.jpg"): "truncated",
                thumb("a7.jpg"): jpeg(17),
            }
        )  # a6 answers 404
        web.maxlag_once = True
        rows, report = scrape(
            tmp_path,
            {
                "spider": "commons",
                "api": f"{web.base}/w/api.php",
                "depth": 1,
                "thumb_width": 640,
                "sources": [
                    {"category": "Category:Real", "label": "real", "name": "commons-real"},
                    {"category": "Category:AI", "label": "ai", "name": "commons-ai"},
                ],
            },
        )

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
        assert row["file_url"] == f"{web.base}{thumb(title[5:])}"  # the thumbnail
        assert len(json.loads(row["extra"])["api_sha1"]) == 40
        assert json.loads(row["extra"])["thumb_width"] == 960  # 640 is served at the 960 step
        assert (tmp_path / "data/raw" / row["path"]).is_file()
    assert report["skipped"] == {
        "download_error": {"ai": 1},
        "mime_image/svg+xml": {"real": 1},
        "mime_video/webm": {"real": 1},
        "not_an_image": {"ai": 1},
        "truncated": {"ai": 1},
    }
    assert report["per_label"] == {"ai": 4, "real": 4} and report["class_ratio_real_to_ai"] == 1.0
    assert report["per_category"]["ai"] == {"Category:AI": 3, "Category:AI by Midjourney": 1}
    retry = web.times[thumb("a2.jpg")]
    assert len(retry) == 2 and retry[1] - retry[0] >= 1.9  # Retry-After: 2 honoured
    assert web.hits[thumb("a3.jpg")] == 2  # 500, then success
    assert web.hits["/robots.txt"] >= 1 and web.hits["/w/api.php"] >= 6  # maxlag answer retried
    assert not any(path.startswith("/upload/r") for path in web.hits)  # never the originals
    assert all("tests@example.org" in agent for agent in web.user_agents)


def commons_config(web: FakeWeb, **extra) -> dict:
    return {"spider": "commons", "api": f"{web.base}/w/api.php", **extra}


@pytest.fixture(scope="module")
def unkind_crawl(tmp_path_factory):
    """One crawl of a fake Commons that does what the real one does to its clients."""
    workdir = tmp_path_factory.mktemp("unkind")
    with FakeWeb(page_size=500, image_delay=0.05) as web:
        web.serve_uploads, web.upload_hosts = True, ["127.0.0.1", "localhost"]
        web.maxlag_responses, web.retry_after = 2, 1
        web.categories["Category:Photos"] = [
            CommonsFile("File:Wide photo.jpg", width=3000),
            CommonsFile("File:Exactly 1280.png", "image/png", width=1280),  # step 1280: original
            CommonsFile("File:Typical AI 1216.png", "image/png", width=1216),
            CommonsFile("File:Huge.png", "image/png", width=20000, problem="thumberror"),
            CommonsFile("File:Gone.jpg", problem="missing"),
            CommonsFile("File:Both labels.jpg"),
            *(CommonsFile(f"File:Batch {i:03d}.jpg") for i in range(60)),  # past 50 scaled
        ]
        web.subcategories["Category:AI"] = ["Category:AI by tool", "Category:Broken"]
        web.subcategories["Category:AI by tool"] = ["Category:AI by tool/Midjourney"]
        web.subcategories["Category:AI by tool/Midjourney"] = ["Category:AI by year"]
        web.subcategories["Category:AI by year"] = ["Category:AI by tool"]  # a cycle
        web.errors["Category:Broken"] = "permissiondenied"  # its files and its sub-categories
        web.categories["Category:Broken"] = [CommonsFile("File:Unlisted.jpg")]
        web.subcategories["Category:Broken"] = ["Category:Beyond"]
        web.categories["Category:AI by tool/Midjourney"] = [
            CommonsFile("File:Mj 1.jpg"),
            CommonsFile("File:Mj 2.jpg"),
            CommonsFile("File:Both labels.jpg"),
        ]
        web.categories["Category:AI by year"] = [
            CommonsFile("File:Mj 1.jpg"),
            CommonsFile("File:Deep.jpg"),
        ]
        rows, report = scrape(
            workdir,
            commons_config(
                web,
                thumb_width=1024,
                page_size=100,
                segments=1,
                sources=[
                    {"category": "Category:Photos", "label": "real"},
                    {"category": "Category:AI", "label": "ai"},
                ],
            ),
        )
    by_title: dict[str, list[dict]] = {}
    for row in rows:
        by_title.setdefault(json.loads(row["extra"])["title"], []).append(row)
    return web, by_title, report, workdir


def test_thumbnails_come_at_standard_steps_and_originals_are_never_stored(unkind_crawl):
    web, by_title, report, _ = unkind_crawl
    [wide] = by_title["File:Wide photo.jpg"]
    assert wide["file_url"].endswith(thumb("Wide_photo.jpg", 1280))  # 1024 asked, 1280 served
    assert json.loads(wide["extra"])["thumb_width"] == 1280
    # step 1280 reaches 1280 and 1216 px originals: Commons would send the original file
    assert "File:Exactly 1280.png" not in by_title and "File:Typical AI 1216.png" not in by_title
    assert report["skipped"]["no_thumbnail_resample"] == {"real": 2}
    assert not [path for path in web.hits if path.startswith("/upload/") and "/thumb/" not in path]


def test_thumberror_and_missing_files_are_skipped_and_the_crawl_goes_on(unkind_crawl):
    _, by_title, report, _ = unkind_crawl
    assert report["skipped"]["thumberror"] == {"real": 1}
    assert report["skipped"]["missing_file"] == {"real": 1}
    assert "File:Huge.png" not in by_title and "File:Gone.jpg" not in by_title
    assert {f"File:Batch {i:03d}.jpg" for i in range(60)} <= set(by_title)


def test_iicontinue_brings_the_images_past_50_scaled_ones(unkind_crawl):
    web, by_title, _, _ = unkind_crawl
    continued = [q for q in web.api_queries if "iicontinue" in q]
    assert continued and all(q["gcmtitle"] == "Category:Photos" for q in continued)
    assert len([t for t in by_title if t.startswith("File:Batch")]) == 60


def test_maxlag_answered_with_http_200_is_retried_after_retry_after(unkind_crawl):
    web, _, report, _ = unkind_crawl
    assert len(web.maxlagged) == 2
    for query in web.maxlagged:
        first, retry = web.api_times[query][:2]
        assert retry - first >= web.retry_after - 0.05  # waited out, then asked again
    assert report["stopped_sources"] == {}


def test_deep_tree_with_a_cycle_is_walked_once_and_counted_per_category(unkind_crawl):
    web, by_title, report, _ = unkind_crawl
    assert "File:Deep.jpg" in by_title  # four levels down
    listed = Counter(q["gcmtitle"] for q in web.api_queries if q.get("gcmtype") == "subcat")
    assert max(listed.values()) == 1  # the cycle is not followed round
    assert report["per_category"]["ai"] == {
        "Category:AI by tool/Midjourney": 3,
        "Category:AI by year": 1,
    }
    assert report["api_errors"] == {"permissiondenied|Category:AI": 2}


def test_a_file_in_several_sub_categories_is_stored_and_counted_once(unkind_crawl):
    _, by_title, report, _ = unkind_crawl
    assert len(by_title["File:Mj 1.jpg"]) == 1
    assert report["in_several_categories"] == {"ai": 1}


def test_a_file_under_both_labels_keeps_both_rows_for_prepare_to_drop(unkind_crawl):
    _, by_title, report, workdir = unkind_crawl
    assert sorted(row["label"] for row in by_title["File:Both labels.jpg"]) == ["ai", "real"]
    assert report["label_conflicts"] == 1
    manifest_frame = pd.read_csv(workdir / "data/raw/manifest.csv", dtype={"id": str})
    _, dropped = drop_duplicate_ids(manifest_frame)
    assert sorted(dropped.tolist()) == ["label_conflict", "label_conflict"]


def test_media_downloads_are_two_at_a_time_across_hosts(unkind_crawl):
    web, by_title, _, _ = unkind_crawl
    hosts = {
        row["file_url"].split("/")[2].split(":")[0] for rows in by_title.values() for row in rows
    }
    assert hosts == {"127.0.0.1", "localhost"}  # two per host would allow four at once
    assert web.most_in_flight == 2


def test_autothrottle_never_takes_a_host_below_download_delay(tmp_path):
    """A fast server (answers within milliseconds) has AutoThrottle lower each download slot's
    delay toward latency / AUTOTHROTTLE_TARGET_CONCURRENCY, down to DOWNLOAD_DELAY, its floor
    (https://docs.scrapy.org/en/latest/topics/autothrottle.html#throttling-algorithm). With the
    project's own delays, the gaps between the requests the fake Commons receives on its API and
    on its media host stay at that floor, Scrapy's +-50 % jitter on each wait aside. The gaps
    are measured where the server receives the requests, so one request held up on a loaded
    machine (its predecessor arriving late) may show a short gap: one is allowed; the old
    settings gave short gaps throughout."""
    floor, jitter = settings.DOWNLOAD_DELAY, 0.5
    own_delays = {key: v for key, v in FAST.items() if "DELAY" not in key and "SLOTS" not in key}
    with FakeWeb(page_size=1) as web:
        web.serve_uploads = True
        web.categories["Category:Real"] = [CommonsFile(f"File:r{i}.jpg") for i in range(8)]
        sources = [{"category": "Category:Real", "label": "real"}]
        config = commons_config(web, depth=0, segments=1, sources=sources, settings=own_delays)
        rows, _ = scrape(tmp_path, config)
    assert len(rows) == 8
    media = [t for path, times in web.times.items() if path.startswith("/upload/") for t in times]
    for times in (web.times["/w/api.php"], media):
        gaps = [later - earlier for earlier, later in itertools.pairwise(sorted(times))]
        assert len(gaps) >= 7
        assert sum(gap < floor * (1 - jitter) - 0.05 for gap in gaps) <= 1, gaps
        assert sum(gaps) / len(gaps) >= 0.8 * floor, gaps


def test_the_user_agent_carries_the_contact(unkind_crawl):
    web, _, _, _ = unkind_crawl
    assert web.user_agents and all("tests@example.org" in agent for agent in web.user_agents)


def test_each_label_reaches_max_items_with_unique_files_in_a_seeded_spread_sample(tmp_path):
    names = [f"File:{letter}{i:02d}.jpg" for letter in "ABCDEFGHKMPRSTWZ" for i in range(10)]
    samples = []
    with FakeWeb(page_size=500) as web:
        web.serve_uploads = True
        web.subcategories["Category:AI"] = ["Category:AI one", "Category:AI two"]
        web.categories["Category:AI one"] = [CommonsFile(n) for n in names]
        web.categories["Category:AI two"] = [CommonsFile(n) for n in names]  # the same files
        for name in names[::3]:  # failed downloads give their place in the quota back
            web.images[thumb(name[5:])] = "html"
        for seed in (0, 1):
            workdir = tmp_path / f"seed{seed}-{len(samples)}"
            workdir.mkdir()
            rows, report = scrape(
                workdir,
                commons_config(
                    web,
                    seed=seed,
                    segments=4,
                    page_size=5,
                    max_items=12,
                    sources=[{"category": "Category:AI", "label": "ai"}],
                ),
            )
            titles = [json.loads(row["extra"])["title"] for row in rows]
            assert len(rows) == len(set(titles)) == 12 and report["per_label"] == {"ai": 12}
            assert report["skipped"]["not_an_image"]["ai"] > 0
            samples.append(set(titles))
    assert samples[0] != samples[1]  # seeded
    first_letters = {title[5] for title in samples[0]}
    assert len(first_letters) >= 3  # spread over the sort keys, not the first 12 files


def test_segments_are_seeded_per_category_and_cover_its_whole_range():
    bounds = segment_bounds("Category:AI", 4, seed=0)
    assert bounds == segment_bounds("Category:AI", 4, seed=0)
    assert bounds != segment_bounds("Category:AI", 4, seed=1)
    assert bounds != segment_bounds("Category:Other", 4, seed=0)
    assert bounds[0][0] == "" and bounds[-1][1] == "" and len(bounds) == 4
    assert all(end == start for (_, end), (start, _) in zip(bounds[:-1], bounds[1:], strict=True))
    assert segment_bounds("Category:AI", 1, seed=0) == [("", "")]


def test_the_html_of_an_author_credit_becomes_its_words():
    html = '<a href="//x/User:J">Jane&nbsp;Doe</a><br>&amp; <b>Ann</b>&#233;  &lt;team&gt;\n'
    assert plain(html) == "Jane Doe & Ann \xe9 <team>"  # each tag a space, then one space a gap
    assert plain("") == ""


def test_retry_after_over_the_bound_stops_the_source_with_a_report_line(tmp_path):
    with FakeWeb() as web:
        web.maxlag_responses, web.retry_after = 1, 3600
        web.categories["Category:Real"] = [CommonsFile("File:r.jpg")]
        write_params(
            tmp_path,
            commons_config(
                web,
                sources=[{"category": "Category:Real", "label": "real", "name": "quality"}],
            ),
        )
        params = yaml.safe_load((tmp_path / "params.yaml").read_text())
        params["scrape"]["settings"]["RETRY_AFTER_MAX"] = 5
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        started = time.monotonic()
        result = subprocess.run(
            command(tmp_path), cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120
        )
    assert time.monotonic() - started < 60
    assert result.returncode != 0 and "quality" in result.stderr + result.stdout
    report = json.loads((tmp_path / "reports/scrape.json").read_text())
    assert "maxlag" in report["stopped_sources"]["quality"]
    assert (tmp_path / "data/raw/.crawl-incomplete").is_file()


def test_the_commons_spider_refuses_to_start_without_a_contact(tmp_path):
    config = {
        "spider": "commons",
        "contact": None,
        "sources": [{"category": "Category:Real", "label": "real"}],
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"scrape": config}))
    result = subprocess.run(
        command(tmp_path), cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "dvc exp run -S scrape.contact=you@example.org" in result.stderr
    assert not (tmp_path / "data").exists()


def test_an_unreachable_commons_ends_naming_the_offline_demo(tmp_path):
    """Without a network, Commons' host name does not resolve (Scrapy's CannotResolveHostError);
    here a closed port on 127.0.0.1 refuses the connection: both are a host that cannot be
    reached, and the stage's last line says so and names the offline demo."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    sources = [{"category": "Category:Real", "label": "real", "name": "quality"}]
    write_params(
        tmp_path,
        {"spider": "commons", "api": f"http://127.0.0.1:{port}/w/api.php", "sources": sources},
    )
    result = subprocess.run(
        command(tmp_path), cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("scrape: could not reach 127.0.0.1 (") and DEMO_COMMAND in last, last
    report = json.loads((tmp_path / "reports/scrape.json").read_text())
    assert report["unreachable_sources"] == {"quality": "127.0.0.1"}
    assert "Scrapy 2" not in result.stdout + result.stderr  # Scrapy's log is in its file
    assert "Scrapy 2" in (tmp_path / "logs" / "scrape.log").read_text()


def test_what_counts_as_a_host_that_cannot_be_reached():
    assert CannotResolveHostError in UNREACHABLE and DNSLookupError in UNREACHABLE
    assert not issubclass(HttpError, UNREACHABLE)  # a host that answers is reached


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
        web.images.update(
            {
                "/img/g1.jpg": jpeg(1),
                "/img/g2.jpg": jpeg(2),
                "/img/same.jpg": jpeg(3),
                "/img/copy.jpg": jpeg(3),
                "/private/p.jpg": jpeg(4),
                "/img/loop.jpg": "loop",
                "/img/slow.jpg": "slow",
            }
        )
        rows, report = scrape(
            tmp_path,
            {
                "spider": "gallery",
                "sources": [
                    {
                        "name": "gallery",
                        "label": "ai",
                        "start_urls": [f"{web.base}/gallery/1.html"],
                        "image_css": "img::attr(src)",
                        "next_css": "a[rel=next]::attr(href)",
                        "max_pages": 2,
                    },
                    {
                        "name": "other",
                        "label": "ai",
                        "start_urls": [f"{web.base}/other/index.html"],
                        "image_xpath": "//div[@class='pic']/img/@src",
                    },
                ],
            },
        )

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


@pytest.mark.slow
def test_kill_9_and_resume_keeps_the_manifest_consistent(tmp_path):
    count, quota = 100, 80
    with FakeWeb(page_size=10, image_delay=0.05) as web:
        web.categories["Category:Real"] = [(f"File:r{i}.jpg", "image/jpeg") for i in range(count)]
        for i in range(count):
            web.images[thumb(f"r{i}.jpg")] = jpeg(i)
        sources = [{"category": "Category:Real", "label": "real"}]
        config = commons_config(web, max_items=quota, sources=sources)
        write_params(tmp_path, config)
        crawl = subprocess.Popen(
            command(tmp_path),
            cwd=tmp_path,
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            path = tmp_path / "data/raw/manifest.csv"
            if path.is_file() and path.read_text().count("\n") > 25:
                break
            time.sleep(0.05)
        crawl.send_signal(signal.SIGKILL)
        crawl.wait()
        stored_before = len(manifest(tmp_path))
        assert 0 < stored_before < quota
        downloads_before = sum(n for p, n in web.hits.items() if p.startswith("/upload/"))
        rows, report = scrape(tmp_path, config)
        downloads_after = sum(n for p, n in web.hits.items() if p.startswith("/upload/"))

    titles = [json.loads(row["extra"])["title"] for row in rows]
    assert len(rows) == quota and len({row["id"] for row in rows}) == quota  # stored once each
    assert len(set(titles)) == quota  # and the quota counts what the killed run stored
    files = {f"images/{path.name}" for path in (tmp_path / "data/raw/images").iterdir()}
    assert files == {row["path"] for row in rows}  # no file without a row, no row without a file
    # what was stored before the kill is not downloaded again (a few in flight may be)
    assert downloads_after - downloads_before <= quota - stored_before + 4
    assert not (tmp_path / "data/raw/.crawl-incomplete").exists()


def test_nothing_leaves_the_machine_in_tests(tmp_path):
    with FakeWeb() as web:
        web.images["/img/ok.jpg"] = jpeg(1)
        urls = [
            {"url": f"{web.base}/img/ok.jpg", "label": "real"},
            {"url": "http://example.org/never.jpg", "label": "ai"},
        ]
        rows, report = scrape(tmp_path, {"spider": "urls", "urls": urls})
    assert [row["file_url"] for row in rows] == [f"{web.base}/img/ok.jpg"]
    assert report["skipped"] == {"filtered": {"ai": 1}}


@pytest.mark.slow
def test_scale_5000_items_with_bounded_memory(tmp_path):
    count = 5000
    with FakeWeb(page_size=500) as web:
        web.categories["Category:Real"] = [(f"File:r{i}.jpg", "image/jpeg") for i in range(count)]
        for i in range(count):
            web.images[thumb(f"r{i}.jpg")] = jpeg(i, size=16)
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
            "import runpy; runpy.run_module('pipeline.stages.scrape', run_name='__main__'); "
            "print(next(line.split()[1] for line in open('/proc/self/status') "
            "if line.startswith('VmHWM:')))"
        )
        result = subprocess.run(
            [sys.executable, "-c", measure],
            cwd=tmp_path,
            env=env(),
            capture_output=True,
            text=True,
            timeout=1800,
            check=True,
        )
    report = json.loads((tmp_path / "reports/scrape.json").read_text())
    peak_mib = int(result.stdout.strip().splitlines()[-1]) / 1024
    rate = report["stored"] / report["elapsed_s"]
    print(f"scale: {report['stored']} items at {rate:.1f} items/s, peak RSS {peak_mib:.0f} MiB")
    assert report["stored"] == count and peak_mib < 512  # about 130 MiB
