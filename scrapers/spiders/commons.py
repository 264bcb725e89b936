"""Wikimedia Commons through the MediaWiki API: one category tree (or more) per label.

Each category's files come from generator=categorymembers (gcmtype=file) with prop=imageinfo,
asking for a thumbnail `thumb_width` wide (iiurlwidth) and the licence, author and description
page of every file. What Commons really serves decides what is kept:

- Thumbnails come only at Commons' standard widths ($wgThumbnailSteps): a request is served at
  the next step up, and where that step reaches the original's width the original file itself is
  served (`thumburl` equals `url`). Such a file is skipped (`no_thumbnail_resample`), so that every
  stored image of both labels was resampled by the same thumbnailer; the served width is recorded.
- A file that cannot be thumbnailed has `thumberror` and no `thumburl`: skipped (`thumberror`).
- At most 50 images are scaled per request: the rest of the batch arrives, without `imageinfo`,
  after the `iicontinue` continuation, which is followed like any other.

Sub-categories are walked breadth-first to `depth` with a visited set (Commons' category graph
has cycles), each with its `categoryinfo`, so that empty ones cost no request. The sample is
seeded and spread over each category: its sort-key range is cut at `segments - 1` random
sort-key prefixes (`gcmstartsortkeyprefix` / `gcmendsortkeyprefix`), and every segment of every
category is read one page at a time in turn (request priorities), until each label has
`max_items` unique files. A file met again under the same label is not counted twice; a file
met under both labels is kept under both, so that prepare drops it as a `label_conflict`.
Downloads that fail give their place back, and continuations held back by a full quota resume.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import string
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

import scrapy
from scrapy import exceptions, signals
from scrapy.exceptions import DontCloseSpider, IgnoreRequest
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.internet import error as twisted_errors
from w3lib.html import replace_entities, replace_tags

from pipeline.data.images import LABELS
from scrapers.items import ImageItem, skip
from scrapers.middlewares import HELD_BACK, LoopbackOnlyRefusal

RASTER_MIME_TYPES = ("image/jpeg", "image/png", "image/webp")
THUMBNAIL_STEPS = (20, 40, 60, 120, 250, 330, 500, 960, 1280, 1920, 3840)
STEP_IN_URL = re.compile(r"/(\d+)px-[^/]*$")
PREFIX_ALPHABET = string.digits + string.ascii_uppercase
API_SLOT, MEDIA_SLOT = "commons-api", "commons-media"
TREE_PRIORITY = 1000  # the category tree is walked before files are read
# A host that cannot be reached: no address for its name, no connection, no answer in time (or,
# in tests, AIIC_LOOPBACK_ONLY). Scrapy's own exceptions where its version has them, else Twisted's.
UNREACHABLE = (LoopbackOnlyRefusal,) + tuple(
    getattr(module, name)
    for module, names in (
        (exceptions, ("CannotResolveHostError", "DownloadConnectionRefusedError")),
        (exceptions, ("DownloadTimeoutError",)),
        (twisted_errors, ("DNSLookupError", "ConnectError", "TimeoutError")),
    )
    for name in names
    if hasattr(module, name)
)


def plain(html: str) -> str:
    """Text of an extmetadata value (Commons returns author credits as HTML)."""
    # each tag becomes a space rather than nothing (remove_tags), so that "a<br>b" stays two words
    return " ".join(replace_entities(replace_tags(html or "", " ")).split())


def served_step(width: int) -> int:
    """The standard thumbnail width Commons serves for a request `width` px wide."""
    return next((step for step in THUMBNAIL_STEPS if step >= width), width)


def segment_bounds(category: str, segments: int, seed: int) -> list[tuple[str, str]]:
    """(start, end) sort-key prefixes cutting a category at seeded random points; '' is open."""
    rng = random.Random(f"{seed}|{category}")
    cuts = sorted({"".join(rng.choices(PREFIX_ALPHABET, k=2)) for _ in range(segments - 1)})
    bounds = ["", *cuts, ""]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


class CommonsSpider(scrapy.Spider):
    name = "commons"
    # Commons asks for serial API requests; all media hosts together get two downloads at once;
    # each of the two slots waits DOWNLOAD_DELAY at least between requests (settings.py).
    custom_settings = {
        "DOWNLOAD_SLOTS": {API_SLOT: {"concurrency": 1}, MEDIA_SLOT: {"concurrency": 2}},
    }
    media_slot = MEDIA_SLOT  # read by the dataset pipeline for every file it downloads

    def __init__(
        self,
        sources: list[dict[str, Any]],
        api: str = "https://commons.wikimedia.org/w/api.php",
        thumb_width: int = 960,
        depth: int = 6,
        segments: int = 4,
        seed: int = 0,
        mime_types: list[str] = RASTER_MIME_TYPES,
        max_items: int | None = None,
        maxlag: int = 5,
        token_env: str | None = None,
        page_size: int = 50,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for source in sources:
            if source.get("label") not in LABELS:
                raise ValueError(f"commons source {source}: label must be one of {LABELS}")
            if not str(source.get("category", "")).startswith("Category:"):
                raise ValueError(f"commons source {source}: category must start with Category:")
        if int(segments) < 1 or int(page_size) < 1:
            raise ValueError("commons: segments and page_size must be at least 1")
        self.sources, self.api = sources, api
        self.thumb_width, self.step = int(thumb_width), served_step(int(thumb_width))
        self.depth, self.segments, self.seed = int(depth), int(segments), int(seed)
        self.mime_types, self.max_items = set(mime_types), max_items
        self.maxlag, self.page_size = maxlag, int(page_size)
        self.token = os.environ.get(token_env) if token_env else None
        self.taken: dict[str, set[str]] = defaultdict(set)  # label or source name -> titles
        self.met: dict[tuple[str, str], str] = {}  # (label, title) handled -> its category
        self.visited: set[tuple[str, str]] = set()  # (label, category) already listed
        self.parked: list[scrapy.Request] = []  # continuations held back by a full quota
        self.stopped: dict[str, str] = {}  # source name -> why it stopped
        if self.step != self.thumb_width:
            self.logger.info(
                "thumb_width %d is served at Commons' standard step %d px",
                self.thumb_width,
                self.step,
            )

    @classmethod
    def from_crawler(cls, crawler, *args: Any, **kwargs: Any):
        spider = super().from_crawler(crawler, *args, **kwargs)
        crawler.signals.connect(spider.item_scraped, signal=signals.item_scraped)
        crawler.signals.connect(spider.spider_idle, signal=signals.spider_idle)
        return spider

    # -- requests -----------------------------------------------------------------------------

    def api_request(self, params: dict[str, Any], callback, priority: int = 0, **meta: Any):
        query = {"action": "query", "format": "json", "formatversion": 2, "maxlag": self.maxlag}
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return scrapy.Request(
            f"{self.api}?{urlencode({**query, **params})}",
            callback=callback,
            errback=self.api_failed,
            headers=headers,
            priority=priority,
            # The API is a documented programmatic interface; robots.txt rules are for crawlers
            # of the wiki's pages, so they are deliberately not applied to this endpoint alone.
            meta={"dont_obey_robotstxt": True, "download_slot": API_SLOT, **meta},
            # re-fetched on a resumed crawl, so that items of a page cut short are not lost;
            # their images, already stored, are not downloaded again
            dont_filter=True,
        )

    def files_request(
        self,
        category: str,
        source: dict,
        bounds: tuple[str, str],
        page: int = 0,
        cont: dict | None = None,
    ) -> scrapy.Request:
        start, end = bounds
        params = {
            "generator": "categorymembers",
            "gcmtitle": category,
            "gcmtype": "file",
            "gcmlimit": self.page_size,
            "prop": "imageinfo",
            "iiprop": "url|size|mime|sha1|extmetadata",
            "iiurlwidth": self.thumb_width,
            **({"gcmstartsortkeyprefix": start} if start else {}),
            **({"gcmendsortkeyprefix": end} if end else {}),
            **(cont or {}),
        }
        return self.api_request(
            params,
            self.parse_files,
            -page,
            source=source,
            category=category,
            bounds=bounds,
            page=page,
        )

    def category_files(self, category: str, source: dict, files: int | None) -> Iterator[Any]:
        """The first page of each segment of a category (`files`: its size, where known)."""
        if files == 0:
            return
        pages = math.ceil(files / self.page_size) if files is not None else self.segments
        for bounds in segment_bounds(category, max(min(self.segments, pages), 1), self.seed):
            yield self.files_request(category, source, bounds)

    def subcategories_request(self, category: str, source: dict, depth: int, cont=None):
        params = {
            "generator": "categorymembers",
            "gcmtitle": category,
            "gcmtype": "subcat",
            "gcmlimit": 500,
            "prop": "categoryinfo",
            **(cont or {}),
        }
        return self.api_request(
            params,
            self.parse_subcategories,
            TREE_PRIORITY,
            source=source,
            category=category,
            depth=depth,
        )

    async def start(self) -> AsyncIterator[scrapy.Request]:
        for source in self.sources:
            self.visited.add((source["label"], source["category"]))
            if self.depth > 0:
                yield self.subcategories_request(source["category"], source, 1)
            for request in self.category_files(source["category"], source, None):
                yield request

    # -- answers ------------------------------------------------------------------------------

    def answer(self, response: scrapy.http.TextResponse) -> dict | None:
        """The API's JSON, or None after reporting its error (a maxlag error that outlasted the
        retries, or any other, stops that category, or the whole source for maxlag)."""
        data = response.json()
        for module, warning in (data.get("warnings") or {}).items():
            self.logger.warning("MediaWiki API warning (%s): %s", module, warning)
        if "error" not in data:
            return data
        code = data["error"].get("code", "unknown")
        source, category = response.meta["source"], response.meta["category"]
        if code == "maxlag":
            wait = response.headers.get("Retry-After", b"?").decode()
            self.stop(source, f"maxlag: {data['error'].get('info', '')} (Retry-After {wait} s)")
        else:
            self.logger.error(
                "MediaWiki API error %s for %s: %s", code, category, data["error"].get("info", "")
            )
            self.crawler.stats.inc_value(f"aiic/api_error|{code}|{source_name(source)}")
        return None

    def api_failed(self, failure) -> None:
        request = failure.request
        source = request.meta.get("source")
        if failure.check(IgnoreRequest) and str(failure.value) == HELD_BACK:
            return
        if failure.check(HttpError):
            response = failure.value.response
            why = f"HTTP {response.status}"
            if wait := request.meta.get("retry_after_over_bound"):
                why += f", Retry-After {wait:.0f} s over the bound"
            self.stop(source, f"{why} from the API")
        else:
            why = f"{type(failure.value).__name__} from the API: {failure.value}"
            self.stop(source, why, unreachable=failure.check(*UNREACHABLE) is not None)

    def stop(self, source: dict, why: str, unreachable: bool = False) -> None:
        name = source_name(source)
        if name not in self.stopped:
            self.stopped[name] = why
            self.logger.error("commons: stopping source %s: %s", name, why)
            self.crawler.stats.set_value(f"aiic/stopped|{name}", why)
            if unreachable:
                host = urlsplit(self.api).hostname or self.api
                self.crawler.stats.set_value(f"aiic/unreachable|{name}", host)

    def parse_subcategories(self, response: scrapy.http.TextResponse) -> Iterator[Any]:
        meta = response.meta
        source, depth = meta["source"], meta["depth"]
        if source_name(source) in self.stopped or (data := self.answer(response)) is None:
            return
        for page in data.get("query", {}).get("pages", []):
            title, info = page["title"], page.get("categoryinfo") or {}
            if (source["label"], title) in self.visited:
                continue  # a cycle, or a category reached by two paths
            self.visited.add((source["label"], title))
            yield from self.category_files(title, source, info.get("files"))
            if depth < self.depth and info.get("subcats", 1) > 0:
                yield self.subcategories_request(title, source, depth + 1)
        if "continue" in data:
            yield self.subcategories_request(meta["category"], source, depth, data["continue"])

    def already_stored(self, rows: list[dict[str, str]]) -> None:
        """Count the files an earlier, interrupted run stored (the dataset pipeline's manifest)
        toward the quota, so that a rerun neither fetches nor counts them again."""
        names = {source_name(source): source for source in self.sources}
        for row in rows:
            title = json.loads(row.get("extra") or "{}").get("title")
            if title and row["source_name"] in names:
                self.taken[row["label"]].add(title)
                self.taken[row["source_name"]].add(title)
                self.met[row["label"], title] = json.loads(row["extra"]).get("category", "")

    def hold_back(self, request: scrapy.Request) -> bool:
        """Keep, rather than send, a page of files whose label's quota is full."""
        if request.callback != self.parse_files or not self.full(request.meta["source"]):
            return False
        self.parked.append(request)
        return True

    def full(self, source: dict) -> bool:
        label, name = source["label"], source_name(source)
        return (self.max_items is not None and len(self.taken[label]) >= self.max_items) or (
            source.get("max_items") is not None and len(self.taken[name]) >= source["max_items"]
        )

    def parse_files(self, response: scrapy.http.TextResponse) -> Iterator[Any]:
        meta = response.meta
        source, category = meta["source"], meta["category"]
        label, name = source["label"], source_name(source)
        if name in self.stopped or (data := self.answer(response)) is None:
            return
        pages = sorted(data.get("query", {}).get("pages", []), key=lambda p: p["title"])
        for page in pages:
            title = page["title"]
            if page.get("missing") or page.get("invalid") or page.get("imagerepository") == "":
                if (label, title) not in self.met:
                    self.met[label, title] = category
                    skip(self, "missing_file", label, name, title)
                continue
            if not page.get("imageinfo"):
                continue  # beyond this answer's 50 scaled images: iicontinue brings it
            if (label, title) in self.met:
                if self.met[label, title] != category:  # filed in several sub-categories
                    self.crawler.stats.inc_value(f"aiic/in_several_categories|{label}")
                continue
            conflict = any(title in self.taken[other] for other in LABELS if other != label)
            if self.full(source) and not conflict:
                # read this page again if a failed download gives a place in the quota back
                self.parked.append(response.request.copy())
                return
            self.met[label, title] = category
            item = self.item(page, source, category)
            if item is not None:
                yield item
        if "continue" in data:
            request = self.files_request(
                category, source, meta["bounds"], meta["page"] + 1, data["continue"]
            )
            if self.full(source):
                self.parked.append(request)
            else:
                yield request

    def item(self, page: dict, source: dict, category: str) -> ImageItem | None:
        """The item of one file, or None after counting why it was skipped."""
        info, title = page["imageinfo"][0], page["title"]
        label, name = source["label"], source_name(source)
        if info.get("filemissing") or info.get("filehidden"):
            skip(self, "missing_file", label, name, title)
            return None
        if info.get("mime") not in self.mime_types:
            skip(self, f"mime_{info.get('mime')}", label, name, title)
            return None
        if "thumberror" in info or not info.get("thumburl"):
            skip(self, "thumberror", label, name, f"{title}: {info.get('thumberror', '')}")
            return None
        match = STEP_IN_URL.search(info["thumburl"])
        served = int(match[1]) if match else int(info.get("thumbwidth") or self.step)
        if info["thumburl"] == info.get("url") or int(info.get("width", 0)) <= served:
            # Commons would send the original untouched, while wider files are resampled by its
            # thumbnailer: a processing difference a model could learn instead of the image
            skip(self, "no_thumbnail_resample", label, name, title)
            return None
        self.taken[label].add(title)
        self.taken[name].add(title)
        metadata = info.get("extmetadata", {})
        return ImageItem(
            file_urls=[info["thumburl"]],
            label=label,
            source_name=name,
            source_url=info.get("descriptionurl", ""),
            license=plain(metadata.get("LicenseShortName", {}).get("value", "")),
            license_url=metadata.get("LicenseUrl", {}).get("value", ""),
            artist=plain(metadata.get("Artist", {}).get("value", "")),
            extra={
                "mime": info.get("mime", ""),
                "api_sha1": info.get("sha1", ""),
                "uploaded": metadata.get("DateTime", {}).get("value", ""),
                "title": title,
                "category": category,
                "original_width": int(info.get("width", 0)),
                "thumb_width": served,
            },
        )

    # -- the quota ----------------------------------------------------------------------------

    def item_scraped(self, item: Any, response: Any = None, spider: Any = None) -> None:
        """A download that failed gives its place in the quota back."""
        if isinstance(item, ImageItem) and not item.files:
            title = item.extra.get("title")
            self.taken[item.label].discard(title)
            self.taken[item.source_name].discard(title)

    def spider_idle(self, spider: Any = None) -> None:
        """Resume the continuations held back by a quota that failed downloads left short."""
        resumable = [r for r in self.parked if not self.full(r.meta["source"])]
        if not resumable:
            return
        self.parked = [r for r in self.parked if r not in resumable]
        for request in resumable:
            self.crawler.engine.crawl(request)
        raise DontCloseSpider


def source_name(source: dict) -> str:
    return source.get("name", source["category"])
