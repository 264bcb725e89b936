"""Scrapy settings for every spider; pipeline.stages.scrape overrides the output paths from
params."""

from pipeline import __version__

BOT_NAME = "ai-image-classifier"
SPIDER_MODULES = ["scrapers.spiders"]
NEWSPIDER_MODULE = "scrapers.spiders"

USER_AGENT = f"ai-image-classifier/{__version__} (labelled image dataset builder for research)"
ROBOTSTXT_OBEY = True

ITEM_PIPELINES = {"scrapers.pipelines.DatasetPipeline": 100}
DOWNLOADER_MIDDLEWARES = {
    "scrapers.middlewares.LoopbackOnlyMiddleware": 50,  # before robots.txt is fetched
    "scrapers.middlewares.HoldBackMiddleware": 60,
    "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
    "scrapers.middlewares.PoliteRetryMiddleware": 550,
}
RETRY_HTTP_CODES = [429, 500, 502, 503, 504, 522, 524, 408]
RETRY_BACKOFF_BASE = 1.0
RETRY_BACKOFF_MAX = 60.0
# A Retry-After up to this long is waited out; a longer one stops that request (and, for the
# MediaWiki API, that source) with a report line rather than stalling the crawl for hours.
RETRY_AFTER_MAX = 600.0
FILES_STORE = "data/raw"
FILES_URLS_FIELD = "file_urls"
FILES_RESULT_FIELD = "files"
# Images are stored by content hash, so a stored file never goes stale.
FILES_EXPIRES = 36500
MEDIA_ALLOW_REDIRECTS = True

CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 2
# AutoThrottle moves each download slot's delay toward latency / AUTOTHROTTLE_TARGET_CONCURRENCY,
# a few milliseconds on a fast server, and never below DOWNLOAD_DELAY, its only floor: a slot's
# own delay in DOWNLOAD_SLOTS is just where it starts
# (https://docs.scrapy.org/en/latest/topics/autothrottle.html#throttling-algorithm).
# So the polite pace is DOWNLOAD_DELAY, for every remote host; Scrapy varies each wait by
# DOWNLOAD_DELAY_JITTER (+-50 %, https://docs.scrapy.org/en/latest/topics/settings.html#download-delay).
DOWNLOAD_DELAY = 0.5
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 0.5
AUTOTHROTTLE_TARGET_CONCURRENCY = 2.0
DOWNLOAD_SLOTS = {"local-files": {"concurrency": 32, "delay": 0}}  # not throttled (pipelines.py)
RETRY_ENABLED = True
RETRY_TIMES = 3
DOWNLOAD_TIMEOUT = 30
DOWNLOAD_MAXSIZE = 50 * 1024 * 1024
LOG_LEVEL = "INFO"
TELNETCONSOLE_ENABLED = False
# Scrapy 2.19's RemoteControl runs Python sent over HTTP inside the crawl (a port on 127.0.0.1, its
# token in a file under the user's profile), for Scrapy's MCP server: a batch stage needs none.
REMOTE_CONTROL_ENABLED = False
