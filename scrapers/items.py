"""The one item every spider yields: an image URL with its label and provenance."""

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ImageItem:
    file_urls: list[str]
    label: str  # "real" or "ai"
    source_name: str  # the site, category or folder the label comes from
    source_url: str = ""  # the page the image was found on (the file URL for local sources)
    license: str = ""
    license_url: str = ""
    artist: str = ""
    files: list[dict] = field(default_factory=list)  # filled by FilesPipeline
    errors: list[str] = field(default_factory=list)  # why a file_url was not stored
    extra: dict = field(default_factory=dict)  # source-specific provenance (MIME, API sha1...)


SKIPPED = "aiic/skipped"  # stats key: SKIPPED|reason|label|source, files passed over
STORED = "aiic/stored"  # stats key: STORED|source|label, images in the manifest


def skip(spider: Any, reason: str, label: str, source: str, what: str) -> None:
    """Count an image a spider passed over, in one log line; the manifest pipeline reports these
    with its own."""
    spider.logger.info("skipped (%s) %s [%s, %s]", reason, what, label, source)
    spider.crawler.stats.inc_value(f"{SKIPPED}|{reason}|{label}|{source}")
