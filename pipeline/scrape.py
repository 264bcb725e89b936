"""Stage `scrape`: run the configured Scrapy spider; writes data/raw/ and data/raw/manifest.csv."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scrapy.crawler import CrawlerProcess
from scrapy.settings import Settings
from scrapy.utils.project import get_project_settings

from pipeline.params import load_params

RAW_DIR = Path("data/raw")
REPORT = Path("reports/scrape.json")


def crawl(spider: str, spider_args: dict[str, Any], store: Path, report: Path) -> dict[str, Any]:
    """Run one spider of the scrapers project to completion, storing images under `store`.

    Returns the crawl's Scrapy stats.
    """
    settings: Settings = get_project_settings()
    settings.setmodule("scrapers.settings", priority="project")
    settings.set("FILES_STORE", str(store))
    settings.set("SCRAPE_REPORT", str(report))
    process = CrawlerProcess(settings)
    crawler = process.create_crawler(spider)
    process.crawl(crawler, **spider_args)
    process.start()
    return crawler.stats.get_stats()


def main() -> None:
    config = dict(load_params()["scrape"])
    spider = config.pop("spider")
    stats = crawl(spider, config, RAW_DIR, REPORT)
    if stats.get("finish_reason") != "finished":
        raise SystemExit(f"scrape: the crawl stopped early: {stats.get('finish_reason')}")


if __name__ == "__main__":
    main()
