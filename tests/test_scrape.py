import contextlib
import csv
import fcntl
import functools
import hashlib
import http.server
import os
import pty
import struct
import subprocess
import sys
import termios
import threading

import pytest
import yaml

from conftest import ROOT, make_image_folder, strict_json


def run(args, cwd, timeout):
    """Run with this checkout's code (not an installed copy), failing the test with its output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def scrape(workdir, source, log=None, terminal=None, **extra):
    """Scrape `source` in `workdir`; Scrapy's log lines into `log`, what the terminal showed
    (stdout and stderr) into `terminal`."""
    config = {"spider": "local", "source": str(source), "source_name": "fixture", **extra}
    (workdir / "params.yaml").write_text(yaml.safe_dump({"scrape": config}))
    result = run([sys.executable, "-m", "pipeline.stages.scrape"], workdir, timeout=300)
    if log is not None:
        log.extend((workdir / "logs" / "scrape.log").read_text().splitlines())
    if terminal is not None:
        terminal.extend((result.stdout + result.stderr).splitlines())
    with open(workdir / "data/raw/manifest.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    report = strict_json(workdir / "reports/scrape.json")
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
        ("ai", "file"),
        ("ai", "file"),
        ("real", "file"),
        ("real", "http"),
    ]
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
        [sys.executable, "-m", "pipeline.stages.scrape"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode != 0
    assert "list.csv:2: label must be one of" in result.stdout + result.stderr


def test_each_skipped_file_is_one_log_line_and_counted(tmp_path):
    source = make_image_folder(tmp_path / "source", per_class=2)
    (source / "ai" / "page.jpg").write_bytes(b"<html>502 Bad Gateway</html>")
    (source / "ai" / "zero.png").write_bytes(b"")
    (source / "real" / "cut.png").write_bytes((source / "real" / "real_000.png").read_bytes()[:200])
    (source / "real" / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    (source / "real" / "notes.txt").write_text("not an image, not counted")
    log: list[str] = []
    terminal: list[str] = []
    rows, report = scrape(tmp_path, source, log=log, terminal=terminal)

    assert len(rows) == 4
    assert report["skipped"] == {
        "empty": {"ai": 1},
        "mime_image/svg+xml": {"real": 1},
        "not_an_image": {"ai": 1},
        "truncated": {"real": 1},
    }
    for name in ("page.jpg", "zero.png", "cut.png", "logo.svg"):
        lines = [line for line in log if name in line]
        assert len(lines) == 1 and "skipped (" in lines[0], lines
    assert not [line for line in log if "Traceback" in line]
    assert "scrapers.progress.CrawlProgress" in "\n".join(log)
    assert "RemoteControl" not in "\n".join(log)  # no HTTP server that runs code sent to it
    # the terminal: no log lines, one line of what was stored and where the log is
    assert terminal == [
        "scrape: stored fixture/ai 2, fixture/real 2; skipped 4; errors 0; "
        "Scrapy's log: logs/scrape.log"
    ]


def test_symlinks_out_of_the_source_folder_are_refused_by_default(tmp_path):
    source = make_image_folder(tmp_path / "source", per_class=2)
    elsewhere = make_image_folder(tmp_path / "elsewhere", per_class=1, seed=5)
    (source / "ai" / "outside.png").symlink_to(elsewhere / "ai" / "ai_000.png")
    (source / "ai" / "inside.png").symlink_to(source / "real" / "real_000.png")
    for name in ("refused", "followed"):
        (tmp_path / name).mkdir()
    rows, report = scrape(tmp_path / "refused", source)
    assert report["skipped"] == {"symlink_outside_source": {"ai": 1}}
    assert len(rows) == 5  # the link that stays inside is followed
    rows, report = scrape(tmp_path / "followed", source, follow_outside_symlinks=True)
    assert report["skipped"] == {} and len(rows) == 6


def test_a_terminal_shows_a_progress_bar_of_what_is_stored(tmp_path):
    """stderr a terminal (a pseudo-terminal here), the crawl draws its bar there."""
    source = make_image_folder(tmp_path / "source", per_class=3)
    (source / "ai" / "page.jpg").write_bytes(b"<html>502 Bad Gateway</html>")
    config = {"spider": "local", "source": str(source), "source_name": "fixture"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"scrape": config}))
    terminal, child_side = pty.openpty()
    window = struct.pack("HHHH", 24, 200, 0, 0)  # rows, columns: tqdm fits its bar to the width
    fcntl.ioctl(child_side, termios.TIOCSWINSZ, window)
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.stages.scrape"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=child_side,
    )
    os.close(child_side)
    shown = b""
    with contextlib.suppress(OSError):  # EIO once the child has closed the terminal
        while chunk := os.read(terminal, 4096):
            shown += chunk
    os.close(terminal)
    assert process.wait(timeout=300) == 0
    bar = shown.decode().split("\r")
    assert any(line.startswith("scrape: ") for line in bar), bar
    assert any("fixture/ai 3, fixture/real 3; skipped 1; errors 0" in line for line in bar), bar
