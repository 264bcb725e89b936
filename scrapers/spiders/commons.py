"""Wikimedia Commons through the MediaWiki API: one category (or more) per label.

generator=categorymembers (files, continuation followed, optional sub-category depth) with
prop=imageinfo, asking for a bounded thumbnail (iiurlwidth) rather than the original, and the
licence, author and description page of every file.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from html import unescape
from typing import Any
from urllib.parse import urlencode

import scrapy

from pipeline.images import LABELS
from scrapers.items import ImageItem, skip

RASTER_MIME_TYPES = ("image/jpeg", "image/png", "image/webp")
TAG = re.compile(r"<[^>]+>")


def plain(html: str) -> str:
    """Text of an extmetadata value (Commons returns author credits as HTML)."""
    return " ".join(unescape(TAG.sub(" ", html or "")).split())


class CommonsSpider(scrapy.Spider):
    name = "commons"
    # Commons asks for serial API requests; images come from another host (upload.*).
    custom_settings = {"DOWNLOAD_SLOTS": {"commons-api": {"concurrency": 1, "delay": 0.5}}}

    def __init__(
        self,
        sources: list[dict[str, Any]],
        api: str = "https://commons.wikimedia.org/w/api.php",
        thumb_width: int = 1024,
        depth: int = 0,
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
        self.sources, self.api, self.thumb_width = sources, api, thumb_width
        self.depth, self.mime_types, self.max_items = depth, set(mime_types), max_items
        self.maxlag, self.page_size = maxlag, page_size
        self.token = os.environ.get(token_env) if token_env else None
        self.taken: Counter[str] = Counter()  # per label and per source

    def api_request(self, params: dict[str, Any], callback, **meta: Any) -> scrapy.Request:  # noqa: ANN001
        query = {"action": "query", "format": "json", "formatversion": 2, "maxlag": self.maxlag}
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return scrapy.Request(
            f"{self.api}?{urlencode({**query, **params})}",
            callback=callback,
            headers=headers,
            # The API is a documented programmatic interface; robots.txt rules are for crawlers
            # of the wiki's pages, so they are deliberately not applied to this endpoint alone.
            meta={"dont_obey_robotstxt": True, "download_slot": "commons-api", **meta},
            # re-fetched on a resumed crawl, so that items of a page cut short are not lost;
            # their images, already stored, are not downloaded again
            dont_filter=True,
        )

    def files_request(self, category: str, source: dict, cont: dict | None = None):  # noqa: ANN201
        params = {
            "generator": "categorymembers", "gcmtitle": category, "gcmtype": "file",
            "gcmlimit": self.page_size, "prop": "imageinfo",
            "iiprop": "url|size|mime|sha1|extmetadata", "iiurlwidth": self.thumb_width,
            **(cont or {}),
        }  # fmt: skip
        return self.api_request(params, self.parse_files, source=source, category=category)

    async def start(self) -> AsyncIterator[scrapy.Request]:
        for source in self.sources:
            yield self.files_request(source["category"], source)
            if self.depth > 0:
                yield self.subcategories_request(source["category"], source, 1)

    def subcategories_request(self, category: str, source: dict, depth: int, cont=None):  # noqa: ANN001, ANN201
        params = {"list": "categorymembers", "cmtitle": category, "cmtype": "subcat",
                  "cmlimit": 500, **(cont or {})}  # fmt: skip
        return self.api_request(
            params, self.parse_subcategories, source=source, category=category, depth=depth
        )

    def parse_subcategories(self, response: scrapy.http.TextResponse) -> Iterator[scrapy.Request]:
        data, meta = response.json(), response.meta
        for member in data.get("query", {}).get("categorymembers", []):
            yield self.files_request(member["title"], meta["source"])
            if meta["depth"] < self.depth:
                yield self.subcategories_request(member["title"], meta["source"], meta["depth"] + 1)
        if "continue" in data:
            yield self.subcategories_request(
                meta["category"], meta["source"], meta["depth"], data["continue"]
            )

    def full(self, source: dict) -> bool:
        label, name = source["label"], source.get("name", source["category"])
        return (self.max_items is not None and self.taken[label] >= self.max_items) or (
            source.get("max_items") is not None and self.taken[name] >= source["max_items"]
        )

    def parse_files(self, response: scrapy.http.TextResponse) -> Iterator[Any]:
        data, source = response.json(), response.meta["source"]
        if "error" in data:
            self.logger.error("MediaWiki API error for %s: %s", response.url, data["error"])
            return
        name = source.get("name", source["category"])
        for page in sorted(data.get("query", {}).get("pages", []), key=lambda p: p["title"]):
            if self.full(source):
                return
            info = (page.get("imageinfo") or [{}])[0]
            if info.get("mime") not in self.mime_types:
                skip(self, f"mime_{info.get('mime')}", source["label"], name)
                continue
            if info.get("width", 0) <= self.thumb_width:
                # Commons would serve it untouched while wider ones are resampled by its
                # thumbnailer: a processing difference a model could learn instead of the image
                skip(self, "narrower_than_thumb_width", source["label"], name)
                continue
            metadata = info.get("extmetadata", {})
            self.taken[source["label"]] += 1
            self.taken[name] += 1
            yield ImageItem(
                file_urls=[info["thumburl"]],
                label=source["label"],
                source_name=name,
                source_url=info.get("descriptionurl", ""),
                license=plain(metadata.get("LicenseShortName", {}).get("value", "")),
                license_url=metadata.get("LicenseUrl", {}).get("value", ""),
                artist=plain(metadata.get("Artist", {}).get("value", "")),
                extra={
                    "mime": info.get("mime", ""),
                    "api_sha1": info.get("sha1", ""),
                    "uploaded": metadata.get("DateTime", {}).get("value", ""),
                    "title": page["title"],
                },
            )
        if "continue" in data and not self.full(source):
            yield self.files_request(response.meta["category"], source, data["continue"])
