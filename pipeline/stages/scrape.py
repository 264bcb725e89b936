"""Stage `scrape`: run the configured Scrapy spider; writes data/raw/ and data/raw/manifest.csv.

The crawl keeps its queue in data/raw/.jobdir (Scrapy's JOBDIR), so a crawl stopped with Ctrl-C
resumes where it stopped; after a crash (kill -9), the manifest alone tells what is stored, and
nothing stored is downloaded again. A change of the scrape settings starts afresh. Until a crawl
has finished with every source complete, data/raw/.crawl-incomplete says why, and prepare
refuses the data. The Commons spider refuses to start without scrape.contact.

Scrapy's full log goes to logs/scrape.log (the last run's); the terminal shows a progress bar
and the warnings that matter (scrapers.progress), then one line of what was stored, and, where
the crawl did not finish, one line saying why and what to do: where a source's host could not
be reached, that line names the offline demo, which needs no network.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from scrapy.crawler import CrawlerProcess
from scrapy.settings import Settings
from scrapy.utils.project import get_project_settings

from pipeline import __version__
from pipeline.core.entry import run
from pipeline.core.errors import ConfigError, StageFailed
from pipeline.core.io import write_json
from pipeline.core.paths import CRAWL_INCOMPLETE, RAW_DIR
from pipeline.core.paths import SCRAPE_REPORT as REPORT
from pipeline.stages.params import load_params
from scrapers.middlewares import LOOPBACK_ONLY_ENV
from scrapers.progress import TerminalHandler, crawl_counts, describe

# spiders whose sites block clients that give no contact in their User-Agent
CONTACT_REQUIRED = {"commons"}
STATE = ".scrape-params.json"  # the settings the files in RAW_DIR were scraped with
RESUME_COMMAND = "dvc repro"  # DVC re-runs an unfinished scrape; data/raw persists
DEMO_COMMAND = "dvc exp run -S +experiment=demo"  # the offline demo (configs/experiment/demo.yaml)
LOG_FILE = Path("logs") / "scrape.log"


def user_agent(contact: str | None) -> str:
    """A descriptive User-Agent with a contact, as Wikimedia's policy asks of every client."""
    contact_part = f"; {contact}" if contact else ""
    return f"ai-image-classifier/{__version__} (labelled image dataset for research{contact_part})"


def require_contact(spider: str, contact: str | None) -> None:
    """ConfigError, saying how to set it, when `spider` needs scrape.contact and it is unset."""
    if spider in CONTACT_REQUIRED and not (contact or "").strip():
        raise ConfigError(
            f"the {spider} spider needs scrape.contact (your e-mail or project URL): Wikimedia's "
            "User-Agent policy rate-limits, then blocks, clients that give no contact. Set it "
            f"with: dvc exp run -S scrape.contact=you@example.org   (or set contact: in "
            f"configs/scrape/{spider}.yaml and run aiic compose, then dvc repro)"
        )


def crawl(
    spider: str, spider_args: dict[str, Any], store: Path, report: Path, **settings: Any
) -> dict[str, Any]:
    """Run one spider of the scrapers project to completion, storing images under `store`, with
    Scrapy's log in LOG_FILE and a progress bar on the terminal.

    Returns the crawl's Scrapy stats.
    """
    LOG_FILE.parent.mkdir(parents=True, exist_ok=True)
    LOG_FILE.unlink(missing_ok=True)  # this run's log; Scrapy opens it more than once, to append
    project: Settings = get_project_settings()
    project.setmodule("scrapers.settings", priority="project")
    project.update(
        {
            "FILES_STORE": str(store),
            "SCRAPE_REPORT": str(report),
            "LOG_FILE": str(LOG_FILE),
            "PROGRESS_BAR": True,
            "EXTENSIONS": {"scrapers.progress.CrawlProgress": 0},
            **settings,
        },
        priority="cmdline",
    )
    process = CrawlerProcess(project)
    terminal = TerminalHandler(spider)
    logging.root.addHandler(terminal)
    try:
        crawler = process.create_crawler(spider)
        process.crawl(crawler, **spider_args)
        process.start()
    finally:
        logging.root.removeHandler(terminal)
    return crawler.stats.get_stats()


def unreachable_message(report: dict[str, Any]) -> str | None:
    """The one line for a crawl whose sources' hosts could not be reached, naming the offline
    demo; None where every host answered."""
    hosts = sorted(set(report.get("unreachable_sources", {}).values()))
    if not hosts:
        return None
    why = next(iter(report["stopped_sources"].values())).rstrip(".")
    return (
        f"could not reach {', '.join(hosts)} ({why}). Without a network, `{DEMO_COMMAND}` runs "
        f"the offline demo; with one, {RESUME_COMMAND} resumes, keeping the images stored"
    )


def main() -> None:
    config = dict(load_params()["scrape"])
    contact = config.pop("contact", None)
    require_contact(config["spider"], contact)
    settings = config.pop("settings", None) or {}  # Scrapy settings to override, if any
    state = RAW_DIR / STATE
    if state.is_file() and json.loads(state.read_text()) != config:
        shutil.rmtree(RAW_DIR)  # other sources or limits: start afresh
    write_json(state, config)
    spider = config.pop("spider")
    if not contact and spider != "local":
        print(
            "scrape: WARNING: scrape.contact is not set; sites such as Wikimedia ask every "
            "client for a contact in its User-Agent and may block those without one"
        )
    if os.environ.get(LOOPBACK_ONLY_ENV) == "1":
        settings["HTTPPROXY_ENABLED"] = False
    jobdir = RAW_DIR / ".jobdir" / spider
    running = jobdir.with_suffix(".running")
    if running.exists():
        # Killed mid-write, Scrapy's on-disk queue may be corrupt: drop it. The images already
        # stored stay, and the manifest keeps them from being downloaded again.
        print(f"scrape: the last crawl did not stop cleanly; discarding its queue in {jobdir}")
        shutil.rmtree(jobdir, ignore_errors=True)
    running.parent.mkdir(parents=True, exist_ok=True)
    running.touch()
    incomplete = CRAWL_INCOMPLETE
    incomplete.write_text(f"a {spider} crawl started and has not finished\n")
    stats = crawl(
        spider,
        config,
        RAW_DIR,
        REPORT,
        USER_AGENT=user_agent(contact),
        JOBDIR=str(jobdir),
        **settings,
    )
    running.unlink()  # a graceful stop (Ctrl-C) leaves a queue that the next run resumes
    print(f"scrape: stored {describe(*crawl_counts(stats))}; Scrapy's log: {LOG_FILE}")
    if stats.get("finish_reason") != "finished":
        incomplete.write_text(f"the {spider} crawl stopped early: {stats.get('finish_reason')}\n")
        raise StageFailed(
            f"the crawl stopped early: {stats.get('finish_reason')}; {RESUME_COMMAND} resumes it"
        )
    shutil.rmtree(jobdir)  # done: a later run starts its requests afresh (and retries failures)
    report = json.loads(REPORT.read_text())
    if report.get("stopped_sources"):
        stopped = "; ".join(f"{name}: {why}" for name, why in report["stopped_sources"].items())
        incomplete.write_text(f"sources stopped early: {stopped}\n")
        if unreachable := unreachable_message(report):
            raise StageFailed(unreachable)
        raise StageFailed(
            f"sources stopped early ({stopped}); the images stored are kept, and "
            f"{RESUME_COMMAND} later resumes without fetching them again"
        )
    incomplete.unlink()
    if not report["stored"]:
        raise StageFailed(f"no image was stored; {REPORT} and {LOG_FILE} say why")


if __name__ == "__main__":
    run(main, "scrape")
