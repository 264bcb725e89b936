"""Storage by content sha256 (original bytes, never re-encoded) and the dataset manifest."""

from __future__ import annotations

import csv
import hashlib
import io
import time
from collections import Counter
from pathlib import Path
from typing import Any

from itemadapter import ItemAdapter
from PIL import Image, UnidentifiedImageError
from scrapy.pipelines.files import FilesPipeline
from scrapy.pipelines.media import FileException

from pipeline.io import atomic_path, write_json

MANIFEST_COLUMNS = [
    "id", "path", "label", "source_url", "source_name", "bytes", "format", "width", "height",
    "license", "license_url", "artist",
]  # fmt: skip
FILES_DIR = "images"
# Reading local files needs no politeness: their own download slot, not throttled (settings.py).
LOCAL_FILES_META = {"download_slot": "local-files", "autothrottle_dont_adjust_delay": True}


def sniff(body: bytes) -> tuple[str, int, int]:
    """Format, width and height from the image header; FileException when it is no image."""
    try:
        with Image.open(io.BytesIO(body)) as image:
            return image.format or "", image.width, image.height
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise FileException(f"not_an_image: {error}") from error


class ContentAddressedFilesPipeline(FilesPipeline):
    """FilesPipeline (not ImagesPipeline, which re-encodes to JPEG): images/<sha256>.<ext>."""

    LOG_FAILED_RESULTS = False  # each failure is already logged once and counted in the report

    def file_path(self, request, response=None, info=None, *, item=None) -> str:  # noqa: ANN001
        if response is None:  # before download the content is unknown: always fetch
            return f"pending/{hashlib.sha1(request.url.encode()).hexdigest()}"
        image_format, _, _ = sniff(response.body)
        digest = hashlib.sha256(response.body).hexdigest()
        return f"{FILES_DIR}/{digest}.{(image_format or 'bin').lower()}"

    def get_media_requests(self, item, info):  # noqa: ANN001, ANN201
        requests = super().get_media_requests(item, info)
        for request in requests:
            if request.url.startswith("file://"):
                request.meta.update(LOCAL_FILES_META)
        return requests

    def media_failed(self, failure, request, info):  # noqa: ANN001, ANN201
        """FilesPipeline replaces every failure by a bare FileException: keep the reason."""
        try:
            super().media_failed(failure, request, info)
        except FileException as error:
            raise FileException(_reason(failure.value)) from error

    def item_completed(self, results, item, info):  # noqa: ANN001
        adapter = ItemAdapter(item)
        adapter["files"] = [value for ok, value in results if ok]
        adapter["errors"] = [str(value.value) for ok, value in results if not ok]
        return item


def _reason(error: BaseException) -> str:
    """A short reason: the word before the colon of our own FileExceptions, else the error type."""
    if isinstance(error, FileException) and str(error):
        return str(error).split(":", 1)[0].strip().replace("-", "_")
    return type(error).__name__


class ManifestPipeline:
    """One manifest row per stored image; writes manifest.csv and the report at close."""

    def __init__(self, store: Path, report: Path | None) -> None:
        self.store = store
        self.report = report
        self.rows: list[dict[str, Any]] = []
        self.skipped: Counter[tuple[str, str, str]] = Counter()
        self.started = time.monotonic()

    @classmethod
    def from_crawler(cls, crawler):  # noqa: ANN001, ANN206
        report = crawler.settings.get("SCRAPE_REPORT")
        return cls(Path(crawler.settings["FILES_STORE"]), Path(report) if report else None)

    def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        for reason in adapter.get("errors", []):
            self.skipped[(reason, adapter["label"], adapter["source_name"])] += 1
        for stored in adapter.get("files", []):
            path = self.store / stored["path"]
            body = path.read_bytes()
            image_format, width, height = sniff(body)
            self.rows.append(
                {
                    "id": path.stem,
                    "path": stored["path"],
                    "label": adapter["label"],
                    "source_url": stored["url"] or adapter["source_url"],
                    "source_name": adapter["source_name"],
                    "bytes": len(body),
                    "format": image_format,
                    "width": width,
                    "height": height,
                    "license": adapter.get("license", ""),
                    "license_url": adapter.get("license_url", ""),
                    "artist": adapter.get("artist", ""),
                }
            )
        return item

    def close_spider(self) -> None:
        self.rows.sort(key=lambda row: (row["id"], row["source_url"]))
        with atomic_path(self.store / "manifest.csv") as tmp, open(tmp, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=MANIFEST_COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)
        if self.report:
            write_json(self.report, self.summary())

    def summary(self) -> dict[str, Any]:
        stored = Counter((row["label"], row["source_name"]) for row in self.rows)
        skipped: dict[str, dict[str, int]] = {}
        for (reason, label, _), count in self.skipped.items():
            skipped.setdefault(reason, Counter())[label] += count
        return {
            "items": len(self.rows) + sum(self.skipped.values()),
            "stored": len(self.rows),
            "unique_images": len({row["id"] for row in self.rows}),
            "bytes": sum(row["bytes"] for row in self.rows),
            "per_label": dict(Counter(row["label"] for row in self.rows)),
            "per_source": {f"{source}/{label}": n for (label, source), n in sorted(stored.items())},
            "skipped": {reason: dict(counts) for reason, counts in sorted(skipped.items())},
            "elapsed_s": round(time.monotonic() - self.started, 2),
        }
