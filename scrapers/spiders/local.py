"""A local source: a folder laid out real/ and ai/ (optionally real/<source>/, ai/<source>/),
or a CSV of url,label[,source]."""

from __future__ import annotations

import csv
import mimetypes
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import scrapy
from scrapy.exceptions import CloseSpider

from pipeline.data.images import IMAGE_SUFFIXES, LABELS, folder_source
from scrapers.items import ImageItem, skip


def within(path: Path, folders: list[Path]) -> bool:
    return any(path.is_relative_to(folder) for folder in folders)


def folder_entries(
    folder: Path, follow_outside_symlinks: bool = False
) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """(file URL, label, source or "") for every image file under folder/real and folder/ai,
    sorted (the source is the sub-folder of real/ or ai/ that holds it), and
    (path, label, reason) for the files passed over: images in formats that are not taken (such
    as SVG, `mime_<type>` as the Commons spider says), and symbolic links that lead out of the
    source folder (`symlink_outside_source`, unless `follow_outside_symlinks`)."""
    entries, skipped = [], []
    for label in LABELS:
        # folder/real itself may be a link to where the images are kept: a deliberate choice
        inside = [folder.resolve(), (folder / label).resolve()]
        for path in sorted((folder / label).rglob("*")):
            if not path.is_file():
                continue
            mime = mimetypes.guess_type(path.name)[0] or ""
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                if mime.startswith("image/"):
                    skipped.append((str(path), label, f"mime_{mime}"))
                continue
            if not follow_outside_symlinks and not within(path.resolve(), inside):
                skipped.append((str(path), label, "symlink_outside_source"))
                continue
            entries.append((path.resolve().as_uri(), label, folder_source(folder / label, path)))
    return entries, skipped


def csv_entries(table: Path) -> list[tuple[str, str, str]]:
    """(URL, label, source or "") rows of a CSV with columns url,label and optionally source;
    paths are relative to its folder."""
    entries = []
    with open(table, newline="", encoding="utf-8") as file:
        for line, row in enumerate(csv.DictReader(file), start=2):
            url, label = (row.get("url") or "").strip(), (row.get("label") or "").strip()
            if label not in LABELS:
                raise ValueError(f"{table}:{line}: label must be one of {LABELS}, got {label!r}")
            if "://" not in url:
                url = (table.parent / url).resolve().as_uri()
            entries.append((url, label, (row.get("source") or "").strip()))
    return entries


class LocalSpider(scrapy.Spider):
    """A folder with real/ and ai/, a CSV of url,label, or a list of {url, label} (`urls`)."""

    name = "local"

    def __init__(
        self,
        source: str | None = None,
        source_name: str = "local",
        max_items: Any = None,
        urls: list[dict[str, str]] | None = None,
        follow_outside_symlinks: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source = Path(source) if source else None
        self.urls = urls or []
        self.source_name = source_name
        self.max_items = int(max_items) if max_items not in (None, "", "None") else None
        self.follow_outside_symlinks = bool(follow_outside_symlinks)
        self.passed_over: list[tuple[str, str, str]] = []

    def entries(self) -> list[tuple[str, str, str]]:
        if self.urls:
            for entry in self.urls:
                if entry.get("label") not in LABELS:
                    raise ValueError(f"urls entry {entry}: label must be one of {LABELS}")
            return [(entry["url"], entry["label"], entry.get("source", "")) for entry in self.urls]
        if self.source is None:
            raise ValueError("give the local spider a source (folder or CSV) or a list of urls")
        if self.source.is_dir():
            entries, self.passed_over = folder_entries(self.source, self.follow_outside_symlinks)
            return entries
        if self.source.is_file():
            return csv_entries(self.source)
        raise FileNotFoundError(
            f"scrape.source {self.source} does not exist: make a folder with real/ and ai/ "
            "subfolders of images there, or point scrape.source at a CSV of url,label"
        )

    async def start(self) -> AsyncIterator[ImageItem]:
        try:
            entries = self.entries()
        except (OSError, ValueError) as error:
            raise CloseSpider(f"bad source: {error}") from error
        for path, label, reason in self.passed_over:
            skip(self, reason, label, self.source_name, path)
        taken = dict.fromkeys(LABELS, 0)
        for url, label, source in entries:
            if self.max_items is not None and taken[label] >= self.max_items:
                continue
            taken[label] += 1
            yield ImageItem(
                file_urls=[url], label=label, source_name=source or self.source_name, source_url=url
            )


class UrlsSpider(LocalSpider):
    """Image URLs with labels, from a CSV (`source`) or a list (`urls`); robots.txt is obeyed."""

    name = "urls"
