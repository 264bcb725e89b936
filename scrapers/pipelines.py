"""Storage by content sha256 (original bytes, never re-encoded) and the dataset manifest.

The manifest grows one flushed row per stored image, written only after its file, so that a crawl
killed at any moment leaves at worst a file without a row; the next run removes such files and
half-written rows before it starts, and skips URLs already stored (resume without re-download).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from itemadapter import ItemAdapter
from PIL import Image
from scrapy.exceptions import IgnoreRequest
from scrapy.pipelines.files import FilesPipeline
from scrapy.pipelines.media import FileException, _MediaRequestFiltered

from pipeline.core.io import atomic_path, write_json
from pipeline.core.paths import MANIFEST_FILE
from pipeline.data.images import UnreadableImage, decode
from scrapers.items import SKIPPED, STORED

MANIFEST_COLUMNS = [
    "id",
    "path",
    "label",
    "source_url",
    "source_name",
    "bytes",
    "format",
    "width",
    "height",
    "license",
    "license_url",
    "artist",
    "file_url",
    "extra",
]
logger = logging.getLogger(__name__)
FILES_DIR = "images"
# Reading local files needs no politeness: their own download slot, not throttled (settings.py).
LOCAL_FILES_META = {"download_slot": "local-files", "autothrottle_dont_adjust_delay": True}


class SkippedFile(_MediaRequestFiltered):
    """A file not stored, for the reason in its message. Scrapy logs every failed download with a
    traceback, except filtered ones: a skipped file is expected, and logged once, by us."""


def check_image(body: bytes) -> None:
    """Decode fully; FileException naming the reason (pipeline.data.images' vocabulary)."""
    try:
        decode(body)
    except UnreadableImage as error:
        raise FileException(f"{error.reason}: {error}") from error


def header(body: bytes) -> tuple[str, int, int]:
    """Format, width and height of an image already checked."""
    with Image.open(io.BytesIO(body)) as image:
        return image.format or "", image.width, image.height


@functools.lru_cache(maxsize=64)  # FilesPipeline asks twice per download: decode once
def stored_name(body: bytes) -> str:
    """images/<sha256>.<format> of a body that decodes as an image; FileException otherwise."""
    check_image(body)
    image_format, _, _ = header(body)
    return f"{FILES_DIR}/{hashlib.sha256(body).hexdigest()}.{(image_format or 'bin').lower()}"


def reconcile(store: Path, sort: bool = False) -> list[dict[str, str]]:
    """The manifest's complete rows whose files exist; files without a row are deleted."""
    manifest = store / MANIFEST_FILE
    rows: list[dict[str, str]] = []
    if manifest.is_file():
        text = manifest.read_text(encoding="utf-8")
        if not text.endswith("\n"):  # a row cut short by a kill
            text = text[: text.rfind("\n") + 1]
        rows = [row for row in csv.DictReader(io.StringIO(text)) if (store / row["path"]).is_file()]
    if sort:
        rows.sort(key=lambda row: (row["id"], row["source_url"]))
    kept = {row["path"] for row in rows}
    for path in (store / FILES_DIR).glob("*") if (store / FILES_DIR).is_dir() else ():
        if f"{FILES_DIR}/{path.name}" not in kept:
            path.unlink()
    with atomic_path(manifest) as tmp, open(tmp, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


class DatasetPipeline(FilesPipeline):
    """FilesPipeline (not ImagesPipeline, which re-encodes to JPEG) storing images/<sha256>.<ext>,
    with the manifest and the report."""

    LOG_FAILED_RESULTS = False  # each failure is already logged once and counted in the report

    def open_spider(self, spider=None) -> None:
        super().open_spider()
        self.root = Path(self.store.basedir)
        self.report = self.crawler.settings.get("SCRAPE_REPORT")
        self.started = time.monotonic()
        self.rows = reconcile(self.root)
        already_stored = getattr(self.crawler.spider, "already_stored", None)
        if already_stored is not None:
            already_stored(self.rows)
        self.seen = {row_key(row) for row in self.rows}
        self.stored_by_url = {row["file_url"]: row["path"] for row in self.rows}
        for row in self.rows:  # stored by an earlier, interrupted run
            self.crawler.stats.inc_value(f"{STORED}|{row['source_name']}|{row['label']}")
        # open for the whole crawl, one flushed row per stored image; closed in close_spider
        self.manifest = open(self.root / MANIFEST_FILE, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self.writer = csv.DictWriter(self.manifest, fieldnames=MANIFEST_COLUMNS)

    def get_media_requests(self, item, info):
        requests = super().get_media_requests(item, info)
        # a spider may share one download slot among all its media hosts (Commons: at most
        # two downloads at once across the upload hosts)
        media_slot = getattr(self.crawler.spider, "media_slot", None)
        for request in requests:
            if request.url.startswith("file://"):
                request.meta.update(LOCAL_FILES_META)
            elif media_slot:
                request.meta["download_slot"] = media_slot
        return requests

    async def media_to_download(self, request, info, *, item=None):
        """Already stored (an earlier, interrupted run): no second download."""
        path = self.stored_by_url.get(request.url)
        if path:
            return {"url": request.url, "path": path, "checksum": None, "status": "uptodate"}
        return None

    def file_path(self, request, response=None, info=None, *, item=None) -> str:
        return stored_name(response.body)

    async def media_downloaded(self, response, request, info, *, item=None):
        """Refuse what is not a usable image before FilesPipeline stores it."""
        if response.status != 200:
            raise SkippedFile(f"download_error: HTTP {response.status}")
        try:
            stored_name(response.body)  # cached: file_path asks again
        except FileException as error:
            raise SkippedFile(str(error)) from error
        return await super().media_downloaded(response, request, info, item=item)

    def media_failed(self, failure, request, info):
        """One log line with the reason, which FilesPipeline would replace by a bare one."""
        reason = _reason(failure.value)
        logger.info("skipped (%s) %s", reason, request.url)
        raise SkippedFile(reason) from failure.value

    def item_completed(self, results, item, info):
        adapter = ItemAdapter(item)
        label, source = adapter["label"], adapter["source_name"]
        adapter["files"] = [value for ok, value in results if ok]
        adapter["errors"] = [str(value.value) for ok, value in results if not ok]
        for ok, value in results:
            if not ok:
                self.crawler.stats.inc_value(f"{SKIPPED}|{value.value}|{label}|{source}")
                continue
            body = (self.root / value["path"]).read_bytes()
            image_format, width, height = header(body)
            row = {
                "id": Path(value["path"]).stem,
                "path": value["path"],
                "label": label,
                "source_url": adapter.get("source_url") or value["url"],
                "source_name": source,
                "bytes": len(body),
                "format": image_format,
                "width": width,
                "height": height,
                "license": adapter.get("license", ""),
                "license_url": adapter.get("license_url", ""),
                "artist": adapter.get("artist", ""),
                "file_url": value["url"],
                "extra": json.dumps(adapter.get("extra") or {}, sort_keys=True),
            }
            if row_key(row) in self.seen:
                continue
            self.seen.add(row_key(row))
            self.stored_by_url[row["file_url"]] = row["path"]
            self.writer.writerow(row)
            self.manifest.flush()
            self.rows.append(row)
            self.crawler.stats.inc_value(f"{STORED}|{source}|{label}")
        return item

    def close_spider(self, spider=None) -> None:
        self.manifest.close()
        reconcile(self.root, sort=True)  # a finished manifest reads in a stable order
        if self.report:
            write_json(self.report, self.summary())

    def summary(self) -> dict[str, Any]:
        stats = self.crawler.stats.get_stats()
        skipped: dict[str, dict[str, int]] = {}
        per_source_skips: Counter[str] = Counter()
        skips = {  # the spider's and the downloads'
            tuple(key.split("|")[1:]): count
            for key, count in stats.items()
            if key.startswith(f"{SKIPPED}|")
        }
        for (reason, label, source), count in skips.items():
            skipped.setdefault(reason, Counter())[label] += count
            per_source_skips[f"{source}/{label}"] += count
        stored = Counter(f"{row['source_name']}/{row['label']}" for row in self.rows)
        per_label = Counter(row["label"] for row in self.rows)
        per_category: dict[str, Counter[str]] = {}
        for row in self.rows:
            category = json.loads(row["extra"] or "{}").get("category")
            if category:
                per_category.setdefault(row["label"], Counter())[category] += 1
        ids_per_label = {}
        for row in self.rows:
            ids_per_label.setdefault(row["id"], set()).add(row["label"])
        return {
            "requests": stats.get("downloader/request_count", 0),
            "items": stats.get("item_scraped_count", 0),
            "stored": len(self.rows),
            "unique_images": len({row["id"] for row in self.rows}),
            "bytes": sum(int(row["bytes"]) for row in self.rows),
            "per_label": dict(sorted(per_label.items())),
            "class_ratio_real_to_ai": (
                round(per_label["real"] / per_label["ai"], 3) if per_label["ai"] else None
            ),
            "per_source": dict(sorted(stored.items())),
            "skipped_per_source": dict(sorted(per_source_skips.items())),
            "skipped": {reason: dict(counts) for reason, counts in sorted(skipped.items())},
            "per_category": {
                label: dict(counts.most_common()) for label, counts in sorted(per_category.items())
            },
            "label_conflicts": sum(len(labels) > 1 for labels in ids_per_label.values()),
            "in_several_categories": {
                key.split("|")[1]: count
                for key, count in stats.items()
                if key.startswith("aiic/in_several_categories|")
            },
            "api_errors": {
                key.split("|", 1)[1]: count
                for key, count in stats.items()
                if key.startswith("aiic/api_error|")
            },
            "stopped_sources": {
                key.split("|", 1)[1]: why
                for key, why in stats.items()
                if key.startswith("aiic/stopped|")
            },
            "unreachable_sources": {  # stopped because their host could not be reached
                key.split("|", 1)[1]: host
                for key, host in stats.items()
                if key.startswith("aiic/unreachable|")
            },
            "finish_reason": stats.get("finish_reason", ""),
            "elapsed_s": round(time.monotonic() - self.started, 2),
        }


def row_key(row: dict[str, Any]) -> tuple[str, str, str]:
    """One manifest row per image, page and label: the same file listed under both labels keeps
    both rows, so that prepare drops it as a label_conflict."""
    return row["id"], row["source_url"], row["label"]


def _reason(error: BaseException) -> str:
    """A short reason: the word before the colon of our own FileExceptions, else the error type."""
    message = str(error)
    if isinstance(error, FileException) and message:
        return message.split(":", 1)[0].strip().replace("-", "_")
    if isinstance(error, IgnoreRequest):
        if "robots" in message.lower():
            return "robots_txt"
        return "too_many_redirects" if "redirect" in message.lower() else "filtered"
    return "timeout" if "Timeout" in type(error).__name__ else type(error).__name__
