"""What a person sees of a crawl run by the scrape stage: Scrapy's full log goes to a file
(pipeline.stages.scrape sets LOG_FILE), and the terminal shows a progress bar and the records that
need a person's attention.

The bar (tqdm, on stderr where it is a terminal) counts the images stored per source and label,
the files skipped (with the reasons in reports/scrape.json) and the errors logged. Scrapy's
INFO lines (one per skipped file, the settings, the stats) stay in the log file; WARNING and
above of this project's loggers and the spider's own, and ERROR and above of any other, are
written above the bar, except the retry middleware's "Gave up retrying" errors: each is counted,
and what follows from it is reported by the spider (a source stopped) or the pipeline (a file
skipped with its reason).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from typing import Any

from scrapy import signals
from scrapy.exceptions import NotConfigured
from tqdm import tqdm

from scrapers.items import SKIPPED, STORED

# Loggers whose errors are counted, not shown: their consequence is reported by the project.
COUNTED_ONLY = ("scrapy.downloadermiddlewares.retry",)
OWN_LOGGERS = ("scrapers", "pipeline")
REDRAW_S = 0.2


def crawl_counts(stats: dict[str, Any]) -> tuple[Counter[str], int, int]:
    """Images stored per 'source/label', files skipped and errors logged, from a crawl's stats."""
    stored: Counter[str] = Counter()
    skipped = 0
    for key, count in stats.items():
        if key.startswith(f"{STORED}|"):
            source, label = key.removeprefix(f"{STORED}|").rsplit("|", 1)
            stored[f"{source}/{label}"] += count
        elif key.startswith(f"{SKIPPED}|"):
            skipped += count
    return stored, skipped, stats.get("log_count/ERROR", 0)


def describe(stored: Counter[str], skipped: int, errors: int) -> str:
    """'cifake/ai 300, cifake/real 300; skipped 2; errors 0'."""
    parts = ", ".join(f"{name} {count}" for name, count in sorted(stored.items())) or "no image"
    return f"{parts}; skipped {skipped}; errors {errors}"


class CrawlProgress:
    """A Scrapy extension (PROGRESS_BAR = True) that draws the crawl's progress bar."""

    def __init__(self, crawler) -> None:
        if not crawler.settings.getbool("PROGRESS_BAR"):
            raise NotConfigured
        self.stats = crawler.stats
        self.bar: tqdm | None = None
        self.drawn = 0.0  # time.monotonic() of the last redraw
        for handler, signal in (
            (self.spider_opened, signals.spider_opened),
            (self.refresh, signals.item_scraped),
            (self.refresh, signals.response_received),
            (self.spider_closed, signals.spider_closed),
        ):
            crawler.signals.connect(handler, signal=signal)

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawler)

    def spider_opened(self, spider=None) -> None:
        # disable=None: no bar where stderr is not a terminal (a CI log, a test's pipe)
        self.bar = tqdm(desc="scrape", unit=" images", disable=None, leave=False, file=sys.stderr)
        self.draw()

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        """Redraw, at most every REDRAW_S seconds (called on every response and item)."""
        if self.bar is None or time.monotonic() - self.drawn < REDRAW_S:
            return
        self.draw()

    def draw(self) -> None:
        self.drawn = time.monotonic()
        stored, skipped, errors = crawl_counts(self.stats.get_stats())
        self.bar.n = sum(stored.values())
        self.bar.set_postfix_str(describe(stored, skipped, errors), refresh=False)
        self.bar.refresh()

    def spider_closed(self, spider=None, reason: str = "") -> None:
        if self.bar is not None:
            self.draw()
            self.bar.close()
            self.bar = None


class TerminalHandler(logging.Handler):
    """The records that need a person's attention, written above the progress bar."""

    def __init__(self, spider_name: str) -> None:
        super().__init__(logging.WARNING)
        self.own = (*OWN_LOGGERS, spider_name)
        self.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(COUNTED_ONLY):
            return False
        own = any(record.name == name or record.name.startswith(f"{name}.") for name in self.own)
        return own or record.levelno >= logging.ERROR

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging's own contract: never raise from emit
            self.handleError(record)
