"""Downloader middlewares: retries that honour the server, and a loopback-only guard for tests."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from time import monotonic
from urllib.parse import urlsplit

from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Request, Response
from scrapy.utils.response import response_status_message

logger = logging.getLogger(__name__)


def retry_after_seconds(value: bytes | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    text = value.decode("latin-1").strip()
    if text.isdigit():
        return float(text)
    try:
        return max(0.0, (parsedate_to_datetime(text) - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None


class PoliteRetryMiddleware(RetryMiddleware):
    """Scrapy's RetryMiddleware, waiting before each retry, with every other request to the same
    download slot held back meanwhile: as long as Retry-After says (a MediaWiki `maxlag` error
    arrives as HTTP 200 with Retry-After), up to RETRY_AFTER_MAX; a longer Retry-After is not
    retried (`retry_after_over_bound` in the request's meta says so to the spider). Without
    Retry-After, RETRY_BACKOFF_BASE * 2**attempt seconds, never more than RETRY_BACKOFF_MAX."""

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.backoff_base = settings.getfloat("RETRY_BACKOFF_BASE", 1.0)
        self.backoff_max = settings.getfloat("RETRY_BACKOFF_MAX", 60.0)
        self.retry_after_max = settings.getfloat("RETRY_AFTER_MAX", 600.0)

    async def process_response(self, request: Request, response: Response, spider=None):
        if request.meta.get("dont_retry", False):
            return response
        maxlag = response.headers.get("MediaWiki-API-Error") == b"maxlag"
        if response.status not in self.retry_http_codes and not maxlag:
            return response
        delay = retry_after_seconds(response.headers.get("Retry-After"))
        if delay is not None and delay > self.retry_after_max:
            logger.error(
                "%s asks to wait %.0f s (Retry-After), longer than RETRY_AFTER_MAX (%.0f s): "
                "not retried",
                request.url,
                delay,
                self.retry_after_max,
            )
            request.meta["retry_after_over_bound"] = delay
            return response
        retry = self._retry(
            request, "maxlag" if maxlag else response_status_message(response.status)
        )
        if retry is None:
            return response
        if delay is None:
            delay = min(
                self.backoff_base * 2 ** request.meta.get("retry_times", 0), self.backoff_max
            )
        self.hold_slot(request, delay)
        await asyncio.sleep(delay)
        return retry

    def hold_slot(self, request: Request, delay: float) -> None:
        """Keep the request's download slot idle for `delay` seconds: the server asked us to."""
        downloader = self.crawler.engine.downloader
        slot = downloader.slots.get(downloader.get_slot_key(request))
        if slot is not None:
            slot.lastseen = max(slot.lastseen, monotonic() + delay - slot.download_delay())


class HoldBackMiddleware:
    """Requests the spider no longer wants (its `hold_back(request)` says so: a Commons page whose
    label's quota is full) are kept by the spider rather than sent."""

    def __init__(self, crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawler)

    def process_request(self, request: Request, spider=None) -> None:
        hold_back = getattr(self.crawler.spider, "hold_back", None)
        if hold_back is not None and hold_back(request):
            raise IgnoreRequest(HELD_BACK)


HELD_BACK = "held back by the spider"
LOOPBACK_ONLY_ENV = "AIIC_LOOPBACK_ONLY"


class LoopbackOnlyRefusal(IgnoreRequest):
    """A request AIIC_LOOPBACK_ONLY kept on this machine: to the crawl, as without a network, a
    host that cannot be reached."""


class LoopbackOnlyMiddleware:
    """With AIIC_LOOPBACK_ONLY=1 (set by the tests and benchmarks), no request leaves the machine:
    anything but file:// and loopback hosts is refused before it is sent."""

    def process_request(self, request: Request, spider=None) -> None:
        if os.environ.get(LOOPBACK_ONLY_ENV) != "1":
            return None
        if request.meta.get("proxy"):
            raise LoopbackOnlyRefusal(f"{LOOPBACK_ONLY_ENV} is set: no proxy may be used")
        request.meta["proxy"] = None  # HttpProxyMiddleware must not add one from the environment
        parts = urlsplit(request.url)
        if parts.scheme == "file" or parts.hostname == "localhost":
            return None
        try:
            if ipaddress.ip_address(parts.hostname or "").is_loopback:
                return None
        except ValueError:
            pass
        raise LoopbackOnlyRefusal(f"{LOOPBACK_ONLY_ENV} is set: not sending {request.url}")
