"""A fake web on 127.0.0.1 for the scraper tests: a MediaWiki API, HTML galleries, image hosts
and failing endpoints, recording every request it answers."""

from __future__ import annotations

import http.server
import io
import json
import threading
import time
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image

ROBOTS = "User-agent: *\nDisallow: /w/\nDisallow: /private/\n"


def jpeg(seed: int, size: int = 40) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def commons_file(title: str, mime: str, base: str, artist: str = "Jane Doe") -> dict:
    name = title.removeprefix("File:")
    return {
        "title": title,
        "imageinfo": [
            {
                "url": f"{base}/upload/{name}",
                "thumburl": f"{base}/upload/thumb/{name}",
                "descriptionurl": f"{base}/wiki/{title}",
                "mime": mime,
                "sha1": f"sha1-of-{name}",
                "size": 1234,
                "width": 2000,
                "extmetadata": {
                    "LicenseShortName": {"value": "CC BY-SA 4.0"},
                    "LicenseUrl": {"value": "https://creativecommons.org/licenses/by-sa/4.0"},
                    "Artist": {"value": f'<a href="//x/User:{artist}">{artist}</a>'},
                    "DateTime": {"value": "2024-05-01 10:00:00"},
                },
            }
        ],
    }


class FakeWeb:
    """categories: title -> list of (file title, mime); images: path -> bytes or a behaviour."""

    def __init__(self, page_size: int = 3, image_delay: float = 0.0) -> None:
        self.categories: dict[str, list[tuple[str, str]]] = {}
        self.subcategories: dict[str, list[str]] = {}
        self.images: dict[str, object] = {}
        self.pages: dict[str, str] = {}
        self.hits: Counter[str] = Counter()
        self.times: dict[str, list[float]] = {}
        self.page_size, self.image_delay = page_size, image_delay
        self.maxlag_once = False
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # clients that time out
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeWeb:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()

    def api(self, query: dict[str, str]) -> tuple[int, dict, dict]:
        if query.get("list") == "categorymembers":
            members = [{"title": t} for t in self.subcategories.get(query["cmtitle"], [])]
            return 200, {}, {"query": {"categorymembers": members}}
        files = self.categories.get(query["gcmtitle"], [])
        start = int(query.get("gcmcontinue", 0))
        chunk = files[start : start + self.page_size]
        body: dict = {"query": {"pages": [commons_file(t, m, self.base) for t, m in chunk]}}
        if start + self.page_size < len(files):
            body["continue"] = {
                "gcmcontinue": str(start + self.page_size),
                "continue": "gcmcontinue||",
            }
        return 200, {}, body

    def handler(self) -> type:
        web = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def reply(self, status: int, body: bytes = b"", headers: dict | None = None,
                      content_type: str = "image/jpeg") -> None:  # fmt: skip
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                web.hits[parts.path] += 1
                web.times.setdefault(parts.path, []).append(time.monotonic())
                if parts.path == "/robots.txt":
                    return self.reply(200, ROBOTS.encode(), content_type="text/plain")
                if parts.path == "/w/api.php":
                    if web.maxlag_once:
                        web.maxlag_once = False
                        error = {"error": {"code": "maxlag", "info": "Waiting for a replica"}}
                        headers = {"MediaWiki-API-Error": "maxlag", "Retry-After": "1"}
                        return self.reply(
                            200, json.dumps(error).encode(), headers, "application/json"
                        )
                    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                    status, headers, body = web.api(query)
                    return self.reply(
                        status, json.dumps(body).encode(), headers, "application/json"
                    )
                if parts.path in web.pages:
                    return self.reply(200, web.pages[parts.path].encode(), content_type="text/html")
                behaviour = web.images.get(parts.path)
                if web.image_delay:
                    time.sleep(web.image_delay)
                if isinstance(behaviour, bytes):
                    return self.reply(200, behaviour)
                if behaviour == "500-then-ok":
                    first = web.hits[parts.path] == 1
                    return self.reply(500) if first else self.reply(200, jpeg(500))
                if behaviour == "429-retry-after":
                    if web.hits[parts.path] == 1:
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
                    return self.reply(302, headers={"Location": parts.path})
                return self.reply(404, b"", content_type="text/plain")

        return Handler
