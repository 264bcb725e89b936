"""Any HTML gallery: start pages, CSS or XPath selectors for image links and the next page."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlparse

import scrapy

from pipeline.data.images import LABELS
from scrapers.items import ImageItem


def select(response: scrapy.http.TextResponse, css: str | None, xpath: str | None) -> list[str]:
    found = response.css(css).getall() if css else response.xpath(xpath).getall() if xpath else []
    return [response.urljoin(value.strip()) for value in found if value.strip()]


class GallerySpider(scrapy.Spider):
    """Each source: start_urls, label, name, image_css or image_xpath (selecting URLs, e.g.
    'img::attr(src)'), optional next_css or next_xpath, max_pages, max_items, allowed_domains
    (the image hosts included)."""

    name = "gallery"

    def __init__(self, sources: list[dict[str, Any]], max_items: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        for source in sources:
            if source.get("label") not in LABELS:
                raise ValueError(f"gallery source {source}: label must be one of {LABELS}")
        self.sources, self.max_items = sources, max_items
        self.allowed_domains = sorted(
            {domain for s in sources for domain in s.get("allowed_domains", [])}
            | {urlparse(url).hostname for s in sources for url in s["start_urls"]}
        )
        self.taken: Counter[str] = Counter()

    async def start(self) -> AsyncIterator[scrapy.Request]:
        for source in self.sources:
            for url in source["start_urls"]:
                yield scrapy.Request(url, meta={"source": source, "page": 1})

    def parse(self, response: scrapy.http.TextResponse) -> Iterator[Any]:
        source, page = response.meta["source"], response.meta["page"]
        name, label = (
            source.get("name", urlparse(source["start_urls"][0]).hostname),
            source["label"],
        )
        for url in select(response, source.get("image_css"), source.get("image_xpath")):
            if (self.max_items is not None and self.taken[label] >= self.max_items) or (
                source.get("max_items") is not None and self.taken[name] >= source["max_items"]
            ):
                return
            self.taken[label] += 1
            self.taken[name] += 1
            yield ImageItem(file_urls=[url], label=label, source_name=name, source_url=response.url)
        if page < source.get("max_pages", 1):
            for url in select(response, source.get("next_css"), source.get("next_xpath"))[:1]:
                yield response.follow(url, meta={"source": source, "page": page + 1})
