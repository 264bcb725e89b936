"""A fake web on 127.0.0.1 for the scraper tests: a MediaWiki API, HTML galleries, image hosts
and failing endpoints, recording every request it answers.

The MediaWiki API answers `action=query` with `formatversion=2` JSON as Commons does, including
its unkind behaviours, each taken from the documentation or the source:

- generator=categorymembers (API:Categorymembers,
  https://www.mediawiki.org/wiki/API:Categorymembers; ApiQueryCategoryMembers.php): members in
  sort-key order (type, then sort key: the upper-cased title without its namespace, as the
  `uppercase` collation makes it), `gcmtype` file or subcat, `gcmlimit` (at most 500, and at most
  this fake's `page_size`, so that tests see continuation), `gcmstartsortkeyprefix` /
  `gcmendsortkeyprefix` and `gcmstarthexsortkey`, and `gcmcontinue` of the form
  `type|hexsortkey|pageid`, which overrides the start parameters. `prop=categoryinfo` gives each
  sub-category's `size`, `pages`, `files` and `subcats`. An invalid category title answers the
  error `invalidcategory`; categories listed in `errors` answer that error code.
- prop=imageinfo (API:Imageinfo, https://www.mediawiki.org/wiki/API:Imageinfo;
  ApiQueryImageInfo.php): with `iiurlwidth`, Commons' standard thumbnail steps
  ($wgThumbnailSteps, https://www.mediawiki.org/wiki/Manual:$wgThumbnailSteps: 20, 40, 60, 120,
  250, 330, 500, 960, 1280, 1920, 3840): the `thumburl` is the next step at or above the requested
  width, while `thumbwidth` is the requested width (the step is "downsized via HTML values");
  where the step reaches the original's width, the original itself is served (`thumburl` equals
  `url`, `thumbwidth` the original's width, T25834). A file that cannot be thumbnailed has
  `thumberror` and no `thumburl`. At most 50 images are scaled per request (TRANSFORM_LIMIT):
  the rest of the batch comes back without `imageinfo`, and `continue` carries `iicontinue`
  (`dbkey|timestamp`) with the generator's own continuation of the request repeated, so that the
  client re-sends the same batch. A page whose file is missing has `missing` (no `pageid`) and
  `imagerepository: ""`, and no `imageinfo`.
- The continuation protocol (API:Continue, https://www.mediawiki.org/wiki/API:Continue):
  `continue` holds the values to merge into the next request, `batchcomplete` is set when every
  prop module has finished the batch.
- maxlag (Manual:Maxlag parameter, https://www.mediawiki.org/wiki/Manual:Maxlag_parameter): the
  first `maxlag_responses` API requests answer HTTP **200** with the error code `maxlag`, the
  `MediaWiki-API-Error: maxlag`, `Retry-After` and `X-Database-Lag` headers (API:Errors and
  warnings, https://www.mediawiki.org/wiki/API:Errors_and_warnings).
- The User-Agent of every request is recorded (Wikimedia User-Agent policy,
  https://foundation.wikimedia.org/wiki/Policy:Wikimedia_Foundation_User-Agent_Policy).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlsplit

import numpy as np
from PIL import Image

ROBOTS = "User-agent: *\nDisallow: /w/\nDisallow: /private/\n"
THUMBNAIL_STEPS = (20, 40, 60, 120, 250, 330, 500, 960, 1280, 1920, 3840)
TRANSFORM_LIMIT = 50  # ApiQueryImageInfo::TRANSFORM_LIMIT
MAX_LIMIT = 500


def jpeg(seed: int, size: int = 40) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@dataclass
class CommonsFile:
    """A file on the fake Commons; `problem` is None, "thumberror" or "missing"."""

    title: str
    mime: str = "image/jpeg"
    width: int = 2000
    height: int = 1500
    problem: str | None = None

    @property
    def name(self) -> str:
        return self.title.removeprefix("File:")

    @property
    def dbkey(self) -> str:
        return self.name.replace(" ", "_")


def sortkey(title: str) -> str:
    return title.split(":", 1)[-1].upper()


def page_id(title: str) -> int:
    return int(hashlib.sha1(title.encode()).hexdigest()[:7], 16)


def thumbnail_step(width: int) -> int:
    return next((step for step in THUMBNAIL_STEPS if step >= width), width)


class FakeWeb:
    """categories: title -> files (CommonsFile, or (title, mime) tuples); subcategories: title ->
    sub-category titles; images: path -> bytes or a behaviour; with `serve_uploads`, every other
    /upload/ path answers a small JPEG of its own."""

    def __init__(self, page_size: int = 3, image_delay: float = 0.0) -> None:
        self.categories: dict[str, list] = {}
        self.subcategories: dict[str, list[str]] = {}
        self.errors: dict[str, str] = {}  # category -> API error code
        self.images: dict[str, object] = {}
        self.pages: dict[str, str] = {}
        self.hits: Counter[str] = Counter()
        self.times: dict[str, list[float]] = {}
        self.api_queries: list[dict[str, str]] = []
        self.api_times: dict[str, list[float]] = {}  # raw query -> when it was asked
        self.maxlagged: list[str] = []  # raw queries answered with a maxlag error
        self.user_agents: set[str] = set()
        self.page_size, self.image_delay = page_size, image_delay
        self.maxlag_responses, self.retry_after = 0, 1
        self.serve_uploads = False
        self.in_flight, self.most_in_flight = 0, 0
        self.lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # clients that time out
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        # Commons spreads its media over several hosts (upload.wikimedia.org and mirrors): with
        # two, files alternate between 127.0.0.1 and localhost
        self.upload_hosts = ["127.0.0.1"]

    def __enter__(self) -> FakeWeb:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()

    @property
    def maxlag_once(self) -> bool:
        return self.maxlag_responses > 0

    @maxlag_once.setter
    def maxlag_once(self, value: bool) -> None:
        self.maxlag_responses = int(value)

    def files(self, category: str) -> list[CommonsFile]:
        return [
            f if isinstance(f, CommonsFile) else CommonsFile(*f)
            for f in self.categories.get(category, [])
        ]

    # -- the API --------------------------------------------------------------------------

    def api(self, query: dict[str, str]) -> tuple[int, dict, dict]:
        self.api_queries.append(query)
        if query.get("formatversion") != "2" or query.get("format") != "json":
            return 200, {}, error("badvalue", "this fake speaks format=json&formatversion=2 only")
        if query.get("list") == "categorymembers":
            return self.list_members(query)
        if query.get("generator") == "categorymembers":
            return self.generated_members(query)
        return 200, {}, error("badvalue", f"unsupported query {query}")

    def members(self, query: dict[str, str], prefix: str) -> tuple[list, dict | None, dict | None]:
        """(members, continue values, error) of a categorymembers module with this prefix."""
        category = query.get(f"{prefix}title", "")
        if not category.startswith("Category:") or len(category) <= len("Category:"):
            return [], None, error("invalidcategory", "The category name you entered is not valid.")
        if category in self.errors:
            return [], None, error(self.errors[category], f"Could not list {category}.")
        kind = query.get(f"{prefix}type", "page|subcat|file")
        items: list[tuple[str, str, int, object]] = []
        if "subcat" in kind:
            subcats = self.subcategories.get(category, [])
            items += [("subcat", sortkey(t), page_id(t), t) for t in subcats]
        if "file" in kind:
            items += [("file", sortkey(f.title), page_id(f.title), f) for f in self.files(category)]
        order = {"page": 0, "subcat": 1, "file": 2}
        items.sort(key=lambda item: (order[item[0]], item[1].encode(), item[2]))
        cont = query.get(f"{prefix}continue")
        if cont:
            ctype, hexkey, from_id = cont.split("|")
            start = (order[ctype], bytes.fromhex(hexkey), int(from_id))
            items = [i for i in items if (order[i[0]], i[1].encode(), i[2]) >= start]
        elif f"{prefix}startsortkeyprefix" in query:
            start_key = query[f"{prefix}startsortkeyprefix"].upper().encode()
            items = [i for i in items if i[1].encode() >= start_key]
        elif f"{prefix}starthexsortkey" in query:
            start_key = bytes.fromhex(query[f"{prefix}starthexsortkey"])
            items = [i for i in items if i[1].encode() >= start_key]
        if f"{prefix}endsortkeyprefix" in query:
            end_key = query[f"{prefix}endsortkeyprefix"].upper().encode()
            items = [i for i in items if i[1].encode() < end_key]
        limit = min(int(query.get(f"{prefix}limit", 10)), MAX_LIMIT, self.page_size)
        chunk, rest = items[:limit], items[limit:]
        values = None
        if rest:
            ctype, key, pid, _ = rest[0]
            values = {f"{prefix}continue": f"{ctype}|{key.encode().hex()}|{pid}"}
        return [i[3] for i in chunk], values, None

    def list_members(self, query: dict[str, str]) -> tuple[int, dict, dict]:
        members, values, failure = self.members(query, "cm")
        if failure:
            return 200, {"MediaWiki-API-Error": failure["error"]["code"]}, failure
        body: dict = {
            "batchcomplete": True,
            "query": {
                "categorymembers": [
                    {"pageid": page_id(m), "ns": 14, "title": m}
                    if isinstance(m, str)
                    else {"pageid": page_id(m.title), "ns": 6, "title": m.title}
                    for m in members
                ]
            },
        }
        if values:
            body["continue"] = {**values, "continue": "-||"}
        return 200, {}, body

    def generated_members(self, query: dict[str, str]) -> tuple[int, dict, dict]:
        members, values, failure = self.members(query, "gcm")
        if failure:
            return 200, {"MediaWiki-API-Error": failure["error"]["code"]}, failure
        props = query.get("prop", "").split("|")
        pages, iicontinue = [], None
        transforms = 0
        resume = query.get("iicontinue", "").split("|")[0] or None
        for member in sorted(members, key=lambda m: m if isinstance(m, str) else m.dbkey):
            if isinstance(member, str):
                page = {"pageid": page_id(member), "ns": 14, "title": member}
                if "categoryinfo" in props:
                    files = len(self.files(member))
                    subcats = len(self.subcategories.get(member, []))
                    page["categoryinfo"] = {
                        "size": files + subcats,
                        "pages": 0,
                        "files": files,
                        "subcats": subcats,
                    }
                pages.append(page)
                continue
            page = {"pageid": page_id(member.title), "ns": 6, "title": member.title}
            if member.problem == "missing":
                page = {"ns": 6, "title": member.title, "missing": True}
            pages.append(page)
            if "imageinfo" not in props or (resume and member.dbkey < resume) or iicontinue:
                continue
            if member.problem == "missing":
                page["imagerepository"] = ""
                continue
            if "iiurlwidth" in query and transforms >= TRANSFORM_LIMIT:
                iicontinue = f"{member.dbkey}|20240501100000"
                continue
            page["imagerepository"] = "local"
            info, scaled = self.imageinfo(member, query)
            transforms += scaled
            page["imageinfo"] = [info]
        body: dict = {"query": {"pages": sorted(pages, key=lambda p: p.get("pageid", -1))}}
        if iicontinue:
            generator = {k: query[k] for k in ("gcmcontinue",) if k in query}
            body["continue"] = {
                "iicontinue": iicontinue,
                **generator,
                "continue": f"{'|'.join(generator)}||",
            }
        else:
            body["batchcomplete"] = True
            if values:
                body["continue"] = {**values, "continue": "gcmcontinue||"}
        return 200, {}, body

    def imageinfo(self, file: CommonsFile, query: dict[str, str]) -> tuple[dict, int]:
        """The imageinfo entry of a file, and how many transforms it took (0 or 1)."""
        host = self.upload_hosts[page_id(file.title) % len(self.upload_hosts)]
        media = f"http://{host}:{self.server.server_address[1]}"
        url = f"{media}/upload/{quote(file.dbkey)}"
        info = {
            "size": 123456,
            "width": file.width,
            "height": file.height,
            "descriptionurl": f"{self.base}/wiki/{quote(file.title.replace(' ', '_'), safe=':')}",
            "descriptionshorturl": f"{self.base}/w/index.php?curid={page_id(file.title)}",
            "mime": file.mime,
            "sha1": hashlib.sha1(file.title.encode()).hexdigest(),
            "extmetadata": {
                "DateTime": {"value": "2024-05-01 10:00:00", "source": "mediawiki-metadata"},
                "LicenseShortName": {"value": "CC BY-SA 4.0", "source": "commons-desc-page"},
                "LicenseUrl": {
                    "value": "https://creativecommons.org/licenses/by-sa/4.0",
                    "source": "commons-desc-page",
                },
                "Artist": {
                    "value": '<a href="//x/User:Jane_Doe">Jane Doe</a>',
                    "source": "commons-desc-page",
                },
            },
        }
        if "iiurlwidth" not in query:
            return {**info, "url": url}, 0
        requested = int(query["iiurlwidth"])
        if file.problem == "thumberror":
            return {
                **info,
                "thumberror": "Error creating thumbnail: File with dimensions greater than 12.5 MP",
                "url": url,
            }, 1
        step = thumbnail_step(requested)
        if step >= file.width:
            thumb = {"thumburl": url, "thumbwidth": file.width, "thumbheight": file.height}
        else:
            thumb = {
                "thumburl": f"{media}/upload/thumb/{quote(file.dbkey)}/{step}px-"
                f"{quote(file.dbkey)}",
                "thumbwidth": requested,
                "thumbheight": round(file.height * requested / file.width),
            }
        return {**info, **thumb, "url": url}, 1

    # -- HTTP -----------------------------------------------------------------------------

    def handler(self) -> type:
        web = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def reply(
                self,
                status: int,
                body: bytes = b"",
                headers: dict | None = None,
                content_type: str = "image/jpeg",
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                with web.lock:
                    web.hits[parts.path] += 1
                    web.times.setdefault(parts.path, []).append(time.monotonic())
                    web.user_agents.add(self.headers.get("User-Agent", ""))
                if parts.path == "/robots.txt":
                    return self.reply(200, ROBOTS.encode(), content_type="text/plain")
                if parts.path == "/w/api.php":
                    return self.api()
                if parts.path in web.pages:
                    return self.reply(200, web.pages[parts.path].encode(), content_type="text/html")
                with web.lock:
                    web.in_flight += 1
                    web.most_in_flight = max(web.most_in_flight, web.in_flight)
                try:
                    return self.image(parts.path)
                finally:
                    with web.lock:
                        web.in_flight -= 1

            def api(self) -> None:
                raw = urlsplit(self.path).query
                web.api_times.setdefault(raw, []).append(time.monotonic())
                if web.maxlag_responses > 0:
                    web.maxlag_responses -= 1
                    web.maxlagged.append(raw)
                    body = error("maxlag", "Waiting for 10.64.48.35: 7.2 seconds lagged.")
                    body["error"].update({"host": "10.64.48.35", "lag": 7.2, "type": "db"})
                    headers = {
                        "MediaWiki-API-Error": "maxlag",
                        "X-Database-Lag": "7",
                        "Retry-After": str(web.retry_after),
                    }
                    return self.reply(200, json.dumps(body).encode(), headers, "application/json")
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                status, headers, body = web.api(query)
                return self.reply(status, json.dumps(body).encode(), headers, "application/json")

            def image(self, path: str) -> None:
                behaviour = web.images.get(path)
                if web.image_delay:
                    time.sleep(web.image_delay)
                if behaviour is None and web.serve_uploads and path.startswith("/upload/"):
                    behaviour = jpeg(page_id(path), size=24)
                if isinstance(behaviour, bytes):
                    return self.reply(200, behaviour)
                if behaviour == "500-then-ok":
                    first = web.hits[path] == 1
                    return self.reply(500) if first else self.reply(200, jpeg(500))
                if behaviour == "429-retry-after":
                    if web.hits[path] == 1:
                        return self.reply(429, headers={"Retry-After": "2"})
                    return self.reply(200, jpeg(429))
                if behaviour == "html":
                    return self.reply(200, b"<html><body>Please log in</body></html>")
                if behaviour == "truncated":
                    return self.reply(200, jpeg(7, 64)[:400])
                if behaviour == "slow":
                    time.sleep(3)
                    return self.reply(200, jpeg(3))
                if behaviour == "loop":
                    return self.reply(302, headers={"Location": path})
                return self.reply(404, b"", content_type="text/plain")

        return Handler


def error(code: str, info: str) -> dict:
    """An API error in formatversion=2 with the default errorformat (bc)."""
    return {
        "error": {
            "code": code,
            "info": info,
            "docref": "See https://commons.wikimedia.org/w/api.php for API usage.",
        },
        "servedby": "mw-api-ext.fake",
    }
