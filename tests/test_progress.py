"""What the terminal shows of a crawl (scrapers.progress); the bar itself: tests/test_scrape.py."""

import logging

import pytest

from scrapers.items import SKIPPED, STORED
from scrapers.progress import TerminalHandler, crawl_counts, describe


@pytest.fixture
def terminal():
    handler = TerminalHandler("commons")
    logging.root.addHandler(handler)
    yield
    logging.root.removeHandler(handler)


def test_the_terminal_shows_what_needs_a_person_and_no_more(terminal, capsys):
    logging.getLogger("commons").warning("MediaWiki API warning (main): x")
    logging.getLogger("scrapers.middlewares").error("asks to wait 900 s")
    logging.getLogger("scrapy.core.scraper").error("Spider error processing")
    logging.getLogger("commons").info("skipped (thumberror) File:x.png")  # the log file's
    logging.getLogger("scrapy.core.engine").warning("a Scrapy warning")  # the log file's
    logging.getLogger("scrapy.downloadermiddlewares.retry").error("Gave up retrying")  # counted
    assert capsys.readouterr().err.splitlines() == [
        "WARNING: MediaWiki API warning (main): x",
        "ERROR: asks to wait 900 s",
        "ERROR: Spider error processing",
    ]


def test_counts_per_source_and_label_from_the_crawl_stats():
    stats = {
        f"{STORED}|commons-ai|ai": 3,
        f"{STORED}|commons-real|real": 5,
        f"{STORED}|a|b|ai": 1,  # a source name with the separator in it
        f"{SKIPPED}|thumberror|ai|commons-ai": 2,
        f"{SKIPPED}|not_an_image|real|commons-real": 1,
        "log_count/ERROR": 4,
        "item_scraped_count": 9,
    }
    counts = crawl_counts(stats)
    assert counts == ({"commons-ai/ai": 3, "commons-real/real": 5, "a|b/ai": 1}, 3, 4)
    expected = "a|b/ai 1, commons-ai/ai 3, commons-real/real 5; skipped 3; errors 4"
    assert describe(*counts) == expected
    assert describe(*crawl_counts({})) == "no image; skipped 0; errors 0"
