"""Downloader middlewares: retries that honour the server, and a loopback-only guard for tests."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Request, Response
from scrapy.utils.response import response_status_message


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
    """Scrapy's RetryMiddleware, waiting before each retry: as long as Retry-After says, else
    RETRY_BACKOFF_BASE * 2**attempt seconds, never more than RETRY_BACKOFF_MAX."""

    def __init__(self, settings) -> None:  # noqa: ANN001
        super().__init__(settings)
        self.backoff_base = settings.getfloat("RETRY_BACKOFF_BASE", 1.0)
        self.backoff_max = settings.getfloat("RETRY_BACKOFF_MAX", 60.0)

    async def process_response(self, request: Request, response: Response, spider=None):  # noqa: ANN001, ANN201
        if request.meta.get("dont_retry", False):
            return response
        maxlag = response.headers.get("MediaWiki-API-Error") == b"maxlag"
        if response.status not in self.retry_http_codes and not maxlag:
            return response
        retry = self._retry(
            request, "maxlag" if maxlag else response_status_message(response.status)
        )
        if retry is None:
            return response
        attempt = request.meta.get("retry_times", 0)
        delay = retry_after_seconds(response.headers.get("Retry-After"))
        if delay is None:
            delay = self.backoff_base * 2**attempt
        await asyncio.sleep(min(delay, self.backoff_max))
        return retry


LOOPBACK_ONLY_ENV = "AIIC_LOOPBACK_ONLY"


class LoopbackOnlyMiddleware:
    """With AIIC_LOOPBACK_ONLY=1 (set by the tests and benchmarks), no request leaves the machine:
    anything but file:// and loopback hosts is refused before it is sent."""

    def process_request(self, request: Request, spider=None) -> None:  # noqa: ANN001
        if os.environ.get(LOOPBACK_ONLY_ENV) != "1":
            return None
        if request.meta.get("proxy"):
            raise IgnoreRequest(f"{LOOPBACK_ONLY_ENV} is set: no proxy may be used")
        request.meta["proxy"] = None  # HttpProxyMiddleware must not add one from the environment
        parts = urlsplit(request.url)
        if parts.scheme == "file" or parts.hostname == "localhost":
            return None
        try:
            if ipaddress.ip_address(parts.hostname or "").is_loopback:
                return None
        except ValueError:
            pass
        raise IgnoreRequest(f"{LOOPBACK_ONLY_ENV} is set: not sending {request.url}")
